//! Which part of herald answers a request (contract section 4), decided from its head alone by
//! a pure function: no I/O, tested case by case below.

use herald_config::{Config, RouteTable};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri};

use crate::response::header_items;

/// The path suffix that asks for a stream without an Accept header.
const STREAM_SUFFIX: &str = "/event-stream";
/// The query parameter that carries Last-Event-ID for clients that cannot set headers.
const LAST_EVENT_ID_PARAM: &str = "lastEventId";

/// What answers a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Dispatch {
    /// Step 1: the webhook subscription API.
    WebhookApi,
    /// Step 1 too: a change hint (section 13).
    Notify,
    /// Step 1 too: the gateway's AsyncAPI or OpenAPI document (section 14).
    Describe(Doc),
    /// Under `/_herald/` but not the API: nothing.
    NotFound,
    /// Step 2: an SSE stream of a route's watch.
    Stream(Watched),
    /// Step 3: a plain GET/HEAD on a cache route, answered from the watch.
    Cache(Watched),
    /// A CORS preflight for a route's stream (when `sse.cors_origins` allows any).
    Preflight,
    /// Step 4: everything else, passed through to the upstream; for a GET on a route path, the
    /// watch whose stream its answer's `link` names.
    Pass(Option<Watched>),
}

/// Where the documents of [`crate::describe`] are served.
const ASYNCAPI: &str = "/_herald/v1/asyncapi.json";
const OPENAPI: &str = "/_herald/v1/openapi.json";

/// One of the gateway's descriptions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Doc {
    AsyncApi,
    OpenApi,
}

/// The watch a stream or cache request is about.
#[derive(Debug, PartialEq)]
pub(crate) struct Watched {
    /// Index into the configuration's routes.
    pub(crate) route: usize,
    /// The upstream target watched: the route path with the query, without `lastEventId`.
    pub(crate) target: String,
    /// `lastEventId` from the query (for clients that cannot set headers).
    pub(crate) last_event_id: Option<String>,
}

impl Watched {
    /// `link: <PATH/event-stream>; rel="alternate"; type="text/event-stream"`: the push
    /// alternative of what a poller asked for (section 8), its query kept, `lastEventId` not.
    pub(crate) fn stream_link(&self) -> Option<HeaderValue> {
        let (path, query) = match self.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.target.as_str(), None),
        };
        let base = path.trim_end_matches('/');
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let link = format!("<{base}{STREAM_SUFFIX}{query}>; rel=\"alternate\"; type=\"text/event-stream\"");
        HeaderValue::from_str(&link).ok()
    }
}

/// What dispatch needs of the configuration.
pub(crate) struct Routing {
    routes: RouteTable,
    /// `routes[i].cache`.
    cache: Vec<bool>,
    /// The hub's slot of `routes[i]` (the same index until a reload).
    slots: Vec<usize>,
    /// Whether any origin may make cross-origin requests (`sse.cors_origins`).
    cors: bool,
}

impl Routing {
    pub(crate) fn new(config: &Config, slots: &[usize]) -> Self {
        Routing {
            routes: RouteTable::new(&config.routes),
            cache: config.routes.iter().map(|r| r.cache).collect(),
            slots: slots.to_vec(),
            cors: !config.sse.cors_origins.is_empty(),
        }
    }

    /// Whether herald answers requests for `path` itself, or may: its own API, or a route's
    /// path (streams, cache answers, CORS preflights). Everything else is passed through. The
    /// fast lane asks this before it relays a request.
    pub(crate) fn claims(&self, path: &str) -> bool {
        path.starts_with("/_herald/")
            || self.routes.find(path).is_some()
            || stream_base(path).is_some_and(|base| self.routes.find(base).is_some())
    }

    /// Section 4, in its order. The path is looked up in the route table once as it is and once
    /// without a `/event-stream` suffix.
    pub(crate) fn dispatch(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Dispatch {
        let (path, query) = (uri.path(), uri.query());
        if path.starts_with("/_herald/") {
            let api =
                path.strip_prefix(herald_webhooks::PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if path == herald_webhooks::NOTIFY {
                return Dispatch::Notify;
            }
            match path {
                ASYNCAPI if method == Method::GET || method == Method::HEAD => {
                    return Dispatch::Describe(Doc::AsyncApi)
                }
                OPENAPI if method == Method::GET || method == Method::HEAD => return Dispatch::Describe(Doc::OpenApi),
                _ => {}
            }
            return if api { Dispatch::WebhookApi } else { Dispatch::NotFound };
        }
        let route = self.routes.find(path);
        let base = stream_base(path).map(|base| (base, self.routes.find(base)));
        let get = method == Method::GET;
        // Step 2: a GET on a route that ends in `/event-stream` or asks for `text/event-stream`.
        if let (true, Some((base, Some(r)))) = (get, base) {
            return Dispatch::Stream(watched(self.slots[r], base, query));
        }
        let wants_stream = || {
            header_items(headers, header::ACCEPT)
                .any(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream")))
        };
        if let (true, Some(r)) = (get, route) {
            if wants_stream() {
                return Dispatch::Stream(watched(self.slots[r], path, query));
            }
        }
        // Step 3: a GET or HEAD without a body or a range, on a route with `cache: true`.
        let plain = || {
            matches!(*method, Method::GET | Method::HEAD)
                && !headers.contains_key(header::RANGE)
                && headers.get(header::CONTENT_LENGTH).is_none_or(|v| v == "0")
                && !headers.contains_key(header::TRANSFER_ENCODING)
        };
        if let Some(r) = route.filter(|&r| self.cache[r] && plain()) {
            return Dispatch::Cache(watched(self.slots[r], path, query));
        }
        let on_route = match base {
            Some((_, base_route)) => base_route.is_some(),
            None => route.is_some(),
        };
        if method == Method::OPTIONS && self.cors && headers.contains_key(header::ORIGIN) && on_route {
            return Dispatch::Preflight;
        }
        // Step 4; a GET on a route path says where its stream is (section 8).
        Dispatch::Pass(route.filter(|_| get).map(|r| watched(self.slots[r], path, query)))
    }
}

/// The route path a `…/event-stream` path asks to stream (`/event-stream` alone is `/`).
fn stream_base(path: &str) -> Option<&str> {
    path.strip_suffix(STREAM_SUFFIX).map(|base| if base.is_empty() { "/" } else { base })
}

/// The watch a request for `path?query` on `route` is about: the query without the gateway's
/// own `lastEventId` (never the upstream's).
fn watched(route: usize, path: &str, query: Option<&str>) -> Watched {
    let (rest, last_event_id) = split_query(query);
    let target = match rest {
        Some(rest) => format!("{path}?{rest}"),
        None => path.to_string(),
    };
    Watched { route, target, last_event_id }
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

    fn routing(cors: &str) -> Routing {
        let yaml = format!(
            "upstream: {{url: 'http://127.0.0.1:9'}}\nsse: {{cors_origins: [{cors}]}}\nroutes:\n\
             - {{name: tasks, path: /tasks, cache: false}}\n- {{name: task, path: '/tasks/{{id}}'}}\n"
        );
        let config = herald_config::load("g.yaml", &yaml, &|_| None).unwrap();
        Routing::new(&config, &(0..config.routes.len()).collect::<Vec<_>>())
    }

    fn dispatch(routing: &Routing, method: Method, target: &str, headers: &[(&str, &str)]) -> Dispatch {
        let mut h = HeaderMap::new();
        for (name, value) in headers {
            h.append(header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        routing.dispatch(&method, &target.parse().unwrap(), &h)
    }

    fn watch(route: usize, target: &str, last_event_id: Option<&str>) -> Watched {
        Watched { route, target: target.into(), last_event_id: last_event_id.map(str::to_string) }
    }

    #[test]
    fn herald_s_own_prefix_comes_first_and_only_the_api_is_under_it() {
        let r = routing("");
        assert_eq!(dispatch(&r, Method::POST, "/_herald/v1/webhooks", &[]), Dispatch::WebhookApi);
        assert_eq!(dispatch(&r, Method::GET, "/_herald/v1/webhooks/wh_1/deliveries", &[]), Dispatch::WebhookApi);
        assert_eq!(dispatch(&r, Method::POST, "/_herald/v1/notify", &[]), Dispatch::Notify);
        for other in ["/_herald/v1/webhooksx", "/_herald/v1", "/_herald/v1/notify/x", "/_herald/admin", "/_herald/"] {
            assert_eq!(dispatch(&r, Method::GET, other, &[]), Dispatch::NotFound, "{other}");
        }
        // Even one that would otherwise ask for a stream.
        let accept = [("accept", "text/event-stream")];
        assert_eq!(dispatch(&r, Method::GET, "/_herald/event-stream", &accept), Dispatch::NotFound);
    }

    #[test]
    fn a_stream_is_a_get_on_a_route_by_its_suffix_or_its_accept_header() {
        let r = routing("");
        let accept = [("accept", "application/json;q=0.5, Text/Event-Stream; charset=utf-8")];
        assert_eq!(dispatch(&r, Method::GET, "/tasks/event-stream", &[]), Dispatch::Stream(watch(0, "/tasks", None)));
        assert_eq!(dispatch(&r, Method::GET, "/tasks", &accept), Dispatch::Stream(watch(0, "/tasks", None)));
        assert_eq!(
            dispatch(&r, Method::GET, "/tasks/42/event-stream?state=open&lastEventId=5f%2D3", &[]),
            Dispatch::Stream(watch(1, "/tasks/42?state=open", Some("5f-3")))
        );
        // Not a route, not a GET, or no sign of wanting a stream: passed through.
        assert_eq!(dispatch(&r, Method::GET, "/users/event-stream", &[]), Dispatch::Pass(None));
        assert_eq!(dispatch(&r, Method::POST, "/tasks/event-stream", &[]), Dispatch::Pass(None));
        let tasks = Dispatch::Pass(Some(watch(0, "/tasks", None)));
        assert_eq!(dispatch(&r, Method::GET, "/tasks", &[("accept", "application/json")]), tasks);
    }

    #[test]
    fn a_plain_get_or_head_on_a_cache_route_is_answered_from_the_watch() {
        let r = routing("");
        assert_eq!(
            dispatch(&r, Method::GET, "/tasks/7?lastEventId=x", &[]),
            Dispatch::Cache(watch(1, "/tasks/7", Some("x")))
        );
        assert_eq!(
            dispatch(&r, Method::HEAD, "/tasks/7", &[("content-length", "0")]),
            Dispatch::Cache(watch(1, "/tasks/7", None))
        );
        for (method, headers) in [
            (Method::GET, &[("range", "bytes=0-1")][..]),
            (Method::GET, &[("content-length", "2")]),
            (Method::GET, &[("transfer-encoding", "chunked")]),
            (Method::PUT, &[]),
        ] {
            // Passed through; a GET's answer links to the stream.
            let linked = (method == Method::GET).then(|| watch(1, "/tasks/7", None));
            assert_eq!(
                dispatch(&r, method.clone(), "/tasks/7", headers),
                Dispatch::Pass(linked),
                "{method} {headers:?}"
            );
        }
        // A route without `cache: true`.
        assert_eq!(dispatch(&r, Method::GET, "/tasks", &[]), Dispatch::Pass(Some(watch(0, "/tasks", None))));
    }

    #[test]
    fn a_preflight_needs_an_origin_a_route_and_cors_configured() {
        let origin = [("origin", "https://app.example")];
        let with_cors = routing("'https://app.example'");
        assert_eq!(dispatch(&with_cors, Method::OPTIONS, "/tasks/event-stream", &origin), Dispatch::Preflight);
        assert_eq!(dispatch(&with_cors, Method::OPTIONS, "/tasks/9", &origin), Dispatch::Preflight);
        assert_eq!(dispatch(&with_cors, Method::OPTIONS, "/tasks", &[]), Dispatch::Pass(None));
        assert_eq!(dispatch(&with_cors, Method::OPTIONS, "/users", &origin), Dispatch::Pass(None));
        assert_eq!(dispatch(&routing(""), Method::OPTIONS, "/tasks", &origin), Dispatch::Pass(None));
    }

    #[test]
    fn herald_claims_its_api_and_route_paths_for_the_fast_lane() {
        let r = routing("");
        for claimed in ["/_herald/v1/webhooks", "/_herald/x", "/tasks", "/tasks/1", "/tasks/event-stream"] {
            assert!(r.claims(claimed), "{claimed}");
        }
        for passed in ["/", "/users", "/taskss", "/event-stream"] {
            assert!(!r.claims(passed), "{passed}");
        }
    }

    #[test]
    fn the_stream_link_keeps_the_query_but_not_last_event_id() {
        let link = |target: &str| watch(0, target, None).stream_link().unwrap();
        assert_eq!(link("/tasks"), "</tasks/event-stream>; rel=\"alternate\"; type=\"text/event-stream\"");
        assert_eq!(
            link("/tasks?state=open"),
            "</tasks/event-stream?state=open>; rel=\"alternate\"; type=\"text/event-stream\""
        );
        assert_eq!(link("/"), "</event-stream>; rel=\"alternate\"; type=\"text/event-stream\"");
        let r = routing("");
        let pass = |method: Method, target: &str| match dispatch(&r, method, target, &[("range", "bytes=0-1")]) {
            Dispatch::Pass(linked) => linked,
            other => panic!("{other:?}"),
        };
        assert_eq!(pass(Method::GET, "/tasks/9?lastEventId=3&a=1"), Some(watch(1, "/tasks/9?a=1", Some("3"))));
        assert_eq!(pass(Method::GET, "/users"), None);
        assert_eq!(pass(Method::POST, "/tasks"), None);
    }

    #[test]
    fn last_event_id_is_taken_out_of_the_query() {
        assert_eq!(split_query(None), (None, None));
        assert_eq!(split_query(Some("a=1&lastEventId=5f-3&b=2")), (Some("a=1&b=2".into()), Some("5f-3".into())));
        assert_eq!(split_query(Some("lastEventId=5f%2D3")), (None, Some("5f-3".into())));
        assert_eq!(split_query(Some("state=open")), (Some("state=open".into()), None));
    }
}
