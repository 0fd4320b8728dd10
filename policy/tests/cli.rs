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
    Command::new(env!("CARGO_BIN_EXE_gpucap-policy"))
        .args(args)
        .current_dir(dir)
        .env_remove("GPUCAP_POLICY_OVERRIDE")
        .output()
        .unwrap()
}

#[test]
fn the_starter_rule_pack_passes_its_tests_and_is_formatted() {
    let out = run(&["test", "examples/policies"], &repo());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("19 passed, 0 failed"), "{text}");
    let out = run(
        &[
            "fmt",
            "--check",
            "examples/policies",
            "examples/policies/tests",
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
    let policies = repo().join("examples/policies");
    let policies = policies.to_str().unwrap();
    let out = run(
        &["check", "--plan", "plan.json", "--policies", policies],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan.json:1:"));

    let plan = serde_json::json!({
        "format_version": "1.2",
        "resource_changes": [
            {"address": "gpucap_gpu_pool.us", "mode": "managed", "type": "gpucap_gpu_pool",
             "change": {"actions": ["create"], "before": null, "after": {"name": "us", "region": "us-east-1", "jurisdiction": "US", "tenancy": "dedicated", "capacity_type": "on_demand"}}},
            {"address": "gpucap_inference_endpoint.fraud", "mode": "managed", "type": "gpucap_inference_endpoint",
             "change": {"actions": ["create"], "before": null, "after": {"name": "fraud", "pools": ["us"], "data_residency": {"classification": "pii"}}}},
            {"address": "aws_s3_bucket.logs", "mode": "managed", "type": "aws_s3_bucket",
             "change": {"actions": ["create"], "before": null, "after": {"bucket": "logs"}}}
        ]
    });
    std::fs::write(dir.path().join("plan.json"), plan.to_string()).unwrap();
    for (format, needle) in [
        (
            "text",
            "FAIL pii_stays_in_allowed_jurisdictions [hard] gpucap_inference_endpoint.fraud",
        ),
        ("json", "\"status\": \"failed\""),
        ("sarif", "\"version\": \"2.1.0\""),
        (
            "junit",
            "<failure message=\"PII endpoint fraud can run in us (us-east-1, US)\"",
        ),
    ] {
        let out = run(
            &[
                "check",
                "--plan",
                "plan.json",
                "--format",
                format,
                "--policies",
                policies,
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{format}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(needle), "{format}: {text}");
    }
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
