//! The subscription API under `/_herald/v1/webhooks` (spec section 7): bearer keys compared in
//! constant time, RFC 9457 problem+json errors that name the field, secrets shown only on
//! creation and rotation.

// Helpers here return `Err(answer)`: the error is the HTTP answer itself, built once and returned
// at once, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use herald_config::{check_destination_url, check_filter, check_secret};
use herald_poll::Refusal;
use herald_store::{now_ms, Message, MessageStatus, Subscription, SubscriptionStatus};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tracing::info;

use crate::events::rfc3339;
use crate::watcher::{header_map, new_message, Start};
use crate::{events, sign, Webhooks};

/// Where the API lives.
pub const PREFIX: &str = "/_herald/v1/webhooks";
/// Where change hints go (spec section 13).
pub const NOTIFY: &str = "/_herald/v1/notify";
/// Paths one hint may name.
const MAX_HINT_PATHS: usize = 100;
/// How long the secret before a rotation keeps signing.
const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// Request bodies larger than this are refused.
pub const MAX_BODY: usize = 64 << 10;

/// An API answer: JSON or problem+json.
pub type ApiResponse = Response<Bytes>;

/// A field error: which field, and what is wrong with it.
struct FieldError {
    field: &'static str,
    detail: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    url: String,
    path: String,
    #[serde(default)]
    filter: Vec<String>,
    payload: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    status: Option<String>,
    filter: Option<Vec<String>>,
    url: Option<String>,
    payload: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    since: String,
}

impl Webhooks {
    /// Answers one API request; `req`'s body was read (at most [`MAX_BODY`]) by the caller.
    pub async fn handle(self: &Arc<Self>, req: Request<Bytes>) -> ApiResponse {
        if !self.api_enabled() {
            return problem(StatusCode::NOT_FOUND, "Not Found", "no such resource", vec![]);
        }
        let Some(owner) = self.authorized(req.headers()) else {
            return unauthorized();
        };
        let owner = &owner;
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or("/-");
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let query = parts.uri.query().unwrap_or("");
        let method = parts.method;
        match (method, segments.as_slice()) {
            (Method::POST, [] | [""]) => self.create(&body, owner).await,
            (Method::GET, [] | [""]) => self.list(owner),
            (Method::GET, [id]) => match self.find(id, owner) {
                Some(s) => json_response(StatusCode::OK, &self.view(&s, None)),
                None => not_found(id),
            },
            (Method::PATCH, [id]) => self.patch(id, owner, &body).await,
            (Method::DELETE, [id]) => self.delete(id, owner).await,
            (Method::POST, [id, "secret", "rotate"]) => self.rotate(id, owner).await,
            (Method::GET, [id, "deliveries"]) => self.deliveries(id, owner, query).await,
            (Method::POST, [id, "replay"]) => self.replay(id, owner, &body).await,
            (Method::POST, [id, "test"]) => self.test(id, owner).await,
            (_, [] | [""]) => not_allowed("GET, POST"),
            (_, [_]) => not_allowed("GET, PATCH, DELETE"),
            (_, [_, "secret", "rotate"] | [_, "replay"] | [_, "test"]) => not_allowed("POST"),
            (_, [_, "deliveries"]) => not_allowed("GET"),
            _ => problem(StatusCode::NOT_FOUND, "Not Found", "no such resource", vec![]),
        }
    }

    /// `POST /_herald/v1/notify` (spec section 13): a change hint from the upstream re-polls the
    /// watches of the paths it names at once. 404 unless `webhooks.notify`; an API key needed.
    /// Answers `202 {}` whatever the paths: never how many watches (so users) a path has.
    pub async fn notify(self: &Arc<Self>, req: Request<Bytes>) -> ApiResponse {
        if !(self.api_enabled() && self.shared.cfg.notify) {
            return problem(StatusCode::NOT_FOUND, "Not Found", "no such resource", vec![]);
        }
        if self.authorized(req.headers()).is_none() {
            return unauthorized();
        }
        if req.method() != Method::POST {
            return not_allowed("POST");
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Hint {
            paths: Vec<String>,
        }
        let invalid = |field: &'static str, detail: String| {
            let errors = vec![FieldError { field, detail: detail.clone() }];
            problem(StatusCode::BAD_REQUEST, "Invalid hint", &detail, errors)
        };
        let hint: Hint = match serde_json::from_slice(req.body()) {
            Ok(hint) => hint,
            Err(e) => return invalid("body", format!("expected {{\"paths\": [\"/…\"]}}: {e}")),
        };
        if hint.paths.is_empty() || hint.paths.len() > MAX_HINT_PATHS {
            return invalid("paths", format!("between 1 and {MAX_HINT_PATHS} paths"));
        }
        if let Some(bad) = hint.paths.iter().find(|p| !p.starts_with('/') || p.contains(['?', '#'])) {
            return invalid("paths", format!("{bad:?} is not an absolute path without query"));
        }
        for path in &hint.paths {
            self.shared.hub.refresh(path).await;
        }
        // No count: how many watches a path has would tell any key how many users watch it.
        json_response(StatusCode::ACCEPTED, &json!({}))
    }

    /// Checks the bearer key against every configured key without stopping at a match, on
    /// fixed-length hashes: neither the position nor the length of a key leaks through timing.
    /// The owner name of the key when it is one of them.
    fn authorized(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))?
            .trim();
        let presented = blake3::hash(token.as_bytes());
        let mut ok = subtle::Choice::from(0);
        for key in self.shared.api_keys.read().unwrap().iter() {
            ok |= presented.as_bytes().ct_eq(key);
        }
        let owner = blake3::keyed_hash(&self.shared.owner_key, token.as_bytes());
        bool::from(ok).then(|| owner.to_hex().to_string())
    }

    /// The subscription `id`, when the caller may see it: its own, or one declared in the
    /// configuration. Another key's is as absent as one that does not exist (404).
    fn find(&self, id: &str, owner: &str) -> Option<Subscription> {
        self.shared.subs.read().unwrap().get(id).filter(|s| visible(s, owner)).cloned()
    }

    /// The subscription as the API shows it: never its secret (unless given) nor its headers.
    fn view(&self, s: &Subscription, secret: Option<&str>) -> Value {
        let payload = s.payload.clone().or_else(|| {
            let route = self.shared.route_of(&s.path)?;
            Some(crate::payload_name(events::default_payload(&self.shared.hub.route(route))).to_string())
        });
        let mut v = json!({
            "id": s.id,
            "url": s.url,
            "path": s.path,
            "filter": s.filter,
            "payload": payload,
            "description": s.description,
            "status": s.status,
            "declared": s.declared,
            "created_at": rfc3339(s.created_at),
            "failing_since": s.failing_since.map(rfc3339),
        });
        if let Some(secret) = secret {
            v["secret"] = json!(secret);
        }
        v
    }

    fn list(&self, owner: &str) -> ApiResponse {
        let subs = self.shared.subs.read().unwrap();
        let mut all: Vec<&Subscription> = subs.values().filter(|s| visible(s, owner)).collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let views: Vec<Value> = all.into_iter().map(|s| self.view(s, None)).collect();
        json_response(StatusCode::OK, &json!(views))
    }

    async fn create(self: &Arc<Self>, body: &Bytes, owner: &str) -> ApiResponse {
        let req: Create = match parse(body) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let mut errors = Vec::new();
        if let Err(e) = self.check_url(&req.url).await {
            errors.push(e);
        }
        let route = self.check_path(&req.path, &mut errors);
        check_filters(&req.filter, &mut errors);
        check_payload(req.payload.as_deref(), &mut errors);
        if let Some(secret) = &req.secret {
            if let Err(detail) = check_secret(secret) {
                errors.push(FieldError { field: "secret", detail });
            }
        }
        for (name, value) in &req.headers {
            if http::HeaderName::try_from(name.as_str()).is_err() || http::HeaderValue::try_from(value).is_err() {
                errors.push(FieldError { field: "headers", detail: format!("invalid header {name:?}") });
            }
        }
        let Some(route) = route.filter(|_| errors.is_empty()) else {
            return invalid(errors);
        };
        let headers: Vec<(String, String)> =
            req.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        // The upstream decides: the path must answer 2xx to these headers, as for a stream.
        if let Err((refusal, service)) = self.upstream_accepts(route, &req.path, &headers).await {
            // herald's own limits (too many watches, shutting down) ask to come back later.
            if let Some(after) = refusal.retry_after {
                let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let detail = String::from_utf8_lossy(&refusal.body).trim().to_string();
                let mut resp = problem(status, "Try again later", &detail, vec![]);
                resp.headers_mut().insert(header::RETRY_AFTER, after.as_secs().max(1).into());
                return resp;
            }
            if service && matches!(refusal.status, 401 | 403) {
                // Not the subscription's headers: herald's own credential for the shared watch.
                let detail = format!(
                    "the upstream answered {} to herald's service credential for this path; try again later",
                    refusal.status
                );
                return problem(StatusCode::BAD_GATEWAY, "Upstream refused the service credential", &detail, vec![]);
            }
            let field = if matches!(refusal.status, 401 | 403) { "headers" } else { "path" };
            return invalid(vec![FieldError {
                field,
                detail: format!("the upstream answered {} for this path with these headers", refusal.status),
            }]);
        }
        let secret = req.secret.unwrap_or_else(sign::generate_secret);
        let sub = Subscription {
            id: new_id(),
            url: req.url,
            path: req.path,
            filter: req.filter,
            payload: req.payload,
            secret: secret.clone(),
            previous_secret: None,
            headers,
            description: req.description,
            status: SubscriptionStatus::Active,
            declared: false,
            created_at: now_ms(),
            failing_since: None,
            owner: Some(owner.to_string()),
        };
        if let Err(resp) = self.save(sub.clone()).await {
            return resp;
        }
        info!(subscription = %sub.id, route = %self.shared.hub.route(route).name, "webhook subscription created");
        let mut resp = json_response(StatusCode::CREATED, &self.view(&sub, Some(&secret)));
        if let Ok(loc) = http::HeaderValue::try_from(format!("{PREFIX}/{}", sub.id)) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        resp
    }

    /// Whether the upstream answers 2xx for `path` to these headers (a `shared` route's admission
    /// check, then the watch's poll); with a refusal, whether it was the service credential's
    /// (the poll of a `shared` or `public` watch), not the subscription's.
    async fn upstream_accepts(
        &self,
        route: usize,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(), (Refusal, bool)> {
        let hub = &self.shared.hub;
        let (key, credentials) =
            hub.watch_key(route, path.to_string(), &header_map(headers)).await.map_err(|r| (r, false))?;
        let service = hub.route(route).access != herald_config::Access::PerSubscriber;
        hub.current(key, credentials).await.map(drop).map_err(|r| (r, service))
    }

    async fn check_url(&self, url: &str) -> Result<(), FieldError> {
        let err = |detail| FieldError { field: "url", detail };
        check_destination_url(url).map_err(err)?;
        let parsed = reqwest::Url::parse(url).map_err(|e| err(format!("invalid URL: {e}")))?;
        let host = parsed.host_str().unwrap_or_default();
        let port = parsed.port_or_known_default().unwrap_or(443);
        self.shared.guard.check_host(host, port).await.map_err(|e| err(e.to_string()))
    }

    fn check_path(&self, path: &str, errors: &mut Vec<FieldError>) -> Option<usize> {
        let err = |detail: String| FieldError { field: "path", detail };
        if !path.starts_with('/') || path.contains('#') {
            errors.push(err(format!("{path:?} is not a path (expected e.g. /tasks or /tasks/42)")));
            return None;
        }
        if let Err(e) = herald_config::check_segments(path.split('?').next().unwrap_or(path)) {
            errors.push(err(e));
            return None;
        }
        match self.shared.route_of(path) {
            None => errors.push(err(format!("{path:?} matches no route"))),
            Some(i) if !self.shared.hub.route(i).webhooks => {
                errors.push(err(format!("route {:?} does not allow webhooks", self.shared.hub.route(i).name)))
            }
            Some(i) => return Some(i),
        }
        None
    }

    async fn patch(self: &Arc<Self>, id: &str, owner: &str, body: &Bytes) -> ApiResponse {
        let req: Patch = match parse(body) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let Some(mut sub) = self.find(id, owner) else { return not_found(id) };
        let mut errors = Vec::new();
        if sub.declared && (req.url.is_some() || req.filter.is_some() || req.payload.is_some()) {
            return problem(
                StatusCode::CONFLICT,
                "Declared in the configuration",
                "this subscription is declared in webhooks.subscriptions: change it there (only status can be changed here)",
                vec![],
            );
        }
        match req.status.as_deref() {
            None => {}
            Some("active") => {
                if sub.status.stopped() {
                    sub.failing_since = None;
                }
                sub.status = SubscriptionStatus::Active;
            }
            Some("paused") => sub.status = SubscriptionStatus::Paused,
            Some(other) => errors.push(FieldError {
                field: "status",
                detail: format!("invalid status {other:?} (expected active or paused)"),
            }),
        }
        if let Some(url) = req.url {
            match self.check_url(&url).await {
                Ok(()) => sub.url = url,
                Err(e) => errors.push(e),
            }
        }
        if let Some(filter) = req.filter {
            check_filters(&filter, &mut errors);
            sub.filter = filter;
        }
        if req.payload.is_some() {
            check_payload(req.payload.as_deref(), &mut errors);
            sub.payload = req.payload;
        }
        if !errors.is_empty() {
            return invalid(errors);
        }
        if let Err(resp) = self.save(sub.clone()).await {
            return resp;
        }
        json_response(StatusCode::OK, &self.view(&sub, None))
    }

    async fn delete(self: &Arc<Self>, id: &str, owner: &str) -> ApiResponse {
        let declared = match self.find(id, owner) {
            None => return not_found(id),
            Some(s) => s.declared,
        };
        if declared {
            return problem(
                StatusCode::CONFLICT,
                "Declared in the configuration",
                "this subscription is declared in webhooks.subscriptions: remove it there",
                vec![],
            );
        }
        {
            let _order = self.shared.sub_writes.lock().await;
            if let Err(e) = self.shared.store.delete_subscription(id.to_string()).await {
                return storage_failed(&e);
            }
            self.shared.subs.write().unwrap().remove(id);
        }
        self.watcher.refresh(Start::Fresh);
        if let Ok(n) = self.shared.store.pending().await {
            self.shared.metrics.queue_depth.set(n as i64);
        }
        info!(subscription = %id, "webhook subscription deleted");
        Response::builder().status(StatusCode::NO_CONTENT).body(Bytes::new()).expect("static parts")
    }

    async fn rotate(self: &Arc<Self>, id: &str, owner: &str) -> ApiResponse {
        let Some(mut sub) = self.find(id, owner) else { return not_found(id) };
        let secret = sign::generate_secret();
        let until = now_ms() + ROTATION_OVERLAP.as_millis() as u64;
        sub.previous_secret = Some((std::mem::replace(&mut sub.secret, secret.clone()), until));
        if let Err(resp) = self.save(sub).await {
            return resp;
        }
        info!(subscription = %id, "webhook secret rotated; the previous one signs too for 24h");
        json_response(StatusCode::OK, &json!({ "secret": secret }))
    }

    async fn deliveries(&self, id: &str, owner: &str, query: &str) -> ApiResponse {
        if self.find(id, owner).is_none() {
            return not_found(id);
        }
        let mut status = None;
        let mut limit = 100;
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match (k, v) {
                ("status", "pending") => status = Some(MessageStatus::Pending),
                ("status", "delivered") => status = Some(MessageStatus::Delivered),
                ("status", "dead") => status = Some(MessageStatus::Dead),
                ("status", other) => {
                    return invalid(vec![FieldError {
                        field: "status",
                        detail: format!("invalid status {other:?} (expected pending, delivered or dead)"),
                    }])
                }
                ("limit", n) => match n.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => limit = n,
                    _ => {
                        return invalid(vec![FieldError {
                            field: "limit",
                            detail: format!("invalid limit {n:?} (expected 1 to 1000)"),
                        }])
                    }
                },
                _ => {}
            }
        }
        match self.shared.store.messages(id.to_string(), status, limit).await {
            Ok(messages) => {
                json_response(StatusCode::OK, &json!(messages.iter().map(delivery_view).collect::<Vec<_>>()))
            }
            Err(e) => storage_failed(&e),
        }
    }

    async fn replay(&self, id: &str, owner: &str, body: &Bytes) -> ApiResponse {
        let req: Replay = match parse(body) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if self.find(id, owner).is_none() {
            return not_found(id);
        }
        let Ok(since) = humantime::parse_rfc3339_weak(&req.since) else {
            return invalid(vec![FieldError {
                field: "since",
                detail: format!("invalid timestamp {:?} (expected RFC 3339, e.g. 2026-11-27T10:00:00Z)", req.since),
            }]);
        };
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        match self.shared.store.replay(id.to_string(), since, now_ms()).await {
            Ok(n) => {
                self.shared.metrics.queue_depth.add(n as i64);
                self.shared.wake.notify_one();
                json_response(StatusCode::ACCEPTED, &json!({ "replayed": n }))
            }
            Err(e) => storage_failed(&e),
        }
    }

    async fn test(&self, id: &str, owner: &str) -> ApiResponse {
        if self.find(id, owner).is_none() {
            return not_found(id);
        }
        let now = now_ms();
        let data = json!({ "subscription": id }).to_string();
        let message: Message = new_message(id, "herald.ping", events::body("herald.ping", now, &data), now);
        let message_id = message.id.clone();
        match self.shared.store.enqueue(vec![message]).await {
            Ok(()) => {
                self.shared.metrics.queue_depth.inc();
                self.shared.wake.notify_one();
                json_response(StatusCode::ACCEPTED, &json!({ "message": message_id }))
            }
            Err(e) => storage_failed(&e),
        }
    }

    /// Stores a subscription, then makes it live.
    async fn save(self: &Arc<Self>, sub: Subscription) -> Result<(), ApiResponse> {
        let _order = self.shared.sub_writes.lock().await;
        self.shared.store.put_subscription(sub.clone()).await.map_err(|e| storage_failed(&e))?;
        self.shared.subs.write().unwrap().insert(sub.id.clone(), sub);
        self.watcher.refresh(Start::Fresh);
        Ok(())
    }
}

/// A subscription is the key's that created it; declared ones are everybody's (read-only).
fn visible(sub: &Subscription, owner: &str) -> bool {
    sub.owner.as_deref().is_none_or(|o| o == owner)
}

fn check_filters(filter: &[String], errors: &mut Vec<FieldError>) {
    for f in filter {
        if let Err(detail) = check_filter(f) {
            errors.push(FieldError { field: "filter", detail });
        }
    }
}

fn check_payload(payload: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(p) = payload.filter(|p| !matches!(*p, "rich" | "lean")) {
        errors.push(FieldError { field: "payload", detail: format!("invalid payload {p:?} (expected rich or lean)") });
    }
}

fn delivery_view(m: &Message) -> Value {
    json!({
        "id": m.id,
        "event": m.event_type,
        "status": m.status.as_str(),
        "attempts": m.attempts,
        "created_at": rfc3339(m.created_at),
        "last_attempt": m.last_attempt.map(rfc3339),
        "last_status": m.last_status,
        "last_error": m.last_error,
        "next_attempt": (m.status == MessageStatus::Pending).then(|| rfc3339(m.next_attempt)),
    })
}

/// `ep_` and 20 random hex digits.
fn new_id() -> String {
    let secret = sign::generate_secret();
    format!("ep_{}", &blake3::hash(secret.as_bytes()).to_hex()[..20])
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiResponse> {
    serde_json::from_slice(body).map_err(|e| {
        // serde names the field in its message ("unknown field `x`", "missing field `url`").
        let field = e.to_string().split('`').nth(1).map(str::to_string);
        let errors = field.map(|f| json!([{ "field": f, "detail": e.to_string() }])).unwrap_or(json!([]));
        let mut v = problem_body(StatusCode::BAD_REQUEST, "Invalid request body", &e.to_string());
        v["errors"] = errors;
        json_with_type(StatusCode::BAD_REQUEST, &v, "application/problem+json")
    })
}

fn invalid(errors: Vec<FieldError>) -> ApiResponse {
    let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect::<Vec<_>>().join("; ");
    problem(StatusCode::BAD_REQUEST, "Invalid subscription", &detail, errors)
}

fn not_found(id: &str) -> ApiResponse {
    problem(StatusCode::NOT_FOUND, "Not Found", &format!("no webhook subscription {id:?}"), vec![])
}

/// 401 for a request without one of `webhooks.api_keys`.
fn unauthorized() -> ApiResponse {
    let mut resp = problem(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "send Authorization: Bearer <one of webhooks.api_keys>",
        vec![],
    );
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    resp
}

fn not_allowed(allow: &'static str) -> ApiResponse {
    let mut resp = problem(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", &format!("allowed: {allow}"), vec![]);
    resp.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}

fn storage_failed(e: &herald_store::StoreError) -> ApiResponse {
    tracing::error!(error = %e, "webhook API: storage failed");
    problem(StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable", "the store did not answer; try again", vec![])
}

fn problem_body(status: StatusCode, title: &str, detail: &str) -> Value {
    json!({ "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail })
}

fn problem(status: StatusCode, title: &str, detail: &str, errors: Vec<FieldError>) -> ApiResponse {
    let mut v = problem_body(status, title, detail);
    if !errors.is_empty() {
        v["errors"] = errors.iter().map(|e| json!({ "field": e.field, "detail": e.detail })).collect();
    }
    json_with_type(status, &v, "application/problem+json")
}

fn json_response(status: StatusCode, v: &Value) -> ApiResponse {
    json_with_type(status, v, "application/json")
}

fn json_with_type(status: StatusCode, v: &Value, content_type: &'static str) -> ApiResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(v.to_string()))
        .expect("static parts are valid")
}

#[cfg(test)]
mod tests {
    //! The API over a memory store and a hub whose upstream answers `[]` on `/tasks`.

    use herald_poll::{Answer, Fetch, FetchFuture, Hub, HubConfig, PollMetrics};
    use herald_store::RedbStore;
    use prometheus::Registry;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::WebhookMetrics;

    const KEY: &str = "key-0123456789abcdef";

    struct Upstream;

    impl Fetch for Upstream {
        fn fetch<'a>(&'a self, req: herald_poll::Request<'a>) -> FetchFuture<'a> {
            let found = req.target.starts_with("/tasks") || req.target.starts_with("/me/tasks");
            Box::pin(async move {
                Ok(if found {
                    Answer::body("[]")
                } else {
                    Answer::Status { status: 404, content_type: None, body: Bytes::new(), retry_after: None }
                })
            })
        }
    }

    async fn webhooks() -> Arc<Webhooks> {
        let yaml = format!(
            "upstream: {{url: 'http://127.0.0.1:1'}}\nroutes:\n  - {{name: tasks, path: /tasks, events: {{format: \
             collection, collection: {{id: /id}}}}}}\n  - {{name: mine, path: /me/tasks, access: per-subscriber, \
             vary: [authorization]}}\nwebhooks:\n  api_keys: [{KEY}]\n  \
             allow_private_destinations: [127.0.0.0/8]\n"
        );
        let cfg = herald_config::load("t.yaml", &yaml, &|_| None).unwrap();
        let registry = Registry::new();
        let shutdown = CancellationToken::new();
        let hub = Hub::new(
            HubConfig {
                routes: cfg.routes.clone(),
                queue: 16,
                max_polls_per_second: 100.0,
                max_concurrency: 4,
                scope_key: [3; 32],
                limits: herald_config::Limits::default(),
                cluster: None,
            },
            Arc::new(Upstream),
            &PollMetrics::new(&registry).unwrap(),
            shutdown.clone(),
        );
        let store = Arc::new(RedbStore::memory().unwrap());
        let metrics = WebhookMetrics::new(&registry).unwrap();
        Webhooks::start(cfg.webhooks, &cfg.routes, store, hub, metrics, shutdown).await.unwrap()
    }

    async fn call(w: &Arc<Webhooks>, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(format!("{PREFIX}{path}"));
        if let Some(key) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let resp = w.handle(req.body(Bytes::from(body.to_string())).unwrap()).await;
        (resp.status().as_u16(), serde_json::from_slice(resp.body()).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn no_key_or_another_key_is_401() {
        let w = webhooks().await;
        assert_eq!(call(&w, "GET", "", None, "").await.0, 401);
        assert_eq!(call(&w, "GET", "", Some("key-0123456789abcdeX"), "").await.0, 401);
        assert_eq!(call(&w, "GET", "", Some(KEY), "").await.0, 200);
    }

    #[tokio::test]
    async fn keys_replaced_by_a_reload_answer_from_the_next_request_on() {
        let w = webhooks().await;
        let other = "key-fedcba9876543210";
        w.set_api_keys(&[other.to_string()]);
        assert_eq!(call(&w, "GET", "", Some(KEY), "").await.0, 401, "the removed key is revoked");
        assert_eq!(call(&w, "GET", "", Some(other), "").await.0, 200);
        w.set_api_keys(&[]);
        assert_eq!(call(&w, "GET", "", Some(other), "").await.0, 404, "no keys: no API");
    }

    #[tokio::test]
    async fn every_wrong_field_is_named_in_one_answer() {
        let w = webhooks().await;
        let body = r#"{"url":"ftp://x","path":"/nope","filter":["*.x"],"payload":"fat","secret":"whsec_abc","headers":{"bad name":"v"}}"#;
        let (status, problem) = call(&w, "POST", "", Some(KEY), body).await;
        assert_eq!(status, 400);
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["url", "path", "filter", "payload", "secret", "headers"], "{problem}");
        let (status, problem) =
            call(&w, "POST", "", Some(KEY), r#"{"url":"http://127.0.0.1:9/h","path":"/tasks","colour":1}"#).await;
        assert_eq!(status, 400, "unknown fields are refused: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");
        let (status, problem) =
            call(&w, "POST", "", Some(KEY), r#"{"url":"http://127.0.0.1:9/h","path":"/tasks/../x"}"#).await;
        assert_eq!(status, 400, "{problem}");
    }

    #[tokio::test]
    async fn subscriptions_share_a_watch_by_resource_and_credential() {
        let w = webhooks().await;
        let subscribe = |path: &str, user: Option<&str>| {
            let headers = user.map(|u| format!(r#","headers":{{"authorization":"Bearer {u}"}}"#)).unwrap_or_default();
            format!(r#"{{"url":"http://127.0.0.1:9/hook","path":"{path}"{headers}}}"#)
        };
        for (path, user) in [
            ("/tasks", None),
            ("/tasks", None),
            ("/me/tasks", Some("alice")),
            ("/me/tasks", Some("alice")),
            ("/me/tasks", Some("bob")),
        ] {
            assert_eq!(call(&w, "POST", "", Some(KEY), &subscribe(path, user)).await.0, 201);
        }
        // One watch for the public resource, one per credential on the per-subscriber one.
        assert_eq!(w.watcher.running(), 3);
    }

    #[tokio::test]
    async fn the_secret_is_shown_on_creation_only() {
        let w = webhooks().await;
        let (status, created) =
            call(&w, "POST", "", Some(KEY), r#"{"url":"http://127.0.0.1:9/hook","path":"/tasks"}"#).await;
        assert_eq!(status, 201, "{created}");
        assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
        let id = created["id"].as_str().unwrap();
        let (status, shown) = call(&w, "GET", &format!("/{id}"), Some(KEY), "").await;
        assert_eq!(status, 200);
        assert!(shown.get("secret").is_none(), "{shown}");
        assert_eq!(shown["url"], "http://127.0.0.1:9/hook");
    }
}
