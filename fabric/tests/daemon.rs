//! `gpucap-fabric daemon` as users run it: its own process, driven over HTTPS through the admin
//! API with a token; endpoints that outlive the daemon and come back at the same URL; one pool
//! ledger for every endpoint it hosts; bad input refused with the key that is wrong.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, endpoint_json};
use common::*;
use serde_json::Value;

const REGION: &str = "lab-region";

/// A base pool of `slots` CPU replicas in the daemon's region.
fn lab(slots: usize) -> String {
    format!(
        "[[pools]]\nname = \"lab\"\nregion = \"{REGION}\"\njurisdiction = \"EU\"\n\
         capacity_type = \"on_prem\"\ngpus_max = {slots}\n[pools.local]\ndevices = \"cpu\"\n"
    )
}

/// POSTs one digit to the model `name` at `url` (the endpoint's model URL).
fn predict(model_url: &str) -> (u16, String) {
    curl(&[
        "-s",
        "-H",
        "Content-Type: application/json",
        "-d",
        &digit_body(),
        &format!("{model_url}/infer"),
    ])
}

fn replica_pids(view: &Value) -> Vec<i64> {
    let mut pids: Vec<i64> = view["status"]["replicas"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["pid"].as_i64()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn endpoints_outlive_the_daemon_and_a_dead_router_comes_back_at_the_same_url() {
    let _one = serial();
    let mut d = Daemon::start(REGION, "EU");
    let config = endpoint_json(
        "digits",
        &format!("[replicas]\nmin = 2\nmax = 2\n\n{}", lab(2)),
    );
    let (code, body) = d.api(
        "PUT",
        "/v1/endpoints/digits",
        Some(&config),
        &["If-None-Match: *"],
    );
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["state"], "serving");
    let url = created["url"].as_str().unwrap().to_string();
    let router_pid = created["router"]["pid"].as_i64().unwrap();
    let replicas = replica_pids(&created);
    assert_eq!(replicas.len(), 2, "{body}");
    let (code, answer) = predict(&url);
    assert_eq!(code, 200, "{answer}");

    // The same config again changes nothing; a create-only PUT of an existing endpoint fails.
    let (code, body) = d.api("PUT", "/v1/endpoints/digits", Some(&config), &[]);
    assert_eq!(code, 200, "{body}");
    let again: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(again["router"]["pid"], router_pid);
    assert_eq!(again["etag"], created["etag"]);
    let (code, body) = d.api(
        "PUT",
        "/v1/endpoints/digits",
        Some(&config),
        &["If-None-Match: *"],
    );
    assert_eq!(code, 412, "{body}");

    // SIGKILL under 64 clients: serving never lived in the daemon, so no request fails, and
    // the daemon started again adopts the same router and replicas.
    let base = url.trim_end_matches("/v2/models/digits").to_string();
    let load = std::thread::spawn(move || bench(&base, 64, "4s"));
    std::thread::sleep(Duration::from_millis(1500));
    d.kill();
    std::thread::sleep(Duration::from_millis(300));
    let restarted = Instant::now();
    d.launch();
    let view = d.endpoint("digits");
    println!(
        "daemon restart to the endpoint listed as serving: {:?}",
        restarted.elapsed()
    );
    assert_eq!(view["state"], "serving", "{view}");
    assert_eq!(view["url"], url.as_str());
    assert_eq!(view["router"]["pid"], router_pid);
    assert_eq!(replica_pids(&view), replicas);
    let report = load.join().unwrap();
    assert_eq!(failed(&report), 0, "{report}");
    assert!(report["ok"].as_u64().unwrap() > 100, "{report}");

    // A router killed with SIGKILL is restarted on its address, adopting its replicas.
    signal(router_pid as i32, "KILL");
    let killed = Instant::now();
    wait_until(
        "the endpoint answers again",
        Duration::from_secs(15),
        || predict(&url).0 == 200,
    );
    println!(
        "router SIGKILL to the endpoint answering again: {:?}",
        killed.elapsed()
    );
    // The restart is counted once the new router converged, which may be just after it answers.
    wait_until("the restart is counted", Duration::from_secs(10), || {
        d.endpoint("digits")["restarts"] == 1
    });
    let view = d.endpoint("digits");
    assert_eq!(view["url"], url.as_str());
    assert_ne!(view["router"]["pid"], router_pid);
    assert_eq!(replica_pids(&view), replicas, "the replicas were adopted");

    // DELETE drains and stops everything; nothing is left.
    let pids = d.hosted_pids();
    assert_eq!(pids.len(), 3);
    let (code, body) = d.api("DELETE", "/v1/endpoints/digits", None, &[]);
    assert_eq!(code, 204, "{body}");
    assert!(all_gone(&pids, Duration::from_secs(5)));
    let (code, body) = d.api("GET", "/v1/endpoints/digits", None, &[]);
    assert_eq!(code, 404, "{body}");
    assert!(!d.state_dir().join("endpoints/digits").exists());

    // SIGTERM drains every endpoint and exits; the next daemon brings them back at their URL.
    let (code, body) = d.api("PUT", "/v1/endpoints/digits", Some(&config), &[]);
    assert_eq!(code, 201, "{body}");
    let url = serde_json::from_str::<Value>(&body).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let pids = d.hosted_pids();
    assert!(d.terminate().success(), "{}", d.log());
    assert!(all_gone(&pids, Duration::from_secs(5)), "{pids:?}");
    d.launch();
    wait_until("the endpoint is back", Duration::from_secs(15), || {
        predict(&url).0 == 200
    });
}

#[test]
fn endpoints_on_one_pool_share_its_slots_through_the_ledger() {
    let _one = serial();
    let d = Daemon::start(REGION, "EU");
    // Three slots, each endpoint keeps one; the third goes to whichever needs it first.
    let body = format!(
        "[replicas]\nmin = 1\nmax = 3\n\n[policy]\nname = \"p\"\n\
         [policy.scale_up]\nqueue_depth = 1\nfor = \"1s\"\nstable_window = \"2s\"\npanic_window = \"1s\"\n\
         [policy.scale_down]\nidle_for = \"60s\"\n\n{}",
        lab(3)
    );
    let mut urls = Vec::new();
    for name in ["a", "b"] {
        let (code, out) = d.api(
            "PUT",
            &format!("/v1/endpoints/{name}"),
            Some(&endpoint_json(name, &body)),
            &[],
        );
        assert_eq!(code, 201, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        urls.push(
            v["url"]
                .as_str()
                .unwrap()
                .trim_end_matches(&format!("/v2/models/{name}"))
                .to_string(),
        );
    }
    let loads: Vec<_> = urls
        .iter()
        .zip(["a", "b"])
        .map(|(u, m)| {
            let (u, m) = (u.clone(), m.to_string());
            std::thread::spawn(move || {
                std::process::Command::new(runtime_bin())
                    .args([
                        "bench",
                        "--url",
                        &u,
                        "--model",
                        &m,
                        "--json",
                        "--duration",
                        "8s",
                        "--concurrency",
                        "16",
                    ])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let (code, out) = d.api("GET", "/v1/pools", None, &[]);
        assert_eq!(code, 200, "{out}");
        let pools: Value = serde_json::from_str(&out).unwrap();
        let lab = &pools["pools"][0];
        assert_eq!(lab["name"], "lab");
        assert_eq!(lab["reserved"], serde_json::json!({"a": 1, "b": 1}));
        let holders = lab["holders"].as_array().unwrap();
        assert!(holders.len() <= 3, "more replicas than slots: {lab}");
        for e in ["a", "b"] {
            assert!(
                holders.iter().any(|h| h["endpoint"] == e),
                "{e} lost its reserved slot: {lab}"
            );
        }
        let mut slots: Vec<i64> = holders
            .iter()
            .map(|h| h["slot"].as_i64().unwrap())
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(
            slots.len(),
            holders.len(),
            "two replicas on one slot: {lab}"
        );
        most = most.max(holders.len());
        std::thread::sleep(Duration::from_millis(200));
    }
    for l in loads {
        assert!(l.join().unwrap().status.success());
    }
    assert_eq!(
        most, 3,
        "the free slot went to one of the endpoints under load"
    );
}

#[test]
fn bad_requests_and_bad_setups_are_refused_naming_what_is_wrong() {
    let _one = serial();
    let d = Daemon::start(REGION, "EU");
    let good = endpoint_json("digits", &lab(1));
    let problem = |(code, body): (u16, String)| -> (u16, Value) {
        (
            code,
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}")),
        )
    };

    let (code, p) = problem(d.call("GET", "/v1/endpoints", None, &[]));
    assert_eq!(
        (code, p["field"].as_str()),
        (401, Some("Authorization")),
        "{p}"
    );
    let (code, p) = problem(d.call(
        "PUT",
        "/v1/endpoints/digits",
        Some(&good),
        &["Authorization: Bearer nope"],
    ));
    assert_eq!(code, 401, "{p}");
    assert_eq!(p["detail"], "the token is not this daemon's");
    // Health and the API's description are open, for load balancers and tools.
    assert_eq!(d.call("GET", "/v1/health", None, &[]).0, 200);
    let (code, spec) = d.call("GET", "/v1/openapi.json", None, &[]);
    assert_eq!(code, 200);
    assert!(
        serde_json::from_str::<Value>(&spec).unwrap()["paths"]["/v1/endpoints/{name}"]["put"]
            .is_object()
    );

    let cases: [(&str, String, &str, &str); 6] = [
        (
            "an unknown key",
            good.replace("\"gpus_max\"", "\"gpus_maxx\""),
            "pools[0].gpus_maxx",
            "unknown field `gpus_maxx`",
        ),
        (
            "not JSON",
            "{\"endpoint\":".into(),
            "endpoint",
            "EOF while parsing",
        ),
        (
            "a name that is not the URL's",
            endpoint_json("other", &lab(1)),
            "endpoint.name",
            "does not match the endpoint in the URL",
        ),
        (
            "a router in another region",
            endpoint_json("digits", &lab(1).replace(REGION, "onprem-paris")),
            "endpoint.router_region",
            "this daemon serves \"lab-region\"",
        ),
        (
            "a known region relabelled into the residency",
            endpoint_json(
                "digits",
                &format!(
                    "[residency]\nallowed_jurisdictions = [\"EU\"]\n\n{}",
                    lab(1).replace(REGION, "us-east-1")
                ),
            ),
            "pools[0].jurisdiction",
            "region \"us-east-1\" (N. Virginia, US) is in jurisdiction \"US\", not \"EU\"",
        ),
        (
            "a residency that excludes the daemon",
            endpoint_json(
                "digits",
                &format!(
                    "[residency]\nallowed_jurisdictions = [\"CH\"]\n\n{}",
                    lab(1).replace("\"EU\"", "\"CH\"")
                ),
            ),
            "residency.allowed_jurisdictions",
            "in jurisdiction \"EU\", which is not one of CH",
        ),
    ];
    for (what, body, field, detail) in cases {
        let (code, p) = problem(d.api("PUT", "/v1/endpoints/digits", Some(&body), &[]));
        assert_eq!(code, 422, "{what}: {p}");
        assert_eq!(
            p["field"].as_str().unwrap_or_default(),
            field,
            "{what}: {p}"
        );
        assert!(
            p["detail"].as_str().unwrap().contains(detail),
            "{what}: {p}"
        );
    }
    // Nothing was half-created.
    let (_, list) = d.api("GET", "/v1/endpoints", None, &[]);
    assert_eq!(list, "{\"endpoints\":[]}");
    assert!(d.hosted_pids().is_empty());

    // A stale If-Match is refused with the current ETag.
    let (code, body) = d.api("PUT", "/v1/endpoints/digits", Some(&good), &[]);
    assert_eq!(code, 201, "{body}");
    let (code, p) = problem(d.api(
        "PUT",
        "/v1/endpoints/digits",
        Some(&good),
        &["If-Match: \"stale\""],
    ));
    assert_eq!((code, p["field"].as_str()), (412, Some("If-Match")), "{p}");

    // Another endpoint whose minimum no longer fits the pool digits keeps a slot of.
    let other = endpoint_json("other", &lab(1));
    let (code, p) = problem(d.api("PUT", "/v1/endpoints/other", Some(&other), &[]));
    assert_eq!(
        (code, p["field"].as_str()),
        (409, Some("replicas.min")),
        "{p}"
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("pool \"lab\" has 1 slots; other endpoints keep 1 for their replicas.min (digits 1), and this one needs 1"),
        "{p}"
    );
    // A name of dots never becomes a path in the state directory.
    let dots = endpoint_json("digits", &lab(1)).replace("\"name\":\"digits\"", "\"name\":\"..\"");
    let (code, p) = problem(d.api("PUT", "/v1/endpoints/%2E%2E", Some(&dots), &[]));
    assert_eq!(
        (code, p["field"].as_str()),
        (422, Some("endpoint.name")),
        "{p}"
    );
    assert!(d.state_dir().join("endpoints/digits/hosted.json").exists());

    // A token hash others may read, a state directory from a newer version, plain HTTP
    // beyond loopback: the daemon does not start, and says why.
    let loose = Daemon::configured(REGION, "EU");
    let hash = loose.dir.path().join("token.sha256");
    std::process::Command::new("chmod")
        .arg("644")
        .arg(&hash)
        .status()
        .unwrap();
    let (code, err) = loose.refused();
    assert_eq!(code, 2);
    assert!(
        err.contains("is open to group or others (mode 644); run chmod 600"),
        "{err}"
    );

    let newer = Daemon::configured(REGION, "EU");
    std::fs::create_dir_all(newer.state_dir()).unwrap();
    std::fs::write(
        newer.state_dir().join("daemon-state.json"),
        "{\"format\": 99}",
    )
    .unwrap();
    let (code, err) = newer.refused();
    assert_eq!(code, 2);
    assert!(
        err.contains("was written by a newer gpucap-fabric (state format 99)"),
        "{err}"
    );

    let open = Daemon::configured(REGION, "EU");
    let config = open.dir.path().join("daemon.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let plain = text
        .split("[tls]")
        .next()
        .unwrap()
        .replace("127.0.0.1:", "0.0.0.0:");
    std::fs::write(&config, plain).unwrap();
    let (code, err) = open.refused();
    assert_eq!(code, 2);
    assert!(err.contains("the admin API needs [tls]"), "{err}");
}

#[test]
fn a_new_token_takes_over_on_sighup_and_mtls_refuses_a_client_without_a_certificate() {
    let _one = serial();
    let d = Daemon::start(REGION, "EU");
    let old = format!("Authorization: Bearer {}", d.token);
    assert_eq!(d.call("GET", "/v1/endpoints", None, &[&old]).0, 200);
    // Rotate: a new hash on disk changes nothing until SIGHUP.
    let out = std::process::Command::new(fabric_bin())
        .args(["token", "--hash-file"])
        .arg(d.dir.path().join("token.sha256"))
        .output()
        .unwrap();
    let new = format!(
        "Authorization: Bearer {}",
        String::from_utf8(out.stdout).unwrap().trim()
    );
    assert_eq!(d.call("GET", "/v1/endpoints", None, &[&new]).0, 401);
    signal(d.pid(), "HUP");
    wait_until("the new token is accepted", Duration::from_secs(5), || {
        d.call("GET", "/v1/endpoints", None, &[&new]).0 == 200
    });
    assert_eq!(d.call("GET", "/v1/endpoints", None, &[&old]).0, 401);

    // With client_ca_file, a client without a certificate from that CA gets no TLS session.
    let mut m = Daemon::configured(REGION, "EU");
    m.require_client_certs();
    m.launch();
    let (code, _) = m.api("GET", "/v1/endpoints", None, &[]);
    assert_eq!(
        code, 0,
        "the handshake must fail without a client certificate"
    );
    let auth = format!("Authorization: Bearer {}", m.token);
    let url = format!("{}/v1/endpoints", m.address);
    let ca = m.ca().display().to_string();
    let certs = m.client_cert_args();
    let mut args: Vec<&str> = vec!["-s", "--cacert", &ca, "-H", &auth];
    args.extend(certs.iter().map(String::as_str));
    args.push(&url);
    let (code, body) = curl(&args);
    assert_eq!(code, 200, "{body}");

    // A replica joining through that daemon presents its client certificate and gets past TLS
    // to the join routes (which know no endpoint `nothing`); without one it gets no session.
    let join = |client: &[String]| {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "gpj_test").unwrap();
        let log = dir.path().join("join.log");
        let mut child = std::process::Command::new(runtime_bin())
            .args(["serve", "--join", &format!("{}/v1/join/nothing", m.address)])
            .arg("--token-file")
            .arg(&token)
            .args(["--pool", "p", "--machine", "m", "--ca-cert", &ca])
            .args(client)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("join failed") || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        text
    };
    let client: Vec<String> = certs
        .chunks(2)
        .flat_map(|pair| {
            let flag = if pair[0] == "--cert" {
                "--client-cert"
            } else {
                "--client-key"
            };
            [flag.to_string(), pair[1].clone()]
        })
        .collect();
    let with = join(&client);
    assert!(
        with.contains("the router answered 404"),
        "past TLS with a client certificate: {with}"
    );
    let without = join(&[]);
    assert!(
        without.contains("CertificateRequired") && !without.contains("the router answered"),
        "no TLS session without one: {without}"
    );
}

#[test]
fn api_keys_are_managed_through_the_admin_api_and_rotate_with_nothing_refused() {
    use gpucap_fabric::gateway::keys::{new_secret, secret_hash};
    let _one = serial();
    let d = Daemon::start(REGION, "EU");
    let key = |name: &str, secret: &str| {
        serde_json::json!({"name": name, "sha256": hex::encode(secret_hash(secret))}).to_string()
    };
    let (first, second) = (new_secret().unwrap(), new_secret().unwrap());
    // Keys of an endpoint that does not exist are refused, naming it.
    let (code, out) = d.api(
        "PUT",
        "/v1/endpoints/digits/keys/app-v1",
        Some(&key("app-v1", &first)),
        &[],
    );
    assert_eq!(code, 404, "{out}");
    assert!(
        out.contains("hosts no endpoint named \\\"digits\\\""),
        "{out}"
    );

    let config = endpoint_json(
        "digits",
        &format!("[auth]\nmode = \"api_key\"\n\n{}", lab(1)),
    );
    let (code, out) = d.api("PUT", "/v1/endpoints/digits", Some(&config), &[]);
    assert_eq!(code, 201, "{out}");
    let url = serde_json::from_str::<Value>(&out).unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let base = url.trim_end_matches("/v2/models/digits").to_string();
    assert_eq!(predict(&url).0, 401, "no key yet: refused");

    let (code, out) = d.api(
        "PUT",
        "/v1/endpoints/digits/keys/app-v1",
        Some(&key("app-v1", &first)),
        &[],
    );
    assert_eq!(code, 201, "{out}");
    // A bad key is refused naming the field; a rate of 0 too.
    let zero = serde_json::json!({"name": "z", "sha256": hex::encode(secret_hash("x")), "rate_limit": {"requests_per_second": 0}});
    let (code, out) = d.api(
        "PUT",
        "/v1/endpoints/digits/keys/z",
        Some(&zero.to_string()),
        &[],
    );
    assert_eq!(code, 422, "{out}");
    assert!(
        out.contains("key.rate_limit.requests_per_second is 0"),
        "{out}"
    );

    let bench = |secret: &str, seconds: &str| {
        let (base, secret, seconds) = (base.clone(), secret.to_string(), seconds.to_string());
        std::thread::spawn(move || {
            let out = std::process::Command::new(runtime_bin())
                .args(["bench", "--url", &base, "--model", "digits", "--json"])
                .args(["--duration", &seconds, "--concurrency", "32"])
                .env("GPUCAP_API_KEY", &secret)
                .output()
                .unwrap();
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
        })
    };
    let old_clients = bench(&first, "4s");
    std::thread::sleep(Duration::from_millis(500));
    let (code, out) = d.api(
        "PUT",
        "/v1/endpoints/digits/keys/app-v2",
        Some(&key("app-v2", &second)),
        &[],
    );
    assert_eq!(code, 201, "{out}");
    let new_clients = bench(&second, "4s");
    let old = old_clients.join().unwrap();
    let (code, out) = d.api("DELETE", "/v1/endpoints/digits/keys/app-v1", None, &[]);
    assert_eq!(code, 204, "{out}");
    let new = new_clients.join().unwrap();
    for report in [&old, &new] {
        assert_eq!(
            report["errors_by_status"],
            serde_json::json!({}),
            "{report}"
        );
        assert!(report["ok"].as_u64().unwrap() > 100, "{report}");
    }
    assert_eq!(
        curl(&[
            "-s",
            "-H",
            &format!("Authorization: Bearer {first}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &digit_body(),
            &format!("{url}/infer")
        ])
        .0,
        401,
        "the removed key is refused at once"
    );
    let usage: Value = {
        let (code, out) = d.api("GET", "/v1/endpoints/digits/keys", None, &[]);
        assert_eq!(code, 200, "{out}");
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(usage["keys"][0]["name"], "app-v2", "{usage}");
    // The daemon's records hold hashes, never secrets.
    let keys_file =
        std::fs::read_to_string(d.state_dir().join("endpoints/digits/keys.json")).unwrap();
    assert!(
        !keys_file.contains(&second[4..]) && keys_file.contains(&hex::encode(secret_hash(&second)))
    );
    assert_eq!(d.api("DELETE", "/v1/endpoints/digits", None, &[]).0, 204);
}
