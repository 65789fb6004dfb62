//! herald's pass-through (contract section 9): everything herald does not answer itself goes to
//! the upstream. One forwarding policy ([`policy`]: hop-by-hop fields, x-forwarded-*, via) and
//! one upstream-error type ([`ForwardError`]: 502 or 504), two engines:
//! - hyper's ([`Proxy::forward`]), for every client: TLS, HTTP/2, chunked uploads, WebSocket;
//! - the fast lane ([`fast`]), for plain HTTP/1.1 requests it can relay between two sockets
//!   without hyper's per-request work.
//!
//! The crate depends on no other herald crate: herald-http asks it to forward a request, and the
//! fast lane asks herald-http one question ("is this path herald's?") through a callback.
#![forbid(unsafe_code)]

mod deadline;
mod error;
pub mod fast;
mod hyper_lane;
mod metrics;
mod policy;
mod proxy;
mod upstream;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub use error::{ForwardError, Origin};
/// The fast lane's parsers with their invariants, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use fast::fuzz;
pub use proxy::Proxy;
pub use upstream::Upstream;

/// An answer's body: streamed from the upstream, or herald's own short one.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What herald does when a write passed through succeeded (`POST`, `PUT`, `PATCH` or `DELETE`
/// answered 2xx), given the path the client wrote to: write-through refresh.
pub type OnWrite = Arc<dyn Fn(&str) + Send + Sync>;

/// Whatever a request's WebSocket tunnel must keep until it closes (herald-http: the
/// connection's place under `server.max_connections`), carried as a request extension.
#[derive(Clone)]
pub struct TunnelHold(pub Arc<dyn std::any::Any + Send + Sync>);
