//! Evaluating rules: what a resource looks like to a rule ([`Subject`]), and what the rules say
//! about it ([`Finding`]), after enforcement levels, overrides and waivers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cel::{Context, Value};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value as Json;

use crate::expr::worker;
use crate::expr::{self, Compiled, StackError};
use crate::gpucap;
use crate::rules::{Enforcement, PolicySet, Rule, Waiver};
use crate::schema::Schemas;
use crate::value::{self, CelVal};

/// The most findings a [`Judge`] reserves room for at its start (about 170 MiB of address space):
/// beyond, its findings grow as a vector does.
const MAX_RESERVED_FINDINGS: usize = 1 << 20;

/// Days before its expiry from which an applied waiver is reported.
pub const WAIVER_WARNING_DAYS: i64 = 14;

/// One resource as rules see it.
#[derive(Debug, Clone)]
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
    /// What it can run on: shared by the resources placed alike.
    pub placement: Arc<Placement>,
}

/// The pools a resource can run on and its burst policy: many endpoints share one, so it is built
/// (and converted for rules) once.
#[derive(Debug)]
pub struct Placement {
    /// The pools (endpoints and burst policies), base then burst.
    pub pools: Vec<Json>,
    /// The burst policy (endpoints; a burst policy is its own), or null.
    pub policy: Json,
    cel: OnceLock<(CelVal, CelVal)>,
}

impl Placement {
    /// A placement from raw objects, normalized to the pool and burst policy shapes.
    pub fn new(schemas: &Schemas, pools: Vec<Json>, policy: Json) -> Arc<Placement> {
        Arc::new(Placement {
            pools: pools
                .iter()
                .map(|p| schemas.normalize(gpucap::POOL, p))
                .collect(),
            policy: schemas.normalize(gpucap::BURST_POLICY, &policy),
            cel: OnceLock::new(),
        })
    }

    /// The variables its rules' placement-only parts read.
    fn context(&self, now: DateTime<Utc>) -> Context<'static, 'static> {
        let mut ctx = Context::with_env(expr::env());
        let (pools, policy) = self.cel();
        ctx.add_variable_as_val("pools", pools);
        ctx.add_variable_as_val("policy", policy);
        ctx.add_variable_from_value("now", Value::Timestamp(now.fixed_offset()));
        ctx
    }

    /// `pools` and `policy` as CEL values, built on first use.
    fn cel(&self) -> (CelVal, CelVal) {
        let (pools, policy) = self.cel.get_or_init(|| {
            (
                value::list(self.pools.iter().map(value::from_json).collect()),
                value::from_json(&self.policy),
            )
        });
        (pools.clone(), policy.clone())
    }
}

impl Subject {
    /// A subject from raw objects: `resource` and `prior` are normalized to the type's shape.
    pub fn new(
        schemas: &Schemas,
        type_name: &str,
        action: &str,
        resource: &Json,
        prior: &Json,
        placement: Arc<Placement>,
    ) -> Subject {
        Subject::normalized(
            type_name,
            action,
            schemas.normalize(type_name, resource),
            schemas.normalize(type_name, prior),
            placement,
        )
    }

    /// A subject from objects already normalized to the type's shape
    /// ([`Schemas::normalize_owned`]).
    pub fn normalized(
        type_name: &str,
        action: &str,
        resource: Json,
        prior: Json,
        placement: Arc<Placement>,
    ) -> Subject {
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
            prior,
            placement,
            resource,
        }
    }

    /// The subject as reports need it once judged: its names, action and placement, without the
    /// objects rules read (which are most of its memory).
    pub fn without_objects(self) -> Subject {
        Subject {
            resource: Json::Null,
            prior: Json::Null,
            ..self
        }
    }

    /// `TYPE.NAME`: how rules (`address`) and waivers name it, the same at plan time and in review.
    pub fn address(&self) -> String {
        format!("{}.{}", self.type_name, self.name)
    }

    /// The variables rules read, bound for evaluation.
    pub fn context(&self, now: DateTime<Utc>) -> Context<'static, 'static> {
        self.context_reading(now, |_| true)
    }

    /// The variables for which `read` is true, bound for evaluation: a resource's objects are
    /// converted for rules only when some rule reads them.
    pub fn context_reading(
        &self,
        now: DateTime<Utc>,
        read: impl Fn(&str) -> bool,
    ) -> Context<'static, 'static> {
        let mut ctx = Context::with_env(expr::env());
        let mut bind = |name: &str, value: &dyn Fn() -> CelVal| {
            if read(name) {
                ctx.add_variable_as_val(name, value());
            }
        };
        bind("resource", &|| value::from_json(&self.resource));
        bind("prior", &|| value::from_json(&self.prior));
        bind("action", &|| {
            value::from_json(&Json::String(self.action.clone()))
        });
        bind("address", &|| {
            value::from_json(&Json::String(self.address()))
        });
        bind("pools", &|| self.placement.cel().0);
        bind("policy", &|| self.placement.cel().1);
        bind("cost", &|| {
            value::from_json(&gpucap::cost_figures(&self.resource))
        });
        if read("now") {
            ctx.add_variable_from_value("now", Value::Timestamp(now.fixed_offset()));
        }
        ctx
    }
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

/// What a rule says about one resource. Its texts are shared with the rule and the resource's
/// other findings: a large plan can have hundreds of thousands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: Arc<str>,
    /// Its enforcement.
    pub enforcement: &'static str,
    /// What it does to the run.
    pub status: Status,
    /// Resource type.
    pub resource_type: Arc<str>,
    /// The resource's `TYPE.NAME`.
    pub address: Arc<str>,
    /// Terraform's address, when known (review only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terraform_address: Option<Arc<str>>,
    /// The rule's message.
    pub message: Arc<str>,
    /// When the rule could not be evaluated: why (the finding then fails closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_error: Option<String>,
    /// The attribute it concerns (dotted path; empty for the whole resource).
    pub attribute: Arc<str>,
    /// Where the rule is written (`file:line:column`).
    pub rule_location: Arc<str>,
    /// The waiver that lifts it, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiver: Option<Box<WaiverUse>>,
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
        let mut out = self.message.to_string();
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
    /// Evaluate the rules' placement-only parts once per placement (the default), rather than
    /// every expression whole for every resource. The results are the same; whole evaluation is
    /// the reference the engine's tests hold the shared one to.
    pub share_placement_values: bool,
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
            share_placement_values: true,
        }
    }
}

/// Evaluates a [`PolicySet`]'s rules, keeping what evaluations share: the rules' texts as findings
/// carry them, the values of the rules' placement-only parts per placement, and the truth of
/// conditions several rules share.
#[derive(Debug)]
pub struct Evaluator {
    set: PolicySet,
    placement_cache: PlacementCache,
    rule_texts: Vec<RuleTexts>,
    truths: Truths,
    /// The variables some rule may read: the others are not bound.
    reads: BTreeSet<String>,
}

/// Rules often share a guard (`when = "resource.data_residency != null"`) or a condition: each
/// distinct one is evaluated once per resource. Expressions are alike when their sources are:
/// the same source compiles to the same evaluation.
#[derive(Debug)]
struct Truths {
    /// Per rule, the slots of its `when` and its `condition`.
    slots: Vec<(Option<usize>, usize)>,
    /// How many distinct expressions there are.
    distinct: usize,
}

/// Every variable the rules of `set` may read.
fn variables_read(set: &PolicySet) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for rule in &set.rules {
        let expressions = [
            rule.when.as_ref(),
            Some(&rule.condition),
            rule.message_expr.as_ref(),
        ];
        for c in expressions.into_iter().flatten() {
            c.variables(&mut names);
        }
    }
    names
}

impl Truths {
    fn new(set: &PolicySet) -> Truths {
        fn slot<'s>(by_source: &mut HashMap<&'s str, usize>, source: &'s str) -> usize {
            let next = by_source.len();
            *by_source.entry(source).or_insert(next)
        }
        let mut by_source = HashMap::new();
        let slots = set
            .rules
            .iter()
            .map(|r| {
                let when = r.when.as_ref().map(|w| slot(&mut by_source, &w.source));
                (when, slot(&mut by_source, &r.condition.source))
            })
            .collect();
        Truths {
            slots,
            distinct: by_source.len(),
        }
    }
}

impl Evaluator {
    /// An evaluator of `set`.
    pub fn new(set: PolicySet) -> Evaluator {
        Evaluator {
            rule_texts: set.rules.iter().map(RuleTexts::new).collect(),
            placement_cache: PlacementCache::default(),
            truths: Truths::new(&set),
            reads: variables_read(&set),
            set,
        }
    }

    /// The rules and waivers it evaluates.
    pub fn policies(&self) -> &PolicySet {
        &self.set
    }

    /// Evaluates every rule on every subject, on `threads` threads with large stacks. Findings come
    /// in subject order, then rule order. Fails only when no thread can be started, or one panics.
    pub fn evaluate(
        &self,
        subjects: &[Subject],
        options: &Options,
        threads: usize,
    ) -> Result<Vec<Finding>, StackError> {
        let parts = expr::in_parts_on_large_stacks(subjects, threads, |part| {
            let mut judge = self.judge(options, part.len());
            for subject in part {
                judge.subject(subject);
            }
            judge.into_findings()
        })?;
        // One allocation of the final size: a review can have hundreds of thousands of findings.
        let mut all = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for part in parts {
            all.extend(part);
        }
        Ok(all)
    }

    /// A judge of subjects one after another on the calling thread, which must have a large
    /// stack ([`expr::spawn_large_stack`]). Room is reserved for the findings of `subjects`
    /// subjects, so that they are not copied as they grow: reserved memory the findings do not
    /// use is address space only, never touched.
    pub fn judge<'e>(&'e self, options: &'e Options, subjects: usize) -> Judge<'e> {
        let room = subjects
            .saturating_mul(self.set.rules.len())
            .min(MAX_RESERVED_FINDINGS);
        Judge {
            evaluator: self,
            options,
            // Texts of its own: findings made on different threads then never contend for the
            // same reference counts.
            texts: self.set.rules.iter().map(RuleTexts::new).collect(),
            placed: HashMap::new(),
            findings: reserved(room),
        }
    }

    /// Evaluates every rule on one subject on a long-lived evaluation thread: how the provider
    /// evaluates each planned resource, where starting a thread per resource would cost more
    /// than the rules. Fails only when no thread can be started, or the evaluation panics.
    pub fn evaluate_subject(
        self: &Arc<Self>,
        subject: Subject,
        options: &Options,
    ) -> Result<Vec<Finding>, StackError> {
        let set = Arc::clone(self);
        let options = options.clone();
        worker::run(move || {
            let texts = &set.rule_texts;
            let values = options
                .share_placement_values
                .then(|| {
                    set.placement_cache
                        .get_or_insert_with(&subject.placement, options.now, || {
                            set.placement_values(&subject.placement, options.now)
                        })
                })
                .flatten();
            let mut findings = Vec::new();
            set.evaluate_one(&subject, texts, &options, values.as_deref(), &mut findings);
            findings
        })
    }

    /// The values of every rule's placement-only parts for one placement. Must run on a large
    /// stack.
    fn placement_values(&self, placement: &Placement, now: DateTime<Utc>) -> PlacementValues {
        let ctx = placement.context(now);
        let steps = self.set.limits.max_steps;
        let of =
            |c: Option<&Compiled>| c.map_or_else(Vec::new, |c| c.placement_values(&ctx, steps));
        self.set
            .rules
            .iter()
            .map(|r| {
                [
                    of(r.when.as_ref()),
                    of(Some(&r.condition)),
                    of(r.message_expr.as_ref()),
                ]
            })
            .collect()
    }

    /// Evaluates every rule on one subject, with the values of the rules' placement-only parts
    /// when they are known. Must run on a large stack.
    fn evaluate_one(
        &self,
        subject: &Subject,
        texts: &[RuleTexts],
        options: &Options,
        placed: Option<&PlacementValues>,
        findings: &mut Vec<Finding>,
    ) {
        let mut rules = self
            .set
            .rules
            .iter()
            .zip(texts)
            .enumerate()
            .filter(|(_, (r, _))| r.applies(&subject.type_name, &subject.action))
            .peekable();
        if rules.peek().is_none() {
            return;
        }
        let ctx = subject.context_reading(options.now, |v| self.reads.contains(v));
        let about = SubjectTexts {
            type_name: subject.type_name.as_str().into(),
            address: subject.address().into(),
            terraform_address: subject.terraform_address.as_deref().map(Arc::from),
        };
        let none = Default::default();
        let mut known = vec![None; self.truths.distinct];
        for (i, (rule, texts)) in rules {
            let values = placed.and_then(|p| p.get(i)).unwrap_or(&none);
            let Some((message, evaluation_error)) = self.verdict(i, rule, &ctx, values, &mut known)
            else {
                continue;
            };
            let waiver = self.waiver_for(rule, subject, options.now.date_naive());
            let status = if waiver.is_some() {
                Status::Waived
            } else {
                match rule.enforcement {
                    Enforcement::Advisory => Status::Advisory,
                    Enforcement::Soft if options.overrides.contains(&rule.name) => {
                        Status::Overridden
                    }
                    Enforcement::Soft | Enforcement::Hard => Status::Failed,
                }
            };
            findings.push(Finding {
                rule: texts.name.clone(),
                enforcement: rule.enforcement.as_str(),
                status,
                resource_type: about.type_name.clone(),
                address: about.address.clone(),
                terraform_address: about.terraform_address.clone(),
                message: message.unwrap_or_else(|| texts.message.clone()),
                evaluation_error,
                attribute: texts.attribute.clone(),
                rule_location: texts.location.clone(),
                waiver: waiver.map(Box::new),
            });
        }
    }

    /// Whether rule `i`, `rule`, is violated in `ctx`: `None` when it holds (or does not
    /// apply); otherwise the message when `message_expr` makes one, and the evaluation error when
    /// there was one. `known` holds the truths of the expressions evaluated so far in `ctx`.
    fn verdict(
        &self,
        i: usize,
        rule: &Rule,
        ctx: &Context,
        placed: &[Vec<Option<CelVal>>; 3],
        known: &mut [Option<Result<bool, String>>],
    ) -> Option<(Option<Arc<str>>, Option<String>)> {
        let steps = self.set.limits.max_steps;
        let [when_values, condition_values, message_values] = placed;
        let (when_slot, condition_slot) = self.truths.slots[i];
        let mut truth = |c: &Compiled, slot: usize, values: &[Option<CelVal>]| {
            if let Some(known) = &known[slot] {
                return known.clone();
            }
            let truth = match c.eval_placed(ctx, steps, values) {
                Ok(Value::Bool(b)) => Ok(b),
                Ok(other) => Err(format!(
                    "the expression gave {} where a bool is needed",
                    expr::to_json(&other)
                )),
                Err(e) => Err(e.to_string()),
            };
            known[slot] = Some(truth.clone());
            truth
        };
        let when = match (&rule.when, when_slot) {
            (Some(w), Some(slot)) => truth(w, slot, when_values),
            _ => Ok(true),
        };
        let verdict = match when {
            Ok(false) => return None,
            Ok(true) => truth(&rule.condition, condition_slot, condition_values),
            Err(e) => Err(format!("in `when`: {e}")),
        };
        let evaluation_error = match verdict {
            Ok(true) => return None,
            Ok(false) => None,
            Err(e) => Some(e),
        };
        let message = rule.message_expr.as_ref().map(|m| {
            Arc::from(match m.eval_placed(ctx, steps, message_values) {
                Ok(Value::String(s)) => s.to_string(),
                Ok(other) => format!(
                    "{} (message_expr gave {})",
                    rule.message,
                    expr::to_json(&other)
                ),
                Err(e) => format!("{} (message_expr failed: {e})", rule.message),
            })
        });
        Some((message, evaluation_error))
    }

    fn waiver_for(&self, rule: &Rule, subject: &Subject, today: NaiveDate) -> Option<WaiverUse> {
        self.set
            .waivers
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

/// An empty vector with room for `room` findings where the system grants it (it may refuse the
/// address space), else none.
fn reserved(room: usize) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Refused, it grows as it fills, as any vector does.
    let _ = findings.try_reserve_exact(room);
    findings
}

/// Evaluates the rules on subjects one at a time on one thread ([`Evaluator::judge`]), keeping
/// what they share: the values of the rules' placement-only parts per placement, and the rules'
/// texts.
pub struct Judge<'e> {
    evaluator: &'e Evaluator,
    options: &'e Options,
    texts: Vec<RuleTexts>,
    /// Keyed by the placement's address, and holding the placement so that the address is not
    /// reused for another one while the judge lives.
    placed: HashMap<*const Placement, (Arc<Placement>, PlacementValues)>,
    findings: Vec<Finding>,
}

impl Judge<'_> {
    /// Evaluates every rule that applies to `subject`, adding what they find.
    pub fn subject(&mut self, subject: &Subject) {
        let e = self.evaluator;
        let options = self.options;
        let values = options.share_placement_values.then(|| {
            let placement = &subject.placement;
            &self
                .placed
                .entry(Arc::as_ptr(placement))
                .or_insert_with(|| {
                    let values = e.placement_values(placement, options.now);
                    (Arc::clone(placement), values)
                })
                .1
        });
        e.evaluate_one(subject, &self.texts, options, values, &mut self.findings);
    }

    /// The findings, in the order of the subjects judged, then rule order.
    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }
}

/// The values of the rules' placement-only parts for one placement: per rule, for `when`,
/// `condition` and `message_expr`.
type PlacementValues = Vec<[Vec<Option<CelVal>>; 3]>;

/// The placement values of the placements one evaluator has seen, by content. The provider
/// evaluates one resource per call, but the endpoints on one burst policy share its pools: their
/// `pools.all(...)` is evaluated once.
#[derive(Debug, Default)]
struct PlacementCache(Mutex<HashMap<String, Arc<PlacementValues>>>);

/// Placements a cache holds before it starts over: plans have a few burst policies, so this is
/// only a bound on memory.
const PLACEMENT_CACHE_SIZE: usize = 4096;

impl PlacementCache {
    /// The values for `placement` at `now`, computed by `compute` unless cached. `None` only when
    /// the placement cannot be keyed (then nothing is saved, and expressions are evaluated whole).
    fn get_or_insert_with(
        &self,
        placement: &Placement,
        now: DateTime<Utc>,
        compute: impl FnOnce() -> PlacementValues,
    ) -> Option<Arc<PlacementValues>> {
        let key =
            serde_json::to_string(&(&placement.pools, &placement.policy, now.timestamp_micros()))
                .ok()?;
        // A panic while holding the lock leaves the map as it was: still usable.
        let lock = || self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(values) = lock().get(&key) {
            return Some(Arc::clone(values));
        }
        // Computed without the lock: two workers may both compute a new placement, harmlessly.
        let values = Arc::new(compute());
        let mut cache = lock();
        if cache.len() >= PLACEMENT_CACHE_SIZE {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&values));
        Some(values)
    }
}

/// A rule's texts as findings carry them, made once per evaluator.
#[derive(Debug)]
struct RuleTexts {
    name: Arc<str>,
    message: Arc<str>,
    attribute: Arc<str>,
    location: Arc<str>,
}

impl RuleTexts {
    fn new(rule: &Rule) -> RuleTexts {
        RuleTexts {
            name: rule.name.as_str().into(),
            message: rule.message.as_str().into(),
            attribute: rule.attribute.join(".").into(),
            location: rule.location.short().into(),
        }
    }
}

/// A subject's texts as its findings carry them.
struct SubjectTexts {
    type_name: Arc<str>,
    address: Arc<str>,
    terraform_address: Option<Arc<str>>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::load_sources;
    use crate::source::SourceFile;

    const RULES: &str = r#"
rule "budget_capped" {
  resources    = ["gpucap_burst_policy"]
  enforcement  = "soft"
  condition    = "resource.budget != null && double(resource.budget.max_hourly_usd) <= 200.0"
  message_expr = "'policy ' + resource.name + ' may spend ' + string(resource.budget.max_hourly_usd)"
  attribute    = "budget"
}

rule "eu_only" {
  resources   = ["gpucap_burst_policy"]
  enforcement = "advisory"
  condition   = "pools.all(p, p.jurisdiction == 'EU')"
  message     = "a pool is outside the EU"
}

waiver "legacy" {
  rule      = "budget_capped"
  resources = ["gpucap_burst_policy.legacy"]
  reason    = "migrating"
  expires   = "2030-01-31"
}
"#;

    fn evaluator() -> Evaluator {
        evaluator_of(&[RULES])
    }

    fn policy(name: &str, budget: f64, jurisdiction: &str) -> Subject {
        let schemas = Schemas::gpucap();
        let policy =
            json!({"name": name, "base_pools": ["p"], "budget": {"max_hourly_usd": budget}});
        let pool = json!({"name": "p", "jurisdiction": jurisdiction});
        let placement = Placement::new(schemas, vec![pool], policy.clone());
        Subject::new(
            schemas,
            "gpucap_burst_policy",
            "create",
            &policy,
            &Json::Null,
            placement,
        )
    }

    fn options(overrides: &[&str]) -> Options {
        Options {
            now: "2030-01-20T00:00:00Z".parse().unwrap(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            share_placement_values: true,
        }
    }

    fn statuses(findings: &[Finding]) -> Vec<(String, Status)> {
        findings
            .iter()
            .map(|f| (f.rule.to_string(), f.status))
            .collect()
    }

    #[test]
    fn enforcement_overrides_and_waivers_decide_the_status() {
        let e = evaluator();
        let subjects = [
            policy("fine", 100.0, "EU"),
            policy("over", 500.0, "US"),
            policy("legacy", 500.0, "EU"),
        ];
        let findings = e.evaluate(&subjects, &options(&[]), 2).unwrap();
        assert_eq!(
            statuses(&findings),
            [
                ("budget_capped".into(), Status::Failed),
                ("eu_only".into(), Status::Advisory),
                ("budget_capped".into(), Status::Waived),
            ]
        );
        assert_eq!(&*findings[0].message, "policy over may spend 500");
        assert_eq!(&*findings[0].attribute, "budget");
        let waiver = findings[2].waiver.as_ref().expect("the waiver is named");
        assert_eq!((waiver.name.as_str(), waiver.days_left), ("legacy", 12));
        assert!(
            findings[2].warns(),
            "a waiver within two weeks of expiry is reported"
        );

        let overridden = e
            .evaluate(&subjects[1..2], &options(&["budget_capped"]), 1)
            .unwrap();
        assert_eq!(overridden[0].status, Status::Overridden);
    }

    /// Rules that share a guard or a condition, one reading `prior`.
    const SHARING: [&str; 4] = [
        r#"rule "a" {
  resources   = ["gpucap_burst_policy"]
  enforcement = "hard"
  when        = "resource.budget.max_hourly_usd > 0.0"
  condition   = "double(resource.budget.max_hourly_usd) <= 200.0"
  message     = "a"
}"#,
        r#"rule "b" {
  resources   = ["gpucap_burst_policy"]
  enforcement = "hard"
  when        = "resource.budget.max_hourly_usd > 0.0"
  condition   = "double(resource.budget.max_hourly_usd) <= 300.0"
  message     = "b"
}"#,
        r#"rule "c" {
  resources   = ["gpucap_burst_policy"]
  enforcement = "hard"
  condition   = "double(resource.budget.max_hourly_usd) <= 200.0"
  message     = "c"
}"#,
        r#"rule "d" {
  resources   = ["gpucap_burst_policy"]
  enforcement = "hard"
  when        = "prior != null"
  condition   = "prior.name == resource.name"
  message     = "d"
}"#,
    ];

    fn evaluator_of(rules: &[&str]) -> Evaluator {
        let file = SourceFile {
            name: "rules.hcl".into(),
            text: rules.join("\n\n"),
        };
        Evaluator::new(load_sources(vec![file], Schemas::gpucap(), Default::default()).unwrap())
    }

    #[test]
    fn shared_guards_and_conditions_judge_as_each_rule_alone() {
        let schemas = Schemas::gpucap();
        let unbudgeted = json!({"name": "none", "base_pools": ["p"]});
        let renamed_from = json!({"name": "before", "base_pools": ["p"]});
        let placement = Placement::new(schemas, Vec::new(), unbudgeted.clone());
        let subjects = [
            policy("over", 250.0, "EU"),
            policy("fine", 100.0, "EU"),
            Subject::new(
                schemas,
                "gpucap_burst_policy",
                "update",
                &unbudgeted,
                &renamed_from,
                placement,
            ),
        ];
        let together = evaluator_of(&SHARING)
            .evaluate(&subjects, &options(&[]), 2)
            .unwrap();
        let mut alone = Vec::new();
        for subject in &subjects {
            for rule in SHARING {
                alone.extend(
                    evaluator_of(&[rule])
                        .evaluate(std::slice::from_ref(subject), &options(&[]), 1)
                        .unwrap(),
                );
            }
        }
        // Alike but for where each rule is written: alone, every rule is on line 1.
        let unlocated = |findings: &[Finding]| -> Vec<Finding> {
            findings
                .iter()
                .map(|f| Finding {
                    rule_location: "".into(),
                    ..f.clone()
                })
                .collect()
        };
        assert_eq!(unlocated(&together), unlocated(&alone));
        let judged: Vec<(&str, &str, bool)> = together
            .iter()
            .map(|f| (&*f.rule, &*f.address, f.evaluation_error.is_some()))
            .collect();
        assert_eq!(
            judged,
            [
                ("a", "gpucap_burst_policy.over", false),
                ("c", "gpucap_burst_policy.over", false),
                ("a", "gpucap_burst_policy.none", true),
                ("b", "gpucap_burst_policy.none", true),
                ("c", "gpucap_burst_policy.none", true),
                ("d", "gpucap_burst_policy.none", false),
            ]
        );
    }

    #[test]
    fn only_the_variables_rules_read_are_bound() {
        assert!(!evaluator().reads.contains("prior"));
        assert!(evaluator_of(&SHARING).reads.contains("prior"));
        let subject = policy("p", 1.0, "EU");
        let now = options(&[]).now;
        let ctx = subject.context_reading(now, |v| v == "resource");
        assert!(ctx.get_variable("resource").is_some());
        assert!(ctx.get_variable("prior").is_none());
        assert!(subject.context(now).get_variable("prior").is_some());
    }

    #[test]
    fn one_at_a_time_shared_and_whole_evaluation_agree() {
        let e = Arc::new(evaluator());
        let subject = policy("over", 500.0, "US");
        let shared = e.evaluate_subject(subject.clone(), &options(&[])).unwrap();
        let whole = Options {
            share_placement_values: false,
            ..options(&[])
        };
        let reference = e.evaluate(&[subject], &whole, 1).unwrap();
        assert_eq!(statuses(&shared), statuses(&reference));
        assert_eq!(shared.len(), 2);
    }
}
