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

/// The digits model's answer from `server` for `rows`.
async fn infer_digits(c: &reqwest::Client, server: &str, rows: &[Vec<f32>]) -> Value {
    c.post(format!("{server}/v2/models/digits/infer"))
        .json(&infer_body(rows))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `server`'s `/metrics` text.
async fn metrics_text(c: &reqwest::Client, server: &str) -> String {
    c.get(format!("{server}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
    let mut meta: Value = c
        .get(format!("{}/v2/models/digits", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // What computes depends on the host (its cores): checked apart from the snapshot.
    let backends = meta.as_object_mut().unwrap().remove("parameters").unwrap();
    let backend = backends["backends"][0].as_str().unwrap();
    assert!(
        backend.starts_with("cpu (") || backend.starts_with("cuda:"),
        "{backends}"
    );
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
        let resp = infer_digits(&c, &s.url, &rows).await;
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

/// Layers of [`slow_model`]. With [`SLOW_WIDTH`] and [`SLOW_ROWS`], a batch takes tens of
/// milliseconds on one CPU thread, far longer than sending a request of that many rows (binary
/// tensors), so requests are still queued or computing while a test acts on them.
const SLOW_LAYERS: usize = 4;
/// The width of every layer of [`slow_model`]: its input and output rows.
const SLOW_WIDTH: usize = 2048;
/// Rows per request to [`slow_model`], and its servers' batch size: one request, one batch.
const SLOW_ROWS: usize = 64;

/// A model big enough that a batch takes a while on the CPU, so the queue fills up.
fn slow_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("slow.safetensors");
    let w = SLOW_WIDTH;
    let names: Vec<String> = (0..SLOW_LAYERS).map(|i| format!("l{i}")).collect();
    let weight: Vec<u8> = vec![0.0001f32; w * w]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let bias: Vec<u8> = vec![0u8; w * 4];
    let mut views = Vec::new();
    for name in &names {
        let view = |shape: Vec<usize>, bytes| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytes).unwrap()
        };
        views.push((format!("{name}.weight"), view(vec![w, w], &weight)));
        views.push((format!("{name}.bias"), view(vec![w], &bias)));
    }
    let activations = ["relu"; SLOW_LAYERS].join(",");
    let layers = names.join(",");
    let meta = [
        ("gpucap.format", "gpucap-ffn"),
        ("gpucap.format_version", "1"),
        ("gpucap.layers", layers.as_str()),
        ("gpucap.activations", activations.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
    path
}

/// What became of one inference request.
#[derive(Debug)]
enum Outcome {
    /// The server answered, with this status and `Retry-After`, after `took`, at `at`.
    Answered {
        status: u16,
        retry_after: Option<String>,
        took: Duration,
        at: Instant,
    },
    /// The connection could not be made: the server was not accepting (refused at the door).
    NotConnected,
    /// The connection was made and the request sent, but no answer came back: the server took
    /// the request and dropped it (or reset a connection it had accepted).
    Dropped(String),
}

/// A request of [`SLOW_ROWS`] rows for [`slow_model`] in the binary tensor extension (a JSON
/// header, then the raw values), so that sending it costs little beside computing it: the body
/// and the length of its header.
fn slow_request() -> (Vec<u8>, usize) {
    let values = SLOW_ROWS * SLOW_WIDTH;
    let header =
        json!({"inputs": [{"name": "input", "shape": [SLOW_ROWS, SLOW_WIDTH], "datatype": "FP32",
        "parameters": {"binary_data_size": values * 4}}]})
        .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0.5f32.to_le_bytes(), values).flatten());
    (body, header.len())
}

/// Sends `request` (from [`slow_request`]) and says what became of it.
async fn fire(
    c: reqwest::Client,
    url: String,
    request: std::sync::Arc<(Vec<u8>, usize)>,
) -> Outcome {
    let (body, header_len) = &*request;
    let t = Instant::now();
    let sent = c
        .post(&url)
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header_len.to_string())
        .body(body.clone())
        .send()
        .await;
    match sent {
        Ok(r) => Outcome::Answered {
            status: r.status().as_u16(),
            retry_after: r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
            took: t.elapsed(),
            at: Instant::now(),
        },
        Err(e) if e.is_connect() => Outcome::NotConnected,
        Err(e) => Outcome::Dropped(format!("{e:?}")),
    }
}

/// The sum of a metric's samples (every label set) in the server's `/metrics`.
async fn metric(c: &reqwest::Client, server: &str, name: &str) -> f64 {
    metrics_text(c, server)
        .await
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_sheds_load_with_retry_after() {
    // Long enough that a refusal held until the request timeout could not pass for "at once".
    const TIMEOUT: Duration = Duration::from_secs(20);
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
        &SLOW_ROWS.to_string(),
        "--threads",
        "1",
        "--request-timeout-ms",
        &TIMEOUT.as_millis().to_string(),
    ]);
    let url = format!("{}/v2/models/slow/infer", s.url);
    let c = client();
    let request = std::sync::Arc::new(slow_request());
    let tasks: Vec<_> = (0..30)
        .map(|_| tokio::spawn(fire(c.clone(), url.clone(), request.clone())))
        .collect();
    let mut served = Vec::new();
    let mut shed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Answered {
                status: 200, took, ..
            } => served.push(took),
            Outcome::Answered {
                status: 429,
                retry_after,
                took,
                ..
            } => {
                assert_eq!(retry_after.as_deref(), Some("1"));
                shed.push(took);
            }
            Outcome::Dropped(why) => panic!("a request was dropped: {why}"),
            other => panic!("a request was neither served nor shed: {other:?}"),
        }
    }
    let last_served = served.iter().max().copied().unwrap_or_default();
    let slowest_refusal = shed.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{} served, the last after {last_served:?}; {} refused, the slowest after {slowest_refusal:?}",
        served.len(),
        shed.len()
    );
    // A server that waited for room would have served them all; one that held refusals would
    // have answered them at the timeout. A queue of two takes at least two.
    assert!(
        served.len() >= 2 && shed.len() >= 10,
        "served {} shed {}",
        served.len(),
        shed.len()
    );
    assert!(
        slowest_refusal < TIMEOUT,
        "a refusal was held until the request timeout: {slowest_refusal:?}"
    );
    // The server's own account: each refusal counted once, and none of them ever queued.
    let rejected = metric(&c, &s.url, "gpucap_rejected_requests_total").await;
    assert_eq!(rejected, shed.len() as f64);
    let queued = metric(&c, &s.url, "gpucap_queue_wait_seconds_count").await;
    assert_eq!(queued, served.len() as f64, "only served requests queued");
    let metrics = metrics_text(&c, &s.url).await;
    let queue_full = metrics
        .lines()
        .find(|l| {
            l.starts_with("gpucap_rejected_requests_total{") && l.contains("reason=\"queue_full\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        queue_full.ends_with(&format!("}} {}", shed.len())),
        "{queue_full}"
    );
    assert!(metrics.contains("gpucap_batch_rows_bucket"));
    assert!(metrics.contains("gpucap_queue_depth{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_every_accepted_request_then_exits() {
    const REQUESTS: usize = 24;
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
        &SLOW_ROWS.to_string(),
        "--threads",
        "1",
        // What is tested is that the drain answers every accepted request, however long the
        // queue takes on this machine, not how fast it goes: a slow or shared CPU must not
        // turn a queued request into a timeout (504).
        "--request-timeout-ms",
        "120000",
    ]);
    let url = format!("{}/v2/models/slow/infer", s.url);
    let c = client();
    let request = std::sync::Arc::new(slow_request());
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(fire(c.clone(), url.clone(), request.clone())))
        .collect();
    // Every request has reached the server (answered, or in flight there) before the signal.
    // The answered count is read first: a request leaves the in-flight gauge before it is
    // counted as answered, so reading in this order can miss a request but never count one
    // twice, and a sum of all of them means all of them arrived.
    let deadline = Instant::now() + Duration::from_secs(30);
    let in_flight = loop {
        let answered = metric(&c, &s.url, "gpucap_inference_requests_total").await;
        let in_flight = metric(&c, &s.url, "gpucap_inflight_requests").await;
        if in_flight + answered == REQUESTS as f64 {
            break in_flight;
        }
        assert!(
            Instant::now() < deadline,
            "the server took in {} of {REQUESTS} requests",
            in_flight + answered
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        in_flight >= 1.0,
        "every request was answered before the signal, so the drain has nothing to prove"
    );
    s.terminate();

    // The server stops accepting: a new connection is refused, and a request on one fails at the
    // door rather than being taken and dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let address = s.url.trim_start_matches("http://").to_string();
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the server still accepts connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let closed = Instant::now();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let late = fire(fresh, url.clone(), request).await;
    assert!(
        matches!(late, Outcome::NotConnected),
        "a request after SIGTERM: {late:?}"
    );

    // Everything accepted is answered (none dropped), some of it after the server had stopped
    // accepting: answers that were still being computed then, so the drain had work to finish.
    let mut after_closing = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Answered {
                status: 200, at, ..
            } => after_closing += usize::from(at > closed),
            Outcome::Dropped(why) => panic!("an accepted request was dropped: {why}"),
            other => panic!("an accepted request was not answered: {other:?}"),
        }
    }
    eprintln!(
        "{in_flight} of {REQUESTS} requests in flight at SIGTERM; {after_closing} answered after the server stopped accepting"
    );
    assert!(
        after_closing >= 1,
        "no request was answered during the drain"
    );
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
async fn a_cuda_device_serves_where_it_can_and_is_refused_saying_why_where_it_cannot() {
    // Whether this host can serve on cuda:0: the driver, a GPU, and the libraries a CUDA backend
    // needs (cuBLAS, NVRTC).
    let usable = gpucap_runtime::cuda::gpus().and_then(|_| gpucap_runtime::cuda::libraries());
    match usable {
        Err(why) => {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gpucap-runtime"))
                .args(["serve", "--device", "cuda:0", "--listen", "127.0.0.1:0"])
                .arg("--model")
                .arg(common::digits_model())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "serve --device cuda:0 neither served nor exited on a host without CUDA"
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert!(!status.success());
            assert!(
                stderr.contains(&format!(
                    "device 'cuda:0' requested, but {why}; use --device cpu or auto"
                )),
                "{stderr}"
            );
        }
        Ok(()) => {
            // With a GPU it serves the model there, and answers as the CPU does.
            let gpu = Server::digits(&["--device", "cuda:0"]);
            let cpu = Server::digits(&["--device", "cpu"]);
            let c = client();
            let rows: Vec<Vec<f32>> = digits_test_set()
                .into_iter()
                .take(32)
                .map(|(_, p)| p)
                .collect();
            let mut answers = Vec::new();
            for server in [&gpu, &cpu] {
                let resp = infer_digits(&c, &server.url, &rows).await;
                let probs: Vec<f32> =
                    serde_json::from_value(resp["outputs"][0]["data"].clone()).unwrap();
                assert_eq!(probs.len(), rows.len() * 10, "{resp}");
                answers.push(probs);
            }
            for (g, c) in answers[0].iter().zip(&answers[1]) {
                assert!((g - c).abs() < 1e-3, "cuda:0 {g} against the CPU's {c}");
            }
            let metrics = metrics_text(&c, &gpu.url).await;
            assert!(metrics.contains("backend=\"cuda:0"), "{metrics}");
        }
    }
}
