//! An ONNX endpoint through the real Terraform CLI: `examples/onnx-endpoint` applied, its signature
//! shown at plan time, a real prediction from ONNX Runtime behind the router; and the models plan
//! refuses, each naming the attribute and what is wrong.

mod common;

use std::process::Command;

use common::{Tf, curl, first_digit, repo_root};

fn example(tf: &Tf, model: &std::path::Path) -> String {
    std::fs::read_to_string(repo_root().join("examples/onnx-endpoint/main.tf"))
        .unwrap()
        .replace(
            "\"${path.module}/.gpucap-state\"",
            &format!("{:?}", tf.state_dir().display().to_string()),
        )
        .replace(
            "\"../models/digits-pipeline.onnx\"",
            &format!("{:?}", model.display().to_string()),
        )
        .replace(
            "provider \"gpucap\" {\n",
            &format!(
                "provider \"gpucap\" {{\n  runtime_path = {:?}\n  fabric_path  = {:?}\n",
                common::runtime_bin().display().to_string(),
                common::fabric_bin().display().to_string()
            ),
        )
}

#[test]
fn an_onnx_endpoint_is_planned_with_its_signature_and_serves_predictions() {
    let tf = Tf::new("");
    let pipeline = repo_root().join("examples/models/digits-pipeline.onnx");
    tf.write_raw(&example(&tf, &pipeline));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains(
            "model_signature = \"pixels FP32 [-1, 64] -> label INT64 [-1], probabilities FP32 [-1, 10]\""
        ),
        "{plan}"
    );
    tf.apply();
    assert_eq!(
        tf.output("model_signature"),
        "pixels FP32 [-1, 64] -> label INT64 [-1], probabilities FP32 [-1, 10]"
    );
    let url = tf.output("url");
    let (label, pixels) = first_digit();
    let body = serde_json::json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}],
        "outputs": [{"name": "label"}]});
    let (status, answer) = curl(&["-s", "-d", &body.to_string(), &format!("{url}/infer")]);
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["outputs"][0]["name"], "label", "{answer}");
    assert_eq!(answer["outputs"][0]["datatype"], "INT64", "{answer}");
    assert_eq!(
        answer["outputs"][0]["data"],
        serde_json::json!([label]),
        "{answer}"
    );
    // The fabric's status names the execution provider the replica really runs on, once the
    // router has scraped it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = Command::new(common::fabric_bin())
            .args(["status", &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("onnxruntime cpu (") && text.contains("CPUExecutionProvider)") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ONNX backend in the status:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // The router reports the ONNX signature itself, and the backends its replicas run on.
    let (status, metadata) = curl(&["-s", &url]);
    assert_eq!(status, 200);
    let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata["platform"], "onnxruntime_onnx", "{metadata}");
    assert_eq!(metadata["outputs"][0]["datatype"], "INT64", "{metadata}");
    assert!(
        metadata["parameters"]["backends"][0]
            .as_str()
            .is_some_and(|b| b.ends_with("CPUExecutionProvider)")),
        "{metadata}"
    );
    assert_eq!(tf.plan().0, 0, "a second plan shows no changes");
    tf.ok(&["destroy", "-auto-approve", "-input=false", "-no-color"]);
}

/// The plan's error, on one line (Terraform wraps long messages).
fn plan_error(tf: &Tf) -> String {
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    err.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn models_that_cannot_be_served_fail_the_plan_naming_the_attribute() {
    let tf = Tf::new("");
    let models = tf.path().join("models");
    let python = std::env::var("GPUCAP_PYTHON")
        .unwrap_or_else(|_| repo_root().join(".venv/bin/python").display().to_string());
    let made = Command::new(python)
        .arg(repo_root().join("runtime/tests/clients/onnx_models.py"))
        .arg(&models)
        .status()
        .unwrap();
    assert!(made.success(), "making the test graphs failed");

    tf.write_raw(&example(&tf, &models.join("not-onnx.onnx")));
    let err = plan_error(&tf);
    assert!(
        err.contains("Invalid model file") && err.contains("not a readable ONNX model"),
        "{err}"
    );
    assert!(
        err.contains("model.path") || err.contains("path = var.model_path"),
        "{err}"
    );

    tf.write_raw(&example(&tf, &models.join("zipmap.onnx")));
    let err = plan_error(&tf);
    assert!(
        err.contains("export the classifier with options={'zipmap': False}"),
        "{err}"
    );

    tf.write_raw(&example(&tf, &models.join("fixed.onnx")));
    let err = plan_error(&tf);
    assert!(
        err.contains("The model cannot batch")
            && err.contains("the graph's batch dimension is fixed to 1")
            && err.contains("but max_batch_size is 64"),
        "{err}"
    );
    assert!(
        err.contains(": max_batch_size = 64"),
        "the error points at the setting: {err}"
    );
}
