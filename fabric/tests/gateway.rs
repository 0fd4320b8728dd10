//! The gateway in front of a real router and real runtimes: API keys (tritonclient with a key,
//! JSON and binary; none, a wrong one, an expired one), rate limits under load with a second
//! key unaffected, a quota that survives a killed router, a rotation under load with nothing
//! refused, operator routes off the public listener, TLS and mTLS with curl, and a secret that
//! appears nowhere it is written.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use gpucap_fabric::gateway::keys::{KeySpec, KeysFile, RateLimit, new_secret, secret_hash};
use serde_json::Value;

/// One local pool, with keys required.
fn keyed() -> String {
    format!(
        "[auth]\nmode = \"api_key\"\n\n{}",
        pool("lab", "on_prem", "EU", 1, 0.4)
    )
}

fn spec(name: &str, secret: &str) -> KeySpec {
    KeySpec {
        name: name.into(),
        sha256: hex::encode(secret_hash(secret)),
        expires_at: None,
        rate_limit: None,
        monthly_request_quota: None,
    }
}

fn write_keys(r: &Router, keys: Vec<KeySpec>) {
    KeysFile { keys }
        .write(&r.dir.path().join("state/keys.json"))
        .unwrap();
}

/// A router with `keys`, its first replica ready.
fn keyed_router(keys: Vec<KeySpec>) -> Router {
    let r = Router::start_keyed(&keyed(), keys);
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    r
}

/// POSTs one digit with `secret`; `(code, headers and body)`.
fn infer_with(url: &str, secret: Option<&str>) -> (u16, String) {
    let auth = secret.map(|s| format!("Authorization: Bearer {s}"));
    let mut args = vec!["-s", "-i", "-H", "Content-Type: application/json", "-d"];
    let body = digit_body();
    args.push(&body);
    if let Some(a) = &auth {
        args.extend(["-H", a]);
    }
    let target = format!("{url}/v2/models/digits/infer");
    args.push(&target);
    curl(&args)
}

fn bench_with(url: &str, secret: &str, clients: usize, duration: &str) -> Value {
    bench_as(url, "digits", Some(secret), clients, duration)
}

#[test]
fn keys_admit_and_refuse_in_the_protocols_error_form() {
    let _one = serial();
    let good = new_secret().unwrap();
    let old = new_secret().unwrap();
    let mut expired = spec("old", &old);
    expired.expires_at = Some("2021-06-30T00:00:00Z".into());
    let r = keyed_router(vec![spec("team-a", &good), expired]);
    let url = r.url();

    // Load balancers need no key.
    assert_eq!(http_get(&format!("{url}/v2/health/ready")).0, 200);
    assert_eq!(http_get(&format!("{url}/v2/health/live")).0, 200);
    assert_eq!(http_get(&format!("{url}/v2/models/digits/ready")).0, 200);

    let (code, text) = infer_with(&url, None);
    assert_eq!(code, 401, "{text}");
    assert!(
        text.contains("www-authenticate: Bearer realm=\"gpucap\""),
        "{text}"
    );
    assert!(
        text.contains("{\"error\":\"this endpoint needs an API key"),
        "{text}"
    );
    let (code, text) = infer_with(&url, Some("gpk_0123"));
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("error=\"invalid_token\""), "{text}");
    let (code, text) = infer_with(&url, Some(&old));
    assert_eq!(code, 401, "{text}");
    assert!(
        text.contains("the API key \\\"old\\\" expired at 2021-06-30T00:00:00Z"),
        "{text}"
    );
    let (code, text) = infer_with(&url, Some(&good));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"probabilities\""), "{text}");

    // Metadata needs a key too.
    assert_eq!(http_get(&format!("{url}/v2/models/digits")).0, 401);
    assert_eq!(http_get(&format!("{url}/v2")).0, 401);
    let auth = format!("Authorization: Bearer {good}");
    let (code, meta) = curl(&["-s", "-H", &auth, &format!("{url}/v2/models/digits")]);
    assert_eq!(code, 200, "{meta}");

    // Operator routes are not on the public listener, even with a key.
    for route in ["/fabric/status", "/fabric/targets", "/metrics"] {
        let (code, body) = curl(&["-s", "-H", &auth, &format!("{url}{route}")]);
        assert_eq!(code, 404, "{route} on the public listener: {body}");
        assert_eq!(http_get(&format!("{}{route}", r.operator_url())).0, 200);
    }

    // A standard client with a key, binary tensors and JSON.
    tritonclient_check(&r.address, &[("GPUCAP_API_KEY", &good)]);

    // Usage by key name: requests, rows, refusals.
    let metrics = r.metrics();
    assert!(
        metric(
            &metrics,
            "gpucap_fabric_key_requests_total",
            &["key=\"team-a\""]
        ) >= 2.0
    );
    assert!(
        metric(
            &metrics,
            "gpucap_fabric_key_rows_total",
            &["key=\"team-a\""]
        ) >= 360.0
    );
    for reason in ["missing", "unknown"] {
        let labels = ["key=\"-\"".to_string(), format!("reason=\"{reason}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert!(
            metric(&metrics, "gpucap_fabric_key_refusals_total", &labels) >= 1.0,
            "{reason}:\n{metrics}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            "gpucap_fabric_key_refusals_total",
            &["key=\"old\"", "reason=\"expired\""]
        ),
        1.0
    );
    // Status is published each control round (every second).
    let status = r.wait_for("usage in status", Duration::from_secs(5), |s| {
        s["keys"][1]["rows"].as_u64() >= Some(360)
    });
    assert_eq!(status["keys"][1]["name"], "team-a", "{status}");
    assert_eq!(status["keys"][0]["refusals"]["expired"], 1, "{status}");
    assert_eq!(status["router"]["auth"], "api_key");

    // The secrets are nowhere the router writes or shows.
    let table = Command::new(fabric_bin())
        .args(["status", &r.operator_url()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("team-a"), "{table}");
    let mut seen = vec![
        r.log(),
        metrics,
        status.to_string(),
        table.to_string(),
        std::fs::read_to_string(Router::config_path(r.dir.path())).unwrap(),
    ];
    for file in walk(&r.dir.path().join("state")) {
        seen.push(String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default()).into());
    }
    for text in &seen {
        for secret in [&good, &old] {
            assert!(!text.contains(secret.as_str()), "a secret leaked:\n{text}");
            assert!(!text.contains(&secret[4..]), "a secret leaked:\n{text}");
        }
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_rate_limit_holds_under_load_and_leaves_other_keys_their_share() {
    let _one = serial();
    let limited = new_secret().unwrap();
    let other = new_secret().unwrap();
    let limit = |name: &str, secret: &str, rps: u32| {
        let mut k = spec(name, secret);
        k.rate_limit = Some(RateLimit {
            requests_per_second: Some(rps),
            rows_per_second: None,
            burst: Some(5),
        });
        k
    };
    let r = keyed_router(vec![
        limit("limited", &limited, 50),
        limit("other", &other, 100),
    ]);
    let url = r.url();
    let alone = bench_with(&url, &other, 4, "4s")["throughput_rps"]
        .as_f64()
        .unwrap();
    let flood = {
        let url = url.clone();
        let limited = limited.clone();
        std::thread::spawn(move || bench_with(&url, &limited, 64, "8s"))
    };
    std::thread::sleep(Duration::from_secs(2));
    let beside = bench_with(&url, &other, 4, "4s")["throughput_rps"]
        .as_f64()
        .unwrap();
    let flood = flood.join().unwrap();
    let rate = flood["throughput_rps"].as_f64().unwrap();
    println!(
        "limited key (50/s, 64 clients): {rate:.1} req/s admitted, refused {}; other key (100/s): {alone:.1} req/s alone, {beside:.1} req/s beside the flood",
        flood["errors_by_status"]
    );
    assert!(
        (45.0..=55.0).contains(&rate),
        "a key limited to 50 requests/s got {rate:.1}: {flood}"
    );
    assert!(
        flood["errors_by_status"]["429"].as_u64().unwrap_or(0) > 100,
        "{flood}"
    );
    // The other key's share is its own: the flood takes none of it.
    assert!(
        (alone - beside).abs() <= alone * 0.1,
        "the other key went from {alone:.1} to {beside:.1} req/s beside another key's flood"
    );
}

#[test]
fn a_used_quota_survives_a_killed_router() {
    let _one = serial();
    let secret = new_secret().unwrap();
    let mut key = spec("capped", &secret);
    key.monthly_request_quota = Some(5);
    let mut r = keyed_router(vec![key]);
    for _ in 0..5 {
        assert_eq!(infer_with(&r.url(), Some(&secret)).0, 200);
    }
    let (code, text) = infer_with(&r.url(), Some(&secret));
    assert_eq!(code, 429, "{text}");
    assert!(
        text.contains("has used its monthly quota of 5 requests; it resets at"),
        "{text}"
    );
    assert!(text.contains("retry-after: "), "{text}");
    r.kill();
    r.launch(&[]);
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let (code, text) = infer_with(&r.url(), Some(&secret));
    assert_eq!(
        code, 429,
        "after a restart the quota must still be used up: {text}"
    );
    assert_eq!(r.status()["keys"][0]["quota_used"], 5);
}

#[test]
fn a_rotation_under_load_refuses_nothing() {
    let _one = serial();
    let first = new_secret().unwrap();
    let second = new_secret().unwrap();
    let r = keyed_router(vec![spec("app-v1", &first)]);
    let url = r.url();
    let old_clients = {
        let (url, first) = (url.clone(), first.clone());
        std::thread::spawn(move || bench_with(&url, &first, 32, "4s"))
    };
    std::thread::sleep(Duration::from_millis(500));
    // The new key is added while the old one is in use...
    write_keys(&r, vec![spec("app-v1", &first), spec("app-v2", &second)]);
    r.sighup();
    r.wait_for("the new key", Duration::from_secs(10), |s| {
        s["keys"].as_array().is_some_and(|k| k.len() == 2)
    });
    let new_clients = {
        let (url, second) = (url.clone(), second.clone());
        std::thread::spawn(move || bench_with(&url, &second, 32, "5s"))
    };
    // ...clients move to it, and the old one is removed once none uses it.
    let old = old_clients.join().unwrap();
    write_keys(&r, vec![spec("app-v2", &second)]);
    r.sighup();
    let new = new_clients.join().unwrap();
    for (name, report) in [("old", &old), ("new", &new)] {
        assert_eq!(
            report["errors_by_status"],
            serde_json::json!({}),
            "{name} key's clients were refused: {report}"
        );
        assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    }
    assert_eq!(infer_with(&url, Some(&first)).0, 401, "the old key is gone");
}

#[test]
fn tls_then_mtls_on_the_router_with_certificates_renewed_in_place_keeping_connections() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let ca = common::daemon::make_tls(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n{}",
        p("cert.pem"),
        p("key.pem"),
        pool("lab", "on_prem", "EU", 1, 0.4)
    );
    let r = Router::start(&tls);
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    assert_eq!(r.status()["router"]["tls"], true);
    let https = format!("https://{}", r.address);
    let ca = ca.display().to_string();
    let target = format!("{https}/v2/models/digits/infer");
    let body = digit_body();

    // TLS: curl, tritonclient over HTTPS (JSON and binary), and the status command.
    let (code, text) = curl(&["-s", "--cacert", &ca, "-d", &body, &target]);
    assert_eq!(code, 200, "an inference over TLS: {text}");
    let (code, _) = curl(&["-s", &format!("http://{}/v2/health/live", r.address)]);
    assert_ne!(code, 200, "plain HTTP is not served on a TLS listener");
    tritonclient_check(&r.address, &[("GPUCAP_CA_CERT", &ca)]);
    let out = Command::new(fabric_bin())
        .args(["status", &https, "--ca-cert", &ca])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("lab-1"),
        "status over TLS: {table}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // mTLS, switched on by a reload: a client without a certificate gets no answer.
    let mut config = std::fs::read_to_string(Router::config_path(r.dir.path())).unwrap();
    config = config.replace("[tls]\n", &format!("[tls]\nclient_ca_file = \"{ca}\"\n"));
    std::fs::write(Router::config_path(r.dir.path()), config).unwrap();
    r.sighup();
    r.wait_for("the reload", Duration::from_secs(10), |s| {
        s["router"]["reloads"].as_u64() == Some(1)
    });
    let live = format!("{https}/v2/health/live");
    let (code, _) = curl(&["-s", "--cacert", &ca, &live]);
    assert_eq!(
        code, 0,
        "a client without a certificate must not get an answer"
    );
    let with_cert = [
        "-s",
        "--cacert",
        &ca,
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client-key.pem"),
    ];
    let mut args = with_cert.to_vec();
    args.extend(["-d", &body, &target]);
    let (code, text) = curl(&args);
    assert_eq!(code, 200, "an inference over mTLS: {text}");

    // A client holding a connection open across the renewal below.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut identity = std::fs::read(p("client.pem")).unwrap();
    identity.extend(std::fs::read(p("client-key.pem")).unwrap());
    let kept = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let live_on_kept =
        || runtime.block_on(async { kept.get(&live).send().await.map(|r| r.status().as_u16()) });
    assert_eq!(live_on_kept().unwrap(), 200);

    // New certificates from another CA, read on SIGHUP without a restart.
    let renewed = tempfile::tempdir().unwrap();
    let new_ca = common::daemon::make_tls(renewed.path());
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(renewed.path().join(f), dir.path().join(f)).unwrap();
    }
    r.sighup();
    r.wait_for("the second reload", Duration::from_secs(10), |s| {
        s["router"]["reloads"].as_u64() == Some(2)
    });
    let new_ca = new_ca.display().to_string();
    let (code, _) = curl(&[
        "-s",
        "--cacert",
        &new_ca,
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client-key.pem"),
        &live,
    ]);
    assert_eq!(code, 200, "the renewed certificate is served after SIGHUP");
    let mut args = with_cert.to_vec();
    args.push(&live);
    assert_eq!(curl(&args).0, 0, "the old certificate is no longer served");
    // The connection opened under the old certificate was not dropped: it still answers (a new
    // one would have to verify the renewed certificate, which this client's CA did not sign).
    assert_eq!(
        live_on_kept().unwrap(),
        200,
        "a connection opened before the renewal is kept"
    );
}

/// The error of a router that must refuse to start with the config in `dir`.
fn refused_start(dir: &Path) -> String {
    let out = Command::new(fabric_bin())
        .args(["serve", "--config"])
        .arg(Router::config_path(dir))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the router started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_auth_and_tls_settings_stop_the_router_naming_the_file() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    Router::write_config(dir.path(), &keyed());
    let keys = dir.path().join("state/keys.json");
    KeysFile {
        keys: vec![spec("a", "gpk_x")],
    }
    .write(&keys)
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused_start(dir.path());
    assert!(
        err.contains("auth.keys_file") && err.contains("open to group or others (mode 644)"),
        "{err}"
    );

    let mut zero = spec("a", "gpk_x");
    zero.rate_limit = Some(RateLimit {
        requests_per_second: Some(0),
        rows_per_second: None,
        burst: None,
    });
    KeysFile { keys: vec![zero] }.write(&keys).unwrap();
    let err = refused_start(dir.path());
    assert!(
        err.contains("keys[0].rate_limit.requests_per_second is 0"),
        "{err}"
    );

    let missing = dir.path().join("nowhere.pem");
    Router::write_config(
        dir.path(),
        &format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n{}",
            missing.display(),
            missing.display(),
            pool("lab", "on_prem", "EU", 1, 0.4)
        ),
    );
    let err = refused_start(dir.path());
    assert!(
        err.contains(&format!("tls.cert_file {}", missing.display())),
        "{err}"
    );
}
