//! How many rows the gateway counts in an inference request (its rate limits in rows and its
//! usage per key meter them): any body and any `inference-header-content-length` give a count
//! of at least 1, never a panic or a hang; and where the body is plain JSON (no escapes, one
//! `inputs` and one `shape` key), the count is the first dimension of the first input's shape
//! as a full parse reads it.
//!
//! An input is a little-endian u16 (0: no header; n: the header says n - 1 bytes) and the body.
#![no_main]

use gpucap_fabric::gateway::rows::rows_of;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((length, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let length = u16::from_le_bytes(*length);
    let mut headers = HeaderMap::new();
    if length > 0 {
        headers.insert(
            "inference-header-content-length",
            HeaderValue::from(length - 1),
        );
    }
    let rows = rows_of(&headers, body);
    assert!(rows >= 1);
    let json = match usize::from(length) {
        0 => body,
        n => body.get(..n - 1).unwrap_or(body),
    };
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    if text.contains('\\')
        || text.matches("\"inputs\"").count() != 1
        || text.matches("\"shape\"").count() != 1
    {
        return;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    if let Some(first) = value.pointer("/inputs/0/shape/0").and_then(|v| v.as_i64()) {
        assert_eq!(rows, first.max(1) as u64, "{text}");
    }
});
