//! The SSE endpoint (spec sections 5 and 6): which requests ask for a stream, and the streaming
//! response. (Which watch a request joins is the hub's `watch_key`.)

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;

use crate::app::App;
use crate::{full, header_items, refused, text, Body};

/// The path suffix that asks for a stream without an Accept header.
const STREAM_SUFFIX: &str = "/event-stream";
/// The query parameter that carries Last-Event-ID for clients that cannot set headers.
const LAST_EVENT_ID_PARAM: &str = "lastEventId";

/// A matched stream request: the route and the upstream path it watches.
pub(crate) struct StreamRoute {
    route: usize,
    path: String,
}

impl App {
    /// Section 4, step 2: a GET on a route that asks for `text/event-stream` or ends in `/event-stream`.
    pub(crate) fn stream_route<B>(&self, req: &Request<B>) -> Option<StreamRoute> {
        if req.method() != Method::GET {
            return None;
        }
        let path = req.uri().path();
        if let Some(base) = stream_base(path) {
            if let Some(route) = self.routes.find(base) {
                return Some(StreamRoute { route, path: base.to_string() });
            }
        }
        let wants_stream = header_items(req.headers(), header::ACCEPT)
            .any(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream")));
        if wants_stream {
            return self.routes.find(path).map(|route| StreamRoute { route, path: path.to_string() });
        }
        None
    }

    /// For [`crate::direct`]: answers `req` when it asks for a stream.
    pub(crate) fn direct_stream(self: std::sync::Arc<Self>, req: Request<()>) -> Option<crate::direct::DirectAnswer> {
        let m = self.stream_route(&req)?;
        Some(Box::pin(async move { self.stream(req, m).await }))
    }

    pub(crate) fn preflight_route(&self, req: &Request<Incoming>) -> bool {
        let path = req.uri().path();
        !self.cors_origins.is_empty()
            && req.headers().contains_key(header::ORIGIN)
            && self.routes.find(stream_base(path).unwrap_or(path)).is_some()
    }

    /// CORS preflight for stream paths (EventSource with credentials or custom headers).
    pub(crate) fn preflight(&self, req: &Request<Incoming>) -> Response<Body> {
        let mut resp = Response::builder().status(StatusCode::NO_CONTENT).body(full("")).expect("valid");
        self.cors(req, &mut resp);
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, last-event-id, cache-control, accept"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        resp
    }

    fn cors<B>(&self, req: &Request<B>, resp: &mut Response<Body>) {
        let Some(origin) = req.headers().get(header::ORIGIN) else { return };
        let h = resp.headers_mut();
        if self.cors_origins.iter().any(|o| o == "*") {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else if self.cors_origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }

    pub(crate) async fn stream<B>(&self, req: Request<B>, m: StreamRoute) -> Response<Body> {
        let mut resp = self.open_stream(&req, m).await;
        self.cors(&req, &mut resp);
        resp
    }

    async fn open_stream<B>(&self, req: &Request<B>, m: StreamRoute) -> Response<Body> {
        let (target, query_last_id) = watch_target(&m.path, req.uri().query());
        let last_event_id =
            req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string).or(query_last_id);

        let Some(slot) = self.sessions.reserve() else {
            let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, "too many subscribers, try again later");
            let secs = self.sessions.retry().as_secs().max(1);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        };

        let (key, credentials) = match self.hub.watch_key(m.route, target, req.headers()).await {
            Ok(found) => found,
            Err(refusal) => return refused(refusal),
        };
        match self.hub.subscribe(key, credentials, last_event_id.as_deref()).await {
            Ok(joined) => {
                let frames = self.sessions.stream(joined, slot);
                let body = StreamBody::new(futures_util::StreamExt::map(frames, |f| f.map(hyper::body::Frame::data)));
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .header(header::CACHE_CONTROL, "no-cache")
                    .header("x-accel-buffering", "no")
                    .body(body.map_err(|e| match e {}).boxed_unsync())
                    .expect("static parts are valid")
            }
            Err(refusal) => refused(refusal),
        }
    }
}

/// The route path a `…/event-stream` path asks to stream (`/event-stream` alone is `/`).
pub(crate) fn stream_base(path: &str) -> Option<&str> {
    path.strip_suffix(STREAM_SUFFIX).map(|base| if base.is_empty() { "/" } else { base })
}

/// The target a request for `path?query` watches, without the gateway's own `lastEventId`
/// (never the upstream's), and that id.
pub(crate) fn watch_target(path: &str, query: Option<&str>) -> (String, Option<String>) {
    match split_query(query) {
        (Some(rest), id) => (format!("{path}?{rest}"), id),
        (None, id) => (path.to_string(), id),
    }
}

/// Removes `lastEventId` from a query: (the rest, the id).
fn split_query(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else { return (None, None) };
    let mut id = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((LAST_EVENT_ID_PARAM, v)) => {
                id = Some(percent_decode(v));
                false
            }
            None if *pair == LAST_EVENT_ID_PARAM => false,
            _ => !pair.is_empty(),
        })
        .collect();
    ((!rest.is_empty()).then(|| rest.join("&")), id)
}

/// A query value as a form encodes it: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&herald_config::percent_decode(s.replace('+', " ").as_bytes())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_taken_out_of_the_query() {
        assert_eq!(split_query(None), (None, None));
        assert_eq!(split_query(Some("a=1&lastEventId=5f-3&b=2")), (Some("a=1&b=2".into()), Some("5f-3".into())));
        assert_eq!(split_query(Some("lastEventId=5f%2D3")), (None, Some("5f-3".into())));
        assert_eq!(split_query(Some("state=open")), (Some("state=open".into()), None));
    }
}
