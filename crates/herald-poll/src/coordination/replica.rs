//! Cluster mode (`storage.kind: redis`): a watch's loop when its state lives in Redis, shared by
//! every replica. On each replica that has subscribers on it, the watch follows the log (one
//! pub/sub subscription; each notice is a wake-up to read what is new) and fans out locally, so
//! an event is still encoded once per replica. One replica at a time holds the watch's lease
//! and polls: its results go through the fenced append script before they are applied here,
//! so a holder that lost its lease (paused, cut off) can never publish; it becomes a follower.
//!
//! Order on a new watch: follow first, then read the state and history, then apply what the
//! notices announce beyond it, by sequence; a notice ahead of the next sequence is a gap (a
//! notice was lost), filled from the log and counted. A state Redis no longer holds is written
//! anew by the next holder with a new epoch: every subscriber gets a snapshot.
//!
//! Write-through refreshes go over Redis too: any replica's write is heard by every replica
//! ([`follow_refreshes`]), and the holder of each watch it concerns polls.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_config::Access;
use herald_core::{EventKind, Representation};
use herald_store::redis::{Acquired, Appended, Entry, Meta, Note, Update, WatchLog};
use herald_store::StoreError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::registry::Registry;
use crate::cluster::{renewed, watch_id, Cluster};
use crate::poll::{priority, Polled};
use crate::refusal::Refusal;
use crate::schedule::{jittered, Schedule};
use crate::watch::{next_epoch, Pending, Ready, Step, Watch};

/// A held lease: its value (the fencing token is its end) and until when it surely holds.
struct Holding {
    value: String,
    until: Instant,
}

/// One watch on this replica in cluster mode.
struct Replica<R> {
    /// The registry the watch belongs to (the hub).
    registry: Arc<R>,
    cluster: Arc<Cluster>,
    watch: Arc<Watch>,
    log: Arc<WatchLog>,
    holding: Option<Holding>,
    /// When the holder polls next.
    next_poll: Instant,
    /// The next poll answers a write-through refresh; when the scheduled one was due.
    refreshing: Option<Instant>,
}

/// Hears the refreshes any replica announces and asks this replica's watches of that path;
/// until shutdown or the registry is gone.
pub(crate) async fn follow_refreshes<R: Registry>(
    registry: Weak<R>,
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
) {
    let channel = cluster.refresh_channel();
    while !shutdown.is_cancelled() {
        match cluster.bus.follow(&channel).await {
            Ok(mut following) => loop {
                tokio::select! {
                    note = following.notes.recv() => match note {
                        Some(Note::Refresh(path)) => match registry.upgrade() {
                            Some(registry) => drop(registry.refresh_local(&path)),
                            None => return,
                        },
                        Some(_) => {}
                        None => break,
                    },
                    () = shutdown.cancelled() => return,
                }
            },
            Err(e) => debug!(error = %e, "cannot follow refreshes yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The loop of one watch on this replica: follows its log, takes its lease when free, polls
/// while holding it; until linger, a revoked credential or shutdown.
pub(crate) async fn run<R: Registry>(registry: Arc<R>, watch: Arc<Watch>, cluster: Arc<Cluster>) {
    let route = &watch.route.cfg;
    // State outlives its last renewal long enough for every replica to restart and resume.
    let ttl = (route.poll.linger + cluster.lease * 3).max(Duration::from_secs(600));
    let log = Arc::new(cluster.redis.watch_log(&watch_id(&route.name, &watch.key), ttl));
    let mut replica = Replica {
        registry: registry.clone(),
        cluster: cluster.clone(),
        watch: watch.clone(),
        log,
        holding: None,
        next_poll: Instant::now(),
        refreshing: None,
    };
    replica.run().await;
    replica.release().await;
    registry.end(&watch);
}

/// A loop that ends without `release` (a panic, a bug) still gives up its lease and its gauge,
/// so that another replica does not wait out the lease for a watch nobody polls.
impl<R> Drop for Replica<R> {
    fn drop(&mut self) {
        if let Some(holding) = self.holding.take() {
            let route = &self.watch.route.cfg.name;
            self.cluster.metrics.leases.with_label_values(&[route]).dec();
            self.watch.polling.send_replace(false);
            let log = self.log.clone();
            self.cluster.tasks.spawn(async move {
                let _ = log.release(&holding.value).await;
            });
        }
    }
}

impl<R: Registry> Replica<R> {
    async fn run(&mut self) {
        let unavailable = |e: StoreError| {
            warn!(error = %e, "cannot follow a watch in redis");
            Refusal::herald(503, "storage unavailable, try again later\n", Some(Duration::from_secs(1)))
        };
        // Follow first, then read: whatever is appended after the read is announced.
        let mut following = match self.cluster.bus.follow(&self.log.channel).await {
            Ok(f) => f,
            Err(e) => return self.refuse(unavailable(e)),
        };
        match self.log.read(None, self.history()).await {
            Ok(Some((meta, entries))) => self.load(meta, &entries),
            Ok(None) => {}
            Err(e) => return self.refuse(unavailable(e)),
        }
        let mut schedule = Schedule::new(self.watch.route.cfg.poll.clone());
        let mut tick = tokio::time::interval(self.cluster.lease / 3);
        let shutdown = self.registry.shutdown().clone();
        loop {
            let polling = self.holding.is_some();
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if self.registry.lingered_out(&self.watch) {
                        debug!(route = %self.watch.route.cfg.name, "watch idle for linger, stopped");
                        return;
                    }
                    self.lease().await;
                }
                note = following.notes.recv() => match note {
                    None => return,
                    Some(Note::Ended { status, epoch }) if self.ends(epoch) => {
                        self.registry.revoke(&self.watch, status);
                        return;
                    }
                    Some(Note::Ended { .. }) => warn!(route = %self.route(), "an end notice not for this watch, ignored"),
                    Some(Note::Appended { epoch, seq }) => self.catch_up(Why::Notice { epoch, seq }).await,
                    Some(Note::Reconnected) => self.catch_up(Why::Reconnected).await,
                    Some(Note::Released) => self.lease().await,
                    Some(Note::Refresh(_)) => {}
                },
                // A write through any replica: the holder polls now, or at its back-off deadline
                // when the upstream asked it to wait.
                () = self.watch.refresh.asked(), if polling && schedule.errors() == 0 && self.refreshing.is_none() => {
                    self.refreshing = Some(self.next_poll);
                    self.next_poll = Instant::now();
                }
                () = tokio::time::sleep_until(self.next_poll), if polling => {
                    if !self.poll(&mut schedule, &mut tick).await {
                        return;
                    }
                }
            }
        }
    }

    /// Whether an end announced for this watch's channel ends it: only a per-subscriber watch
    /// is ended by a refused credential, and only in the epoch it was refused in.
    fn ends(&self, epoch: Option<u64>) -> bool {
        self.watch.route.cfg.access == Access::PerSubscriber
            && epoch.is_none_or(|e| e == self.watch.state.lock().unwrap().epoch)
    }

    fn history(&self) -> usize {
        self.watch.route.cfg.events.history
    }

    fn route(&self) -> &str {
        &self.watch.route.cfg.name
    }

    /// Renews the lease held, or takes it when nobody holds it.
    async fn lease(&mut self) {
        let lease = self.cluster.lease;
        if let Some(holding) = &mut self.holding {
            if renewed(&self.log, &holding.value, lease, &mut holding.until).await {
                return;
            }
            warn!(route = %self.route(), replica = %self.cluster.replica, "poll lease lost");
            self.lost();
            return;
        }
        match self.log.acquire(&self.cluster.replica, lease).await {
            Ok(Acquired::Held(value)) => {
                info!(route = %self.route(), path = %self.watch.key.target, replica = %self.cluster.replica, "poll lease taken");
                self.cluster.metrics.leases.with_label_values(&[self.route()]).inc();
                self.cluster.metrics.lease_changes.with_label_values(&[self.route()]).inc();
                self.holding = Some(Holding { value, until: Instant::now() + lease });
                // Writes heard while following were answered by the holder's polls then.
                self.watch.refresh.take();
                self.watch.state.lock().unwrap().holder = Some(self.cluster.replica.clone());
                self.sync().await;
                // After the sync: the watch holds at least what any replica recorded from it.
                self.watch.polling.send_replace(self.holding.is_some());
            }
            Ok(Acquired::Other { holder, epoch, seq }) => {
                let behind = {
                    let mut st = self.watch.state.lock().unwrap();
                    st.holder = Some(holder);
                    seq > 0 && (epoch != st.epoch || seq > st.seq)
                };
                if behind {
                    self.catch_up(Why::Behind).await;
                }
            }
            Err(_) => {}
        }
    }

    fn lost(&mut self) {
        if self.holding.take().is_some() {
            self.cluster.metrics.leases.with_label_values(&[self.route()]).dec();
            self.watch.state.lock().unwrap().holder = None;
            self.watch.polling.send_replace(false);
        }
    }

    async fn release(&mut self) {
        if let Some(holding) = self.holding.take() {
            self.cluster.metrics.leases.with_label_values(&[self.route()]).dec();
            self.watch.polling.send_replace(false);
            let _ = self.log.release(&holding.value).await;
        }
    }

    /// A new holder: when the watch is open here, its state goes to Redis if Redis lost it (a
    /// new epoch), and the next poll comes one interval after the last one, whoever made it.
    async fn sync(&mut self) {
        let open = matches!(*self.watch.ready.borrow(), Ready::Open);
        if !open {
            self.next_poll = Instant::now();
            return;
        }
        let last_poll = self.watch.state.lock().unwrap().last_poll;
        let since = last_poll.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default();
        self.next_poll = Instant::now() + self.watch.route.cfg.poll.interval.saturating_sub(since);
        if let Some(value) = self.holding.as_ref().map(|h| h.value.clone()) {
            self.commit(&value, Step::new(std::time::Instant::now()), false).await;
        }
    }

    /// Polls as the holder; `false` when the watch ends.
    async fn poll(&mut self, schedule: &mut Schedule, tick: &mut tokio::time::Interval) -> bool {
        let (registry, watch) = (self.registry.clone(), self.watch.clone());
        let first = !matches!(*watch.ready.borrow(), Ready::Open);
        // The lease this poll is made under: if it lapses meanwhile, the append still goes and
        // fencing refuses it.
        let Some(value) = self.holding.as_ref().map(|h| h.value.clone()) else { return true };
        let shutdown = registry.shutdown().clone();
        let priority = priority(&watch, first, self.refreshing.take());
        // The lease is renewed while the upstream takes its time.
        let polled = {
            let polling = registry.poller().poll(&watch, schedule, priority);
            tokio::pin!(polling);
            loop {
                tokio::select! {
                    polled = &mut polling => break polled,
                    _ = tick.tick() => self.lease().await,
                    () = shutdown.cancelled() => return false,
                }
            }
        };
        let delay = match polled {
            Polled::Step(step, next) => {
                self.commit(&value, step, false).await;
                next
            }
            Polled::Opened(step, next) => {
                self.commit(&value, step, true).await;
                next
            }
            Polled::Refused(refusal) => {
                self.refuse(refusal);
                return false;
            }
            Polled::Revoked(status) => {
                let epoch = self.watch.state.lock().unwrap().epoch;
                let _ = self.log.end(&value, epoch, status).await;
                self.registry.revoke(&self.watch, status);
                return false;
            }
        };
        watch.state.lock().unwrap().interval = schedule.current();
        self.next_poll = Instant::now() + jittered(delay, watch.route.cfg.poll.jitter, fastrand::f64());
        true
    }

    /// Appends a poll's step to the log under the lease `value`, then applies it here. Refused
    /// (the lease passed to another replica): nothing is applied and this replica follows.
    /// Redis not answering: the step is dropped (the next poll finds the change again, since the
    /// representation held is still the old one). Redis no longer at the state the step was
    /// diffed from (the answer to an earlier append was lost, but the append was made): the
    /// step is dropped and this replica reads what Redis holds, so a change is never logged twice.
    async fn commit(&mut self, value: &str, step: Step, opens: bool) {
        let applied = {
            let st = self.watch.state.lock().unwrap();
            (st.epoch, st.seq)
        };
        let mut update = self.update(&step, false);
        let mut appended = self.log.append(value, applied, next_epoch(), self.history(), &update).await;
        if let Ok(Appended::StateNeeded) = appended {
            update = self.update(&step, true);
            appended = self.log.append(value, applied, next_epoch(), self.history(), &update).await;
        }
        match appended {
            Ok(Appended::Done { epoch, first, last }) => {
                let (local_epoch, local_seq) = {
                    let st = self.watch.state.lock().unwrap();
                    (st.epoch, st.seq)
                };
                if epoch == local_epoch && first == local_seq + 1 {
                    self.watch.apply(step);
                } else if epoch != local_epoch && first == 1 && update.body.is_some() {
                    // A new watch, or Redis had lost it: this step started a new epoch.
                    if !opens {
                        info!(route = %self.route(), replica = %self.cluster.replica, "watch state written anew in redis: new epoch");
                    }
                    let mut step = step;
                    let events: Vec<_> =
                        std::mem::take(&mut step.events).into_iter().zip(first..).map(|(e, seq)| (seq, e)).collect();
                    self.watch.reset(epoch, last, &events, step);
                } else {
                    // Redis is ahead of what this replica applied: read it from there.
                    self.reload().await;
                }
                if opens {
                    self.watch.ready.send_replace(Ready::Open);
                }
            }
            Ok(Appended::Fenced) => self.fenced(),
            Ok(Appended::Moved { epoch, seq }) => {
                debug!(route = %self.route(), epoch, seq, "poll result not stored: redis moved on since; reading it");
                self.catch_up(Why::Behind).await;
                let st = self.watch.state.lock().unwrap();
                if (st.epoch, st.seq) != (epoch, seq) {
                    warn!(route = %self.route(), "cannot read the watch's state in redis (see the errors before); its polls are not published until it can");
                }
            }
            Ok(Appended::StateNeeded) => {}
            Err(e) => debug!(route = %self.route(), error = %e, "poll result not stored"),
        }
    }

    fn fenced(&mut self) {
        warn!(route = %self.route(), replica = %self.cluster.replica, "poll result refused: the lease passed to another replica (fencing); following");
        self.cluster.metrics.fenced.with_label_values(&[self.route()]).inc();
        self.lost();
    }

    /// What a step writes to Redis; `full`: the whole state (Redis lost it).
    fn update(&self, step: &Step, full: bool) -> Update {
        let st = self.watch.state.lock().unwrap();
        let current = step.current.as_ref().or(if full { st.current.as_ref() } else { None });
        let mut update = Update {
            body: current.map(|r| (r.body.clone(), r.content_type.clone())),
            validators: current.map(|r| (r.etag.clone(), r.last_modified.clone())),
            failing: step.failing.clone(),
            invalid: step.invalid,
            last_poll: step.polled.or(st.last_poll).map(unix_ms),
            last_change: step.last_change.or(st.last_change).map(unix_ms),
            events: step
                .events
                .iter()
                .map(|e| Entry { seq: 0, kind: kind_byte(e.kind), name: e.name.clone(), data: e.data.clone() })
                .collect(),
        };
        if step.validators.is_some() {
            update.validators.clone_from(&step.validators);
        }
        if full {
            update.failing.get_or_insert_with(|| st.failing.clone());
            update.invalid.get_or_insert(st.invalid);
        }
        update
    }

    /// Reads what is new from the log.
    async fn catch_up(&mut self, why: Why) {
        let (epoch, seq) = {
            let st = self.watch.state.lock().unwrap();
            (st.epoch, st.seq)
        };
        if let Why::Notice { epoch: e, seq: s } = why {
            if e == epoch && s <= seq {
                return;
            }
        }
        let read = match self.log.read(Some(seq), self.history()).await {
            Ok(Some(read)) => read,
            Ok(None) | Err(_) => return,
        };
        let (meta, entries) = read;
        // The entries read end at the state's sequence; fewer than it is ahead by: some were
        // lost (trimmed, or not genuine), and the subscribers start over from a snapshot.
        if meta.epoch != epoch || meta.seq != seq + entries.len() as u64 {
            return self.reload().await;
        }
        if entries.is_empty() {
            return;
        }
        // Notices are read in order and each read takes everything up to date, so a notice
        // beyond the next sequence means the ones between were lost.
        let missed = match why {
            Why::Notice { epoch: e, seq: s } if e == epoch => s.saturating_sub(seq + 1),
            Why::Reconnected => entries.len() as u64,
            _ => 0,
        };
        if missed > 0 {
            self.cluster.metrics.gaps.inc_by(missed);
        }
        let mut step = self.step_from(&meta, entries.iter().any(|e| e.kind == b'c'));
        step.events = entries.iter().map(pending).collect();
        self.watch.apply(step);
        if !matches!(*self.watch.ready.borrow(), Ready::Open) {
            self.watch.ready.send_replace(Ready::Open);
        }
    }

    /// Starts over from what Redis holds.
    async fn reload(&mut self) {
        if let Ok(Some((meta, entries))) = self.log.read(None, self.history()).await {
            self.load(meta, &entries);
        }
    }

    fn load(&mut self, meta: Meta, entries: &[Entry]) {
        let events: Vec<_> = entries.iter().map(|e| (e.seq, pending(e))).collect();
        let step = self.step_from(&meta, true);
        self.watch.reset(meta.epoch, meta.seq, &events, step);
        if !matches!(*self.watch.ready.borrow(), Ready::Open) {
            self.watch.ready.send_replace(Ready::Open);
        }
    }

    /// The state fields of `meta` as a step (the representation only when `changed`).
    fn step_from(&self, meta: &Meta, changed: bool) -> Step {
        let mut step = Step::new(std::time::Instant::now());
        if changed {
            let mut repr = Representation::from_body(meta.body.clone(), &self.watch.route.cfg.ignore);
            repr.content_type.clone_from(&meta.content_type);
            step.current = Some(repr);
        }
        step.validators = Some((meta.etag.clone(), meta.last_modified.clone()));
        step.failing = Some(meta.failing.clone());
        step.invalid = Some(meta.invalid);
        step.polled = meta.last_poll.map(from_unix_ms);
        step.last_change = meta.last_change.map(from_unix_ms);
        step
    }

    /// The watch cannot open: its waiting subscribers get `refusal`, and the lease goes.
    fn refuse(&mut self, refusal: Refusal) {
        self.watch.ready.send_replace(Ready::Refused(refusal));
    }
}

/// Why a replica reads the log.
#[derive(Clone, Copy)]
enum Why {
    /// A notice: events up to `seq` of `epoch` were appended.
    Notice { epoch: u64, seq: u64 },
    /// The pub/sub connection is back: notices may have been lost meanwhile.
    Reconnected,
    /// The lease check found the log ahead of this replica.
    Behind,
}

fn kind_byte(kind: EventKind) -> u8 {
    match kind {
        EventKind::Status => b's',
        _ => b'c',
    }
}

fn pending(e: &Entry) -> Pending {
    let kind = if e.kind == b's' { EventKind::Status } else { EventKind::Change };
    Pending { kind, name: e.name.clone(), data: e.data.clone() }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
