//! The admin listener (spec section 11): /metrics, /healthz, /readyz and /admin/watches, the
//! last behind `server.admin_token` when one is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_poll::Hub;
use herald_webhooks::Webhooks;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::response::{full, text};
use crate::Body;

pub struct Admin {
    registry: Registry,
    hub: Arc<Hub>,
    webhooks: Arc<Webhooks>,
    ready: AtomicBool,
    /// blake3 of `server.admin_token`, compared in constant time.
    token: Option<[u8; 32]>,
    /// Fires when shutdown begins: from then on /readyz says so.
    shutdown: CancellationToken,
}

impl Admin {
    pub fn new(
        registry: Registry,
        hub: Arc<Hub>,
        webhooks: Arc<Webhooks>,
        admin_token: Option<&str>,
        shutdown: CancellationToken,
    ) -> Self {
        let token = admin_token.map(|t| *blake3::hash(t.as_bytes()).as_bytes());
        Admin { registry, hub, webhooks, ready: AtomicBool::new(false), token, shutdown }
    }

    /// Whether `req` may read `/admin/*`: always without a token, else with `Bearer <token>`.
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        blake3::hash(presented.trim().as_bytes()).as_bytes().ct_eq(token).into()
    }

    /// Called once every listener is bound.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ready once the listeners are bound and while the store answers, until shutdown begins.
    async fn readiness(&self) -> Response<Body> {
        if self.shutdown.is_cancelled() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down");
        }
        if !self.ready.load(Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: listeners are still starting");
        }
        if let Some(cluster) = self.hub.cluster() {
            if let Err(e) = cluster.check().await {
                return text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}"));
            }
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.webhooks.store_ready()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready"),
            Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}")),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the store did not answer within 2s"),
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path().starts_with("/admin/") && !self.authorized(&req) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "send Authorization: Bearer <server.admin_token>");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return resp;
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" => self.readiness().await,
            "/metrics" => {
                let mut buf = Vec::new();
                let encoder = TextEncoder::new();
                if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot encode metrics: {e}"));
                }
                Response::builder().header(header::CONTENT_TYPE, encoder.format_type()).body(full(buf)).expect("valid")
            }
            "/admin/watches" => {
                let rows: Vec<_> = self
                    .hub
                    .watches()
                    .into_iter()
                    .map(|w| {
                        json!({
                            "route": w.route,
                            "path": w.path,
                            "scope": w.scope,
                            "access": w.access,
                            "subscribers": w.subscribers,
                            "interval_ms": w.interval.as_millis() as u64,
                            "last_poll": w.last_poll.map(unix_ms),
                            "last_change": w.last_change.map(unix_ms),
                            "etag": w.etag,
                            "state": w.state,
                            "holder": w.holder,
                        })
                    })
                    .collect();
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(full(serde_json::to_vec_pretty(&json!({ "watches": rows })).expect("JSON values serialize")))
                    .expect("valid")
            }
            _ => text(StatusCode::NOT_FOUND, "not found (try /metrics, /healthz, /readyz, /admin/watches)"),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
