//! Evaluating rules: what a resource looks like to a rule ([`Subject`]), and what the rules say
//! about it ([`Finding`]), after enforcement levels, overrides and waivers.

use std::collections::BTreeSet;

use cel::{Context, Value};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::expr::{self, Compiled, StackError};
use crate::rules::{Enforcement, PolicySet, Rule, Waiver};
use crate::schema::Schemas;
use crate::source::Problem;

/// Days before its expiry from which an applied waiver is reported.
pub const WAIVER_WARNING_DAYS: i64 = 14;

/// One resource as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// Resource type.
    pub type_name: String,
    /// Its `name` attribute (the label when it has none).
    pub name: String,
    /// Where Terraform knows it (`module.x.gpucap_inference_endpoint.fraud`), when known: review
    /// reads it from the plan; at plan time Terraform does not tell providers.
    pub terraform_address: Option<String>,
    /// `create`, `update`, `replace`, `delete` or `no-op`.
    pub action: String,
    /// The planned object (the prior one when deleting), with every schema attribute present.
    pub resource: Json,
    /// The prior object, or null.
    pub prior: Json,
    /// The pools it can run on (endpoints and burst policies), base then burst.
    pub pools: Vec<Json>,
    /// Its burst policy (endpoints; a burst policy is its own), or null.
    pub policy: Json,
}

impl Subject {
    /// A subject from raw objects: `resource` and `prior` are normalized to the type's shape;
    /// `pools` and `policy` to theirs.
    pub fn new(
        schemas: &Schemas,
        type_name: &str,
        action: &str,
        resource: &Json,
        prior: &Json,
        pools: Vec<Json>,
        policy: Json,
    ) -> Subject {
        let normalize = |t: &str, v: &Json| match (schemas.resource(t), v) {
            (_, Json::Null) => Json::Null,
            (Some(shape), v) => shape.normalize(v),
            (None, v) => v.clone(),
        };
        let resource = normalize(type_name, resource);
        let name = resource
            .get("name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        Subject {
            type_name: type_name.to_string(),
            name,
            terraform_address: None,
            action: action.to_string(),
            prior: normalize(type_name, prior),
            pools: pools
                .iter()
                .map(|p| normalize("gpucap_gpu_pool", p))
                .collect(),
            policy: normalize("gpucap_burst_policy", &policy),
            resource,
        }
    }

    /// `TYPE.NAME`: how rules (`address`) and waivers name it, the same at plan time and in review.
    pub fn address(&self) -> String {
        format!("{}.{}", self.type_name, self.name)
    }

    /// The variables rules read, bound for evaluation.
    pub fn context(&self, now: DateTime<Utc>) -> Context<'static, 'static> {
        let mut ctx = Context::with_env(expr::env());
        for (name, value) in [
            ("resource", self.resource.clone()),
            ("prior", self.prior.clone()),
            ("action", Json::String(self.action.clone())),
            ("address", Json::String(self.address())),
            ("pools", Json::Array(self.pools.clone())),
            ("policy", self.policy.clone()),
            ("cost", self.cost()),
        ] {
            ctx.add_variable_from_value(name, expr::to_cel(&value));
        }
        ctx.add_variable_from_value("now", Value::Timestamp(now.fixed_offset()));
        ctx
    }

    /// The cost model's figures for it, read from the cost attributes the provider computed.
    pub fn cost(&self) -> Json {
        let r = &self.resource;
        let get = |k: &str| r.get(k).cloned().unwrap_or(Json::Null);
        json!({
            "hourly_min_usd": get("hourly_cost_min_usd"),
            "hourly_max_usd": get("hourly_cost_max_usd"),
            "price_per_gpu_hour": get("effective_price_per_gpu_hour"),
            "price_source": get("price_source"),
            "max_hourly_usd": get("max_hourly_cost_usd"),
            "monthly_min_usd": get("monthly_cost_min_usd"),
            "monthly_max_usd": get("monthly_cost_max_usd"),
        })
    }
}

/// Names the pools and the burst policy a resource can run on, given lookups by name: the
/// placement logic both callers share.
pub fn placement(
    type_name: &str,
    resource: &Json,
    pool: &dyn Fn(&str) -> Option<Json>,
    policy: &dyn Fn(&str) -> Option<Json>,
) -> (Vec<Json>, Json) {
    let names = |v: &Json, key: &str| -> Vec<String> {
        v.get(key)
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let policy_pools = |p: &Json| -> Vec<String> {
        let mut all = names(p, "base_pools");
        all.extend(names(p, "burst_pools"));
        all
    };
    let (pool_names, policy_obj) = match type_name {
        "gpucap_inference_endpoint" => match resource.get("burst_policy").and_then(Json::as_str) {
            Some(policy_name) => {
                let p = policy(policy_name).unwrap_or(Json::Null);
                (policy_pools(&p), p)
            }
            None => (names(resource, "pools"), Json::Null),
        },
        "gpucap_burst_policy" => (policy_pools(resource), resource.clone()),
        _ => (Vec::new(), Json::Null),
    };
    let mut seen = BTreeSet::new();
    let pools = pool_names
        .iter()
        .filter(|n| seen.insert(n.as_str()))
        .filter_map(|n| pool(n))
        .collect();
    (pools, policy_obj)
}

/// What a finding does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fails the plan or the check (soft or hard, not lifted).
    Failed,
    /// An advisory rule's warning.
    Advisory,
    /// A soft rule overridden for this run: reported as a warning.
    Overridden,
    /// Lifted by a waiver.
    Waived,
}

/// What a rule says about one resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: String,
    /// Its enforcement.
    pub enforcement: &'static str,
    /// What it does to the run.
    pub status: Status,
    /// Resource type.
    pub resource_type: String,
    /// The resource's `TYPE.NAME`.
    pub address: String,
    /// Terraform's address, when known (review only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terraform_address: Option<String>,
    /// The rule's message.
    pub message: String,
    /// When the rule could not be evaluated: why (the finding then fails closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_error: Option<String>,
    /// The attribute it concerns (dotted path; empty for the whole resource).
    pub attribute: String,
    /// Where the rule is written (`file:line:column`).
    pub rule_location: String,
    /// The waiver that lifts it, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiver: Option<WaiverUse>,
}

/// A waiver applied to a finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaiverUse {
    /// Its name.
    pub name: String,
    /// Why it exists.
    pub reason: String,
    /// Its last day.
    pub expires: String,
    /// Days left, counting today.
    pub days_left: i64,
}

impl Finding {
    /// Whether it fails the run.
    pub fn fails(&self) -> bool {
        self.status == Status::Failed
    }

    /// Whether it is shown as a warning (advisories, overrides, waivers about to expire).
    pub fn warns(&self) -> bool {
        match self.status {
            Status::Advisory | Status::Overridden => true,
            Status::Waived => self
                .waiver
                .as_ref()
                .is_some_and(|w| w.days_left <= WAIVER_WARNING_DAYS),
            Status::Failed => false,
        }
    }

    /// A one-paragraph explanation: the message, an evaluation error, the override or waiver.
    pub fn detail(&self) -> String {
        let mut out = self.message.clone();
        if let Some(e) = &self.evaluation_error {
            out.push_str(&format!(
                "\n\nThe rule could not be evaluated, so it counts as violated: {e}"
            ));
        }
        match self.status {
            Status::Overridden => out.push_str(&format!(
                "\n\nSoft rule {} is overridden for this run (policy_overrides or GPUCAP_POLICY_OVERRIDE).",
                self.rule
            )),
            Status::Waived => {
                if let Some(w) = &self.waiver {
                    out.push_str(&format!(
                        "\n\nWaived by \"{}\" until {} ({} days left): {}",
                        w.name, w.expires, w.days_left, w.reason
                    ));
                }
            }
            _ => {}
        }
        out.push_str(&format!(
            "\n\nRule {} ({}) at {}.",
            self.rule, self.enforcement, self.rule_location
        ));
        out
    }
}

/// How a run evaluates.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time rules see as `now`, and against which waivers expire.
    pub now: DateTime<Utc>,
    /// Soft rules overridden for this run.
    pub overrides: BTreeSet<String>,
}

impl Options {
    /// Now, with the overrides of `GPUCAP_POLICY_OVERRIDE` (comma-separated rule names) plus `extra`.
    pub fn from_env(extra: impl IntoIterator<Item = String>) -> Options {
        let mut overrides: BTreeSet<String> = std::env::var("GPUCAP_POLICY_OVERRIDE")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        overrides.extend(extra);
        Options {
            now: Utc::now(),
            overrides,
        }
    }
}

impl PolicySet {
    /// Problems with the overrides: names that are no rule, or rules that are not soft.
    pub fn check_overrides(&self, overrides: &BTreeSet<String>) -> Vec<Problem> {
        overrides
            .iter()
            .filter_map(|name| match self.rules.iter().find(|r| &r.name == name) {
                None => Some(Problem::warning(
                    None,
                    format!("override names unknown rule \"{name}\"; it has no effect"),
                )),
                Some(r) if r.enforcement != Enforcement::Soft => Some(Problem::warning(
                    Some(r.location.clone()),
                    format!(
                        "override of rule \"{name}\" has no effect: it is {}, and only soft rules can be overridden",
                        r.enforcement.as_str()
                    ),
                )),
                Some(_) => None,
            })
            .collect()
    }

    /// Whether any rule applies to resources of this type.
    pub fn applies_to(&self, type_name: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.resources.iter().any(|t| t == type_name))
    }

    /// Evaluates every rule on every subject, on `threads` threads with large stacks. Findings come
    /// in subject order, then rule order. Fails only when no thread can be started, or one panics.
    pub fn evaluate(
        &self,
        subjects: &[Subject],
        options: &Options,
        threads: usize,
    ) -> Result<Vec<Finding>, StackError> {
        let threads = threads.clamp(1, subjects.len().max(1));
        let chunk = subjects.len().div_ceil(threads).max(1);
        let results = std::thread::scope(|s| {
            let handles = subjects
                .chunks(chunk)
                .map(|part| {
                    expr::spawn_large_stack(s, move || {
                        part.iter()
                            .flat_map(|subject| self.evaluate_one(subject, options))
                            .collect::<Vec<_>>()
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            handles
                .into_iter()
                .map(expr::join_large_stack)
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(results.into_iter().flatten().collect())
    }

    /// Evaluates every rule on one subject. Must run on a large stack.
    fn evaluate_one(&self, subject: &Subject, options: &Options) -> Vec<Finding> {
        let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.applies(subject)).collect();
        if rules.is_empty() {
            return Vec::new();
        }
        let ctx = subject.context(options.now);
        rules
            .into_iter()
            .filter_map(|rule| self.judge(rule, subject, &ctx, options))
            .collect()
    }

    fn judge(
        &self,
        rule: &Rule,
        subject: &Subject,
        ctx: &Context,
        options: &Options,
    ) -> Option<Finding> {
        let steps = self.limits.max_steps;
        let truth = |c: &Compiled| -> Result<bool, String> {
            match c.eval(ctx, steps) {
                Ok(Value::Bool(b)) => Ok(b),
                Ok(other) => Err(format!(
                    "the expression gave {} where a bool is needed",
                    expr::to_json(&other)
                )),
                Err(e) => Err(e.to_string()),
            }
        };
        let when = rule.when.as_ref().map_or(Ok(true), truth);
        let verdict = match when {
            Ok(false) => return None,
            Ok(true) => truth(&rule.condition),
            Err(e) => Err(format!("in `when`: {e}")),
        };
        let evaluation_error = match verdict {
            Ok(true) => return None,
            Ok(false) => None,
            Err(e) => Some(e),
        };
        let message = match &rule.message_expr {
            Some(m) => match m.eval(ctx, steps) {
                Ok(Value::String(s)) => s.to_string(),
                Ok(other) => format!(
                    "{} (message_expr gave {})",
                    rule.message,
                    expr::to_json(&other)
                ),
                Err(e) => format!("{} (message_expr failed: {e})", rule.message),
            },
            None => rule.message.clone(),
        };
        let waiver = self.waiver_for(rule, subject, options.now.date_naive());
        let status = if waiver.is_some() {
            Status::Waived
        } else {
            match rule.enforcement {
                Enforcement::Advisory => Status::Advisory,
                Enforcement::Soft if options.overrides.contains(&rule.name) => Status::Overridden,
                Enforcement::Soft | Enforcement::Hard => Status::Failed,
            }
        };
        Some(Finding {
            rule: rule.name.clone(),
            enforcement: rule.enforcement.as_str(),
            status,
            resource_type: subject.type_name.clone(),
            address: subject.address(),
            terraform_address: subject.terraform_address.clone(),
            message,
            evaluation_error,
            attribute: rule.attribute.join("."),
            rule_location: rule.location.short(),
            waiver,
        })
    }

    fn waiver_for(&self, rule: &Rule, subject: &Subject, today: NaiveDate) -> Option<WaiverUse> {
        self.waivers
            .iter()
            .filter(|w| w.rule == rule.name && w.covers(&subject.type_name, &subject.name))
            .filter_map(|w: &Waiver| {
                let expires = w.expires?;
                let days_left = (expires - today).num_days() + 1;
                (days_left > 0).then(|| WaiverUse {
                    name: w.name.clone(),
                    reason: w.reason.clone(),
                    expires: w.expires_text.clone(),
                    days_left,
                })
            })
            .max_by_key(|w| w.days_left)
    }
}
