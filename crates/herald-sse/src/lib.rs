//! Server-Sent Events sessions: one per subscriber, reading its watch's broadcast of pre-encoded
//! frames and writing them as a response body, with heartbeats and resync of subscribers that
//! fall behind. The `shutdown` goodbye comes through the same broadcast (the hub ends every
//! watch with it), so a session waits on nothing shared but its watch's channel.
//!
//! Nothing here copies an event: every frame is a clone of the `Bytes` the watch encoded once.
//! Per event a session does no more than receive it and hand it on: its heartbeat timer is armed
//! once and moved only when it fires (a frame since then pushes it back).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use herald_core::{encode_comment, EventKind};
use herald_poll::{Joined, Resync};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};

/// SSE metrics; registered on the registry the binary hands in.
#[derive(Clone)]
pub struct SseMetrics {
    subscribers: IntGaugeVec,
    sent: IntCounterVec,
    resyncs: IntCounterVec,
    delivery: HistogramVec,
}

impl SseMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = SseMetrics {
            subscribers: IntGaugeVec::new(Opts::new("herald_sse_subscribers", "Open SSE streams."), &["route"])?,
            sent: IntCounterVec::new(
                Opts::new("herald_sse_events_sent_total", "Events written to SSE streams."),
                &["route"],
            )?,
            resyncs: IntCounterVec::new(
                Opts::new(
                    "herald_sse_resyncs_total",
                    "Subscribers that fell more than sse.queue events behind and got a new snapshot.",
                ),
                &["route"],
            )?,
            delivery: HistogramVec::new(
                HistogramOpts::new(
                    "herald_event_delivery_seconds",
                    "From change detected to the event written to a subscriber.",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["route"],
            )?,
        };
        registry.register(Box::new(m.subscribers.clone()))?;
        registry.register(Box::new(m.sent.clone()))?;
        registry.register(Box::new(m.resyncs.clone()))?;
        registry.register(Box::new(m.delivery.clone()))?;
        Ok(m)
    }

    /// Creates a route's series at zero, so that alerts and dashboards see them before its
    /// first subscriber.
    pub fn init_route(&self, route: &str) {
        self.subscribers.with_label_values(&[route]);
        self.sent.with_label_values(&[route]);
        self.resyncs.with_label_values(&[route]);
        self.delivery.with_label_values(&[route]);
    }
}

#[derive(Clone)]
pub struct SseConfig {
    pub heartbeat: Duration,
    pub retry: Duration,
    pub max_subscribers: usize,
}

/// All SSE sessions of the process: the `max_subscribers` budget and what every session shares
/// (a clone shares them too).
#[derive(Clone)]
pub struct Sessions {
    cfg: SseConfig,
    metrics: SseMetrics,
    open: Arc<AtomicUsize>,
}

/// A place under `max_subscribers`, held for the life of a stream, or while a long poll is held
/// (a legacy poller waiting on the watch is a subscriber too, spec section 8).
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Sessions {
    pub fn new(cfg: SseConfig, metrics: SseMetrics) -> Self {
        Sessions { cfg, metrics, open: Arc::new(AtomicUsize::new(0)) }
    }

    pub fn retry(&self) -> Duration {
        self.cfg.retry
    }

    /// Takes a place for a new stream or a held long poll; `None` when `max_subscribers` are taken.
    pub fn reserve(&self) -> Option<Slot> {
        let max = self.cfg.max_subscribers;
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(self.open.clone()))
    }

    /// The body of one SSE response: `retry:`, the initial frames, then live events.
    pub fn stream(&self, joined: Joined, slot: Slot) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let route = joined.watch.route_name().to_string();
        let mut pending = VecDeque::with_capacity(joined.initial.len() + 1);
        pending.push_back(Bytes::from(format!("retry: {}\n\n", self.cfg.retry.as_millis())));
        pending.extend(joined.initial.iter().cloned());
        let subscribers = self.metrics.subscribers.with_label_values(&[&route]);
        subscribers.inc();
        let session = Session {
            sent: self.metrics.sent.with_label_values(&[&route]),
            resyncs: self.metrics.resyncs.with_label_values(&[&route]),
            delivery: self.metrics.delivery.with_label_values(&[&route]),
            subscribers,
            every: self.cfg.heartbeat,
            heartbeat: Box::pin(tokio::time::sleep(self.cfg.heartbeat)),
            last_frame: Instant::now(),
            pending,
            joined,
            done: false,
            _slot: slot,
        };
        futures_util::stream::unfold(session, |mut s| async move {
            let frame = s.next().await?;
            s.last_frame = Instant::now();
            s.sent.inc();
            Some((Ok(frame), s))
        })
    }
}

struct Session {
    joined: Joined,
    pending: VecDeque<Bytes>,
    /// `sse.heartbeat`: a comment is sent after this long without a frame.
    every: Duration,
    /// Fires at the earliest time a heartbeat may be due (boxed: a timer entry must not move).
    heartbeat: Pin<Box<Sleep>>,
    last_frame: Instant,
    done: bool,
    sent: IntCounter,
    resyncs: IntCounter,
    delivery: Histogram,
    subscribers: IntGauge,
    _slot: Slot,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.subscribers.dec();
    }
}

impl Session {
    /// The next frame to write, or `None` when the stream ends. Called only when hyper wants
    /// more: a subscriber that does not read is never written to, and falls behind instead.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                received = self.joined.rx.recv() => match received {
                    Ok(event) if event.kind == EventKind::Terminal => {
                        self.done = true;
                        return Some(event.frame);
                    }
                    // Already covered by the snapshot or history this stream started from.
                    Ok(event) if event.seq <= self.joined.last_seq && event.kind != EventKind::Reset => continue,
                    Ok(event) if event.kind != EventKind::Reset => {
                        self.joined.last_seq = event.seq;
                        self.delivery.observe(event.detected.elapsed().as_secs_f64());
                        return Some(event.frame);
                    }
                    // Fell `sse.queue` events behind, or the watch began a new epoch: a snapshot.
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        self.resyncs.inc();
                        return Some(match self.joined.watch.resync() {
                            Resync::Snapshot { frame, seq } => {
                                self.joined.last_seq = seq;
                                frame
                            }
                            Resync::Closed(frame) => {
                                self.done = true;
                                frame
                            }
                        });
                    }
                    Err(RecvError::Closed) => return None,
                },
                () = self.heartbeat.as_mut() => {
                    let (now, due) = (Instant::now(), self.last_frame + self.every);
                    if due <= now {
                        self.heartbeat.as_mut().reset(now + self.every);
                        return Some(encode_comment("heartbeat"));
                    }
                    self.heartbeat.as_mut().reset(due);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Sessions over a real hub whose upstream is a script, in paused time.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use futures_util::StreamExt;
    use herald_poll::{Answer, Credentials, Fetch, FetchFuture, Hub, HubConfig, PollMetrics, Request, WatchKey};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Answers each poll with the next body (then 304s).
    struct Script(Mutex<VecDeque<&'static str>>);

    impl Fetch for Script {
        fn fetch<'a>(&'a self, _: Request<'a>) -> FetchFuture<'a> {
            let next = self.0.lock().unwrap().pop_front();
            Box::pin(async move {
                Ok(match next {
                    Some(body) => Answer::body(body),
                    None => Answer::NotModified { max_age: None, etag: None, last_modified: None, link: None },
                })
            })
        }
    }

    /// A hub polling `/t` every second (queue `queue`), answering `bodies` in turn.
    fn hub(bodies: &[&'static str], queue: usize, shutdown: CancellationToken) -> Arc<Hub> {
        let yaml = "upstream: {url: 'http://127.0.0.1:1'}\nroutes: [{name: t, path: /t, poll: {interval: 1s, \
                    min_interval: 1s, adaptive: false, jitter: 0}}]\n";
        let cfg = herald_config::load("t.yaml", yaml, &|_| None).unwrap();
        let hub_cfg = HubConfig {
            routes: cfg.routes,
            queue,
            max_polls_per_second: 100.0,
            max_concurrency: 4,
            scope_key: [1; 32],
            limits: herald_config::Limits::default(),
            cluster: None,
        };
        let metrics = PollMetrics::new(&Registry::new()).unwrap();
        Hub::new(hub_cfg, Arc::new(Script(Mutex::new(bodies.iter().copied().collect()))), &metrics, shutdown)
    }

    fn sessions(heartbeat: Duration) -> Sessions {
        let cfg = SseConfig { heartbeat, retry: Duration::from_secs(3), max_subscribers: 10 };
        Sessions::new(cfg, SseMetrics::new(&Registry::new()).unwrap())
    }

    async fn open(
        hub: &Arc<Hub>,
        sessions: &Sessions,
    ) -> Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>> {
        let key = WatchKey { route: 0, target: "/t".into(), scope: herald_core::Scope::Everybody };
        let joined = hub.subscribe(key, Credentials::default(), None).await.unwrap();
        Box::pin(sessions.stream(joined, sessions.reserve().unwrap()))
    }

    async fn next(s: &mut Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>) -> String {
        let frame = s.next().await.expect("a frame").unwrap();
        String::from_utf8(frame.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_after_silence_and_a_frame_pushes_them_back() {
        let hub = hub(&["[1]", "[1]", "[1]", "[2]"], 16, CancellationToken::new());
        let sessions = sessions(Duration::from_millis(2500));
        let mut s = open(&hub, &sessions).await;
        assert_eq!(next(&mut s).await, "retry: 3000\n\n");
        assert!(next(&mut s).await.starts_with("event: snapshot\n"));
        let start = Instant::now();
        assert_eq!(next(&mut s).await, ": heartbeat\n\n");
        assert_eq!(start.elapsed(), Duration::from_millis(2500), "after sse.heartbeat of silence");
        // The change at 3s comes 0.5s after that heartbeat; the next heartbeat is 2.5s after it.
        assert!(next(&mut s).await.starts_with("event: change\n"));
        assert_eq!(start.elapsed(), Duration::from_millis(3000));
        assert_eq!(next(&mut s).await, ": heartbeat\n\n");
        assert_eq!(start.elapsed(), Duration::from_millis(5500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_falls_behind_gets_one_snapshot_of_now() {
        let hub = hub(&["[0]", "[1]", "[2]", "[3]", "[4]"], 2, CancellationToken::new());
        let sessions = sessions(Duration::from_secs(60));
        let mut s = open(&hub, &sessions).await;
        assert_eq!(next(&mut s).await, "retry: 3000\n\n");
        assert!(next(&mut s).await.ends_with("data: [0]\n\n"));
        // Four changes while it does not read: more than the queue of two.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let resync = next(&mut s).await;
        assert!(resync.starts_with("event: snapshot\nid: ") && resync.ends_with("-4\ndata: [4]\n\n"), "{resync}");
        assert_eq!(sessions.metrics.resyncs.with_label_values(&["t"]).get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_says_goodbye_and_ends_the_stream() {
        let shutdown = CancellationToken::new();
        let hub = hub(&["[1]"], 16, shutdown.clone());
        let sessions = sessions(Duration::from_secs(60));
        let mut s = open(&hub, &sessions).await;
        assert_eq!(next(&mut s).await, "retry: 3000\n\n");
        assert!(next(&mut s).await.starts_with("event: snapshot\n"));
        shutdown.cancel();
        assert_eq!(next(&mut s).await, "event: error\ndata: {\"reason\":\"shutdown\"}\n\n");
        assert!(s.next().await.is_none(), "the stream ends");
        drop(s);
        assert_eq!(sessions.open.load(Ordering::Acquire), 0, "its place under max_subscribers is free again");
    }
}
