//! A real one-node Slurm cluster (Debian's packages) for the `slurm` driver's tests, run by
//! `fabric/tests/data/slurm_harness.py`: munged, slurmctld, slurmd and slurmrestd with four fake
//! GPUs, on free loopback ports, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The cluster, up.
pub struct Cluster {
    child: Child,
    dir: tempfile::TempDir,
    /// slurmrestd's base URL.
    pub rest_url: String,
    /// The Slurm user the REST token is for.
    pub user: String,
    /// A file holding the REST token (a JWT).
    pub token_file: PathBuf,
    /// The partition with the GPUs.
    pub partition: String,
    conf: String,
    token: String,
}

impl Cluster {
    /// Starts it; fails (never skips) when Slurm is not installed.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(super::repo_root().join("fabric/tests/data/slurm_harness.py"))
            .args(["up", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim().is_empty() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the Slurm cluster did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        let token = v["token"].as_str().unwrap().to_string();
        let token_file = dir.path().join("rest-token");
        std::fs::write(&token_file, &token).unwrap();
        Cluster {
            child,
            rest_url: v["rest_url"].as_str().unwrap().to_string(),
            user: v["user"].as_str().unwrap().to_string(),
            partition: v["partition"].as_str().unwrap().to_string(),
            conf: v["conf"].as_str().unwrap().to_string(),
            token,
            token_file,
            dir,
        }
    }

    /// Its directory (logs under `log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every job Slurm reports, as slurmrestd describes them.
    pub fn jobs(&self) -> Vec<Value> {
        let (code, body) = super::curl(&[
            "-s",
            "-H",
            &format!("X-SLURM-USER-NAME: {}", self.user),
            "-H",
            &format!("X-SLURM-USER-TOKEN: {}", self.token),
            &format!("{}/slurm/v0.0.38/jobs", self.rest_url),
        ]);
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// The jobs in `state` whose name starts with `prefix`: their ids.
    pub fn jobs_in(&self, state: &str, prefix: &str) -> Vec<String> {
        self.jobs()
            .iter()
            .filter(|j| {
                j["job_state"] == state && j["name"].as_str().is_some_and(|n| n.starts_with(prefix))
            })
            .map(|j| j["job_id"].to_string())
            .collect()
    }

    /// `scancel ID`, as an admin would.
    pub fn scancel(&self, id: &str) {
        let status = Command::new("scancel")
            .arg(id)
            .env("SLURM_CONF", &self.conf)
            .status()
            .unwrap();
        assert!(status.success(), "scancel {id}");
    }

    /// Submits a job that is not gpucap's (`sbatch`, as any user of the cluster would): its id.
    pub fn sbatch(&self, name: &str, command: &str) -> String {
        let out = Command::new("sbatch")
            .args([
                "--parsable",
                "-J",
                name,
                "-p",
                &self.partition,
                "-o",
                "/dev/null",
            ])
            .args(["--wrap", command])
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Job `id` as slurmrestd describes it, if Slurm still knows it.
    pub fn job(&self, id: &str) -> Option<Value> {
        self.jobs()
            .into_iter()
            .find(|j| j["job_id"].as_u64() == id.parse().ok())
    }

    /// Job `id`'s state (`PENDING`, `RUNNING`, `CANCELLED`, …), if Slurm still knows it.
    pub fn state_of(&self, id: &str) -> Option<String> {
        self.job(id)
            .and_then(|j| j["job_state"].as_str().map(str::to_string))
    }

    /// `scancel --signal=SIGNAL ID`: the signal reaches the job's steps, as Slurm's warning
    /// before a time limit or a preemption does.
    pub fn signal(&self, id: &str, signal: &str) {
        let status = Command::new("scancel")
            .args([&format!("--signal={signal}"), id])
            .env("SLURM_CONF", &self.conf)
            .status()
            .unwrap();
        assert!(status.success(), "scancel --signal={signal} {id}");
    }

    /// Stops slurmctld (an outage) or starts it again.
    pub fn controller_down(&self, down: bool) {
        let flag = self.dir.path().join("ctld.stop");
        if down {
            std::fs::write(flag, "").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
