//! The SSE endpoint (spec sections 5 and 6): a subscriber joins its watch and gets the
//! session's frames as a streamed answer. (Which watch is the hub's `watch_key`.)

use std::sync::Arc;

use herald_poll::Hub;
use herald_sse::Sessions;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use crate::dispatch::Watched;
use crate::response::{refused, text};
use crate::Body;

pub(crate) struct Streams {
    pub(crate) hub: Arc<Hub>,
    pub(crate) sessions: Sessions,
}

impl Streams {
    /// Opens a stream of `watched` for a request with these headers; a refusal (admission, a
    /// full gateway) otherwise.
    pub(crate) async fn open(&self, headers: &HeaderMap, watched: Watched) -> Response<Body> {
        let last_event_id =
            headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string).or(watched.last_event_id);

        let Some(slot) = self.sessions.reserve() else {
            return no_place(&self.sessions);
        };

        let (key, credentials) = match self.hub.watch_key(watched.route, watched.target, headers).await {
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

/// The answer when `sse.max_subscribers` places are taken, to a stream or a long poll that would
/// be held (section 8): `503` with the `Retry-After` of `sse.retry`.
pub(crate) fn no_place(sessions: &Sessions) -> Response<Body> {
    let mut resp = text(StatusCode::SERVICE_UNAVAILABLE, "too many subscribers, try again later");
    let secs = sessions.retry().as_secs().max(1);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}
