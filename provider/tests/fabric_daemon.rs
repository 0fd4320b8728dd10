//! The provider as a client of a `gpucap-fabric daemon` started as its own process: apply,
//! plan and destroy from another directory through the real CLI, over HTTPS with a token;
//! nothing runs where Terraform runs; drift on a reachable daemon is repaired, an unreachable one
//! is an error; a provider killed mid-apply converges on the next apply; two applies at once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Tf, all_gone, digits_model, predict, process_alive, signal};

const REGION: &str = "lab-1";

fn provider_block(d: &Daemon, token: &str) -> String {
    format!(
        "  fabric {{\n    region       = \"{REGION}\"\n    address      = \"{}\"\n    token        = \"{token}\"\n    ca_cert_file = \"{}\"\n  }}\n",
        d.address,
        d.ca().display()
    )
}

fn endpoint(name: &str, region: &str) -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "{name}" {{
  name         = "{name}-pool"
  region       = "{region}"
  jurisdiction = "EU"
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{ devices = "cpu" }}
}}

resource "gpucap_inference_endpoint" "{name}" {{
  name  = "{name}"
  pools = [gpucap_gpu_pool.{name}.name]
  model {{ path = "{model}" }}
  replicas {{
    min = 1
    max = 1
  }}
}}

output "{name}_url" {{ value = gpucap_inference_endpoint.{name}.url }}
"#,
        model = digits_model().display()
    )
}

/// The parent pid of a process.
fn parent(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn hosted(d: &Daemon) -> Vec<String> {
    let (code, body) = d.api("GET", "/v1/endpoints", None, &[]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn endpoints_go_to_the_daemon_of_their_region_and_nothing_runs_where_terraform_runs() {
    let mut d = Daemon::start(REGION, "EU");
    let tf = Tf::new("");
    tf.write_with(&provider_block(&d, &d.token), &endpoint("digits", REGION));
    tf.apply();
    let url = tf.output("digits_url");
    assert_eq!(predict(&url), common::first_digit().0);
    let view = d.endpoint("digits");
    assert_eq!(view["url"], url.as_str());
    let router = view["router"]["pid"].as_i64().unwrap() as i32;
    assert_eq!(parent(router), d.pid(), "the daemon runs the router");
    assert!(
        !tf.state_dir().join("endpoints").exists(),
        "nothing was deployed on the host Terraform runs on"
    );
    let (code, out) = tf.plan();
    assert_eq!(code, 0, "a plan right after apply changes nothing:\n{out}");

    // Deleted behind Terraform's back on a reachable daemon: drift, repaired by the next apply.
    let (code, body) = d.api("DELETE", "/v1/endpoints/digits", None, &[]);
    assert_eq!(code, 204, "{body}");
    let (code, out) = tf.plan();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("gpucap_inference_endpoint.digits will be created"),
        "{out}"
    );
    tf.apply();
    assert_eq!(hosted(&d), ["digits"]);

    // An unreachable daemon is an error, never drift: the state keeps the endpoint.
    d.kill();
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(
        err.contains("cannot reach the gpucap-fabric daemon at"),
        "{err}"
    );
    assert!(err.contains("The endpoint's state is unchanged"), "{err}");
    assert!(
        tf.state_list()
            .contains(&"gpucap_inference_endpoint.digits".to_string())
    );
    d.launch();
    let (code, out) = tf.plan();
    assert_eq!(
        code, 0,
        "the endpoint kept serving while the daemon was down:\n{out}"
    );

    // A wrong token, and an endpoint whose region no fabric block serves: clear errors.
    let wrong = Tf::new("");
    wrong.write_with(
        &provider_block(&d, "not-the-token"),
        &endpoint("other", REGION),
    );
    let err = wrong.fails(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(err.contains("answered 401"), "{err}");
    assert!(err.contains("GPUCAP_FABRIC_TOKEN"), "{err}");
    let elsewhere = Tf::new("");
    elsewhere.write_with(&provider_block(&d, &d.token), &endpoint("other", "lab-2"));
    let err = elsewhere.fails(&["plan", "-no-color", "-input=false"]);
    assert!(
        err.contains("No fabric daemon for the endpoint's region"),
        "{err}"
    );
    assert!(err.contains("runs in region \"lab-2\""), "{err}");

    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(hosted(&d).is_empty());
    assert!(all_gone(&[router]));
}

#[test]
fn a_provider_killed_mid_apply_converges_and_two_applies_run_at_once() {
    let d = Daemon::start(REGION, "EU");
    let a = Tf::new("");
    a.write_with(&provider_block(&d, &d.token), &endpoint("a", REGION));
    let b = Tf::new("");
    b.write_with(&provider_block(&d, &d.token), &endpoint("b", REGION));

    // Kill the provider once the daemon has begun deploying: the daemon finishes (or cleans
    // up) on its own, and the next apply converges.
    let mut apply = Command::new(common::terraform_bin())
        .args(["apply", "-auto-approve", "-no-color", "-input=false"])
        .current_dir(a.path())
        .env("TF_CLI_CONFIG_FILE", a.path().join("cli.tfrc"))
        .env("CHECKPOINT_DISABLE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deploying = d.state_dir().join("endpoints/a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !deploying.exists() {
        assert!(
            Instant::now() < deadline,
            "the apply never reached the daemon"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let providers: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("terraform-provider-gpucap"))
                && process_alive(*p)
                && parent(*p) == apply.id() as i32
        })
        .collect();
    assert_eq!(providers.len(), 1, "one provider process for the apply");
    signal(providers[0], "KILL");
    let _ = apply.wait();
    a.apply();
    assert_eq!(predict(&a.output("a_url")), common::first_digit().0);

    // Two applies of different endpoints at once, on one daemon (one replaces its endpoint).
    let first = apply_in(
        a.path().to_path_buf(),
        &["-replace=gpucap_inference_endpoint.a"],
    );
    let second = apply_in(b.path().to_path_buf(), &[]);
    for out in [first.join().unwrap(), second.join().unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut names = hosted(&d);
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(predict(&b.output("b_url")), common::first_digit().0);
    for tf in [&a, &b] {
        tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    }
    assert!(hosted(&d).is_empty());
}

/// `terraform apply` in `dir` on a thread of its own.
fn apply_in(
    dir: std::path::PathBuf,
    extra: &'static [&'static str],
) -> std::thread::JoinHandle<std::process::Output> {
    std::thread::spawn(move || {
        Command::new(common::terraform_bin())
            .args(["apply", "-auto-approve", "-no-color", "-input=false"])
            .args(extra)
            .current_dir(&dir)
            .env("TF_CLI_CONFIG_FILE", dir.join("cli.tfrc"))
            .env("CHECKPOINT_DISABLE", "1")
            .output()
            .unwrap()
    })
}
