//! The upstream client for polls and admission checks: conditional requests, a timeout on
//! every request, bodies cut off at `max_body` while streaming.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use herald_core::trace::{TraceParent, TRACEPARENT};
use tracing::{debug, info};

use crate::quota::{BudgetKey, Quota, RateLimit};
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
    /// never borrows the service's (spec section 5).
    pub withhold: &'a [String],
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// A field of a 2xx answer the caller wants (lower case; a delta cursor, `poll.delta`).
    pub capture: Option<&'a str>,
}

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
    headers: HeaderMap,
    max_body: u64,
    /// The service token (`upstream.auth`): an `authorization` header added where `headers` are.
    tokens: Option<Tokens<Endpoint>>,
    /// `herald_upstream_token_refreshes_total{outcome}`, registered by [`UpstreamClient::register`].
    token_refreshes: prometheus::IntCounterVec,
    /// The upstream's quota as its answers announce it: every request draws from it.
    quota: Quota,
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
            .map_err(|e| PollError::Setup(e.to_string()))?;
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
            max_body: cfg.max_body,
            tokens,
            token_refreshes,
            quota: Quota::new(cfg.rate_limit_reserve),
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
        let budget = BudgetKey::of(req.credentials);
        let mut resp = loop {
            // Held back while the upstream's quota runs low (the limiter's slot stays held: a
            // poll that waits here is one the upstream could not take now anyway).
            let draw = self.quota.admit(budget).await;
            if draw.deferred {
                self.quota_deferred.inc();
            }
            let mut headers = self.headers.clone();
            let mut token = None;
            // The service token is one of the service's headers: added here, withheld below
            // by name like the others (spec section 5).
            if let Some(tokens) = &self.tokens {
                let withheld = req.withhold.iter().any(|n| n.as_str() == header::AUTHORIZATION.as_str());
                let own = req.credentials.iter().any(|(n, _)| n == header::AUTHORIZATION);
                if !withheld && !own {
                    let value = tokens.header().await?;
                    headers.insert(header::AUTHORIZATION, value.clone());
                    token = Some(value);
                }
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
            draw.answered(RateLimit::from_headers(resp.headers(), std::time::SystemTime::now()));
            if budget == BudgetKey::Service {
                self.quota_remaining
                    .set(self.quota.service_remaining().map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX)));
            }
            // A 401 to the service token (expired early, revoked): once more with a new one.
            match (&self.tokens, token) {
                (Some(tokens), Some(token)) if resp.status() == http::StatusCode::UNAUTHORIZED && !retried => {
                    debug!("upstream refused the service token; asking for a new one");
                    tokens.reject(&token);
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

    /// An upstream on a local port answering one request with `response` as is.
    async fn serve_once(response: Vec<u8>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
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
            sock.write_all(&response).await.unwrap();
            sock.shutdown().await.ok();
        });
        addr
    }

    async fn link_of(response: &[u8]) -> Option<String> {
        let addr = serve_once(response.to_vec()).await;
        let cfg = herald_config::Upstream {
            url: herald_config::UpstreamUrl::parse(&format!("http://{addr}")).unwrap(),
            ..Default::default()
        };
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
        assert!(UpstreamClient::new(&cfg("tls-client.pem", "tls-a.key")).is_err(), "a key of another certificate");
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
