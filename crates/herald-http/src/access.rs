//! The access log (`server.access_log`): one line per request on the public listener, written
//! when its answer has been sent (for a stream: when the stream ends), at `info` under the
//! `herald::access` target. It names the route, never the query, a header value or a
//! credential; a client's `traceparent` trace id lets a line be matched with the upstream's.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::{Body, BoxError};

/// What a line says of a request, taken before it is answered.
pub(crate) struct Entry {
    method: Method,
    path: String,
    /// A route name, or what else answered: `pass-through`, `webhook-api`, `notify`, `not-found`, `preflight`.
    route: String,
    trace_id: Option<String>,
    peer: SocketAddr,
    started: Instant,
}

impl Entry {
    pub(crate) fn new<B>(req: &Request<B>, route: String, peer: SocketAddr) -> Self {
        let trace_id = req
            .headers()
            .get(herald_core::trace::TRACEPARENT)
            .and_then(|v| herald_core::trace::trace_id(v.as_bytes()))
            .map(str::to_string);
        Entry {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            route,
            trace_id,
            peer,
            started: Instant::now(),
        }
    }

    /// `resp`, whose body writes the line once it is finished or dropped (the client left).
    pub(crate) fn log(self, resp: Response<Body>) -> Response<Body> {
        let status = resp.status();
        resp.map(|inner| Counted { inner, bytes: 0, line: Some((self, status)) }.boxed_unsync())
    }
}

/// A response body that counts what it yields and logs the request when it is dropped.
struct Counted {
    inner: Body,
    bytes: u64,
    line: Option<(Entry, StatusCode)>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some((e, status)) = self.line.take() else { return };
        tracing::info!(
            target: "herald::access",
            method = %e.method,
            path = %e.path,
            route = %e.route,
            status = status.as_u16(),
            bytes = self.bytes,
            duration_ms = e.started.elapsed().as_secs_f64() * 1000.0,
            peer = %e.peer.ip(),
            trace_id = e.trace_id.as_deref().unwrap_or("-"),
            "request"
        );
    }
}
