//! Plan JSON (`terraform show -json`): any bytes are read into resources or a located error, and
//! resources are evaluated by the starter rule pack. Reading on two threads gives what reading
//! on one does.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use gpucap_policy::engine::{Evaluator, Options};
use gpucap_policy::plan_json::subjects;
use gpucap_policy::schema::Schemas;
use libfuzzer_sys::fuzz_target;

fn evaluator() -> &'static Evaluator {
    static EVALUATOR: OnceLock<Evaluator> = OnceLock::new();
    EVALUATOR.get_or_init(|| {
        let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
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
    if let Ok(subjects) = one {
        let mut options = Options::from_env(Vec::new());
        options.now = "2026-11-30T00:00:00Z".parse().expect("a time");
        evaluator()
            .evaluate(&subjects, &options, 1)
            .expect("evaluation runs");
    }
});
