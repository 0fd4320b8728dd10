//! What ships for monitoring works: every metric the Grafana dashboard queries is exported by a
//! real router or a real replica, and the Prometheus config's service discovery endpoint lists
//! the replicas with the labels the dashboard uses.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use gpucap_fabric::gateway::keys::{KeySpec, new_secret, secret_hash};

/// Metric names in PromQL expressions, with the suffixes Prometheus adds to samples removed.
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        // Rows group panels and query nothing.
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("gpucap_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            out.insert(base);
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_queries_exists_and_replicas_are_discovered() {
    let _one = serial();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("examples/observability/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let wanted = queried_metrics(&dashboard);
    assert!(wanted.len() >= 15, "{wanted:?}");

    // With API keys, so the per-key row has series to show: one keyed request, one refused.
    let secret = new_secret().unwrap();
    let r = Router::start_keyed(
        &format!(
            "[auth]\nmode = \"api_key\"\n\n[policy]\nname = \"p\"\n\n{}",
            pool("lab", "on_prem", "EU", 1, 0.4)
        ),
        vec![KeySpec {
            name: "team-a".into(),
            sha256: hex::encode(secret_hash(&secret)),
            expires_at: None,
            rate_limit: None,
            monthly_request_quota: Some(1000),
        }],
    );
    r.wait_for("a replica", Duration::from_secs(30), |s| {
        ready_on(s, "lab") == 1
    });
    assert_eq!(infer(&r.url()).0, 401);
    let (code, body) = curl(&[
        "-s",
        "-H",
        &format!("Authorization: Bearer {secret}"),
        "-d",
        &digit_body(),
        &format!("{}/v2/models/digits/infer", r.url()),
    ]);
    assert_eq!(code, 200, "{body}");

    let targets = get_json(&format!("{}/fabric/targets", r.operator_url()));
    let group = &targets[0];
    assert_eq!(group["labels"]["pool"], "lab");
    assert_eq!(group["labels"]["endpoint"], "digits");
    let replica = group["targets"][0].as_str().unwrap();
    assert!(replica.starts_with("127.0.0.1:"), "{targets}");
    let prometheus =
        std::fs::read_to_string(repo_root().join("examples/observability/prometheus.yml")).unwrap();
    assert!(prometheus.contains("/fabric/targets"));

    let exported = format!(
        "{}{}",
        r.metrics(),
        http_get(&format!("http://{replica}/metrics")).1
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !exported.contains(&format!("# TYPE {m} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nothing exports: {missing:?}"
    );
}
