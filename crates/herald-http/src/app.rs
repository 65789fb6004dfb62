//! The public listener's request dispatch (spec section 4): the webhook API prefix, SSE streams,
//! then pass-through.

use std::net::SocketAddr;
use std::sync::Arc;

use herald_config::{Config, RouteTable};
use herald_poll::Hub;
use herald_sse::Sessions;
use herald_webhooks::Webhooks;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::proxy::Proxy;
use crate::{full, text, Body};
use http_body_util::BodyExt;

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
    pub(crate) webhooks: Arc<Webhooks>,
    /// `herald_cache_requests_total` per route, resolved once.
    pub(crate) cache_requests: Vec<CacheCounters>,
}

pub(crate) struct CacheCounters {
    pub(crate) hit: IntCounter,
    pub(crate) miss: IntCounter,
    pub(crate) bypass: IntCounter,
}

impl App {
    pub fn new(
        config: &Config,
        hub: Arc<Hub>,
        sessions: Sessions,
        webhooks: Arc<Webhooks>,
        metrics: HttpMetrics,
    ) -> Self {
        App {
            webhooks,
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

    /// Answers one request. The branches other than the pass-through are boxed: this future is
    /// moved into a box for every request, so it is kept as small as the pass-through's.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        if path.starts_with("/_herald/") {
            let api =
                path.strip_prefix(herald_webhooks::PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !api {
                return text(StatusCode::NOT_FOUND, "not found");
            }
            return Box::pin(self.webhook_api(req)).await;
        }
        if let Some(route) = self.stream_route(&req) {
            return Box::pin(self.stream(req, route)).await;
        }
        if let Some(route) = self.cache_route(&req) {
            return Box::pin(self.cached(req, route, peer)).await;
        }
        if req.method() == http::Method::OPTIONS && self.preflight_route(&req) {
            return self.preflight(&req);
        }
        self.proxy.forward(req, peer).await
    }
}

impl App {
    /// Whether herald answers requests for `path` itself, or may: its own API, or a route's
    /// path (streams, cache answers, CORS preflights). Everything else is passed through.
    pub(crate) fn claims(&self, path: &str) -> bool {
        path.starts_with("/_herald/")
            || self.routes.find(path).is_some()
            || crate::stream::stream_base(path).is_some_and(|base| self.routes.find(base).is_some())
    }

    /// Section 4, step 1: the webhook subscription API, with its body read whole (it is small).
    async fn webhook_api(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let limited = http_body_util::Limited::new(body, herald_webhooks::MAX_BODY);
        let body = match limited.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "request body larger than 64 KiB")
            }
            Err(_) => return text(StatusCode::BAD_REQUEST, "cannot read the request body"),
        };
        let resp = self.webhooks.handle(Request::from_parts(parts, body)).await;
        resp.map(full)
    }
}
