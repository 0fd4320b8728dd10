//! Policy rules at plan time: the provider loads the rule files of `policy_paths` when configured
//! and, after a resource is planned and its names resolved, hands the planned object, its pools
//! and its burst policy to the policy engine and turns the findings into diagnostics. The engine
//! is the one `gpucap-policy check` uses, so review finds what the plan found.

use std::collections::BTreeSet;
use std::path::PathBuf;

use gpucap_policy::engine::{Finding, Placement, Status, Subject, placement};
use gpucap_policy::rules::PolicySet;
use gpucap_policy::schema::Schemas;
use gpucap_policy::source::Problem;

use crate::diag::{Diagnostic, Diagnostics};
use crate::provider::Ctx;
use crate::value::Value;

/// Loads the rule files of `paths`; problems become diagnostics on `policy_paths`.
pub fn load(paths: &[PathBuf]) -> (Option<PolicySet>, Diagnostics) {
    let mut d = Diagnostics::default();
    if paths.is_empty() {
        return (Some(PolicySet::default()), d);
    }
    match gpucap_policy::rules::load(paths, Schemas::gpucap()) {
        Ok(set) => {
            for w in &set.warnings {
                d.push(problem(w, false));
            }
            (Some(set), d)
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
pub fn override_warnings(set: &PolicySet, overrides: &BTreeSet<String>) -> Diagnostics {
    let mut d = Diagnostics::default();
    for p in set.check_overrides(overrides) {
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
    let set = &ctx.config.policies;
    if !set.applies_to(type_name) {
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
    let (pools, policy) = placement(
        type_name,
        object,
        &|name| ctx.registry.pool(state_dir, name).map(|p| p.object),
        &|name| ctx.registry.policy(state_dir, name).map(|p| p.object),
    );
    let subject = Subject::new(
        Schemas::gpucap(),
        type_name,
        action,
        object,
        &prior_json,
        Placement::new(Schemas::gpucap(), pools, policy),
    );
    let findings = match set.evaluate_subject(subject, &ctx.config.policy_options) {
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
