//! The answers herald writes itself, and reading list-valued header fields.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::Body;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e: Infallible| match e {}).boxed_unsync()
}

/// A plain-text answer (errors on the public listener that are not the upstream's).
pub(crate) fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(format!("{msg}\n")))
        .expect("static parts are valid")
}

/// A JSON document herald publishes (its descriptions): anyone may read it, from any origin.
pub(crate) fn json(body: Bytes) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(full(body))
        .expect("static parts are valid")
}

/// The comma-separated items of every `name` field, trimmed (`Accept`, `If-None-Match`).
pub(crate) fn header_items(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The upstream's own answer to an admission check or first poll, passed on as is (status,
/// content-type, body).
pub(crate) fn refused(r: herald_poll::Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::builder().status(status);
    if let Some(ct) = r.content_type {
        resp = resp.header(header::CONTENT_TYPE, ct);
    }
    if let Some(after) = r.retry_after {
        resp = resp.header(header::RETRY_AFTER, after.as_secs().max(1));
    }
    resp.body(full(r.body)).unwrap_or_else(|_| text(StatusCode::BAD_GATEWAY, "invalid upstream answer"))
}
