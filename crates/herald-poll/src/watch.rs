//! A watch: one upstream resource under one credential scope. It owns the current
//! representation, the event history and the broadcast channel subscribers read from. Its state
//! changes in one way only, a [`Step`] applied under the lock that joins take, so that the
//! history and the broadcast always agree; the steps come from its poll loop, in one process
//! or, in cluster mode, from the watch's log in Redis (both in [`crate::coordination`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herald_core::{encode_frame, Event, EventId, EventKind, History, Representation, Scope};
use http::{HeaderName, HeaderValue};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::refusal::Refusal;
use crate::route::RouteCtx;
use crate::strategy::FetchState;
use crate::versions::{Version, Versions};

/// What identifies a watch: route, upstream path + query, credential scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub route: usize,
    pub target: String,
    pub scope: Scope,
}

/// The outcome of a watch's first poll, which decides whether its first subscribers get a stream.
#[derive(Debug, Clone)]
pub(crate) enum Ready {
    Pending,
    Open,
    Refused(Refusal),
}

pub struct Watch {
    pub key: WatchKey,
    /// The credential scope of the subscriber that created it, which it counts against
    /// (`limits.max_watches_per_scope`); `Everybody` on public routes.
    pub(crate) owner: Scope,
    pub(crate) route: Arc<RouteCtx>,
    /// The subscribers' `vary` headers, presented on every poll. Secret: never logged or shown.
    pub(crate) credentials: Vec<(HeaderName, HeaderValue)>,
    tx: broadcast::Sender<Event>,
    pub(crate) ready: tokio::sync::watch::Sender<Ready>,
    /// Whether this process polls the watch (cluster mode: holds its poll lease).
    pub(crate) polling: tokio::sync::watch::Sender<bool>,
    subscribers: AtomicUsize,
    pub(crate) state: Mutex<State>,
    /// Asks the poll loop to poll now (a write through herald, a change hint).
    pub(crate) refresh: Refresh,
    /// What its polls remember from one to the next (a paginated collection's pages, where
    /// delta polling stands).
    pub(crate) fetch_state: FetchState,
}

/// Write-through refreshes asked of a watch, coalesced: one waits at most, and a poll that
/// starts takes it (that poll sees the write). So a burst of writes while a poll is in flight is
/// one more poll after it, and a write while the watch backs off is answered by the poll at the
/// back-off deadline, not by another one after it.
#[derive(Default)]
pub(crate) struct Refresh {
    asked: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Refresh {
    pub(crate) fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Returns once a refresh is asked (at once when one waits).
    pub(crate) async fn asked(&self) {
        while !self.asked.load(Ordering::Acquire) {
            // A stored permit from a refresh already taken wakes this once; the loop checks.
            self.notify.notified().await;
        }
    }

    /// Takes the refresh that waits, if any: the poll starting now answers it.
    pub(crate) fn take(&self) -> bool {
        self.asked.swap(false, Ordering::AcqRel)
    }
}

pub(crate) struct State {
    /// Ids are `<epoch>-<seq>`: a new epoch makes every earlier id unknown (see `EventId`).
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) current: Option<Representation>,
    /// The snapshot frame for `current` at `seq`, encoded once and shared until either changes.
    snapshot: Option<(u64, Bytes)>,
    history: History,
    /// The `upstream-status` data while the upstream is failing; sent to new subscribers.
    pub(crate) failing: Option<Bytes>,
    /// The last change was not a valid collection (an `upstream-status` said so).
    pub(crate) invalid: bool,
    /// Set when the watch ends: the frame every stream ends with.
    terminal: Option<Bytes>,
    pub(crate) idle_since: Instant,
    pub(crate) interval: Duration,
    pub(crate) last_poll: Option<SystemTime>,
    pub(crate) last_change: Option<SystemTime>,
    /// Cluster mode: the replica holding the poll lease, when known.
    pub(crate) holder: Option<String>,
    /// The representations held, kept while a webhook watch asks ([`Watch::keep_versions`]).
    versions: Option<Versions>,
    /// How many [`KeptVersions`] there are.
    keepers: usize,
}

/// One transition of a watch: what a poll found, or what a replica read from the cluster's
/// log. `None` fields stay as they are.
pub(crate) struct Step {
    /// Appended in order, each with the next sequence number.
    pub(crate) events: Vec<Pending>,
    pub(crate) current: Option<Representation>,
    /// The upstream's new validators for the same representation (etag, last-modified).
    pub(crate) validators: Option<(Option<String>, Option<String>)>,
    pub(crate) failing: Option<Option<Bytes>>,
    pub(crate) invalid: Option<bool>,
    pub(crate) polled: Option<SystemTime>,
    pub(crate) last_change: Option<SystemTime>,
    /// When the change was detected, for `herald_event_delivery_seconds`.
    pub(crate) detected: std::time::Instant,
}

/// An event not numbered yet.
pub(crate) struct Pending {
    pub(crate) kind: EventKind,
    pub(crate) name: String,
    pub(crate) data: Bytes,
}

impl Step {
    pub(crate) fn new(detected: std::time::Instant) -> Step {
        Step {
            events: Vec::new(),
            current: None,
            validators: None,
            failing: None,
            invalid: None,
            polled: None,
            last_change: None,
            detected,
        }
    }

    pub(crate) fn event(&mut self, kind: EventKind, name: impl Into<String>, data: impl Into<Bytes>) {
        self.events.push(Pending { kind, name: name.into(), data: data.into() });
    }
}

/// What a new subscriber starts from.
pub struct Joined {
    pub watch: Arc<Watch>,
    /// Frames to send first: a snapshot (plus the upstream status while it fails), or the
    /// events missed since `Last-Event-ID`.
    pub initial: Vec<Bytes>,
    /// Live events; those with `seq <= last_seq` were covered by `initial`.
    pub rx: broadcast::Receiver<Event>,
    pub last_seq: u64,
    pub guard: SubscriberGuard,
}

/// A watch's representation as a legacy poller is answered with it.
pub struct Current {
    pub repr: Representation,
    /// This request created the watch and waited for its first poll (a cache miss).
    pub fresh: bool,
    /// When the upstream last confirmed it, for the `age` header.
    pub last_poll: Option<SystemTime>,
}

/// What a subscriber that fell behind gets instead of the events it missed.
pub enum Resync {
    Snapshot { frame: Bytes, seq: u64 },
    Closed(Bytes),
}

/// Keeps a watch's subscriber count; when the last one drops, the linger countdown starts.
pub struct SubscriberGuard {
    watch: Arc<Watch>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        if self.watch.subscribers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.watch.state.lock().unwrap().idle_since = Instant::now();
        }
    }
}

/// Keeps a watch's versions ([`Watch::keep_versions`]); the last one dropped forgets them.
pub struct KeptVersions {
    watch: Arc<Watch>,
}

impl Drop for KeptVersions {
    fn drop(&mut self) {
        let mut st = self.watch.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.keepers -= 1;
        if st.keepers == 0 {
            st.versions = None;
        }
    }
}

/// A row of /admin/watches. Holds no credential: the scope is a hash.
#[derive(Debug, Clone)]
pub struct WatchInfo {
    pub route: String,
    pub path: String,
    pub scope: String,
    pub access: &'static str,
    pub subscribers: usize,
    pub interval: Duration,
    pub last_poll: Option<SystemTime>,
    pub last_change: Option<SystemTime>,
    pub etag: Option<String>,
    pub state: &'static str,
    /// Cluster mode: the replica that polls this watch.
    pub holder: Option<String>,
}

/// A new watch epoch: the time in microseconds, made unique within the process. It makes ids
/// from an earlier incarnation of a watch, or from another watch, unknown (see `EventId`).
pub(crate) fn next_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
    let prev = LAST.fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(now.max(last + 1))).unwrap_or(0);
    now.max(prev + 1)
}

impl Watch {
    pub(crate) fn new(
        key: WatchKey,
        route: Arc<RouteCtx>,
        owner: Scope,
        credentials: Vec<(HeaderName, HeaderValue)>,
        queue: usize,
    ) -> Self {
        let (tx, _) = broadcast::channel(queue);
        let state = State {
            epoch: next_epoch(),
            seq: 0,
            current: None,
            snapshot: None,
            history: History::new(route.cfg.events.history, route.cfg.events.history_bytes as usize),
            failing: None,
            invalid: false,
            terminal: None,
            idle_since: Instant::now(),
            interval: route.cfg.poll.interval,
            last_poll: None,
            last_change: None,
            holder: None,
            versions: None,
            keepers: 0,
        };
        Watch {
            key,
            owner,
            route,
            credentials,
            tx,
            ready: tokio::sync::watch::Sender::new(Ready::Pending),
            polling: tokio::sync::watch::Sender::new(false),
            subscribers: AtomicUsize::new(0),
            state: Mutex::new(state),
            refresh: Refresh::default(),
            fetch_state: FetchState::default(),
        }
    }

    /// The path part of the watched target (without its query).
    pub(crate) fn path(&self) -> &str {
        self.key.target.split('?').next().unwrap_or(&self.key.target)
    }

    pub fn route_name(&self) -> &str {
        &self.route.cfg.name
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    /// Counts a subscriber in; called under the hub's map lock so linger never races a join.
    pub(crate) fn count_in(self: &Arc<Self>) -> SubscriberGuard {
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        SubscriberGuard { watch: self.clone() }
    }

    /// Starts a stream: resumes after `last_event_id` when the history still holds it, otherwise
    /// starts from a snapshot. `None` once the watch has ended.
    pub(crate) fn join(self: &Arc<Self>, last_event_id: Option<&str>, guard: SubscriberGuard) -> Option<Joined> {
        let mut st = self.state.lock().unwrap();
        if st.terminal.is_some() || st.current.is_none() {
            return None;
        }
        // Subscribing under the lock that publishing takes: the history holds everything up to
        // `seq`, the receiver everything after it. Nothing is missed, nothing is doubled.
        let rx = self.tx.subscribe();
        let resumed = last_event_id
            .and_then(EventId::parse)
            .filter(|id| id.epoch == st.epoch)
            .and_then(|id| st.history.after(id.seq))
            .map(|events| events.map(|e| e.frame.clone()).collect::<Vec<_>>());
        let initial = match resumed {
            Some(frames) => frames,
            None => {
                let mut frames = vec![self.snapshot_frame(&mut st)];
                if let Some(data) = &st.failing {
                    frames.push(encode_frame("upstream-status", None, data));
                }
                frames
            }
        };
        Some(Joined { watch: self.clone(), initial, rx, last_seq: st.seq, guard })
    }

    /// What a legacy poller is answered: `None` once the watch ended (start anew), `Some(None)`
    /// while the upstream is failing (pass the request on), else the representation.
    pub(crate) fn current(&self, created: bool) -> Option<Option<Current>> {
        let st = self.state.lock().unwrap();
        if st.terminal.is_some() {
            return None;
        }
        if st.failing.is_some() {
            return Some(None);
        }
        let repr = st.current.clone()?;
        Some(Some(Current { repr, fresh: created, last_poll: st.last_poll }))
    }

    /// What a legacy poller is answered with now: `None` before the first poll, while the
    /// upstream fails, or once the watch ended.
    pub fn latest(&self) -> Option<Current> {
        self.current(false).flatten()
    }

    /// The representation the watch holds now (`None` before its first poll).
    pub fn representation(&self) -> Option<Representation> {
        self.state.lock().unwrap().current.clone()
    }

    /// Whether this process polls the watch, now and as it changes (in cluster mode, the poll
    /// lease moves between replicas; in one process it polls every watch it has).
    pub fn polled_here(&self) -> tokio::sync::watch::Receiver<bool> {
        self.polling.subscribe()
    }

    /// Keeps every representation the watch holds from now on (bounded, see
    /// [`crate::versions`]), for [`Watch::versions_after`], until the last guard is dropped.
    pub fn keep_versions(self: &Arc<Self>) -> KeptVersions {
        let mut st = self.state.lock().unwrap();
        st.keepers += 1;
        let State { versions, current, .. } = &mut *st;
        let versions = versions.get_or_insert_with(Versions::default);
        if let Some(repr) = current {
            versions.push(repr);
        }
        KeptVersions { watch: self.clone() }
    }

    /// The representations the watch held after the kept version `number` (or, when that one
    /// is gone or unknown, the newest kept one with `hash`), oldest first: its current one last.
    /// `None` when it keeps neither (or keeps no versions).
    pub fn versions_after(&self, number: Option<u64>, hash: &blake3::Hash) -> Option<Vec<Version>> {
        self.state.lock().unwrap().versions.as_ref()?.after(number, hash)
    }

    /// A fresh snapshot for a subscriber that fell more than `sse.queue` events behind.
    pub fn resync(&self) -> Resync {
        let mut st = self.state.lock().unwrap();
        if let Some(frame) = &st.terminal {
            return Resync::Closed(frame.clone());
        }
        Resync::Snapshot { frame: self.snapshot_frame(&mut st), seq: st.seq }
    }

    fn snapshot_frame(&self, st: &mut State) -> Bytes {
        match &st.snapshot {
            Some((seq, frame)) if *seq == st.seq => frame.clone(),
            _ => {
                let data = &st.current.as_ref().expect("a joined watch has a representation").data;
                let frame = encode_frame("snapshot", Some(EventId { epoch: st.epoch, seq: st.seq }), data);
                st.snapshot = Some((st.seq, frame.clone()));
                frame
            }
        }
    }

    /// Applies a step: its events are appended to the history and sent to every subscriber,
    /// then the state takes its values, all under the lock joins take.
    pub(crate) fn apply(&self, step: Step) {
        let mut st = self.state.lock().unwrap();
        for e in &step.events {
            self.publish(&mut st, e.kind, &e.name, &e.data, step.detected);
        }
        if let Some(repr) = step.current {
            if let Some(versions) = &mut st.versions {
                versions.push(&repr);
            }
            st.current = Some(repr);
        }
        if let (Some((etag, last_modified)), Some(cur)) = (step.validators, st.current.as_mut()) {
            cur.etag = etag;
            cur.last_modified = last_modified;
        }
        if let Some(failing) = step.failing {
            st.failing = failing;
        }
        if let Some(invalid) = step.invalid {
            st.invalid = invalid;
        }
        if step.polled.is_some() {
            st.last_poll = step.polled;
        }
        if step.last_change.is_some() {
            st.last_change = step.last_change;
        }
    }

    /// Starts the watch over from a state kept elsewhere (cluster mode: read from Redis, or a
    /// new epoch) at `seq`, with `events` (numbered, oldest first) as its history. Every
    /// subscriber is resynced with a snapshot.
    pub(crate) fn reset(&self, epoch: u64, seq: u64, events: &[(u64, Pending)], step: Step) {
        let mut st = self.state.lock().unwrap();
        st.epoch = epoch;
        st.seq = seq;
        st.snapshot = None;
        st.history = History::new(self.route.cfg.events.history, self.route.cfg.events.history_bytes as usize);
        for (seq, e) in events {
            let frame = encode_frame(&e.name, Some(EventId { epoch, seq: *seq }), &e.data);
            st.history.push(Event { seq: *seq, kind: e.kind, frame, detected: step.detected });
        }
        drop(st);
        self.apply(step);
        let _ = self.tx.send(Event {
            seq,
            kind: EventKind::Reset,
            frame: Bytes::new(),
            detected: std::time::Instant::now(),
        });
    }

    /// Appends an event to the history and sends it to every subscriber. Never blocks: a
    /// subscriber that is `sse.queue` events behind finds out on its next read and resyncs.
    fn publish(&self, st: &mut State, kind: EventKind, name: &str, data: &[u8], detected: std::time::Instant) {
        st.seq += 1;
        let frame = encode_frame(name, Some(EventId { epoch: st.epoch, seq: st.seq }), data);
        let event = Event { seq: st.seq, kind, frame, detected };
        st.history.push(event.clone());
        // No receivers is fine: webhooks and new subscribers read the history.
        let _ = self.tx.send(event);
        self.route.metrics.events.inc();
    }

    /// Ends every stream on this watch with `frame` (an `event: error`).
    pub(crate) fn terminate(&self, frame: Bytes) {
        // Also after a poll loop panicked holding the lock (see `hub::supervise`): the streams
        // must end all the same.
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.terminal = Some(frame.clone());
        let seq = st.seq;
        let _ =
            self.tx.send(Event { seq: seq + 1, kind: EventKind::Terminal, frame, detected: std::time::Instant::now() });
    }

    pub fn info(&self) -> WatchInfo {
        let st = self.state.lock().unwrap();
        let state = if st.terminal.is_some() {
            "closed"
        } else if st.current.is_none() {
            "starting"
        } else if st.failing.is_some() {
            "failing"
        } else {
            "ok"
        };
        WatchInfo {
            route: self.route.cfg.name.clone(),
            path: self.key.target.clone(),
            scope: self.key.scope.to_string(),
            access: self.route.cfg.access.as_str(),
            subscribers: self.subscribers(),
            interval: st.interval,
            last_poll: st.last_poll,
            last_change: st.last_change,
            etag: st.current.as_ref().and_then(|r| r.etag.clone()),
            state,
            holder: st.holder.clone(),
        }
    }
}
