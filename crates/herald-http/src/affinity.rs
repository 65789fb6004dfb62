//! Upstream affinity for HTTP/1 pass-through: the task that serves a client connection also
//! drives the upstream connection its requests go over.
//!
//! With a shared pool, every proxied request crosses three tasks (the client connection, the
//! pool's connection task, and back) and each crossing is a wake-up, often on the other core.
//! Here the upstream connection's future is polled by the client connection's own task, so a
//! request and its response cost no task switch at all. An HTTP/1 client connection carries one
//! request at a time, so one upstream connection serves it. When the client leaves, its upstream
//! connection goes, unpolled, to a small idle list where the next client connection adopts it;
//! an adopted connection that the upstream closed meanwhile gives the request back unsent and a
//! new connection is made.
//!
//! The task polls each of its two connections only when that one was woken (each gets a waker
//! of its own that marks it): a wake-up for the upstream's answer does not run the client
//! connection's state machine, and the other way round.
//!
//! Requests outside such a task (HTTP/2 streams, which hyper runs on tasks of their own),
//! upgrades and https upstreams use the shared pool.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::proxy::Progress;
use crate::BoxError;

type Sender = SendRequest<Progress<Incoming>>;
type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Idle upstream connections kept for adoption.
const IDLE_MAX: usize = 64;
/// An idle connection older than this is dropped rather than adopted (the upstream has likely
/// closed it: most servers keep idle connections 5 to 75 seconds).
const IDLE_FOR: Duration = Duration::from_secs(4);

tokio::task_local! {
    static CONNECTION: Slot;
}

/// The upstream connection of one client connection: its sender (absent while a request is
/// being handed to it) and the future that drives it.
struct Slot {
    sender: RefCell<Option<Sender>>,
    driver: RefCell<Option<Driver>>,
    /// The waker the driver is polled with.
    upstream: Waker,
}

/// Which of a task's two connections were woken since they were last polled.
struct Wakeups {
    client: AtomicBool,
    upstream: AtomicBool,
    /// The task is polling its connections: a wake-up meanwhile is seen by its loop and needs
    /// no new schedule.
    polling: AtomicBool,
    task: AtomicWaker,
}

/// The waker one connection is polled with: marks it, then wakes the task unless it is polling.
struct Half {
    wakeups: Arc<Wakeups>,
    upstream: bool,
}

impl Wake for Half {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let w = &self.wakeups;
        if self.upstream { &w.upstream } else { &w.client }.store(true, SeqCst);
        if !w.polling.load(SeqCst) {
            w.task.wake();
        }
    }
}

/// Rounds of polling one task wake-up runs at most before it yields.
const ROUNDS: usize = 4;

/// Upstream connections whose client connection ended, with when they went idle.
static IDLE: Mutex<Vec<(Sender, Driver, Instant)>> = Mutex::new(Vec::new());

/// Runs a client connection's future with a slot for its upstream connection, polling each
/// when it was woken, until neither was.
pub(crate) async fn serve<F: Future>(conn: F) -> F::Output {
    let wakeups = Arc::new(Wakeups {
        client: AtomicBool::new(true),
        upstream: AtomicBool::new(false),
        polling: AtomicBool::new(false),
        task: AtomicWaker::new(),
    });
    let half = |upstream| Waker::from(Arc::new(Half { wakeups: wakeups.clone(), upstream }));
    let (client, upstream) = (half(false), half(true));
    let slot = Slot { sender: RefCell::default(), driver: RefCell::default(), upstream };
    CONNECTION
        .scope(slot, async move {
            tokio::pin!(conn);
            let out = std::future::poll_fn(|cx| {
                wakeups.task.register(cx.waker());
                for _ in 0..ROUNDS {
                    wakeups.polling.store(true, SeqCst);
                    if wakeups.upstream.swap(false, SeqCst) {
                        CONNECTION.with(Slot::drive);
                    }
                    if wakeups.client.swap(false, SeqCst) {
                        if let Poll::Ready(out) = conn.as_mut().poll(&mut Context::from_waker(&client)) {
                            wakeups.polling.store(false, SeqCst);
                            return Poll::Ready(out);
                        }
                    }
                    wakeups.polling.store(false, SeqCst);
                    // A wake-up that came while polling (this thread's own, such as a request
                    // just queued for the upstream, or another's) is taken now.
                    if !wakeups.upstream.load(SeqCst) && !wakeups.client.load(SeqCst) {
                        return Poll::Pending;
                    }
                }
                // Still woken: yield to the scheduler rather than spin (a connection out of
                // tokio's cooperative budget wakes itself until the task has yielded).
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await;
            CONNECTION.with(Slot::release);
            out
        })
        .await
}

impl Slot {
    fn drive(&self) {
        let mut driver = self.driver.borrow_mut();
        let cx = &mut Context::from_waker(&self.upstream);
        if driver.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
            // The upstream closed the connection (or it failed): forget it.
            *driver = None;
            self.sender.replace(None);
        }
    }

    /// Hands a still-open, idle upstream connection to the idle list.
    fn release(&self) {
        let (sender, driver) = (self.sender.take(), self.driver.take());
        if let (Some(sender), Some(driver)) = (sender, driver) {
            if sender.is_ready() {
                let mut idle = IDLE.lock().unwrap();
                idle.retain(|(_, _, since)| since.elapsed() < IDLE_FOR);
                if idle.len() < IDLE_MAX {
                    idle.push((sender, driver, Instant::now()));
                }
            }
        }
    }

    /// Takes `driver` on; it is polled (with this task's waker) before the task sleeps again.
    fn attach(&self, sender: Sender, driver: Driver) {
        self.sender.replace(Some(sender));
        self.driver.replace(Some(driver));
        self.upstream.wake_by_ref();
    }
}

/// Whether this task serves a client connection (inside [`serve`], not an HTTP/2 stream task).
pub(crate) fn active() -> bool {
    CONNECTION.try_with(|_| ()).is_ok()
}

/// Sends `req` (in origin form, with its Host) over this client connection's upstream
/// connection, made or adopted as needed. Only when [`active`]. `authority` is `host[:port]`.
pub(crate) async fn send(
    authority: &str,
    mut req: Request<Progress<Incoming>>,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, BoxError> {
    let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    // The current or an adopted connection first; if it turns out closed, a new one.
    for fresh in [false, true] {
        let sender = if fresh { None } else { CONNECTION.with(Slot::take) };
        let mut sender = match sender {
            Some(sender) => sender,
            None => connect(&addr, connect_timeout).await?,
        };
        if sender.ready().await.is_err() && !fresh {
            continue;
        }
        let response = sender.try_send_request(req);
        CONNECTION.with(|slot| slot.sender.replace(Some(sender)));
        match response.await {
            Ok(resp) => return Ok(resp),
            Err(mut e) => match e.take_message() {
                // Not sent: the connection was closing. Once more, on a new one.
                Some(back) if !fresh => req = back,
                _ => return Err(e.into_error().into()),
            },
        }
    }
    unreachable!("the second round returns")
}

impl Slot {
    /// This connection's upstream sender, or an adopted idle one.
    fn take(&self) -> Option<Sender> {
        if self.driver.borrow().is_none() {
            let mut idle = IDLE.lock().unwrap();
            while let Some((sender, driver, since)) = idle.pop() {
                if since.elapsed() < IDLE_FOR {
                    drop(idle);
                    self.attach(sender, driver);
                    break;
                }
            }
        }
        self.sender.take()
    }
}

async fn connect(addr: &str, timeout: Duration) -> Result<Sender, BoxError> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connecting to the upstream timed out")??;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let driver: Driver = Box::pin(async move {
        let _ = conn.await;
    });
    // The slot keeps the driver; the caller holds the sender until its request is handed over.
    CONNECTION.with(|slot| {
        slot.driver.replace(Some(driver));
        slot.upstream.wake_by_ref();
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A connection that is done on its third poll and otherwise keeps the waker it was given.
    fn counted(polls: Arc<AtomicUsize>, waker: Arc<Mutex<Option<Waker>>>) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            if polls.fetch_add(1, SeqCst) == 2 {
                return Poll::Ready(());
            }
            *waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_client_connection_is_polled_once_per_wake_up_and_never_missed() {
        let (polls, waker) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(None::<Waker>)));
        let task = tokio::spawn(serve(counted(polls.clone(), waker.clone())));
        settle().await;
        assert_eq!(polls.load(SeqCst), 1);

        // Its own waker, from another thread, polls it exactly once more.
        let w = waker.lock().unwrap().take().unwrap();
        std::thread::spawn(move || w.wake()).join().unwrap();
        settle().await;
        assert_eq!(polls.load(SeqCst), 2);

        waker.lock().unwrap().take().unwrap().wake();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("finishes").unwrap();
        assert_eq!(polls.load(SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_that_keeps_waking_itself_lets_other_tasks_run() {
        // It waits for another task on this (single) thread, waking itself meanwhile: polling it
        // again at once, without ever yielding, would spin forever.
        let other_ran = Arc::new(AtomicBool::new(false));
        let conn = std::future::poll_fn({
            let other_ran = other_ran.clone();
            move |cx| {
                if other_ran.load(SeqCst) {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        });
        let served = tokio::spawn(serve(conn));
        tokio::spawn(async move { other_ran.store(true, SeqCst) });
        tokio::time::timeout(Duration::from_secs(5), served).await.expect("the task yields and finishes").unwrap();
    }

    /// Counts the task's wake-ups.
    struct TaskWakes(AtomicUsize);

    impl Wake for TaskWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_half_marks_itself_and_wakes_the_task_only_when_it_is_not_polling() {
        let wakes = Arc::new(TaskWakes(AtomicUsize::new(0)));
        let wakeups = Arc::new(Wakeups {
            client: AtomicBool::new(false),
            upstream: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        wakeups.task.register(&Waker::from(wakes.clone()));
        let upstream = Waker::from(Arc::new(Half { wakeups: wakeups.clone(), upstream: true }));

        upstream.wake_by_ref();
        assert!(wakeups.upstream.load(SeqCst) && !wakeups.client.load(SeqCst));
        assert_eq!(wakes.0.load(SeqCst), 1);

        // While the task polls, its loop sees the mark: no new schedule.
        wakeups.task.register(&Waker::from(wakes.clone()));
        wakeups.polling.store(true, SeqCst);
        wakeups.upstream.store(false, SeqCst);
        upstream.wake_by_ref();
        assert!(wakeups.upstream.load(SeqCst));
        assert_eq!(wakes.0.load(SeqCst), 1);
    }
}
