//! One poll of a watch: a request conditional on what the watch holds, fetched the way its
//! route says ([`crate::strategy`]) under the limiter's permits, and what the answer does to
//! the watch, decided as a [`Step`] without touching it. Applying the step is the caller's: at
//! once in one process, or once the watch's log in Redis took it ([`crate::coordination`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herald_config::Access;
use herald_core::diff::Encoded;
use herald_core::{EventKind, Representation};
use tracing::{debug, info, warn};

use crate::client::{Fetch, Request};
use crate::limit::{Limiter, Priority};
use crate::refusal::Refusal;
use crate::route::RouteCtx;
use crate::schedule::Schedule;
use crate::strategy::{self, Budget, Got};
use crate::watch::{Ready, Step, Watch};
use crate::PollError;

/// What polls the upstream for every watch.
pub(crate) struct Poller {
    /// Makes each upstream request: the upstream client, or a test's script.
    pub(crate) fetch: Arc<dyn Fetch>,
    /// Every upstream request takes a permit: the global rate and concurrency limits.
    pub(crate) limiter: Limiter,
}

impl Poller {
    /// Polls the upstream once, each request with a permit of the limiter's `priority` share,
    /// and decides what that does to the watch; applying it is the caller's (at once, or in
    /// cluster mode once the watch's log in Redis took it).
    pub(crate) async fn poll(&self, watch: &Arc<Watch>, schedule: &mut Schedule, priority: Priority) -> Polled {
        let route = &watch.route;
        let cfg = &route.cfg;
        // Only the caller applies steps: what is read here stays true until it does.
        let (prev, failing, invalid) = {
            let st = watch.state.lock().unwrap();
            (st.current.clone(), st.failing.is_some(), st.invalid)
        };
        let etag = prev.as_ref().and_then(|r| r.etag.as_deref());
        let last_modified = prev.as_ref().and_then(|r| r.last_modified.as_deref());
        // A per-subscriber watch is polled on its subscribers' credentials alone.
        let withhold: &[String] = match cfg.access {
            Access::PerSubscriber => &cfg.vary,
            Access::Shared | Access::Public => &[],
        };
        let request = Request {
            target: &watch.key.target,
            credentials: &watch.credentials,
            withhold,
            etag,
            last_modified,
            ..Request::default()
        };
        let permit = self.limiter.acquire(priority).await;
        // A refresh asked until now is answered by this poll.
        watch.refresh.take();
        let started = tokio::time::Instant::now();
        let budget = Budget { limiter: &self.limiter, priority, first: Some(permit) };
        let got = strategy::fetch(&*self.fetch, cfg, &watch.fetch_state, request, prev.as_ref(), budget).await;
        route.metrics.duration.observe(started.elapsed().as_secs_f64());
        let first = matches!(*watch.ready.borrow(), Ready::Pending);
        // Held back for the upstream's quota, nothing sent: polled again when the quota allows.
        // Within `max_interval` that is pacing, not a failure: nothing to tell the subscribers.
        if let Err(PollError::QuotaExhausted { wait, .. }) = &got {
            if !first && *wait <= cfg.poll.max_interval {
                // Stretched so that the schedule's jitter (either way) never wakes it before
                // the quota allows: it would only be deferred again.
                let wait = wait.div_f64(1.0 - cfg.poll.jitter.clamp(0.0, 0.5));
                return Polled::Step(Step::new(std::time::Instant::now()), wait);
            }
        }
        let mut step = Step::new(std::time::Instant::now());
        step.polled = Some(SystemTime::now());

        let failure = match got {
            Ok(Got::NotModified { max_age, etag, last_modified }) if !first => {
                route.metrics.not_modified.inc();
                recovered(watch, &mut step, failing);
                // Validators a 304 carries replace the stored ones (RFC 9111 section 4.3.4).
                if etag.is_some() || last_modified.is_some() {
                    let prev = prev.as_ref();
                    step.validators = Some((
                        etag.or_else(|| prev.and_then(|r| r.etag.clone())),
                        last_modified.or_else(|| prev.and_then(|r| r.last_modified.clone())),
                    ));
                }
                return Polled::Step(step, schedule.unchanged(max_age));
            }
            Ok(Got::Fresh { mut repr, max_age, bytes, changed }) => {
                route.metrics.bytes.inc_by(bytes);
                if first {
                    route.metrics.changed.inc();
                    step.current = Some(repr);
                    step.last_change = step.polled;
                    return Polled::Opened(step, schedule.unchanged(max_age).min(cfg.poll.interval));
                }
                recovered(watch, &mut step, failing);
                let Some(old) = prev.filter(|old| old.hash != repr.hash) else {
                    // The same normalized document: keep the one held (its body is what the
                    // strong ETag of cache answers promises), with the upstream's new validators.
                    route.metrics.unchanged.inc();
                    step.validators = Some((repr.etag, repr.last_modified));
                    return Polled::Step(step, schedule.unchanged(max_age));
                };
                let list = watch.key.target.split('?').next().unwrap_or_default();
                // A delta says which items it touched: their events are the change's.
                let touched = changed.and_then(|c| route.encoding.encode_items(&c.before, &c.after, list));
                let encoded = match touched {
                    Some(encoded) => encoded,
                    None => {
                        let (encoded, prints) = route.encoding.encode(&old, &repr, list);
                        repr.prints = Arc::new(prints);
                        encoded
                    }
                };
                route.metrics.changed.inc();
                change_events(route, &mut step, invalid, encoded, &repr);
                step.current = Some(repr);
                step.last_change = step.polled;
                return Polled::Step(step, schedule.changed(max_age));
            }
            Ok(Got::NotModified { .. }) => Failure {
                status: Some(304),
                refusal: Refusal::unexpected_304(),
                retry_after: None,
                error: "unexpected 304 without a validator".into(),
            },
            Ok(Got::Status { status, content_type, body, retry_after }) => {
                if !first && cfg.access == Access::PerSubscriber && matches!(status, 401 | 403) {
                    route.metrics.error.inc();
                    return Polled::Revoked(status);
                }
                // On a shared or public watch, a 401 or 403 refuses herald's own credential.
                let error = match (cfg.access, status) {
                    (Access::Shared | Access::Public, 401 | 403) => {
                        format!(
                            "upstream answered {status} to the service credential (upstream.headers, upstream.auth)"
                        )
                    }
                    _ => format!("upstream answered {status}"),
                };
                Failure {
                    status: Some(status),
                    error,
                    refusal: Refusal::upstream(status, content_type, body),
                    retry_after,
                }
            }
            Err(e) => {
                Failure { status: None, error: e.to_string(), refusal: Refusal::from(&e), retry_after: e.retry_after() }
            }
        };

        route.metrics.error.inc();
        if first {
            debug!(route = %cfg.name, status = failure.refusal.status, "first poll refused, answering the subscriber");
            return Polled::Refused(failure.refusal);
        }
        let data = match failure.status {
            Some(status) => format!(r#"{{"ok":false,"status":{status},"error":{}}}"#, json_string(&failure.error)),
            None => format!(r#"{{"ok":false,"error":{}}}"#, json_string(&failure.error)),
        };
        let data = Bytes::from(data);
        if !failing {
            warn!(route = %cfg.name, scope = %watch.key.scope, error = %failure.error, "upstream started failing");
            step.event(EventKind::Status, "upstream-status", data.clone());
        }
        step.failing = Some(Some(data));
        Polled::Step(step, schedule.failed(failure.retry_after))
    }
}

/// What a poll found, to be applied to its watch.
pub(crate) enum Polled {
    /// The next step, and when to poll again.
    Step(Step, Duration),
    /// The first poll succeeded: the watch opens with this step.
    Opened(Step, Duration),
    /// The first poll was refused: its subscribers get the upstream's answer, the watch ends.
    Refused(Refusal),
    /// A per-subscriber watch's credential was refused (401/403): its streams end.
    Revoked(u16),
}

/// A first poll, or a watch only lingering, takes its turn from the background share; so does
/// a write-through refresh (`refresh`: when the scheduled poll it comes before is due), until
/// that scheduled poll is due.
pub(crate) fn priority(watch: &Watch, first: bool, refresh: Option<tokio::time::Instant>) -> Priority {
    match refresh {
        _ if first || watch.subscribers() == 0 => Priority::Background,
        Some(due) => Priority::Refresh { due },
        None => Priority::Subscribed,
    }
}

/// The events of one change, in the route's format.
fn change_events(route: &RouteCtx, step: &mut Step, invalid: bool, encoded: Encoded, repr: &Representation) {
    if !matches!(encoded, Encoded::Invalid(_)) && invalid {
        step.event(EventKind::Status, "upstream-status", Bytes::from_static(br#"{"ok":true}"#));
        step.invalid = Some(false);
    }
    match encoded {
        Encoded::Events(events) => {
            for (name, data) in events {
                step.event(EventKind::Change, name, data);
            }
        }
        Encoded::Snapshot => step.event(EventKind::Change, "snapshot", repr.data.clone()),
        Encoded::Invalid(e) => {
            route.metrics.invalid.inc();
            warn!(route = %route.cfg.name, error = %e, "representation is not a valid collection, sending a snapshot");
            if !invalid {
                let data = format!(r#"{{"ok":false,"error":{}}}"#, json_string(&format!("invalid collection: {e}")));
                step.event(EventKind::Status, "upstream-status", data);
                step.invalid = Some(true);
            }
            step.event(EventKind::Change, "snapshot", repr.data.clone());
        }
    }
}

struct Failure {
    /// The upstream's status, when it answered at all.
    status: Option<u16>,
    refusal: Refusal,
    retry_after: Option<Duration>,
    /// Short and credential-free: it goes into `upstream-status` events and logs.
    error: String,
}

/// `s` as a JSON string literal. (Status data is written by hand to keep the contract's key order.)
fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Sends `{"ok":true}` when a failing upstream answers again.
fn recovered(watch: &Watch, step: &mut Step, failing: bool) {
    if failing {
        info!(route = %watch.route.cfg.name, scope = %watch.key.scope, "upstream recovered");
        step.event(EventKind::Status, "upstream-status", Bytes::from_static(br#"{"ok":true}"#));
        step.failing = Some(None);
    }
}
