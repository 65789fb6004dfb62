//! The fast lane's idle upstream connections: one pool per upstream (its [`crate::Proxy`]'s),
//! for client connections that come and go while the upstream's stay open.

use std::io;
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Idle upstream connections kept for the next client connection.
const IDLE_MAX: usize = 64;
/// An idle upstream connection older than this is dropped rather than reused (the upstream has
/// likely closed it: most servers keep idle connections 5 to 75 seconds).
const IDLE_FOR: Duration = Duration::from_secs(4);

pub(crate) struct Pool {
    /// Upstream connections whose client connection ended, with when they went idle.
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    /// The reaper, started with the first connection kept.
    reaper: Once,
    /// Stops the reaper and closes what is idle.
    shutdown: CancellationToken,
}

impl Pool {
    pub(crate) fn new(shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Pool { idle: Mutex::new(Vec::new()), reaper: Once::new(), shutdown })
    }

    /// An idle upstream connection another client connection left, still open.
    pub(crate) fn take(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap();
        while let Some((up, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR && alive(&up) {
                return Some(up);
            }
        }
        None
    }

    /// Keeps an upstream connection for the next client connection. Those not taken within
    /// `IDLE_FOR` are closed by the reaper; on shutdown, all of them.
    pub(crate) fn keep(self: &Arc<Self>, up: TcpStream) {
        if self.shutdown.is_cancelled() {
            return;
        }
        self.reaper.call_once(|| {
            tokio::spawn(reap(Arc::downgrade(self), self.shutdown.clone()));
        });
        let mut idle = self.idle.lock().unwrap();
        idle.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if idle.len() < IDLE_MAX {
            idle.push((up, Instant::now()));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// Closes idle connections past `IDLE_FOR`, until shutdown (then all of them) or until the pool
/// is gone.
async fn reap(pool: Weak<Pool>, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(IDLE_FOR) => false,
            () = shutdown.cancelled() => true,
        };
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle.lock().unwrap();
        idle.retain(|(_, since)| !stopping && since.elapsed() < IDLE_FOR);
        if stopping {
            return;
        }
    }
}

/// Whether an idle upstream connection is still open: it has sent nothing (not even its close).
pub(crate) fn alive(up: &TcpStream) -> bool {
    matches!(up.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connection(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn kept_connections_are_reused_while_open_and_closed_on_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let pool = Pool::new(shutdown.clone());
        let (open, _open_peer) = connection(&listener).await;
        let (closed, closed_peer) = connection(&listener).await;
        drop(closed_peer);
        closed.readable().await.unwrap();
        pool.keep(open);
        pool.keep(closed);
        // The closed one (kept last, taken first) is skipped.
        assert!(pool.take().is_some());
        assert!(pool.take().is_none());

        let (kept, mut peer) = connection(&listener).await;
        pool.keep(kept);
        shutdown.cancel();
        // The reaper closes it: the upstream side reads its end.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut peer, &mut byte));
        assert_eq!(read.await.expect("closed on shutdown").unwrap(), 0);
        assert_eq!(pool.len(), 0);
        let (late, _late_peer) = connection(&listener).await;
        pool.keep(late);
        assert_eq!(pool.len(), 0, "nothing is kept after shutdown");
    }
}
