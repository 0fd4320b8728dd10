//! Pools on EC2 Auto Scaling groups, with the real Terraform CLI against a real AWS API server
//! (moto's emulator, started here): plan reads the group and refuses one that is missing or too
//! small, warns when the capacity type contradicts the group's purchase options; read shows the
//! group's drift; a pool imports by name; a join token exists before any endpoint and never
//! shows in plan or apply output.

mod common;
// The emulator's harness lives with the fabric's tests, which use it too.
#[allow(dead_code)]
#[path = "../../fabric/tests/common/moto.rs"]
mod moto;

use common::*;
use moto::{AWS_ENV, Moto, REGION};

fn site() -> (Moto, Tf) {
    let moto = Moto::start();
    let empty = tempfile::NamedTempFile::new().unwrap();
    for (group, max) in [("gpu-eu", "2"), ("gpu-eu-mixed", "3")] {
        let mut args = vec![
            "create",
            "--group",
            group,
            "--max",
            max,
            "--user-data",
            empty.path().to_str().unwrap(),
        ];
        if group.ends_with("mixed") {
            args.extend(["--spot-percent", "100"]);
        }
        moto.aws(&args);
    }
    let mut tf = Tf::new("");
    tf.env = AWS_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (moto, tf)
}

fn config(tf: &Tf, moto: &Moto, group: &str, capacity_type: &str, nodes_max: u32) {
    tf.write_with(
        &format!("  aws {{\n    endpoint_url = \"{}\"\n  }}\n", moto.url),
        &format!(
            r#"
resource "gpucap_join_token" "burst" {{}}

resource "gpucap_gpu_pool" "burst" {{
  name               = "eu-burst"
  region             = "{REGION}"
  capacity_type      = "{capacity_type}"
  price_per_gpu_hour = 1.1
  gpu {{
    model = "cpu"
  }}
  nodes {{
    max = {nodes_max}
  }}
  join_token_sha256 = [gpucap_join_token.burst.sha256]
  aws_autoscaling_group {{
    name = "{group}"
  }}
}}

output "desired" {{
  value = gpucap_gpu_pool.burst.aws_autoscaling_group.desired_capacity
}}
"#
        ),
    );
}

#[test]
fn plan_reads_the_group_and_read_shows_its_drift() {
    let (moto, tf) = site();

    // A group that is not in the pool's region is an error naming the group and the attribute.
    config(&tf, &moto, "gpu-us", "on_demand", 2);
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(err.contains("Auto Scaling group not found"), "{err}");
    assert!(err.contains("\"gpu-us\"") && err.contains(REGION), "{err}");
    let main = std::fs::read_to_string(tf.path().join("main.tf")).unwrap();
    let line = main
        .lines()
        .position(|l| l.contains("name = \"gpu-us\""))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("on main.tf line {line}")),
        "the error points at aws_autoscaling_group.name (line {line}): {err}"
    );

    // More nodes than the group's MaxSize: an error on nodes.max; gpucap never raises MaxSize.
    config(&tf, &moto, "gpu-eu", "on_demand", 5);
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(err.contains("More nodes than the group may have"), "{err}");
    assert!(err.contains("MaxSize 2"), "{err}");

    // Spot declared on an all-on-demand group: a warning with the attribute.
    config(&tf, &moto, "gpu-eu", "spot", 2);
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("The group buys no spot capacity"), "{text}");

    // On-demand on that group is fine; on an all-spot group it is a warning.
    config(&tf, &moto, "gpu-eu-mixed", "on_demand", 2);
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("The group buys only spot capacity"), "{text}");

    config(&tf, &moto, "gpu-eu", "on_demand", 2);
    let applied = tf.apply();
    assert_eq!(tf.output("desired"), "0");
    // The token is made at apply and never printed.
    let token_state = tf.ok(&["state", "show", "-no-color", "gpucap_join_token.burst"]);
    assert!(token_state.contains("(sensitive value)"), "{token_state}");
    assert!(!applied.contains("gpj_"), "{applied}");

    // Someone scales the group by hand: the next refresh shows it, the plan changes nothing.
    moto.aws(&["set-desired", "--group", "gpu-eu", "--desired", "1"]);
    tf.ok(&[
        "apply",
        "-refresh-only",
        "-auto-approve",
        "-no-color",
        "-input=false",
    ]);
    assert_eq!(tf.output("desired"), "1");
    let (code, plan) = tf.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(!plan.contains("gpj_"), "{plan}");

    // The pool imports by name.
    tf.ok(&["state", "rm", "gpucap_gpu_pool.burst"]);
    tf.ok(&[
        "import",
        "-no-color",
        "-input=false",
        "gpucap_gpu_pool.burst",
        "eu-burst",
    ]);
    let (code, plan) = tf.plan();
    assert_eq!(code, 0, "an imported pool plans no change: {plan}");

    // Destroy leaves the group as gpucap found it.
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    let group = moto.group("gpu-eu");
    assert_eq!(group["desired"], 1, "{group}");
    assert_eq!(group["max"], 2, "{group}");
}
