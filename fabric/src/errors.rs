//! Errors as one line for logs and messages.

/// `e` and each of its causes, joined by `: ` (a TLS failure inside a connect error inside a
/// request error reads as one sentence).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
