//! The body of the daemon's `PUT /v1/endpoints/NAME` (an endpoint's fabric config as JSON, from
//! whoever holds a token): any bytes are parsed and validated into a config or a problem that
//! names a status and a kind, never a panic; a config that parses has an ETag that is stable
//! across a round trip.
#![no_main]

use gpucap_fabric::daemon::api::parse_config;
use gpucap_fabric::daemon::host::etag_of;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_config(data) {
        Ok(config) => {
            let _ = config.validate("");
            let again = parse_config(&serde_json::to_vec(&config).expect("a config writes as JSON"));
            let again = again.expect("a written config parses");
            if !format!("{config:?}").contains("NaN") {
                assert_eq!(etag_of(&again), etag_of(&config), "the ETag changed on a round trip");
            }
        }
        Err(problem) => {
            assert_eq!(problem.status, 422);
            assert!(problem.kind.starts_with("urn:gpucap:problem:"));
            assert!(!problem.detail.is_empty());
        }
    }
});
