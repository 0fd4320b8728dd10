//! Reality and state stay in step: a killed router is drift that plan shows and apply repairs (the
//! new router adopts the replicas that kept running); a failed apply leaves state that matches
//! what runs (nothing) and nothing behind.

mod common;

use common::{Tf, all_gone, digits_model, first_digit, predict};

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
fn a_killed_router_is_drift_that_apply_repairs_adopting_its_replica() {
    let tf = Tf::new(&endpoint(0));
    tf.apply();
    let pid = tf.router_pid("digits").unwrap();
    let replicas = tf.replica_pids("digits");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(all_gone(&[pid]));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains(&format!(
            "\"router not running (process {pid} exited)\" -> (known after apply)"
        )),
        "{plan}"
    );
    tf.apply();
    let repaired = tf.router_pid("digits").unwrap();
    assert_ne!(repaired, pid);
    assert_eq!(
        tf.replica_pids("digits"),
        replicas,
        "the new router adopts the running replica instead of starting another"
    );
    assert_eq!(predict(&tf.output("url")), first_digit().0);
    assert_eq!(tf.plan().0, 0);
}

#[test]
fn a_taken_port_fails_the_apply_and_leaves_state_matching_reality() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tf = Tf::new(&endpoint(port));
    let err = tf.fails(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(err.contains("The endpoint's router did not start"), "{err}");
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
