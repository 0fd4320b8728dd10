//! How many rows an inference request carries: the first dimension of its first input's shape,
//! read from the JSON (or, with the binary tensor extension, from the JSON header alone). Only
//! the way to that number is read, so the tensor data after it is not parsed (a full parse of a
//! small request's JSON was a tenth of the router's CPU per request): the layout clients send is
//! read directly, anything else by `sonic-rs`, which skips what lies before the number and stops
//! there. The replica still checks the request in full; the fuzz target `inference_rows` holds
//! both ways to a full parse's count.

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
    if let Some(rows) = common_layout_rows(json) {
        return rows;
    }
    sonic_rs::get_from_slice(json, &pointer!["inputs", 0, "shape", 0])
        .ok()
        // The number's digits, read as they are: the crate's own conversion parses the text
        // again as a JSON document.
        .and_then(|first| first.as_raw_str().parse::<i64>().ok())
        .map_or(1, |n| n.max(1) as u64)
}

/// The count read straight from the layout clients send (tritonclient, the protocol's
/// examples): `{"inputs":[{`, then keys whose values are plain strings (`name`, `datatype`),
/// then `"shape":[` and a positive whole number. Anything else, escapes and non-ASCII text
/// included, is `None`, and sonic-rs reads it: setting up its parser cost more than the rest of
/// the gateway's checks together.
fn common_layout_rows(json: &[u8]) -> Option<u64> {
    let mut scan = Scan(json);
    scan.token(b'{')?;
    if scan.string()? != b"inputs" {
        return None;
    }
    scan.token(b':')?;
    scan.token(b'[')?;
    scan.token(b'{')?;
    loop {
        let key = scan.string()?;
        scan.token(b':')?;
        if key == b"shape" {
            scan.token(b'[')?;
            return scan.count();
        }
        scan.string()?;
        scan.token(b',')?;
    }
}

/// What is left of a JSON text to read.
struct Scan<'a>(&'a [u8]);

impl<'a> Scan<'a> {
    /// Skips JSON's whitespace (and only that: not every ASCII space is JSON's).
    fn skip_space(&mut self) {
        while let [b' ' | b'\t' | b'\n' | b'\r', rest @ ..] = self.0 {
            self.0 = rest;
        }
    }

    /// The byte `byte`, after any whitespace.
    fn token(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        self.0 = self.0.strip_prefix(&[byte])?;
        Some(())
    }

    /// A string of printable ASCII without escapes, after any whitespace: its content.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.token(b'"')?;
        let mut parts = self.0.splitn(2, |&b| b == b'"');
        let (content, rest) = (parts.next()?, parts.next()?);
        if !content
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\')
        {
            return None;
        }
        self.0 = rest;
        Some(content)
    }

    /// A positive whole number of at most 18 digits, without leading zeros, that ends where a
    /// JSON array's element ends.
    fn count(&mut self) -> Option<u64> {
        self.skip_space();
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (number, rest) = self.0.split_at(digits);
        if !(1..=18).contains(&digits) || number.starts_with(b"0") {
            return None;
        }
        let mut after = Scan(rest);
        after.skip_space();
        if !matches!(after.0.first(), Some(b',' | b']')) {
            return None;
        }
        std::str::from_utf8(number).ok()?.parse().ok()
    }
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
    fn the_common_layout_is_read_directly_and_anything_else_is_left_to_the_parser() {
        let common = br#" { "inputs" : [ { "name" : "x" , "datatype" : "FP32", "shape" : [ 12 , 64 ] , "data" : [1] } ] }"#;
        assert_eq!(common_layout_rows(common), Some(12));
        for other in [
            &br#"{"inputs":[{"name":"a\"b","shape":[3]}]}"#[..],
            // Not JSON (the name's string runs on past `"shape"`), so not 7.
            br#"{"inputs":[{"name":"x\","shape":[7]}]}"#,
            br#"{"id":"1","inputs":[{"shape":[3]}]}"#,
            br#"{"inputs":[{"parameters":{"shape":[5]},"shape":[3]}]}"#,
            br#"{"inputs":[{"shape":[03]}]}"#,
            br#"{"inputs":[{"shape":[0]}]}"#,
            br#"{"inputs":[{"shape":[-3]}]}"#,
            br#"{"inputs":[{"shape":[3.5]}]}"#,
            br#"{"inputs":[{"shape":[3e2]}]}"#,
            br#"{"inputs":[{"shape":[3"#,
            br#"{"inputs":[{"shape":[1234567890123456789]}]}"#,
            "{\"inputs\":[{\"name\":\"é\",\"shape\":[3]}]}".as_bytes(),
            b"{\x0c\"inputs\":[{\"shape\":[3]}]}",
            br#"{"inputs":[{"name":"x"}]}"#,
        ] {
            assert_eq!(
                common_layout_rows(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // Left to the parser, the same counts as before.
        let h = HeaderMap::new();
        assert_eq!(
            rows_of(&h, br#"{"inputs":[{"name":"a\"b","shape":[3]}]}"#),
            3
        );
        assert_eq!(rows_of(&h, br#"{"id":"1","inputs":[{"shape":[3]}]}"#), 3);
        assert_eq!(rows_of(&h, br#"{"inputs":[{"shape":[3.5]}]}"#), 1);
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
