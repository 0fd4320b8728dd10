//! The Prometheus text the fabric scrapes from each replica: any text is a sample or none, and
//! the busy fraction between two different scrapes is a number between 0 and 1 (0 when no time
//! passed or no busy time accrued), never NaN.
//!
//! An input is two scrapes and the time between them: the earlier scrape's text, a 0xFF byte
//! (never in UTF-8, so never in either text), the gap in tenths of a second (one byte), and the
//! later scrape's text.
#![no_main]

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use gpucap_fabric::signals::ReplicaSample;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0xFF) else {
        return;
    };
    let Some((&gap, later_text)) = data[split + 1..].split_first() else {
        return;
    };
    let (Ok(earlier_text), Ok(later_text)) = (
        std::str::from_utf8(&data[..split]),
        std::str::from_utf8(later_text),
    ) else {
        return;
    };
    let now = Instant::now();
    let (Some(earlier), Some(later)) = (
        ReplicaSample::parse(earlier_text, now),
        ReplicaSample::parse(later_text, now + Duration::from_millis(100 * u64::from(gap))),
    ) else {
        return;
    };
    let busy = later.busy_since(&earlier);
    assert!(
        (0.0..=1.0).contains(&busy),
        "busy fraction {busy} between {earlier:?} and {later:?}"
    );
    // No time passed, or no busy time accrued (a restarted replica's counter starts again lower;
    // a NaN counter says nothing): idle.
    let accrued = later.busy_seconds.partial_cmp(&earlier.busy_seconds) == Some(Ordering::Greater);
    if gap == 0 || !accrued {
        assert_eq!(busy, 0.0, "between {earlier:?} and {later:?}");
    }
    // Asked the wrong way round, no time has passed.
    assert_eq!(earlier.busy_since(&later), 0.0);
});
