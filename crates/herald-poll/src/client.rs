//! The upstream client for polls and admission checks: conditional requests, a timeout on
//! every request, bodies cut off at `max_body` while streaming.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use herald_core::trace::{TraceParent, TRACEPARENT};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::quota::{BudgetKey, Draw, Quota, RateLimit};
use crate::token::{Endpoint, Tokens};
use crate::PollError;

/// One request to the upstream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// Path and query, e.g. `/tasks?state=open`.
    pub target: &'a str,
    /// The subscriber's own `vary` headers (per-subscriber watches, admission checks).
    pub credentials: &'a [(HeaderName, HeaderValue)],
    /// Lower-case names of `upstream.headers` this request must not carry: a subscriber's
    /// `vary` names on its own polls and admission checks, so that one who sends no credential
    /// never borrows the service's (spec section 5). Never empty on a request made for a
    /// subscriber (a route that is not public has a `vary`): see [`Request::for_subscriber`].
    pub withhold: &'a [String],
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// A field of a 2xx answer the caller wants (lower case; a delta cursor, `poll.delta`).
    pub capture: Option<&'a str>,
}

impl Request<'_> {
    /// Made for a subscriber — a poll of its per-subscriber watch, its admission check — rather
    /// than herald's own poll of a public or shared watch: it withholds the `vary` headers, or
    /// carries the subscriber's own. Such a request carries none of the service credential.
    pub fn for_subscriber(&self) -> bool {
        !self.withhold.is_empty() || !self.credentials.is_empty()
    }
}

/// The fields of `upstream.headers` that are the service's credential whatever a route's `vary`
/// says: never sent on a request made for a subscriber.
const SERVICE_CREDENTIALS: [HeaderName; 3] = [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE];

/// What the upstream answered.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 304: the stored representation is still current. The fields the 304 carries replace the
    /// stored ones (RFC 9111 section 4.3.4); `None` keeps what is stored.
    NotModified { max_age: Option<Duration>, etag: Option<String>, last_modified: Option<String>, link: Option<String> },
    Ok {
        body: Bytes,
        content_type: Option<String>,
        etag: Option<String>,
        last_modified: Option<String>,
        max_age: Option<Duration>,
        /// The answer's `Link` field (paginated collections name the next page there).
        link: Option<String>,
        /// The field the request asked to [capture](Request::capture), when present.
        captured: Option<String>,
    },
    /// Any other status: passed on to a first subscriber as is.
    Status { status: u16, content_type: Option<String>, body: Bytes, retry_after: Option<Duration> },
}

impl Answer {
    /// A 200 with `body` and no other field (what test scripts mostly answer).
    pub fn body(body: impl Into<Bytes>) -> Answer {
        Answer::Ok {
            body: body.into(),
            content_type: None,
            etag: None,
            last_modified: None,
            max_age: None,
            link: None,
            captured: None,
        }
    }
}

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, PollError>> + Send + 'a>>;

/// Something that answers polls: the real upstream, or a script in tests.
pub trait Fetch: Send + Sync + 'static {
    fn fetch<'a>(&'a self, req: Request<'a>) -> FetchFuture<'a>;

    /// The URL every target is put behind (`upstream.url`): the URLs an answer names, such as
    /// a next page, are resolved against it. Scripts in tests answer for a made-up one.
    fn base_url(&self) -> &str {
        "http://upstream.test"
    }

    /// The most bytes of one representation (`upstream.max_body`), however many pages it is
    /// merged from.
    fn max_body(&self) -> u64 {
        u64::MAX
    }
}

/// The real upstream over HTTP(S).
pub struct UpstreamClient {
    http: reqwest::Client,
    base: String,
    /// On herald's own polls: every `upstream.headers` entry.
    headers: HeaderMap,
    /// On requests made for a subscriber: `upstream.headers` without the service credential
    /// ([`SERVICE_CREDENTIALS`]); a route's `vary` names are taken out too, per request.
    subscriber_headers: HeaderMap,
    max_body: u64,
    /// The service token (`upstream.auth`): an `authorization` header on herald's own polls.
    tokens: Option<Tokens<Endpoint>>,
    /// `herald_upstream_token_refreshes_total{outcome}`, registered by [`UpstreamClient::register`].
    token_refreshes: prometheus::IntCounterVec,
    /// The upstream's quota as its answers announce it: every request draws from it.
    quota: Quota,
    /// Whether answers' quota fields are read (`upstream.rate_limit_headers`).
    read_quota: bool,
    /// The longest a request waits for the quota, holding the caller's `max_concurrency` slot
    /// (`upstream.timeout`: no longer than a slow answer would hold it).
    quota_wait: Duration,
    /// `herald_upstream_rate_limit_remaining`: what is left of the service credential's quota.
    quota_remaining: prometheus::IntGauge,
    /// `herald_upstream_requests_deferred_total`: requests held back to spare the quota.
    quota_deferred: prometheus::IntCounter,
}

impl UpstreamClient {
    pub fn new(cfg: &herald_config::Upstream) -> Result<Self, PollError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| PollError::Setup(e.to_string()))?;
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|_| PollError::Setup(format!("upstream.headers.{name}: invalid value")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))));
        headers.insert(header::VIA, HeaderValue::from_static("1.1 herald"));
        let mut subscriber_headers = headers.clone();
        for name in SERVICE_CREDENTIALS {
            subscriber_headers.remove(name);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| PollError::Setup(format!("upstream.ca_file {path}: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PollError::Setup(format!("upstream.ca_file {path}: {e}")))?;
            if certs.is_empty() {
                return Err(PollError::Setup(format!("upstream.ca_file {path}: no certificate in the file")));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&cfg.client_cert, &cfg.client_key) {
            (Some(cert), Some(key)) => builder = builder.identity(identity(cert, key)?),
            (None, None) => {}
            _ => {
                return Err(PollError::Setup("upstream.client_cert needs upstream.client_key (both or neither)".into()))
            }
        }
        let http = builder
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| match (&cfg.client_cert, &cfg.client_key) {
                // Both parse, and only now does TLS find that they do not belong together.
                (Some(cert), Some(key)) => PollError::Setup(format!(
                    "upstream.client_key {key}: not the private key of upstream.client_cert {cert} ({})",
                    crate::cause(&e)
                )),
                _ => PollError::Setup(format!("upstream: {}", crate::cause(&e))),
            })?;
        let token_refreshes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "herald_upstream_token_refreshes_total",
                "Service tokens asked of upstream.auth.token_url, by outcome (ok, refused: answered without a token, error: no answer).",
            ),
            &["outcome"],
        )
        .map_err(|e| PollError::Setup(e.to_string()))?;
        let tokens = cfg.auth.as_ref().map(|auth| {
            for outcome in ["ok", "refused", "error"] {
                token_refreshes.with_label_values(&[outcome]);
            }
            Tokens::new(Endpoint { http: http.clone(), auth: auth.clone() }, token_refreshes.clone())
        });
        let quota_remaining = prometheus::IntGauge::new(
            "herald_upstream_rate_limit_remaining",
            "Requests left in the upstream's quota for the service credential, as its last answer said (-1: no reading).",
        )
        .map_err(|e| PollError::Setup(e.to_string()))?;
        quota_remaining.set(-1);
        let quota_deferred = prometheus::IntCounter::new(
            "herald_upstream_requests_deferred_total",
            "Upstream requests held back because the upstream's quota (RateLimit, X-RateLimit-*) ran low.",
        )
        .map_err(|e| PollError::Setup(e.to_string()))?;
        Ok(UpstreamClient {
            http,
            base: cfg.url.to_string(),
            headers,
            subscriber_headers,
            max_body: cfg.max_body,
            tokens,
            token_refreshes,
            quota: Quota::new(cfg.rate_limit_reserve),
            read_quota: cfg.rate_limit_headers,
            quota_wait: cfg.timeout,
            quota_remaining,
            quota_deferred,
        })
    }

    /// Registers the client's own metric family on the binary's registry.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.token_refreshes.clone()))?;
        registry.register(Box::new(self.quota_remaining.clone()))?;
        registry.register(Box::new(self.quota_deferred.clone()))
    }

    /// One poll or admission check, with a `traceparent` of its own: its trace id is logged (at
    /// debug, and when it fails) so that an operator can find the request in the upstream's logs.
    async fn get(&self, req: Request<'_>) -> Result<Answer, PollError> {
        let trace = TraceParent::new();
        // The path only: a query may carry what is not ours to log.
        let path = req.target.split('?').next().unwrap_or_default();
        let answer = self.send(req, &trace).await;
        match &answer {
            Ok(Answer::Status { status, .. }) if *status >= 500 => {
                info!(path, trace_id = %trace.trace_id(), status, "poll answered with a server error")
            }
            Ok(_) => debug!(path, trace_id = %trace.trace_id(), "poll answered"),
            Err(e) => info!(path, trace_id = %trace.trace_id(), error = %e, "poll failed"),
        }
        answer
    }

    async fn send(&self, req: Request<'_>, trace: &TraceParent) -> Result<Answer, PollError> {
        let mut retried = false;
        let for_subscriber = req.for_subscriber();
        let budget = BudgetKey::of(for_subscriber, req.credentials);
        let mut resp = loop {
            let draw = self.admit(budget).await?;
            // A request made for a subscriber carries none of the service credential: not the
            // token, not those of `upstream.headers`, whatever the route's `vary` (spec section
            // 5: a subscriber never borrows the service credential). The other headers it
            // carries unless `vary` names them.
            let (mut headers, tokens) = match for_subscriber {
                true => (self.subscriber_headers.clone(), None),
                false => (self.headers.clone(), self.tokens.as_ref()),
            };
            let mut token = None;
            if let Some(tokens) = tokens {
                let value = tokens.header().await?;
                headers.insert(header::AUTHORIZATION, value.clone());
                token = Some(value);
            }
            for name in req.withhold {
                headers.remove(name.as_str());
            }
            for (name, value) in req.credentials {
                headers.insert(name, value.clone());
            }
            let mut rb = self
                .http
                .get(format!("{}{}", self.base, req.target))
                .headers(headers)
                .header(TRACEPARENT, trace.header());
            if let Some(etag) = req.etag {
                rb = rb.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = req.last_modified {
                rb = rb.header(header::IF_MODIFIED_SINCE, lm);
            }
            let resp = rb.send().await.map_err(PollError::from_reqwest)?;
            // Every answer may carry the quota, a 304 or a 429 as well as a 200.
            if self.read_quota {
                draw.answered(RateLimit::from_headers(resp.headers(), SystemTime::now()));
            }
            if budget == BudgetKey::Service {
                self.quota_remaining
                    .set(self.quota.service_remaining().map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX)));
            }
            // A 401 to the service token (expired early, revoked): once more with a new one.
            // Only a request that carried the token (no other 401 is the token's), and only
            // when the token is dropped (at most once per spacing, see `Tokens::reject`).
            match (&self.tokens, token) {
                (Some(tokens), Some(token))
                    if resp.status() == http::StatusCode::UNAUTHORIZED && !retried && tokens.reject(&token) =>
                {
                    debug!("upstream refused the service token; asking for a new one");
                    retried = true;
                }
                _ => break resp,
            }
        };
        let status = resp.status();
        let h = resp.headers();
        let text = |name: HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let max_age = h.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let etag = text(header::ETAG);
        let last_modified = text(header::LAST_MODIFIED);
        // Every field line (RFC 9110 section 5.3), and bytes outside ASCII (a title) kept.
        let links: Vec<_> = h.get_all(header::LINK).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
        let link = (!links.is_empty()).then(|| links.join(", "));
        if status == http::StatusCode::NOT_MODIFIED {
            return Ok(Answer::NotModified { max_age, etag, last_modified, link });
        }
        let content_type = text(header::CONTENT_TYPE);
        let captured = req.capture.and_then(|name| h.get(name)).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = h.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
        if resp.content_length().is_some_and(|n| n > self.max_body) {
            return Err(PollError::BodyTooLarge { limit: self.max_body });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(PollError::from_reqwest)? {
            if (body.len() + chunk.len()) as u64 > self.max_body {
                return Err(PollError::BodyTooLarge { limit: self.max_body });
            }
            body.extend_from_slice(&chunk);
        }
        let body = body.freeze();
        Ok(if status.is_success() {
            Answer::Ok { body, content_type, etag, last_modified, max_age, link, captured }
        } else {
            Answer::Status { status: status.as_u16(), content_type, body, retry_after }
        })
    }
}

impl Fetch for UpstreamClient {
    fn fetch<'a>(&'a self, req: Request<'a>) -> FetchFuture<'a> {
        Box::pin(self.get(req))
    }

    fn base_url(&self) -> &str {
        &self.base
    }

    fn max_body(&self) -> u64 {
        self.max_body
    }
}

impl UpstreamClient {
    /// Draws a request from its budget of the upstream's quota. While the quota is spread, the
    /// request waits its turn (holding the caller's slot, so no longer than `quota_wait`); a
    /// longer wait (none left until a far reset) is not waited out: the request fails at once,
    /// and its caller asks again when the quota allows, like after a `Retry-After`.
    async fn admit(&self, budget: BudgetKey) -> Result<Draw<'_>, PollError> {
        // One deadline for all of it: a request never waits longer than `quota_wait` in all.
        let latest = Instant::now() + self.quota_wait;
        let mut counted = false;
        let mut count = || {
            if !std::mem::replace(&mut counted, true) {
                self.quota_deferred.inc();
            }
        };
        loop {
            match self.quota.draw(budget, latest) {
                Ok((draw, turn)) => {
                    if turn > Instant::now() {
                        count();
                        tokio::time::sleep_until(turn).await;
                    }
                    return Ok(draw);
                }
                Err(until) if until <= latest => {
                    count();
                    tokio::time::sleep_until(until).await;
                }
                Err(until) => {
                    count();
                    // Whole seconds, rounded up: asked again no sooner than the quota allows.
                    let wait = until.saturating_duration_since(Instant::now());
                    let wait = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
                    return Err(PollError::QuotaExhausted { until: SystemTime::now() + wait, wait });
                }
            }
        }
    }
}

/// The client certificate and key for mTLS (`upstream.client_cert`, `upstream.client_key`).
fn identity(cert: &str, key: &str) -> Result<reqwest::Identity, PollError> {
    let mut pem = std::fs::read(cert).map_err(|e| PollError::Setup(format!("upstream.client_cert {cert}: {e}")))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(key).map_err(|e| PollError::Setup(format!("upstream.client_key {key}: {e}")))?);
    reqwest::Identity::from_pem(&pem)
        .map_err(|e| PollError::Setup(format!("upstream.client_cert {cert}: {}", crate::cause(&e))))
}

/// `max-age` from a Cache-Control value (ignored when `no-cache`/`no-store` say otherwise).
fn max_age(cc: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cc.split(',').map(str::trim) {
        match directive.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("max-age") => {
                age = v.trim_matches('"').parse().ok().map(Duration::from_secs)
            }
            None if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store") => {
                return None
            }
            _ => {}
        }
    }
    age
}

/// Retry-After as seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream on a local port answering its requests with `responses` in turn (one per
    /// connection); the heads of the requests it was sent.
    async fn serve_each(responses: Vec<Vec<u8>>) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for response in responses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                tx.send(String::from_utf8_lossy(&head).to_ascii_lowercase()).ok();
                sock.write_all(&response).await.unwrap();
                sock.shutdown().await.ok();
            }
        });
        (format!("http://{addr}"), rx)
    }

    const EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";

    // herald's own polls carry every upstream.headers entry; a request made for a subscriber
    // carries none of the service credential, whatever the route's vary names, but the other
    // configured headers unless vary names them.
    #[tokio::test]
    async fn a_request_for_a_subscriber_carries_none_of_the_service_credential() {
        let (url, mut heads) = serve_each(vec![EMPTY.to_vec(); 4]).await;
        let cfg = herald_config::Upstream {
            url: herald_config::UpstreamUrl::parse(&url).unwrap(),
            headers: [
                ("authorization", "Bearer service"),
                ("cookie", "svc=1"),
                ("x-api-version", "2"),
                ("x-tenant", "t"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .to_vec(),
            ..Default::default()
        };
        let client = UpstreamClient::new(&cfg).unwrap();
        let vary = ["cookie".to_string(), "x-tenant".to_string()];
        let alice = [(header::COOKIE, HeaderValue::from_static("session=alice"))];
        for (req, expected) in [
            (Request { target: "/t", ..Request::default() }, "own"),
            (Request { target: "/t", withhold: &vary, ..Request::default() }, "anonymous"),
            (Request { target: "/t", withhold: &vary, credentials: &alice, ..Request::default() }, "alice"),
        ] {
            client.fetch(req).await.unwrap();
            let head = heads.recv().await.unwrap();
            let has = |line: &str| head.contains(&format!("\r\n{line}\r\n"));
            assert!(has("x-api-version: 2"), "{expected}: {head}");
            match expected {
                "own" => assert!(has("authorization: bearer service") && has("cookie: svc=1") && has("x-tenant: t")),
                _ => {
                    assert!(!head.contains("authorization:") && !head.contains("x-tenant:"), "{expected}: {head}");
                    assert_eq!(has("cookie: session=alice"), expected == "alice", "{head}");
                    assert!(!head.contains("svc=1"), "{expected}: {head}");
                }
            }
        }
    }

    const SPENT: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 3600\r\n\
        content-length: 2\r\nconnection: close\r\n\r\n{}";

    // A request that would wait long for the quota is not sent and waits for nothing: it fails
    // at once, saying until when, and counts as deferred.
    #[tokio::test]
    async fn a_spent_quota_fails_a_request_at_once_instead_of_holding_it_for_the_reset() {
        let (url, _heads) = serve_each(vec![SPENT.to_vec(), EMPTY.to_vec()]).await;
        let cfg =
            herald_config::Upstream { url: herald_config::UpstreamUrl::parse(&url).unwrap(), ..Default::default() };
        let client = UpstreamClient::new(&cfg).unwrap();
        assert!(matches!(
            client.fetch(Request { target: "/t", ..Request::default() }).await,
            Ok(Answer::Status { status: 429, .. })
        ));
        let started = std::time::Instant::now();
        let e = client.fetch(Request { target: "/t", ..Request::default() }).await.unwrap_err();
        assert!(started.elapsed() < cfg.timeout, "waited {:?}", started.elapsed());
        assert!(e.to_string().starts_with("upstream quota exhausted until "), "{e}");
        assert_eq!((e.status(), e.retry_after()), (503, Some(Duration::from_secs(3600))));
        assert_eq!(client.quota_deferred.get(), 1);
        // Another credential's budget is not the one spent.
        let vary = ["authorization".to_string()];
        client.fetch(Request { target: "/t", withhold: &vary, ..Request::default() }).await.unwrap();
    }

    #[tokio::test]
    async fn with_rate_limit_headers_off_the_quota_fields_are_ignored() {
        let (url, _heads) = serve_each(vec![SPENT.to_vec(), EMPTY.to_vec()]).await;
        let cfg = herald_config::Upstream {
            url: herald_config::UpstreamUrl::parse(&url).unwrap(),
            rate_limit_headers: false,
            ..Default::default()
        };
        let client = UpstreamClient::new(&cfg).unwrap();
        for _ in 0..2 {
            client.fetch(Request { target: "/t", ..Request::default() }).await.unwrap();
        }
        assert_eq!(client.quota_deferred.get(), 0);
    }

    async fn link_of(response: &[u8]) -> Option<String> {
        let (url, _heads) = serve_each(vec![response.to_vec()]).await;
        let cfg =
            herald_config::Upstream { url: herald_config::UpstreamUrl::parse(&url).unwrap(), ..Default::default() };
        let client = UpstreamClient::new(&cfg).unwrap();
        match client.fetch(Request { target: "/t", ..Request::default() }).await.unwrap() {
            Answer::Ok { link, .. } | Answer::NotModified { link, .. } => link,
            other => panic!("{other:?}"),
        }
    }

    // A Link field may come as several field lines, one link each (RFC 9110 section 5.3).
    #[tokio::test]
    async fn every_link_field_line_is_read() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
            link: </t?page=1>; rel=\"first\"\r\n\
            link: </t?page=2>; rel=\"next\"\r\n\
            content-length: 2\r\nconnection: close\r\n\r\n[]";
        let link = link_of(response).await;
        assert!(link.as_deref().is_some_and(|l| l.contains("page=2")), "the next page is lost: {link:?}");
    }

    // A `title` in UTF-8 (obs-text in RFC 9110) does not lose the field.
    #[tokio::test]
    async fn a_link_field_with_a_utf8_title_keeps_its_next_page() {
        let mut response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_vec();
        response.extend_from_slice("link: </t?page=2>; rel=\"next\"; title=\"Aufgaben \u{fc}berblick\"\r\n".as_bytes());
        response.extend_from_slice(b"content-length: 2\r\nconnection: close\r\n\r\n[]");
        let link = link_of(&response).await;
        assert!(link.as_deref().is_some_and(|l| l.contains("page=2")), "the next page is lost: {link:?}");
    }

    #[test]
    fn a_client_certificate_and_its_key_make_the_clients_identity() {
        let fixture = |name: &str| format!("{}/../../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let cfg = |cert: &str, key: &str| herald_config::Upstream {
            url: herald_config::UpstreamUrl::parse("https://127.0.0.1:9").unwrap(),
            client_cert: Some(fixture(cert)),
            client_key: Some(fixture(key)),
            ..Default::default()
        };
        assert!(UpstreamClient::new(&cfg("tls-client.pem", "tls-client.key")).is_ok());
        let Err(PollError::Setup(e)) = UpstreamClient::new(&cfg("tls-client.pem", "tls-a.key")) else {
            panic!("a key of another certificate was taken")
        };
        assert!(
            e.starts_with("upstream.client_key ") && e.contains("not the private key of upstream.client_cert"),
            "{e}"
        );
        let Err(PollError::Setup(e)) = UpstreamClient::new(&cfg("tls-client.pem", "README.md")) else {
            panic!("a key file without a key was taken")
        };
        assert!(e.starts_with("upstream.client_cert "), "{e}");
        let Err(PollError::Setup(e)) = UpstreamClient::new(&cfg("tls-client.pem", "missing.key")) else {
            panic!("a missing key file was taken")
        };
        assert!(e.starts_with("upstream.client_key ") && e.contains("missing.key"), "{e}");
    }

    #[test]
    fn cache_control_and_retry_after() {
        assert_eq!(max_age("public, max-age=30"), Some(Duration::from_secs(30)));
        assert_eq!(max_age("max-age=30, no-cache"), None);
        assert_eq!(max_age("private"), None);
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(retry_after("soon"), None);
    }
}
