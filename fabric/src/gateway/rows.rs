//! How many rows an inference request carries: the first dimension of its first input's shape,
//! read from the JSON (or, with the binary tensor extension, from the JSON header alone). Tensor
//! data is skipped, not decoded; the replica still checks the request in full.

use axum::http::HeaderMap;
use serde::Deserialize;

/// The header of the binary tensor extension: the JSON part's length.
const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    shape: Vec<i64>,
}

/// Rows in the request; 1 when the body says nothing usable (the replica will refuse it).
pub fn rows_of(headers: &HeaderMap, body: &[u8]) -> u64 {
    let json = headers
        .get(HEADER_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|n| body.get(..n))
        .unwrap_or(body);
    serde_json::from_slice::<Request>(json)
        .ok()
        .and_then(|r| r.inputs.into_iter().next())
        .map_or(1, |i| match i.shape.first() {
            None => 1,
            Some(&n) => n.max(1) as u64,
        })
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
