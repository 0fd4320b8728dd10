//! Plan JSON (`terraform show -json`): any bytes are read into resources or a located error, and
//! resources are evaluated by the starter rule pack. Reading on two threads gives what reading
//! on one does, and a review (reading and judging each resource in turn, on two threads) gives
//! the findings and the error that reading everything, then evaluating, gives.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use gpucap_policy::engine::{Evaluator, Options};
use gpucap_policy::plan_json::{self, subjects};
use gpucap_policy::schema::Schemas;
use libfuzzer_sys::fuzz_target;

fn evaluator() -> &'static Evaluator {
    static EVALUATOR: OnceLock<Evaluator> = OnceLock::new();
    EVALUATOR.get_or_init(|| {
        let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../modules/policy-pack/policies");
        Evaluator::new(
            gpucap_policy::rules::load(&[pack], Schemas::gpucap()).expect("the starter pack loads"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let read = |threads| subjects(data, "plan.json", Schemas::gpucap(), &|_| true, threads);
    let (one, two) = (read(1), read(2));
    match (&one, &two) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(b) {
                assert_eq!(
                    (a.address(), &a.resource, &a.prior),
                    (b.address(), &b.resource, &b.prior)
                );
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("one thread and two disagree: {one:?} / {two:?}"),
    }
    let mut options = Options::from_env(Vec::new());
    options.now = "2026-11-30T00:00:00Z".parse().expect("a time");
    let reviewed = plan_json::read(data, "plan.json", Schemas::gpucap(), &|_| true, 2)
        .map_err(plan_json::ReviewError::from)
        .and_then(|plan| plan.review(evaluator(), &options, 2));
    match (one, reviewed) {
        (Ok(subjects), Ok((_, findings))) => {
            let want = evaluator()
                .evaluate(&subjects, &options, 1)
                .expect("evaluation runs");
            assert_eq!(findings.concat(), want);
        }
        (Err(want), Err(plan_json::ReviewError::Plan(got))) => assert_eq!(got, want),
        (one, reviewed) => panic!("reading and reviewing disagree: {one:?} / {reviewed:?}"),
    }
});
