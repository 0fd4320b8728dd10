//! The router's side of a forwarded request: one HTTP/1.1 exchange with a replica over a
//! keep-alive connection from the serving thread's own pool.
//!
//! Why not hyper's client: it hands each request to a task that owns the connection, over a
//! channel, and the answer comes back over another; per forwarded request that was two task
//! switches, a pool checkout and a URI parsed from a string, and together 37 % of the router's
//! user CPU (the profile in the issue-30 notes) — most of what made it dearer than nginx. Here
//! the request's own task writes the request and reads the answer on a connection it holds for
//! the exchange, and `httparse` reads the answer's head. The router only ever sends `POST` with
//! a whole body and reads a whole answer, so little of a general client is needed: answers
//! framed by `Content-Length`, chunked, or by the connection's end, and interim 1xx answers
//! skipped.
//!
//! A pooled connection the replica closed while it sat idle (the replica restarted, or timed it
//! out) fails before any answer arrives: the exchange is then tried again on a new connection
//! and the replica is not blamed. Connections idle for longer than [`IDLE_FOR`] are closed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{IoSlice, Write as _};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lines::{Lines, has_token, head_buffer, put_headers};

/// How long an idle connection is kept for reuse.
pub const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per replica by one thread; more than the concurrency a replica takes.
const IDLE_PER_REPLICA: usize = 512;
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer head read.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header lines an answer may have.
const MAX_HEADERS: usize = 64;
/// What a connection's read buffer starts with: a whole answer of a small model.
const READ_BUFFER: usize = 8 * 1024;
/// The most a body's declared length reserves ahead of reading: the rest grows as bytes arrive,
/// so a length no replica could send costs nothing before it fails.
const RESERVE_AHEAD: usize = 1024 * 1024;

/// A replica's answer, whole.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers, less those the request's `skip` names.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// A connection to a replica, and what has been read from it but not used.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
    idle_since: Instant,
}

/// One thread's idle connections, by replica address.
#[derive(Default)]
struct Pool {
    idle: HashMap<String, Vec<Connection>>,
    swept: Option<Instant>,
}

thread_local! {
    /// Each serving thread's pool: a request goes upstream on a connection of the thread that
    /// serves it, so that answering it wakes no other thread.
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

impl Pool {
    /// The most recently used idle connection to `address` still fresh enough to reuse.
    fn take(&mut self, address: &str, now: Instant) -> Option<Connection> {
        self.sweep(now);
        let idle = self.idle.get_mut(address)?;
        while let Some(connection) = idle.pop() {
            if now.duration_since(connection.idle_since) < IDLE_FOR {
                return Some(connection);
            }
        }
        None
    }

    fn put(&mut self, address: &str, connection: Connection) {
        match self.idle.get_mut(address) {
            Some(idle) if idle.len() < IDLE_PER_REPLICA => idle.push(connection),
            Some(_) => {}
            None => {
                self.idle.insert(address.to_string(), vec![connection]);
            }
        }
    }

    /// Closes every idle connection to `address`: one was found closed by the replica, and
    /// those that idled beside it are likely closed too.
    fn forget(&mut self, address: &str) {
        self.idle.remove(address);
    }

    /// Now and then, closes connections idle too long, those to replicas gone included.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < IDLE_FOR)
        {
            return;
        }
        self.swept = Some(now);
        self.idle.retain(|_, idle| {
            idle.retain(|c| now.duration_since(c.idle_since) < IDLE_FOR);
            !idle.is_empty()
        });
    }
}

/// How an exchange failed.
enum Failure {
    /// Nothing of an answer arrived on a reused connection: it may have been closed while idle.
    Unanswered(String),
    /// The replica refused, broke off or sent something that is not an HTTP answer.
    Broken(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Unanswered(m) | Failure::Broken(m) => m,
        }
    }
}

/// What an exchange sends: `POST path` with `headers`, less those `skip` names, and `body`.
pub struct Post<'a> {
    /// The path and query.
    pub path: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// Headers neither sent nor passed back: hop-by-hop ones, secrets.
    pub skip: fn(&HeaderName) -> bool,
    /// The body.
    pub body: &'a Bytes,
}

/// Sends `post` to the replica at `address` and reads its whole answer, less the headers
/// `post.skip` names. `now` is when the exchange starts: the pool's clock, read once by the
/// caller (a connection reused counts as idle from then: early by the exchange, well within
/// [`IDLE_FOR`]).
pub async fn post(address: &str, post: Post<'_>, now: Instant) -> Result<Answer, String> {
    let head = request_head(address, &post);
    let (skip, body) = (post.skip, post.body);
    let pooled = POOL.with_borrow_mut(|pool| pool.take(address, now));
    if let Some(connection) = pooled {
        match exchange(connection, &head, body, skip).await {
            Ok(answer) => return Ok(answer.keep(address, now)),
            Err(Failure::Unanswered(_)) => POOL.with_borrow_mut(|pool| pool.forget(address)),
            Err(failure) => return Err(failure.message()),
        }
    }
    let connection = connect(address).await?;
    match exchange(connection, &head, body, skip).await {
        Ok(answer) => Ok(answer.keep(address, now)),
        Err(failure) => Err(failure.message()),
    }
}

/// An answer, and its connection when it may be used again.
struct Exchanged {
    answer: Answer,
    reusable: Option<Connection>,
}

impl Exchanged {
    /// The answer; its connection goes back to the pool, idle since `now`.
    fn keep(self, address: &str, now: Instant) -> Answer {
        if let Some(mut connection) = self.reusable {
            connection.idle_since = now;
            POOL.with_borrow_mut(|pool| pool.put(address, connection));
        }
        self.answer
    }
}

async fn connect(address: &str) -> Result<Connection, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("cannot connect to {address}: {e}")),
        Err(_) => {
            return Err(format!(
                "cannot connect to {address}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    // Requests are written whole: waiting to coalesce them would only add latency.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY on the connection to {address}: {e}"))?;
    Ok(Connection {
        stream,
        buffer: BytesMut::with_capacity(READ_BUFFER),
        idle_since: Instant::now(),
    })
}

/// The request line and headers.
fn request_head(address: &str, post: &Post<'_>) -> Vec<u8> {
    let mut head = head_buffer(32 + address.len() + post.path.len(), post.headers);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(post.path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(address.as_bytes());
    head.extend_from_slice(b"\r\n");
    put_headers(&mut head, post.headers, post.skip);
    // Writing to a Vec cannot fail.
    let _ = write!(head, "content-length: {}\r\n\r\n", post.body.len());
    head
}

async fn exchange(
    mut c: Connection,
    head: &[u8],
    body: &[u8],
    skip: fn(&HeaderName) -> bool,
) -> Result<Exchanged, Failure> {
    write_all(&mut c.stream, head, body)
        .await
        .map_err(|e| Failure::Unanswered(format!("the request could not be sent: {e}")))?;
    c.buffer.clear();
    let (parsed, headers) = read_head(&mut c, skip).await?;
    let body = match parsed.framing {
        Framing::Empty => Bytes::new(),
        Framing::Length(n) => {
            fill(&mut c, n).await?;
            c.buffer.split_to(n).freeze()
        }
        Framing::Chunked => read_chunked(&mut c).await?,
        Framing::UntilClose => {
            while read_more(&mut c).await? > 0 {}
            c.buffer.split().freeze()
        }
    };
    // A connection with bytes beyond the answer is out of step with the replica: not reused.
    let reusable = (parsed.keep_alive && c.buffer.is_empty()).then_some(c);
    Ok(Exchanged {
        answer: Answer {
            status: parsed.status,
            headers,
            body,
        },
        reusable,
    })
}

/// Writes the head and the body, in one system call where the socket takes them.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    stream: &mut W,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
    let mut slices = [IoSlice::new(head), IoSlice::new(body)];
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = stream.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// How an answer's body is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// An answer's head.
struct Head {
    status: StatusCode,
    /// The headers not skipped, read in place.
    headers: Lines,
    framing: Framing,
    keep_alive: bool,
}

/// Reads until the buffer holds a whole final (non-1xx) answer head, and consumes it: the
/// head, and its headers (their values shared with the bytes they were read into).
async fn read_head(
    c: &mut Connection,
    skip: fn(&HeaderName) -> bool,
) -> Result<(Head, HeaderMap), Failure> {
    let mut answered = false;
    loop {
        if !c.buffer.is_empty() {
            answered = true;
            if let Some((head, length)) = parse_head(&c.buffer, skip)? {
                let Some(mut head) = head else {
                    // An interim answer (100 Continue and the like): the real one follows.
                    c.buffer.advance(length);
                    continue;
                };
                let bytes = c.buffer.split_to(length).freeze();
                let headers = std::mem::take(&mut head.headers)
                    .into_headers(&bytes)
                    .map_err(|name| {
                        Failure::Broken(format!("the replica sent a bad value for header {name}"))
                    })?;
                return Ok((head, headers));
            }
            if c.buffer.len() > MAX_HEAD_BYTES {
                return Err(Failure::Broken(format!(
                    "the replica's answer head exceeds {MAX_HEAD_BYTES} bytes"
                )));
            }
        }
        let why = match c.stream.read_buf(&mut c.buffer).await {
            Ok(0) => "connection closed".to_string(),
            Ok(_) => continue,
            Err(e) => e.to_string(),
        };
        return Err(if answered {
            broke_off(&why)
        } else {
            Failure::Unanswered(format!(
                "the replica closed the connection without answering: {why}"
            ))
        });
    }
}

fn broke_off(why: &str) -> Failure {
    Failure::Broken(format!("the answer broke off: {why}"))
}

/// The head at the start of `buffer` and its length, once whole; `None` as the head for an
/// interim 1xx answer. Headers `skip` names are read (framing) but not kept.
fn parse_head(
    buffer: &[u8],
    skip: fn(&HeaderName) -> bool,
) -> Result<Option<(Option<Head>, usize)>, Failure> {
    let mut lines = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut answer,
        buffer,
        &mut lines,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Failure::Broken(format!(
                "the replica's answer is not HTTP/1.1: {e}"
            )));
        }
    };
    let code = answer.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Failure::Broken(format!("the replica answered with status {code}")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Failure::Broken(
            "the replica switched protocols on a forwarded request".into(),
        ));
    }
    if status.is_informational() {
        return Ok(Some((None, length)));
    }
    let mut headers = Lines::with_capacity(answer.headers.len());
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = answer.version == Some(1);
    for line in answer.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| {
            Failure::Broken(format!(
                "the replica sent a bad header name {:?}",
                line.name
            ))
        })?;
        match name.as_str() {
            "content-length" => {
                let n = std::str::from_utf8(line.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        Failure::Broken("the replica sent a bad Content-Length".to_string())
                    })?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(Failure::Broken(
                        "the replica sent two different Content-Lengths".into(),
                    ));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => chunked = has_token(line.value, "chunked"),
            "connection" if has_token(line.value, "close") => keep_alive = false,
            "connection" if has_token(line.value, "keep-alive") => keep_alive = true,
            _ => {}
        }
        if !skip(&name) {
            headers.push(name, line.value, buffer);
        }
    }
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some((
        Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }),
        length,
    )))
}

/// Reads more into the buffer; 0 at the connection's end.
async fn read_more(c: &mut Connection) -> Result<usize, Failure> {
    c.stream
        .read_buf(&mut c.buffer)
        .await
        .map_err(|e| broke_off(&e.to_string()))
}

/// Reads until the buffer holds at least `n` bytes.
async fn fill(c: &mut Connection, n: usize) -> Result<(), Failure> {
    if c.buffer.len() < n {
        c.buffer.reserve((n - c.buffer.len()).min(RESERVE_AHEAD));
    }
    while c.buffer.len() < n {
        if read_more(c).await? == 0 {
            return Err(broke_off("connection closed"));
        }
    }
    Ok(())
}

/// Reads a chunked body whole, and the trailers after it.
async fn read_chunked(c: &mut Connection) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        let line = read_line(c).await?;
        let size = std::str::from_utf8(&line)
            .ok()
            .map(|l| l.split(';').next().unwrap_or_default().trim())
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| Failure::Broken("the replica sent a bad chunk size".to_string()))?;
        if size == 0 {
            // Trailers, up to the empty line that ends them; none is forwarded.
            while !read_line(c).await?.is_empty() {}
            return Ok(body.freeze());
        }
        let with_end = size.checked_add(2).ok_or_else(|| {
            Failure::Broken("the replica sent a chunk size no body can have".to_string())
        })?;
        fill(c, with_end).await?;
        body.extend_from_slice(&c.buffer[..size]);
        if &c.buffer[size..with_end] != b"\r\n" {
            return Err(Failure::Broken(
                "the replica sent a chunk without its line end".into(),
            ));
        }
        c.buffer.advance(with_end);
    }
}

/// One line (without its CRLF) from the buffer, reading more as needed.
async fn read_line(c: &mut Connection) -> Result<Bytes, Failure> {
    loop {
        if let Some(end) = c.buffer.windows(2).position(|w| w == b"\r\n") {
            let line = c.buffer.split_to(end).freeze();
            c.buffer.advance(2);
            return Ok(line);
        }
        if c.buffer.len() > MAX_HEAD_BYTES {
            return Err(Failure::Broken(
                "the replica sent a chunk line that does not end".into(),
            ));
        }
        if read_more(c).await? == 0 {
            return Err(broke_off("connection closed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use tokio::net::TcpListener;

    /// A server that reads one request per accepted connection and writes `answers` in turn,
    /// each on the same connection, then closes it.
    async fn replica(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                stream.write_all(answer).await.unwrap();
            }
        });
        address
    }

    fn nothing(_: &HeaderName) -> bool {
        false
    }

    /// A bodiless request to `address`.
    async fn get(address: &str) -> Result<Answer, String> {
        let (headers, body) = (HeaderMap::new(), Bytes::new());
        let request = Post {
            path: "/v2",
            headers: &headers,
            skip: nothing,
            body: &body,
        };
        post(address, request, Instant::now()).await
    }

    #[tokio::test]
    async fn answers_framed_by_length_by_chunks_and_after_an_interim_answer_are_read_whole() {
        let address = replica(vec![
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello"[..],
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n"[..],
        ])
        .await;
        let first = get(&address).await.unwrap();
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.body, "hello");
        assert_eq!(first.headers["x-a"], "1");
        // The second answer comes on the same connection: the replica accepts only one.
        let second = get(&address).await.unwrap();
        assert_eq!(second.status, StatusCode::BAD_REQUEST);
        assert_eq!(second.body, "abcde");
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_while_idle_is_replaced_without_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for close_after in [true, false] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await.unwrap();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                if close_after {
                    drop(stream);
                } else {
                    let _ = stream.read(&mut buf).await;
                }
            }
        });
        get(&address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = get(&address).await.unwrap();
        assert_eq!(again.body, "ok");
    }

    #[tokio::test]
    async fn an_answer_cut_short_or_garbled_is_an_error_naming_what_went_wrong() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
                "broke off",
            ),
            (b"SMTP ready\r\n\r\n", "not HTTP/1.1"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
                "chunk size no body can have",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\nab",
                "broke off",
            ),
        ] {
            let address = replica(vec![answer]).await;
            let e = get(&address).await.unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = get(&address).await.unwrap_err();
        assert!(e.contains(&address), "{e}");
    }

    #[test]
    fn the_request_head_carries_the_headers_not_skipped_and_the_length() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("authorization", HeaderValue::from_static("Bearer gpk_x"));
        let body = Bytes::from_static(b"{\"inputs\":[]}");
        let request = Post {
            path: "/v2/models/m/infer",
            headers: &headers,
            skip: |n| n == axum::http::header::AUTHORIZATION,
            body: &body,
        };
        assert_eq!(
            String::from_utf8(request_head("127.0.0.1:9", &request)).unwrap(),
            "POST /v2/models/m/infer HTTP/1.1\r\nhost: 127.0.0.1:9\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n"
        );
    }
}
