//! Legacy pollers (spec section 8): a plain GET or HEAD on a `cache: true` route is answered
//! from its watch, under the same access rules as a stream, so a thousand pollers cost the
//! upstream one poll per interval. While the upstream fails, requests are passed on to it.

use std::net::SocketAddr;
use std::time::SystemTime;

use herald_config::Access;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::{full, header_items, refused, Body};

impl App {
    /// Section 4, step 3: a GET or HEAD without a body or a range, on a route with `cache: true`.
    pub(crate) fn cache_route(&self, req: &Request<Incoming>) -> Option<usize> {
        let plain = matches!(*req.method(), Method::GET | Method::HEAD)
            && !req.headers().contains_key(header::RANGE)
            && req.headers().get(header::CONTENT_LENGTH).is_none_or(|v| v == "0")
            && !req.headers().contains_key(header::TRANSFER_ENCODING);
        let route = self.routes.find(req.uri().path())?;
        (plain && self.hub.route(route).cache).then_some(route)
    }

    pub(crate) async fn cached(&self, req: Request<Incoming>, route: usize, peer: SocketAddr) -> Response<Body> {
        let counters = &self.cache_requests[route];
        let (target, _) = crate::stream::watch_target(req.uri().path(), req.uri().query());
        let current = match self.hub.watch_key(route, target, req.headers()).await {
            Ok((key, credentials)) => self.hub.current(key, credentials).await,
            Err(refusal) => Err(refusal),
        };
        let current = match current {
            Ok(Some(current)) => current,
            // The upstream is failing: its answer, not a stale copy, is what a poller should see.
            Ok(None) => {
                counters.bypass.inc();
                return self.proxy.forward(req, peer).await;
            }
            Err(refusal) => {
                counters.miss.inc();
                return refused(refusal);
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
            return resp.status(StatusCode::NOT_MODIFIED).body(full("")).expect("valid parts");
        }
        let content_type = repr.content_type.as_deref().unwrap_or("application/octet-stream");
        resp = resp
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
            )
            .header(header::CONTENT_LENGTH, repr.body.len());
        let body = if req.method() == Method::HEAD { full("") } else { full(repr.body.clone()) };
        resp.body(body).expect("valid parts")
    }
}
