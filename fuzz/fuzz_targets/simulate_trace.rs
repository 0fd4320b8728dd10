//! Request traces the simulator replays (`gpucap-fabric simulate --trace`): any text is a trace or
//! an error that names a line of the text (or, for text with no data at all, none). A trace that
//! reads is well-formed: times and rates finite and ≥ 0, times (the end included) within 366
//! days, arrivals in order, rate steps strictly increasing and ending no earlier than the last.
//! It reads back the same from the CSV it writes.
#![no_main]

use gpucap_fabric::simulate::trace::{MAX_SECOND, Trace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trace = match Trace::parse(text) {
        Ok(trace) => trace,
        Err((line, message)) => {
            assert!(!message.is_empty());
            match line {
                Some(line) => assert!(
                    (1..=text.lines().count()).contains(&line),
                    "line {line} of {} lines: {message}",
                    text.lines().count()
                ),
                None => assert!(
                    text.lines()
                        .map(str::trim)
                        .all(|l| l.is_empty() || l.starts_with('#')),
                    "an unlocated error for text with data: {message}"
                ),
            }
            return;
        }
    };
    let usable = |v: f64| v.is_finite() && v >= 0.0;
    let time = |v: f64| usable(v) && v <= MAX_SECOND;
    let again = Trace::parse(&trace.to_csv()).expect("a trace's own CSV reads");
    match (&trace, &again) {
        (Trace::Arrivals(times), Trace::Arrivals(back)) => {
            assert!(times.iter().all(|&t| time(t)));
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(times, back);
        }
        (Trace::Rates { steps, end }, Trace::Rates { steps: back, end: back_end }) => {
            assert!(!steps.is_empty());
            assert!(steps.iter().all(|&(s, r)| time(s) && usable(r)));
            assert!(steps.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(*end >= steps[steps.len() - 1].0, "end {end} before {steps:?}");
            assert!(*end <= MAX_SECOND, "end {end} past {MAX_SECOND}");
            assert_eq!(end, back_end);
            assert_eq!(steps.len(), back.len());
            for (&(s, r), &(s2, r2)) in steps.iter().zip(back) {
                // Rates are written with three decimals.
                assert_eq!(s, s2);
                assert!((r - r2).abs() <= 0.0005 + r * 1e-12, "rate {r} read back as {r2}");
            }
        }
        _ => panic!("{trace:?} read back as another kind: {again:?}"),
    }
});
