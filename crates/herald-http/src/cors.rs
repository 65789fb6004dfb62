//! CORS for streams and cache answers (`sse.cors_origins`): EventSource, or a client's `fetch`,
//! from another origin, with credentials or custom headers; long polls (`If-None-Match`,
//! `Prefer: wait`) read the answer's `etag` and `preference-applied`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::response::full;
use crate::Body;

pub(crate) struct Cors {
    /// `sse.cors_origins`: exact origins, or `*`.
    origins: Vec<String>,
}

impl Cors {
    pub(crate) fn new(origins: Vec<String>) -> Self {
        Cors { origins }
    }

    /// The answer to a preflight for a stream path.
    pub(crate) fn preflight(&self, request: &HeaderMap) -> Response<Body> {
        let mut resp = Response::builder().status(StatusCode::NO_CONTENT).body(full("")).expect("valid");
        self.allow(request, &mut resp);
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, last-event-id, cache-control, accept, if-none-match, prefer"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        resp
    }

    /// Lets the request's origin read `resp`, when it is allowed.
    pub(crate) fn allow(&self, request: &HeaderMap, resp: &mut Response<Body>) {
        self.allow_origin(request.get(header::ORIGIN), resp);
    }

    /// Lets `origin` (the request's `Origin`, if it had one) read `resp`, when it is allowed.
    pub(crate) fn allow_origin(&self, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
        let listed = !self.origins.is_empty() && !self.origins.iter().any(|o| o == "*");
        let h = resp.headers_mut();
        if listed {
            // The answer depends on the origin (allowed or not): a cache must keep them apart.
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = origin else { return };
        if self.origins.iter().any(|o| o == "*") {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else if self.origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        } else {
            return;
        }
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("etag, preference-applied, retry-after, x-herald-cache"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, value.parse().unwrap());
        h
    }

    #[test]
    fn a_listed_origin_gets_credentials_and_others_nothing() {
        let cors = Cors::new(vec!["https://app.example".into()]);
        let allowed = cors.preflight(&origin("https://app.example"));
        assert_eq!(allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(allowed.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let asked = allowed.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        assert!(asked.contains("if-none-match, prefer"), "a long poll's headers: {asked}");
        let other = cors.preflight(&origin("https://evil.example"));
        assert!(!other.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

        let any = Cors::new(vec!["*".into()]).preflight(&origin("https://evil.example"));
        assert_eq!(any.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!any.headers().contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
}
