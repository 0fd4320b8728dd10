//! Pools on EC2 Auto Scaling groups, with the real Terraform CLI against a real AWS API server
//! (moto's emulator, started here): plan reads the group and refuses one that is missing or too
//! small, warns when the capacity type contradicts the group's purchase options; read shows the
//! group's drift; a pool imports by name; a join token exists before any endpoint and never
//! shows in plan or apply output; an endpoint applied with a pool on a group serves from an
//! instance that joined the daemon, and destroy gives the instance back.

mod common;
// The emulator's harness lives with the fabric's tests, which use it too.
#[allow(dead_code)]
#[path = "../../fabric/tests/common/moto.rs"]
mod moto;

use common::daemon::Daemon;
use common::*;
use moto::{Moto, REGION, aws_env};

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
    tf.env = aws_env();
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
    tf.refresh();
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

/// Stops the harness that plays the instances (and with it, every instance it booted).
struct Player(std::process::Child);

impl Drop for Player {
    fn drop(&mut self) {
        signal(self.0.id() as i32, "TERM");
        let _ = self.0.wait();
    }
}

/// Apply, serve and destroy through the real CLI with a pool on the group: the endpoint's
/// second replica is an instance of the group that joins the daemon over the connection it
/// opens, and destroy leaves the group's desired capacity as gpucap found it. The token comes
/// from a variable here (as from a secret store), so the launch template can carry it before
/// the endpoint exists.
#[test]
fn apply_serves_from_a_joined_instance_and_destroy_gives_the_group_back() {
    const TOKEN: &str = "gpj_4f0c9d1b7e2a5c8f3b6d9e0a1c4f7b2d5e8a0c3f6b9d2e5a8c1f4b7d0e3a6c9f";
    let moto = Moto::start();
    let mut daemon = Daemon::configured(REGION, "EU");
    daemon.env = aws_env();
    daemon.launch();
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("join-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let user_data = work.path().join("user-data.sh");
    std::fs::write(
        &user_data,
        format!(
            "#!/bin/bash\nexec {runtime} serve --join {url}/v1/join/digits --token-file {token} \
             --pool eu-cloud --machine \"$INSTANCE_ID\" --ca-cert {ca} --cache-dir {cache} \
             --device cpu --threads 1\n",
            runtime = runtime_bin().display(),
            url = daemon.address.trim_end_matches('/'),
            token = token_file.display(),
            ca = daemon.ca().display(),
            cache = work.path().join("model-cache").display(),
        ),
    )
    .unwrap();
    moto.aws(&[
        "create",
        "--group",
        "gpu-eu-cloud",
        "--max",
        "2",
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    let _player = Player(moto.play("gpu-eu-cloud", &work.path().join("instances")));

    let mut tf = Tf::new("");
    tf.env = aws_env();
    tf.env.push(("TF_VAR_join_token".into(), TOKEN.into()));
    tf.write_with(
        &format!(
            "  fabric {{\n    region       = \"{REGION}\"\n    address      = \"{}\"\n    token        = \"{}\"\n    ca_cert_file = \"{}\"\n  }}\n  aws {{\n    endpoint_url = \"{}\"\n  }}\n",
            daemon.address,
            daemon.token,
            daemon.ca().display(),
            moto.url
        ),
        &format!(
            r#"
variable "join_token" {{
  type      = string
  sensitive = true
}}

resource "gpucap_gpu_pool" "lab" {{
  name         = "eu-lab"
  region       = "{REGION}"
  jurisdiction = "EU"
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{ devices = "cpu" }}
}}

resource "gpucap_gpu_pool" "cloud" {{
  name               = "eu-cloud"
  region             = "{REGION}"
  jurisdiction       = "EU"
  capacity_type      = "on_demand"
  price_per_gpu_hour = 1.1
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  join_token_sha256 = [sha256(var.join_token)]
  aws_autoscaling_group {{
    name = "gpu-eu-cloud"
  }}
}}

resource "gpucap_inference_endpoint" "digits" {{
  name  = "digits"
  pools = [gpucap_gpu_pool.lab.name, gpucap_gpu_pool.cloud.name]
  model {{ path = "{model}" }}
  replicas {{
    min = 2
    max = 2
  }}
  data_residency {{
    allowed_jurisdictions = ["EU"]
  }}
}}

output "url" {{ value = gpucap_inference_endpoint.digits.url }}
"#,
            model = digits_model().display()
        ),
    );

    // Apply converges once the instance the router asked the group for has joined.
    let applied = tf.apply();
    assert!(!applied.contains(TOKEN), "{applied}");
    let group = moto.group("gpu-eu-cloud");
    let instances = group["instances"].as_array().unwrap();
    assert_eq!(group["desired"], 1, "{group}");
    assert_eq!(instances.len(), 1, "{group}");
    assert_eq!(instances[0]["protected"], true, "{group}");
    let machine = instances[0]["id"].as_str().unwrap();
    // The pool's replica is that instance's, reached over the connection it opened: no
    // process of the daemon's own, and a joined replica runs for the machine.
    let view = daemon.endpoint("digits");
    let cloud: Vec<&serde_json::Value> = view["status"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["pool"] == "eu-cloud")
        .collect();
    assert_eq!(cloud.len(), 1, "{view}");
    assert!(
        cloud[0]["phase"] == "ready" && cloud[0]["pid"].is_null(),
        "{view}"
    );
    assert!(moto::find_joined_replica(machine).is_some(), "{view}");
    let url = tf.output("url");
    for _ in 0..8 {
        assert_eq!(predict(&url), first_digit().0);
    }
    let (code, plan) = tf.plan();
    assert_eq!(code, 0, "a plan right after apply changes nothing:\n{plan}");

    // Destroy: the router drains the joined replica and terminates its instance with a
    // decrement; the group is back to what gpucap found, its bounds untouched.
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let group = moto.group("gpu-eu-cloud");
        if group["desired"] == 0 && group["instances"].as_array().unwrap().is_empty() {
            assert_eq!(group["min"], 0, "{group}");
            assert_eq!(group["max"], 2, "{group}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the instance given back after destroy: {group}\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
