//! A harness that drives the real `terraform` CLI against the freshly built provider: each test gets
//! its own working directory, CLI config (dev_overrides pointing at the build) and `state_dir`.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn provider_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_terraform-provider-gpucap"))
}

/// The fabric binary next to the provider's, as a release ships them.
pub fn fabric_bin() -> PathBuf {
    let path = provider_bin().parent().unwrap().join("gpucap-fabric");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build -p gpucap-fabric` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The runtime binary next to the provider's, as a release ships them.
pub fn runtime_bin() -> PathBuf {
    let path = provider_bin().parent().unwrap().join("gpucap-runtime");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build -p gpucap-runtime` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The review CLI next to the provider's binary (scripts/test.sh builds every binary first).
pub fn policy_bin() -> PathBuf {
    let path = provider_bin().parent().unwrap().join("gpucap-policy");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build -p gpucap-policy` (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn digits_model() -> PathBuf {
    repo_root().join("examples/models/digits-mlp.safetensors")
}

/// Fails (never skips) when Terraform is not installed: these tests are the point.
pub fn terraform_bin() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("terraform"))
        .find(|p| p.is_file());
    found
        .expect("the terraform CLI is not on PATH; the acceptance tests need it (Terraform >= 1.5)")
}

pub struct Tf {
    pub dir: tempfile::TempDir,
    terraform: PathBuf,
    /// Set in Terraform's environment (and so the provider's and its daemon's).
    pub env: Vec<(String, String)>,
}

impl Tf {
    /// A working directory with `main.tf` = the provider block (state_dir inside the directory,
    /// the built runtime) followed by `config`.
    pub fn new(config: &str) -> Tf {
        let dir = tempfile::tempdir().unwrap();
        let overrides = provider_bin().parent().unwrap().to_path_buf();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-tfrc.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(dir.path().join("cli.tfrc"))
            .arg(&overrides)
            .status()
            .expect("bash runs scripts/dev-tfrc.sh");
        assert!(status.success(), "{} failed", script.display());
        let tf = Tf {
            dir,
            terraform: terraform_bin(),
            env: Vec::new(),
        };
        tf.write(config);
        tf
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("gpucap-state")
    }

    /// Rewrites main.tf with the provider block and `config`.
    pub fn write(&self, config: &str) {
        self.write_with("", config);
    }

    /// Rewrites main.tf with the provider block plus `provider_extra` lines, and `config`.
    pub fn write_with(&self, provider_extra: &str, config: &str) {
        let header = format!(
            "terraform {{\n  required_providers {{\n    gpucap = {{ source = \"gpucap/gpucap\" }}\n  }}\n}}\n\n\
             provider \"gpucap\" {{\n  state_dir    = \"{}\"\n  runtime_path = \"{}\"\n  fabric_path  = \"{}\"\n{provider_extra}}}\n\n",
            self.state_dir().display(),
            runtime_bin().display(),
            fabric_bin().display()
        );
        std::fs::write(self.path().join("main.tf"), header + config).unwrap();
    }

    /// Writes main.tf exactly as given (for provider-block tests).
    pub fn write_raw(&self, text: &str) {
        std::fs::write(self.path().join("main.tf"), text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.terraform)
            .args(args)
            .current_dir(self.path())
            .env("TF_CLI_CONFIG_FILE", self.path().join("cli.tfrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("TF_LOG")
            .output()
            .unwrap()
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "terraform {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self) -> String {
        self.ok(&["apply", "-auto-approve", "-no-color", "-input=false"])
    }

    /// `apply -refresh-only`: state takes what the provider reads now.
    pub fn refresh(&self) -> String {
        self.ok(&[
            "apply",
            "-refresh-only",
            "-auto-approve",
            "-no-color",
            "-input=false",
        ])
    }

    /// `plan -detailed-exitcode`: 0 no changes, 2 changes; returns (code, stdout).
    pub fn plan(&self) -> (i32, String) {
        let out = self.run(&["plan", "-detailed-exitcode", "-no-color", "-input=false"]);
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 2,
            "plan failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (code, String::from_utf8(out.stdout).unwrap())
    }

    pub fn output(&self, name: &str) -> String {
        self.ok(&["output", "-raw", name])
    }

    /// The addresses in state; `terraform state list` must succeed (it fails when there is no
    /// state at all, which is not "an empty state").
    pub fn state_list(&self) -> Vec<String> {
        self.ok(&["state", "list"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// stderr of a command that must fail, with this directory's path replaced for snapshots.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "terraform {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.scrub(&String::from_utf8_lossy(&out.stderr))
    }

    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.path().display().to_string(), "[WORKDIR]")
            .replace(&repo_root().display().to_string(), "[REPO]")
    }

    /// The recorded router pid of an endpoint.
    pub fn router_pid(&self, name: &str) -> Option<i32> {
        let path = self
            .state_dir()
            .join("endpoints")
            .join(name)
            .join("router.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["process"]["pid"].as_i64().map(|p| p as i32)
    }

    /// The recorded replica pids of an endpoint, by replica id.
    pub fn replica_pids(&self, name: &str) -> Vec<(String, i32)> {
        let dir = self
            .state_dir()
            .join("endpoints")
            .join(name)
            .join("replicas");
        let mut out: Vec<(String, i32)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path().join("replica.json")).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                Some((
                    v["id"].as_str()?.to_string(),
                    v["process"]["pid"].as_i64()? as i32,
                ))
            })
            .collect();
        out.sort();
        out
    }

    /// Every process an endpoint has recorded: its router and its replicas.
    pub fn endpoint_pids(&self, name: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self.router_pid(name).into_iter().collect();
        pids.extend(self.replica_pids(name).into_iter().map(|(_, p)| p));
        pids
    }
}

impl Tf {
    /// The embedded daemon's pid, as the provider recorded it.
    pub fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.state_dir().join("daemon/process.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }
}

impl Drop for Tf {
    /// Whatever a test did, it leaves no daemon, router or replica running: the daemon first,
    /// or it would restart the routers.
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        daemon::kill_mentioning(&self.state_dir());
        let endpoints = self.state_dir().join("endpoints");
        if let Ok(entries) = std::fs::read_dir(endpoints) {
            for e in entries.flatten() {
                for pid in self.endpoint_pids(&e.file_name().to_string_lossy()) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
    }
}

/// Waits up to 5 s for every one of `pids` to be gone (zombies count as gone).
pub fn all_gone(pids: &[i32]) -> bool {
    for _ in 0..250 {
        if pids.iter().all(|p| !process_alive(*p)) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Whether a process is running (and not a zombie).
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

/// One held-out digit: (label, 64 pixels).
pub fn first_digit() -> (usize, Vec<f32>) {
    let text =
        std::fs::read_to_string(repo_root().join("examples/models/digits-test.csv")).unwrap();
    let line = text.lines().next().unwrap();
    let mut it = line.split(',');
    let label = it.next().unwrap().parse().unwrap();
    (label, it.map(|v| v.parse().unwrap()).collect())
}

/// Sends the digit to `url/infer` and returns the predicted class.
pub fn predict(url: &str) -> usize {
    let (_, pixels) = first_digit();
    let body = serde_json::json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]});
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
            &format!("{url}/infer"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "inference at {url} failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probs: Vec<f64> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
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

/// Sends `sig` (e.g. `KILL`) to `pid`.
pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// The fabric's own daemon harness: a `gpucap-fabric daemon` process with a token and TLS.
#[path = "../../../fabric/tests/common/daemon.rs"]
pub mod daemon;

/// `gpucap-runtime bench` against the model whose URL (`…/v2/models/NAME`) is `url`, with
/// `clients` connections for `duration`, presenting `api_key` when set; its JSON report.
pub fn bench(
    url: &str,
    clients: usize,
    duration: &str,
    api_key: Option<&str>,
) -> serde_json::Value {
    let (base, model) = url
        .split_once("/v2/models/")
        .unwrap_or_else(|| panic!("{url} is not a model's URL"));
    let mut cmd = Command::new(runtime_bin());
    cmd.args(["bench", "--url", base, "--model", model, "--json"])
        .args([
            "--concurrency",
            &clients.to_string(),
            "--duration",
            duration,
        ]);
    if let Some(key) = api_key {
        cmd.env("GPUCAP_API_KEY", key);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Requests a [`bench`] report counts as failed: any status but 200, or no answer.
pub fn failed(report: &serde_json::Value) -> u64 {
    report["errors_by_status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum::<u64>()
        + report["connect_errors"].as_u64().unwrap()
        + report["transport_errors"].as_u64().unwrap()
}
