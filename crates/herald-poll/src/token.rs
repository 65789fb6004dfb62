//! The service credential obtained by an OAuth 2.0 client credentials grant (RFC 6749 section
//! 4.4): one token kept for every poll, renewed before it expires, fetched once however many
//! polls need it at the same moment.
//!
//! Hand-written over the reqwest client polls already use rather than the `oauth2` crate: the
//! exchange is one form POST and one JSON answer, and the crate would bring its own HTTP client
//! abstraction next to ours (docs/decisions.md).

use std::sync::Mutex;
use std::time::Duration;

use http::HeaderValue;
use prometheus::IntCounterVec;
use tokio::time::Instant;

use crate::PollError;

/// The lifetime assumed when the token endpoint does not say (`expires_in` is optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// How long before a token expires it is renewed: 10% of its lifetime, at least 30 s, never more
/// than half of it (so a short-lived token is still used for a while).
pub(crate) fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).max(Duration::from_secs(30)).min(lifetime / 2)
}

/// A token and when it is to be renewed.
#[derive(Clone)]
struct Token {
    /// `Bearer …`, marked sensitive (never printed by `Debug`, kept out of HPACK tables).
    header: HeaderValue,
    renew_at: Instant,
}

/// Where a token comes from: the real endpoint, or a script in tests.
pub(crate) trait Issue: Send + Sync + 'static {
    /// A new access token and its lifetime.
    fn issue(&self) -> impl std::future::Future<Output = Result<(String, Option<Duration>), Refused>> + Send;
}

/// Why no token was issued, by outcome label.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The endpoint answered, but not with a token: `refused`.
    Answer(String),
    /// No answer (timeout, connection): `error`.
    Transport(PollError),
}

/// The current token, renewed when due; one renewal at a time.
pub(crate) struct Tokens<I> {
    issuer: I,
    current: Mutex<Option<Token>>,
    /// Held by the one poll that renews the token; the others wait on it and then find the new
    /// token (single flight). An async lock on purpose: it is held across the token request and
    /// guards no data.
    renewing: tokio::sync::Mutex<()>,
    refreshes: IntCounterVec,
}

impl<I: Issue> Tokens<I> {
    pub(crate) fn new(issuer: I, refreshes: IntCounterVec) -> Self {
        Tokens { issuer, current: Mutex::new(None), renewing: tokio::sync::Mutex::new(()), refreshes }
    }

    fn valid(&self) -> Option<HeaderValue> {
        let current = self.current.lock().unwrap();
        current.as_ref().filter(|t| Instant::now() < t.renew_at).map(|t| t.header.clone())
    }

    /// The `authorization` value to send: the current token, or a new one when it is due.
    pub(crate) async fn header(&self) -> Result<HeaderValue, PollError> {
        if let Some(header) = self.valid() {
            return Ok(header);
        }
        let _renewing = self.renewing.lock().await;
        // Renewed by the poll we waited for.
        if let Some(header) = self.valid() {
            return Ok(header);
        }
        let (token, lifetime) = match self.issuer.issue().await {
            Ok(issued) => {
                self.refreshes.with_label_values(&["ok"]).inc();
                issued
            }
            Err(Refused::Answer(why)) => {
                self.refreshes.with_label_values(&["refused"]).inc();
                return Err(PollError::Token(why));
            }
            Err(Refused::Transport(e)) => {
                self.refreshes.with_label_values(&["error"]).inc();
                return Err(PollError::Token(e.to_string().replacen("upstream", "token endpoint", 1)));
            }
        };
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            PollError::Token("token endpoint answered an access_token that is not a header value".into())
        })?;
        header.set_sensitive(true);
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
        let renew_at = Instant::now() + lifetime - renew_margin(lifetime);
        *self.current.lock().unwrap() = Some(Token { header: header.clone(), renew_at });
        Ok(header)
    }

    /// The upstream answered 401 to `used`: it is not asked with that token again. A token
    /// renewed meanwhile by another poll is kept.
    pub(crate) fn reject(&self, used: &HeaderValue) {
        let mut current = self.current.lock().unwrap();
        if current.as_ref().is_some_and(|t| t.header == *used) {
            *current = None;
        }
    }
}

/// The token endpoint over HTTP: `client_secret_basic`, a form body, a JSON answer.
pub(crate) struct Endpoint {
    pub(crate) http: reqwest::Client,
    pub(crate) auth: herald_config::UpstreamAuth,
}

impl Issue for Endpoint {
    async fn issue(&self) -> Result<(String, Option<Duration>), Refused> {
        use base64::Engine;
        let a = &self.auth;
        let mut form = String::from("grant_type=client_credentials");
        for (name, value) in [("scope", &a.scope), ("audience", &a.audience)] {
            if let Some(value) = value {
                form.push_str(&format!("&{name}={}", form_encode(value)));
            }
        }
        // RFC 6749 section 2.3.1: id and secret are form-encoded, then joined by ':'.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&a.client_id),
            form_encode(&a.client_secret)
        ));
        let mut authorization = HeaderValue::try_from(format!("Basic {basic}")).expect("base64 is a header value");
        authorization.set_sensitive(true);
        let resp = self
            .http
            .post(&a.token_url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| Refused::Transport(PollError::from_reqwest(e)))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| Refused::Transport(PollError::from_reqwest(e)))?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // RFC 6749 section 5.2: `error` is a code from a short list; anything else the
            // server said is not repeated (it might echo what it was sent).
            let code = json.as_ref().and_then(|j| j["error"].as_str()).filter(|c| is_error_code(c));
            return Err(Refused::Answer(match code {
                Some(code) => format!("token endpoint answered {}: {code}", status.as_u16()),
                None => format!("token endpoint answered {}", status.as_u16()),
            }));
        }
        let Some(json) = json else {
            return Err(Refused::Answer("token endpoint answered with no JSON".into()));
        };
        let Some(token) = json["access_token"].as_str().filter(|t| !t.is_empty()) else {
            return Err(Refused::Answer("token endpoint answered without an access_token".into()));
        };
        if !json["token_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err(Refused::Answer("token endpoint answered a token_type other than Bearer".into()));
        }
        // A number, as RFC 6749 says, or (as some servers send it) a string of one.
        let expires_in = json["expires_in"].as_u64().or_else(|| json["expires_in"].as_str()?.trim().parse().ok());
        let lifetime = expires_in.map(Duration::from_secs);
        Ok((token.to_string(), lifetime))
    }
}

/// An error code as RFC 6749 section 5.2 allows them (`%x20-21 / %x23-5B / %x5D-7E`), short.
fn is_error_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `application/x-www-form-urlencoded` (the WHATWG serializer): unreserved bytes as they are,
/// space as `+`, everything else `%XX`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Issues `t1`, `t2`… after `delay`, living `lifetime`; counts its calls.
    struct Script {
        calls: Arc<AtomicU64>,
        delay: Duration,
        lifetime: Option<Duration>,
    }

    impl Issue for Script {
        async fn issue(&self) -> Result<(String, Option<Duration>), Refused> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            Ok((format!("t{n}"), self.lifetime))
        }
    }

    fn tokens(delay: Duration, lifetime: Option<Duration>) -> (Arc<Tokens<Script>>, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["outcome"]).unwrap();
        (Arc::new(Tokens::new(Script { calls: calls.clone(), delay, lifetime }, counter)), calls)
    }

    #[test]
    fn the_margin_is_a_tenth_at_least_30s_at_most_half() {
        assert_eq!(renew_margin(Duration::from_secs(3600)), Duration::from_secs(360));
        assert_eq!(renew_margin(Duration::from_secs(120)), Duration::from_secs(30));
        assert_eq!(renew_margin(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_renewed_before_it_expires_not_before_it_is_due() {
        let (tokens, calls) = tokens(Duration::ZERO, Some(Duration::from_secs(300)));
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        // Renewed 30 s before its 300 s are up.
        tokio::time::advance(Duration::from_secs(269)).await;
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(tokens.header().await.unwrap(), "Bearer t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn without_expires_in_a_token_lives_an_hour() {
        let (tokens, calls) = tokens(Duration::ZERO, None);
        tokens.header().await.unwrap();
        tokio::time::advance(Duration::from_secs(3600 - 360 - 1)).await;
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(tokens.header().await.unwrap(), "Bearer t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_polls_share_one_token_request() {
        let (tokens, calls) = tokens(Duration::from_secs(1), Some(Duration::from_secs(300)));
        let polls: Vec<_> = (0..20)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { tokens.header().await.unwrap() })
            })
            .collect();
        for poll in polls {
            assert_eq!(poll.await.unwrap(), "Bearer t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_replaced_once_however_many_polls_saw_it_rejected() {
        let (tokens, calls) = tokens(Duration::ZERO, Some(Duration::from_secs(300)));
        let t1 = tokens.header().await.unwrap();
        tokens.reject(&t1);
        assert_eq!(tokens.header().await.unwrap(), "Bearer t2");
        // A second poll that was answered 401 to t1 does not throw t2 away.
        tokens.reject(&t1);
        assert_eq!(tokens.header().await.unwrap(), "Bearer t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A token endpoint on a local port answering one request with `status` and `body`; the
    /// request it was sent.
    async fn endpoint(status: u16, body: &str) -> (Endpoint, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // The head and the form (short enough to come with it or right after).
            while !String::from_utf8_lossy(&request).contains("grant_type") {
                let n = sock.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            tx.send(String::from_utf8_lossy(&request).into_owned()).ok();
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        });
        let auth = herald_config::UpstreamAuth {
            token_url: format!("http://{addr}/oauth/token"),
            client_id: "herald app".into(),
            client_secret: "p@ss:word".into(),
            scope: Some("tasks.read tasks.write".into()),
            audience: Some("https://api.example".into()),
        };
        (Endpoint { http: reqwest::Client::new(), auth }, rx)
    }

    #[tokio::test]
    async fn a_token_request_is_a_form_post_with_client_secret_basic() {
        let (endpoint, request) =
            endpoint(200, r#"{"access_token":"abc","token_type":"BEARER","expires_in":"120"}"#).await;
        let (token, lifetime) = endpoint.issue().await.unwrap();
        assert_eq!((token.as_str(), lifetime), ("abc", Some(Duration::from_secs(120))));
        let request = request.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /oauth/token "), "{request}");
        assert!(request.contains("content-type: application/x-www-form-urlencoded"), "{request}");
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode("herald+app:p%40ss%3Aword").to_ascii_lowercase();
        assert!(request.contains(&format!("authorization: basic {basic}")), "{request}");
        assert!(
            request.ends_with(
                "grant_type=client_credentials&scope=tasks.read+tasks.write&audience=https%3a%2f%2fapi.example"
            ),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_refusal_names_the_status_and_error_code_and_nothing_it_was_sent() {
        let why = |r: Result<(String, Option<Duration>), Refused>| match r {
            Err(Refused::Answer(why)) => why,
            other => panic!("{other:?}"),
        };
        let (e, _) = endpoint(401, r#"{"error":"invalid_client","error_description":"bad secret p@ss:word"}"#).await;
        assert_eq!(why(e.issue().await), "token endpoint answered 401: invalid_client");
        let (e, _) = endpoint(500, "<html>oops</html>").await;
        assert_eq!(why(e.issue().await), "token endpoint answered 500");
        let (e, _) = endpoint(200, "not json").await;
        assert_eq!(why(e.issue().await), "token endpoint answered with no JSON");
        let (e, _) = endpoint(200, r#"{"access_token":"abc","token_type":"mac"}"#).await;
        assert_eq!(why(e.issue().await), "token endpoint answered a token_type other than Bearer");
        let (e, _) = endpoint(200, r#"{"token_type":"bearer"}"#).await;
        assert_eq!(why(e.issue().await), "token endpoint answered without an access_token");
    }

    #[tokio::test]
    async fn an_unreachable_token_endpoint_is_a_poll_error_counted_as_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let auth = herald_config::UpstreamAuth {
            token_url: format!("http://127.0.0.1:{port}/token"),
            client_id: "herald".into(),
            client_secret: "hunter2".into(),
            scope: None,
            audience: None,
        };
        let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["outcome"]).unwrap();
        let tokens = Tokens::new(Endpoint { http: reqwest::Client::new(), auth }, counter.clone());
        let e = tokens.header().await.unwrap_err().to_string();
        assert!(e.starts_with("token endpoint unreachable") && !e.contains("hunter2"), "{e}");
        assert_eq!(counter.with_label_values(&["error"]).get(), 1);
        assert_eq!(counter.with_label_values(&["ok"]).get(), 0);
    }

    #[test]
    fn client_credentials_are_form_encoded() {
        assert_eq!(form_encode("a b+c/d:é"), "a+b%2Bc%2Fd%3A%C3%A9");
        assert_eq!(form_encode("herald-1.x_y*"), "herald-1.x_y*");
    }
}
