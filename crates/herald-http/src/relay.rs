//! The pass-through fast lane: plain HTTP/1.1 requests that herald forwards unchanged are
//! relayed between the client's socket and an upstream connection by the client connection's
//! own task, their heads rewritten into one buffer, their bodies copied as they are.
//!
//! Through hyper, a proxied request is parsed into a header map and encoded again on both sides,
//! with a dispatcher, a body channel and their allocations on each: that was most of herald's
//! user-space time per request, twice nginx's (docs/benchmarks.md). Here heads are parsed by
//! httparse (the parser hyper itself uses) and written once; a request allocates nothing (the
//! connection's buffers are reused) and switches no task.
//!
//! Only what needs nothing more is taken: HTTP/1.1 with an origin-form target, one Host, a body
//! framed by at most one Content-Length, no Upgrade, Expect or Transfer-Encoding, and a path that
//! no route and not herald's own API claims. Anything else (streams, cache answers, the webhook
//! API, chunked uploads, WebSocket, HTTP/1.0, HTTP/2, malformed or oversized heads) goes to hyper
//! with the bytes read so far put back in front, and hyper serves the connection from then on.
//!
//! Upstream answers are framed as RFC 9112 section 6.3 says: no body after HEAD, 1xx, 204 and
//! 304; chunked (copied verbatim, trailers included, its framing followed with httparse's
//! chunk-size parser); by Content-Length; or until the upstream closes (then the client's
//! connection closes after it too).

use std::future::Future;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use httparse::{Header, Status, EMPTY_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::app::App;
use crate::direct::{self, DirectAnswer};
use crate::server::Limits;

/// Header fields a head may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The largest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 64 << 10;
/// Idle upstream connections kept for the next client connection.
const IDLE_MAX: usize = 64;
/// An idle upstream connection older than this is dropped rather than reused (the upstream has
/// likely closed it: most servers keep idle connections 5 to 75 seconds).
const IDLE_FOR: Duration = Duration::from_secs(4);

/// A client connection idle this long between requests gives its upstream connection back to
/// the idle list: idle keep-alive clients do not each hold one (nor its file descriptor).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Upstream connections whose client connection ended, with when they went idle.
static IDLE: Mutex<Vec<(TcpStream, Instant)>> = Mutex::new(Vec::new());

/// Where relayed requests go: a plain-http upstream.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port`, to connect to.
    addr: String,
    /// The Host the upstream gets: its URL's authority.
    host: String,
    /// The upstream URL's path, put in front of every request target ("" for none).
    base_path: String,
    /// `upstream.timeout`: the longest wait without progress.
    timeout: Duration,
}

impl Target {
    /// For an `http://host[:port][/base]` upstream; `None` for https, which hyper's client serves.
    pub(crate) fn new(scheme: &str, host: &str, base_path: &str, timeout: Duration) -> Option<Self> {
        let path_ok = base_path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        (scheme == "http" && path_ok && !host.is_empty()).then(|| Target {
            addr: match host.rsplit_once(':') {
                Some((_, port)) if port.parse::<u16>().is_ok() => host.to_string(),
                _ => format!("{host}:80"),
            },
            host: host.to_string(),
            base_path: base_path.to_string(),
            timeout,
        })
    }
}

/// How a connection left the fast lane.
pub(crate) enum Outcome {
    /// It is finished.
    Done,
    /// It asked for an SSE stream, answered directly (see [`direct`]).
    Stream(TcpStream, DirectAnswer),
    /// From here on it is hyper's, starting with these bytes.
    Hyper(TcpStream, Vec<u8>),
}

/// Serves a plain client connection until it ends or needs more than the fast lane does.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Outcome {
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut conn = Conn {
        client,
        peer: peer.ip(),
        buf: Vec::with_capacity(1024),
        out: Vec::new(),
        ubuf: Vec::new(),
        upstream: None,
        idle: Deadline::new(limits.header_timeout),
        keep_alive: Deadline::new(limits.idle_timeout),
        wait: None,
        park: None,
    };
    let outcome = loop {
        let len = match conn.read_head(limits.max_header_size, cancelled.as_mut()).await {
            Head::Complete(len) => len,
            Head::Oversized => break Outcome::Hyper(conn.client, conn.buf),
            Head::Gone => break Outcome::Done,
        };
        let target = app.proxy.relay.as_ref();
        match plan(&conn.buf[..len], |path| app.claims(path), target, conn.peer, &mut conn.out) {
            Plan::Relay(req) => {
                let target = target.expect("planned only with a target");
                if !conn.relay(req, target, &app.proxy.requests, shutdown.is_cancelled()).await {
                    break Outcome::Done;
                }
                conn.trim();
            }
            Plan::Claimed => match direct::parse(&conn.buf).and_then(|req| app.clone().direct_stream(req)) {
                Some(answer) => break Outcome::Stream(conn.client, answer),
                None => break Outcome::Hyper(conn.client, conn.buf),
            },
            Plan::Hyper => break Outcome::Hyper(conn.client, conn.buf),
        }
    };
    if let Some(up) = conn.upstream.take() {
        release(up);
    }
    outcome
}

/// One client connection in the fast lane.
struct Conn {
    client: TcpStream,
    peer: IpAddr,
    /// Bytes read from the client: the current request's head first.
    buf: Vec<u8>,
    /// The head (and what fits of the body) about to be written: the request's to the upstream,
    /// then the response's to the client.
    out: Vec<u8>,
    /// Bytes read from the upstream.
    ubuf: Vec<u8>,
    /// The upstream connection of the last request, kept for the next.
    upstream: Option<TcpStream>,
    /// `server.header_timeout`: for a request's head, and for the client to take the next piece
    /// of a response.
    idle: Deadline,
    /// `server.idle_timeout`: between requests, with nothing in flight.
    keep_alive: Deadline,
    /// `upstream.timeout`, made at the first relayed request.
    wait: Option<Deadline>,
    /// [`PARK_AFTER`], made when an upstream connection is first kept.
    park: Option<Deadline>,
}

enum Head {
    /// The head is the first this many bytes of `buf`.
    Complete(usize),
    /// No end of head within `server.max_header_size`: hyper answers 431.
    Oversized,
    /// The client left, sent nothing in time, or herald is shutting down while it idles.
    Gone,
}

/// What a request needs.
#[derive(Debug, PartialEq)]
enum Plan {
    /// Relayed: its upstream head is in `out`.
    Relay(Request),
    /// A route or herald's own API claims its path.
    Claimed,
    /// Something only hyper handles.
    Hyper,
}

/// A relayed request.
#[derive(Debug, PartialEq)]
struct Request {
    /// The head's length in `buf`.
    head: usize,
    /// Its body's length (Content-Length).
    body: u64,
    /// A HEAD request: the answer has no body whatever its headers say.
    head_method: bool,
    /// Safe to send again when the upstream closed a kept connection before answering.
    idempotent: bool,
    /// The client asked to close the connection after this answer.
    close: bool,
}

/// How an upstream answer's body is framed.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What an upstream answer head is.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// Interim (1xx), this long: dropped.
    Interim(usize),
    /// The answer, its client head written into `out`.
    Final(Answer),
}

/// A parsed upstream answer.
#[derive(Debug, PartialEq)]
struct Answer {
    /// The head's length in `ubuf`.
    head: usize,
    status: u16,
    framing: Framing,
    /// The upstream connection can carry another request afterwards.
    reusable: bool,
    /// The client's connection closes after this answer.
    close: bool,
}

/// Why an exchange with the upstream gave no answer.
#[derive(Debug)]
enum Failure {
    Unreachable,
    TimedOut,
    Invalid,
    /// The client left while its request body was being passed on.
    ClientGone,
}

/// A connection idling between requests keeps at most this much buffer capacity each.
const IDLE_BUFFER: usize = 4096;

impl Conn {
    /// Gives back what a large request or answer made the buffers grow to.
    fn trim(&mut self) {
        for buf in [&mut self.buf, &mut self.out, &mut self.ubuf] {
            if buf.capacity() > 2 * IDLE_BUFFER {
                buf.shrink_to(IDLE_BUFFER);
            }
        }
    }

    /// Reads until `buf` holds a whole request head (pipelined requests may already be there).
    async fn read_head(&mut self, max: usize, mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>) -> Head {
        // One clock read for the waits that start now; the header timer is armed only when a
        // head has begun and is not whole (a request that arrives in one read needs none).
        let now = Instant::now();
        self.keep_alive.restart_at(now);
        if let Some(park) = &mut self.park {
            park.restart_at(now);
        }
        let (mut scanned, mut head_begun) = (0, false);
        loop {
            if let Some(end) = head_end(&self.buf, &mut scanned) {
                return Head::Complete(end);
            }
            if self.buf.len() >= max {
                return Head::Oversized;
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(self.buf.capacity().max(1024));
            }
            let idle = self.buf.is_empty();
            if !idle && !head_begun {
                // A head has begun: it has `header_timeout` to arrive whole.
                self.idle.restart();
                head_begun = true;
            }
            tokio::select! {
                biased;
                read = self.client.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return Head::Gone,
                    Ok(_) => {}
                },
                () = &mut cancelled, if idle => return Head::Gone,
                // Slowloris.
                () = self.idle.expired(), if !idle => return Head::Gone,
                // A keep-alive connection with nothing in flight too long.
                () = self.keep_alive.expired(), if idle => return Head::Gone,
                () = expired(self.park.as_mut()), if self.upstream.is_some() => {
                    release(self.upstream.take().expect("checked"));
                }
            }
        }
    }

    /// Relays the request planned into `out` and its answer. False when the connection is to
    /// close (the client asked, herald is shutting down, or either side failed).
    async fn relay(
        &mut self,
        req: Request,
        target: &Target,
        requests: &[prometheus::IntCounter; 5],
        closing: bool,
    ) -> bool {
        // What the client already sent of the body goes with the head in one write.
        let here = (self.buf.len() - req.head).min(usize::try_from(req.body).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&self.buf[req.head..req.head + here]);
        self.buf.drain(..req.head + here);
        let rest = req.body - here as u64;

        let exchange = self.exchange(&req, rest, target, closing).await;
        let (up, answer) = match exchange {
            Ok(ok) => ok,
            Err(failure) => {
                let (status, msg) = match failure {
                    Failure::ClientGone => return false,
                    Failure::TimedOut => (504, "upstream timed out"),
                    Failure::Unreachable => (502, "upstream unreachable"),
                    Failure::Invalid => (502, "invalid upstream answer"),
                };
                tracing::debug!(?failure, "pass-through to the upstream failed");
                requests[4].inc();
                // Unless the whole request was read, the connection cannot carry another.
                let close = closing || req.close || rest > 0;
                error_head(&mut self.out, status, msg, close);
                let written = self.idle.within(self.client.write_all(&self.out)).await;
                return !close && matches!(written, Some(Ok(())));
            }
        };
        requests[usize::from(answer.status / 100).clamp(1, 5) - 1].inc();
        match self.copy_body(up, &answer).await {
            Some(up) if answer.reusable => {
                self.upstream = Some(up);
                self.park.get_or_insert_with(|| Deadline::new(PARK_AFTER));
            }
            Some(_) => {}
            None => return false,
        }
        !answer.close
    }

    /// Sends the request (head in `out`, then `rest` more body bytes from the client) and reads
    /// the answer's head into `ubuf`, its client head into `out`. A kept connection the upstream
    /// closed before answering is replaced once, when the request can be sent again.
    async fn exchange(
        &mut self,
        req: &Request,
        rest: u64,
        target: &Target,
        closing: bool,
    ) -> Result<(TcpStream, Answer), Failure> {
        let wait = self.wait.get_or_insert_with(|| Deadline::new(target.timeout));
        // Sent again on a new connection if the kept one turns out closed: only a request whose
        // body is all in `out`, and that the upstream may see twice.
        let replayable = rest == 0 && req.idempotent;
        let mut kept = self.upstream.take();
        if !replayable {
            kept = kept.filter(alive);
        }
        for fresh in [false, true] {
            let kept = if fresh { None } else { kept.take().or_else(adopt) };
            let (mut up, reused) = match kept {
                Some(up) => (up, true),
                None => {
                    let up = upstream_io(wait.within(TcpStream::connect(&target.addr)).await)?;
                    let _ = up.set_nodelay(true);
                    (up, false)
                }
            };
            let retry = reused && replayable;
            match wait.within(up.write_all(&self.out)).await {
                Some(Err(_)) if retry => continue,
                sent => upstream_io(sent)?,
            }
            // The rest of the body, as it comes; a stall of either side is the upstream timeout.
            let mut left = rest;
            while left > 0 {
                self.buf.clear();
                self.buf.reserve(CHUNK.min(left as usize));
                match wait.within(self.client.read_buf(&mut self.buf)).await {
                    Some(Ok(n)) if n > 0 => {}
                    Some(_) => return Err(Failure::ClientGone),
                    None => return Err(Failure::TimedOut),
                }
                // Bytes past the body are the client's next request: they stay in `buf`.
                let n = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                upstream_io(wait.within(up.write_all(&self.buf[..n])).await)?;
                self.buf.drain(..n);
                left -= n as u64;
            }
            // The answer's head, after any interim (1xx) ones, which are dropped as hyper does.
            self.ubuf.clear();
            let mut scanned = 0;
            loop {
                if head_end(&self.ubuf, &mut scanned).is_some() {
                    match parse_answer(&self.ubuf, req, closing, &mut self.out) {
                        Ok(Parsed::Final(answer)) => return Ok((up, answer)),
                        Ok(Parsed::Interim(len)) => {
                            self.ubuf.drain(..len);
                            scanned = 0;
                            continue;
                        }
                        Err(()) => return Err(Failure::Invalid),
                    }
                }
                if self.ubuf.len() >= MAX_RESPONSE_HEAD {
                    return Err(Failure::Invalid);
                }
                self.ubuf.reserve(4096);
                match wait.within(up.read_buf(&mut self.ubuf)).await {
                    Some(Ok(n)) if n > 0 => {}
                    Some(_) if retry && self.ubuf.is_empty() => break,
                    Some(_) => return Err(Failure::Unreachable),
                    None => return Err(Failure::TimedOut),
                }
            }
        }
        Err(Failure::Unreachable)
    }

    /// Writes the answer's head (in `out`) and copies its body; the upstream connection back
    /// when the body ended as framed, `None` when either side failed (the client's connection
    /// then closes: its answer is cut short).
    async fn copy_body(&mut self, mut up: TcpStream, answer: &Answer) -> Option<TcpStream> {
        let wait = self.wait.as_mut().expect("made by exchange");
        self.ubuf.drain(..answer.head);
        // Body bytes still to come, for an answer framed by its length.
        let mut left = match answer.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut chunks = Chunks::default();
        // What came with the head goes with the client's head in one write.
        let mut first = true;
        loop {
            let take = match answer.framing {
                Framing::Empty => 0,
                Framing::Length(_) => {
                    let take = self.ubuf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    left -= take as u64;
                    take
                }
                Framing::Chunked => chunks.advance(&self.ubuf).ok()?,
                Framing::UntilClose => self.ubuf.len(),
            };
            let finished = match answer.framing {
                Framing::Empty => true,
                Framing::Length(_) => left == 0,
                Framing::Chunked => chunks.done(),
                Framing::UntilClose => false,
            };
            if first {
                self.out.extend_from_slice(&self.ubuf[..take]);
                self.idle.within(self.client.write_all(&self.out)).await?.ok()?;
                first = false;
            } else if take > 0 {
                self.idle.within(self.client.write_all(&self.ubuf[..take])).await?.ok()?;
            }
            self.ubuf.drain(..take);
            if finished {
                // Anything more from the upstream is a protocol error: do not reuse it.
                return self.ubuf.is_empty().then_some(up);
            }
            // Large reads for a body still coming (the buffer shrinks back once it has passed).
            if self.ubuf.capacity() - self.ubuf.len() < CHUNK / 2 {
                self.ubuf.reserve(CHUNK);
            }
            // Its end, for an answer delimited by the close; otherwise the upstream failed.
            if !matches!(wait.within(up.read_buf(&mut self.ubuf)).await?, Ok(n) if n > 0) {
                return None;
            }
        }
    }
}

/// Plans a request whose head is `buf`: relayed (its upstream head then in `out`), claimed by a
/// route or herald's own API, or hyper's.
fn plan(buf: &[u8], claims: impl Fn(&str) -> bool, target: Option<&Target>, peer: IpAddr, out: &mut Vec<u8>) -> Plan {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(Status::Complete(len)) = req.parse(buf) else { return Plan::Hyper };
    let (Some(method), Some(uri), Some(1)) = (req.method, req.path, req.version) else { return Plan::Hyper };
    let path = uri.split('?').next().unwrap_or(uri);
    if !uri.starts_with('/') {
        return Plan::Hyper;
    }
    if claims(path) {
        return Plan::Claimed;
    }
    let Some(target) = target else { return Plan::Hyper };
    match build_request(method, uri, req.headers, target, peer, out) {
        Some((body, close)) => Plan::Relay(Request {
            head: len,
            body,
            head_method: method == "HEAD",
            idempotent: matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"),
            close,
        }),
        None => Plan::Hyper,
    }
}

/// Writes the upstream's request head into `out`: the client's header fields without the
/// hop-by-hop ones, the upstream's Host, x-forwarded-for/-proto/-host and via. Its body length
/// and whether the client asked to close; `None` for what only hyper handles.
fn build_request(
    method: &str,
    uri: &str,
    headers: &[Header],
    target: &Target,
    peer: IpAddr,
    out: &mut Vec<u8>,
) -> Option<(u64, bool)> {
    let (mut length, mut host, mut close, mut te_trailers, mut connection) = (None, None, false, false, false);
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(decimal(h.value)?);
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return None;
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= names_fields(h.value);
            close |= items(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("te") {
            te_trailers |= items(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        } else if ["transfer-encoding", "upgrade", "expect"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return None;
        }
    }
    let host = host?;
    out.clear();
    for part in [method.as_bytes(), b" ", target.base_path.as_bytes(), uri.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(part);
    }
    put(out, "host", target.host.as_bytes());
    for h in headers {
        let replaced = ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n));
        if !replaced && end_to_end(headers, h.name, connection) {
            put(out, h.name, h.value);
        }
    }
    if te_trailers {
        put(out, "te", b"trailers");
    }
    // Earlier proxies' addresses first, then the client's.
    out.extend_from_slice(b"x-forwarded-for: ");
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")) {
        for prior in items(h.value).filter(|v| !v.is_empty()) {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
    }
    put_ip(out, peer);
    out.extend_from_slice(b"\r\n");
    put(out, "x-forwarded-proto", b"http");
    put(out, "x-forwarded-host", host);
    out.extend_from_slice(b"via: 1.1 herald\r\n\r\n");
    Some((length.unwrap_or(0), close))
}

/// Parses the upstream's answer head at the start of `ubuf` and writes the client's into `out`;
/// an error for one herald cannot pass on.
fn parse_answer(ubuf: &[u8], req: &Request, closing: bool, out: &mut Vec<u8>) -> Result<Parsed, ()> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(Status::Complete(head)) = resp.parse(ubuf) else { return Err(()) };
    let (Some(version), Some(status)) = (resp.version, resp.code) else { return Err(()) };
    match status {
        // herald never asks to switch protocols here (Upgrade requests are hyper's).
        101 => return Err(()),
        100..=199 => return Ok(Parsed::Interim(head)),
        _ => {}
    }
    let (mut length, mut chunked, mut connection, mut repeated_length) = (None, false, false, false);
    let mut keep_alive = version == 1;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = decimal(h.value).ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            repeated_length = length.is_some();
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` alone: other codings would reach the client undeclared.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(());
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= names_fields(h.value);
            keep_alive &= !items(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
    }
    let framing = match (req.head_method || status == 204 || status == 304, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };
    let close = closing || req.close || framing == Framing::UntilClose;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[b'0' + (status / 100) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A 204 has no framing fields at all, and with Transfer-Encoding a Content-Length is wrong
    // (RFC 9112 sections 6.1, 6.2 and 6.3).
    // Repeated equal lengths (allowed above) are passed on as one (RFC 9110 section 8.6).
    let mut no_length = chunked || status == 204;
    let mut date = false;
    for h in resp.headers.iter() {
        let is_length = (no_length || repeated_length) && h.name.eq_ignore_ascii_case("content-length");
        if !(is_length && no_length) && end_to_end(resp.headers, h.name, connection) {
            put(out, h.name, h.value);
            date |= h.name.eq_ignore_ascii_case("date");
            no_length |= is_length;
        }
    }
    if chunked && status != 204 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !date {
        // A proxy adds the Date an answer lacks (RFC 9110 section 6.6.1).
        let _ = write!(out, "date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now()));
    }
    out.extend_from_slice(b"via: 1.1 herald\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let reusable = keep_alive && framing != Framing::UntilClose;
    Ok(Parsed::Final(Answer { head, status, framing, reusable, close }))
}

/// herald's own answer when the upstream gave none, as `crate::text` writes it.
fn error_head(out: &mut Vec<u8>, status: u16, msg: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ndate: {}\r\n{}\r\n{msg}\n",
        msg.len() + 1,
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        if close { "connection: close\r\n" } else { "" },
    );
}

/// Follows a chunked body's framing (RFC 9112 section 7.1) to find where it ends; the bytes
/// themselves are passed on as they are.
#[derive(Debug, Default)]
struct Chunks {
    state: ChunkState,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: this many data bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section, ending with an empty line.
    Trailers,
    Done,
}

/// The longest chunk-size line (with extensions) and trailer section taken.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 << 10;

impl Chunks {
    /// How many bytes at the start of `buf` belong to the body: all of them, unless the body
    /// ends within them or they end inside a size line or the trailer section (whose start is
    /// then left for the next call, with more bytes after it).
    fn advance(&mut self, buf: &[u8]) -> Result<usize, ()> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(Status::Complete((n, 0))) => (at, self.state) = (at + n, ChunkState::Trailers),
                    Ok(Status::Complete((n, size))) => (at, self.state) = (at + n, ChunkState::Data(size)),
                    Ok(Status::Partial) if rest.len() < MAX_CHUNK_LINE => return Ok(at),
                    _ => return Err(()),
                },
                ChunkState::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    if take < left {
                        self.state = ChunkState::Data(left - take);
                        return Ok(at);
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => (at, self.state) = (at + 2, ChunkState::Size),
                    [] | [b'\r'] => return Ok(at),
                    _ => return Err(()),
                },
                ChunkState::Trailers => match httparse::parse_headers(rest, &mut [EMPTY_HEADER; 32]) {
                    Ok(Status::Complete((n, _))) => (at, self.state) = (at + n, ChunkState::Done),
                    Ok(Status::Partial) if rest.len() < MAX_TRAILERS => return Ok(at),
                    _ => return Err(()),
                },
            }
        }
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// A deadline moved cheaply: its timer is armed once and, when it fires before the current
/// deadline, armed again for it. Moving the deadline costs a clock read, not a timer.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
    period: Duration,
}

impl Deadline {
    pub(crate) fn new(period: Duration) -> Self {
        let at = Instant::now() + period;
        Deadline { sleep: Box::pin(tokio::time::sleep_until(at)), at, period }
    }

    pub(crate) fn restart(&mut self) {
        self.restart_at(Instant::now());
    }

    /// [`Deadline::restart`] from `now`, read once for several deadlines.
    pub(crate) fn restart_at(&mut self, now: Instant) {
        self.at = now + self.period;
    }

    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.sleep.as_mut().poll(cx));
            if self.at <= Instant::now() {
                return Poll::Ready(());
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }

    async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }

    /// `f`, unless a whole period passes first.
    async fn within<F: Future>(&mut self, f: F) -> Option<F::Output> {
        self.restart();
        tokio::select! {
            biased;
            out = f => Some(out),
            () = self.expired() => None,
        }
    }
}

/// An upstream I/O step within its deadline: a timeout is a 504, an error a 502.
fn upstream_io<T>(step: Option<io::Result<T>>) -> Result<T, Failure> {
    match step {
        Some(Ok(out)) => Ok(out),
        Some(Err(_)) => Err(Failure::Unreachable),
        None => Err(Failure::TimedOut),
    }
}

/// When `deadline` expires; never without one.
async fn expired(deadline: Option<&mut Deadline>) {
    match deadline {
        Some(deadline) => deadline.expired().await,
        None => std::future::pending().await,
    }
}

/// Whether an idle upstream connection is still open: it has sent nothing (not even its close).
fn alive(up: &TcpStream) -> bool {
    matches!(up.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// An idle upstream connection another client connection left, still open.
fn adopt() -> Option<TcpStream> {
    let mut idle = IDLE.lock().unwrap();
    while let Some((up, since)) = idle.pop() {
        if since.elapsed() < IDLE_FOR && alive(&up) {
            return Some(up);
        }
    }
    None
}

/// Keeps an upstream connection for the next client connection. Those not adopted within
/// `IDLE_FOR` are closed (by a task started with the first).
fn release(up: TcpStream) {
    static REAPER: std::sync::Once = std::sync::Once::new();
    REAPER.call_once(|| {
        tokio::spawn(async {
            loop {
                tokio::time::sleep(IDLE_FOR).await;
                IDLE.lock().unwrap().retain(|(_, since)| since.elapsed() < IDLE_FOR);
            }
        });
    });
    let mut idle = IDLE.lock().unwrap();
    idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
    if idle.len() < IDLE_MAX {
        idle.push((up, Instant::now()));
    }
}

/// The length of the head at the start of `buf` (through its empty line), once it is all there.
/// `scanned` carries how far an earlier call looked: a head arriving a byte at a time is scanned
/// once, not once per byte.
fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let from = scanned.saturating_sub(2);
    *scanned = buf.len();
    memchr::memchr_iter(b'\n', &buf[from..]).map(|i| from + i + 1).find_map(|after| match &buf[after..] {
        [b'\n', ..] => Some(after + 1),
        [b'\r', b'\n', ..] => Some(after + 2),
        _ => None,
    })
}

/// Connection-specific header fields (RFC 9110 section 7.6.1), not passed on. `Trailer` is not
/// among them: it declares the message's trailer fields, end to end.
fn hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "transfer-encoding", "upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether the field `name` of `headers` is passed on: not hop-by-hop, and not named by a
/// Connection field (looked for only when one names any). Content-Length stays whatever the
/// Connection field says: without it the body that follows would be framed differently.
fn end_to_end(headers: &[Header], name: &str, connection_names: bool) -> bool {
    let named = || !name.eq_ignore_ascii_case("content-length") && named_by_connection(headers, name);
    !(hop_by_hop(name) || connection_names && named())
}

/// Whether a Connection field value names a header field: an option other than `close` and
/// `keep-alive` (which names one that is hop-by-hop anyway).
fn names_fields(value: &[u8]) -> bool {
    items(value).any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Whether a Connection field names `name`, which makes it hop-by-hop.
fn named_by_connection(headers: &[Header], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| items(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// The comma-separated items of a field value, trimmed.
fn items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A Content-Length value: digits only (no sign, no list), at most 19 of them.
fn decimal(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn put(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    for part in [name.as_bytes(), b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

/// An IP address, IPv4 written by hand: formatting addresses was a measurable part of a
/// proxied request's cost.
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

/// The relay's parsers against any input, with the invariants they keep: for the property tests
/// below and the fuzz targets in `fuzz/` (each panics when an invariant breaks).
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// A client's request head: when relayed (`true`), the upstream gets a well-formed head with
    /// its own Host and exactly the framing the relay will copy.
    pub fn request_head(input: &[u8]) -> bool {
        let Some(end) = head_end(input, &mut 0) else { return false };
        let target = Target::new("http", "up:8081", "/api", Duration::from_secs(1)).expect("a valid target");
        let mut out = Vec::new();
        let Plan::Relay(req) = plan(&input[..end], |_| false, Some(&target), [10, 1, 2, 3].into(), &mut out) else {
            return false;
        };
        assert!(req.head <= end);
        assert_eq!(fields(&out, "host", false), [&b"up:8081"[..]]);
        assert!(fields(&out, "transfer-encoding", false).is_empty());
        let lengths = fields(&out, "content-length", false);
        assert!(lengths.len() <= 1 && lengths.iter().all(|l| decimal(l) == Some(req.body)));
        // A body is framed by its length (`Content-Length: 0` may stand for none).
        assert!(req.body == 0 || !lengths.is_empty());
        true
    }

    /// An upstream's answer head: when passed on (`true`), the client gets a well-formed head
    /// with one framing, the one the relay follows.
    pub fn answer_head(input: &[u8]) -> bool {
        if head_end(input, &mut 0).is_none() {
            return false;
        }
        let get = Request { head: 0, body: 0, head_method: false, idempotent: true, close: false };
        let mut out = Vec::new();
        let Ok(Parsed::Final(answer)) = parse_answer(input, &get, false, &mut out) else { return false };
        assert!(answer.head <= input.len());
        let (lengths, codings) = (fields(&out, "content-length", true), fields(&out, "transfer-encoding", true));
        match answer.framing {
            Framing::Chunked => assert!(lengths.is_empty() && codings == [&b"chunked"[..]]),
            Framing::Length(n) => {
                assert!(codings.is_empty() && !lengths.is_empty() && lengths.iter().all(|l| decimal(l) == Some(n)))
            }
            Framing::UntilClose => assert!(codings.is_empty() && lengths.is_empty() && answer.close),
            Framing::Empty if answer.status == 204 => assert!(codings.is_empty() && lengths.is_empty()),
            Framing::Empty => assert!(codings.len() <= 1 && lengths.len() <= 1),
        }
        true
    }

    /// A chunked body, whole and in two pieces: the framing never claims more than it was given,
    /// and where it ends does not depend on how the bytes arrived.
    pub fn chunked_body(input: &[u8]) {
        let mut whole = Chunks::default();
        let took = whole.advance(input);
        if let Ok(n) = took {
            assert!(n <= input.len());
        }
        let split = input.first().map_or(0, |&b| b as usize % (input.len() + 1));
        let mut pieces = Chunks::default();
        let mut pending = Vec::new();
        let mut passed = 0;
        for piece in [&input[..split], &input[split..]] {
            pending.extend_from_slice(piece);
            match pieces.advance(&pending) {
                Ok(n) => {
                    passed += n;
                    pending.drain(..n);
                }
                Err(()) => {
                    assert!(!whole.done(), "split at {split}: refused in pieces, taken whole");
                    return;
                }
            }
            if pieces.done() {
                break;
            }
        }
        if whole.done() {
            assert!(pieces.done() && took == Ok(passed), "split at {split}: {took:?} whole, {passed} in pieces");
        }
    }

    /// The values of `name` in a head herald wrote, which must parse whole.
    fn fields<'h>(head: &'h [u8], name: &str, response: bool) -> Vec<&'h [u8]> {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS + 8];
        let parsed = if response {
            httparse::Response::new(&mut headers).parse(head)
        } else {
            httparse::Request::new(&mut headers).parse(head)
        };
        assert_eq!(parsed, Ok(Status::Complete(head.len())), "{}", String::from_utf8_lossy(head));
        headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new("http", "up:8081", "/api", Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn a_plain_http_upstream_is_a_target_with_a_port() {
        let addr = |host| Target::new("http", host, "", Duration::from_secs(1)).unwrap().addr;
        assert_eq!(addr("api.example"), "api.example:80");
        assert_eq!(addr("127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(addr("[::1]"), "[::1]:80");
        assert_eq!(addr("[::1]:8081"), "[::1]:8081");
        assert!(Target::new("https", "api.example", "", Duration::from_secs(1)).is_none());
        assert!(Target::new("http", "api.example", "/a b", Duration::from_secs(1)).is_none());
    }

    /// The length of the head that starts `text`.
    fn len(text: &str) -> usize {
        text.find("\r\n\r\n").unwrap() + 4
    }

    /// The plan for `head`, with the upstream head it wrote.
    fn plan_of(head: &str) -> (Plan, String) {
        let mut out = Vec::new();
        let plan =
            plan(head.as_bytes(), |path| path.starts_with("/tasks"), Some(&target()), [10, 1, 2, 3].into(), &mut out);
        (plan, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_upstream_gets_its_own_host_forwarding_fields_and_no_hop_by_hop_ones() {
        let client =
            "POST /items?a=1 HTTP/1.1\r\nHost: herald.example\r\nContent-Length: 5\r\nConnection: close, x-hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers, deflate\r\n\
             X-Forwarded-For: 192.0.2.1, 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\
             Authorization: Bearer alice\r\nVia: 1.0 edge\r\n\r\nhello";
        let (plan, head) = plan_of(client);
        let Plan::Relay(req) = plan else { panic!("{plan:?}") };
        assert_eq!(req, Request { head: len(client), body: 5, head_method: false, idempotent: false, close: true });
        assert_eq!(
            head,
            "POST /api/items?a=1 HTTP/1.1\r\nhost: up:8081\r\nContent-Length: 5\r\nAuthorization: Bearer alice\r\n\
             Via: 1.0 edge\r\nte: trailers\r\nx-forwarded-for: 192.0.2.1, 198.51.100.7, 10.1.2.3\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: herald.example\r\nvia: 1.1 herald\r\n\r\n"
        );
    }

    #[test]
    fn a_connection_field_cannot_take_the_length_away() {
        let (plan, head) =
            plan_of("POST /a HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nhi");
        assert!(
            matches!(plan, Plan::Relay(Request { body: 2, .. })) && head.contains("Content-Length: 2\r\n"),
            "{head}"
        );
        let (_, out) = answer("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nhi", &GET);
        assert!(out.contains("Content-Length: 2\r\n"), "{out}");
    }

    #[test]
    fn a_plain_get_is_relayed_and_may_be_sent_twice() {
        let client = "GET / HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\n\r\n";
        let (plan, head) = plan_of(client);
        assert_eq!(
            plan,
            Plan::Relay(Request { head: len(client), body: 0, head_method: false, idempotent: true, close: false })
        );
        assert!(head.starts_with("GET /api/ HTTP/1.1\r\nhost: up:8081\r\nx-forwarded-for: 10.1.2.3\r\n"), "{head}");
    }

    #[test]
    fn route_paths_are_herald_s_and_the_rest_goes_to_hyper() {
        assert_eq!(plan_of("GET /tasks/event-stream HTTP/1.1\r\nhost: h\r\n\r\n").0, Plan::Claimed);
        for head in [
            "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /a HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert_eq!(plan_of(head).0, Plan::Hyper, "{head}");
        }
        // An https upstream: hyper's client.
        let plan = plan(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n", |_| false, None, [10, 1, 2, 3].into(), &mut Vec::new());
        assert_eq!(plan, Plan::Hyper);
    }

    const GET: Request = Request { head: 0, body: 0, head_method: false, idempotent: true, close: false };

    fn answer(head: &str, req: &Request) -> (Result<Parsed, ()>, String) {
        let mut out = Vec::new();
        let parsed = parse_answer(head.as_bytes(), req, false, &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    /// Found by fuzzing (fuzz/corpus/relay_answer_head): equal repeated lengths went out twice.
    #[test]
    fn repeated_equal_lengths_are_passed_on_once() {
        let head = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 5\r\nDate: x\r\n\r\n";
        let (parsed, out) = answer(head, &GET);
        assert!(matches!(parsed, Ok(Parsed::Final(Answer { framing: Framing::Empty, .. }))));
        assert_eq!(out, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nDate: x\r\nvia: 1.1 herald\r\n\r\n");
    }

    #[test]
    fn a_kept_alive_answer_loses_its_hop_by_hop_fields_and_gains_via() {
        let head = "HTTP/1.1 200 OK\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\nContent-Length: 2\r\n\
                    Connection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nETag: \"a\"\r\n\r\nok";
        let (parsed, out) = answer(head, &GET);
        let expected =
            Answer { head: head.len() - 2, status: 200, framing: Framing::Length(2), reusable: true, close: false };
        assert_eq!(parsed, Ok(Parsed::Final(expected)));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\nContent-Length: 2\r\nETag: \"a\"\r\n\
             via: 1.1 herald\r\n\r\n"
        );
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says() {
        let framing = |head: &str, req: &Request| match answer(head, req).0 {
            Ok(Parsed::Final(a)) => (a.framing, a.reusable, a.close),
            other => panic!("{head}: {other:?}"),
        };
        let date = "Date: Sat, 28 Nov 2026 04:00:00 GMT\r\n";
        let head_req = Request { head_method: true, ..GET };
        let close_req = Request { close: true, ..GET };
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 9\r\n\r\n"), &head_req),
            (Framing::Empty, true, false)
        );
        assert_eq!(framing(&format!("HTTP/1.1 204 No Content\r\n{date}\r\n"), &GET), (Framing::Empty, true, false));
        assert_eq!(framing(&format!("HTTP/1.1 304 Not Modified\r\n{date}\r\n"), &GET), (Framing::Empty, true, false));
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), &GET),
            (Framing::Chunked, true, false)
        );
        assert_eq!(framing(&format!("HTTP/1.1 200 OK\r\n{date}\r\n"), &GET), (Framing::UntilClose, false, true));
        assert_eq!(
            framing(&format!("HTTP/1.0 200 OK\r\n{date}Content-Length: 1\r\n\r\n"), &GET),
            (Framing::Length(1), false, false)
        );
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 1\r\nConnection: close\r\n\r\n"), &GET),
            (Framing::Length(1), false, false)
        );
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 1\r\n\r\n"), &close_req),
            (Framing::Length(1), true, true)
        );

        // Chunked replaces a Content-Length; the close-delimited answer tells the client.
        let (_, out) =
            answer(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), &GET);
        assert!(
            !out.to_ascii_lowercase().contains("content-length") && out.contains("transfer-encoding: chunked\r\n"),
            "{out}"
        );
        let (_, out) = answer(&format!("HTTP/1.1 200 OK\r\n{date}\r\n"), &GET);
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
        // A missing Date is added, also for one a Connection field took away.
        let (_, out) = answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &GET);
        assert!(out.contains("\r\ndate: "), "{out}");
        let (_, out) = answer(&format!("HTTP/1.1 200 OK\r\n{date}Connection: date\r\nContent-Length: 0\r\n\r\n"), &GET);
        assert!(out.contains("\r\ndate: ") && !out.contains("Date: "), "{out}");
    }

    #[test]
    fn interim_answers_are_skipped_and_unusable_ones_refused() {
        let hints = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200";
        assert_eq!(answer(hints, &GET).0, Ok(Parsed::Interim(len(hints))));
        for head in [
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 OK\r\n\r\n",
        ] {
            assert_eq!(answer(head, &GET).0, Err(()), "{head}");
        }
    }

    const CHUNKED: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nx-sum: abc\r\n\r\n";

    #[test]
    fn a_chunked_body_ends_after_its_trailers_however_it_arrives() {
        let mut whole = CHUNKED.to_vec();
        whole.extend_from_slice(b"HTTP/1.1 200");
        let mut chunks = Chunks::default();
        assert_eq!(chunks.advance(&whole), Ok(CHUNKED.len()));
        assert!(chunks.done());

        // In every pair of pieces, kept bytes carried over as the copy loop carries them.
        for split in 1..CHUNKED.len() {
            let (mut chunks, mut pending, mut passed) = (Chunks::default(), Vec::new(), 0);
            for piece in [&CHUNKED[..split], &CHUNKED[split..]] {
                pending.extend_from_slice(piece);
                let n = chunks.advance(&pending).unwrap();
                pending.drain(..n);
                passed += n;
            }
            assert!(chunks.done() && pending.is_empty() && passed == CHUNKED.len(), "split at {split}");
        }
    }

    #[test]
    fn broken_chunk_framing_is_refused() {
        for body in [&b"zz\r\n"[..], b"4\r\nWikiXX", b"0\r\nbad header\r\n\r\n"] {
            assert_eq!(Chunks::default().advance(body), Err(()), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(Chunks::default().advance(&[b'1'; MAX_CHUNK_LINE]), Err(()));
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line_found_once() {
        let two = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(head_end(two, &mut 0), Some(28));
        // Bare line feeds, as httparse takes them.
        assert_eq!(head_end(b"GET /a HTTP/1.1\nHost: h\n\nGET", &mut 0), Some(25));
        // A byte at a time: found when its last byte arrives.
        let mut scanned = 0;
        let found: Vec<_> = (1..=two.len()).filter_map(|n| head_end(&two[..n], &mut scanned)).collect();
        assert_eq!(found.first(), Some(&28));
        assert_eq!(head_end(b"GET /a HTTP/1.1\r\nHost: h\r\n", &mut 0), None);
    }

    #[test]
    fn content_lengths_are_plain_digits() {
        assert_eq!(decimal(b" 42 "), Some(42));
        assert_eq!(decimal(b"18446744073709551615"), None);
        for bad in [&b""[..], b"+1", b"-1", b"1,1", b"0x10", b"1 1"] {
            assert_eq!(decimal(bad), None);
        }
    }

    #[test]
    fn ip_addresses_are_written_as_displayed() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.100.255", "192.168.1.9", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            put_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }

    /// Deterministic pseudo-random mutations (xorshift) of `seed`: bytes replaced by ones that
    /// matter to HTTP's grammar, inserted or removed.
    fn mutations(seed: &[u8], count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
        const SPECIAL: &[u8] = b"\r\n:; ,\t0123456789abcdefxXzZ-/?\x00\x7f\x80\xff";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        (0..count).map(move |_| {
            let mut bytes = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = next() % (bytes.len() + 1);
                let byte = SPECIAL[next() % SPECIAL.len()];
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => drop(bytes.remove(at)),
                    _ => bytes.insert(at, byte),
                }
            }
            bytes
        })
    }

    #[test]
    fn whatever_a_client_sends_the_upstream_gets_a_well_formed_head_with_one_framing() {
        let seed =
            b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nConnection: x-a, close, content-length\r\n\
                     X-A: 1\r\nX-Forwarded-For: 10.0.0.1\r\nTE: trailers\r\n\r\nhello world!";
        let relayed = mutations(seed, 20_000).filter(|input| fuzz::request_head(input)).count();
        assert!(relayed > 1_000, "only {relayed} mutations relayed");
    }

    #[test]
    fn whatever_an_upstream_answers_the_client_gets_a_well_formed_head_with_one_framing() {
        let seed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: x-b, content-length\r\n\
                     X-B: 1\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\n\r\n0\r\n\r\n";
        let passed = mutations(seed, 20_000).filter(|input| fuzz::answer_head(input)).count();
        assert!(passed > 1_000, "only {passed} mutations passed on");
    }

    #[test]
    fn chunk_framing_never_claims_more_than_it_was_given() {
        for input in mutations(CHUNKED, 20_000) {
            fuzz::chunked_body(&input);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_is_a_whole_period_without_progress() {
        let mut deadline = Deadline::new(Duration::from_secs(10));
        assert_eq!(deadline.within(async { 7 }).await, Some(7));
        // Each wait gets its whole period, however long the ones before took.
        for _ in 0..3 {
            let slow = tokio::time::sleep(Duration::from_secs(9));
            assert_eq!(deadline.within(slow).await, Some(()));
        }
        let started = Instant::now();
        assert_eq!(deadline.within(std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
