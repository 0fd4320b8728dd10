//! Starts the real `gpucap-runtime` binary on a free port for a test and stops it afterwards.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn digits_model() -> PathBuf {
    repo_root().join("examples/models/digits-mlp.safetensors")
}

pub struct Server {
    pub child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let addr = dir.path().join("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_gpucap-runtime"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            .arg("--address-file")
            .arg(&addr)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !addr.exists() {
            assert!(Instant::now() < deadline, "the runtime did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("http://{}", std::fs::read_to_string(&addr).unwrap());
        Server {
            child,
            url,
            _dir: dir,
        }
    }

    pub fn digits(extra: &[&str]) -> Server {
        let model = digits_model();
        let mut args = vec!["--model", model.to_str().unwrap(), "--name", "digits"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The held-out test split: (label, 64 pixels) per image.
pub fn digits_test_set() -> Vec<(usize, Vec<f32>)> {
    let text =
        std::fs::read_to_string(repo_root().join("examples/models/digits-test.csv")).unwrap();
    text.lines()
        .map(|line| {
            let mut it = line.split(',');
            let label = it.next().unwrap().parse().unwrap();
            (label, it.map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}
