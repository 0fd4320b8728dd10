//! Create, plan-with-no-changes, in-place update, replace, import and destroy for every resource,
//! through the real Terraform CLI, with a real router and runtime replicas serving the digits model.

mod common;

use common::{Tf, all_gone, digits_model, first_digit, predict};

fn config(endpoint: &str, max_batch: u32, pool: &str) -> String {
    config_priced(endpoint, max_batch, pool, "0.25")
}

fn config_priced(endpoint: &str, max_batch: u32, pool: &str, price: &str) -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "host" {{
  name               = "{pool}"
  region             = "lab-1"
  jurisdiction       = "EU"
  price_per_gpu_hour = {price}
  gpu {{ model = "cpu" }}
  nodes {{ max = 2 }}
  local {{ devices = "cpu" }}
}}

resource "gpucap_burst_policy" "eu" {{
  name       = "eu"
  base_pools = [gpucap_gpu_pool.host.name]
  budget {{ max_hourly_usd = 5 }}
}}

resource "gpucap_inference_endpoint" "digits" {{
  name         = "{endpoint}"
  burst_policy = gpucap_burst_policy.eu.name
  model {{ path = "{model}" }}
  batching {{ max_batch_size = {max_batch} }}
  data_residency {{
    classification        = "pii"
    allowed_jurisdictions = ["EU"]
  }}
}}

output "url" {{ value = gpucap_inference_endpoint.digits.url }}
output "status" {{ value = gpucap_inference_endpoint.digits.replicas_status }}
output "cost" {{ value = gpucap_inference_endpoint.digits.monthly_cost_min_usd }}
output "regions" {{ value = join(",", gpucap_inference_endpoint.digits.serving_regions) }}
output "gpus" {{ value = gpucap_gpu_pool.host.gpus_max }}
output "policy_cost" {{ value = gpucap_burst_policy.eu.max_hourly_cost_usd }}
"#,
        model = digits_model().display()
    )
}

#[test]
fn every_resource_through_its_whole_lifecycle() {
    let (label, _) = first_digit();
    let tf = Tf::new(&config("digits", 64, "host"));

    // Create: a real endpoint that answers.
    tf.apply();
    let url = tf.output("url");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v2/models/digits"),
        "{url}"
    );
    assert_eq!(predict(&url), label);
    assert_eq!(tf.output("status"), "1 ready: base 1");
    assert_eq!(tf.output("gpus"), "2");
    assert_eq!(tf.output("cost"), "182.5"); // 1 replica x $0.25/h x 730 h
    assert_eq!(tf.output("policy_cost"), "0.5"); // 2 GPUs x $0.25/h, no burst pools
    assert_eq!(tf.output("regions"), "lab-1");
    let router = tf.router_pid("digits").unwrap();
    let first_replicas = tf.replica_pids("digits");
    assert_eq!(first_replicas.len(), 1);

    // No changes.
    assert_eq!(tf.plan().0, 0);

    // In place: a new price updates the pool and the policy's cost; batching is reloaded by the
    // router, which rolls the replica (drained, then replaced); the endpoint keeps its URL.
    tf.write(&config_priced("digits", 8, "host", "0.5"));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2);
    assert!(
        plan.contains("gpucap_inference_endpoint.digits will be updated in-place"),
        "{plan}"
    );
    assert!(
        plan.contains("gpucap_gpu_pool.host will be updated in-place"),
        "{plan}"
    );
    assert!(
        plan.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("hourly_cost_max_usd = 0.5 -> 1"),
        "pool costs are known at plan time: {plan}"
    );
    tf.apply();
    assert_eq!(
        tf.router_pid("digits"),
        Some(router),
        "a reload, not a new router"
    );
    assert_eq!(tf.output("url"), url);
    let second_replicas = tf.replica_pids("digits");
    assert_eq!(second_replicas.len(), 1);
    assert_ne!(
        first_replicas, second_replicas,
        "the replica was not rolled"
    );
    assert!(
        all_gone(&[first_replicas[0].1]),
        "the old replica still runs"
    );
    assert_eq!(predict(&tf.output("url")), label);
    assert_eq!(tf.output("policy_cost"), "1");
    assert_eq!(tf.plan().0, 0);

    // Replace: a new name replaces the endpoint (and renaming a pool replaces the pool).
    tf.write(&config_priced("digits-v2", 8, "host2", "0.5"));
    let (_, plan) = tf.plan();
    assert!(
        plan.contains("gpucap_inference_endpoint.digits must be replaced"),
        "{plan}"
    );
    assert!(
        plan.contains("gpucap_gpu_pool.host must be replaced"),
        "{plan}"
    );
    assert!(
        plan.contains("gpucap_burst_policy.eu will be updated in-place"),
        "{plan}"
    );
    let replaced = tf.endpoint_pids("digits");
    tf.apply();
    assert!(
        all_gone(&replaced),
        "the replaced router or replica still runs"
    );
    assert!(!tf.state_dir().join("endpoints/digits").exists());
    let url = tf.output("url");
    assert!(url.ends_with("/v2/models/digits-v2"), "{url}");
    assert_eq!(predict(&url), label);
    assert_eq!(tf.plan().0, 0);

    // Import by name, after forgetting each object.
    for (address, name) in [
        ("gpucap_gpu_pool.host", "host2"),
        ("gpucap_burst_policy.eu", "eu"),
        ("gpucap_inference_endpoint.digits", "digits-v2"),
    ] {
        tf.ok(&["state", "rm", address]);
        tf.ok(&["import", "-no-color", "-input=false", address, name]);
    }
    assert_eq!(tf.plan().0, 0, "import did not reproduce the state");

    // Destroy: nothing left running, no records left.
    let pids = tf.endpoint_pids("digits-v2");
    assert_eq!(pids.len(), 2, "a router and a replica");
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(
        all_gone(&pids),
        "destroy left the router or a replica running"
    );
    assert!(tf.state_list().is_empty());
    for kind in ["pools", "policies", "endpoints"] {
        let left: Vec<_> = std::fs::read_dir(tf.state_dir().join(kind))
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{kind} records left after destroy: {left:?}"
        );
    }
}

#[test]
fn importing_something_that_does_not_exist_says_so() {
    let tf = Tf::new(&config("digits", 64, "host"));
    let err = tf.fails(&[
        "import",
        "-no-color",
        "-input=false",
        "gpucap_gpu_pool.host",
        "nope",
    ]);
    assert!(
        err.contains("no gpucap_gpu_pool named \"nope\" is recorded"),
        "{err}"
    );
}
