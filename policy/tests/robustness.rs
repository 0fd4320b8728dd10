//! Property tests: whatever rule files and plans users hand the engine, broken, truncated or
//! hostile, it answers with located problems or findings, never a panic or a hang.

use std::path::PathBuf;
use std::sync::Arc;

use gpucap_policy::engine::{Evaluator, Finding, Options, Status, Subject};
use gpucap_policy::expr::StackError;
use gpucap_policy::plan_json::{self, PlanError};
use gpucap_policy::rules::{PolicySet, load_sources, read_files};
use gpucap_policy::schema::Schemas;
use gpucap_policy::source::{Severity, SourceFile};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn starter_pack() -> Vec<SourceFile> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../modules/policy-pack/policies");
    read_files(&[dir]).expect("the starter pack reads")
}

fn plan() -> Json {
    let change = |t: &str, name: &str, actions: Json, after: Json| {
        json!({"address": format!("{t}.{name}"), "mode": "managed", "type": t,
               "change": {"actions": actions, "before": null, "after": after}})
    };
    json!({
        "format_version": "1.2",
        "resource_changes": [
            change("gpucap_gpu_pool", "eu", json!(["create"]), json!({"name": "eu", "region": "eu-central-1",
                "jurisdiction": "EU", "capacity_type": "spot", "tenancy": "shared",
                "gpu": {"model": "H100", "per_node": 8}, "nodes": {"min": 1, "max": 2}})),
            change("gpucap_burst_policy", "b", json!(["create"]), json!({"name": "b", "base_pools": ["eu"],
                "burst_pools": [], "budget": {"max_hourly_usd": 500}})),
            change("gpucap_inference_endpoint", "fraud", json!(["update"]), json!({"name": "fraud",
                "burst_policy": "b", "labels": {"latency": "critical", "latency_slo_ms": "150"},
                "replicas": {"min": 0, "max": 3}, "data_residency": {"classification": "pii",
                "allowed_jurisdictions": ["EU"]}, "monthly_cost_max_usd": 9000.5})),
            change("aws_instance", "web", json!(["create"]), json!({"ami": "ami-1"})),
        ]
    })
}

/// Loads rule files; a problem may be anything but the engine failing.
fn load(files: Vec<SourceFile>) -> Result<PolicySet, Vec<String>> {
    load_sources(files, Schemas::gpucap(), Default::default()).map_err(|problems| {
        for p in &problems {
            assert!(
                !p.message.contains("unexpectedly"),
                "the loader failed: {}",
                p.message
            );
            if p.severity == Severity::Error && !p.message.starts_with("cannot read") {
                assert!(p.location.is_some(), "unlocated error: {}", p.message);
            }
        }
        problems.into_iter().map(|p| p.message).collect()
    })
}

/// Evaluates `set` on the resources of `plan`: findings or a plan error, never an engine failure.
/// The batch and one resource at a time (both evaluating the rules' placement-only parts once per
/// placement) must agree with every expression evaluated whole.
fn review(set: &Arc<Evaluator>, plan: &str) -> Result<Vec<Finding>, PlanError> {
    let read = |threads| {
        plan_json::subjects(
            plan.as_bytes(),
            "plan.json",
            Schemas::gpucap(),
            &|_| true,
            threads,
        )
    };
    // Reading on several threads gives what reading on one does, errors included.
    let seen = |r: &Result<Vec<Subject>, PlanError>| match r {
        Ok(subjects) => Ok(subjects
            .iter()
            .map(|s| {
                (
                    s.address(),
                    s.action.clone(),
                    s.resource.clone(),
                    s.prior.clone(),
                )
            })
            .collect::<Vec<_>>()),
        Err(e) => Err(e.clone()),
    };
    let (one, three) = (read(1), read(3));
    assert_eq!(seen(&one), seen(&three));
    let subjects = three?;
    let options = Options::from_env(Vec::new());
    let batch = match set.evaluate(&subjects, &options, 2) {
        Ok(findings) => findings,
        Err(StackError::Panicked(m)) => panic!("evaluation panicked: {m}"),
        Err(e) => panic!("{e}"),
    };
    let one_by_one: Vec<_> = subjects
        .iter()
        .flat_map(|s| {
            set.evaluate_subject(s.clone(), &options)
                .expect("evaluates")
        })
        .collect();
    let whole = Options {
        share_placement_values: false,
        ..options.clone()
    };
    let reference = set.evaluate(&subjects, &whole, 1).expect("evaluates");
    // CEL's errors print maps in hash order, which differs between runs: compare without them.
    let comparable = |findings: &[Finding]| -> Vec<Finding> {
        findings
            .iter()
            .cloned()
            .map(|mut f| {
                if f.message.contains("Map {") {
                    f.message = "(prints a map)".into();
                }
                if f.evaluation_error
                    .as_ref()
                    .is_some_and(|e| e.contains("Map {"))
                {
                    f.evaluation_error = Some("(prints a map)".into());
                }
                f
            })
            .collect()
    };
    assert_eq!(comparable(&batch), comparable(&reference));
    assert_eq!(comparable(&one_by_one), comparable(&reference));
    Ok(batch)
}

/// Edits made to a text: cut it short, delete a span, or insert a fragment.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Delete(usize, usize),
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        Just("\"".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("(".to_string()),
        Just("]".to_string()),
        Just("<<EOT\n".to_string()),
        Just("${".to_string()),
        Just(" && ".to_string()),
        Just(".all(x, ".to_string()),
        Just("resource.".to_string()),
        Just("\\u00e9\u{1F600}ß".to_string()),
        Just("rule \"x\" {\n".to_string()),
        Just("9223372036854775808".to_string()),
        Just("null".to_string()),
        "\\PC{0,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), fragment).prop_map(|(at, s)| Edit::Insert(at, s)),
    ]
}

/// Applies edits at character boundaries.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let len = chars.len().max(1);
        match e {
            Edit::Truncate(at) => chars.truncate(at % len),
            Edit::Delete(at, n) => {
                let start = (at % len).min(chars.len());
                let end = (start + n).min(chars.len());
                chars.drain(start..end);
            }
            Edit::Insert(at, s) => {
                let at = (at % len).min(chars.len());
                chars.splice(at..at, s.chars());
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn edited_rule_files_load_or_fail_with_located_problems(
        file in 0usize..4,
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut files = starter_pack();
        let file = file % files.len();
        files[file].text = apply(&files[file].text, &edits);
        // Whatever loads must also evaluate without failing.
        if let Ok(set) = load(files) {
            review(&Arc::new(Evaluator::new(set)), &plan().to_string()).expect("the plan reads");
        }
    }

    #[test]
    fn arbitrary_text_as_a_rule_file_never_panics(text in "\\PC{0,400}") {
        let _ = load(vec![SourceFile { name: "fuzz.hcl".into(), text }]);
    }

    #[test]
    fn arbitrary_conditions_load_or_fail_and_evaluate(
        condition in "[a-z_.()\\[\\]{}:'\"0-9 ,+*/%<>=!&|?-]{0,120}",
    ) {
        let text = format!(
            "rule \"fuzz\" {{\n  resources = [\"gpucap_inference_endpoint\"]\n  enforcement = \"hard\"\n  condition = {}\n  message = \"m\"\n}}\n",
            Json::String(condition)
        );
        if let Ok(set) = load(vec![SourceFile { name: "fuzz.hcl".into(), text }]) {
            review(&Arc::new(Evaluator::new(set)), &plan().to_string()).expect("the plan reads");
        }
    }

    #[test]
    fn placement_parts_evaluated_once_agree_with_whole_expressions(
        atoms in prop::collection::vec((0usize..9, any::<bool>()), 1..5),
        ands in prop::collection::vec(any::<bool>(), 4),
    ) {
        const ATOMS: [&str; 9] = [
            "pools.all(p, p.region.startsWith('eu'))",
            "pools.exists(p, p.gpu.per_node / 0 > 1)",
            "resource.replicas.max > 2",
            "policy.base_pools.all(n, pools.exists(p, p.name == n))",
            "pools.map(p, p.jurisdiction).size() == 1",
            "resource.name == 'fraud'",
            "now > timestamp('2020-01-01T00:00:00Z') && policy.budget.max_hourly_usd > 100",
            "resource.labels.exists(k, pools.exists(p, p.name == k))",
            "pools.filter(p, p.capacity_type == 'spot').size() > 0",
        ];
        let mut condition = String::new();
        for (i, (atom, negated)) in atoms.iter().enumerate() {
            if i > 0 {
                condition.push_str(if ands[i - 1] { " && " } else { " || " });
            }
            condition.push_str(&format!("{}({})", if *negated { "!" } else { "" }, ATOMS[*atom]));
        }
        let text = format!(
            "rule \"mixed\" {{\n  resources = [\"gpucap_inference_endpoint\"]\n  enforcement = \"hard\"\n  condition = {}\n  message = \"m\"\n  message_expr = {}\n}}\n",
            Json::String(condition.clone()),
            Json::String(format!("'{}: ' + string({})", "mixed", ATOMS[atoms[0].0])),
        );
        let set = load(vec![SourceFile { name: "mixed.hcl".into(), text }])
            .unwrap_or_else(|p| panic!("{condition}: {p:?}"));
        review(&Arc::new(Evaluator::new(set)), &plan().to_string()).expect("the plan reads");
    }

    #[test]
    fn edited_plans_read_or_fail_with_a_location(edits in prop::collection::vec(edit(), 1..4)) {
        let set = Arc::new(Evaluator::new(
            load(starter_pack()).expect("the starter pack loads"),
        ));
        let text = apply(&serde_json::to_string_pretty(&plan()).unwrap(), &edits);
        match review(&set, &text) {
            Ok(_) => {}
            Err(PlanError::Json { line, column, .. }) => {
                // The location is in the text: a line it has, at most one byte past that line's end.
                let at = text.split('\n').nth(line.wrapping_sub(1));
                prop_assert!(at.is_some(), "line {} of {}", line, text.split('\n').count());
                prop_assert!(column <= at.unwrap().len() + 1, "column {} of {:?}", column, at);
            }
            Err(PlanError::Shape { path, .. }) => prop_assert!(path.starts_with('$')),
        }
    }

    #[test]
    fn any_object_as_a_resource_evaluates_as_its_values_say(
        residency in field(residency()),
        labels in field(labels()),
        replicas in field(prop_oneof![Just(Json::Null), (0u8..3).prop_map(|min| json!({"min": min, "max": 3}))]),
        name in field(Just(json!("fraud"))),
        unknown_attribute in arbitrary_json(),
        pool_gpu in arbitrary_json(),
    ) {
        let set = Arc::new(Evaluator::new(
            load(starter_pack()).expect("the starter pack loads"),
        ));
        let mut plan = plan();
        let endpoint = &mut plan["resource_changes"][2]["change"]["after"];
        endpoint["data_residency"] = residency.value();
        endpoint["labels"] = labels.value();
        endpoint["replicas"] = replicas.value();
        endpoint["name"] = name.value();
        endpoint["not_in_the_schema"] = unknown_attribute;
        plan["resource_changes"][0]["change"]["after"]["gpu"] = pool_gpu;
        let findings = review(&set, &plan.to_string()).expect("an object is evaluated");
        // The pack has no rule on pools, and the policy's budget is within its cap. (The plan's
        // address, not the `TYPE.NAME` one: the name may be anything here.)
        for f in &findings {
            prop_assert_eq!(
                f.terraform_address.as_deref(),
                Some("gpucap_inference_endpoint.fraud"),
                "{:?}",
                f
            );
            // A rule that cannot be evaluated fails closed (an advisory one warns).
            if f.evaluation_error.is_some() {
                let closed = if f.enforcement == "advisory" { Status::Advisory } else { Status::Failed };
                prop_assert_eq!(f.status, closed, "{:?}", f);
            }
        }
        let outcome = |rule: &str| -> Vec<(Status, bool)> {
            findings
                .iter()
                .filter(|f| &*f.rule == rule)
                .map(|f| (f.status, f.evaluation_error.is_some()))
                .collect()
        };
        // Where what a rule reads is well-typed, its outcome follows from the values. The one pool
        // is in the EU, on shared spot capacity; the policy keeps no replica warm.
        let named = matches!(name, Field::Typed(_));
        let failed = |fires: bool| if fires { vec![(Status::Failed, !named)] } else { vec![] };
        if let Field::Typed(r) = &residency {
            let class = r["classification"].as_str();
            prop_assert_eq!(outcome("pii_stays_in_allowed_jurisdictions"), vec![]);
            let sensitive = matches!(class, Some("confidential" | "pii"));
            let got = outcome("dedicated_tenancy_for_sensitive_data");
            if named {
                prop_assert_eq!(got, failed(sensitive));
            } else {
                prop_assert_eq!(got.len(), usize::from(sensitive));
            }
        }
        if let Field::Typed(l) = &labels {
            let critical = l["latency"] == "critical";
            let got = outcome("no_spot_for_latency_critical");
            if named {
                prop_assert_eq!(got, failed(critical));
            } else {
                prop_assert_eq!(got.len(), usize::from(critical));
            }
            // Its message names nothing, so only its `when` decides.
            let slo = l.get("latency_slo_ms").is_some();
            let warned = if slo { vec![(Status::Advisory, false)] } else { vec![] };
            prop_assert_eq!(outcome("warm_replicas_for_latency_slo"), warned);
        }
        // Where what a rule's `when` reads is no map at all, the rule cannot be judged: it fails
        // closed (an advisory one warns), saying why, instead of silently passing.
        let scalar = |v: &Json| matches!(v, Json::Bool(_) | Json::Number(_) | Json::String(_));
        if let Field::Junk(r) = &residency && (scalar(r) || r.is_array()) {
            for rule in ["pii_stays_in_allowed_jurisdictions", "dedicated_tenancy_for_sensitive_data"] {
                prop_assert_eq!(outcome(rule), vec![(Status::Failed, true)], "{}: {}", rule, r);
            }
        }
        if let Field::Junk(l) = &labels && scalar(l) {
            prop_assert_eq!(outcome("no_spot_for_latency_critical"), vec![(Status::Failed, true)], "{}", l);
            prop_assert_eq!(outcome("warm_replicas_for_latency_slo"), vec![(Status::Advisory, true)], "{}", l);
        }
    }

    #[test]
    fn a_resource_that_is_not_an_object_is_refused_where_it_is(after in not_an_object()) {
        let set = Arc::new(Evaluator::new(
            load(starter_pack()).expect("the starter pack loads"),
        ));
        let mut plan = plan();
        plan["resource_changes"][1]["change"]["after"] = after;
        match review(&set, &plan.to_string()) {
            Err(PlanError::Shape { path, reason, .. }) => {
                prop_assert_eq!(path, "$.resource_changes[1].change.after");
                prop_assert_eq!(reason, "expected an object");
            }
            other => prop_assert!(false, "not refused: {:?}", other),
        }
    }
}

/// A value a rule reads: well-typed, or any JSON at all.
#[derive(Debug, Clone)]
enum Field {
    Typed(Json),
    Junk(Json),
}

impl Field {
    fn value(&self) -> Json {
        match self {
            Field::Typed(v) | Field::Junk(v) => v.clone(),
        }
    }
}

/// Mostly well-typed values, sometimes anything.
fn field(typed: impl Strategy<Value = Json>) -> impl Strategy<Value = Field> {
    prop_oneof![
        3 => typed.prop_map(Field::Typed),
        1 => arbitrary_json().prop_map(Field::Junk),
    ]
}

/// An endpoint's `data_residency` block, or none.
fn residency() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        prop::sample::select(vec!["public", "internal", "confidential", "pii"])
            .prop_map(|c| json!({"classification": c, "allowed_jurisdictions": ["EU"]})),
    ]
}

/// An endpoint's `labels`: none, or a map with or without the ones the pack reads.
fn labels() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        (
            prop::option::of(prop::sample::select(vec!["critical", "batch"])),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(latency, slo, team)| {
                let mut labels = serde_json::Map::new();
                if let Some(l) = latency {
                    labels.insert("latency".into(), json!(l));
                }
                if slo {
                    labels.insert("latency_slo_ms".into(), json!("150"));
                }
                if team {
                    labels.insert("team".into(), json!("risk"));
                }
                Json::Object(labels)
            }),
    ]
}

/// Any JSON but an object.
fn not_an_object() -> impl Strategy<Value = Json> {
    arbitrary_json().prop_map(|v| match v {
        Json::Object(m) => Json::Array(m.into_values().collect()),
        other => other,
    })
}

fn arbitrary_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        "\\PC{0,8}".prop_map(Json::String),
    ];
    let keys = prop_oneof![
        Just("name".to_string()),
        Just("replicas".to_string()),
        Just("max".to_string()),
        Just("labels".to_string()),
        Just("data_residency".to_string()),
        Just("classification".to_string()),
        Just("burst_policy".to_string()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn deeply_nested_plans_are_errors_not_stack_overflows() {
    let set = Arc::new(Evaluator::new(
        load(starter_pack()).expect("the starter pack loads"),
    ));
    let deep = "[".repeat(100_000);
    let text = format!(
        r#"{{"format_version": "1.2", "resource_changes": [{{"mode": "managed", "type": "gpucap_inference_endpoint", "address": "a.b", "change": {{"actions": ["create"], "after": {deep}"#
    );
    match review(&set, &text) {
        Err(PlanError::Json { reason, .. }) => assert!(reason.contains("EOF"), "{reason}"),
        other => panic!("expected a JSON error, got {other:?}"),
    }
    // Closed, it is valid JSON nested deeper than the parser recurses: an error located on the
    // line it is on.
    let text = format!(
        "{{\"format_version\": \"1.2\",\n\"resource_changes\": [{{\"mode\": \"managed\", \"type\": \"gpucap_inference_endpoint\", \"address\": \"a.b\", \"change\": {{\"actions\": [\"create\"], \"after\": {deep}{}}}}}]}}",
        "]".repeat(100_000)
    );
    match review(&set, &text) {
        Err(PlanError::Json { reason, line, .. }) => {
            assert!(reason.contains("recursion"), "{reason}");
            assert_eq!(line, 2);
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}
