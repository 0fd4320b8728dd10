//! ONNX models served through the real ONNX Runtime (the `onnxruntime` wheel's library in the
//! project's `.venv`), driven by tritonclient and compared with onnxruntime's Python API. The
//! graphs are made by `clients/onnx_models.py` from the onnx and skl2onnx packages; the Python
//! environment comes from `scripts/test.sh` (`GPUCAP_PYTHON`); without it these tests fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Server, repo_root};

fn python() -> String {
    std::env::var("GPUCAP_PYTHON").unwrap_or_else(|_| {
        let venv = repo_root().join(".venv/bin/python");
        assert!(
            venv.exists(),
            "no Python with onnx and tritonclient: run the tests through scripts/test.sh, or set GPUCAP_PYTHON"
        );
        venv.to_string_lossy().into_owned()
    })
}

/// The test graphs, made once per test binary.
fn models() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(python())
            .arg(repo_root().join("runtime/tests/clients/onnx_models.py"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "making the test graphs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

fn example(name: &str) -> PathBuf {
    repo_root().join("examples/models").join(name)
}

fn serve(model: &Path, name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--model", model.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn runtime(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpucap-runtime"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `BIN serve ARGS` (in `cwd` when given, without `ORT_DYLIB_PATH`) expecting it to refuse
/// to start; returns its stderr.
fn refused_start(bin: &Path, cwd: Option<&Path>, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("addr");
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
        .arg("--address-file")
        .arg(&address)
        .args(args)
        .env_remove("ORT_DYLIB_PATH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the runtime did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "the runtime started:\n{stderr}");
    assert!(
        !address.exists(),
        "a refused runtime must never listen, even briefly"
    );
    stderr
}

#[test]
fn tritonclient_gets_what_onnxruntime_computes() {
    let models = models();
    let pipeline = serve(&example("digits-pipeline.onnx"), "digits-pipeline", &[]);
    let multi = serve(
        &models.join("multi.onnx"),
        "multi",
        &["--max-batch-size", "64"],
    );
    let cnn = serve(
        &example("digits-cnn.onnx"),
        "digits-cnn",
        &["--max-batch-size", "128"],
    );
    let nobatch = serve(&models.join("nobatch.onnx"), "nobatch", &[]);
    let types = serve(&models.join("types.onnx"), "types", &[]);
    let urls: Vec<&str> = [&pipeline, &multi, &cnn, &nobatch, &types]
        .iter()
        .map(|s| s.url.trim_start_matches("http://"))
        .collect();
    let out = Command::new(python())
        .arg(repo_root().join("runtime/tests/clients/onnx_client_check.py"))
        .arg(models)
        .arg(repo_root().join("examples/models/digits-test.csv"))
        .arg(example("digits-onnx-report.json"))
        .args(&urls)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ONNX client check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all ONNX checks passed"), "{stdout}");
}

/// Concurrent clients in the batching test: well within the default queue of 256.
const CLIENTS: usize = 64;

#[test]
fn concurrent_requests_share_batches_and_get_what_they_get_alone() {
    let server = serve(
        &models().join("multi.onnx"),
        "multi",
        &["--max-batch-size", "64"],
    );
    let url = format!("{}/v2/models/multi/infer", server.url);
    let bodies: Vec<String> = (0..384)
        .map(|i| {
            let rows = 1 + i % 3;
            let x: Vec<f32> = (0..rows * 3)
                .map(|j| (i * 7 + j) as f32 * 0.37 - 11.0)
                .collect();
            let ids: Vec<i64> = (0..rows).map(|j| (i * 1000 + j) as i64 - 5000).collect();
            let tags: Vec<String> = (0..rows).map(|j| format!("req{i}-row{j}")).collect();
            serde_json::json!({"inputs": [
                {"name": "x", "shape": [rows, 3], "datatype": "FP32", "data": x},
                {"name": "ids", "shape": [rows], "datatype": "INT64", "data": ids},
                {"name": "tag", "shape": [rows], "datatype": "BYTES", "data": tags},
            ]})
            .to_string()
        })
        .collect();
    block_on(async {
        let client = reqwest::Client::new();
        let post = {
            let (client, url) = (client.clone(), url.clone());
            move |body: String| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let answer: serde_json::Value = client
                        .post(url)
                        .body(body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    answer
                }
            }
        };
        let mut alone = Vec::new();
        for body in &bodies {
            alone.push(post(body.clone()).await);
        }
        let before = histogram(&metrics(&client, &server.url).await, "gpucap_batch_rows");
        // 64 clients, each sending its share of the requests one after another.
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let mine: Vec<(usize, String)> = bodies
                    .iter()
                    .cloned()
                    .enumerate()
                    .skip(k)
                    .step_by(CLIENTS)
                    .collect();
                let post = post.clone();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for (i, body) in mine {
                        answers.push((i, post(body).await));
                    }
                    answers
                })
            })
            .collect();
        for client in clients {
            for (i, answer) in client.await.unwrap() {
                assert_eq!(
                    answer, alone[i],
                    "request {i} answered differently in a batch"
                );
            }
        }
        let after = histogram(&metrics(&client, &server.url).await, "gpucap_batch_rows");
        let mean = (after.0 - before.0) / (after.1 - before.1);
        assert!(
            mean > 1.5 * 2.0,
            "batches averaged {mean:.2} rows for requests of 2 rows on average: concurrent requests were not batched"
        );
    });
}

async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

/// `NAME_sum` and `NAME_count` of a Prometheus histogram.
fn histogram(metrics: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}_{suffix} in\n{metrics}"))
    };
    (value("sum"), value("count"))
}

#[test]
fn inspect_prints_the_signature_and_why_a_graph_does_not_batch() {
    let out = runtime(&["inspect", example("digits-pipeline.onnx").to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let path = example("digits-pipeline.onnx");
    insta::assert_snapshot!(text.replace(path.to_str().unwrap(), "digits-pipeline.onnx"), @r"
    digits-pipeline.onnx: ONNX, IR version 8, opsets ai.onnx 17, ai.onnx.ml 1, produced by skl2onnx 1.20.0
      digits: StandardScaler + LogisticRegression (scikit-learn pipeline)
      input  pixels FP32 [-1, 64]
      output label INT64 [-1]
      output probabilities FP32 [-1, 10]
      batched: every input and output has a dynamic first dimension
    ");
    let out = runtime(&["inspect", models().join("nobatch.onnx").to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "not batched: input 'v' [3] has no batch dimension; requests run one at a time"
        )
    );
}

#[test]
fn bad_files_are_refused_by_inspect_naming_the_file_and_the_fault() {
    let cases = [
        ("not-onnx.onnx", "not a readable ONNX model"),
        ("truncated.onnx", "the file is truncated or not ONNX"),
        (
            "zipmap.onnx",
            "output 'output_probability': it is a sequence of maps (a ZipMap output); export the classifier with options={'zipmap': False}",
        ),
    ];
    for (file, message) in cases {
        let path = models().join(file);
        let out = runtime(&["inspect", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {}: ", path.display())) && stderr.contains(message),
            "{file}: {stderr}"
        );
    }
}

#[test]
fn the_server_refuses_models_it_cannot_serve_before_it_listens() {
    let bin = Path::new(env!("CARGO_BIN_EXE_gpucap-runtime"));
    let model = |name: &str| models().join(name).to_string_lossy().into_owned();
    let refused = model("refused.onnx");
    let stderr = refused_start(bin, None, &["--model", &refused]);
    assert!(
        stderr.contains("ONNX Runtime refused the model") && stderr.contains("NoSuchOperator"),
        "{stderr}"
    );
    let fixed = model("fixed.onnx");
    let stderr = refused_start(bin, None, &["--model", &fixed]);
    assert!(
        stderr.contains(&format!("model {fixed}: the graph's batch dimension is fixed to 1 (input 'x' [1, 4]), so it cannot batch requests, but max_batch_size is 64")),
        "{stderr}"
    );
    let truncated = model("truncated.onnx");
    let stderr = refused_start(bin, None, &["--model", &truncated]);
    assert!(stderr.contains("not a readable ONNX model"), "{stderr}");

    // With max_batch_size 1 the fixed-batch graph is served, one request at a time.
    let server = serve(
        models().join("fixed.onnx").as_path(),
        "fixed",
        &["--max-batch-size", "1"],
    );
    let answer: serde_json::Value = block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v2/models/fixed/infer", server.url))
            .body(r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[-1,2,-3,4]}]}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(
        answer["outputs"][0]["data"],
        serde_json::json!([0.0, 2.0, 0.0, 4.0])
    );
}

#[test]
fn without_onnx_runtime_the_server_says_where_it_looked_and_does_not_start() {
    // A copy of the binary outside the repository, run from an empty directory: no .venv is above
    // it, nothing beside it, and ORT_DYLIB_PATH is unset.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("gpucap-runtime");
    std::fs::copy(env!("CARGO_BIN_EXE_gpucap-runtime"), &bin).unwrap();
    let model = example("digits-pipeline.onnx");
    let stderr = refused_start(
        &bin,
        Some(dir.path()),
        &["--model", model.to_str().unwrap()],
    );
    assert!(
        stderr.contains("ONNX Runtime's library (libonnxruntime.so) was not found; looked in: ORT_DYLIB_PATH (unset); beside the binary, ")
            && stderr.contains("pip install onnxruntime"),
        "{stderr}"
    );
    let stderr = refused_start(
        &bin,
        Some(dir.path()),
        &[
            "--model",
            model.to_str().unwrap(),
            "--onnxruntime",
            "/nonexistent/libonnxruntime.so",
        ],
    );
    assert!(
        stderr.contains("compute.onnxruntime /nonexistent/libonnxruntime.so (no such file)"),
        "{stderr}"
    );
    // A native model needs no ONNX Runtime.
    let mut native = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--model",
        ])
        .arg(common::digits_model())
        .current_dir(dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        native.try_wait().unwrap().is_none(),
        "the native model failed to start"
    );
    native.kill().unwrap();
    native.wait().unwrap();
}

#[test]
fn forward_bench_and_bench_take_any_signature() {
    let cnn = example("digits-cnn.onnx");
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("service.json");
    let out = runtime(&[
        "forward-bench",
        "--model",
        cnn.to_str().unwrap(),
        "--batches",
        "1,16",
        "--iterations",
        "3",
        "--json",
        "--service-model",
        service.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (p, rows) in points.iter().zip([1, 16]) {
        assert_eq!(p["rows"], rows);
        assert!(p["rows_per_s"].as_f64().unwrap() > 0.0);
        assert!(
            p["backend"]
                .as_str()
                .unwrap()
                .contains("CPUExecutionProvider"),
            "{p}"
        );
    }
    let service: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&service).unwrap()).unwrap();
    assert_eq!(service["points"].as_array().unwrap().len(), 2);

    // The load generator shapes random inputs from the metadata: three inputs, one of them strings.
    let server = serve(&models().join("multi.onnx"), "multi", &[]);
    // The metadata names the execution provider the session really runs on.
    let metadata: serde_json::Value = block_on(async {
        reqwest::get(format!("{}/v2/models/multi", server.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let backend = metadata["parameters"]["backends"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        backend.starts_with("onnxruntime cpu (") && backend.ends_with("CPUExecutionProvider)"),
        "{metadata}"
    );
    let out = runtime(&[
        "bench",
        "--url",
        &server.url,
        "--model",
        "multi",
        "--concurrency",
        "4",
        "--requests",
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
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(report["rows_per_request"], 3);
}

#[test]
fn a_request_whose_data_the_graph_refuses_fails_alone_in_its_batch() {
    let server = serve(&models().join("gather.onnx"), "gather", &[]);
    let url = format!("{}/v2/models/gather/infer", server.url);
    let body = |idx: i64| {
        serde_json::json!({"inputs": [{"name": "idx", "shape": [2], "datatype": "INT64", "data": [idx, 1]}]})
            .to_string()
    };
    let answers = block_on(async {
        let client = reqwest::Client::new();
        // 192 requests at once, every eighth with an index out of the table's range.
        let tasks: Vec<_> = (0..192i64)
            .map(|i| {
                let (client, url) = (client.clone(), url.clone());
                let idx = if i % 8 == 0 { 50 } else { i % 10 };
                let body = body(idx);
                tokio::spawn(async move {
                    let r = client.post(url).body(body).send().await.unwrap();
                    (idx, r.status().as_u16(), r.text().await.unwrap())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    });
    for (idx, status, text) in answers {
        if idx == 50 {
            assert_eq!(status, 400, "{text}");
            assert!(text.contains("ONNX Runtime"), "{text}");
        } else {
            assert_eq!(status, 200, "index {idx}: {text}");
            let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                answer["outputs"][0]["data"],
                serde_json::json!([idx as f64 * 1.5, 1.5]),
                "{text}"
            );
        }
    }
    let metrics = block_on(async { metrics(&reqwest::Client::new(), &server.url).await });
    let (rows, batches) = histogram(&metrics, "gpucap_batch_rows");
    assert!(
        rows / batches > 2.0,
        "the bad requests never shared a batch, so this test proves nothing: {rows} rows in {batches} batches"
    );
}
