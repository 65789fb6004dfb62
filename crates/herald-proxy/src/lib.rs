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
mod policy;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounter, IntCounterVec};
use tokio_util::sync::CancellationToken;

pub use error::{ForwardError, Origin};
/// The fast lane's parsers with their invariants, for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub use fast::fuzz;
pub use upstream::Upstream;

/// An answer's body: streamed from the upstream, or herald's own short one.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whatever a request's WebSocket tunnel must keep until it closes (herald-http: the
/// connection's place under `server.max_connections`), carried as a request extension.
#[derive(Clone)]
pub struct TunnelHold(pub Arc<dyn std::any::Any + Send + Sync>);

/// Passes requests to one upstream, by either engine.
pub struct Proxy {
    upstream: Upstream,
    /// hyper's client, for the requests the fast lane does not take.
    client: Client<HttpsConnector<HttpConnector>, hyper_lane::Progress<Incoming>>,
    /// The fast lane's idle upstream connections.
    pool: Arc<fast::Pool>,
    /// `x-forwarded-proto` on hyper's engine: how clients reached herald.
    proto: HeaderValue,
    /// `herald_proxy_requests_total` by status class (1xx..5xx), resolved once.
    requests: [IntCounter; 5],
}

impl Proxy {
    /// `requests` is `herald_proxy_requests_total{status_class}`; `shutdown` stops the idle
    /// pool's reaper and closes what it holds.
    pub fn new(upstream: Upstream, client_tls: bool, requests: &IntCounterVec, shutdown: CancellationToken) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(upstream.timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls(upstream.ca_file.as_deref()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https);
        Proxy {
            upstream,
            client,
            pool: fast::Pool::new(shutdown),
            proto: HeaderValue::from_static(policy::forwarded_proto(client_tls)),
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| requests.with_label_values(&[class])),
        }
    }

    /// Counts an answer in `herald_proxy_requests_total`.
    fn count(&self, status: u16) {
        self.requests[usize::from(status / 100).clamp(1, 5) - 1].inc();
    }
}

/// TLS towards an https upstream: the webpki roots plus `upstream.ca_file` (already checked
/// readable by the poll client, which loads it first).
fn upstream_tls(ca_file: Option<&str>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path).into_iter().flatten().flatten() {
            if let Err(e) = roots.add(cert) {
                tracing::warn!(error = %e, path, "upstream.ca_file: a certificate was not added");
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
