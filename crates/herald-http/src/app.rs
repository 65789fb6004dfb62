//! The public listener's request dispatch (spec section 4): the webhook API prefix, SSE streams,
//! then pass-through.

use std::net::SocketAddr;
use std::sync::Arc;

use herald_config::{Config, RouteTable};
use herald_poll::Hub;
use herald_sse::Sessions;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::proxy::Proxy;
use crate::{text, Body};

/// Metrics of the public listener.
#[derive(Clone)]
pub struct HttpMetrics {
    pub(crate) proxy_requests: IntCounterVec,
    pub(crate) cache_requests: IntCounterVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let proxy_requests = IntCounterVec::new(
            Opts::new(
                "herald_proxy_requests_total",
                "Requests passed through to the upstream, by response status class.",
            ),
            &["status_class"],
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "herald_cache_requests_total",
                "Plain GETs on cache routes: hit (answered from a running watch), miss (waited for a new watch's first poll), bypass (upstream failing: passed on).",
            ),
            &["route", "result"],
        )?;
        registry.register(Box::new(proxy_requests.clone()))?;
        registry.register(Box::new(cache_requests.clone()))?;
        Ok(HttpMetrics { proxy_requests, cache_requests })
    }
}

/// Everything the public listener needs to answer a request.
pub struct App {
    pub(crate) routes: RouteTable,
    pub(crate) hub: Arc<Hub>,
    pub(crate) sessions: Sessions,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) proxy: Proxy,
    /// `herald_cache_requests_total` per route, resolved once.
    pub(crate) cache_requests: Vec<CacheCounters>,
}

pub(crate) struct CacheCounters {
    pub(crate) hit: IntCounter,
    pub(crate) miss: IntCounter,
    pub(crate) bypass: IntCounter,
}

impl App {
    pub fn new(config: &Config, hub: Arc<Hub>, sessions: Sessions, metrics: HttpMetrics) -> Self {
        App {
            routes: RouteTable::new(&config.routes),
            hub,
            sessions,
            cors_origins: config.sse.cors_origins.clone(),
            proxy: Proxy::new(&config.upstream, config.server.tls.is_some(), metrics.proxy_requests),
            cache_requests: config
                .routes
                .iter()
                .map(|r| {
                    let counter = |result| metrics.cache_requests.with_label_values(&[r.name.as_str(), result]);
                    CacheCounters { hit: counter("hit"), miss: counter("miss"), bypass: counter("bypass") }
                })
                .collect(),
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        if path.starts_with("/_herald/") {
            // The webhook subscription API answers 404 while no API key is configured (section 7).
            return text(StatusCode::NOT_FOUND, "not found");
        }
        if let Some(route) = self.stream_route(&req) {
            return self.stream(req, route).await;
        }
        if let Some(route) = self.cache_route(&req) {
            return self.cached(req, route, peer).await;
        }
        if req.method() == http::Method::OPTIONS && self.preflight_route(&req) {
            return self.preflight(&req);
        }
        self.proxy.forward(req, peer).await
    }
}
