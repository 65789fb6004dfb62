//! The admin listener (spec section 11): /metrics, /healthz, /readyz, /admin/watches and the
//! status page (`/`, its feed `/admin/status/events`, and `/admin/status`); the last four behind
//! `server.admin_token` when one is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use herald_poll::Hub;
use herald_webhooks::Webhooks;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::response::{full, text};
use crate::status::{watch_row, Status};
use crate::Body;

pub struct Admin {
    status: Arc<Status>,
    ready: AtomicBool,
    /// `server.admin_token`; replaced by a reload ([`Admin::set_token`]), so a leaked token is
    /// revoked without a restart.
    token: RwLock<Token>,
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
        let token = RwLock::new(Token { hash: admin_token.map(hash_token), replaced: shutdown.child_token() });
        let status = Arc::new(Status { registry, hub, webhooks });
        Admin { status, ready: AtomicBool::new(false), token, shutdown }
    }

    /// `server.admin_token` as a reload found it: requests from now on need it (`None`: none),
    /// and the status feeds opened before end (a browser reconnects, with the new token).
    pub fn set_token(&self, admin_token: Option<&str>) {
        let next = Token { hash: admin_token.map(hash_token), replaced: self.shutdown.child_token() };
        std::mem::replace(&mut *self.token.write().unwrap(), next).replaced.cancel();
    }

    /// Whether `req` may read `/admin/*` and the status page: always without a token, else with
    /// `Bearer <token>`, or HTTP Basic with the token as the password (any user name), which is
    /// how a browser can present it to the page and to the page's EventSource.
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = self.token.read().unwrap().hash else { return true };
        let value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let presented = if let Some(bearer) = value.strip_prefix("Bearer ") {
            bearer.trim().as_bytes().to_vec()
        } else if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = BASE64.decode(basic.trim()).unwrap_or_default();
            match decoded.iter().position(|&b| b == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => Vec::new(),
            }
        } else {
            Vec::new()
        };
        blake3::hash(&presented).as_bytes().ct_eq(&token).into()
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
        if let Some(cluster) = self.status.hub.cluster() {
            if let Err(e) = cluster.check().await {
                return text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}"));
            }
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.status.webhooks.store_ready()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready"),
            Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}")),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the store did not answer within 2s"),
        }
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if (path == "/" || path.starts_with("/admin/")) && !self.authorized(&req) {
            let mut resp = text(StatusCode::UNAUTHORIZED, "send Authorization: Bearer <server.admin_token>");
            // Basic first: a browser asks for it (the token as the password) and then sends it
            // with the page's own requests.
            for challenge in [r#"Basic realm="herald admin", charset="UTF-8""#, "Bearer"] {
                resp.headers_mut().append(header::WWW_AUTHENTICATE, http::HeaderValue::from_static(challenge));
            }
            return resp;
        }
        match req.uri().path() {
            "/" => Status::page(),
            "/admin/status" => json_pretty(&self.status.snapshot()),
            "/admin/status/events" => {
                // Ends at shutdown, or when a reload replaces the token it was opened with.
                let end = self.token.read().unwrap().replaced.clone();
                self.status.clone().feed(end)
            }
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" => self.readiness().await,
            "/metrics" => {
                let mut buf = Vec::new();
                let encoder = TextEncoder::new();
                if let Err(e) = encoder.encode(&self.status.registry.gather(), &mut buf) {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot encode metrics: {e}"));
                }
                Response::builder().header(header::CONTENT_TYPE, encoder.format_type()).body(full(buf)).expect("valid")
            }
            "/admin/watches" => {
                let rows: Vec<_> = self.status.hub.watches().into_iter().map(|w| watch_row(w, true)).collect();
                json_pretty(&json!({ "watches": rows }))
            }
            _ => text(StatusCode::NOT_FOUND, "not found (try /, /metrics, /healthz, /readyz, /admin/watches)"),
        }
    }
}

/// The admin token in force.
struct Token {
    /// blake3 of `server.admin_token`, compared in constant time.
    hash: Option<[u8; 32]>,
    /// Cancelled when a reload replaces the token (and at shutdown): the feeds opened under it end.
    replaced: CancellationToken,
}

/// Tokens are kept and compared as fixed-length hashes: neither length nor content leaks through timing.
fn hash_token(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn json_pretty(value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec_pretty(value).expect("JSON values serialize")))
        .expect("valid")
}
