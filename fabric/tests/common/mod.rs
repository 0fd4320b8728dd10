//! A harness that runs the real `gpucap-fabric serve` with a config file, real `gpucap-runtime`
//! replicas and real HTTP, in a temporary state directory; whatever a test does, every process
//! it started is killed when it ends.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpucap_fabric::record::{RecordError, Round, read as read_rounds};
use serde_json::Value;

/// Where a recording router writes its control rounds, in its directory.
const ROUNDS_FILE: &str = "rounds.jsonl";

/// Load tests share two cores: one at a time, or their timings mean nothing.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fabric_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpucap-fabric"))
}

/// The runtime next to the fabric, as a release ships them.
pub fn runtime_bin() -> PathBuf {
    let path = fabric_bin().parent().unwrap().join("gpucap-runtime");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build -p gpucap-runtime` (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn digits_model() -> PathBuf {
    repo_root().join("examples/models/digits-mlp.safetensors")
}

pub fn broken_runtime() -> PathBuf {
    repo_root().join("fabric/tests/data/broken_runtime.py")
}

/// A `[[pools]]` entry on this host's CPU, a base pool.
pub fn pool(
    name: &str,
    capacity_type: &str,
    jurisdiction: &str,
    slots: usize,
    price: f64,
) -> String {
    format!(
        "[[pools]]\nname = \"{name}\"\nregion = \"{name}-region\"\njurisdiction = \"{jurisdiction}\"\n\
         capacity_type = \"{capacity_type}\"\ngpus_max = {slots}\nprice_per_gpu_hour = {price}\n\
         [pools.local]\ndevices = \"cpu\"\n"
    )
}

/// A `[[pools]]` entry like [`pool`], as a burst pool (listed after the base pools they spill
/// from, in spill order).
pub fn burst_pool(
    name: &str,
    capacity_type: &str,
    jurisdiction: &str,
    slots: usize,
    price: f64,
) -> String {
    pool(name, capacity_type, jurisdiction, slots, price).replacen(
        "\nregion",
        "\nrole = \"burst\"\nregion",
        1,
    )
}

/// A running router.
pub struct Router {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub address: String,
    /// The operator listener (status, metrics): written before the public address.
    pub operator: String,
}

impl Router {
    /// The config file's path in `dir`.
    pub fn config_path(dir: &Path) -> PathBuf {
        dir.join("fabric.toml")
    }

    /// Writes the config: `[endpoint]` for digits, the model, the runtime and the state
    /// directory around `body` (replicas, residency, policy, pools…).
    pub fn write_config(dir: &Path, body: &str) {
        let text = format!(
            "[endpoint]\nname = \"digits\"\naddress_file = \"{addr}\"\noperator_address_file = \"{operator}\"\n\n[model]\npath = \"{model}\"\n\n\
             [runtime]\npath = \"{runtime}\"\n\n[state]\ndir = \"{state}\"\n\n{body}",
            addr = dir.join("address").display(),
            operator = dir.join("operator.address").display(),
            model = digits_model().display(),
            runtime = runtime_bin().display(),
            state = dir.join("state").display(),
        );
        std::fs::write(Self::config_path(dir), text).unwrap();
    }

    /// Starts a router with `body`; waits until it listens.
    pub fn start(body: &str) -> Router {
        Self::start_with_env(body, &[])
    }

    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Router {
        let mut router = Self::configured(body);
        router.launch(env);
        router
    }

    /// Starts a router with `body` that records every control round (`serve
    /// --record-decisions`), for [`Router::rounds`].
    pub fn start_recording(body: &str) -> Router {
        let mut router = Self::configured(body);
        let log = router.dir.path().join(ROUNDS_FILE);
        router.launch(&[("GPUCAP_FABRIC_RECORD_DECISIONS", log.to_str().unwrap())]);
        router
    }

    /// Starts a router with `body` (which sets `[auth]`) and `keys` in its keys file; waits
    /// until it listens.
    pub fn start_keyed(body: &str, keys: Vec<gpucap_fabric::gateway::keys::KeySpec>) -> Router {
        let mut router = Self::configured(body);
        gpucap_fabric::gateway::keys::KeysFile { keys }
            .write(&router.dir.path().join("state/keys.json"))
            .unwrap();
        router.launch(&[]);
        router
    }

    /// A router's directory with `body` as its config, not yet launched.
    fn configured(body: &str) -> Router {
        let dir = tempfile::tempdir().unwrap();
        Self::write_config(dir.path(), body);
        Router {
            child: None,
            address: String::new(),
            operator: String::new(),
            dir,
        }
    }

    /// The control rounds a router from [`Router::start_recording`] has written so far; an
    /// error while it is still writing the last line.
    pub fn rounds(&self) -> Result<Vec<Round>, RecordError> {
        read_rounds(&self.dir.path().join(ROUNDS_FILE))
    }

    /// Waits until the router has answered at least `count` requests whose metric lines carry
    /// `labels`, failing if `load` ends first: for acting once load is flowing.
    pub fn wait_for_answers(&self, labels: &[&str], count: f64, load: &JoinHandle<Value>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&self.metrics(), "gpucap_fabric_requests_total", labels) < count {
            assert!(
                Instant::now() < deadline && !load.is_finished(),
                "the router did not answer {count} requests {labels:?} under load"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (Re)starts the router process on the same directory.
    pub fn launch(&mut self, env: &[(&str, &str)]) {
        let _ = std::fs::remove_file(self.dir.path().join("address"));
        let mut cmd = Command::new(fabric_bin());
        cmd.args(["serve", "--config"])
            .arg(Self::config_path(self.dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("router.log"))
                    .unwrap(),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = std::fs::read_to_string(self.dir.path().join("address")) {
                self.address = a;
                self.operator =
                    std::fs::read_to_string(self.dir.path().join("operator.address")).unwrap();
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the router exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the router did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("router.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The operator listener's base URL.
    pub fn operator_url(&self) -> String {
        format!("http://{}", self.operator)
    }

    pub fn status(&self) -> Value {
        get_json(&format!("{}/fabric/status", self.operator_url()))
    }

    pub fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.operator_url())).1
    }

    /// Polls status until `pred` holds; the last status, or a panic after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status:\n{}\nlog:\n{}",
                serde_json::to_string_pretty(&s).unwrap(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `(pool, phase)` of every replica.
    pub fn replicas(&self) -> Vec<(String, String)> {
        replicas(&self.status())
    }

    /// Pids recorded under the state directory.
    pub fn replica_pids(&self) -> Vec<i32> {
        let dir = self.dir.path().join("state/replicas");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path().join("replica.json")).ok()?;
                let v: Value = serde_json::from_str(&text).ok()?;
                v["process"]["pid"].as_i64().map(|p| p as i32)
            })
            .collect()
    }

    /// Sends SIGTERM and waits for the router to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("router running");
        signal(child.id() as i32, "TERM");
        child.wait().unwrap()
    }

    /// SIGKILL: the router dies without a word, its replicas keep running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn sighup(&self) {
        signal(self.child.as_ref().unwrap().id() as i32, "HUP");
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
        for pid in self.replica_pids() {
            signal(pid, "KILL");
        }
    }
}

pub fn replicas(status: &Value) -> Vec<(String, String)> {
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pool"].as_str().unwrap().to_string(),
                r["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn ready_on(status: &Value, pool: &str) -> usize {
    replicas(status)
        .iter()
        .filter(|(p, phase)| p == pool && phase == "ready")
        .count()
}

pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Whether a process is running (zombies count as gone).
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

pub fn all_gone(pids: &[i32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pids.iter().all(|p| !process_alive(*p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `(status code, body)` of a GET with curl.
pub fn http_get(url: &str) -> (u16, String) {
    curl(&["-s", url])
}

pub fn get_json(url: &str) -> Value {
    let (code, body) = http_get(url);
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Runs curl with `-w` appending the status code; `(code, body)`.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(args)
        .args(["-w", "\n%{http_code}"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// One held-out digit as an inference body.
pub fn digit_body() -> String {
    let text =
        std::fs::read_to_string(repo_root().join("examples/models/digits-test.csv")).unwrap();
    let line = text.lines().next().unwrap();
    let pixels: Vec<&str> = line.split(',').skip(1).collect();
    format!(
        "{{\"inputs\":[{{\"name\":\"pixels\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[{}]}}]}}",
        pixels.join(",")
    )
}

/// POSTs one digit; `(code, body)`.
pub fn infer(url: &str) -> (u16, String) {
    curl(&[
        "-s",
        "-H",
        "Content-Type: application/json",
        "-d",
        &digit_body(),
        &format!("{url}/v2/models/digits/infer"),
    ])
}

/// POSTs one digit; `(code, response headers)`.
pub fn infer_headers(url: &str) -> (u16, String) {
    curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Content-Type: application/json",
        "-d",
        &digit_body(),
        &format!("{url}/v2/models/digits/infer"),
    ])
}

/// `gpucap-runtime bench` against `url`: its JSON report.
pub fn bench(url: &str, clients: usize, duration: &str) -> Value {
    bench_model(url, "digits", clients, duration)
}

/// `gpucap-runtime bench` of model `model` (an endpoint's name) against `url`.
pub fn bench_model(url: &str, model: &str, clients: usize, duration: &str) -> Value {
    bench_as(url, model, None, clients, duration)
}

/// `gpucap-runtime bench` of model `model` at `url`, with API key `key` when given.
pub fn bench_as(
    url: &str,
    model: &str,
    key: Option<&str>,
    clients: usize,
    duration: &str,
) -> Value {
    let mut cmd = Command::new(runtime_bin());
    cmd.args(["bench", "--url", url, "--model", model, "--json"])
        .args([
            "--duration",
            duration,
            "--concurrency",
            &clients.to_string(),
        ]);
    if let Some(key) = key {
        cmd.env("GPUCAP_API_KEY", key);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs tritonclient's check (runtime/tests/clients/triton_client_check.py) against the server
/// at `address` with `env` (GPUCAP_API_KEY, GPUCAP_CA_CERT); its stdout, or a panic naming why
/// it failed.
pub fn tritonclient_check(address: &str, env: &[(&str, &str)]) -> String {
    let python = std::env::var("GPUCAP_PYTHON")
        .unwrap_or_else(|_| repo_root().join(".venv/bin/python").display().to_string());
    let out = Command::new(python)
        .arg(repo_root().join("runtime/tests/clients/triton_client_check.py"))
        .arg(address)
        .arg(repo_root().join("examples/models/digits-test.csv"))
        .arg(repo_root().join("examples/models/digits-report.json"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains("correct with binary tensors and with JSON"),
        "tritonclient failed ({env:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Requests that did not get a 200 in a bench report.
pub fn failed(report: &Value) -> u64 {
    let by_status: u64 = report["errors_by_status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    by_status
        + report["connect_errors"].as_u64().unwrap()
        + report["transport_errors"].as_u64().unwrap()
}

/// The value of the sample `name{…labels containing each of `labels`…}` summed, from
/// Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
/// Every log under `dirs` (the daemon's, the routers', the replicas', remote machines'), for a
/// failure's message.
pub fn logs(dirs: &[PathBuf]) -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let head = lines.len().min(10);
                let tail = lines.len().saturating_sub(20).max(head);
                out.push_str(&format!(
                    "--- {}\n{}\n…\n{}\n",
                    path.display(),
                    lines[..head].join("\n"),
                    lines[tail..].join("\n")
                ));
            }
        }
    }
    let mut out = String::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out
}

/// Waits until `ok`, at most `limit`; past it, fails with `what` and the logs under `dirs`.
pub fn wait_until(what: &str, limit: Duration, dirs: &[PathBuf], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}\n{}",
            logs(dirs)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Seconds from each `start` decision on `pool` to that replica's `ready`.
pub fn start_to_ready(decisions: &[Value], pool: &str) -> Vec<f64> {
    let at = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    decisions
        .iter()
        .filter(|d| d["action"] == "start")
        .filter_map(|start| {
            let id = start["subject"].as_str()?;
            id.starts_with(&format!("{pool}-")).then_some(())?;
            let ready = decisions
                .iter()
                .find(|d| d["action"] == "ready" && d["subject"] == id)?;
            Some(
                at(&ready["timestamp"])
                    .duration_since(at(&start["timestamp"]))
                    .ok()?
                    .as_secs_f64(),
            )
        })
        .collect()
}

pub mod daemon;
pub mod moto;
pub mod slurm;
