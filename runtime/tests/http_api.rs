//! The runtime over real HTTP: the protocol routes, accuracy of the example model, bad input,
//! load shedding and draining on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{Server, digits_test_set};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn infer_body(rows: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"id": "t", "inputs": [{"name": "pixels", "shape": [rows.len(), 64], "datatype": "FP32", "data": data}]})
}

#[tokio::test]
async fn protocol_routes_answer() {
    let s = Server::digits(&[]);
    let c = client();
    let v2: Value = c
        .get(format!("{}/v2", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v2["name"], "gpucap-runtime");
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/digits/ready",
        "/v2/models/digits/versions/1/ready",
    ] {
        assert_eq!(
            c.get(format!("{}{path}", s.url))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    let meta: Value = c
        .get(format!("{}/v2/models/digits", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    insta::assert_json_snapshot!(meta, @r#"
    {
      "inputs": [
        {
          "datatype": "FP32",
          "name": "pixels",
          "shape": [
            -1,
            64
          ]
        }
      ],
      "name": "digits",
      "outputs": [
        {
          "datatype": "FP32",
          "name": "probabilities",
          "shape": [
            -1,
            10
          ]
        }
      ],
      "platform": "gpucap-ffn",
      "versions": [
        "1"
      ]
    }
    "#);
    let missing = c
        .get(format!("{}/v2/models/nope", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(
        err["error"],
        "unknown model 'nope'; this server serves 'digits'"
    );
}

#[tokio::test]
async fn accuracy_on_the_test_set_matches_the_training_report() {
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("examples/models/digits-report.json"))
            .unwrap(),
    )
    .unwrap();
    let s = Server::digits(&[]);
    let c = client();
    let test = digits_test_set();
    let mut correct = 0;
    for chunk in test.chunks(50) {
        let rows: Vec<Vec<f32>> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let resp: Value = c
            .post(format!("{}/v2/models/digits/infer", s.url))
            .json(&infer_body(&rows))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(resp["id"], "t");
        assert_eq!(resp["outputs"][0]["shape"], json!([chunk.len(), 10]));
        let data: Vec<f32> = serde_json::from_value(resp["outputs"][0]["data"].clone()).unwrap();
        for ((label, _), probs) in chunk.iter().zip(data.chunks(10)) {
            let best = (0..10)
                .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
                .unwrap();
            correct += usize::from(best == *label);
        }
    }
    assert_eq!(test.len() as u64, report["test_samples"].as_u64().unwrap());
    assert_eq!(
        correct as u64,
        report["test_correct"].as_u64().unwrap(),
        "runtime accuracy differs from training"
    );
}

#[tokio::test]
async fn bad_requests_get_4xx_with_a_named_field() {
    let s = Server::digits(&["--max-body-bytes", "4096"]);
    let c = client();
    let url = format!("{}/v2/models/digits/infer", s.url);
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "{\"inputs\": [".into()),
        ("wrong shape", json!({"inputs":[{"name":"pixels","shape":[1,63],"datatype":"FP32","data":vec![0;63]}]}).to_string()),
        ("wrong datatype", json!({"inputs":[{"name":"pixels","shape":[1,64],"datatype":"BOOL","data":vec![true;64]}]}).to_string()),
        ("empty batch", json!({"inputs":[{"name":"pixels","shape":[0,64],"datatype":"FP32","data":[]}]}).to_string()),
        ("nan as string", json!({"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":["NaN"]}]}).to_string()),
        ("oversized", json!({"inputs":[{"name":"pixels","shape":[100,64],"datatype":"FP32","data":vec![1.5;6400]}]}).to_string()),
    ];
    let mut seen = String::new();
    for (what, body) in cases {
        let resp = c.post(&url).body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let err: Value = resp.json().await.unwrap();
        seen += &format!("{what}: {status} {}\n", err["error"].as_str().unwrap());
    }
    let unknown = c
        .post(format!("{}/v2/models/other/infer", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    seen += &format!("unknown model: {}\n", unknown.status().as_u16());
    insta::assert_snapshot!(seen, @r"
    malformed: 400 inputs: EOF while parsing a list at line 1 column 12
    wrong shape: 400 inputs[0].shape: [1, 63] does not fit this model; expected [N, 64] with N ≥ 1 rows
    wrong datatype: 400 inputs[0].datatype: BOOL is not numeric; use FP32
    empty batch: 400 inputs[0].shape: [0, 64] is an empty batch; expected [N, 64] with N ≥ 1 rows
    nan as string: 400 inputs[0].data[0]: expected a number, found a string
    oversized: 413 the request body exceeds the limit of 4096 bytes (server.max_body_bytes); send fewer rows per request
    unknown model: 404
    ");
    // The server is still healthy after all of that.
    assert_eq!(
        c.get(format!("{}/v2/health/ready", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A big enough model that a batch takes a while on the CPU, so the queue fills up.
fn slow_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("slow.safetensors");
    let w = 1024usize;
    let mut tensors = Vec::new();
    for name in ["a", "b", "c", "d"] {
        tensors.push((format!("{name}.weight"), vec![w, w], vec![0.001f32; w * w]));
        tensors.push((format!("{name}.bias"), vec![w], vec![0.0f32; w]));
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let meta = [
        ("gpucap.format", "gpucap-ffn"),
        ("gpucap.format_version", "1"),
        ("gpucap.layers", "a,b,c,d"),
        ("gpucap.activations", "relu,relu,relu,identity"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
    path
}

async fn fire(c: reqwest::Client, url: String, n: usize) -> (u16, Option<String>, Duration) {
    let body = json!({"inputs":[{"name":"input","shape":[n,1024],"datatype":"FP32","data":vec![0.5;n*1024]}]});
    let t = Instant::now();
    match c.post(&url).json(&body).send().await {
        Ok(r) => {
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry, t.elapsed())
        }
        Err(_) => (0, None, t.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_sheds_load_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let model = slow_model(dir.path());
    let s = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--name",
        "slow",
        "--queue-capacity",
        "2",
        "--max-batch-size",
        "1",
        "--threads",
        "1",
    ]);
    let url = format!("{}/v2/models/slow/infer", s.url);
    let c = client();
    let tasks: Vec<_> = (0..30)
        .map(|_| tokio::spawn(fire(c.clone(), url.clone(), 1)))
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        let (status, retry, took) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                shed += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert!(took < Duration::from_secs(2), "a refusal took {took:?}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1 && shed >= 10, "ok={ok} shed={shed}");
    let metrics = c
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gpucap_rejected_requests_total{"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"queue_full\""));
    assert!(metrics.contains("gpucap_batch_rows_bucket"));
    assert!(metrics.contains("gpucap_queue_depth{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_every_accepted_request_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let model = slow_model(dir.path());
    let mut s = Server::start(&[
        "--model",
        model.to_str().unwrap(),
        "--name",
        "slow",
        "--queue-capacity",
        "64",
        "--max-batch-size",
        "4",
        "--threads",
        "1",
    ]);
    let url = format!("{}/v2/models/slow/infer", s.url);
    let c = client();
    let tasks: Vec<_> = (0..24)
        .map(|_| tokio::spawn(fire(c.clone(), url.clone(), 1)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.terminate();
    let mut ok = 0;
    for t in tasks {
        let (status, _, _) = t.await.unwrap();
        // Requests sent after the signal may be refused (503) or find the port closed (0), but
        // nothing the server accepted may fail.
        assert!(matches!(status, 200 | 503 | 0), "status {status}");
        ok += usize::from(status == 200);
    }
    assert!(ok >= 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runtime did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cuda_device_is_refused_at_start_saying_why() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpucap-runtime"))
        .args([
            "serve",
            "--device",
            "cuda:0",
            "--listen",
            "127.0.0.1:0",
            "--model",
        ])
        .arg(common::digits_model())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Why depends on the host: no CUDA library, no GPU, or (with a GPU) no CUDA backend yet.
    let why = match gpucap_runtime::cuda::gpus() {
        Err(why) => why.to_string(),
        Ok(_) => "has no CUDA backend yet".to_string(),
    };
    assert!(
        stderr.contains("device 'cuda:0' requested, but") && stderr.contains(&why),
        "{stderr}"
    );
}
