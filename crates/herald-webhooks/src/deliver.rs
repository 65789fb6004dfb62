//! Delivery: takes due messages from the store, attempts them (at most `max_in_flight` at
//! once), and records the outcomes in batches (one commit for many attempts, so the queue keeps
//! up with thousands of deliveries a second on one fsync each few milliseconds).
//!
//! A message stays in the in-flight set from the moment it is taken until its outcome is
//! committed, so it is never attempted twice at once; its slot of `max_in_flight` frees up as
//! soon as the attempt ends, so slow commits do not hold back requests. If herald dies in between, the store
//! still has it due and it is attempted again after the restart: at least once, same `webhook-id`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::trace::{TraceParent, TRACEPARENT};
use herald_store::{now_ms, Attempted, Message, MessageStatus, Subscription, SubscriptionStatus};
use http::StatusCode;
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::operational::Operational;
use crate::ssrf::{GuardedResolver, Refused};
use crate::watcher::{sleep_or_cancel, Start, Watcher};
use crate::{sign, Shared};

/// How long a message of a paused subscription waits before it is looked at again.
const PAUSED_RECHECK: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; longer ones are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Outcomes committed in one transaction at most.
const BATCH: usize = 1024;
/// How much of a receiver's answer is read (and thrown away) so the connection can be reused.
const MAX_ANSWER: usize = 64 << 10;

pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    /// Told when an outcome disables a subscription, so its watch stops.
    watcher: Arc<Watcher>,
    client: reqwest::Client,
    inflight: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
    done: mpsc::Sender<Attempted>,
    /// The attempts under way (a stopping replica waits for them, or stops them).
    attempts: TaskTracker,
    /// Stops the attempts under way when a stopping replica has waited long enough for them.
    abort: CancellationToken,
    /// The messages whose attempt was stopped: handed back, never recorded here.
    aborted: Mutex<Vec<String>>,
}

/// What one attempt came to.
enum Outcome {
    Success,
    /// Try again after this long (`Retry-After`), or on the schedule.
    Retry(Option<Duration>),
    /// The receiver answered 410: the subscription is disabled.
    Gone,
}

impl Dispatcher {
    pub(crate) fn start(
        shared: Arc<Shared>,
        watcher: Arc<Watcher>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Dispatcher>, reqwest::Error> {
        let cfg = &shared.cfg;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the destination itself, past the guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(shared.guard.clone())))
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (done, outcomes) = mpsc::channel(cfg.max_in_flight.max(BATCH));
        let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
        if let Some(operational) = Operational::start(cfg, client.clone(), shutdown.clone()) {
            let _ = shared.operational.set(operational);
        }
        let inflight = Mutex::new(HashSet::new());
        let d = Arc::new(Dispatcher {
            shared,
            watcher,
            client,
            inflight,
            permits,
            done,
            attempts: TaskTracker::new(),
            abort: CancellationToken::new(),
            aborted: Mutex::new(Vec::new()),
        });
        tokio::spawn(d.clone().take_due(shutdown));
        tokio::spawn(d.clone().record(outcomes));
        Ok(d)
    }

    /// Messages being attempted now.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }

    /// After shutdown has begun (nothing new is taken): lets the attempts under way end, for at
    /// most `within`, then stops those that have not and gives their messages back to the
    /// store, due now, so that another process delivers them without waiting out their claim
    /// (the same `webhook-id`; one that had reached its receiver arrives twice, which receivers
    /// deduplicate). A stopped attempt records nothing, so nothing written here can undo what
    /// the other process records. How many were handed back.
    pub(crate) async fn hand_back(&self, within: Duration) -> usize {
        self.attempts.close();
        if tokio::time::timeout(within, self.attempts.wait()).await.is_err() {
            self.abort.cancel();
            self.attempts.wait().await;
        }
        let aborted = std::mem::take(&mut *self.aborted.lock().unwrap());
        // The outcomes of the attempts that ended are being recorded: give them a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.in_flight() > aborted.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if aborted.is_empty() {
            return 0;
        }
        match self.shared.store.hand_back(aborted.clone(), now_ms()).await {
            Ok(()) => info!(messages = aborted.len(), "webhook messages in flight handed back"),
            Err(e) => {
                warn!(error = %e, messages = aborted.len(), "cannot hand webhook messages back; another replica takes them when their claim ends")
            }
        }
        aborted.len()
    }

    /// Takes due messages while there is room in flight; sleeps until woken (a new message, a
    /// recorded outcome) or until the next one is due.
    async fn take_due(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                p = self.permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => return,
            };
            let room = 1 + self.permits.available_permits();
            let skip: Vec<String> = self.inflight.lock().unwrap().iter().cloned().collect();
            let now = now_ms();
            let due = match self.shared.store.due(now, room, skip).await {
                Ok(due) => due,
                Err(e) => {
                    error!(error = %e, "cannot read the delivery queue, retrying");
                    drop(first);
                    if sleep_or_cancel(Duration::from_secs(1), &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            if due.is_empty() {
                drop(first);
                let wait = match self.shared.store.next_due().await {
                    Ok(Some(at)) if at > now => Duration::from_millis(at - now).min(Duration::from_secs(1)),
                    _ => Duration::from_secs(1),
                };
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            let mut first = Some(first);
            for message in due {
                let Some(permit) = first.take().or_else(|| self.permits.clone().try_acquire_owned().ok()) else {
                    break;
                };
                self.inflight.lock().unwrap().insert(message.id.clone());
                self.attempts.spawn(self.clone().attempt(message, permit));
            }
        }
    }

    async fn attempt(self: Arc<Self>, mut message: Message, permit: OwnedSemaphorePermit) {
        let taken_due = message.next_attempt;
        let mut sub = self.shared.subs.read().unwrap().get(&message.subscription).cloned();
        if sub.is_none() {
            // Cluster mode: created on another replica, not read here yet.
            if let Ok(Some(stored)) = self.shared.store.subscription(message.subscription.clone()).await {
                self.shared.subs.write().unwrap().insert(stored.id.clone(), stored.clone());
                sub = Some(stored);
            }
        }
        match sub {
            // Deleted meanwhile: recording skips it.
            None => {}
            Some(sub) if sub.status == SubscriptionStatus::Paused => {
                message.next_attempt = now_ms() + PAUSED_RECHECK.as_millis() as u64;
            }
            Some(sub) if sub.status.stopped() => {
                message.status = MessageStatus::Dead;
                message.last_error = Some("subscription disabled".into());
                self.shared.metrics.outcome("dead");
            }
            Some(sub) => {
                let id = message.id.clone();
                let outcome = tokio::select! {
                    outcome = self.send(&sub, &mut message) => outcome,
                    () = self.abort.cancelled() => {
                        self.aborted.lock().unwrap().push(id);
                        return;
                    }
                };
                self.settle(&sub, &mut message, outcome);
            }
        }
        // The slot frees once the outcome is queued for recording (so a stalled store stops new
        // attempts); the message itself stays in flight, not taken again, until it is committed.
        let _ = self.done.send(Attempted { message, taken_due }).await;
        drop(permit);
    }

    /// One POST to the subscription's URL.
    async fn send(&self, sub: &Subscription, message: &mut Message) -> Outcome {
        let now = now_ms();
        message.attempts += 1;
        message.last_attempt = Some(now);
        let keys: Vec<_> = std::iter::once(sub.secret.as_str())
            .chain(sub.previous_secret.iter().filter(|(_, until)| *until > now).map(|(s, _)| s.as_str()))
            .filter_map(sign::key)
            .collect();
        let timestamp = now / 1000;
        let signature = sign::signature_header(&keys, &message.id, timestamp, message.payload.as_bytes());
        if let Err(refused) = self.literal_ip_allowed(&sub.url) {
            message.last_status = None;
            message.last_error = Some(refused.to_string());
            return Outcome::Retry(None);
        }
        let started = Instant::now();
        let trace = TraceParent::new();
        debug!(subscription = %sub.id, message = %message.id, trace_id = %trace.trace_id(), "delivery attempt");
        let result = self
            .client
            .post(&sub.url)
            .header(TRACEPARENT, trace.header())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.payload.clone())
            .send()
            .await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                message.last_status = None;
                message.last_error = Some(format!("{} (trace id {})", describe(&e), trace.trace_id()));
                return Outcome::Retry(None);
            }
        };
        let status = resp.status();
        message.last_status = Some(status.as_u16());
        let retry_after = retry_after(resp.headers());
        // Read a little of the answer so the connection goes back to the pool.
        let mut read = 0;
        while let Ok(Some(chunk)) = resp.chunk().await {
            read += chunk.len();
            if read > MAX_ANSWER {
                break;
            }
        }
        if status.is_success() {
            message.last_error = None;
            self.shared.metrics.delivery_seconds.observe(now.saturating_sub(message.created_at) as f64 / 1000.0);
            self.shared.metrics.attempt_seconds.observe(started.elapsed().as_secs_f64());
            return Outcome::Success;
        }
        // The trace id is the attempt's `traceparent`: the receiver's logs can name it.
        message.last_error = Some(format!("receiver answered {} (trace id {})", status.as_u16(), trace.trace_id()));
        match status {
            StatusCode::GONE => Outcome::Gone,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::Retry(retry_after),
            _ => Outcome::Retry(None),
        }
    }

    /// reqwest does not resolve IP literals, so the guard checks them here.
    fn literal_ip_allowed(&self, url: &str) -> Result<(), Refused> {
        let Ok(parsed) = reqwest::Url::parse(url) else { return Ok(()) };
        let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse::<std::net::IpAddr>() else { return Ok(()) };
        self.shared.guard.check(ip).map_err(|class| Refused::Private { host: ip.to_string(), ip, class })
    }

    /// Applies an outcome to the message and, when it changes, to the subscription.
    fn settle(&self, sub: &Subscription, message: &mut Message, outcome: Outcome) {
        let metrics = &self.shared.metrics;
        let now = now_ms();
        let schedule = &self.shared.cfg.retry_schedule;
        let mut disable = None;
        match outcome {
            Outcome::Success => {
                message.status = MessageStatus::Delivered;
                metrics.outcome("success");
            }
            Outcome::Gone => {
                message.status = MessageStatus::Dead;
                disable = Some("the receiver answered 410 Gone");
                metrics.outcome("disabled");
            }
            Outcome::Retry(after) => {
                let failing_for = now.saturating_sub(sub.failing_since.unwrap_or(now));
                if failing_for >= self.shared.cfg.disable_after.as_millis() as u64 {
                    message.status = MessageStatus::Dead;
                    disable = Some("failing for longer than webhooks.disable_after");
                    metrics.outcome("disabled");
                } else if let Some(delay) = schedule.get(message.attempts as usize - 1) {
                    let delay = after.map(|a| a.min(MAX_RETRY_AFTER)).unwrap_or_else(|| jitter(*delay));
                    message.next_attempt = now + delay.as_millis() as u64;
                    metrics.outcome("retry");
                } else {
                    message.status = MessageStatus::Dead;
                    metrics.outcome("dead");
                    warn!(subscription = %sub.id, message = %message.id, attempts = message.attempts, "retry schedule exhausted, message is dead");
                }
            }
        }
        let ok = message.status == MessageStatus::Delivered;
        let (mut recovered, mut newly_disabled) = (false, false);
        let disabled = self.shared.update_subscription(&sub.id, |s| {
            let mut changed = false;
            if ok && s.failing_since.is_some() {
                s.failing_since = None;
                recovered = true;
                changed = true;
            }
            if !ok && s.failing_since.is_none() {
                s.failing_since = Some(now);
                changed = true;
            }
            if let Some(reason) = disable {
                if s.status != SubscriptionStatus::Disabled {
                    info!(subscription = %s.id, reason, "webhook subscription disabled");
                    s.status = SubscriptionStatus::Disabled;
                    newly_disabled = true;
                    changed = true;
                }
            }
            changed
        });
        if disabled.is_some_and(|s| s.status == SubscriptionStatus::Disabled) && disable.is_some() {
            self.watcher.refresh(Start::Fresh);
        }
        if let Some(operational) = self.shared.operational.get() {
            let reason = message.last_error.as_deref().unwrap_or("delivered");
            if message.status == MessageStatus::Dead {
                let data = json!({"subscription": sub.id, "message": message.id, "reason": reason});
                operational.emit("herald.message.dead", data);
            }
            if newly_disabled {
                let data = json!({"subscription": sub.id, "reason": disable.unwrap_or(reason)});
                operational.emit("herald.subscription.disabled", data);
            }
            if recovered {
                let data = json!({"subscription": sub.id, "reason": "a delivery succeeded again"});
                operational.emit("herald.subscription.recovered", data);
            }
        }
    }

    /// Commits outcomes in batches, then lets their messages be taken again.
    async fn record(self: Arc<Self>, mut outcomes: mpsc::Receiver<Attempted>) {
        let mut batch = Vec::with_capacity(BATCH);
        while outcomes.recv_many(&mut batch, BATCH).await > 0 {
            let attempts = std::mem::take(&mut batch);
            let finished = attempts.iter().filter(|a| a.message.status != MessageStatus::Pending).count();
            loop {
                match self.shared.store.complete(attempts.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        error!(error = %e, "cannot record delivery outcomes, retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            {
                let mut inflight = self.inflight.lock().unwrap();
                for a in &attempts {
                    inflight.remove(&a.message.id);
                }
            }
            self.shared.metrics.queue_depth.sub(finished as i64);
            self.shared.wake.notify_one();
        }
    }
}

/// +/- 20% of `d`.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// A delivery error for the deliveries list and logs: the cause, never the URL (it may hold a token).
fn describe(e: &reqwest::Error) -> String {
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(120), "{d:?}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_a_date() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        h.insert(http::header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(55) && d <= Duration::from_secs(60), "{d:?}");
    }
}
