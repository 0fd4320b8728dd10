//! API keys through the real Terraform CLI: an endpoint with `auth { mode = "api_key" }` and a
//! `gpucap_api_key`, applied; the secret opens the endpoint and nothing else does; a limit
//! changed in place; usage read back through `gpucap_endpoint_usage`; the secret nowhere on disk
//! but Terraform's state; and what plan refuses or warns of: the starter policy pack's rule for a
//! PII endpoint without keys, an expiry in the past, an open endpoint beyond loopback; and a
//! rotation (a new key, the clients moved, the old key removed) under load with nothing refused.

mod common;

use common::{Tf, bench, curl, digits_model, failed, first_digit, repo_root};

fn pool() -> &'static str {
    r#"
resource "gpucap_gpu_pool" "host" {
  name         = "host"
  region       = "lab-1"
  jurisdiction = "EU"
  gpu { model = "cpu" }
  nodes { max = 1 }
  local { devices = "cpu" }
}
"#
}

fn endpoint(classification: &str, auth: &str, host: &str) -> String {
    format!(
        r#"
resource "gpucap_inference_endpoint" "claims" {{
  name  = "claims"
  pools = [gpucap_gpu_pool.host.name]
  model {{ path = "{model}" }}
  data_residency {{ classification = "{classification}" }}
  listen {{ host = "{host}" }}
  {auth}
}}
"#,
        model = digits_model().display()
    )
}

fn key(rps: u32, expires_at: &str) -> String {
    format!(
        r#"
resource "gpucap_api_key" "fraud" {{
  endpoint   = gpucap_inference_endpoint.claims.name
  name       = "fraud-team"
  expires_at = "{expires_at}"
  rate_limit {{ requests_per_second = {rps} }}
  monthly_request_quota = 1000
}}

data "gpucap_endpoint_usage" "claims" {{
  endpoint   = gpucap_inference_endpoint.claims.name
  depends_on = [gpucap_api_key.fraud]
}}

output "url" {{ value = gpucap_inference_endpoint.claims.url }}
output "secret" {{
  value     = gpucap_api_key.fraud.secret
  sensitive = true
}}
output "keys" {{ value = jsonencode(data.gpucap_endpoint_usage.claims.keys) }}
"#
    )
}

fn infer(url: &str, secret: Option<&str>) -> (u16, String) {
    let (_, pixels) = first_digit();
    let body = serde_json::json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]});
    let auth = secret.map(|s| format!("Authorization: Bearer {s}"));
    let mut args = vec!["-s".to_string(), "-d".into(), body.to_string()];
    if let Some(a) = auth {
        args.extend(["-H".into(), a]);
    }
    args.push(format!("{url}/infer"));
    curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_key_opens_its_endpoint_changes_in_place_and_never_leaves_the_state() {
    let tf = Tf::new(&format!(
        "{}{}{}",
        pool(),
        endpoint("pii", "auth { mode = \"api_key\" }", "127.0.0.1"),
        key(50, "2099-01-01T00:00:00Z")
    ));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("secret                = (sensitive value)"),
        "{plan}"
    );
    let applied = tf.apply();
    let url = tf.output("url");
    let secret = tf.output("secret");
    assert!(secret.starts_with("gpk_") && secret.len() == 68, "{secret}");

    let (code, text) = infer(&url, Some(&secret));
    assert_eq!(code, 200, "{text}");
    assert_eq!(infer(&url, None).0, 401);
    assert_eq!(infer(&url, Some("gpk_wrong")).0, 401);

    // A refresh reads the key back unchanged: no diff.
    let (code, plan) = tf.plan();
    assert_eq!(code, 0, "{plan}");

    // A new rate is an in-place update: the same secret keeps working.
    tf.write(&format!(
        "{}{}{}",
        pool(),
        endpoint("pii", "auth { mode = \"api_key\" }", "127.0.0.1"),
        key(80, "2099-01-01T00:00:00Z")
    ));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    let changed = tf.apply();
    assert_eq!(
        tf.output("secret"),
        secret,
        "an in-place change keeps the secret"
    );
    assert_eq!(infer(&url, Some(&secret)).0, 200);

    // Usage by key name, for chargeback.
    let keys: serde_json::Value = serde_json::from_str(&tf.output("keys")).unwrap();
    assert_eq!(keys[0]["name"], "fraud-team", "{keys}");
    assert_eq!(keys[0]["monthly_request_quota"], 1000, "{keys}");

    // The secret is in Terraform's state and nowhere else: not in plan or apply output, not in
    // any file the provider, the daemon or the router wrote.
    for text in [&plan, &applied, &changed] {
        assert!(!text.contains(&secret), "the secret was printed:\n{text}");
    }
    for file in files_under(&tf.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&secret[4..]),
            "the secret is in {}",
            file.display()
        );
    }

    // Removing the key refuses it at once.
    tf.write(&format!(
        "{}{}",
        pool(),
        endpoint("pii", "auth { mode = \"api_key\" }", "127.0.0.1"),
    ));
    tf.apply();
    assert_eq!(infer(&url, Some(&secret)).0, 401);
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
}

/// A `gpucap_api_key` per name in `names` (resource and key named alike), each secret an output.
fn rotated_keys(names: &[&str]) -> String {
    let mut out = String::from("output \"url\" { value = gpucap_inference_endpoint.claims.url }\n");
    for name in names {
        out.push_str(&format!(
            r#"
resource "gpucap_api_key" "{name}" {{
  endpoint = gpucap_inference_endpoint.claims.name
  name     = "{name}"
}}
output "{name}" {{
  value     = gpucap_api_key.{name}.secret
  sensitive = true
}}
"#
        ));
    }
    out
}

/// Applies `config` while 32 clients send requests with `secret`; the load's report.
fn apply_under_load(tf: &Tf, config: &str, url: &str, secret: &str) -> serde_json::Value {
    let load = std::thread::spawn({
        let (url, secret) = (url.to_string(), secret.to_string());
        move || bench(&url, 32, "12s", Some(&secret))
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    tf.write(config);
    tf.apply();
    assert!(!load.is_finished(), "the apply outlasted the load");
    let report = load.join().unwrap();
    assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
    report
}

#[test]
fn a_rotation_under_load_refuses_nothing() {
    let config = |keys: &[&str]| {
        format!(
            "{}{}{}",
            pool(),
            endpoint("pii", "auth { mode = \"api_key\" }", "127.0.0.1"),
            rotated_keys(keys)
        )
    };
    let tf = Tf::new(&config(&["blue"]));
    tf.apply();
    let url = tf.output("url");
    let blue = tf.output("blue");

    // The new key is added while the clients use the old one: none of theirs is refused.
    let report = apply_under_load(&tf, &config(&["blue", "green"]), &url, &blue);
    assert_eq!(failed(&report), 0, "{report}");
    let green = tf.output("green");
    assert_ne!(green, blue);

    // The clients moved to the new key; the old one is removed under their load.
    let report = apply_under_load(&tf, &config(&["green"]), &url, &green);
    assert_eq!(failed(&report), 0, "{report}");
    assert_eq!(infer(&url, Some(&blue)).0, 401);
    assert_eq!(infer(&url, Some(&green)).0, 200);
    tf.ok(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
}

#[test]
fn plan_refuses_an_open_pii_endpoint_and_a_past_expiry_and_warns_of_an_open_listener() {
    let tf = Tf::new("");
    let pack = repo_root().join("modules/policy-pack/policies");
    tf.write_with(
        &format!("  policy_paths = [\"{}\"]\n", pack.display()),
        &format!("{}{}", pool(), endpoint("pii", "", "127.0.0.1")),
    );
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(err.contains("sensitive_endpoints_need_a_key"), "{err}");
    assert!(
        err.contains("pii endpoint claims answers anyone who reaches it"),
        "{err}"
    );

    tf.write(&format!(
        "{}{}{}",
        pool(),
        endpoint("internal", "auth { mode = \"api_key\" }", "127.0.0.1"),
        key(50, "2020-01-01T00:00:00Z")
    ));
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    assert!(err.contains("expires_at is in the past"), "{err}");
    assert!(err.contains("2020-01-01T00:00:00Z has passed"), "{err}");

    tf.write(&format!(
        "{}{}",
        pool(),
        endpoint("internal", "", "0.0.0.0")
    ));
    let (code, plan) = tf.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("An open endpoint beyond loopback"), "{plan}");
    assert!(plan.contains("auth.mode = \"none\""), "{plan}");
}
