//! Reality and state stay in step: a killed router is restarted by the embedded daemon (the new
//! router adopts the replicas that kept running), a killed daemon by the next plan; a failed apply
//! leaves state that matches what runs (nothing) and nothing behind.

mod common;

use common::{Tf, all_gone, digits_model, first_digit, predict, process_alive};

fn endpoint(port: u16) -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "host" {{
  name         = "host"
  region       = "lab-1"
  jurisdiction = "EU"
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{}}
}}

resource "gpucap_inference_endpoint" "digits" {{
  name  = "digits"
  pools = [gpucap_gpu_pool.host.name]
  model {{ path = "{}" }}
  listen {{ port = {port} }}
}}

output "url" {{ value = gpucap_inference_endpoint.digits.url }}
"#,
        digits_model().display()
    )
}

#[test]
fn a_killed_router_or_daemon_comes_back_on_its_own_adopting_the_replica() {
    let tf = Tf::new(&endpoint(0));
    tf.apply();
    let url = tf.output("url");
    let pid = tf.router_pid("digits").unwrap();
    let replicas = tf.replica_pids("digits");
    let daemon = tf
        .daemon_pid()
        .expect("the provider started the embedded daemon");
    assert!(process_alive(daemon));

    // The daemon restarts a killed router on its address; the new router adopts the replica.
    kill(pid);
    assert!(all_gone(&[pid]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let repaired = loop {
        match tf.router_pid("digits") {
            Some(p) if p != pid => break p,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "no router was restarted"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    wait_answering(&url);
    assert_eq!(
        tf.replica_pids("digits"),
        replicas,
        "the new router adopts the running replica instead of starting another"
    );
    assert_eq!(tf.plan().0, 0, "nothing left for Terraform to repair");

    // A killed daemon leaves the endpoint serving; the next plan starts another, which adopts
    // the router.
    kill(daemon);
    assert!(all_gone(&[daemon]));
    assert_eq!(predict(&url), first_digit().0);
    let (code, plan) = tf.plan();
    assert_eq!(code, 0, "{plan}");
    let again = tf.daemon_pid().unwrap();
    assert_ne!(again, daemon);
    assert!(process_alive(again));
    assert_eq!(tf.router_pid("digits"), Some(repaired));
}

fn kill(pid: i32) {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}

/// Waits up to 15 s for the endpoint to answer a prediction.
fn wait_answering(model_url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (code, _) = common::curl(&["-s", &format!("{model_url}/ready")]);
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{model_url} did not answer again"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(predict(model_url), first_digit().0);
}

#[test]
fn a_taken_port_fails_the_apply_and_leaves_state_matching_reality() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tf = Tf::new(&endpoint(port));
    let err = tf.fails(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(err.contains("did not deploy the endpoint"), "{err}");
    // Terraform wraps the detail; the words are what count.
    let said = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "the error should name the address and say it is in use: {err}"
    );
    // The pool exists; the endpoint does not, in state or in reality.
    assert_eq!(tf.state_list(), ["gpucap_gpu_pool.host"]);
    assert!(
        !tf.state_dir().join("endpoints/digits").exists(),
        "a failed create left files behind"
    );

    drop(taken);
    tf.apply();
    assert_eq!(
        tf.output("url"),
        format!("http://127.0.0.1:{port}/v2/models/digits")
    );
    assert_eq!(tf.plan().0, 0);
}

#[test]
fn a_missing_model_fails_the_plan_naming_the_attribute() {
    let tf = Tf::new(&endpoint(0).replace(
        &digits_model().display().to_string(),
        "/nonexistent/model.safetensors",
    ));
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(err.contains("Cannot read the model"), "{err}");
    assert!(err.contains("/nonexistent/model.safetensors"), "{err}");
    assert!(
        err.contains("model.path") || err.contains("path ="),
        "{err}"
    );
}

#[test]
fn an_unwritable_state_dir_is_a_clear_error() {
    let tf = Tf::new("");
    tf.write_raw(
        "terraform {\n  required_providers {\n    gpucap = { source = \"gpucap/gpucap\" }\n  }\n}\n\
         provider \"gpucap\" {\n  state_dir = \"/proc/gpucap-cannot-exist\"\n}\n\
         data \"gpucap_local_devices\" \"here\" {}\n",
    );
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(err.contains("Cannot use state_dir"), "{err}");
    assert!(err.contains("/proc/gpucap-cannot-exist"), "{err}");
}
