//! A harness that runs the real `gpucap-fabric daemon` as its own process, as a service manager
//! would, with a token, a TLS certificate from its own CA, and a state directory; calls its admin
//! API with curl; and kills everything it hosts when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{curl, digits_model, fabric_bin, runtime_bin, signal};

/// A daemon process and its files.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub token: String,
    pub address: String,
    /// Set in the daemon's environment (and so its routers').
    pub env: Vec<(String, String)>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`; the CA's
/// path.
pub fn make_tls(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gpucap test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    // A client certificate from the same CA, for mTLS.
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "terraform");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

impl Daemon {
    /// Writes a config for a daemon of `region` (with `jurisdiction`), over HTTPS, and a token.
    pub fn configured(region: &str, jurisdiction: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        make_tls(dir.path());
        let p = |f: &str| dir.path().join(f).display().to_string();
        // A fixed port, so that a restarted daemon answers where the provider was told it is.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nregion = \"{region}\"\njurisdiction = \"{jurisdiction}\"\n\
             state_dir = \"{state}\"\ntoken_sha256_file = \"{hash}\"\n\
             [tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
            state = p("state"),
            hash = p("token.sha256"),
            cert = p("cert.pem"),
            key = p("key.pem"),
        );
        std::fs::write(dir.path().join("daemon.toml"), config).unwrap();
        let out = Command::new(fabric_bin())
            .args(["token", "--hash-file"])
            .arg(dir.path().join("token.sha256"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Daemon {
            dir,
            child: None,
            token,
            address: String::new(),
            env: Vec::new(),
        }
    }

    /// Requires client certificates signed by the test CA (mTLS); before [`Daemon::launch`].
    pub fn require_client_certs(&self) {
        let config = self.dir.path().join("daemon.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("client_ca_file = \"{}\"\n", self.ca().display()));
        std::fs::write(config, text).unwrap();
    }

    /// The client certificate and key `make_tls` wrote, as curl arguments.
    pub fn client_cert_args(&self) -> Vec<String> {
        let p = |f: &str| self.dir.path().join(f).display().to_string();
        vec![
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client-key.pem"),
        ]
    }

    /// A configured daemon, started.
    pub fn start(region: &str, jurisdiction: &str) -> Daemon {
        let mut d = Self::configured(region, jurisdiction);
        d.launch();
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The decisions of endpoint `name`'s router so far, from its log: `timestamp`, `action`,
    /// `subject`, `reason`.
    pub fn decisions(&self, name: &str) -> Vec<Value> {
        let log = self
            .state_dir()
            .join(format!("endpoints/{name}/router.log"));
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "decision")
            .map(|v| {
                let mut d = v["fields"].clone();
                d["timestamp"] = v["timestamp"].clone();
                d
            })
            .collect()
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs `gpucap-fabric daemon`; waits until its API answers.
    pub fn launch(&mut self) {
        let address_file = self.state_dir().join("daemon.address");
        let _ = std::fs::remove_file(&address_file);
        let mut child = Command::new(fabric_bin())
            .args(["daemon", "--config"])
            .arg(self.dir.path().join("daemon.toml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) = std::fs::read_to_string(&address_file) {
                self.address = a;
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Runs the daemon expecting it to refuse to start; its exit code and log.
    pub fn refused(&self) -> (i32, String) {
        let out = Command::new(fabric_bin())
            .args(["daemon", "--config"])
            .arg(self.dir.path().join("daemon.toml"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// An admin API call with the token: `(status code, body)`.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, String) {
        let auth = format!("Authorization: Bearer {}", self.token);
        self.call(
            method,
            path,
            body,
            &[&[auth.as_str()][..], headers].concat(),
        )
    }

    /// An admin API call with only the headers given.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, String) {
        let url = format!("{}{path}", self.address);
        let ca = self.ca().display().to_string();
        let mut args: Vec<&str> = vec!["-s", "--cacert", &ca, "-X", method, &url];
        for h in headers {
            args.extend(["-H", h]);
        }
        if let Some(b) = body {
            args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        curl(&args)
    }

    /// `GET /v1/endpoints/NAME` as JSON.
    pub fn endpoint(&self, name: &str) -> Value {
        let (code, body) = self.api("GET", &format!("/v1/endpoints/{name}"), None, &[]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGKILL: the daemon dies without a word.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, waiting for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        signal(child.id() as i32, "TERM");
        child.wait().unwrap()
    }

    /// Every router and replica pid recorded under the state directory.
    pub fn hosted_pids(&self) -> Vec<i32> {
        let endpoints = self.state_dir().join("endpoints");
        let mut pids = Vec::new();
        for e in std::fs::read_dir(endpoints).into_iter().flatten().flatten() {
            pids.extend(pid_in(&e.path().join("router.json")));
            for r in std::fs::read_dir(e.path().join("replicas"))
                .into_iter()
                .flatten()
                .flatten()
            {
                pids.extend(pid_in(&r.path().join("replica.json")));
            }
        }
        pids
    }
}

fn pid_in(file: &Path) -> Option<i32> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    v["process"]["pid"].as_i64().map(|p| p as i32)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        for pid in self.hosted_pids() {
            signal(pid, "KILL");
        }
        kill_mentioning(&self.state_dir());
    }
}

/// SIGKILLs every process whose command line names `dir` (routers and replicas are started with
/// config files under it): a router still starting when a test ends has no record yet.
pub fn kill_mentioning(dir: &Path) {
    let needle = dir.display().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            signal(pid, "KILL");
        }
    }
}

/// An endpoint config as the admin API takes it (JSON), from the TOML a router reads: digits
/// on `body`'s pools and settings.
pub fn endpoint_json(name: &str, body: &str) -> String {
    let text = format!(
        "[endpoint]\nname = \"{name}\"\n\n[model]\npath = \"{model}\"\n\n\
         [runtime]\npath = \"{runtime}\"\n\n[state]\ndir = \"/nonexistent\"\n\n{body}",
        model = digits_model().display(),
        runtime = runtime_bin().display(),
    );
    let config: gpucap_fabric::config::FabricConfig = toml::from_str(&text).unwrap();
    serde_json::to_string(&config).unwrap()
}

/// Runs a replica that joins the endpoint `digits` of `d` with a claim of its own for a few
/// seconds; its log.
pub fn join_attempt(d: &Daemon, dir: &Path, token: &str, pool: &str, machine: &str) -> String {
    let token_file = dir.join(format!("token-{pool}-{machine}"));
    std::fs::write(&token_file, token).unwrap();
    let log = dir.join(format!("join-{pool}-{machine}.log"));
    let mut child = Command::new(runtime_bin())
        .args(["serve", "--join"])
        .arg(format!(
            "{}/v1/join/digits",
            d.address.trim_end_matches('/')
        ))
        .arg("--token-file")
        .arg(&token_file)
        .args(["--pool", pool, "--machine", machine, "--ca-cert"])
        .arg(d.ca())
        .arg("--cache-dir")
        .arg(dir.join("intruder-cache"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(log).unwrap()
}
