//! The router speaks the runtime's protocol: a standard client (tritonclient) works through it
//! unchanged, JSON and binary tensors; bad requests and bad configs get clear errors; a config
//! naming a pool outside the endpoint's residency is refused before anything starts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn one_pool() -> String {
    format!(
        "[policy]\nname = \"p\"\n\n{}",
        pool("lab", "on_prem", "EU", 1, 0.4)
    )
}

fn python() -> String {
    std::env::var("GPUCAP_PYTHON").unwrap_or_else(|_| {
        let venv = repo_root().join(".venv/bin/python");
        assert!(
            venv.exists(),
            "no Python with tritonclient: run the tests through scripts/test.sh, or set GPUCAP_PYTHON"
        );
        venv.to_string_lossy().into_owned()
    })
}

#[test]
fn tritonclient_works_unchanged_through_the_router() {
    let _one = serial();
    let r = Router::start(&one_pool());
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let out = Command::new(python())
        .arg(repo_root().join("runtime/tests/clients/triton_client_check.py"))
        .arg(&r.address)
        .arg(repo_root().join("examples/models/digits-test.csv"))
        .arg(repo_root().join("examples/models/digits-report.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tritonclient through the router failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both passes, binary tensors and JSON, classified the test set as the training run did:
    // the script checks each against the report and says so.
    assert!(
        stdout.contains("correct with binary tensors and with JSON"),
        "{stdout}"
    );
}

#[test]
fn bad_requests_get_the_protocols_error_form() {
    let _one = serial();
    let r = Router::start(&one_pool());
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let url = r.url();
    let cases: [(&[&str], u16, &str); 5] = [
        (&["-s", &format!("{url}/v3/nothing")], 404, "no such route"),
        (
            &["-s", "-X", "DELETE", &format!("{url}/v2/models/digits")],
            405,
            "method not allowed",
        ),
        (
            &["-s", &format!("{url}/v2/models/other")],
            404,
            "unknown model 'other'; this endpoint serves 'digits'",
        ),
        (
            &["-s", &format!("{url}/v2/models/digits/versions/9/ready")],
            404,
            "unknown version '9'",
        ),
        (
            &[
                "-s",
                "-H",
                "Content-Type: application/json",
                "-d",
                "{\"inputs\": 3}",
                &format!("{url}/v2/models/digits/infer"),
            ],
            400,
            "inputs: invalid type: integer `3`, expected a sequence",
        ),
    ];
    for (args, code, text) in cases {
        let (got, body) = curl(args);
        assert_eq!(got, code, "{args:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert!(
            v["error"].as_str().unwrap().contains(text),
            "{args:?}: {body}"
        );
    }
    let meta = get_json(&format!("{url}/v2/models/digits"));
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 64]));
    assert_eq!(get_json(&format!("{url}/v2"))["name"], "gpucap-fabric");
}

#[test]
fn bodies_over_the_limit_get_413_at_the_router() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("{{\"pad\": \"{}\"}}", "x".repeat(8192))).unwrap();
    let r = Router::start(&one_pool());
    // The limit lives in [endpoint]; rewrite it in and reload.
    let path = Router::config_path(r.dir.path());
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[endpoint]\n",
        "[endpoint]\nmax_body_bytes = 4096\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    r.sighup();
    r.wait_for("the reload", Duration::from_secs(10), |s| {
        s["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["action"] == "reload")
    });
    let (code, body) = curl(&[
        "-s",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("{}/v2/models/digits/infer", r.url()),
    ]);
    assert_eq!(code, 413, "{body}");
    assert!(
        body.contains("exceeds the endpoint's limit of 4096 bytes"),
        "{body}"
    );
    assert_eq!(infer(&r.url()).0, 200);
}

/// One answer read off a raw connection: the status, the headers (names lowercased) and the
/// body, framed by its length or by chunks.
fn read_answer(from: &mut impl std::io::BufRead) -> (u16, Vec<(String, String)>, String) {
    let mut line = String::new();
    from.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        from.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut body = Vec::new();
    if let Some(length) = header("content-length") {
        body.resize(length.parse().unwrap(), 0);
        from.read_exact(&mut body).unwrap();
    } else {
        assert_eq!(
            header("transfer-encoding").map(String::as_str),
            Some("chunked")
        );
        loop {
            line.clear();
            from.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            from.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    (status, headers, String::from_utf8(body).unwrap())
}

/// A digit's inference request, its head ending in `extra` header lines.
fn inference_request(version: &str, extra: &str) -> String {
    let body = digit_body();
    format!(
        "POST /v2/models/digits/infer HTTP/{version}\r\nhost: router\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn classified(answer: &(u16, Vec<(String, String)>, String)) -> bool {
    answer.0 == 200
        && serde_json::from_str::<serde_json::Value>(&answer.2)
            .is_ok_and(|v| v["outputs"][0]["data"].is_array())
}

#[test]
fn one_connection_carries_pipelined_split_and_chunked_requests_and_health_checks() {
    use std::io::{BufReader, Read, Write};
    let _one = serial();
    let mut r = Router::start(&one_pool());
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    let address = r.address.clone();
    let connect = || {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (stream.try_clone().unwrap(), BufReader::new(stream))
    };
    let (mut to, mut from) = connect();
    // Two requests in one write: both answered, in order.
    let two = inference_request("1.1", "").repeat(2);
    to.write_all(two.as_bytes()).unwrap();
    for n in 0..2 {
        let answer = read_answer(&mut from);
        assert!(classified(&answer), "pipelined request {n}: {answer:?}");
        assert!(answer.1.iter().any(|(n, _)| n == "date"), "{answer:?}");
    }
    // A head and a body that arrive in pieces.
    let request = inference_request("1.1", "x-request-id: split\r\n");
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 10);
    for part in [&head[..20], &head[20..], body] {
        to.write_all(part.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(classified(&read_answer(&mut from)));
    // A query string is passed on and answered.
    let queried = inference_request("1.1", "").replacen("/infer ", "/infer?trace=1 ", 1);
    to.write_all(queried.as_bytes()).unwrap();
    assert!(classified(&read_answer(&mut from)));
    // A chunked body, then a health check and another inference on the same connection.
    let body = digit_body();
    let chunked = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: router\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    to.write_all(chunked.as_bytes()).unwrap();
    assert!(classified(&read_answer(&mut from)));
    to.write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: router\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut from).0, 200);
    to.write_all(inference_request("1.1", "").as_bytes())
        .unwrap();
    assert!(classified(&read_answer(&mut from)));
    // Over the body limit: refused whole, before its body is read.
    let huge = "POST /v2/models/digits/infer HTTP/1.1\r\nhost: router\r\ncontent-length: 999999999999\r\n\r\n";
    let (mut to, mut from) = connect();
    to.write_all(huge.as_bytes()).unwrap();
    let answer = read_answer(&mut from);
    assert_eq!(answer.0, 413, "{answer:?}");
    // HTTP/1.0, and a request that asks to close: answered, then the connection closes.
    for (version, extra) in [("1.0", ""), ("1.1", "connection: close\r\n")] {
        let (mut to, mut from) = connect();
        to.write_all(inference_request(version, extra).as_bytes())
            .unwrap();
        let answer = read_answer(&mut from);
        assert!(classified(&answer), "HTTP/{version}: {answer:?}");
        let mut rest = Vec::new();
        assert_eq!(
            from.read_to_end(&mut rest).unwrap(),
            0,
            "HTTP/{version} {extra}"
        );
    }
    // The stop closes a connection idle between requests at once (if it did not, the router
    // would wait for it until the client gave up: the read below times out first).
    let (mut to, mut from) = connect();
    to.write_all(inference_request("1.1", "").as_bytes())
        .unwrap();
    assert!(classified(&read_answer(&mut from)));
    drop(to);
    let idle = std::thread::spawn(move || from.read_to_end(&mut Vec::new()).map_err(|e| e.kind()));
    assert!(r.terminate().success());
    assert_eq!(idle.join().unwrap(), Ok(0));
}

fn serve_fails(body: &str) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    Router::write_config(dir.path(), body);
    let out = Command::new(fabric_bin())
        .args(["serve", "--config"])
        .arg(Router::config_path(dir.path()))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
        dir,
    )
}

#[test]
fn a_config_naming_a_pool_outside_the_residency_is_refused_and_nothing_starts() {
    let (code, stderr, dir) = serve_fails(&format!(
        "[residency]\nallowed_jurisdictions = [\"EU\"]\n\n\
         [policy]\nname = \"p\"\n\n{}\n{}",
        pool("lab", "on_prem", "EU", 1, 0.4),
        burst_pool("virginia", "on_demand", "US", 2, 3.0)
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "pools[1]: pool \"virginia\" (region \"virginia-region\") is outside the endpoint's data residency: \
             its jurisdiction \"US\" is not one of EU; the router refuses to load it"
        ),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state/replicas").exists(),
        "something was started"
    );
}

#[test]
fn malformed_configs_name_the_key_and_what_is_valid() {
    let cases = [
        (
            "[replicas]\nmin = 1\nmax = 2\nmaximum = 3\n",
            "unknown field `maximum`, expected `min` or `max`",
        ),
        (
            "[policy]\nname = \"p\"\n[policy.scale_down]\nidle_for = \"soon\"\n",
            "policy.scale_down.idle_for: \"soon\" is not a duration",
        ),
        (
            "[[pools]]\nname = \"x\"\nrole = \"spare\"\nregion = \"r\"\njurisdiction = \"EU\"\ngpus_max = 1\n[pools.local]\n",
            "pools[0].role: \"spare\" is not valid; use base or burst",
        ),
        (
            "[replicas]\nmin = \"one\"\n",
            "invalid type: string \"one\", expected usize",
        ),
    ];
    for (body, want) in cases {
        let (code, stderr, _dir) =
            serve_fails(&format!("{body}\n{}", pool("lab", "on_prem", "EU", 1, 0.4)));
        assert_eq!(code, 2, "{body}: {stderr}");
        assert!(stderr.contains(want), "{body}: {stderr}");
        assert!(
            stderr.contains("fabric.toml"),
            "the file is named: {stderr}"
        );
    }
}

#[test]
fn status_prints_pools_replicas_signals_and_decisions() {
    let _one = serial();
    let r = Router::start(&one_pool());
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    assert_eq!(infer(&r.url()).0, 200);
    let model_url = format!("{}/v2/models/digits", r.url());
    let out = Command::new(fabric_bin())
        .args(["status", &model_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "endpoint digits  policy p",
        "1 ready: base 1",
        "POOL  ROLE  TYPE     REGION      $/GPU-H  REPLICAS       STATE",
        "lab   base  on_prem  lab-region  0.40     1/1 (1 ready)  ok",
        "replicas.min is 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let out = Command::new(fabric_bin())
        .args(["status", "--json", &r.address])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["endpoint"], "digits");
    let out = Command::new(fabric_bin())
        .args(["status", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the router at http://127.0.0.1:1")
    );
}
