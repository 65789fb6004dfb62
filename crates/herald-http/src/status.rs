//! The status page (spec section 14): `/` on the admin listener, a page that subscribes to the
//! gateway's own SSE feed of its state (`/admin/status/events`, one `status` event a second)
//! and redraws from it. `/admin/status` is the same state once, as JSON.
//!
//! The state names routes, paths (without their query), counts and times: never a credential,
//! a scope hash, a subscription's URL or a header.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use herald_poll::{Hub, WatchInfo};
use herald_webhooks::Webhooks;
use http::{header, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prometheus::Registry;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::response::full;
use crate::Body;

/// How often the feed sends the state.
const PERIOD: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("status.html");

/// What the page and its feed read.
pub(crate) struct Status {
    pub(crate) registry: Registry,
    pub(crate) hub: Arc<Hub>,
    pub(crate) webhooks: Arc<Webhooks>,
}

impl Status {
    pub(crate) fn page() -> Response<Body> {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .header(
                "content-security-policy",
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            )
            .body(full(PAGE))
            .expect("static parts are valid")
    }

    /// The state now.
    pub(crate) fn snapshot(&self) -> Value {
        let watches: Vec<Value> = self.hub.watches().into_iter().map(|w| watch_row(w, false)).collect();
        json!({
            "at": unix_ms(SystemTime::now()),
            "version": env!("CARGO_PKG_VERSION"),
            "replica": self.hub.cluster().map(|c| c.replica().to_string()),
            "routes": self.routes(),
            "watches": watches,
            "webhooks": self.webhooks.queue_status(),
        })
    }

    /// Per route: the poll and event counters (the page turns them into rates) and subscribers.
    fn routes(&self) -> Value {
        let mut routes: Map<String, Value> = Map::new();
        for family in self.registry.gather() {
            let field = match family.name() {
                "herald_upstream_polls_total" => "polls",
                "herald_events_total" => "events",
                "herald_sse_subscribers" => "subscribers",
                _ => continue,
            };
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            for m in family.get_metric() {
                let Some(route) = m.get_label().iter().find(|l| l.name() == "route") else { continue };
                let value = if counter { m.get_counter().get_value() } else { m.get_gauge().get_value() };
                let entry = routes
                    .entry(route.value())
                    .or_insert_with(|| json!({"polls": 0.0, "events": 0.0, "subscribers": 0.0}));
                entry[field] = json!(entry[field].as_f64().unwrap_or(0.0) + value);
            }
        }
        routes.into()
    }

    /// `/admin/status/events`: the state now and every [`PERIOD`], until the client leaves or
    /// herald shuts down.
    pub(crate) fn feed(self: Arc<Self>, shutdown: CancellationToken) -> Response<Body> {
        let ticks = futures_util::stream::unfold((self, shutdown, true), |(status, shutdown, first)| async move {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(PERIOD) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
            let frame = format!("event: status\ndata: {}\n\n", status.snapshot());
            Some((Ok::<_, crate::BoxError>(Frame::data(Bytes::from(frame))), (status, shutdown, false)))
        });
        let retry = futures_util::stream::once(async { Ok(Frame::data(Bytes::from_static(b"retry: 2000\n\n"))) });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-accel-buffering", "no")
            .body(StreamBody::new(retry.chain(ticks)).boxed_unsync())
            .expect("static parts are valid")
    }
}

/// A watch as JSON: for `/admin/watches` (`private`: with its scope hash, ETag and query), or
/// for the status page (without them).
pub(crate) fn watch_row(w: WatchInfo, private: bool) -> Value {
    let mut row = json!({
        "route": w.route,
        "path": w.path,
        "access": w.access,
        "subscribers": w.subscribers,
        "interval_ms": w.interval.as_millis() as u64,
        "last_poll": w.last_poll.map(unix_ms),
        "last_change": w.last_change.map(unix_ms),
        "state": w.state,
        "holder": w.holder,
    });
    if private {
        row["scope"] = w.scope.into();
        row["etag"] = w.etag.into();
    } else if let Some((path, _)) = w.path.split_once('?') {
        // A query may carry what the page must not show.
        row["path"] = format!("{path}?…").into();
    }
    row
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
