//! Request traces the simulator replays (`gpucap-fabric simulate --trace`): any text is a trace or
//! a located error.
#![no_main]

use gpucap_fabric::simulate::trace::Trace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Trace::parse(text);
});
