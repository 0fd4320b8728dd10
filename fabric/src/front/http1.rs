//! The public listener's own HTTP/1.1 loop, for the requests it mostly carries: inference.
//!
//! Why not hyper for these: hyper's server parses a head into a `Request`, hands the body
//! over a channel, runs the service as a separate future through its dispatcher and encodes
//! the response through a second buffer — per forwarded request about 2 µs of CPU, a quarter
//! of what the router spent beyond nginx. Here the connection's own task reads the head with
//! `httparse`, reads the body whole into the connection's buffer (an inference body is read
//! whole anyway, up to the endpoint's limit), forwards it and writes the answer's head and body
//! in one `writev`.
//!
//! Only what the loop can answer exactly as hyper would is taken: an HTTP/1.1 `POST` to an
//! inference path (as the door's `inference_target` reads one), framed by `Content-Length`
//! within the endpoint's body limit, with no `Expect`, `Transfer-Encoding` or upgrade. At the
//! first request that is anything else — HTTP/1.0, HTTP/2's preface, a join, a health check, a
//! head too large or unreadable — the connection is handed to hyper with what was read of it,
//! and hyper serves it from then on.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use gpucap_runtime::protocol::ModelPath;

use crate::gateway::KnownKey;
use crate::lines::{Lines, has_token, head_buffer, put_headers};
use crate::router::{Payload, RouterState, forward_read};

/// What a connection's buffer starts with: a whole request of a small model.
const READ_BUFFER: usize = 8 * 1024;
/// The largest head the loop reads; a larger one is hyper's to answer (or refuse).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines the loop reads; more are hyper's to answer.
const MAX_HEADERS: usize = 64;
/// How long a connection closed with its request's body unread drains what the client sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// How a connection's loop ended.
pub enum Ended<S> {
    /// The connection closed: by the client, after `Connection: close`, or for the stop.
    Closed,
    /// A request the loop leaves to hyper arrived: the connection, and what was read of it.
    HandOver(S, Bytes),
}

/// An inference request's head, as the loop reads it.
#[derive(Debug)]
struct Inference {
    model: ModelPath,
    /// The path and query.
    target: String,
    /// The headers, read in place.
    lines: Lines,
    /// The body's length.
    length: usize,
    /// Whether that is more than the endpoint takes: the body is not read.
    over_limit: bool,
    /// Whether the client asked to close the connection after the answer.
    close: bool,
}

/// What the buffer holds at its start.
#[derive(Debug)]
enum Head {
    /// An inference request's head, this many bytes long.
    Inference(Inference, usize),
    /// Part of a head.
    Partial,
    /// Anything else: hyper's to serve.
    Other,
}

/// Serves `stream`'s inference requests until it closes, `asked` is set while it is idle, or a
/// request comes that is hyper's to serve.
pub async fn serve<S>(
    mut stream: S,
    state: Arc<RouterState>,
    asked: Arc<AtomicBool>,
) -> io::Result<Ended<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(READ_BUFFER);
    let mut known = KnownKey::default();
    loop {
        if buffer.is_empty() && !wait_for_request(&mut stream, &mut buffer, &asked).await? {
            return Ok(Ended::Closed);
        }
        let max_body_bytes = state.settings.load().max_body_bytes;
        let (request, head_length) = loop {
            match read_head(&buffer, max_body_bytes) {
                Head::Inference(request, length) => break (request, length),
                Head::Partial if buffer.len() <= MAX_HEAD_BYTES => {
                    if read_more(&mut stream, &mut buffer).await? == 0 {
                        return Ok(Ended::Closed);
                    }
                }
                Head::Partial | Head::Other => {
                    return Ok(Ended::HandOver(stream, buffer.freeze()));
                }
            }
        };
        let head = buffer.split_to(head_length).freeze();
        // httparse takes only the bytes a header value may have (those `HeaderValue` takes):
        // this fails for no head the loop took, as the fuzz target `front_head` checks.
        let Ok(headers) = request.lines.into_headers(&head) else {
            return Ok(Ended::Closed);
        };
        if request.over_limit {
            let response = forward_read(
                state.clone(),
                request.model,
                request.target,
                headers,
                Payload::OverLimit,
                &mut known,
            )
            .await;
            write_response(&mut stream, response, true).await?;
            linger(stream).await;
            return Ok(Ended::Closed);
        }
        while buffer.len() < request.length {
            buffer.reserve(request.length - buffer.len());
            if read_more(&mut stream, &mut buffer).await? == 0 {
                return Ok(Ended::Closed);
            }
        }
        let body = buffer.split_to(request.length).freeze();
        let close = request.close;
        let response = forward_read(
            state.clone(),
            request.model,
            request.target,
            headers,
            Payload::Read(body),
            &mut known,
        )
        .await;
        write_response(&mut stream, response, close).await?;
        if close {
            stream.shutdown().await?;
            return Ok(Ended::Closed);
        }
    }
}

/// An inference request's head, as the loop takes it.
#[derive(Debug)]
pub struct InferenceHead {
    /// The head's length in bytes.
    pub length: usize,
    /// The path and query.
    pub target: String,
    /// The headers, as the loop keeps them.
    pub headers: HeaderMap,
    /// The body's declared length.
    pub body_length: usize,
}

/// The inference head at the start of `buffer`, read as the loop reads it, when the loop takes
/// it (`Ok(None)`: part of a head, or a request left to hyper). `Err` names a header the loop
/// took but could not keep, on which the loop would close the connection: never, as the fuzz
/// target `front_head` claims.
pub fn read_inference_head(
    buffer: &[u8],
    max_body_bytes: usize,
) -> Result<Option<InferenceHead>, HeaderName> {
    let Head::Inference(request, length) = read_head(buffer, max_body_bytes) else {
        return Ok(None);
    };
    let Some(head) = buffer.get(..length) else {
        return Ok(None);
    };
    let head = Bytes::copy_from_slice(head);
    Ok(Some(InferenceHead {
        length,
        headers: request.lines.into_headers(&head)?,
        target: request.target,
        body_length: request.length,
    }))
}

/// Closes a connection whose request's body was left unread, once its answer is written: the
/// write side is shut, then what the client still sends is read and dropped for a while, so
/// that the close does not reset the connection before the client has read the answer.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0; READ_BUFFER];
    let drain = async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Waits for the first bytes of a request: false when the connection closed first, or `asked`
/// was set (checked each time the connection's task wakes, so a stop closes it at once).
async fn wait_for_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    asked: &AtomicBool,
) -> io::Result<bool> {
    buffer.reserve(READ_BUFFER);
    std::future::poll_fn(|cx| {
        if asked.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(false));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buffer).map_ok(|n| n > 0)
    })
    .await
}

/// Reads what has arrived; 0 once the connection closed.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> io::Result<usize> {
    if buffer.len() == buffer.capacity() {
        buffer.reserve(READ_BUFFER);
    }
    stream.read_buf(buffer).await
}

/// Reads the head at the start of `buffer`.
fn read_head(buffer: &[u8], max_body_bytes: usize) -> Head {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(buffer, &mut headers) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Head::Partial,
        // Not a head the loop can read (or too many headers): hyper answers it.
        Err(_) => return Head::Other,
    };
    match inference(&request, buffer, max_body_bytes) {
        Some(inference) => Head::Inference(inference, length),
        None => Head::Other,
    }
}

/// The inference request `request` (read from `buffer`) is, when the loop takes it.
fn inference(
    request: &httparse::Request<'_, '_>,
    buffer: &[u8],
    max_body_bytes: usize,
) -> Option<Inference> {
    if request.method != Some("POST") || request.version != Some(1) {
        return None;
    }
    let target = request.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let model = super::inference_target(path)?;
    let mut lines = Lines::with_capacity(request.headers.len());
    let mut length = None;
    let mut close = false;
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH {
            // One length, digits only: anything else is hyper's to refuse.
            if length.is_some() {
                return None;
            }
            length = Some(decimal(line.value)?);
        } else if name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
        {
            return None;
        } else if name == header::CONNECTION {
            if has_token(line.value, "upgrade") {
                return None;
            }
            close |= has_token(line.value, "close");
        }
        lines.push(name, line.value, buffer);
    }
    // Neither a length nor chunks: a request without a body.
    let length = length.unwrap_or(0);
    Some(Inference {
        model,
        target: target.to_string(),
        lines,
        length,
        over_limit: length > max_body_bytes,
        close,
    })
}

/// A `Content-Length` value: ASCII digits only (no sign, no spaces), that fit a `usize`.
fn decimal(value: &[u8]) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Writes `response` whole: its head and body in one system call where the socket takes them.
async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: Response,
    close: bool,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(io::Error::other)?;
    let bodyless = bodyless(parts.status);
    let head = response_head(
        parts.status,
        &parts.headers,
        (!bodyless).then_some(body.len()),
        close,
    );
    let body = if bodyless { &[][..] } else { &body[..] };
    crate::upstream::write_all(stream, &head, body).await
}

/// Statuses whose answers have no body, nor a length.
fn bodyless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// A response's status line and headers, with its `length`, a `Date` unless it has one (a
/// replica's answer does), and `Connection: close` when the connection closes after it.
fn response_head(
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<usize>,
    close: bool,
) -> Vec<u8> {
    let mut head = head_buffer(64, headers);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    // Framing is the loop's to write.
    put_headers(&mut head, headers, |name| {
        name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
    });
    if !headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| head.extend_from_slice(date.now().as_bytes()));
        head.extend_from_slice(b"\r\n");
    }
    if let Some(length) = length {
        // Writing to a Vec cannot fail.
        let _ = write!(head, "content-length: {length}\r\n");
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The `Date` header's value, formatted once a second.
#[derive(Default)]
struct Date {
    second: u64,
    text: String,
}

impl Date {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

thread_local! {
    static DATE: std::cell::RefCell<Date> = std::cell::RefCell::new(Date::default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const LIMIT: usize = 1000;

    fn head(text: &str) -> Head {
        read_head(text.as_bytes(), LIMIT)
    }

    #[test]
    fn an_inference_head_is_read_with_its_model_target_length_and_headers() {
        let text = "POST /v2/models/digits/versions/2/infer?trace=1 HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer k\r\nContent-Length: 12\r\nConnection: keep-alive, Close\r\n\r\n{\"inputs\":[]}";
        let Head::Inference(request, length) = head(text) else {
            panic!("{:?}", head(text));
        };
        assert_eq!(length, text.find("\r\n\r\n").unwrap() + 4);
        assert_eq!(request.model.name, "digits");
        assert_eq!(request.model.version.as_deref(), Some("2"));
        assert_eq!(request.target, "/v2/models/digits/versions/2/infer?trace=1");
        assert_eq!(request.length, 12);
        assert!(request.close && !request.over_limit);
        let headers = read_inference_head(text.as_bytes(), LIMIT)
            .unwrap()
            .unwrap()
            .headers;
        assert_eq!(headers["authorization"], "Bearer k");
        assert_eq!(headers["connection"], "keep-alive, Close");
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn a_body_longer_than_the_limit_is_marked_and_no_length_is_an_empty_body() {
        let over = head("POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 1001\r\n\r\n");
        assert!(matches!(over, Head::Inference(ref r, _) if r.over_limit && r.length == 1001));
        let none = head("POST /v2/models/m/infer HTTP/1.1\r\n\r\n");
        assert!(matches!(none, Head::Inference(ref r, _) if r.length == 0 && !r.close));
    }

    #[test]
    fn part_of_a_head_waits_for_the_rest() {
        assert!(matches!(head("POST /v2/models/m/inf"), Head::Partial));
        assert!(matches!(
            head("POST /v2/models/m/infer HTTP/1.1\r\nhost: r\r\n"),
            Head::Partial
        ));
    }

    #[test]
    fn what_the_loop_cannot_answer_as_hyper_would_is_left_to_hyper() {
        for text in [
            // Other methods, paths and versions.
            "GET /v2/health/ready HTTP/1.1\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.0\r\ncontent-length: 0\r\n\r\n",
            "POST /v2/models/m HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST /v2/models/m%20n/infer HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "POST http://r/v2/models/m/infer HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // Framing the loop leaves alone.
            "POST /v2/models/m/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n",
            // A value no header may have.
            "POST /v2/models/m/infer HTTP/1.1\r\nx-a: b\x7fc\r\n\r\n",
            // Not HTTP.
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n",
        ] {
            assert!(matches!(head(text), Head::Other), "{text:?}");
        }
        let many = format!(
            "POST /v2/models/m/infer HTTP/1.1\r\n{}\r\n",
            "x-a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(head(&many), Head::Other));
    }

    #[test]
    fn an_answer_head_has_its_status_headers_length_and_date_and_says_when_it_closes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let text = String::from_utf8(response_head(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            Some(7),
            true,
        ))
        .unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 429 Too Many Requests");
        assert_eq!(lines[1], "content-type: application/json");
        assert!(
            httpdate::parse_http_date(lines[2].strip_prefix("date: ").unwrap()).is_ok(),
            "{text}"
        );
        assert_eq!(
            &lines[3..],
            ["content-length: 7", "connection: close", "", ""]
        );
        // A replica's answer keeps its own date; an answer without a body has no length.
        headers.insert(
            header::DATE,
            HeaderValue::from_static("Mon, 07 Dec 2026 16:00:00 GMT"),
        );
        let text = String::from_utf8(response_head(StatusCode::NO_CONTENT, &headers, None, false))
            .unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 204 No Content\r\ncontent-type: application/json\r\ndate: Mon, 07 Dec 2026 16:00:00 GMT\r\n\r\n"
        );
        assert!(bodyless(StatusCode::NO_CONTENT) && bodyless(StatusCode::CONTINUE));
        assert!(!bodyless(StatusCode::OK));
    }
}
