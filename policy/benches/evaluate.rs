//! Rule evaluation cost, side by side: one resource per call, as the provider evaluates each
//! planned resource in `PlanResourceChange`, against the same resources as one batch, as
//! `gpucap-policy check` does; each with no rule and with 50 rules (the starter pack plus generated
//! rules shaped like real ones), with the rules' placement-only parts evaluated once per placement
//! (the default) or every expression whole. Run with `cargo bench -p gpucap-policy`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpucap_policy::engine::{Evaluator, Options, Placement, Subject};
use gpucap_policy::gpucap::placement_of;
use gpucap_policy::rules::{PolicySet, load_sources, read_files};
use gpucap_policy::schema::Schemas;
use gpucap_policy::source::SourceFile;
use serde_json::{Value as Json, json};

const RESOURCES: usize = 2_000;

fn main() {
    let schemas = Schemas::gpucap();
    let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../modules/policy-pack/policies");
    let mut files = read_files(&[pack]).expect("the starter pack reads");
    files.push(SourceFile {
        name: "generated.hcl".into(),
        text: generated_rules(50 - files_rule_count(&files)),
    });
    let fifty = Arc::new(Evaluator::new(
        load_sources(files, schemas, Default::default()).expect("the rules load"),
    ));
    let none = Arc::new(Evaluator::new(PolicySet::default()));
    let planned = endpoints(schemas, false);
    let reviewed = endpoints(schemas, true);
    let options = Options::from_env(Vec::new());
    let whole = Options {
        share_placement_values: false,
        ..options.clone()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!(
        "{RESOURCES} endpoints; {} rules; {threads} threads for batches\n",
        fifty.policies().rules.len()
    );
    println!("{:<44} {:>12} {:>12}", "", "no rules", "50 rules");
    let per_call = |set: &Arc<Evaluator>, options: &Options| {
        timed(|| {
            let mut findings = 0;
            for s in &planned {
                findings += set
                    .evaluate_subject(s.clone(), options)
                    .expect("evaluates")
                    .len();
            }
            findings
        })
    };
    let batch = |set: &Arc<Evaluator>, options: &Options| {
        timed(|| {
            set.evaluate(&reviewed, options, threads)
                .expect("evaluates")
                .len()
        })
    };
    type Run<'a> = &'a dyn Fn(&Arc<Evaluator>, &Options) -> (Duration, usize);
    for (label, run, options) in [
        (
            "plan time (one resource per call)",
            &per_call as Run,
            &options,
        ),
        ("plan time, every expression whole", &per_call, &whole),
        ("review (one batch)", &batch, &options),
        ("review, every expression whole", &batch, &whole),
    ] {
        let (base, _) = run(&none, options);
        let (full, findings) = run(&fifty, options);
        println!(
            "{label:<44} {:>9.1} µs {:>9.1} µs per resource ({findings} findings)",
            micros(base),
            micros(full)
        );
    }
}

fn timed(f: impl Fn() -> usize) -> (Duration, usize) {
    // The best of a few runs: the least disturbed by other work on a shared machine.
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let n = f();
            (start.elapsed(), n)
        })
        .min()
        .expect("three runs")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6 / RESOURCES as f64
}

fn files_rule_count(files: &[SourceFile]) -> usize {
    files
        .iter()
        .map(|f| f.text.lines().filter(|l| l.starts_with("rule ")).count())
        .sum()
}

/// Rules of the shapes the starter pack uses: a guard on the resource, a condition over its pools
/// and cost.
fn generated_rules(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"rule "generated_{i}" {{
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "advisory"
  when        = "resource.replicas != null && resource.replicas.max >= {}"
  condition   = "pools.all(p, p.region.startsWith('eu') || p.jurisdiction != 'XX{i}') && cost.monthly_max_usd < {}.0"
  message     = "generated rule {i}"
}}
"#,
                i % 5,
                10_000 + i
            )
        })
        .collect()
}

/// Endpoints on ten burst policies. `shared`: the endpoints of a policy share one placement, as
/// when `gpucap-policy check` reads a plan; otherwise each resolves its own, as the provider does
/// at plan time.
fn endpoints(schemas: &Schemas, shared: bool) -> Vec<Subject> {
    let mut placements: HashMap<usize, Arc<Placement>> = HashMap::new();
    let pool = |i: usize| {
        let (region, jurisdiction) = [
            ("eu-central-1", "EU"),
            ("us-east-1", "US"),
            ("eu-west-2", "UK"),
        ][i % 3];
        json!({"name": format!("p{i}"), "region": region, "jurisdiction": jurisdiction,
               "capacity_type": (["on_prem", "reserved", "on_demand", "spot"][i % 4]),
               "tenancy": (["dedicated", "shared"][i % 2]), "gpu": {"model": "H100", "per_node": 8},
               "nodes": {"min": 1, "max": 4}, "hourly_cost_min_usd": 55.0, "hourly_cost_max_usd": 220.0})
    };
    let policy = |i: usize| {
        json!({"name": format!("b{i}"), "base_pools": [format!("p{i}"), format!("p{}", i + 10)],
               "burst_pools": [format!("p{}", i + 20)], "budget": {"max_hourly_usd": 100 + 30 * i},
               "scale_down": {"min_warm_replicas": i % 2}})
    };
    (0..RESOURCES)
        .map(|i| {
            let endpoint = json!({"name": format!("e{i}"), "burst_policy": format!("b{}", i % 10),
                "labels": {"latency": (["critical", "batch"][i % 2]), "latency_slo_ms": "200"},
                "replicas": {"min": i % 3, "max": 4},
                "data_residency": {"classification": (["public", "internal", "confidential", "pii"][i % 4])},
                "monthly_cost_min_usd": 1000.0 + i as f64, "monthly_cost_max_usd": 5000.0 + i as f64});
            let lookup_pool = |n: &str| n[1..].parse().ok().map(pool);
            let lookup_policy = |n: &str| n[1..].parse().ok().map(policy);
            let (pools, policy) = placement_of(
                "gpucap_inference_endpoint",
                &endpoint,
                &lookup_pool,
                &lookup_policy,
            );
            let placement = if shared {
                Arc::clone(
                    placements
                        .entry(i % 10)
                        .or_insert_with(|| Placement::new(schemas, pools, policy)),
                )
            } else {
                Placement::new(schemas, pools, policy)
            };
            Subject::new(
                schemas,
                "gpucap_inference_endpoint",
                "create",
                &endpoint,
                &Json::Null,
                placement,
            )
        })
        .collect()
}
