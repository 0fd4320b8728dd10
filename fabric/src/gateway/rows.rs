//! How many rows an inference request carries: the first dimension of its first input's shape,
//! read from the JSON (or, with the binary tensor extension, from the JSON header alone). Only
//! the way to that number is read: `sonic-rs` skips what lies before it and stops there, so the
//! tensor data after it is not parsed (a full parse of a small request's JSON was a tenth of
//! the router's CPU per request); the replica still checks the request in full.

use axum::http::{HeaderMap, HeaderName};
use sonic_rs::pointer;

/// The header of the binary tensor extension: the JSON part's length. A name made once: looking
/// a header up by a string checks and lowercases the string on every request.
const HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// Rows in the request; 1 when the body says nothing usable (the replica will refuse it).
pub fn rows_of(headers: &HeaderMap, body: &[u8]) -> u64 {
    let json = headers
        .get(HEADER_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|n| body.get(..n))
        .unwrap_or(body);
    sonic_rs::get_from_slice(json, &pointer!["inputs", 0, "shape", 0])
        .ok()
        // The number's digits, read as they are: the crate's own conversion parses the text
        // again as a JSON document.
        .and_then(|first| first.as_raw_str().parse::<i64>().ok())
        .map_or(1, |n| n.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_the_first_dimension() {
        let h = HeaderMap::new();
        let body = br#"{"inputs":[{"name":"x","shape":[8,64],"datatype":"FP32","data":[[1,2]]}]}"#;
        assert_eq!(rows_of(&h, body), 8);
        assert_eq!(rows_of(&h, br#"{"inputs":[{"shape":[],"data":3}]}"#), 1);
        assert_eq!(rows_of(&h, b"not json"), 1);
        assert_eq!(rows_of(&h, br#"{"inputs":[]}"#), 1);
        // Wherever the shape is, and whatever comes before it.
        let body = br#"{"id":"a\"}","inputs":[{"data":[[1,2]],"parameters":{"shape":[5]},"shape":[4,2]},{"shape":[9]}]}"#;
        assert_eq!(rows_of(&h, body), 4);
        assert_eq!(rows_of(&h, br#"{"inputs":[{"shape":[-3]}]}"#), 1);
        assert_eq!(rows_of(&h, br#"{"inputs":[{"shape":["x"]}]}"#), 1);
    }

    #[test]
    fn binary_requests_are_read_from_their_header() {
        let header = br#"{"inputs":[{"name":"x","shape":[3,64],"datatype":"FP32","parameters":{"binary_data_size":768}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[0u8; 768]);
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, header.len().to_string().parse().unwrap());
        assert_eq!(rows_of(&h, &body), 3);
    }
}
