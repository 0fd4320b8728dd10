//! What users read when configuration is wrong — `terraform validate` errors and the residency
//! guarantee failing a plan — and the provider schema, as reviewed snapshots.

mod common;

use common::{Tf, digits_model};

/// Terraform's error boxes without colour, paths scrubbed.
fn errors(tf: &Tf, args: &[&str]) -> String {
    tf.fails(args)
}

#[test]
fn validate_reports_each_bad_attribute_with_its_path_and_what_is_valid() {
    let tf = Tf::new(
        r#"
resource "gpucap_gpu_pool" "bad" {
  name          = "Bad Name"
  region        = "eu-central-1"
  capacity_type = "preemptible"
  tenancy       = "private"
  gpu {
    model    = "H100"
    per_node = 0
  }
  nodes {
    min = 4
    max = 2
  }
  local { devices = "tpu:0" }
}

resource "gpucap_burst_policy" "bad" {
  name        = "bad"
  base_pools  = ["a", "a"]
  burst_pools = ["a"]
  placement   = "random"
  scale_up {
    gpu_utilization = 80
    for             = "a while"
    panic_window    = "2m"
  }
  budget { max_hourly_usd = -1 }
}

resource "gpucap_inference_endpoint" "bad" {
  name         = "bad"
  burst_policy = "bad"
  pools        = ["a"]
  model { path = "x.safetensors" }
  batching {
    max_batch_size = 0
    queue_capacity = 0
  }
  replicas {
    min = 3
    max = 1
  }
  data_residency { classification = "secret" }
  listen { port = 70000 }
}
"#,
    );
    insta::assert_snapshot!(errors(&tf, &["validate", "-no-color"]));
}

fn residency_config(endpoint_extra: &str) -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "frankfurt" {{
  name   = "frankfurt"
  region = "eu-central-1"
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{}}
}}

resource "gpucap_gpu_pool" "virginia" {{
  name          = "virginia"
  region        = "us-east-1"
  capacity_type = "spot"
  gpu {{ model = "cpu" }}
  nodes {{ max = 4 }}
  local {{}}
}}

resource "gpucap_burst_policy" "spill" {{
  name        = "spill"
  base_pools  = [gpucap_gpu_pool.frankfurt.name]
  burst_pools = [gpucap_gpu_pool.virginia.name]
}}

resource "gpucap_inference_endpoint" "fraud" {{
  name         = "fraud"
  burst_policy = gpucap_burst_policy.spill.name
  model {{ path = "{}" }}
  {endpoint_extra}
}}
"#,
        digits_model().display()
    )
}

#[test]
fn residency_violation_fails_the_plan_naming_pool_region_and_attribute() {
    let tf = Tf::new(&residency_config(
        r#"data_residency {
    classification        = "pii"
    allowed_jurisdictions = ["EU"]
    allowed_regions       = ["eu-central-1", "eu-west-1"]
  }"#,
    ));
    let err = errors(&tf, &["plan", "-no-color", "-input=false"]);
    insta::assert_snapshot!(err);
    assert!(
        !tf.state_dir().join("endpoints/fraud").exists(),
        "nothing may exist after a failed plan"
    );
}

#[test]
fn capacity_and_names_are_checked_at_plan_time() {
    let capacity = Tf::new(&residency_config(
        "replicas {\n    min = 2\n    max = 2\n  }\n  data_residency { allowed_jurisdictions = [\"EU\", \"US\"] }",
    ));
    let names = Tf::new(&residency_config("").replace(
        "burst_pools = [gpucap_gpu_pool.virginia.name]",
        // The typo leaves no reference to the pool, so name the dependency to keep the list of
        // known pools in the message the same on every run.
        "burst_pools = [\"virgina\"]\n  depends_on = [gpucap_gpu_pool.virginia]",
    ));
    insta::assert_snapshot!(format!(
        "--- capacity ---\n{}\n--- unknown name ---\n{}",
        errors(&capacity, &["plan", "-no-color", "-input=false"]),
        errors(&names, &["plan", "-no-color", "-input=false"])
    ));
}

#[test]
fn provider_schema() {
    let tf = Tf::new("");
    let json = tf.ok(&["providers", "schema", "-json"]);
    let mut schema: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Terraform keys the schema by the provider's full address; keep the snapshot about our schema.
    let ours = schema["provider_schemas"]["registry.terraform.io/gpucap/gpucap"].take();
    assert!(ours.is_object(), "no gpucap schema in: {json}");
    insta::assert_json_snapshot!(ours);
}
