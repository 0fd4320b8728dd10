//! The command line as users meet it: help texts (snapshots) and `bench` against a real server.

mod common;

use std::process::Command;

use common::Server;

fn runtime(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpucap-runtime"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_texts() {
    for sub in ["serve", "bench", "forward-bench", "inspect"] {
        let out = runtime(&[sub, "--help"]);
        assert!(out.status.success());
        insta::assert_snapshot!(
            format!("help_{sub}"),
            String::from_utf8(out.stdout).unwrap()
        );
    }
}

#[test]
fn bench_reports_every_request_as_json() {
    let server = Server::digits(&[]);
    let out = runtime(&[
        "bench",
        "--url",
        &server.url,
        "--model",
        "digits",
        "-c",
        "4",
        "-n",
        "200",
        "--rows",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], 200);
    assert_eq!(report["rows_per_request"], 3);
    assert_eq!(report["transport_errors"], 0);
    assert!(report["errors_by_status"].as_object().unwrap().is_empty());
    assert!(report["refused_latency"].is_null());
    let lat = &report["latency"];
    assert!(lat["p50_ms"].as_f64().unwrap() <= lat["p99_ms"].as_f64().unwrap());
    assert!(lat["p99_ms"].as_f64().unwrap() <= lat["max_ms"].as_f64().unwrap());
    assert!(report["throughput_rows_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_against_an_unknown_model_fails_with_the_name() {
    let server = Server::digits(&[]);
    let out = runtime(&["bench", "--url", &server.url, "--model", "nope", "-n", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("model 'nope'"), "{err}");
}

#[test]
fn inspect_rejects_a_corrupt_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let out = runtime(&["inspect", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("broken.safetensors"), "{err}");
}

#[test]
fn forward_bench_times_each_batch_size_and_measures_reduced_precision() {
    let model = common::digits_model();
    let out = runtime(&[
        "forward-bench",
        "--model",
        model.to_str().unwrap(),
        "--batches",
        "1,3",
        "--iterations",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (p, rows) in points.iter().zip([1, 3]) {
        assert_eq!(p["rows"], rows);
        assert!(p["median_ms"].as_f64().unwrap() > 0.0);
        assert!(p["cublas_ms"].is_null(), "the CPU has no cuBLAS time");
    }
    let accuracy = report["accuracy"].as_array().unwrap();
    assert_eq!(accuracy[0]["precision"], "fp16");
    assert_eq!(accuracy[1]["precision"], "bf16");
    let fp16 = accuracy[0]["max_abs_error"].as_f64().unwrap();
    let bf16 = accuracy[1]["max_abs_error"].as_f64().unwrap();
    assert!(fp16 > 0.0 && fp16 < bf16, "fp16 {fp16}, bf16 {bf16}");
}

/// On a GPU host the GPU is timed next to cuBLAS alone; elsewhere the run stops and says why.
#[test]
fn forward_bench_times_the_gpu_or_says_why_it_cannot() {
    let model = common::digits_model();
    let out = runtime(&[
        "forward-bench",
        "--model",
        model.to_str().unwrap(),
        "--devices",
        "cpu,cuda:0",
        "--batches",
        "4",
        "--iterations",
        "2",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let usable = gpucap_runtime::cuda::gpus().is_ok() && gpucap_runtime::cuda::libraries().is_ok();
    if usable {
        assert!(out.status.success(), "{err}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let gpu = &report["points"][1];
        assert!(gpu["backend"].as_str().unwrap().starts_with("cuda:0"));
        assert!(gpu["cublas_ms"].as_f64().unwrap() > 0.0);
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(err.starts_with("error: cuda:0: the CUDA"), "{err}");
    }
}
