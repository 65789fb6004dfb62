//! The service credential obtained by an OAuth 2.0 client credentials grant (RFC 6749 section
//! 4.4): one token kept for every poll, renewed before it expires, fetched once however many
//! polls need it at the same moment; a failed request is the answer of every poll that waited
//! for it, and is remembered briefly, so a failing token endpoint is not asked once per poll.
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
/// The longest lifetime believed: a token said to live longer (`expires_in` of years, or more
/// than a clock can count) is renewed as if it lived a day.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a failed token request is remembered: the polls that need a token meanwhile fail
/// with its error at once instead of asking again. Doubled with each failure in a row, up to
/// [`MAX_FAILURE_MEMORY`].
const FAILURE_MEMORY: Duration = Duration::from_secs(1);
const MAX_FAILURE_MEMORY: Duration = Duration::from_secs(30);
/// The most of a token endpoint's answer read (a token answer is a few hundred bytes).
const MAX_ANSWER: usize = 64 << 10;

/// How long before a token expires it is renewed: 10% of its lifetime, at least 30 s, never more
/// than half of it (so a short-lived token is still used for a while).
pub(crate) fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).max(Duration::from_secs(30)).min(lifetime / 2)
}

/// The least time between two tokens dropped for a 401: a quarter of a token's lifetime, at
/// most 30 s (a token revoked early is replaced at once; a flood of 401s costs at most one token
/// request per spacing).
pub(crate) fn reject_spacing(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(30))
}

/// A token, when it is to be renewed, and when it expires.
#[derive(Clone)]
struct Token {
    /// `Bearer …`, marked sensitive (never printed by `Debug`, kept out of HPACK tables).
    header: HeaderValue,
    /// How long it was given to live.
    lifetime: Duration,
    renew_at: Instant,
    /// Until then it is used while its renewal fails or is under way.
    expires_at: Instant,
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

/// The current token, renewed when due; one token request at a time.
pub(crate) struct Tokens<I> {
    issuer: I,
    state: Mutex<State>,
    /// Held by the one poll that asks for a token; the polls that need one meanwhile wait on it
    /// and then take its outcome, token or failure (single flight). An async lock on purpose:
    /// it is held across the token request and guards no data.
    renewing: tokio::sync::Mutex<()>,
    refreshes: IntCounterVec,
}

#[derive(Default)]
struct State {
    current: Option<Token>,
    /// The last token request failed: its error, given to the polls that need a new token until
    /// `until`, instead of asking again.
    failed: Option<Failed>,
    /// Token requests failed in a row.
    failures: u32,
    /// Token requests finished, so that a poll that waited for one knows that one did.
    attempts: u64,
    /// When a 401 last made herald drop a token.
    rejected_at: Option<Instant>,
}

struct Failed {
    error: PollError,
    until: Instant,
}

impl State {
    /// What a poll gets without asking the endpoint: the token while it is not due; while a
    /// failure is remembered (or is the outcome of the request a poll that saw `attempts`
    /// waited for), the token until it expires, else that failure. `None`: time to ask.
    fn settled(&self, now: Instant, waited: Option<u64>) -> Option<Result<HeaderValue, PollError>> {
        if let Some(token) = self.current.as_ref().filter(|t| now < t.renew_at) {
            return Some(Ok(token.header.clone()));
        }
        let finished = waited.is_some_and(|seen| seen != self.attempts);
        let failed = self.failed.as_ref().filter(|f| now < f.until || finished)?;
        Some(self.unexpired(now).ok_or_else(|| failed.error.clone()))
    }

    /// The current token, due for renewal or not, until it expires.
    fn unexpired(&self, now: Instant) -> Option<HeaderValue> {
        self.current.as_ref().filter(|t| now < t.expires_at).map(|t| t.header.clone())
    }
}

impl<I: Issue> Tokens<I> {
    pub(crate) fn new(issuer: I, refreshes: IntCounterVec) -> Self {
        Tokens { issuer, state: Mutex::default(), renewing: tokio::sync::Mutex::new(()), refreshes }
    }

    /// The `authorization` value to send: the current token, or a new one when it is due. While
    /// a renewal is under way or failing, the current token is used until it expires.
    pub(crate) async fn header(&self) -> Result<HeaderValue, PollError> {
        let (attempts, unexpired) = {
            let st = self.state.lock().unwrap();
            let now = Instant::now();
            if let Some(settled) = st.settled(now, None) {
                return settled;
            }
            (st.attempts, st.unexpired(now))
        };
        let _renewing = match (self.renewing.try_lock(), unexpired) {
            (Ok(renewing), _) => renewing,
            // Another poll is renewing it: this one need not wait for that.
            (Err(_), Some(header)) => return Ok(header),
            (Err(_), None) => self.renewing.lock().await,
        };
        // A request that finished while this poll waited answers it too, token or failure.
        if let Some(settled) = self.state.lock().unwrap().settled(Instant::now(), Some(attempts)) {
            return settled;
        }
        let issued = self.issue().await;
        let mut st = self.state.lock().unwrap();
        st.attempts += 1;
        let now = Instant::now();
        match issued {
            Ok(token) => {
                let header = token.header.clone();
                *st = State {
                    current: Some(token),
                    failed: None,
                    failures: 0,
                    attempts: st.attempts,
                    rejected_at: st.rejected_at,
                };
                Ok(header)
            }
            Err(error) => {
                st.failures = st.failures.saturating_add(1);
                let memory = FAILURE_MEMORY.saturating_mul(1 << (st.failures - 1).min(5)).min(MAX_FAILURE_MEMORY);
                // Asked again when the current token expires, at the latest.
                let until = match &st.current {
                    Some(token) if now < token.expires_at => (now + memory).min(token.expires_at),
                    _ => now + memory,
                };
                st.failed = Some(Failed { error: error.clone(), until });
                st.unexpired(now).ok_or(error)
            }
        }
    }

    /// One token request, counted by outcome.
    async fn issue(&self) -> Result<Token, PollError> {
        let outcome = |label: &str| self.refreshes.with_label_values(&[label]).inc();
        let (token, lifetime) = match self.issuer.issue().await {
            Ok(issued) => issued,
            Err(Refused::Answer(why)) => {
                outcome("refused");
                return Err(PollError::Token(why));
            }
            Err(Refused::Transport(e)) => {
                outcome("error");
                return Err(PollError::Token(e.to_string().replacen("upstream", "token endpoint", 1)));
            }
        };
        let Ok(mut header) = HeaderValue::try_from(format!("Bearer {token}")) else {
            outcome("refused");
            return Err(PollError::Token("token endpoint answered an access_token that is not a header value".into()));
        };
        outcome("ok");
        header.set_sensitive(true);
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME).min(MAX_LIFETIME);
        let now = Instant::now();
        Ok(Token { header, lifetime, renew_at: now + lifetime - renew_margin(lifetime), expires_at: now + lifetime })
    }

    /// The upstream answered 401 to `used`: true when herald drops that token, so that the
    /// poll asks again with a new one. A token renewed meanwhile by another poll is kept. A 401
    /// is not always the token's (a public route's caller picks targets the service account may
    /// not read), so a 401 drops a token at most once per [`reject_spacing`] of its lifetime:
    /// whoever picks the targets cannot make herald ask the token endpoint faster than that.
    pub(crate) fn reject(&self, used: &HeaderValue) -> bool {
        let mut st = self.state.lock().unwrap();
        let now = Instant::now();
        let Some(current) = st.current.as_ref().filter(|t| t.header == *used) else { return false };
        let spacing = reject_spacing(current.lifetime);
        if st.rejected_at.is_some_and(|at| now.duration_since(at) < spacing) {
            return false;
        }
        st.rejected_at = Some(now);
        st.current = None;
        true
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
        let mut resp = self
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
        let too_large = || Refused::Answer(format!("token endpoint answered more than {} KiB", MAX_ANSWER >> 10));
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| Refused::Transport(PollError::from_reqwest(e)))? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
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
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    /// Issues `t1`, `t2`… after `delay`, living `lifetime`, or (while `failing`) refuses after
    /// `delay`; counts its calls.
    struct Script {
        calls: Arc<AtomicU64>,
        failing: Arc<AtomicBool>,
        delay: Duration,
        lifetime: Option<Duration>,
    }

    impl Issue for Script {
        async fn issue(&self) -> Result<(String, Option<Duration>), Refused> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(Refused::Answer(format!("refusal {n}")));
            }
            Ok((format!("t{n}"), self.lifetime))
        }
    }

    /// The tokens, the calls of their script, and the switch that makes it refuse.
    fn script(delay: Duration, lifetime: Option<Duration>) -> (Arc<Tokens<Script>>, Arc<AtomicU64>, Arc<AtomicBool>) {
        let calls = Arc::new(AtomicU64::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["outcome"]).unwrap();
        let script = Script { calls: calls.clone(), failing: failing.clone(), delay, lifetime };
        (Arc::new(Tokens::new(script, counter)), calls, failing)
    }

    fn tokens(delay: Duration, lifetime: Option<Duration>) -> (Arc<Tokens<Script>>, Arc<AtomicU64>) {
        let (tokens, calls, _) = script(delay, lifetime);
        (tokens, calls)
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
        assert!(tokens.reject(&t1));
        assert_eq!(tokens.header().await.unwrap(), "Bearer t2");
        // A second poll that was answered 401 to t1 does not throw t2 away.
        assert!(!tokens.reject(&t1));
        assert_eq!(tokens.header().await.unwrap(), "Bearer t2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_drops_a_token_at_most_once_a_quarter_of_its_lifetime() {
        // 300 s tokens: at most one dropped per 30 s, however many 401s (a caller's targets).
        let (tokens, calls) = tokens(Duration::ZERO, Some(Duration::from_secs(300)));
        let t1 = tokens.header().await.unwrap();
        assert!(tokens.reject(&t1));
        let t2 = tokens.header().await.unwrap();
        for _ in 0..100 {
            assert!(!tokens.reject(&t2), "kept: the 401s are not its own");
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(tokens.reject(&t2));
        assert_eq!(tokens.header().await.unwrap(), "Bearer t3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(reject_spacing(Duration::from_secs(20)), Duration::from_secs(5));
    }

    // Every poll waiting for a token request that fails gets its failure when it comes, and
    // the polls right after it too: the endpoint is asked once, not once per poll.
    #[tokio::test(start_paused = true)]
    async fn a_failed_token_request_fails_every_poll_that_waited_for_it_and_is_remembered_briefly() {
        let (tokens, calls, failing) = script(Duration::from_secs(10), Some(Duration::from_secs(300)));
        failing.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let polls: Vec<_> = (0..20)
            .map(|_| {
                let tokens = tokens.clone();
                tokio::spawn(async move { (tokens.header().await.unwrap_err().to_string(), start.elapsed()) })
            })
            .collect();
        for poll in polls {
            assert_eq!(poll.await.unwrap(), ("refusal 1".to_string(), Duration::from_secs(10)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Remembered for a second: a poll now fails at once, without asking.
        let now = Instant::now();
        assert_eq!(tokens.header().await.unwrap_err().to_string(), "refusal 1");
        assert_eq!((now.elapsed(), calls.load(Ordering::SeqCst)), (Duration::ZERO, 1));
        // Then asked again; a second failure in a row is remembered for two seconds.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(tokens.header().await.unwrap_err().to_string(), "refusal 2");
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(tokens.header().await.unwrap_err().to_string(), "refusal 2");
        tokio::time::advance(Duration::from_millis(1)).await;
        failing.store(false, Ordering::SeqCst);
        assert_eq!(tokens.header().await.unwrap(), "Bearer t3");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    // Past its renewal time a token is still valid: a failed renewal does not fail the polls
    // that could still use it, and none waits for a renewal under way.
    #[tokio::test(start_paused = true)]
    async fn a_token_is_used_until_it_expires_while_its_renewal_fails_or_is_under_way() {
        let (tokens, calls, failing) = script(Duration::from_secs(5), Some(Duration::from_secs(300)));
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        // Due 270 s after it was issued, expired 300 s after.
        let issued = Instant::now();
        tokio::time::advance(Duration::from_secs(271)).await;
        failing.store(true, Ordering::SeqCst);
        // One poll renews; the others go on with t1 at once.
        let renewing = tokio::spawn({
            let tokens = tokens.clone();
            async move { tokens.header().await.unwrap() }
        });
        tokio::task::yield_now().await;
        let now = Instant::now();
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        assert_eq!(now.elapsed(), Duration::ZERO, "waited for the renewal");
        assert_eq!(renewing.await.unwrap(), "Bearer t1", "the renewal failed: the token still holds");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Asked again once the failure is forgotten, failing again: still t1.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Expired: the failure is the answer.
        tokio::time::sleep_until(issued + Duration::from_secs(300)).await;
        let err = tokens.header().await.unwrap_err().to_string();
        assert_eq!(err, "refusal 4", "an expired token is not sent");
    }

    // An `expires_in` of more than a clock can add is a day, not a panic.
    #[tokio::test(start_paused = true)]
    async fn a_huge_lifetime_is_taken_as_a_day() {
        let (tokens, calls) = tokens(Duration::ZERO, Some(Duration::from_secs(10_000_000_000_000_000_000)));
        assert_eq!(tokens.header().await.unwrap(), "Bearer t1");
        tokio::time::advance(MAX_LIFETIME - renew_margin(MAX_LIFETIME)).await;
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
            // A client that reads no further (an answer too large) may close first.
            sock.write_all(response.as_bytes()).await.ok();
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
    async fn an_answer_of_more_than_64_kib_is_refused_and_a_huge_lifetime_is_read() {
        let big = format!(r#"{{"access_token":"{}","token_type":"bearer"}}"#, "a".repeat(70 << 10));
        let (e, _) = endpoint(200, &big).await;
        match e.issue().await {
            Err(Refused::Answer(why)) => assert_eq!(why, "token endpoint answered more than 64 KiB"),
            other => panic!("{other:?}"),
        }
        let (e, _) =
            endpoint(200, r#"{"access_token":"a","token_type":"bearer","expires_in":10000000000000000000}"#).await;
        assert_eq!(e.issue().await.unwrap().1, Some(Duration::from_secs(10_000_000_000_000_000_000)));
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
