//! The `gpucap-policy` binary as CI and rule authors run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(args: &[&str], dir: &Path) -> Output {
    run_with_override(args, dir, None)
}

fn run_with_override(args: &[&str], dir: &Path, overrides: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpucap-policy"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("GPUCAP_POLICY_OVERRIDE");
    if let Some(o) = overrides {
        cmd.env("GPUCAP_POLICY_OVERRIDE", o);
    }
    cmd.output().unwrap()
}

/// `check` of `dir`/plan.json against the starter pack, in `format`, with `overrides`.
fn check_with_the_pack(dir: &Path, format: &str, overrides: Option<&str>) -> Output {
    let policies = repo().join("modules/policy-pack/policies");
    run_with_override(
        &[
            "check",
            "--plan",
            "plan.json",
            "--format",
            format,
            "--policies",
            policies.to_str().unwrap(),
        ],
        dir,
        overrides,
    )
}

/// The report a `check --format json` wrote, once it has exited with `code` (stderr otherwise).
fn json_report(out: &Output, code: i32) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

/// A plan with a PII endpoint on a US pool, which the pack's hard residency rule fails.
fn pii_endpoint_in_the_us() -> serde_json::Value {
    serde_json::json!({
        "format_version": "1.2",
        "resource_changes": [
            {"address": "gpucap_gpu_pool.us", "mode": "managed", "type": "gpucap_gpu_pool",
             "change": {"actions": ["create"], "before": null, "after": {"name": "us", "region": "us-east-1", "jurisdiction": "US", "tenancy": "dedicated", "capacity_type": "on_demand"}}},
            {"address": "gpucap_inference_endpoint.fraud", "mode": "managed", "type": "gpucap_inference_endpoint",
             "change": {"actions": ["create"], "before": null, "after": {"name": "fraud", "pools": ["us"], "data_residency": {"classification": "pii"}}}}
        ]
    })
}

#[test]
fn the_starter_rule_pack_passes_its_tests_and_is_formatted() {
    let out = run(&["test", "modules/policy-pack/policies"], &repo());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.lines().any(|l| l == "23 passed, 0 failed"), "{text}");
    let out = run(
        &[
            "fmt",
            "--check",
            "modules/policy-pack/policies",
            "modules/policy-pack/policies/tests",
        ],
        &repo(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn rule_errors_exit_2_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.hcl"),
        "rule \"a\" {\n  resources   = [\"gpucap_inference_endpoint\"]\n  enforcement = \"strict\"\n  condition   = \"resource.name ==\"\n  message     = \"m\"\n}\n\nwaiver \"w\" {\n  rule      = \"b\"\n  resources = [\"x\"]\n  reason    = \"r\"\n  expires   = \"31/03/2027\"\n}\n",
    )
    .unwrap();
    let out = run(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err =
        String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "[DIR]");
    insta::assert_snapshot!(err);
}

#[test]
fn check_reads_plans_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plan.json"),
        "{\"format_version\": \"1.2\", \"resource_changes\": [",
    )
    .unwrap();
    let policies = repo().join("modules/policy-pack/policies");
    let policies = policies.to_str().unwrap();
    let out = run(
        &["check", "--plan", "plan.json", "--policies", policies],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan.json:1:"));

    // Resources of other providers are left alone.
    let mut plan = pii_endpoint_in_the_us();
    plan["resource_changes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"address": "aws_s3_bucket.logs", "mode": "managed", "type": "aws_s3_bucket",
             "change": {"actions": ["create"], "before": null, "after": {"bucket": "logs"}}}
        ));
    std::fs::write(dir.path().join("plan.json"), plan.to_string()).unwrap();
    for (format, needle) in [
        (
            "text",
            "FAIL pii_stays_in_allowed_jurisdictions [hard] gpucap_inference_endpoint.fraud",
        ),
        ("json", "\"status\": \"failed\""),
        (
            "sarif",
            "\"ruleId\": \"pii_stays_in_allowed_jurisdictions\"",
        ),
        (
            "junit",
            "<failure message=\"PII endpoint fraud can run in us (us-east-1, US)\"",
        ),
    ] {
        let out = check_with_the_pack(dir.path(), format, None);
        assert_eq!(out.status.code(), Some(1), "{format}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{format}: {text}");
    }
}

#[test]
fn soft_rules_yield_to_overrides_and_reports_are_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let plan = serde_json::json!({
        "format_version": "1.2",
        "resource_changes": [
            {"address": "gpucap_gpu_pool.eu", "mode": "managed", "type": "gpucap_gpu_pool",
             "change": {"actions": ["create"], "before": null, "after": {"name": "eu", "region": "eu-central-1", "jurisdiction": "EU", "tenancy": "dedicated", "capacity_type": "on_demand"}}},
            {"address": "gpucap_burst_policy.big", "mode": "managed", "type": "gpucap_burst_policy",
             "change": {"actions": ["create"], "before": null, "after": {"name": "big", "base_pools": ["eu"], "burst_pools": ["eu"], "budget": {"max_hourly_usd": 900}}}}
        ]
    });
    std::fs::write(dir.path().join("plan.json"), plan.to_string()).unwrap();
    let check = |format: &str, overrides| check_with_the_pack(dir.path(), format, overrides);

    // The soft spend cap fails the check, until the environment overrides it for the run.
    let out = check("json", None);
    assert_eq!(out.status.code(), Some(1));
    let report = json_report(&check("json", Some(" burst_spend_capped ,")), 0);
    let finding = &report["findings"][0];
    assert_eq!(finding["rule"], "burst_spend_capped");
    assert_eq!(finding["status"], "overridden");

    // SARIF 2.1.0 as code scanning reads it: every result names a declared rule, a level, a
    // message and a location in a rule file.
    let out = check("sarif", Some("burst_spend_capped"));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "gpucap-policy");
    let rule_ids: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        assert!(rule_ids.contains(&r["ruleId"].as_str().unwrap()), "{r}");
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
        assert!(!r["message"]["text"].as_str().unwrap().is_empty());
        let location = &r["locations"][0]["physicalLocation"];
        assert!(
            location["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with(".hcl")
        );
        assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let spend = results
        .iter()
        .find(|r| r["ruleId"] == "burst_spend_capped")
        .unwrap();
    assert_eq!(spend["level"], "warning");
    assert!(
        spend["message"]["text"]
            .as_str()
            .unwrap()
            .contains("overridden")
    );

    // JUnit: the counts in the header match the cases written.
    let out = check("junit", None);
    let xml = String::from_utf8_lossy(&out.stdout);
    let attribute = |name: &str| -> usize {
        let start = xml.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        xml[start..].split('"').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        attribute("tests"),
        xml.matches("<testcase ").count(),
        "{xml}"
    );
    assert_eq!(
        attribute("failures"),
        xml.matches("<failure ").count(),
        "{xml}"
    );
    assert!(xml.matches("<failure ").count() >= 1, "{xml}");
}

#[test]
fn overriding_a_hard_rule_changes_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let plan = pii_endpoint_in_the_us();
    std::fs::write(dir.path().join("plan.json"), plan.to_string()).unwrap();
    let check = |overrides| check_with_the_pack(dir.path(), "json", overrides);
    let without = check(None);
    let with = check(Some("pii_stays_in_allowed_jurisdictions"));
    // The exit code and the report are the same either way; only a warning on stderr differs.
    assert_eq!(without.status.code(), with.status.code());
    assert_eq!(without.stdout, with.stdout);
    let report = json_report(&with, 1);
    let residency: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "pii_stays_in_allowed_jurisdictions")
        .collect();
    assert_eq!(residency.len(), 1, "{report}");
    assert_eq!(residency[0]["status"], "failed", "{report}");
    assert_eq!(
        residency[0]["terraform_address"],
        "gpucap_inference_endpoint.fraud"
    );
    let warned = String::from_utf8_lossy(&with.stderr);
    assert!(
        warned.contains("pii_stays_in_allowed_jurisdictions")
            && warned.contains("only soft rules can be overridden"),
        "{warned}"
    );
    assert!(
        !String::from_utf8_lossy(&without.stderr).contains("overridden"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
}

#[test]
fn eval_prints_json_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.json"),
        "{\"name\": \"Fraud\", \"replicas\": {\"min\": 2, \"max\": 4}}",
    )
    .unwrap();
    let out = run(
        &[
            "eval",
            "resource.name.lowerAscii() + '-' + string(resource.replicas.max / 2)",
            "--resource",
            "r.json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"fraud-2\"\n");
    let out = run(
        &["eval", "resource.replicas.max / 0", "--resource", "r.json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("evaluation failed"));
    let out = run(
        &["eval", "resource.replica.max", "--resource", "r.json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "a check error is a rule error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            " --> <expression>:1:10\n  |\n1 | resource.replica.max\n  |          ^^^^^^^"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_is_stable() {
    let out = run(&["--help"], &repo());
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn check_gives_the_same_report_on_any_number_of_threads_and_times_its_phases() {
    let dir = tempfile::tempdir().unwrap();
    let mut changes = vec![serde_json::json!({
        "address": "gpucap_gpu_pool.us", "mode": "managed", "type": "gpucap_gpu_pool",
        "change": {"actions": ["create"], "before": null, "after": {"name": "us", "region": "us-east-1", "jurisdiction": "US", "tenancy": "shared", "capacity_type": "spot"}}
    })];
    for i in 0..5000 {
        let class = ["pii", "public"][i % 2];
        changes.push(serde_json::json!({
            "address": format!("module.m[{i}].gpucap_inference_endpoint.e"), "mode": "managed",
            "type": "gpucap_inference_endpoint",
            "change": {"actions": ["create"], "before": null, "after_unknown": {"url": true},
                "after": {"name": format!("e{i}"), "pools": ["us"],
                    "data_residency": {"classification": class}}}
        }));
    }
    let plan = serde_json::json!({"format_version": "1.2", "resource_changes": changes,
        "planned_values": {"root_module": {}}});
    std::fs::write(dir.path().join("plan.json"), plan.to_string()).unwrap();
    let policies = repo().join("modules/policy-pack/policies");
    let check = |format: &str, jobs: &str| {
        run(
            &[
                "check",
                "--plan",
                "plan.json",
                "--format",
                format,
                "--jobs",
                jobs,
                "--timings",
                "--policies",
                policies.to_str().unwrap(),
            ],
            dir.path(),
        )
    };
    for format in ["text", "json", "sarif", "junit"] {
        let one = check(format, "1");
        assert_eq!(one.status.code(), Some(1), "{format}");
        assert!(one.stdout.len() > 100_000, "{format}");
        let three = check(format, "3");
        assert!(
            one.stdout == three.stdout,
            "{format}: --jobs 3 differs from --jobs 1"
        );
        let timings = String::from_utf8_lossy(&three.stderr);
        for phase in [
            "load rules",
            "read plan",
            "index plan",
            "evaluate",
            "write report",
            "total",
        ] {
            assert!(timings.contains(phase), "{timings}");
        }
        assert!(timings.contains("5001 resources"), "{timings}");
        assert!(timings.contains("3 threads"), "{timings}");
        #[cfg(target_os = "linux")]
        assert!(timings.contains("MiB resident"), "{timings}");
    }
    let zero = check("text", "0");
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--jobs"));
}
