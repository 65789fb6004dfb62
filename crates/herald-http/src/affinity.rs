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
//! Requests outside such a task (HTTP/2 streams, which hyper runs on tasks of their own),
//! upgrades and https upstreams use the shared pool.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

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
#[derive(Default)]
struct Slot {
    sender: RefCell<Option<Sender>>,
    driver: RefCell<Option<Driver>>,
    /// The client connection task's waker, to poll a newly attached upstream connection.
    waker: RefCell<Option<Waker>>,
}

/// Upstream connections whose client connection ended, with when they went idle.
static IDLE: Mutex<Vec<(Sender, Driver, Instant)>> = Mutex::new(Vec::new());

/// Runs a client connection's future with a slot for its upstream connection, polling both.
pub(crate) async fn serve<F: Future>(conn: F) -> F::Output {
    CONNECTION
        .scope(Slot::default(), async move {
            tokio::pin!(conn);
            let out = std::future::poll_fn(|cx| {
                CONNECTION.with(|slot| slot.drive(cx));
                let polled = conn.as_mut().poll(cx);
                // What the request side just queued is written now, not on the next wake-up.
                CONNECTION.with(|slot| slot.drive(cx));
                polled
            })
            .await;
            CONNECTION.with(Slot::release);
            out
        })
        .await
}

impl Slot {
    fn drive(&self, cx: &mut Context<'_>) {
        self.waker.replace(Some(cx.waker().clone()));
        let mut driver = self.driver.borrow_mut();
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

    fn attach(&self, sender: Sender, driver: Driver) {
        self.sender.replace(Some(sender));
        self.driver.replace(Some(driver));
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
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
        if let Some(w) = slot.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    });
    Ok(sender)
}
