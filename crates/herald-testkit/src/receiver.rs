//! A webhook receiver for tests and benchmarks: it verifies every request with the Standard
//! Webhooks reference library (`standardwebhooks`, not herald's own signing code), records what
//! it accepted, and can misbehave on demand (fail a fraction of requests, answer 410 or 429).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One accepted delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event_type: String,
    pub body: Value,
    /// The `webhook-signature` header as received.
    pub signature: String,
    /// Wall-clock time of receipt, comparable with the payload's `timestamp`.
    pub received: SystemTime,
    pub traceparent: Option<String>,
}

/// One request as received, whatever the answer.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub path: String,
    pub status: u16,
    pub at: SystemTime,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// 204 to every valid request.
    Accept,
    /// 500 to this fraction of requests (chosen at random), 204 to the rest.
    FailFraction(f64),
    /// This status to every request, with `Retry-After: <secs>` when given. A 3xx points
    /// `Location` at `/elsewhere` (which a sender must not follow).
    Answer(u16, Option<u64>),
    /// Never answers a valid request (a receiver that hangs): it is seen, not accepted.
    Stall,
}

#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

struct State {
    secrets: Vec<String>,
    behaviour: Behaviour,
    accepted: Vec<Delivery>,
    requests: Vec<Seen>,
    /// Requests whose signature did not verify with any trusted secret.
    rejected: u64,
    rng: fastrand::Rng,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub fn new() -> Self {
        Receiver {
            state: Arc::new(Mutex::new(State {
                secrets: Vec::new(),
                behaviour: Behaviour::Accept,
                accepted: Vec::new(),
                requests: Vec::new(),
                rejected: 0,
                rng: fastrand::Rng::with_seed(7),
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Listens on `addr` (port 0: any); returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(local)
    }

    /// Accepts signatures made with `secret` (`whsec_…`) from now on.
    pub fn trust(&self, secret: &str) {
        self.state.lock().unwrap().secrets.push(secret.to_string());
    }

    /// Trusts only `secret` from now on.
    pub fn trust_only(&self, secret: &str) {
        self.state.lock().unwrap().secrets = vec![secret.to_string()];
    }

    pub fn behave(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
    }

    /// Every accepted delivery, in arrival order (duplicates included: delivery is at least once).
    pub fn accepted(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// How many deliveries were accepted (cheap: no copy).
    pub fn accepted_count(&self) -> usize {
        self.state.lock().unwrap().accepted.len()
    }

    /// The distinct `webhook-id`s accepted.
    pub fn accepted_ids(&self) -> HashSet<String> {
        self.state.lock().unwrap().accepted.iter().map(|d| d.id.clone()).collect()
    }

    /// Every request seen, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests refused because their signature did not verify.
    pub fn rejected(&self) -> u64 {
        self.state.lock().unwrap().rejected
    }

    /// Waits until `check` holds over the accepted deliveries; `false` after `within`.
    pub async fn wait_until(&self, within: Duration, check: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            // A copy: `check` may call back into the receiver.
            if check(&self.accepted()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.accepted());
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return answer(StatusCode::BAD_REQUEST, None);
        };
        let (status, retry_after, stall) = self.record(&parts, &body);
        self.changed.notify_waiters();
        if stall {
            // Recorded as seen with 408, which is never sent: the sender gives up first.
            std::future::pending::<()>().await;
        }
        answer(status, retry_after)
    }

    /// Verifies and records one request; how to answer it: status, `Retry-After`, and whether
    /// to stall instead.
    fn record(&self, parts: &http::request::Parts, body: &Bytes) -> (StatusCode, Option<u64>, bool) {
        let id = parts.headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mut st = self.state.lock().unwrap();
        let verified = st
            .secrets
            .iter()
            .any(|s| standardwebhooks::Webhook::new(s).is_ok_and(|w| w.verify(body, &parts.headers).is_ok()));
        let status = if !verified {
            st.rejected += 1;
            StatusCode::UNAUTHORIZED
        } else {
            let roll = st.rng.f64();
            match st.behaviour {
                Behaviour::Accept => StatusCode::NO_CONTENT,
                Behaviour::FailFraction(f) if roll < f => StatusCode::INTERNAL_SERVER_ERROR,
                Behaviour::FailFraction(_) => StatusCode::NO_CONTENT,
                Behaviour::Answer(code, _) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Behaviour::Stall => StatusCode::REQUEST_TIMEOUT,
            }
        };
        st.requests.push(Seen {
            id: id.clone(),
            path: parts.uri.path().to_string(),
            status: status.as_u16(),
            at: SystemTime::now(),
        });
        if status.is_success() {
            let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            st.accepted.push(Delivery {
                id,
                event_type: parsed["type"].as_str().unwrap_or_default().to_string(),
                body: parsed,
                signature: parts
                    .headers
                    .get("webhook-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                received: SystemTime::now(),
                traceparent: parts.headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string),
            });
        }
        let retry_after = match st.behaviour {
            Behaviour::Answer(_, r) => r,
            _ => None,
        };
        let stall = verified && st.behaviour == Behaviour::Stall;
        (status, retry_after, stall)
    }
}

fn answer(status: StatusCode, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut resp = Response::builder().status(status);
    if status.is_redirection() {
        resp = resp.header(http::header::LOCATION, "/elsewhere");
    }
    if let Some(secs) = retry_after {
        resp = resp.header(http::header::RETRY_AFTER, secs.to_string());
    }
    resp.body(Full::new(Bytes::new())).expect("static parts are valid")
}
