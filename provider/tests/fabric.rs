//! An endpoint with a burst policy through the real Terraform CLI: apply deploys its router, a
//! plan right after shows no changes, an in-place change (batching, budget) is applied under load
//! without a failed request, and destroy leaves nothing running.

mod common;

use std::process::Command;

use common::{Tf, all_gone, bench, digits_model, failed, first_digit, predict};

fn config(max_batch: u32, budget: f64) -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "lab" {{
  name               = "lab"
  region             = "lab-1"
  jurisdiction       = "EU"
  price_per_gpu_hour = 0.4
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{ devices = "cpu" }}
}}

resource "gpucap_gpu_pool" "cloud" {{
  name               = "cloud"
  region             = "eu-west-1"
  capacity_type      = "on_demand"
  price_per_gpu_hour = 2
  gpu {{ model = "cpu" }}
  nodes {{ max = 2 }}
  local {{ devices = "cpu" }}
}}

resource "gpucap_burst_policy" "eu" {{
  name        = "eu"
  base_pools  = [gpucap_gpu_pool.lab.name]
  burst_pools = [gpucap_gpu_pool.cloud.name]
  scale_up {{
    queue_depth = 2
    for         = "1s"
  }}
  scale_down {{
    idle_for      = "5s"
    drain_timeout = "5s"
  }}
  budget {{ max_hourly_usd = {budget} }}
}}

resource "gpucap_inference_endpoint" "digits" {{
  name         = "digits"
  burst_policy = gpucap_burst_policy.eu.name
  model {{ path = "{model}" }}
  batching {{ max_batch_size = {max_batch} }}
  replicas {{
    min = 1
    max = 3
  }}
  data_residency {{ allowed_jurisdictions = ["EU"] }}
}}

output "url" {{ value = gpucap_inference_endpoint.digits.url }}
output "router_region" {{ value = gpucap_inference_endpoint.digits.router_region }}
output "max_cost" {{ value = gpucap_inference_endpoint.digits.monthly_cost_max_usd }}
"#,
        model = digits_model().display()
    )
}

#[test]
fn an_endpoint_with_a_burst_policy_applies_updates_under_load_and_destroys_cleanly() {
    let tf = Tf::new(&config(8, 10.0));
    let out = tf.apply();
    let url = tf.output("url");
    assert_eq!(predict(&url), first_digit().0, "{out}");
    assert_eq!(tf.output("router_region"), "lab-1");
    // The cost model's bound: what the pools hold (lab's 1 slot at $0.40/h, cloud's 2 at $2/h)
    // for 730 h, under the budget.
    assert_eq!(tf.output("max_cost"), "3212");
    assert_eq!(tf.plan().0, 0, "a plan right after apply shows no changes");
    let router = tf.router_pid("digits").unwrap();

    // Burst under load, and change batching and the budget while it runs.
    let load_url = url.clone();
    // Long enough to outlast the burst, a plan and an apply on a loaded machine: checked below.
    let load = std::thread::spawn(move || bench(&load_url, 48, "25s", None));
    // Under load the router starts a burst replica beside the base one: wait for it, while the
    // load still runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tf.endpoint_pids("digits").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline && !load.is_finished(),
            "under load the router should have started a burst replica: {:?}",
            tf.endpoint_pids("digits")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let during = tf.endpoint_pids("digits");
    tf.write(&config(16, 8.0));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2);
    assert!(
        plan.contains("gpucap_inference_endpoint.digits will be updated in-place"),
        "{plan}"
    );
    tf.apply();
    assert!(
        !load.is_finished(),
        "the load ended before the change was applied, so it proves nothing about the change"
    );
    let report = load.join().unwrap();
    assert_eq!(
        failed(&report),
        0,
        "requests failed through the change: {report}"
    );
    assert_eq!(tf.output("url"), url, "the URL survives an in-place change");
    assert_eq!(
        tf.router_pid("digits"),
        Some(router),
        "reloaded, not restarted"
    );
    let rolled: Vec<i32> = during.iter().copied().filter(|p| *p != router).collect();
    assert!(
        all_gone(&rolled),
        "replicas from before the change still run: {rolled:?}"
    );
    let config_text =
        std::fs::read_to_string(tf.state_dir().join("endpoints/digits/fabric.toml")).unwrap();
    assert!(config_text.contains("max_batch_size = 16"), "{config_text}");
    assert!(
        config_text.contains("max_hourly_usd = 8.0"),
        "{config_text}"
    );
    assert_eq!(tf.plan().0, 0);

    let everything = tf.endpoint_pids("digits");
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(
        all_gone(&everything),
        "destroy left a router or replica running"
    );
    assert!(!tf.state_dir().join("endpoints/digits").exists());
}

#[test]
fn simulate_reads_the_endpoint_from_a_real_plan_in_its_spill_order() {
    let tf = Tf::new(&config(4, 3.0));
    tf.ok(&["plan", "-out", "plan.bin"]);
    let json = tf.ok(&["show", "-json", "plan.bin"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let endpoint = doc["planned_values"]["root_module"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "gpucap_inference_endpoint")
        .unwrap();
    assert_eq!(
        endpoint["values"]["spill_order"],
        serde_json::json!(["lab", "cloud"])
    );
    std::fs::write(tf.path().join("plan.json"), &json).unwrap();
    // Ten minutes: quiet, then more than the base replica carries.
    std::fs::write(
        tf.path().join("trace.csv"),
        "second,requests_per_second\n0,50\n120,400\n480,50\n600,50\n",
    )
    .unwrap();
    let out = Command::new(common::fabric_bin())
        .args([
            "simulate",
            "--plan",
            "plan.json",
            "--endpoint",
            "digits",
            "--trace",
            "trace.csv",
            "--replica-rps",
            "200",
            "--format",
            "json",
        ])
        .current_dir(tf.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["policy"], "eu");
    let pools = report["rows"][0]["pools"].as_array().unwrap();
    let names: Vec<(&str, bool)> = pools
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["burst"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("lab", false), ("cloud", true)]);
    assert!(pools[1]["starts"].as_u64().unwrap() > 0, "{report}");
    // The budget of $3/h holds one $2/h burst replica at a time, in the plan's words too.
    assert_eq!(pools[1]["peak_replicas"], 1, "{report}");
}
