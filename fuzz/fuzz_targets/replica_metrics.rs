//! The Prometheus text the fabric scrapes from each replica: any text is a sample or none, and a
//! sample's busy fraction is between 0 and 1.
#![no_main]

use std::time::{Duration, Instant};

use gpucap_fabric::signals::ReplicaSample;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let Some(earlier) = ReplicaSample::parse(text, now) else {
        return;
    };
    // The same text a second later: whatever the numbers, the busy fraction the autoscaler acts
    // on is a fraction.
    let later = ReplicaSample::parse(text, now + Duration::from_secs(1)).expect("parsed before");
    let busy = later.busy_since(&earlier);
    assert!((0.0..=1.0).contains(&busy), "busy fraction {busy}");
});
