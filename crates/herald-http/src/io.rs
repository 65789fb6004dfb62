//! What every client connection is held to besides its requests ([`Limits`]): a socket that
//! takes nothing for `sse.write_timeout` is given up ([`Stalled`]), and one with nothing in
//! flight for `server.idle_timeout` is closed ([`Activity`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Limits of one listener (`server.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
    /// `server.idle_timeout`: a connection with nothing in flight this long is closed.
    pub idle_timeout: Duration,
    /// `sse.write_timeout`: a client whose socket takes nothing this long is dropped.
    pub write_timeout: Duration,
}

impl Limits {
    pub fn from_config(s: &herald_config::Server, sse: &herald_config::Sse) -> Self {
        Limits {
            header_timeout: s.header_timeout,
            max_header_size: s.max_header_size.min(16 << 20) as usize,
            max_connections: s.max_connections,
            idle_timeout: s.idle_timeout,
            write_timeout: sse.write_timeout,
        }
    }
}

/// A stream whose writes fail with `TimedOut` once it has taken nothing for `timeout`: a
/// subscriber that stopped reading is dropped (its slot and memory freed), not kept forever.
pub(crate) struct Stalled<IO> {
    io: IO,
    timeout: Duration,
    /// Armed while a write waits.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<IO> Stalled<IO> {
    pub(crate) fn new(io: IO, timeout: Duration) -> Self {
        Stalled { io, timeout, stall: None }
    }

    /// After a write attempt: clears the timer on progress, or fails once it expired.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timeout = self.timeout;
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client took nothing"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Stalled<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Stalled<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A connection's requests in flight (until their answer's body is done), and since when it
/// has had none.
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    since: Mutex<Instant>,
}

/// Counts one request in flight until dropped (with its answer's body).
pub(crate) struct InFlight(Arc<Activity>);

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity { in_flight: AtomicUsize::new(0), since: Mutex::new(Instant::now()) })
    }

    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once nothing has been in flight for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                timeout
            } else {
                timeout.saturating_sub(self.since.lock().unwrap().elapsed())
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_takes_fails_after_the_timeout_and_one_that_moves_does_not() {
        let (client, mut server) = tokio::io::duplex(16);
        let mut stalled = Stalled::new(client, Duration::from_secs(30));
        let started = Instant::now();
        let err = stalled.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));

        // A reader taking 16 bytes every 20 s keeps a slow write going.
        let (client, mut server2) = tokio::io::duplex(16);
        let mut slow = Stalled::new(client, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0; 16];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                server2.read_exact(&mut buf).await.unwrap();
            }
        });
        slow.write_all(&[0; 64]).await.unwrap();
        reader.await.unwrap();
        drop(server.flush().await);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request_in_flight() {
        let activity = Activity::new();
        let request = activity.begin();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!idle.is_finished(), "a request in flight is not idle");
        drop(request);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!idle.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(idle.is_finished(), "idle 60 s after the last answer");
    }
}
