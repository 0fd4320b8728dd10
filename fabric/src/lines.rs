//! HTTP/1.1 header lines, as the router reads and writes them itself (its own loop on the
//! public listener, its exchanges with replicas).
//!
//! Read in place: a head's values are not copied out of the buffer it was read into, but shared
//! with it once the head is split off ([`Lines::into_headers`]). Why: copying each value into a
//! `HeaderMap` cost an allocation per header, twice per forwarded request (the client's head
//! and the replica's answer).

use std::ops::Range;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

/// Each header's name, and where its value lies in the buffer the head was read from.
#[derive(Debug, Default)]
pub struct Lines(Vec<(HeaderName, Range<usize>)>);

impl Lines {
    /// Room for `count` lines.
    pub fn with_capacity(count: usize) -> Lines {
        Lines(Vec::with_capacity(count))
    }

    /// Notes `name: value`, where `value` is a slice of `buffer` (as httparse's are).
    pub fn push(&mut self, name: HeaderName, value: &[u8], buffer: &[u8]) {
        let start = (value.as_ptr() as usize).wrapping_sub(buffer.as_ptr() as usize);
        self.0.push((name, start..start.wrapping_add(value.len())));
    }

    /// The headers, their values shared with `head` (the buffer's bytes, split off it); the
    /// name of the first whose value no header may have, if one does.
    pub fn into_headers(self, head: &Bytes) -> Result<HeaderMap, HeaderName> {
        let mut headers = HeaderMap::with_capacity(self.0.len());
        for (name, value) in self.0 {
            match head
                .get(value.clone())
                .and_then(|_| HeaderValue::from_maybe_shared(head.slice(value)).ok())
            {
                Some(value) => {
                    headers.append(name, value);
                }
                None => return Err(name),
            }
        }
        Ok(headers)
    }
}

/// A buffer for a head: room for a start line of about `start` bytes, `headers`, and a few
/// lines the writer adds (length, date, close).
pub fn head_buffer(start: usize, headers: &HeaderMap) -> Vec<u8> {
    let lines: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    Vec::with_capacity(start + lines + 128)
}

/// Writes `headers`, less those `skip` names, one `name: value` line each.
pub fn put_headers(head: &mut Vec<u8>, headers: &HeaderMap, skip: impl Fn(&HeaderName) -> bool) {
    for (name, value) in headers.iter().filter(|(name, _)| !skip(name)) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
}

/// Whether a comma-separated header value (`Connection`, `Transfer-Encoding`) lists `token`,
/// in any case.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_where_they_were_read_and_bad_ones_named() {
        let head = Bytes::from_static(b"x-a: one\r\nx-b: two\r\n");
        let mut lines = Lines::with_capacity(2);
        lines.push(HeaderName::from_static("x-a"), &head[5..8], &head);
        lines.push(HeaderName::from_static("x-b"), &head[15..18], &head);
        let headers = lines.into_headers(&head).unwrap();
        assert_eq!(headers["x-a"], "one");
        assert_eq!(headers["x-b"], "two");
        // A value with a line break in it, or beyond the head, is refused by name.
        let mut bad = Lines::default();
        bad.push(HeaderName::from_static("x-c"), &head[5..12], &head);
        assert_eq!(bad.into_headers(&head).unwrap_err(), "x-c");
        let other = Bytes::from_static(b"elsewhere");
        let mut beyond = Lines::default();
        beyond.push(HeaderName::from_static("x-d"), &other, &head);
        assert_eq!(beyond.into_headers(&head).unwrap_err(), "x-d");
    }
}
