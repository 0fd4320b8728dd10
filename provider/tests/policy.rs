//! Policy rules inside `terraform plan`, and the same findings from `gpucap-policy check` over the
//! plan's JSON: the starter rule pack of `modules/policy-pack/policies` against a configuration that breaks
//! most of it.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{Tf, digits_model, policy_bin, repo_root};

fn config() -> String {
    format!(
        r#"
resource "gpucap_gpu_pool" "frankfurt" {{
  name    = "frankfurt"
  region  = "eu-central-1"
  tenancy = "dedicated"
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{}}
}}

resource "gpucap_gpu_pool" "virginia" {{
  name          = "virginia"
  region        = "us-east-1"
  capacity_type = "spot"
  gpu {{ model = "cpu" }}
  nodes {{ max = 4 }}
  local {{}}
}}

resource "gpucap_burst_policy" "spill" {{
  name        = "spill"
  base_pools  = [gpucap_gpu_pool.frankfurt.name]
  burst_pools = [gpucap_gpu_pool.virginia.name]
}}

resource "gpucap_inference_endpoint" "fraud" {{
  name         = "fraud"
  burst_policy = gpucap_burst_policy.spill.name
  labels       = {{ latency = "critical", latency_slo_ms = "150" }}
  model {{ path = "{}" }}
  data_residency {{ classification = "pii" }}
}}
"#,
        digits_model().display()
    )
}

fn provider_extra(with_policies: bool) -> String {
    let mut extra = "  policy_overrides = [\"burst_spend_capped\"]\n".to_string();
    if with_policies {
        extra += &format!(
            "  policy_paths     = [\"{}\"]\n",
            repo_root().join("modules/policy-pack/policies").display()
        );
    }
    extra
}

/// (severity, rule, resource) of every policy diagnostic in Terraform's output.
fn plan_findings(output: &str) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line
            .strip_prefix("Error: Policy")
            .map(|r| ("failed", r))
            .or_else(|| line.strip_prefix("Warning: Policy").map(|r| ("warning", r)))
        {
            let rule = rest
                .1
                .split(": ")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("");
            current = Some((rest.0.to_string(), rule.to_string()));
        } else if let (Some(resource), Some((severity, rule))) =
            (line.strip_prefix("with "), &current)
        {
            found.insert((
                severity.clone(),
                rule.clone(),
                resource.trim_end_matches(',').to_string(),
            ));
            current = None;
        }
    }
    found
}

/// The diagnostic of Terraform's output that mentions `needle`.
fn diagnostic_with<'a>(output: &'a str, needle: &str) -> &'a str {
    output
        .split("\nError: ")
        .find(|c| c.contains(needle))
        .unwrap_or("")
}

#[test]
fn plan_fails_on_violations_and_check_finds_the_same_over_plan_json() {
    let tf = Tf::new("");
    tf.write_with(&provider_extra(true), &config());
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    assert!(
        !out.status.success(),
        "the plan must fail on hard violations"
    );
    let text = tf.scrub(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    let at_plan = plan_findings(&text);
    let fraud = "gpucap_inference_endpoint.fraud".to_string();
    let spill = "gpucap_burst_policy.spill".to_string();
    let want: BTreeSet<_> = [
        ("failed", "pii_stays_in_allowed_jurisdictions", &fraud),
        ("failed", "dedicated_tenancy_for_sensitive_data", &fraud),
        ("failed", "no_spot_for_latency_critical", &fraud),
        ("warning", "warm_replicas_for_latency_slo", &fraud),
        ("warning", "burst_spend_capped", &spill),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.clone()))
    .collect();
    assert_eq!(at_plan, want, "{text}");
    let pii = diagnostic_with(&text, "pii_stays_in_allowed_jurisdictions");
    assert!(
        pii.contains("PII endpoint fraud can run in virginia (us-east-1, US)"),
        "{pii}"
    );
    assert!(
        pii.contains("data_residency"),
        "the diagnostic points at the attribute: {pii}"
    );
    assert!(!tf.state_dir().join("endpoints/fraud").exists());

    // The same configuration planned without rules, then reviewed.
    tf.write_with(&provider_extra(false), &config());
    tf.ok(&["plan", "-no-color", "-input=false", "-out=plan.tfplan"]);
    let json = tf.ok(&["show", "-json", "plan.tfplan"]);
    std::fs::write(tf.path().join("plan.json"), json).unwrap();
    let review = Command::new(policy_bin())
        .args([
            "check",
            "--plan",
            "plan.json",
            "--format",
            "json",
            "--override",
            "burst_spend_capped",
            "--policies",
        ])
        .arg(repo_root().join("modules/policy-pack/policies"))
        .current_dir(tf.path())
        .env_remove("GPUCAP_POLICY_OVERRIDE")
        .output()
        .unwrap();
    assert_eq!(
        review.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&review.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&review.stdout).unwrap();
    let in_review: BTreeSet<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let status = match f["status"].as_str().unwrap() {
                "failed" => "failed",
                _ => "warning",
            };
            (
                status.to_string(),
                f["rule"].as_str().unwrap().to_string(),
                f["terraform_address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(in_review, want);
    let messages: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"PII endpoint fraud can run in virginia (us-east-1, US)"));
}

#[test]
fn broken_rules_fail_the_plan_with_file_line_and_column() {
    let tf = Tf::new("");
    let rules = tf.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("broken.hcl"),
        "rule \"typo\" {\n  resources   = [\"gpucap_gpu_pool\"]\n  enforcement = \"hard\"\n  condition   = \"resource.regin == 'x'\"\n  message     = \"m\"\n}\n",
    )
    .unwrap();
    tf.write_with(
        &format!("  policy_paths = [\"{}\"]\n", rules.display()),
        "resource \"gpucap_gpu_pool\" \"p\" {\n  name   = \"p\"\n  region = \"eu-central-1\"\n  gpu { model = \"cpu\" }\n  nodes { max = 1 }\n  local {}\n}\n",
    );
    let err = tf.fails(&["plan", "-no-color", "-input=false"]);
    insta::assert_snapshot!(err);
}
