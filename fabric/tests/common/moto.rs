//! moto's server (an emulator of the AWS APIs, from `scripts/requirements.txt`) for the tests of
//! the `aws_autoscaling_group` driver, and `aws_harness.py`, which creates groups through it and
//! plays their instances. Shared by the fabric's and the provider's tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The region the tests' groups live in.
pub const REGION: &str = "eu-west-1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn python() -> PathBuf {
    let path = std::env::var_os("GPUCAP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: the AWS tests need moto's server from scripts/requirements.txt (scripts/test.sh installs it)",
        path.display()
    );
    path
}

pub fn harness() -> PathBuf {
    repo().join("fabric/tests/data/aws_harness.py")
}

/// The credentials every AWS client here uses: the emulator accepts any.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// [`AWS_ENV`] as owned pairs, for a harness's `env`.
pub fn aws_env() -> Vec<(String, String)> {
    AWS_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// moto's server on a free loopback port.
pub struct Moto {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Moto {
    /// Starts it on a free loopback port.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto's server (pip install 'moto[server]')");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, url }
    }

    /// Runs `aws_harness.py ARGS` against it; its output.
    pub fn aws(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(harness())
            .args(["--endpoint", &self.url, "--region", REGION])
            .args(args)
            .envs(AWS_ENV)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws_harness {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A group as JSON (`describe`).
    pub fn group(&self, name: &str) -> Value {
        serde_json::from_str(&self.aws(&["describe", "--group", name])).unwrap()
    }

    /// Plays the instances of `groups`, logging under `dir`.
    pub fn play(&self, groups: &str, dir: &Path) -> Child {
        Command::new(python())
            .arg(harness())
            .args(["--endpoint", &self.url, "--region", REGION, "play"])
            .args(["--groups", groups, "--log-dir"])
            .arg(dir)
            .envs(AWS_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Moto {
    /// Stops the emulator: the API is unreachable from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of the joined replica playing `machine`, if one runs.
pub fn find_joined_replica(machine: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.contains(&b"--join".as_slice()) && args.contains(&machine.as_bytes()))
                .then_some(pid)
        })
}

/// The pid of the joined replica playing `machine`.
pub fn joined_replica_pid(machine: &str) -> i32 {
    find_joined_replica(machine).unwrap_or_else(|| panic!("no joined replica runs for {machine}"))
}

/// `aws_harness.py throttle`: a proxy in front of the emulator that answers every Auto Scaling
/// call with AWS's `Throttling` error while [`Throttle::on`] holds.
pub struct Throttle {
    child: Child,
    /// Its base URL (give it to the driver as the endpoint).
    pub url: String,
    flag: PathBuf,
    log: PathBuf,
}

impl Throttle {
    /// Starts it in front of `moto`, keeping its flag and log under `dir`; it passes calls on
    /// until turned on.
    pub fn start(moto: &Moto, dir: &Path) -> Throttle {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (flag, log) = (dir.join("throttle.on"), dir.join("throttled.log"));
        let child = Command::new(python())
            .arg(harness())
            .args(["--endpoint", &moto.url, "--region", REGION, "throttle"])
            .args(["--port", &port.to_string(), "--flag"])
            .arg(&flag)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the throttling proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Throttle {
            child,
            url: format!("http://127.0.0.1:{port}"),
            flag,
            log,
        }
    }

    /// Throttles every call from now on (`true`) or passes them on again (`false`).
    pub fn on(&self, on: bool) {
        if on {
            std::fs::write(&self.flag, "").unwrap();
        } else {
            let _ = std::fs::remove_file(&self.flag);
        }
    }

    /// The calls it throttled so far: when (seconds since the epoch) and which action.
    pub fn throttled(&self) -> Vec<(f64, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (at, action) = l.split_once(' ')?;
                Some((at.parse().ok()?, action.to_string()))
            })
            .collect()
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
