//! A TCP load balancer for tests: each accepted connection goes to the next backend in turn,
//! skipping backends that refuse it. It knows nothing of HTTP (no health checks, no retries of
//! requests), like the simplest balancer herald's cluster mode must work behind: a client whose
//! connection lands on a stopped replica finds out by itself and reconnects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// Round-robin over a fixed list of backends (a restarted backend comes back on its own port).
/// Serves until the runtime ends; clones share the balancer.
#[derive(Clone)]
pub struct Balancer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    /// Connections that found every backend refusing (closed at once).
    turned_away: AtomicU64,
}

impl Balancer {
    /// Listens on a free loopback port in front of `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { backends, next: AtomicUsize::new(0), turned_away: AtomicU64::new(0) });
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let shared = accepting.clone();
                tokio::spawn(async move {
                    let Some(backend) = shared.connect().await else {
                        shared.turned_away.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let (mut client, mut backend) = (client, backend);
                    let _ = client.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                });
            }
        });
        Ok(Balancer { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections closed at once because every backend refused them.
    pub fn turned_away(&self) -> u64 {
        self.shared.turned_away.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// The next backend that accepts, trying each at most once.
    async fn connect(&self) -> Option<TcpStream> {
        let n = self.backends.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(s) = TcpStream::connect(self.backends[(first + i) % n]).await {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A backend that writes its name to every connection, then closes it.
    async fn named(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    async fn which(lb: &Balancer) -> String {
        let mut s = TcpStream::connect(lb.addr()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn connections_take_turns_and_skip_refusing_backends() {
        let down = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let lb = Balancer::start(vec![named("a").await, down, named("b").await]).await.unwrap();
        let seen: Vec<String> = [which(&lb).await, which(&lb).await, which(&lb).await, which(&lb).await].into();
        // a, (down → b), b, a: the refusing backend's turn passes to the next one.
        assert_eq!(seen, ["a", "b", "b", "a"]);
        assert_eq!(lb.turned_away(), 0);
    }

    #[tokio::test]
    async fn with_every_backend_down_the_client_is_closed() {
        let down = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let lb = Balancer::start(vec![down]).await.unwrap();
        assert_eq!(which(&lb).await, "");
        assert_eq!(lb.turned_away(), 1);
    }
}
