//! The admin listener (spec section 11): /metrics, /healthz, /readyz and /admin/watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_poll::Hub;
use herald_webhooks::Webhooks;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;

use crate::{full, text, Body};

pub struct Admin {
    registry: Registry,
    hub: Arc<Hub>,
    webhooks: Arc<Webhooks>,
    ready: AtomicBool,
}

impl Admin {
    pub fn new(registry: Registry, hub: Arc<Hub>, webhooks: Arc<Webhooks>) -> Self {
        Admin { registry, hub, webhooks, ready: AtomicBool::new(false) }
    }

    /// Called once every listener is bound.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ready once the listeners are bound and while the store answers.
    async fn readiness(&self) -> Response<Body> {
        if !self.ready.load(Ordering::Acquire) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not ready: listeners are still starting");
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.webhooks.store_ready()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready"),
            Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}")),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the store did not answer within 2s"),
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
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
