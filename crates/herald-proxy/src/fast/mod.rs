//! The fast lane: plain HTTP/1.1 requests that herald forwards unchanged are relayed between the
//! client's socket and an upstream connection by the client connection's own task, their heads
//! rewritten into one buffer ([`head`]), their bodies copied as they are ([`chunked`] follows a
//! chunked answer's framing), upstream connections kept between client connections ([`pool`]).
//!
//! Through hyper, a proxied request is parsed into a header map and encoded again on both sides,
//! with a dispatcher, a body channel and their allocations on each: that was most of herald's
//! user-space time per request, twice nginx's (docs/benchmarks.md). Here heads are parsed by
//! httparse (the parser hyper itself uses) and written once; a request allocates nothing (the
//! connection's buffers are reused) and switches no task.
//!
//! Anything the fast lane does not take (a path herald claims, chunked uploads, WebSocket,
//! HTTP/1.0, HTTP/2, malformed or oversized heads) leaves it with the bytes read so far, for
//! herald-http to answer or to hand to hyper.
//!
//! Upstream answers are framed as RFC 9112 section 6.3 says: no body after HEAD, 1xx, 204 and
//! 304; chunked (copied verbatim, trailers included); by Content-Length; or until the upstream
//! closes (then the client's connection closes after it too).

mod chunked;
pub(crate) mod head;
mod pool;

#[doc(hidden)]
pub mod fuzz;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use self::chunked::Chunks;
pub use self::head::head_end;
use self::head::{parse_answer, plan, Answer, Framing, Parsed, Plan, Request};
use self::pool::Pool;
use crate::deadline::{expired, Deadline};
use crate::error::ForwardError;
use crate::metrics::Requests;
use crate::policy;
use crate::upstream::Upstream;
use crate::OnWrite;

/// The largest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 64 << 10;
/// A connection idling between requests keeps at most this much buffer capacity each.
const IDLE_BUFFER: usize = 4096;
/// A client connection idle this long between requests gives its upstream connection back to
/// the pool: idle keep-alive clients do not each hold one (nor its file descriptor).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// The fast lane to one upstream: its idle connections and counters.
pub struct FastLane {
    /// `None` when the fast lane cannot reach it (https, or a base path it cannot copy).
    upstream: Option<Upstream>,
    pool: std::sync::Arc<Pool>,
    requests: Requests,
    on_write: Option<OnWrite>,
}

impl FastLane {
    pub(crate) fn new(
        upstream: Upstream,
        requests: Requests,
        on_write: Option<OnWrite>,
        shutdown: CancellationToken,
    ) -> Self {
        FastLane { upstream: upstream.fast_lane().then_some(upstream), pool: Pool::new(shutdown), requests, on_write }
    }
}

/// What a client connection is held to in the fast lane (the listener's `server.*` limits).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `server.header_timeout`: for a request's head, and for the client to take the next piece
    /// of an answer.
    pub header_timeout: Duration,
    /// `server.max_header_size`: a longer head goes to hyper, which answers 431.
    pub max_header_size: usize,
    /// `server.idle_timeout`: between requests, with nothing in flight.
    pub idle_timeout: Duration,
}

/// How a connection left the fast lane.
pub enum Outcome {
    /// It is finished.
    Done,
    /// Its request's path is one herald answers itself; the head is in these bytes.
    Claimed(TcpStream, Vec<u8>),
    /// It needs what only hyper does, starting with these bytes.
    Hyper(TcpStream, Vec<u8>),
}

/// Serves a plain client connection until it ends or sends a request the fast lane does not
/// take. `claims` says whether herald answers a path itself.
pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    lane: &FastLane,
    claims: impl Fn(&str) -> bool,
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
        let len = match conn.read_head(limits.max_header_size, cancelled.as_mut(), &lane.pool).await {
            Head::Complete(len) => len,
            Head::Oversized => break Outcome::Hyper(conn.client, conn.buf),
            Head::Gone => break Outcome::Done,
        };
        let (upstream, writes_heard) = (lane.upstream.as_ref(), lane.on_write.is_some());
        match plan(&conn.buf[..len], &claims, upstream, conn.peer, writes_heard, &mut conn.out) {
            Plan::Relay(req) => {
                if !conn.relay(req, lane, shutdown.is_cancelled()).await {
                    break Outcome::Done;
                }
                conn.trim();
            }
            Plan::Claimed => break Outcome::Claimed(conn.client, conn.buf),
            Plan::Hyper => break Outcome::Hyper(conn.client, conn.buf),
        }
    };
    if let Some(up) = conn.upstream.take() {
        lane.pool.keep(up);
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
    /// then the answer's to the client.
    out: Vec<u8>,
    /// Bytes read from the upstream.
    ubuf: Vec<u8>,
    /// The upstream connection of the last request, kept for the next.
    upstream: Option<TcpStream>,
    /// `server.header_timeout`: for a request's head, and for the client to take the next piece
    /// of an answer.
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
    async fn read_head(
        &mut self,
        max: usize,
        mut cancelled: Pin<&mut WaitForCancellationFuture<'_>>,
        pool: &std::sync::Arc<Pool>,
    ) -> Head {
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
                    pool.keep(self.upstream.take().expect("checked"));
                }
            }
        }
    }

    /// Relays the request planned into `out` and its answer. False when the connection is to
    /// close (the client asked, herald is shutting down, or either side failed).
    async fn relay(&mut self, req: Request, lane: &FastLane, closing: bool) -> bool {
        // What the client already sent of the body goes with the head in one write.
        let here = (self.buf.len() - req.head).min(usize::try_from(req.body).unwrap_or(usize::MAX));
        self.out.extend_from_slice(&self.buf[req.head..req.head + here]);
        self.buf.drain(..req.head + here);
        let rest = req.body - here as u64;

        let (up, answer) = match self.exchange(&req, rest, lane, closing).await {
            Ok(ok) => ok,
            Err(error) => {
                error.log();
                let Some((status, msg)) = error.answer() else { return false };
                lane.requests.count(status.as_u16());
                // Unless the whole request was read, the connection cannot carry another.
                let close = closing || req.close || rest > 0;
                head::error_head(&mut self.out, status, msg, close);
                let written = self.idle.within(self.client.write_all(&self.out)).await;
                return !close && matches!(written, Some(Ok(())));
            }
        };
        lane.requests.count(answer.status);
        if let (Some(path), Some(on_write)) = (&req.written, &lane.on_write) {
            if policy::write_succeeded(answer.status) {
                on_write(path);
            }
        }
        match self.copy_body(up, &answer).await {
            Ok(Some(up)) if answer.reusable => {
                self.upstream = Some(up);
                self.park.get_or_insert_with(|| Deadline::new(PARK_AFTER));
            }
            Ok(_) => {}
            Err(why) => {
                // The answer's head is out: the client's connection closes, its answer cut short.
                tracing::debug!(error = why, "pass-through answer ended early");
                return false;
            }
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
        lane: &FastLane,
        closing: bool,
    ) -> Result<(TcpStream, Answer), ForwardError> {
        let upstream = lane.upstream.as_ref().expect("planned only with an upstream");
        let timeout = upstream.timeout;
        let wait = self.wait.get_or_insert_with(|| Deadline::new(timeout));
        // Sent again on a new connection if the kept one turns out closed: only a request whose
        // body is all in `out`, and that the upstream may see twice.
        let replayable = rest == 0 && req.idempotent;
        let mut kept = self.upstream.take();
        if !replayable {
            kept = kept.filter(pool::alive);
        }
        let mut closed_early = None;
        for fresh in [false, true] {
            let kept = if fresh { None } else { kept.take().or_else(|| lane.pool.take()) };
            let (mut up, reused) = match kept {
                Some(up) => (up, true),
                None => {
                    let up = upstream_io(wait.within(TcpStream::connect(&upstream.addr)).await, timeout)?;
                    let _ = up.set_nodelay(true);
                    (up, false)
                }
            };
            let retry = reused && replayable;
            match wait.within(up.write_all(&self.out)).await {
                Some(Err(e)) if retry => {
                    closed_early = Some(e);
                    continue;
                }
                sent => upstream_io(sent, timeout)?,
            }
            // The rest of the body, as it comes; a stall of either side is the upstream timeout.
            let mut left = rest;
            while left > 0 {
                self.buf.clear();
                self.buf.reserve(CHUNK.min(left as usize));
                match wait.within(self.client.read_buf(&mut self.buf)).await {
                    Some(Ok(n)) if n > 0 => {}
                    Some(Ok(_)) => return Err(ForwardError::ClientGone(None)),
                    Some(Err(e)) => return Err(ForwardError::ClientGone(Some(e))),
                    None => return Err(ForwardError::TimedOut(timeout)),
                }
                // Bytes past the body are the client's next request: they stay in `buf`.
                let n = self.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                upstream_io(wait.within(up.write_all(&self.buf[..n])).await, timeout)?;
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
                        Err(why) => return Err(ForwardError::InvalidAnswer(why)),
                    }
                }
                if self.ubuf.len() >= MAX_RESPONSE_HEAD {
                    return Err(ForwardError::InvalidAnswer("head larger than 64 KiB"));
                }
                self.ubuf.reserve(4096);
                match wait.within(up.read_buf(&mut self.ubuf)).await {
                    Some(Ok(n)) if n > 0 => {}
                    Some(read) if retry && self.ubuf.is_empty() => {
                        closed_early = read.err();
                        break;
                    }
                    Some(read) => return Err(ForwardError::Unreachable(closed(read.err()).into())),
                    None => return Err(ForwardError::TimedOut(timeout)),
                }
            }
        }
        Err(ForwardError::Unreachable(closed(closed_early).into()))
    }

    /// Writes the answer's head (in `out`) and copies its body; the upstream connection back
    /// when the body ended as framed (none when it ended with the connection), why not when
    /// either side failed.
    async fn copy_body(&mut self, mut up: TcpStream, answer: &Answer) -> Result<Option<TcpStream>, &'static str> {
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
                Framing::Chunked => chunks.advance(&self.ubuf)?,
                Framing::UntilClose => self.ubuf.len(),
            };
            let finished = match answer.framing {
                Framing::Empty => true,
                Framing::Length(_) => left == 0,
                Framing::Chunked => chunks.done(),
                Framing::UntilClose => false,
            };
            let bytes = if first {
                self.out.extend_from_slice(&self.ubuf[..take]);
                &self.out[..]
            } else {
                &self.ubuf[..take]
            };
            if first || take > 0 {
                let written = self.idle.within(self.client.write_all(bytes)).await;
                written
                    .ok_or("the client took nothing within server.header_timeout")?
                    .map_err(|_| "the client left")?;
            }
            first = false;
            self.ubuf.drain(..take);
            if finished {
                // Anything more from the upstream is a protocol error: do not reuse it.
                return if self.ubuf.is_empty() { Ok(Some(up)) } else { Err("bytes after the answer's end") };
            }
            // Large reads for a body still coming (the buffer shrinks back once it has passed).
            if self.ubuf.capacity() - self.ubuf.len() < CHUNK / 2 {
                self.ubuf.reserve(CHUNK);
            }
            match wait.within(up.read_buf(&mut self.ubuf)).await {
                Some(Ok(n)) if n > 0 => {}
                // Its end, for an answer delimited by the close; otherwise the upstream failed.
                Some(Ok(_)) if answer.framing == Framing::UntilClose => return Ok(None),
                Some(Ok(_)) => return Err("the upstream closed before the answer's end"),
                Some(Err(_)) => return Err("the upstream connection failed"),
                None => return Err("the upstream sent nothing within upstream.timeout"),
            }
        }
    }
}

/// An upstream I/O step within its deadline: a timeout, or the upstream unreachable.
fn upstream_io<T>(step: Option<std::io::Result<T>>, timeout: Duration) -> Result<T, ForwardError> {
    match step {
        Some(Ok(out)) => Ok(out),
        Some(Err(e)) => Err(ForwardError::Unreachable(e.into())),
        None => Err(ForwardError::TimedOut(timeout)),
    }
}

/// The cause of an upstream connection that ended before its answer.
fn closed(error: Option<std::io::Error>) -> std::io::Error {
    error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the upstream closed the connection before answering")
    })
}
