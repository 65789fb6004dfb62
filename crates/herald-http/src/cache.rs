//! Legacy pollers (spec section 8): a plain GET or HEAD on a cache route is answered from the
//! running watch, with its ETag, Age and conditional 304s, instead of reaching the upstream; a
//! long poll (`Prefer: wait=N`) is held until the watch changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald_config::{Access, Config};
use herald_core::EventKind;
use herald_poll::{Credentials, Current, Hub, Watch, WatchKey};
use herald_sse::Sessions;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use prometheus::{IntCounter, IntCounterVec};
use tokio::sync::broadcast;

use crate::dispatch::Watched;
use crate::response::{full, header_items, refused, text};
use crate::stream::no_place;
use crate::Body;

pub(crate) struct Cache {
    hub: Arc<Hub>,
    /// The `sse.max_subscribers` budget: a held long poll takes a place in it, as a stream does.
    sessions: Sessions,
    /// `herald_cache_requests_total` per route, resolved once.
    /// By the hub's route slot.
    counters: HashMap<usize, Counters>,
}

struct Counters {
    hit: IntCounter,
    miss: IntCounter,
    bypass: IntCounter,
}

/// How a held long poll ended.
enum Held {
    /// The representation is no longer the poller's: the new one.
    Changed(Box<Current>),
    /// `wait` passed without a change.
    Unchanged,
    /// The watch ended (revoked, retired, shut down) while the request was held.
    Ended,
}

/// How a cache request is answered.
pub(crate) enum Cached<B> {
    Answer(Response<Body>),
    /// The upstream is failing: its answer, not a stale copy, is what a poller should see.
    PassThrough(Request<B>),
}

impl Cache {
    pub(crate) fn new(
        config: &Config,
        slots: &[usize],
        hub: Arc<Hub>,
        sessions: Sessions,
        requests: &IntCounterVec,
    ) -> Self {
        let counters = config
            .routes
            .iter()
            .zip(slots)
            .map(|(r, &slot)| {
                let counter = |result| requests.with_label_values(&[r.name.as_str(), result]);
                (slot, Counters { hit: counter("hit"), miss: counter("miss"), bypass: counter("bypass") })
            })
            .collect();
        Cache { hub, sessions, counters }
    }

    /// Answers a plain GET or HEAD from its watch, holding it first when it is a long poll.
    ///
    /// The hub's calls are boxed: this future lives as long as a long poll is held, and would
    /// otherwise be as large as the largest of them (an admission check, a first poll), each
    /// done before the wait begins. It takes the request, and drops it before a long poll is
    /// held: nothing in it is needed for the answer, and it would be kept for as long as the wait.
    pub(crate) async fn answer<B>(&self, req: Request<B>, watched: Watched) -> Cached<B> {
        let counters = &self.counters[&watched.route];
        let route = watched.route;
        let (key, credentials) = match Box::pin(self.hub.watch_key(route, watched.target, req.headers())).await {
            Ok(found) => found,
            Err(refusal) => {
                counters.miss.inc();
                return Cached::Answer(refused(refusal));
            }
        };
        let current = match Box::pin(self.hub.current(key.clone(), credentials.clone())).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                counters.bypass.inc();
                return Cached::PassThrough(req);
            }
            Err(refusal) => {
                counters.miss.inc();
                return Cached::Answer(refused(refusal));
            }
        };
        let (result, counter) = if current.fresh { ("miss", &counters.miss) } else { ("hit", &counters.hit) };
        counter.inc();

        let etag = current.repr.strong_etag();
        let not_modified = header_items(req.headers(), header::IF_NONE_MATCH)
            .any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag.as_str()));
        // Long polling (section 8): the poller has what is current and will wait for what is next.
        let wait = prefer_wait(req.headers()).filter(|_| not_modified && req.method() == Method::GET);
        let head = req.method() == Method::HEAD;
        drop(req);
        let (current, not_modified) = match wait {
            Some(wait) => {
                // A held request is a subscriber (section 8): it takes a place under
                // `sse.max_subscribers` until it is answered or its client goes away.
                let Some(_slot) = self.sessions.reserve() else {
                    return Cached::Answer(no_place(&self.sessions));
                };
                match self.held(key.clone(), credentials.clone(), &etag, wait).await {
                    Held::Changed(next) => (*next, false),
                    Held::Unchanged => (current, true),
                    // Revoked (401/403), retired by a reload, or shut down: what is true now is
                    // asked afresh (the upstream's own refusal for a revoked credential), never
                    // a 304 that says the poller's copy is current.
                    Held::Ended => match Box::pin(self.hub.current(key, credentials)).await {
                        Ok(Some(now)) => {
                            let unchanged = now.repr.strong_etag() == etag;
                            (now, unchanged)
                        }
                        Ok(None) => {
                            let mut resp =
                                text(StatusCode::SERVICE_UNAVAILABLE, "the upstream is failing, try again later");
                            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
                            return Cached::Answer(resp);
                        }
                        Err(refusal) => return Cached::Answer(refused(refusal)),
                    },
                }
            }
            None => (current, not_modified),
        };
        let mut resp = self.respond(head, route, &current, result, not_modified);
        if let Some(wait) = wait {
            let applied = HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("digits");
            resp.headers_mut().insert("preference-applied", applied);
        }
        Cached::Answer(resp)
    }

    /// Holds a long poll until the watch's representation is no longer `etag`, `wait` passes,
    /// or the watch ends. It joins the watch's broadcast like a stream: no request of its own
    /// reaches the upstream, and the watch stays alive while it waits.
    async fn held(&self, key: WatchKey, credentials: Credentials, etag: &str, wait: Duration) -> Held {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        let Ok(mut joined) = Box::pin(self.hub.subscribe(key, credentials, None)).await else { return Held::Ended };
        // A held request answers with the representation, never with these frames.
        drop(std::mem::take(&mut joined.initial));
        // Read from the watch joined: a change between the first read and joining counts too.
        let changed = |watch: &Watch| watch.latest().filter(|next| next.repr.strong_etag() != etag);
        loop {
            if let Some(next) = changed(&joined.watch) {
                return Held::Changed(Box::new(next));
            }
            tokio::select! {
                event = joined.rx.recv() => match event {
                    Ok(event) if event.kind == EventKind::Terminal => return Held::Ended,
                    Err(broadcast::error::RecvError::Closed) => return Held::Ended,
                    _ => {}
                },
                () = &mut deadline => return Held::Unchanged,
            }
        }
    }

    /// The answer from `current`: 304 when the poller has it, else its body (none to a `HEAD`).
    fn respond(&self, head: bool, route: usize, current: &Current, result: &str, not_modified: bool) -> Response<Body> {
        let repr = &current.repr;
        let etag = repr.strong_etag();
        let age = current.last_poll.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
        let mut resp = Response::builder()
            .header(header::ETAG, &etag)
            .header(header::AGE, age.as_secs())
            .header("x-herald-cache", result);
        if let Some(lm) = &repr.last_modified {
            resp = resp.header(header::LAST_MODIFIED, lm);
        }
        let route = self.hub.route(route);
        if route.access != Access::Public {
            // One user's answer must never be served to another by a shared cache in front.
            resp = resp.header(header::CACHE_CONTROL, "private").header(header::VARY, route.vary.join(", "));
        }
        if not_modified {
            return resp.status(StatusCode::NOT_MODIFIED).body(full("")).expect("valid parts");
        }
        let content_type = repr.content_type.as_deref().unwrap_or("application/octet-stream");
        resp = resp
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
            )
            .header(header::CONTENT_LENGTH, repr.body.len());
        let body = if head { full("") } else { full(repr.body.clone()) };
        resp.body(body).expect("valid parts")
    }
}

/// The longest a long poll is held (section 8).
const MAX_WAIT: Duration = Duration::from_secs(120);

/// `Prefer: wait=N` (RFC 7240), at most [`MAX_WAIT`]; `None` without one (or with `wait=0`).
fn prefer_wait(headers: &http::HeaderMap) -> Option<Duration> {
    header_items(headers, http::HeaderName::from_static("prefer"))
        .filter_map(|p| p.split(';').next()?.trim().strip_prefix("wait="))
        .find_map(|n| n.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .map(|n| Duration::from_secs(n).min(MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_seconds_up_to_two_minutes() {
        let wait = |prefer: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("prefer", prefer.parse().unwrap());
            prefer_wait(&h)
        };
        assert_eq!(wait("wait=10"), Some(Duration::from_secs(10)));
        assert_eq!(wait("respond-async, wait=5"), Some(Duration::from_secs(5)));
        assert_eq!(wait("wait=600"), Some(MAX_WAIT));
        assert_eq!(wait("wait=0"), None);
        assert_eq!(wait("wait=soon"), None);
        assert_eq!(wait("return=minimal"), None);
    }
}
