//! Webhook watches: the subscriptions that watch the same resource under the same credential
//! scope share one hub watch, held open for as long as they exist. On every change the new
//! representation is diffed against the one last recorded, and the messages for every
//! subscription are stored together with it in one transaction: a change is handled once that
//! commit returns. After a crash the recorded representation is still the old one, so the first
//! poll after the restart finds the change again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_config::{Access, Payload};
use herald_core::{EventKind, Representation};
use herald_poll::{Credentials, Watch, WatchKey};
use herald_store::{message_id, now_ms, Message, MessageStatus, Subscription, SubscriptionStatus};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::events::{self, WebhookEvent};
use crate::Shared;

/// The running webhook watches, by watch key.
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    tasks: Mutex<HashMap<WatchKey, Task>>,
    shutdown: CancellationToken,
}

struct Task {
    subs: watch::Sender<Arc<Vec<Subscription>>>,
    cancel: CancellationToken,
}

/// Where a watch task starts from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the representation recorded before (herald restarted): changes made meanwhile are delivered.
    Resume,
    /// From what the upstream holds now (a new subscription gets no history).
    Fresh,
}

impl Watcher {
    /// The watch keys with a running task.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.tasks.lock().unwrap().len()
    }

    pub(crate) fn new(shared: Arc<Shared>, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Watcher { shared, tasks: Mutex::new(HashMap::new()), shutdown })
    }

    /// Brings the running watches in line with the subscriptions: one task per watch key of
    /// the active and paused ones; a task whose subscriptions are all gone stops.
    pub(crate) fn refresh(self: &Arc<Self>, start: Start) {
        let mut groups: HashMap<WatchKey, (Credentials, Vec<Subscription>)> = HashMap::new();
        for sub in self.shared.subs.read().unwrap().values() {
            if sub.status.stopped() {
                continue;
            }
            let Some(route) = self.shared.route_of(&sub.path) else { continue };
            let (key, credentials) = self.shared.hub.key_for(route, sub.path.clone(), &header_map(&sub.headers));
            groups.entry(key).or_insert_with(|| (credentials, Vec::new())).1.push(sub.clone());
        }
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|key, task| {
            let keep = groups.contains_key(key);
            if !keep {
                task.cancel.cancel();
            }
            keep
        });
        for (key, (credentials, subs)) in groups {
            let subs = Arc::new(subs);
            match tasks.get(&key) {
                Some(task) => {
                    task.subs.send_replace(subs);
                }
                None => {
                    let (tx, rx) = watch::channel(subs);
                    let cancel = self.shutdown.child_token();
                    tokio::spawn(self.clone().run_leased(key.clone(), credentials, rx, cancel.clone(), start));
                    tasks.insert(key, Task { subs: tx, cancel });
                }
            }
        }
    }

    /// Runs the watch task; in cluster mode, only while this replica holds the group's lease
    /// (one replica at a time turns a group's changes into messages).
    async fn run_leased(
        self: Arc<Self>,
        key: WatchKey,
        credentials: Credentials,
        subs: watch::Receiver<Arc<Vec<Subscription>>>,
        cancel: CancellationToken,
        mut start: Start,
    ) {
        let Some(cluster) = self.shared.hub.cluster().cloned() else {
            return self.run(key, credentials, subs, cancel, start).await;
        };
        let route = self.shared.hub.route(key.route).name.clone();
        let name = format!("wh-{}", herald_poll::watch_id(&route, &key));
        // Whether this replica should hold the lease: it polls the watch (so it saw every
        // version), or the watch does not open here (and the holder says why).
        let (eligible_tx, mut eligible) = watch::channel(false);
        let leased = async {
            loop {
                if eligible.wait_for(|e| *e).await.is_err() {
                    return;
                }
                // Not cancelled when eligibility goes (an acquire under way would leave the
                // lease to lapse): a lease taken meanwhile is given up at once below.
                let Some(held) = cluster.hold(&name, &cancel).await else { return };
                if !*eligible.borrow() {
                    continue;
                }
                debug!(route = %route, replica = %cluster.replica(), "webhook watch lease taken");
                let run = self.clone().run(key.clone(), credentials.clone(), subs.clone(), cancel.clone(), start);
                tokio::select! {
                    () = run => return,
                    () = held.lost.cancelled() => warn!(route = %route, "webhook watch lease lost; another replica takes over"),
                    _ = eligible.wait_for(|e| !*e) => debug!(route = %route, "webhook watch lease given up: another replica polls the watch"),
                }
                // What the last holder recorded is where the next one starts from.
                start = Start::Resume;
            }
        };
        tokio::select! {
            () = leased => {}
            () = self.clone().follow_polls(key.clone(), credentials.clone(), eligible_tx, cancel.clone()) => {}
        }
    }

    /// Cluster mode: joins the watch and stays joined (again after it ends), so that it keeps
    /// its versions ([`Watch::keep_versions`]) on this replica whether it polls the watch or
    /// not: the replica that takes the polls over records the versions its holder had not.
    /// Says in `eligible` whether this replica should hold the webhook watch's lease. Ends when
    /// cancelled.
    async fn follow_polls(
        self: Arc<Self>,
        key: WatchKey,
        credentials: Credentials,
        eligible: watch::Sender<bool>,
        cancel: CancellationToken,
    ) {
        let route = self.shared.hub.route(key.route);
        let set = |now: bool| eligible.send_if_modified(|e| std::mem::replace(e, now) != now);
        let mut backoff = route.poll.interval;
        loop {
            let joined = tokio::select! {
                j = self.shared.hub.subscribe(key.clone(), credentials.clone(), None) => j,
                () = cancel.cancelled() => return,
            };
            match joined {
                Ok(mut joined) => {
                    backoff = route.poll.interval;
                    let _kept = joined.watch.keep_versions();
                    let mut polled = joined.watch.polled_here();
                    debug!(route = %route.name, "webhook watch followed, its versions kept");
                    loop {
                        set(*polled.borrow_and_update());
                        let ended = tokio::select! {
                            changed = polled.changed() => changed.is_err(),
                            ev = joined.rx.recv() => match ev {
                                Ok(e) => e.kind == EventKind::Terminal,
                                Err(broadcast::error::RecvError::Lagged(_)) => false,
                                Err(broadcast::error::RecvError::Closed) => true,
                            },
                            () = cancel.cancelled() => return,
                        };
                        if ended {
                            set(false);
                            break;
                        }
                    }
                }
                // The upstream refuses it: the holder of the lease says why (no replica polls).
                // Herald's own refusal here (a limit, Redis away) is no reason to hold it.
                Err(refusal) => {
                    debug!(route = %route.name, status = refusal.status, own = refusal.own, "webhook watch does not open here");
                    set(!refusal.own);
                }
            }
            if sleep_or_cancel(backoff, &cancel).await {
                return;
            }
            backoff = (backoff * 2).min(route.poll.max_interval);
        }
    }

    /// The watch task; on a `shared` route, beside it, the re-checks of each subscription's own
    /// credentials (they end together).
    async fn run(
        self: Arc<Self>,
        key: WatchKey,
        credentials: Credentials,
        subs: watch::Receiver<Arc<Vec<Subscription>>>,
        cancel: CancellationToken,
        start: Start,
    ) {
        let follow = self.clone().follow(key.clone(), credentials, subs.clone(), cancel.clone(), start);
        if self.shared.hub.route(key.route).access != Access::Shared {
            return follow.await;
        }
        tokio::select! {
            () = follow => {}
            () = self.recheck(key, subs, cancel) => {}
        }
    }

    /// `shared` routes: the watch is polled with the service credential, so a subscription's own
    /// credentials are checked only by admission checks: at creation, then again every route
    /// `authorize_ttl` (a subscription seen for the first time, after a restart or a reload, at
    /// once). Each is the very check a stream is admitted with ([`herald_poll::Hub::watch_key`]:
    /// a GET for the subscription's target with its own headers, remembered for
    /// `authorize_ttl`, taking its turn from the background share of the poll budget). A 401 or
    /// 403 makes that subscription alone `unauthorized`; any other failure is tried again after
    /// `authorize_ttl`, and leaves the subscription as it is.
    async fn recheck(
        self: Arc<Self>,
        key: WatchKey,
        mut subs: watch::Receiver<Arc<Vec<Subscription>>>,
        cancel: CancellationToken,
    ) {
        let hub = &self.shared.hub;
        let route = hub.route(key.route);
        let ttl = route.authorize_ttl;
        let mut checked: HashMap<String, Instant> = HashMap::new();
        loop {
            let current = subs.borrow_and_update().clone();
            checked.retain(|id, _| current.iter().any(|s| &s.id == id));
            for sub in current.iter() {
                if checked.get(&sub.id).is_some_and(|at| at.elapsed() < ttl) {
                    continue;
                }
                let headers = header_map(&sub.headers);
                let admitted = tokio::select! {
                    a = hub.watch_key(key.route, sub.path.clone(), &headers) => a,
                    () = cancel.cancelled() => return,
                };
                checked.insert(sub.id.clone(), Instant::now());
                match admitted {
                    Ok(_) => {}
                    Err(refusal) if matches!(refusal.status, 401 | 403) => {
                        self.unauthorized(std::slice::from_ref(sub), refusal.status);
                    }
                    Err(refusal) => {
                        debug!(route = %route.name, subscription = %sub.id, status = refusal.status, "webhook subscription's credentials not checked again, trying after authorize_ttl");
                    }
                }
            }
            let next = checked.values().min().map_or_else(|| Instant::now() + ttl, |at| *at + ttl);
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                changed = subs.changed() => if changed.is_err() { return },
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Follows the watch: joins it, and turns every change into messages.
    async fn follow(
        self: Arc<Self>,
        key: WatchKey,
        credentials: Credentials,
        subs: watch::Receiver<Arc<Vec<Subscription>>>,
        cancel: CancellationToken,
        start: Start,
    ) {
        let shared = &self.shared;
        let route = shared.hub.route(key.route);
        let store_key = format!("{}\u{0}{}\u{0}{}", route.name, key.target, key.scope);
        let mut last = Recorded::default();
        let mut loaded = start == Start::Fresh;
        let mut backoff = route.poll.interval;
        // The service credential is refused and the operator was told (once until it works again).
        let mut service_refused = false;
        loop {
            let joined = tokio::select! {
                j = shared.hub.subscribe(key.clone(), credentials.clone(), None) => j,
                _ = cancel.cancelled() => return,
            };
            match joined {
                Err(refusal) if matches!(refusal.status, 401 | 403) && route.access == Access::PerSubscriber => {
                    // The subscriptions' own credentials are refused: they stop until re-enabled.
                    let refused = subs.borrow().clone();
                    self.unauthorized(&refused, refusal.status);
                    return;
                }
                Err(refusal) if matches!(refusal.status, 401 | 403) => {
                    // Polled with the service credential: that is what failed, not theirs.
                    self.service_refused(&key, &subs, refusal.status, &mut service_refused);
                }
                Err(refusal) => {
                    warn!(route = %route.name, scope = %key.scope, status = refusal.status, "webhook watch refused by the upstream, trying again later");
                }
                Ok(mut joined) => {
                    backoff = route.poll.interval;
                    // The watch was already open (an SSE subscriber's, say), perhaps failing.
                    for frame in &joined.initial {
                        self.upstream_status(&key, &subs, frame, &mut service_refused);
                    }
                    let _kept = joined.watch.keep_versions();
                    while !loaded {
                        match shared.store.watch_state(store_key.clone()).await {
                            Ok(data) => {
                                last = Recorded::from_store(data);
                                loaded = true;
                            }
                            Err(e) => {
                                error!(error = %e, "cannot read a webhook watch's last representation, retrying");
                                if sleep_or_cancel(Duration::from_secs(1), &cancel).await {
                                    return;
                                }
                            }
                        }
                    }
                    loop {
                        if self.observe(&joined.watch, &store_key, &mut last, &subs, &cancel).await {
                            return;
                        }
                        let ended = tokio::select! {
                            ev = joined.rx.recv() => match ev {
                                Ok(e) if e.kind == EventKind::Status => {
                                    self.upstream_status(&key, &subs, &e.frame, &mut service_refused);
                                    false
                                }
                                Ok(e) => e.kind == EventKind::Terminal,
                                Err(broadcast::error::RecvError::Lagged(_)) => false,
                                Err(broadcast::error::RecvError::Closed) => true,
                            },
                            _ = cancel.cancelled() => return,
                        };
                        if ended {
                            break;
                        }
                    }
                }
            }
            if sleep_or_cancel(backoff, &cancel).await {
                return;
            }
            backoff = (backoff * 2).min(route.poll.max_interval);
        }
    }

    /// Marks subscriptions whose own credentials the upstream refused `unauthorized`, says so
    /// to `operational_url`, and regroups the watches (a watch left without any stops).
    fn unauthorized(self: &Arc<Self>, subs: &[Subscription], status: u16) {
        let reason = format!("the upstream answered {status} to the subscription's credentials");
        for sub in subs {
            let mut stopped = false;
            self.shared.update_subscription(&sub.id, |s| {
                stopped = !s.status.stopped();
                if stopped {
                    warn!(subscription = %s.id, status, "webhook subscription unauthorized by the upstream");
                    s.status = SubscriptionStatus::Unauthorized;
                }
                stopped
            });
            if let (true, Some(operational)) = (stopped, self.shared.operational.get()) {
                let data = serde_json::json!({"subscription": sub.id, "reason": reason});
                operational.emit("herald.subscription.disabled", data);
            }
        }
        self.refresh(Start::Fresh);
    }

    /// A `shared` or `public` watch's poll was refused (401/403): it is polled with the service
    /// credential (`upstream.headers`, `upstream.auth`), so that is what the upstream refused,
    /// and no subscription is to blame: none is marked `unauthorized`; they wait for the watch
    /// to recover. The operator is told, once until it does: a log line at `error` and
    /// `herald.upstream.refused` to `operational_url`.
    fn service_refused(
        &self,
        key: &WatchKey,
        subs: &watch::Receiver<Arc<Vec<Subscription>>>,
        status: u16,
        told: &mut bool,
    ) {
        if std::mem::replace(told, true) {
            return;
        }
        let route = self.shared.hub.route(key.route);
        let ids: Vec<String> = subs.borrow().iter().map(|s| s.id.clone()).collect();
        error!(route = %route.name, status, subscriptions = ids.len(), "the upstream refused the service credential (upstream.headers / upstream.auth) on a webhook watch; its subscriptions wait, none is marked unauthorized");
        if let Some(operational) = self.shared.operational.get() {
            let path = key.target.split('?').next().unwrap_or_default();
            let reason = format!(
                "the upstream answered {status} to the service credential; no subscription is marked unauthorized"
            );
            let data = serde_json::json!({"route": route.name, "path": path, "status": status, "subscriptions": ids, "reason": reason});
            operational.emit("herald.upstream.refused", data);
        }
    }

    /// An `upstream-status` frame of the watch (see docs/sse.md): a 401/403 on a watch polled
    /// with the service credential is told as [`Watcher::service_refused`]; `{"ok":true}` ends it.
    fn upstream_status(
        &self,
        key: &WatchKey,
        subs: &watch::Receiver<Arc<Vec<Subscription>>>,
        frame: &[u8],
        told: &mut bool,
    ) {
        let Some(status) = upstream_status(frame) else { return };
        match status {
            UpstreamStatus::Ok => {
                if std::mem::take(told) {
                    info!(route = %self.shared.hub.route(key.route).name, "the upstream accepts the service credential again");
                }
            }
            UpstreamStatus::Failing(Some(status @ (401 | 403)))
                if self.shared.hub.route(key.route).access != Access::PerSubscriber =>
            {
                self.service_refused(key, subs, status, told)
            }
            UpstreamStatus::Failing(_) => {}
        }
    }

    /// Records the watch's changes since the representation last recorded, each with its
    /// messages; `true` when cancelled. Each version the watch kept since ([`Watch::versions_after`])
    /// is recorded in turn, so a change is delivered as the streams carried it even when
    /// recording fell behind; without them (herald restarted, or fell further behind than the
    /// watch keeps), the changes since are diffed at once, into one message each at most.
    async fn observe(
        &self,
        watch: &Watch,
        store_key: &str,
        last: &mut Recorded,
        subs: &watch::Receiver<Arc<Vec<Subscription>>>,
        cancel: &CancellationToken,
    ) -> bool {
        loop {
            let Some(now) = watch.representation() else { return false };
            let steps: Vec<(Option<u64>, Representation)> = match &last.repr {
                // Nothing recorded yet: this is where deliveries start from.
                None => vec![(None, now)],
                // The kept versions first: the watch may have changed and changed back.
                Some(l) => match watch.versions_after(last.after, &l.hash) {
                    Some(versions) if versions.is_empty() => return false,
                    Some(versions) => versions.into_iter().map(|(n, r)| (Some(n), r)).collect(),
                    None if l.hash == now.hash => return false,
                    None => {
                        info!(route = %watch.route_name(), "the versions since the one recorded for webhooks are not known here; the changes since are delivered together");
                        vec![(None, now)]
                    }
                },
            };
            let mut moved = false;
            for (number, next) in steps {
                match self.record(watch, store_key, &last.repr, &next, subs, cancel).await {
                    Recording::Done => *last = Recorded { repr: Some(next), after: number },
                    // Skipped: the next version is diffed from the last valid one.
                    Recording::Invalid => last.after = number.or(last.after),
                    Recording::Moved(repr) => {
                        *last = Recorded { repr, after: None };
                        moved = true;
                        break;
                    }
                    Recording::Cancelled => return true,
                }
            }
            if !moved {
                return false;
            }
        }
    }

    /// Records `next` with the messages of the change from `last` to it, in one transaction.
    /// Retries a failing store until it answers. When another replica recorded a change first
    /// (cluster mode), says what it recorded, so that a change is never turned into messages
    /// twice. When the store lost the record (Redis lost its data), the change is still diffed
    /// from `last`.
    async fn record(
        &self,
        watch: &Watch,
        store_key: &str,
        last: &Option<Representation>,
        next: &Representation,
        subs: &watch::Receiver<Arc<Vec<Subscription>>>,
        cancel: &CancellationToken,
    ) -> Recording {
        let messages = match last {
            None => Vec::new(),
            Some(prev) => {
                let subs = subs.borrow().clone();
                match self.messages(&watch.key, prev, next, &subs) {
                    Ok(m) => m,
                    Err(e) => {
                        // Diffed from the last valid one when a valid one comes.
                        warn!(route = %watch.route_name(), error = %e, "not a valid collection; webhooks wait for the next valid one");
                        return Recording::Invalid;
                    }
                }
            }
        };
        let count = messages.len();
        // The store holds no record while `last` is known: recorded anew, from nothing.
        let mut lost = false;
        loop {
            let expected = last.as_ref().filter(|_| !lost).map(|l| l.data.to_vec());
            let recorded = loop {
                let stored = self.shared.store.record_change(
                    store_key.to_string(),
                    expected.clone(),
                    next.data.to_vec(),
                    messages.clone(),
                );
                match stored.await {
                    Ok(recorded) => break recorded,
                    Err(e) => {
                        error!(error = %e, "cannot record a change for webhooks, retrying");
                        if sleep_or_cancel(Duration::from_secs(1), cancel).await {
                            return Recording::Cancelled;
                        }
                    }
                }
            };
            if recorded {
                debug!(route = %watch.route_name(), messages = count, "change recorded for webhooks");
                if count > 0 {
                    self.shared.metrics.queue_depth.add(count as i64);
                    self.shared.wake.notify_one();
                }
                return Recording::Done;
            }
            match self.shared.store.watch_state(store_key.to_string()).await {
                Ok(None) if !lost => {
                    warn!(route = %watch.route_name(), "a webhook watch's record is gone from the store (redis lost its data?); its change is diffed from the one held here");
                    lost = true;
                    continue;
                }
                Ok(data) if data != expected => {
                    debug!(route = %watch.route_name(), "another replica recorded this watch's change first; diffing from it");
                    return Recording::Moved(Recorded::from_store(data).repr);
                }
                Ok(_) => error!("a webhook watch's recorded representation reads back different, retrying"),
                Err(e) => error!(error = %e, "cannot read a webhook watch's last representation, retrying"),
            }
            if sleep_or_cancel(Duration::from_secs(1), cancel).await {
                return Recording::Cancelled;
            }
        }
    }

    /// One message per event per subscription that wants it.
    fn messages(
        &self,
        key: &WatchKey,
        old: &Representation,
        new: &Representation,
        subs: &[Subscription],
    ) -> Result<Vec<Message>, herald_core::diff::CollectionError> {
        let route = self.shared.hub.route(key.route);
        let mut by_payload: HashMap<bool, Vec<WebhookEvent>> = HashMap::new();
        let now = now_ms();
        let mut out = Vec::new();
        // As they are now: one may have been disabled since this watch last heard of it.
        let current: Vec<Subscription> = {
            let live = self.shared.subs.read().unwrap();
            subs.iter().filter_map(|s| live.get(&s.id)).filter(|s| !s.status.stopped()).cloned().collect()
        };
        for sub in &current {
            let payload = match sub.payload.as_deref() {
                Some("lean") => Payload::Lean,
                Some(_) => Payload::Rich,
                None => events::default_payload(&route),
            };
            let list = match by_payload.entry(payload == Payload::Rich) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(events::events(&route, &old.value, &new.value, &key.target, payload)?)
                }
            };
            for ev in list.iter().filter(|ev| events::matches(&sub.filter, &ev.event_type)) {
                out.push(new_message(&sub.id, &ev.event_type, events::body(&ev.event_type, now, &ev.data), now));
            }
        }
        Ok(out)
    }
}

/// The representation last recorded for a watch's webhooks, and the number of the version the
/// next one comes after among those the watch kept (that one, or a later one skipped as invalid).
#[derive(Default)]
struct Recorded {
    repr: Option<Representation>,
    after: Option<u64>,
}

impl Recorded {
    fn from_store(data: Option<Vec<u8>>) -> Recorded {
        Recorded { repr: data.map(|d| Representation::from_body(d.into(), &[])), after: None }
    }
}

/// How recording one version went.
enum Recording {
    Done,
    /// Not a valid collection: skipped, the next one is diffed from the last valid one.
    Invalid,
    /// Another replica recorded first: this (or nothing, when the record is gone) is recorded now.
    Moved(Option<Representation>),
    Cancelled,
}

/// What an `upstream-status` frame says.
#[derive(Debug, PartialEq, Eq)]
enum UpstreamStatus {
    Ok,
    /// Failing, with the upstream's status when it answered at all.
    Failing(Option<u16>),
}

/// Reads an `upstream-status` SSE frame (`event: upstream-status`, `data: {"ok":…,"status":…}`);
/// `None` for any other frame.
fn upstream_status(frame: &[u8]) -> Option<UpstreamStatus> {
    let text = std::str::from_utf8(frame).ok()?;
    if !text.starts_with("event: upstream-status\n") {
        return None;
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    let data: serde_json::Value = serde_json::from_str(data).ok()?;
    Some(match data["ok"].as_bool()? {
        true => UpstreamStatus::Ok,
        false => UpstreamStatus::Failing(data["status"].as_u64().and_then(|s| u16::try_from(s).ok())),
    })
}

/// A pending message, due at once.
pub(crate) fn new_message(subscription: &str, event_type: &str, payload: String, now: u64) -> Message {
    Message {
        id: message_id(now),
        subscription: subscription.to_string(),
        event_type: event_type.to_string(),
        payload,
        created_at: now,
        status: MessageStatus::Pending,
        attempts: 0,
        next_attempt: now,
        last_attempt: None,
        last_status: None,
        last_error: None,
    }
}

/// A subscription's `headers` as a request's, for computing its watch key and credentials.
pub(crate) fn header_map(headers: &[(String, String)]) -> HeaderMap {
    headers
        .iter()
        .filter_map(|(k, v)| Some((HeaderName::try_from(k.as_str()).ok()?, HeaderValue::try_from(v.as_str()).ok()?)))
        .collect()
}

/// Sleeps; `true` when cancelled first.
pub(crate) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use herald_core::{encode_frame, EventId};

    use super::*;

    #[test]
    fn upstream_status_frames_are_read_and_others_ignored() {
        let id = Some(EventId { epoch: 1, seq: 2 });
        let refused =
            encode_frame("upstream-status", id, br#"{"ok":false,"status":401,"error":"upstream answered 401"}"#);
        assert_eq!(upstream_status(&refused), Some(UpstreamStatus::Failing(Some(401))));
        let unreachable = encode_frame("upstream-status", id, br#"{"ok":false,"error":"connection refused"}"#);
        assert_eq!(upstream_status(&unreachable), Some(UpstreamStatus::Failing(None)));
        assert_eq!(upstream_status(&encode_frame("upstream-status", id, br#"{"ok":true}"#)), Some(UpstreamStatus::Ok));
        assert_eq!(upstream_status(&encode_frame("snapshot", id, br#"{"ok":false,"status":401}"#)), None);
    }
}
