//! Legacy pollers (spec section 8): a plain GET or HEAD on a cache route is answered from the
//! running watch, with its ETag, Age and conditional 304s, instead of reaching the upstream.

use std::sync::Arc;
use std::time::SystemTime;

use herald_config::{Access, Config};
use herald_poll::Hub;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use prometheus::{IntCounter, IntCounterVec};

use crate::dispatch::Watched;
use crate::response::{full, header_items, refused};
use crate::Body;

pub(crate) struct Cache {
    hub: Arc<Hub>,
    /// `herald_cache_requests_total` per route, resolved once.
    counters: Vec<Counters>,
}

struct Counters {
    hit: IntCounter,
    miss: IntCounter,
    bypass: IntCounter,
}

/// How a cache request is answered.
pub(crate) enum Cached {
    Answer(Response<Body>),
    /// The upstream is failing: its answer, not a stale copy, is what a poller should see.
    PassThrough,
}

impl Cache {
    pub(crate) fn new(config: &Config, hub: Arc<Hub>, requests: &IntCounterVec) -> Self {
        let counters = config
            .routes
            .iter()
            .map(|r| {
                let counter = |result| requests.with_label_values(&[r.name.as_str(), result]);
                Counters { hit: counter("hit"), miss: counter("miss"), bypass: counter("bypass") }
            })
            .collect();
        Cache { hub, counters }
    }

    pub(crate) async fn answer<B>(&self, req: &Request<B>, watched: Watched) -> Cached {
        let counters = &self.counters[watched.route];
        let route = watched.route;
        let current = match self.hub.watch_key(route, watched.target, req.headers()).await {
            Ok((key, credentials)) => self.hub.current(key, credentials).await,
            Err(refusal) => Err(refusal),
        };
        let current = match current {
            Ok(Some(current)) => current,
            Ok(None) => {
                counters.bypass.inc();
                return Cached::PassThrough;
            }
            Err(refusal) => {
                counters.miss.inc();
                return Cached::Answer(refused(refusal));
            }
        };
        let (result, counter) = if current.fresh { ("miss", &counters.miss) } else { ("hit", &counters.hit) };
        counter.inc();

        let repr = &current.repr;
        let etag = repr.strong_etag();
        let age = current.last_poll.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
        let not_modified = header_items(req.headers(), header::IF_NONE_MATCH)
            .any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag.as_str()));
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
            return Cached::Answer(resp.status(StatusCode::NOT_MODIFIED).body(full("")).expect("valid parts"));
        }
        let content_type = repr.content_type.as_deref().unwrap_or("application/octet-stream");
        resp = resp
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
            )
            .header(header::CONTENT_LENGTH, repr.body.len());
        let body = if req.method() == Method::HEAD { full("") } else { full(repr.body.clone()) };
        Cached::Answer(resp.body(body).expect("valid parts"))
    }
}
