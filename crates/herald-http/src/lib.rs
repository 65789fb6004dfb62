//! herald's HTTP front: the public listener (the webhook API, SSE streams, cache answers, and
//! pass-through to the upstream through herald-proxy) and the admin listener (/metrics,
//! /healthz, /readyz, /admin/watches).
//!
//! Layers, each using only those below it (`docs/layers.py` checks there is no cycle):
//! - [`listener`]: accept, TLS ([`tls`], [`tls_stream`]), connection limits, drain on shutdown;
//! - [`front`]: a plain connection's way in (the fast lane, direct streams, or hyper);
//! - [`app`]: a request's answer, by [`dispatch`] (the contract's section 4, a pure function);
//! - endpoints: [`stream`], [`cache`], [`cors`], [`webhook_api`] (and [`admin`] on its own
//!   listener);
//! - [`response`], [`direct`] and [`io`]: writing answers, and what sockets are held to;
//!   [`access`]: the access log's line for an answer.
#![forbid(unsafe_code)]

mod access;
mod admin;
mod app;
mod cache;
mod cors;
pub mod describe;
mod direct;
mod dispatch;
mod front;
/// herald's TLS connection against any client bytes, for the fuzz target in `fuzz/`.
#[doc(hidden)]
pub mod fuzz;
mod io;
mod listener;
mod response;
mod status;
mod stream;
mod tls;
mod tls_stream;
mod webhook_api;

pub use admin::Admin;
pub use app::{App, Current, HttpMetrics};
pub use herald_proxy::{Body, BoxError};
pub use io::Limits;
pub use listener::serve;
pub use tls::{Tls, TlsError};
