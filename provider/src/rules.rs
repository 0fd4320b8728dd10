//! Policy rules at plan time: the provider loads the rule files of `policy_paths` when configured
//! and, after a resource is planned and its names resolved, hands the planned object, its pools
//! and its burst policy to the policy engine and turns the findings into diagnostics. The engine
//! is the one `gpucap-policy check` uses, so review finds what the plan found.

use std::collections::BTreeSet;
use std::path::PathBuf;

use gpucap_policy::gpucap::placement_of;
use gpucap_policy::{Evaluator, Finding, Placement, PolicySet, Problem, Schemas, Status, Subject};

use crate::api::Ctx;
use crate::diag::{Diagnostic, Diagnostics};
use crate::value::Value;

/// Loads the rule files of `paths`; problems become diagnostics on `policy_paths`.
pub fn load(paths: &[PathBuf]) -> (Option<Evaluator>, Diagnostics) {
    let mut d = Diagnostics::default();
    if paths.is_empty() {
        return (Some(Evaluator::new(PolicySet::default())), d);
    }
    match gpucap_policy::rules::load(paths, Schemas::gpucap()) {
        Ok(set) => {
            for w in &set.warnings {
                d.push(problem(w, false));
            }
            (Some(Evaluator::new(set)), d)
        }
        Err(problems) => {
            for p in &problems {
                d.push(problem(p, true));
            }
            (None, d)
        }
    }
}

fn problem(p: &Problem, error: bool) -> Diagnostic {
    let summary = if error {
        "Invalid policy rules"
    } else {
        "Policy rules warning"
    };
    let detail = p.to_string();
    if error {
        Diagnostic::attr_error("policy_paths", summary, detail)
    } else {
        Diagnostic::attr_warning("policy_paths", summary, detail)
    }
}

/// Problems with the overrides, as warnings.
pub fn override_warnings(rules: &Evaluator, overrides: &BTreeSet<String>) -> Diagnostics {
    let mut d = Diagnostics::default();
    for p in rules.policies().check_overrides(overrides) {
        d.push(Diagnostic::attr_warning(
            "policy_overrides",
            "Policy override has no effect",
            p.to_string(),
        ));
    }
    d
}

/// Evaluates the rules on a planned change of `type_name`.
pub fn evaluate(
    ctx: &Ctx,
    type_name: &str,
    prior: &Value,
    planned: &Value,
    replaces: bool,
) -> Diagnostics {
    let rules = &ctx.config.rules;
    if !rules.policies().applies_to(type_name) {
        return Diagnostics::default();
    }
    let prior_json = prior.to_json_unknown_as_null();
    let planned_json = planned.to_json_unknown_as_null();
    let action = match (prior.is_null(), planned.is_null()) {
        (true, _) => "create",
        (false, true) => "delete",
        _ if replaces => "replace",
        _ if prior_json == planned_json => "no-op",
        _ => "update",
    };
    let object = if planned.is_null() {
        &prior_json
    } else {
        &planned_json
    };
    let state_dir = &ctx.config.state_dir;
    let (pools, policy) = placement_of(
        type_name,
        object,
        &|name| ctx.registry.pool(state_dir, name).map(|p| p.object),
        &|name| ctx.registry.burst_policy(state_dir, name).map(|p| p.object),
    );
    let subject = Subject::new(
        Schemas::gpucap(),
        type_name,
        action,
        object,
        &prior_json,
        Placement::new(Schemas::gpucap(), pools, policy),
    );
    let findings = match rules.evaluate_subject(subject, &ctx.config.rule_options) {
        Ok(findings) => findings,
        // Failing closed: a plan the rules could not judge must not pass.
        Err(e) => {
            return Diagnostic::error(
                "Policy rules could not be evaluated",
                format!("{e}; the plan cannot be checked against the rules of policy_paths"),
            )
            .into();
        }
    };
    let mut d = Diagnostics::default();
    for diag in findings.iter().filter_map(diagnostic) {
        d.push(diag);
    }
    d
}

fn diagnostic(f: &Finding) -> Option<Diagnostic> {
    let kind = match f.status {
        Status::Failed => "Policy violation",
        Status::Advisory => "Policy advisory",
        Status::Overridden => "Policy violation overridden",
        Status::Waived if f.warns() => "Policy waiver expiring",
        Status::Waived => return None,
    };
    let summary = format!("{kind}: {} ({})", f.rule, f.enforcement);
    let mut d = if f.fails() {
        Diagnostic::attr_error(&f.attribute, summary, f.detail())
    } else {
        Diagnostic::attr_warning(&f.attribute, summary, f.detail())
    };
    if f.attribute.is_empty() {
        d.path = None;
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{Harness, errors};

    fn with_rules(rules: &str, overrides: &[&str]) -> (Harness, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("rules dir");
        std::fs::write(dir.path().join("spend.hcl"), rules).expect("rule file");
        let h = Harness::with_provider_block(json!({
            "policy_paths": [dir.path().display().to_string()],
            "policy_overrides": overrides,
        }));
        (h, dir)
    }

    /// The starter pack's spend rule: a soft cap of 200 USD/h on burst spend.
    fn budget_rule() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../modules/policy-pack/policies/spend.hcl");
        std::fs::read_to_string(path).expect("the starter pack's spend.hcl")
    }

    fn plan_policy(
        h: &Harness,
        budget: f64,
    ) -> Result<crate::api::Planned, crate::diag::Diagnostics> {
        for name in ["rack", "cloud"] {
            h.plan_create(
                "gpucap_gpu_pool",
                json!({"name": name, "region": "eu-central-1", "gpu": {"model": "cpu"},
                       "nodes": {"max": 1}, "local": {}}),
            )
            .expect("pool");
        }
        h.plan_create(
            "gpucap_burst_policy",
            json!({"name": "spill", "base_pools": ["rack"], "burst_pools": ["cloud"],
                   "budget": {"max_hourly_usd": budget}}),
        )
    }

    #[test]
    fn a_failing_rule_fails_the_plan_at_the_rules_attribute() {
        let (h, _rules) = with_rules(&budget_rule(), &[]);
        let d = plan_policy(&h, 500.0).expect_err("over the cap");
        let text = errors(&d);
        assert!(
            text.contains("Policy violation: burst_spend_capped (soft)"),
            "{text}"
        );
        assert!(
            text.contains("spill may spend 500 USD/h on burst capacity; the cap is 200"),
            "{text}"
        );
        assert_eq!(
            d.0[0].path.as_ref().map(ToString::to_string).as_deref(),
            Some("budget")
        );
        assert!(plan_policy(&h, 100.0).is_ok(), "within the cap");
    }

    #[test]
    fn an_overridden_soft_rule_warns_instead() {
        let (h, _rules) = with_rules(&budget_rule(), &["burst_spend_capped"]);
        let planned = plan_policy(&h, 500.0).expect("overridden");
        assert!(
            planned
                .diagnostics
                .0
                .iter()
                .any(|d| d.summary.starts_with("Policy violation overridden")),
            "{:?}",
            planned.diagnostics
        );
    }

    #[test]
    fn a_broken_rule_file_fails_configure_naming_the_file() {
        let dir = tempfile::tempdir().expect("rules dir");
        std::fs::write(
            dir.path().join("bad.hcl"),
            "rule \"x\" {\n  condition = \"1 +\"\n}\n",
        )
        .expect("rule file");
        let state = tempfile::tempdir().expect("state dir");
        let provider = crate::provider::Provider::new();
        let block = json!({"policy_paths": [dir.path().display().to_string()],
                           "state_dir": state.path().display().to_string()});
        let config =
            crate::value::Value::from_json(&block, crate::provider::Provider::provider_type())
                .expect("block");
        let d = provider.configure(&config);
        let text = errors(&d);
        assert!(text.contains("Invalid policy rules"), "{text}");
        assert!(text.contains("bad.hcl:1:1"), "{text}");
        assert!(text.contains("has no `resources`"), "{text}");
    }
}
