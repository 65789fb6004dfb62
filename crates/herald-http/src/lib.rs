//! herald's HTTP front: the public listener (SSE streams, pass-through to the upstream) and the
//! admin listener (/metrics, /healthz, /readyz, /admin/watches), served by hyper with graceful
//! shutdown.
#![forbid(unsafe_code)]

mod admin;
mod app;
mod cache;
mod direct;
mod io;
mod proxy;
mod relay;
mod server;
mod stream;
mod tls;

pub use admin::Admin;
pub use app::{App, HttpMetrics};
pub use server::{serve, Limits};
pub use tls::{Tls, TlsError};

/// The relay's parsers with their invariants, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use relay::fuzz;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Every response body herald writes: fixed, streamed from the upstream, or an SSE stream.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e: Infallible| match e {}).boxed_unsync()
}

/// A plain-text answer (errors on the public listener that are not the upstream's).
pub(crate) fn text(status: http::StatusCode, msg: &str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(format!("{msg}\n")))
        .expect("static parts are valid")
}

/// The comma-separated items of every `name` header, trimmed (`Accept`, `If-None-Match`, `Connection`).
pub(crate) fn header_items(headers: &http::HeaderMap, name: http::header::HeaderName) -> impl Iterator<Item = &str> {
    headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The upstream's own answer, passed on as is (status, content-type, body).
pub(crate) fn refused(r: herald_poll::Refusal) -> http::Response<Body> {
    let status = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let mut resp = http::Response::builder().status(status);
    if let Some(ct) = r.content_type {
        resp = resp.header(http::header::CONTENT_TYPE, ct);
    }
    if let Some(after) = r.retry_after {
        resp = resp.header(http::header::RETRY_AFTER, after.as_secs().max(1));
    }
    resp.body(full(r.body)).unwrap_or_else(|_| text(http::StatusCode::BAD_GATEWAY, "invalid upstream answer"))
}
