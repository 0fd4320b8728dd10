//! Rule and waiver files: any text is loaded into rules or located problems, never a panic, and
//! rules that load are evaluated on a small plan.
#![no_main]

use gpucap_policy::engine::{Evaluator, Options};
use gpucap_policy::plan_json;
use gpucap_policy::rules::load_sources;
use gpucap_policy::schema::Schemas;
use gpucap_policy::source::SourceFile;
use libfuzzer_sys::fuzz_target;

const PLAN: &str = r#"{"format_version": "1.2", "resource_changes": [
 {"address": "gpucap_gpu_pool.eu", "mode": "managed", "type": "gpucap_gpu_pool",
  "change": {"actions": ["create"], "before": null, "after": {"name": "eu", "region": "eu-central-1", "jurisdiction": "EU", "capacity_type": "spot", "gpu": {"model": "H100", "per_node": 8}}}},
 {"address": "gpucap_burst_policy.b", "mode": "managed", "type": "gpucap_burst_policy",
  "change": {"actions": ["update"], "before": {"name": "b"}, "after": {"name": "b", "base_pools": ["eu"], "budget": {"max_hourly_usd": 90}}}},
 {"address": "gpucap_inference_endpoint.e", "mode": "managed", "type": "gpucap_inference_endpoint",
  "change": {"actions": ["create"], "before": null, "after": {"name": "e", "burst_policy": "b", "labels": {"team": "x"}, "replicas": {"min": 1, "max": 3}, "data_residency": {"classification": "pii"}}}}
]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = SourceFile {
        name: "rules.hcl".into(),
        text: text.into(),
    };
    let Ok(set) = load_sources(vec![file], Schemas::gpucap(), Default::default()) else {
        return;
    };
    let subjects = plan_json::subjects(
        PLAN.as_bytes(),
        "plan.json",
        Schemas::gpucap(),
        &|_| true,
        1,
    )
    .expect("the fixed plan reads");
    let mut options = Options::from_env(Vec::new());
    options.now = "2026-11-30T00:00:00Z".parse().expect("a time");
    Evaluator::new(set)
        .evaluate(&subjects, &options, 1)
        .expect("evaluation runs");
});
