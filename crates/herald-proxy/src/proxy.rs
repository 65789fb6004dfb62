//! One upstream, both engines: requests hyper parsed go through [`HyperLane`]; plain
//! connections start in the [`FastLane`].

use hyper::body::Incoming;
use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;

use crate::fast::FastLane;
use crate::hyper_lane::HyperLane;
use crate::metrics::Requests;
use crate::{Body, OnWrite, Upstream};

/// Passes requests to one upstream, by either engine.
pub struct Proxy {
    hyper: HyperLane,
    fast: FastLane,
}

impl Proxy {
    /// `requests` is `herald_proxy_requests_total{status_class}`; `client_tls` says how clients
    /// reach herald (`x-forwarded-proto`); `on_write` hears of every write that succeeded;
    /// `shutdown` stops the fast lane's idle pool's reaper and closes what it holds.
    pub fn new(
        upstream: Upstream,
        client_tls: bool,
        requests: &IntCounterVec,
        on_write: Option<OnWrite>,
        shutdown: CancellationToken,
    ) -> Self {
        let requests = Requests::new(requests);
        Proxy {
            hyper: HyperLane::new(upstream.clone(), client_tls, requests.clone(), on_write.clone()),
            fast: FastLane::new(upstream, requests, on_write, shutdown),
        }
    }

    /// Passes `req` to the upstream and its answer back; herald's own 502 or 504 when there is
    /// none.
    pub async fn forward(&self, req: http::Request<Incoming>, peer: std::net::SocketAddr) -> http::Response<Body> {
        self.hyper.forward(req, peer).await
    }

    /// The fast lane, for [`crate::fast::serve`].
    pub fn fast_lane(&self) -> &FastLane {
        &self.fast
    }
}
