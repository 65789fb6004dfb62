//! The legacy API: `/tasks`, `/tasks/{id}`, a per-user `/me/tasks` (`Authorization: Bearer
//! alice|bob`) and `/echo`, answering conditional requests with 304. An OAuth 2.0 token endpoint
//! (`POST /oauth/token`, client credentials) issues short-lived tokens that `/service/tasks`
//! requires. Tests drive it with
//! mutations and injected faults; `herald demo` lets it change by itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A misbehaviour injected into the next answers for a path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds when given).
    Status(u16, Option<u64>),
    /// Wait this long before answering (longer than herald's timeout: a timeout).
    Delay(Duration),
}

/// How `/paged/tasks` names its next page.
#[derive(Debug, Clone, Default)]
pub enum PageLinks {
    /// `?page=N+1` in the body (`next`, and `cursor` as a number) and in `Link`.
    #[default]
    Plain,
    /// In `Link` alone, pinned to the version of the list the page was served from
    /// (`?page=N+1&v=V`, as some APIs keep a listing consistent across its pages). A page asked
    /// with an older `v` is served from that version, and a page's ETag covers its own items:
    /// page 1 answers 304 with a new `Link` when only a later page changed.
    Versioned,
    /// Page 1 names this as its next page, in `Link` and in the body (a hostile or broken API).
    Fixed(String),
}

/// Versions of the task list kept for [`PageLinks::Versioned`].
const VERSIONS_KEPT: usize = 64;

/// One request as the API saw it, for tests that check what herald sent on whose behalf.
#[derive(Debug, Clone)]
pub struct Requested {
    pub at: std::time::Instant,
    pub method: String,
    /// Path and query.
    pub target: String,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    pub traceparent: Option<String>,
}

/// Requests kept in the log ([`LegacyApi::seen`]); older ones are dropped.
const SEEN_MAX: usize = 200_000;

/// What one path was asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    pub requests: u64,
    pub not_modified: u64,
    pub errors: u64,
}

#[derive(Clone, Default)]
pub struct LegacyApi {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tasks: Vec<Value>,
    next_id: u64,
    users: HashMap<String, Vec<Value>>,
    revoked: HashSet<String>,
    /// When each resource last changed, for Last-Modified.
    modified: HashMap<String, SystemTime>,
    faults: HashMap<String, VecDeque<Fault>>,
    stats: HashMap<String, PathStats>,
    seen: VecDeque<Requested>,
    without_validators: bool,
    /// Bytes of filler added to every task, to make large representations.
    padding: usize,
    /// Tasks per page of `/paged/tasks`.
    page_size: usize,
    page_links: PageLinks,
    /// Bumped at every change of the task list; with [`PageLinks::Versioned`], the lists of the
    /// last versions, newest last.
    version: u64,
    versions: VecDeque<(u64, Vec<Value>)>,
    oauth: OAuth,
    quota: Option<Quota>,
    /// Whose quota is spent for the next hour: GETs with `Authorization: Bearer <name>` (`None`:
    /// without `Authorization`) are answered 429 with none left ([`LegacyApi::spend_quota_of`]).
    spent: HashSet<Option<String>>,
    /// Requests carrying exactly this `Cookie` are answered 401 ([`LegacyApi::refuse_cookie`]).
    refused_cookie: Option<String>,
    /// What `/changes/…` has told: each list's items with the revision they last changed at.
    changes: HashMap<String, Changes>,
    /// The last revision given out, across lists.
    revision: u64,
    delta_form: DeltaForm,
}

/// How `/changes/<list>` (a list that can say what changed since a revision) answers: the
/// list's items, each with `"rev"`, the revision it last changed at; with `?since=N` only
/// those changed at `N` or later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaForm {
    pub cursor: DeltaCursor,
    /// Removed items as tombstones (`{"id", "rev", "deleted": true}`) among the changes;
    /// otherwise only `/changes/<list>/deleted?since=N` lists them (`{"id", "rev"}`).
    pub tombstones: bool,
}

/// Where `/changes/<list>` names the revision to ask from next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeltaCursor {
    /// Nowhere: the client takes the greatest `rev` it saw.
    #[default]
    Max,
    /// The body is `{"items": […], "next": "<revision>"}`.
    Body,
    /// The `x-next-since` field.
    Header,
}

/// One list's items as `/changes/…` last saw them, and its removals.
#[derive(Default)]
struct Changes {
    items: HashMap<String, (u64, Value)>,
    removed: Vec<(u64, String)>,
}

/// Which rate-limit fields [`LegacyApi::enforce_quota`] answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaForm {
    /// The IETF httpapi draft: `RateLimit: "default";r=…;t=…` and `RateLimit-Policy:
    /// "default";q=…;w=…` (structured fields).
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, and `X-RateLimit-Reset` as a Unix time
    /// (GitHub's form).
    XRateLimit,
}

/// A fixed-window quota over every request.
struct Quota {
    limit: u64,
    window: Duration,
    form: QuotaForm,
    /// The current window's start.
    start: std::time::Instant,
    used: u64,
    /// Requests answered 429 because the quota was spent.
    refused: u64,
}

/// The token endpoint's client and the tokens it issued.
#[derive(Default)]
struct OAuth {
    /// The one client it knows: id, secret, and the lifetime of the tokens it issues.
    client: Option<(String, String, Duration)>,
    /// Every token issued, with when it expires (`None`: invalidated).
    tokens: Vec<(String, Option<std::time::Instant>)>,
    /// When each token was issued.
    issued_at: Vec<std::time::Instant>,
    requests: u64,
    /// `/service/tasks` requests answered 401 (no token, an unknown or expired one).
    rejected: u64,
    refuse: bool,
    /// The form bodies of the token requests, in order.
    forms: Vec<String>,
}

impl LegacyApi {
    /// Three tasks, and one each for alice and bob.
    pub fn new() -> Self {
        let api = LegacyApi::default();
        {
            let mut st = api.state.lock().unwrap();
            for title in ["Write the report", "Review the budget", "Call the plumber"] {
                let task = st.new_task(title);
                st.tasks.push(task);
            }
            st.users
                .insert("alice".into(), vec![json!({"id": "a1", "title": "Alice's secret plan", "owner": "alice"})]);
            st.users.insert("bob".into(), vec![json!({"id": "b1", "title": "Bob's birthday list", "owner": "bob"})]);
            st.page_size = 2;
            st.touch("/tasks");
            st.touch("/me/tasks#alice");
            st.touch("/me/tasks#bob");
        }
        api
    }

    /// From now on, at most `limit` requests (to any path) per `window` (fixed windows from
    /// now); every answer carries the quota's fields in `form`, and a request over it is
    /// answered 429 with `Retry-After` (until the window ends).
    pub fn enforce_quota(&self, limit: u64, window: Duration, form: QuotaForm) {
        self.state.lock().unwrap().quota =
            Some(Quota { limit, window, form, start: std::time::Instant::now(), used: 0, refused: 0 });
    }

    /// From now on, GETs presenting `Bearer <user>` (`None`: no `Authorization` at all) are
    /// answered `429` with `Retry-After: 3600`, `X-RateLimit-Remaining: 0` and
    /// `X-RateLimit-Reset: 3600`: that credential's quota is spent for an hour.
    pub fn spend_quota_of(&self, user: Option<&str>) {
        self.state.lock().unwrap().spent.insert(user.map(str::to_string));
    }

    /// From now on, any request carrying exactly `cookie` as its `Cookie` is answered `401`
    /// (`{"error": "bad cookie"}`), whatever else it carries (a session the API ended).
    pub fn refuse_cookie(&self, cookie: &str) {
        self.state.lock().unwrap().refused_cookie = Some(cookie.into());
    }

    /// Requests answered 429 because the quota of [`LegacyApi::enforce_quota`] was spent.
    pub fn quota_refusals(&self) -> u64 {
        self.state.lock().unwrap().quota.as_ref().map_or(0, |q| q.refused)
    }

    /// Binds `addr` (port 0 for any) and serves until the runtime ends.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        self.serve_maybe_tls(addr, None).await
    }

    /// Like [`LegacyApi::serve`], over HTTPS with the given PEM certificate and key.
    pub async fn serve_tls(&self, addr: SocketAddr, cert: &Path, key: &Path) -> std::io::Result<SocketAddr> {
        self.serve_tls_with(addr, cert, key, None).await
    }

    /// Like [`LegacyApi::serve_tls`], accepting only clients that present a certificate issued
    /// by (or being) one in the PEM file `client_ca` (mutual TLS).
    pub async fn serve_mtls(
        &self,
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> std::io::Result<SocketAddr> {
        self.serve_tls_with(addr, cert, key, Some(client_ca)).await
    }

    async fn serve_tls_with(
        &self,
        addr: SocketAddr,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> std::io::Result<SocketAddr> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |e: rustls::pki_types::pem::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let other = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let certs =
            CertificateDer::pem_file_iter(cert).map_err(invalid)?.collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(invalid)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| other(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(invalid)? {
                    roots.add(cert.map_err(invalid)?).map_err(|e| other(e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| other(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| other(e.to_string()))?;
        self.serve_maybe_tls(addr, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve_maybe_tls(
        &self,
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (api, tls) = (api.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(into_body(api.handle(req).await)) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Ok(local)
    }

    /// Changes the task list every `period` (add, complete, retitle or delete), as `herald demo` shows.
    pub fn mutate_every(&self, period: Duration) {
        let api = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                api.mutate_randomly();
            }
        });
    }

    /// One random edit: add, complete/reopen, or delete a task. Task "1" is never deleted, so
    /// the demo's `/tasks/1` always exists.
    fn mutate_randomly(&self) {
        let mut st = self.state.lock().unwrap();
        let deletable: Vec<usize> = (0..st.tasks.len()).filter(|&i| st.tasks[i]["id"] != "1").collect();
        match fastrand::u8(0..5) {
            0 | 1 if !st.tasks.is_empty() => {
                let i = fastrand::usize(0..st.tasks.len());
                let done = st.tasks[i]["done"].as_bool().unwrap_or(false);
                st.tasks[i]["done"] = json!(!done);
            }
            2 if deletable.len() > 2 => {
                st.tasks.remove(deletable[fastrand::usize(0..deletable.len())]);
            }
            _ if st.tasks.len() < 8 => {
                let titles =
                    ["Water the plants", "Book the train", "Fix the login bug", "Answer Dana", "Plan the sprint"];
                let task = st.new_task(titles[fastrand::usize(0..titles.len())]);
                st.tasks.push(task);
            }
            _ => {
                if let Some(&i) = deletable.first() {
                    st.tasks.remove(i);
                }
            }
        }
        st.touch("/tasks");
    }

    /// Adds a task at the end of the list and returns its id.
    pub fn add_task(&self, title: &str) -> String {
        let mut st = self.state.lock().unwrap();
        let task = st.new_task(title);
        let id = task["id"].as_str().unwrap().to_string();
        st.tasks.push(task);
        st.touch("/tasks");
        id
    }

    /// Removes task `id`.
    pub fn remove_task(&self, id: &str) {
        let mut st = self.state.lock().unwrap();
        st.tasks.retain(|t| t["id"] != id);
        st.touch("/tasks");
    }

    /// Flips `done` of task `id`.
    pub fn toggle(&self, id: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(t) = st.tasks.iter_mut().find(|t| t["id"] == id) {
            t["done"] = json!(!t["done"].as_bool().unwrap_or(false));
        }
        st.touch("/tasks");
    }

    /// Moves the task at position `from` to position `to`.
    pub fn move_task(&self, from: usize, to: usize) {
        let mut st = self.state.lock().unwrap();
        if from < st.tasks.len() {
            let task = st.tasks.remove(from);
            let to = to.min(st.tasks.len());
            st.tasks.insert(to, task);
        }
        st.touch("/tasks");
    }

    /// Replaces the title of task `id`.
    pub fn retitle(&self, id: &str, title: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(t) = st.tasks.iter_mut().find(|t| t["id"] == id) {
            t["title"] = json!(title);
        }
        st.touch("/tasks");
    }

    /// How `/changes/…` answers from now on.
    pub fn set_delta_form(&self, form: DeltaForm) {
        self.state.lock().unwrap().delta_form = form;
    }

    /// Changes the task list in one step (no request sees half of it); `new_task` makes a task
    /// with a fresh id.
    pub fn edit<R>(&self, f: impl FnOnce(&mut Vec<Value>, &mut dyn FnMut(&str) -> Value) -> R) -> R {
        let mut st = self.state.lock().unwrap();
        let mut tasks = std::mem::take(&mut st.tasks);
        let r = f(&mut tasks, &mut |title| st.new_task(title));
        st.tasks = tasks;
        st.touch("/tasks");
        r
    }

    /// Adds `n` tasks at the end of the list at once (titled `Task <id>`).
    pub fn add_tasks(&self, n: usize) {
        let mut st = self.state.lock().unwrap();
        for _ in 0..n {
            let id = st.next_id + 1;
            let task = st.new_task(&format!("Task {id}"));
            st.tasks.push(task);
        }
        st.touch("/tasks");
    }

    /// Tasks per page of `/paged/tasks` (2 until set).
    pub fn set_page_size(&self, size: usize) {
        self.state.lock().unwrap().page_size = size;
    }

    /// How `/paged/tasks` names its next page from now on.
    pub fn set_page_links(&self, links: PageLinks) {
        let mut st = self.state.lock().unwrap();
        st.page_links = links;
        st.touch("/tasks");
    }

    /// Inserts a task at position `at` and returns its id.
    pub fn insert_task(&self, at: usize, title: &str) -> String {
        let mut st = self.state.lock().unwrap();
        let task = st.new_task(title);
        let id = task["id"].as_str().unwrap().to_string();
        let at = at.min(st.tasks.len());
        st.tasks.insert(at, task);
        st.touch("/tasks");
        id
    }

    /// The board as the API serves it now.
    pub fn board(&self) -> Value {
        self.state.lock().unwrap().board_body()
    }

    /// The task list as the API serves it now.
    pub fn tasks(&self) -> Value {
        let st = self.state.lock().unwrap();
        st.tasks_body()
    }

    /// Adds a user with no tasks (e.g. the service account `upstream.headers` names).
    pub fn add_user(&self, user: &str) {
        self.state.lock().unwrap().users.entry(user.into()).or_default();
    }

    /// Adds a task to one user's `/me/tasks`.
    pub fn add_user_task(&self, user: &str, title: &str) {
        let mut st = self.state.lock().unwrap();
        let n = st.users.get(user).map_or(0, Vec::len);
        st.users
            .entry(user.into())
            .or_default()
            .push(json!({"id": format!("{user}-{}", n + 1), "title": title, "owner": user}));
        st.touch(&format!("/me/tasks#{user}"));
    }

    /// From now on `Bearer <user>` gets 401.
    pub fn revoke(&self, user: &str) {
        self.state.lock().unwrap().revoked.insert(user.into());
    }

    /// Queues faults for the next requests to `path`.
    pub fn fail_next(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().faults.entry(path.into()).or_default().extend(faults);
    }

    /// Stop sending ETag and Last-Modified (herald must then compare hashes).
    pub fn without_validators(&self) {
        self.state.lock().unwrap().without_validators = true;
    }

    /// Adds `bytes` of filler to every task.
    pub fn pad_tasks(&self, bytes: usize) {
        let mut st = self.state.lock().unwrap();
        st.padding = bytes;
        st.touch("/tasks");
    }

    pub fn stats(&self, path: &str) -> PathStats {
        self.state.lock().unwrap().stats.get(path).copied().unwrap_or_default()
    }

    /// The requests whose path is `path` (any query), oldest first (the last 200,000 of all).
    pub fn seen(&self, path: &str) -> Vec<Requested> {
        let st = self.state.lock().unwrap();
        st.seen.iter().filter(|s| s.target.split('?').next() == Some(path)).cloned().collect()
    }

    /// Makes `POST /oauth/token` issue tokens living `lifetime` to `client_id` authenticated
    /// with `secret` (HTTP Basic, RFC 6749 section 2.3.1); `/service/tasks` answers the task
    /// list to a valid, unexpired one and 401 otherwise.
    pub fn issue_tokens(&self, client_id: &str, secret: &str, lifetime: Duration) {
        self.state.lock().unwrap().oauth.client = Some((client_id.into(), secret.into(), lifetime));
    }

    /// Makes the token endpoint answer `401 {"error": "invalid_client"}` (or issue again).
    pub fn refuse_tokens(&self, refuse: bool) {
        self.state.lock().unwrap().oauth.refuse = refuse;
    }

    /// Ends every token issued so far before its time (a revocation, a key rotation).
    pub fn invalidate_tokens(&self) {
        for (_, expires) in &mut self.state.lock().unwrap().oauth.tokens {
            *expires = None;
        }
    }

    /// Requests to the token endpoint so far.
    pub fn token_requests(&self) -> u64 {
        self.state.lock().unwrap().oauth.requests
    }

    /// `/service/tasks` requests refused for their token (none, unknown, expired, invalidated).
    pub fn rejected_tokens(&self) -> u64 {
        self.state.lock().unwrap().oauth.rejected
    }

    /// Every token issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().oauth.tokens.iter().map(|(t, _)| t.clone()).collect()
    }

    /// When each token was issued, oldest first.
    pub fn token_issue_times(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().oauth.issued_at.clone()
    }

    /// The form bodies the token endpoint was sent.
    pub fn token_forms(&self) -> Vec<String> {
        self.state.lock().unwrap().oauth.forms.clone()
    }

    /// `POST /oauth/token`: `grant_type=client_credentials`, the client in HTTP Basic.
    async fn token(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        use base64::Engine;
        let basic = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let form_type =
            req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/x-www-form-urlencoded");
        let form = match req.into_body().collect().await {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(_) => return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"})),
        };
        let mut st = self.state.lock().unwrap();
        let oauth = &mut st.oauth;
        oauth.requests += 1;
        oauth.forms.push(form.clone());
        let Some((id, secret, lifetime)) = oauth.client.clone() else {
            return reply(StatusCode::NOT_FOUND, json!({"error": "not found"}));
        };
        if oauth.refuse || basic.as_deref() != Some(&format!("{id}:{secret}")) {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": "bad client"}),
            );
        }
        if !form_type || !form.split('&').any(|p| p == "grant_type=client_credentials") {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"}));
        }
        let token = format!("tok{}x{:016x}", oauth.tokens.len() + 1, fastrand::u64(..));
        let now = std::time::Instant::now();
        // A lifetime longer than the clock can count lives a century.
        let expires = now.checked_add(lifetime).unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600));
        oauth.tokens.push((token.clone(), Some(expires)));
        oauth.issued_at.push(now);
        reply(StatusCode::OK, json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime.as_secs()}))
    }

    /// Every request seen (the last 200,000), oldest first.
    pub fn seen_all(&self) -> Vec<Requested> {
        self.state.lock().unwrap().seen.iter().cloned().collect()
    }

    /// Counts the request against the quota, if one is enforced: over it, a 429; within it,
    /// the answer with the quota's fields.
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let fields = {
            let mut st = self.state.lock().unwrap();
            match st.quota.as_mut() {
                None => None,
                Some(q) => {
                    let now = std::time::Instant::now();
                    while now >= q.start + q.window {
                        q.start += q.window;
                        q.used = 0;
                    }
                    let over = q.used >= q.limit;
                    if over {
                        q.refused += 1;
                    } else {
                        q.used += 1;
                    }
                    // Rounded up: a client that waits the seconds it is told finds a new window.
                    let left = (q.start + q.window) - now;
                    let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    let remaining = q.limit - q.used.min(q.limit);
                    let fields = quota_fields(q, remaining, reset, left);
                    if over {
                        let mut resp = reply(StatusCode::TOO_MANY_REQUESTS, json!({"error": "quota exceeded"}));
                        resp.headers_mut().insert(header::RETRY_AFTER, reset.into());
                        resp.headers_mut().extend(fields);
                        return resp;
                    }
                    Some(fields)
                }
            }
        };
        let mut resp = self.answer(req).await;
        if let Some(fields) = fields {
            resp.headers_mut().extend(fields);
        }
        resp
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let fault = {
            let mut st = self.state.lock().unwrap();
            st.stats.entry(path.clone()).or_default().requests += 1;
            let all = |name| {
                let fields: Vec<_> =
                    req.headers().get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
                (!fields.is_empty()).then(|| fields.join("; "))
            };
            if st.seen.len() == SEEN_MAX {
                st.seen.pop_front();
            }
            st.seen.push_back(Requested {
                at: std::time::Instant::now(),
                method: req.method().to_string(),
                target: req.uri().path_and_query().map_or(path.clone(), |pq| pq.to_string()),
                authorization: all(header::AUTHORIZATION),
                cookie: all(header::COOKIE),
                traceparent: all(header::HeaderName::from_static("traceparent")),
            });
            st.faults.get_mut(&path).and_then(VecDeque::pop_front)
        };
        match fault {
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Status(status, retry_after)) => {
                self.state.lock().unwrap().stats.entry(path).or_default().errors += 1;
                let mut resp = reply(StatusCode::from_u16(status).unwrap(), json!({"error": "injected fault"}));
                if let Some(secs) = retry_after {
                    resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
                }
                return resp;
            }
            None => {}
        }
        {
            let st = self.state.lock().unwrap();
            let cookie = req.headers().get(header::COOKIE).and_then(|v| v.to_str().ok());
            if cookie.is_some() && cookie == st.refused_cookie.as_deref() {
                return reply(StatusCode::UNAUTHORIZED, json!({"error": "bad cookie"}));
            }
            let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let user = bearer.map(|b| b.strip_prefix("Bearer ").unwrap_or(b).to_string());
            if req.method() == Method::GET && st.spent.contains(&user) {
                let mut resp = reply(StatusCode::TOO_MANY_REQUESTS, json!({"error": "quota spent"}));
                for (name, value) in
                    [("retry-after", "3600"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "3600")]
                {
                    resp.headers_mut().insert(name, http::HeaderValue::from_static(value));
                }
                return resp;
            }
        }
        if let Some((content_type, body)) = match path.as_str() {
            "/" => Some(("text/html; charset=utf-8", DEMO_PAGE)),
            "/herald-client.js" => Some(("text/javascript; charset=utf-8", CLIENT_JS)),
            _ => None,
        } {
            return Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
        }
        if path == "/ws" {
            return websocket_echo(req);
        }
        if path == "/trailers" {
            return with_trailers();
        }
        if path == "/echo" || path.starts_with("/echo/") {
            return echo(req).await;
        }
        if path == "/oauth/token" && req.method() == Method::POST {
            return self.token(req).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return self.write(req, &path).await;
        }
        let (body, resource, link, field) = {
            let mut st = self.state.lock().unwrap();
            match self.resolve(&mut st, &req, &path) {
                Ok(found) => found,
                Err((status, body)) => {
                    if path == "/service/tasks" {
                        st.oauth.rejected += 1;
                    }
                    return reply(status, body);
                }
            }
        };
        let body = Bytes::from(body.to_string());
        let mut st = self.state.lock().unwrap();
        if st.without_validators {
            return Response::builder().header(header::CONTENT_TYPE, "application/json").body(Full::new(body)).unwrap();
        }
        // A paginated resource names its next page in `Link` (RFC 8288), on a 304 too.
        let link = link.map(|next| format!("<{next}>; rel=\"next\""));
        let etag = etag_of(&body);
        let modified = st.modified.get(&resource).copied().unwrap_or(SystemTime::UNIX_EPOCH);
        let h = req.headers();
        let fresh = match h.get(header::IF_NONE_MATCH) {
            Some(inm) => inm.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")),
            None => h
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok())
                .is_some_and(|since| modified <= since + Duration::from_millis(999)),
        };
        let last_modified = httpdate::fmt_http_date(modified);
        if fresh {
            st.stats.entry(path).or_default().not_modified += 1;
            let mut resp = Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, etag)
                .header(header::LAST_MODIFIED, last_modified);
            if let Some(link) = link {
                resp = resp.header(header::LINK, link);
            }
            return resp.body(Full::new(Bytes::new())).unwrap();
        }
        let mut resp = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ETAG, etag)
            .header(header::LAST_MODIFIED, last_modified);
        if let Some(link) = link {
            resp = resp.header(header::LINK, link);
        }
        if let Some((name, value)) = field {
            resp = resp.header(name, value);
        }
        resp.body(Full::new(body)).unwrap()
    }

    /// Writes, as a REST API takes them: `POST /tasks` (a new task, 201), `PATCH` or `PUT
    /// /tasks/{id}` (its fields merged, 200), `DELETE /tasks/{id}` (204); the same on
    /// `/me/tasks` for the user the bearer token names. Nothing else is written to (405).
    async fn write(&self, req: Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let user = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let Ok(body) = http_body_util::Limited::new(req.into_body(), 1 << 20).collect().await else {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "unreadable body"}));
        };
        let body = body.to_bytes();
        let fields: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(v @ Value::Object(_)) => v,
                _ => return reply(StatusCode::BAD_REQUEST, json!({"error": "expected a JSON object"})),
            }
        };
        let mut st = self.state.lock().unwrap();
        let (list, resource, rest) = if let Some(rest) = path.strip_prefix("/me/tasks") {
            match user.filter(|u| st.users.contains_key(u) && !st.revoked.contains(u)) {
                Some(user) => (Some(user.clone()), format!("/me/tasks#{user}"), rest),
                None => return reply(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"})),
            }
        } else if let Some(rest) = path.strip_prefix("/tasks") {
            (None, "/tasks".to_string(), rest)
        } else {
            return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "read-only resource"}));
        };
        let answer = match (method, rest.strip_prefix('/')) {
            (Method::POST, None) if rest.is_empty() => {
                let mut task = match &list {
                    Some(user) => {
                        let n = st.users[user].len();
                        json!({"id": format!("{user}-{}", n + 1), "title": "", "owner": user})
                    }
                    None => st.new_task(""),
                };
                merge(&mut task, &fields);
                match &list {
                    Some(user) => st.users.get_mut(user).expect("checked").push(task.clone()),
                    None => st.tasks.push(task.clone()),
                }
                (StatusCode::CREATED, task)
            }
            (m, Some(id)) if m == Method::PATCH || m == Method::PUT || m == Method::DELETE => {
                let tasks = match &list {
                    Some(user) => st.users.get_mut(user).expect("checked"),
                    None => &mut st.tasks,
                };
                let Some(at) = tasks.iter().position(|t| t["id"] == id) else {
                    return reply(StatusCode::NOT_FOUND, json!({"error": "no such task", "id": id}));
                };
                if m == Method::DELETE {
                    tasks.remove(at);
                    (StatusCode::NO_CONTENT, Value::Null)
                } else {
                    merge(&mut tasks[at], &fields);
                    (StatusCode::OK, tasks[at].clone())
                }
            }
            _ => return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "not a write this API takes"})),
        };
        st.touch(&resource);
        match answer {
            (StatusCode::NO_CONTENT, _) => {
                Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new())).unwrap()
            }
            (status, body) => reply(status, body),
        }
    }

    /// The body for a GET, the resource key whose modification time it carries, and the next
    /// page it names in `Link`.
    fn resolve(&self, st: &mut State, req: &Request<Incoming>, path: &str) -> Result<Resolved, (StatusCode, Value)> {
        if path == "/paged/tasks" {
            return paged(st, req.uri().query().unwrap_or_default());
        }
        if let Some(list) = path.strip_prefix("/changes") {
            return self.changes(st, req, list);
        }
        self.resolve_body(st, req, path).map(|(body, resource)| (body, resource, None, None))
    }

    /// `/changes/<list>[/deleted][?since=N]` (see [`DeltaForm`]).
    fn changes(&self, st: &mut State, req: &Request<Incoming>, list: &str) -> Result<Resolved, (StatusCode, Value)> {
        let (feed, list) = match list.strip_suffix("/deleted") {
            Some(list) => (true, list),
            None => (false, list),
        };
        let (items, resource) = self.resolve_body(st, req, list)?;
        let Value::Array(items) = items else { return Err((StatusCode::NOT_FOUND, json!({"error": "not a list"}))) };
        let since = req.uri().query().unwrap_or_default().split('&').find_map(|p| p.strip_prefix("since="));
        let since = match since.map(str::parse::<u64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err((StatusCode::BAD_REQUEST, json!({"error": "since: not a revision"}))),
        };
        let form = st.delta_form;
        let revision = st.revision;
        let changes = st.changes.entry(resource.clone()).or_default();
        let mut next = revision;
        // What changed since the last look gets the next revisions.
        let mut listed = HashSet::new();
        for item in &items {
            let id = item["id"].as_str().unwrap_or_default().to_string();
            listed.insert(id.clone());
            if changes.items.get(&id).is_none_or(|(_, seen)| seen != item) {
                next += 1;
                changes.items.insert(id, (next, item.clone()));
            }
        }
        let gone: Vec<String> = changes.items.keys().filter(|id| !listed.contains(*id)).cloned().collect();
        for id in gone {
            changes.items.remove(&id);
            next += 1;
            changes.removed.push((next, id));
        }
        let from = since.unwrap_or(0);
        let removed = changes.removed.iter().filter(|(rev, _)| *rev >= from && since.is_some());
        let body: Vec<Value> = if feed {
            removed.map(|(rev, id)| json!({"id": id, "rev": rev})).collect()
        } else {
            let mut body: Vec<Value> = items
                .iter()
                .filter_map(|item| {
                    let (rev, _) = changes.items[item["id"].as_str().unwrap_or_default()];
                    (rev >= from).then(|| {
                        let mut item = item.clone();
                        item["rev"] = json!(rev);
                        item
                    })
                })
                .collect();
            if form.tombstones {
                body.extend(removed.map(|(rev, id)| json!({"id": id, "rev": rev, "deleted": true})));
            }
            body
        };
        st.revision = next;
        let after = (next + 1).to_string();
        Ok(match form.cursor {
            DeltaCursor::Max => (Value::Array(body), resource, None, None),
            DeltaCursor::Body => (json!({"items": body, "next": after}), resource, None, None),
            DeltaCursor::Header => (Value::Array(body), resource, None, Some(("x-next-since", after))),
        })
    }

    fn resolve_body(
        &self,
        st: &State,
        req: &Request<Incoming>,
        path: &str,
    ) -> Result<(Value, String), (StatusCode, Value)> {
        if path == "/tasks" {
            return Ok((st.tasks_body(), "/tasks".into()));
        }
        if path == "/board" {
            return Ok((st.board_body(), "/tasks".into()));
        }
        if path == "/service/tasks" {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let now = std::time::Instant::now();
            let valid = bearer
                .is_some_and(|b| st.oauth.tokens.iter().any(|(t, expires)| t == b && expires.is_some_and(|e| now < e)));
            return match valid {
                true => Ok((st.tasks_body(), "/tasks".into())),
                false => Err((StatusCode::UNAUTHORIZED, json!({"error": "invalid_token"}))),
            };
        }
        if let Some(id) = path.strip_prefix("/tasks/") {
            return match st.tasks.iter().find(|t| t["id"] == id) {
                Some(t) => Ok((st.padded(t), "/tasks".into())),
                None => Err((StatusCode::NOT_FOUND, json!({"error": "no such task", "id": id}))),
            };
        }
        if path == "/me/tasks" || path.starts_with("/me/tasks/") {
            let user = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .filter(|u| st.users.contains_key(*u) && !st.revoked.contains(*u));
            let Some(user) = user else { return Err((StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))) };
            let resource = format!("/me/tasks#{user}");
            return match path.strip_prefix("/me/tasks/") {
                None => Ok((Value::Array(st.users[user].clone()), resource)),
                // One task of the user's own (any user's for `service`, the service account);
                // another's is forbidden.
                Some(id) => match st
                    .users
                    .iter()
                    .filter(|(owner, _)| user == "service" || *owner == user)
                    .find_map(|(_, tasks)| tasks.iter().find(|t| t["id"] == id))
                {
                    Some(task) => Ok((task.clone(), resource)),
                    None => Err((StatusCode::FORBIDDEN, json!({"error": "not yours", "id": id}))),
                },
            };
        }
        Err((StatusCode::NOT_FOUND, json!({"error": "not found", "path": path})))
    }
}

/// A page of `/paged/tasks`: `?page=N` (from 1) of `page_size` tasks, and the next page as
/// [`PageLinks`] says.
fn paged(st: &State, query: &str) -> Result<Resolved, (StatusCode, Value)> {
    let param = |name: &str| {
        query.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('=')).and_then(|n| n.parse::<u64>().ok())
    };
    let page = param("page").filter(|&n| n >= 1).unwrap_or(1) as usize;
    let (version, tasks) = match (&st.page_links, param("v")) {
        (PageLinks::Versioned, Some(v)) => match st.versions.iter().find(|(at, _)| *at == v) {
            Some((_, tasks)) => (v, tasks),
            None => return Err((StatusCode::GONE, json!({"error": "no such version", "v": v}))),
        },
        _ => (st.version, &st.tasks),
    };
    let size = st.page_size.max(1);
    let items: Vec<Value> = tasks.iter().skip((page - 1) * size).take(size).cloned().collect();
    let more = page * size < tasks.len();
    let resource = "/tasks".to_string();
    Ok(match &st.page_links {
        PageLinks::Plain => {
            let next = more.then(|| format!("/paged/tasks?page={}", page + 1));
            // The same next page as a cursor, for `cursor_param: page`.
            let cursor = more.then_some(page + 1);
            (json!({"items": items, "next": next, "cursor": cursor}), resource, next, None)
        }
        PageLinks::Versioned => {
            let next = more.then(|| format!("/paged/tasks?page={}&v={version}", page + 1));
            (json!({"items": items}), resource, next, None)
        }
        PageLinks::Fixed(next) => {
            let next = (page == 1).then(|| next.clone());
            (json!({"items": items, "next": next}), resource, next, None)
        }
    })
}

/// A GET's body, the resource whose modification time it carries, and the next page it names.
/// A body, the resource it shows (for validators), its next page, and one more field.
type Resolved = (Value, String, Option<String>, Option<(&'static str, String)>);

impl State {
    fn new_task(&mut self, title: &str) -> Value {
        self.next_id += 1;
        json!({"id": self.next_id.to_string(), "title": title, "done": false})
    }

    fn touch(&mut self, resource: &str) {
        self.modified.insert(resource.into(), SystemTime::now());
        if resource == "/tasks" {
            self.version += 1;
            if matches!(self.page_links, PageLinks::Versioned) {
                if self.versions.len() == VERSIONS_KEPT {
                    self.versions.pop_front();
                }
                self.versions.push_back((self.version, self.tasks.clone()));
            }
        }
    }

    fn padded(&self, task: &Value) -> Value {
        let mut t = task.clone();
        if self.padding > 0 {
            t["notes"] = json!("x".repeat(self.padding));
        }
        t
    }

    /// The tasks as a board: open and done columns with counts.
    fn board_body(&self) -> Value {
        let (done, open): (Vec<Value>, Vec<Value>) =
            self.tasks.iter().map(|t| self.padded(t)).partition(|t| t["done"].as_bool().unwrap_or(false));
        json!({"title": "Sprint board", "counts": {"open": open.len(), "done": done.len()}, "open": open, "done": done})
    }

    fn tasks_body(&self) -> Value {
        Value::Array(self.tasks.iter().map(|t| self.padded(t)).collect())
    }
}

/// The demo's browser page: it keeps a live copy of `/tasks` through herald with the JS client
/// (clients/js), which the API serves at `/herald-client.js`.
const DEMO_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>herald demo</title>
<style>body{font:15px system-ui;margin:2em}li.done{text-decoration:line-through}#log{color:#666;font:12px monospace}</style>
<h1>Tasks, pushed by herald</h1>
<p>This page never polls: herald's client (<code>/herald-client.js</code>) holds one stream on
<code>/tasks</code> and applies its <code>task.created</code>, <code>task.updated</code> and
<code>task.deleted</code> events to a live copy of the list.</p>
<ul id="tasks"></ul><pre id="log"></pre>
<script type="module">
import { watch } from '/herald-client.js';
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const log = line => { const el = document.getElementById('log'); el.textContent = line + '\n' + el.textContent.slice(0, 2000); };
watch('/tasks', {
  onState: tasks => document.getElementById('tasks').innerHTML = tasks
    .map(t => `<li class="${t.done ? 'done' : ''}">${esc(t.title)}</li>`).join(''),
  onEvent: e => log(e.type === 'snapshot' ? `snapshot id=${e.id}` : `${e.type} ${e.data.resourceId ?? JSON.stringify(e.data)}`),
});
</script>
"#;

/// The JS client's browser bundle (`npm run build` in clients/js makes it).
const CLIENT_JS: &str = include_str!("../../../clients/js/dist/herald-client.browser.js");

fn etag_of(body: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// The quota's fields as `q.form` spells them.
fn quota_fields(q: &Quota, remaining: u64, reset: u64, left: Duration) -> header::HeaderMap {
    let mut h = header::HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        h.insert(header::HeaderName::from_static(name), value.parse().unwrap());
    };
    match q.form {
        QuotaForm::Ietf => {
            set("ratelimit", format!("\"default\";r={remaining};t={reset}"));
            set("ratelimit-policy", format!("\"default\";q={};w={}", q.limit, q.window.as_secs().max(1)));
        }
        QuotaForm::XRateLimit => {
            // The window's end as a Unix time, rounded up like the delta.
            let end = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap() + left;
            let end = end.as_secs() + u64::from(end.subsec_nanos() > 0);
            set("x-ratelimit-limit", q.limit.to_string());
            set("x-ratelimit-remaining", remaining.to_string());
            set("x-ratelimit-reset", end.to_string());
        }
    }
    h
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A chunked body followed by a trailer, as gRPC-web and checksummed downloads send.
fn with_trailers() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    // HTTP/1.1 sends only the trailer fields a response declares.
    resp.headers_mut().insert(header::TRAILER, http::HeaderValue::from_static("x-checksum"));
    resp.extensions_mut().insert(Trailer { data: "payload", name: "x-checksum", value: "abc123" });
    resp
}

/// A response whose body is `data` followed by one trailer (see [`into_body`]).
#[derive(Clone, Copy)]
struct Trailer {
    data: &'static str,
    name: &'static str,
    value: &'static str,
}

type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The response as sent: most bodies are whole; a [`Trailer`] becomes data plus a trailers frame.
fn into_body(resp: Response<Full<Bytes>>) -> Response<AnyBody> {
    let trailer = resp.extensions().get::<Trailer>().copied();
    resp.map(|body| match trailer {
        None => body.boxed_unsync(),
        Some(t) => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert(t.name, http::HeaderValue::from_static(t.value));
            let frames = [
                Ok(hyper::body::Frame::data(Bytes::from_static(t.data.as_bytes()))),
                Ok(hyper::body::Frame::trailers(trailers)),
            ];
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
        }
    })
}

/// A WebSocket endpoint that sends every message back.
fn websocket_echo(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

    let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "not a WebSocket handshake"}));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Answers with what it was sent: method, path, query, headers and body.
async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            // Large bodies are only counted: the echo must answer quickly whatever it was sent.
            "body": (body.len() <= 64 << 10).then(|| String::from_utf8_lossy(&body)),
            "body_len": body.len(),
        }),
    )
}

/// Merges a written object's fields into a task; its `id` and `owner` stay.
fn merge(task: &mut Value, fields: &Value) {
    if let (Some(task), Some(fields)) = (task.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            if k != "id" && k != "owner" {
                task.insert(k.clone(), v.clone());
            }
        }
    }
}
