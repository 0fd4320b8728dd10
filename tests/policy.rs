//! Policy rules across the provider and the review CLI: the starter pack (through the
//! policy-pack module) fails `terraform plan` on the rules a configuration breaks, and
//! `gpucap-policy check` finds exactly the same over the plan's JSON.

mod harness;

use std::collections::BTreeSet;
use std::process::Command;

use harness::{Terraform, bin_dir, fixture, repo_root, text};

/// (status, rule, resource) of a finding; the status as the JSON report names it.
type Found = BTreeSet<(String, String, String)>;

/// The status of a finding from the summary of its diagnostic in Terraform's output.
fn status_of_summary(line: &str) -> Option<(&'static str, &str)> {
    [
        ("Error: Policy violation: ", "failed"),
        ("Warning: Policy advisory: ", "advisory"),
        ("Warning: Policy violation overridden: ", "overridden"),
        ("Warning: Policy waiver expiring: ", "waived"),
    ]
    .into_iter()
    .find_map(|(prefix, status)| line.strip_prefix(prefix).map(|rest| (status, rest)))
}

/// Every policy diagnostic in Terraform's output.
fn plan_findings(output: &str) -> Found {
    let mut found = BTreeSet::new();
    let mut current: Option<(&str, String)> = None;
    for line in output.lines().map(str::trim) {
        if let Some((status, rest)) = status_of_summary(line) {
            let rule = rest.split(' ').next().unwrap_or("");
            current = Some((status, rule.to_string()));
        } else if [
            "Error: Policy",
            "Warning: Policy violation",
            "Warning: Policy advisory",
        ]
        .iter()
        .any(|p| line.starts_with(p))
        {
            panic!("a policy diagnostic this test cannot read: {line}");
        } else if let (Some(resource), Some((status, rule))) =
            (line.strip_prefix("with "), &current)
        {
            let resource = resource.trim_end_matches(',').to_string();
            found.insert((status.to_string(), rule.clone(), resource));
            current = None;
        }
    }
    found
}

/// Every finding of a `gpucap-policy check --format json` report.
fn review_findings(report: &str) -> Found {
    let report: serde_json::Value = serde_json::from_str(report).expect("the report is JSON");
    report["findings"]
        .as_array()
        .expect("the report lists findings")
        .iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (field("status"), field("rule"), field("terraform_address"))
        })
        .collect()
}

#[test]
fn plan_fails_on_violations_and_check_finds_the_same_over_plan_json() {
    let tf = Terraform::new(fixture("policy-findings"));
    tf.init();
    let out = tf.run(&["plan", "-no-color", "-var", "with_policies=true"]);
    let said = text(&out);
    assert!(
        !out.status.success(),
        "the plan must fail on hard violations:\n{said}"
    );
    let fraud = "gpucap_inference_endpoint.fraud";
    let spill = "gpucap_burst_policy.spill";
    let want: Found = [
        ("failed", "pii_stays_in_allowed_jurisdictions", fraud),
        ("failed", "dedicated_tenancy_for_sensitive_data", fraud),
        ("failed", "no_spot_for_latency_critical", fraud),
        ("advisory", "warm_replicas_for_latency_slo", fraud),
        ("overridden", "burst_spend_capped", spill),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(plan_findings(&said), want, "{said}");
    let pii = said
        .split("\nError: ")
        .find(|d| d.contains("pii_stays_in_allowed_jurisdictions"))
        .unwrap_or_default();
    assert!(
        pii.contains("PII endpoint fraud can run in virginia (us-east-1, US)"),
        "{pii}"
    );
    // It points at the attribute the rule reads: `data_residency.classification`.
    assert!(
        pii.contains("classification = \"pii\""),
        "the diagnostic points at the attribute: {pii}"
    );
    assert!(!tf.state_dir().join("endpoints/fraud").exists());

    // The same configuration planned without rules, then reviewed.
    let plan_file = tf.work.path().join("plan.tfplan");
    let out_arg = format!("-out={}", plan_file.display());
    tf.ok(&["plan", "-no-color", "-var", "with_policies=false", &out_arg]);
    let (json, _) = tf.ok(&["show", "-json", &plan_file.display().to_string()]);
    let plan_json = tf.work.path().join("plan.json");
    std::fs::write(&plan_json, json).unwrap();
    let review = Command::new(bin_dir().join("gpucap-policy"))
        .args([
            "check",
            "--format",
            "json",
            "--override",
            "burst_spend_capped",
        ])
        .arg("--plan")
        .arg(&plan_json)
        .arg("--policies")
        .arg(repo_root().join("modules/policy-pack/policies"))
        .env_remove("GPUCAP_POLICY_OVERRIDE")
        .output()
        .expect("gpucap-policy runs");
    assert_eq!(review.status.code(), Some(1), "{}", text(&review));
    let report = String::from_utf8_lossy(&review.stdout);
    assert_eq!(review_findings(&report), want);
    assert!(
        report.contains("\"message\": \"PII endpoint fraud can run in virginia (us-east-1, US)\"")
    );
}
