//! A TCP proxy that makes a healthy link look like a bad network, on demand: added latency,
//! "loss" (a chunk held back for 200 ms – 1 s, which is how a lost segment looks to the
//! application once TCP has retransmitted it), a cut of every open connection, and a blackhole
//! (connections are accepted, nothing is forwarded until it ends). The fault harness puts one in
//! front of each Redis server so herald's Redis links can be degraded without touching Redis.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The fault in force on every connection of a [`FaultyProxy`], in both directions. What is in
/// force when a chunk arrives decides what happens to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NetFault {
    /// Each chunk waits `base` plus up to `jitter` (uniformly chosen) before it is forwarded.
    Latency { base: Duration, jitter: Duration },
    /// Each chunk, with this probability, is held back 200 ms – 1 s; the chunks behind it wait
    /// too (TCP delivers in order).
    Loss { probability: f64 },
    /// Nothing is forwarded and no new connection reaches the target until the fault changes;
    /// what was sent meanwhile waits in the sockets' buffers, as behind a partition that heals.
    Blackhole,
}

/// A TCP proxy from a loopback port to `target`, with switchable faults. Serves until the
/// runtime ends; clones share the proxy.
#[derive(Clone)]
pub struct FaultyProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: SocketAddr,
    fault: watch::Sender<Option<NetFault>>,
    /// Bumped by [`FaultyProxy::cut`]; every connection open at that moment ends.
    cuts: watch::Sender<u64>,
    open: AtomicUsize,
    rng: Mutex<fastrand::Rng>,
}

impl FaultyProxy {
    /// Listens on a free loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultyProxy> {
        FaultyProxy::bind("127.0.0.1:0".parse().expect("a valid address"), target).await
    }

    /// Listens on `listen`, forwarding to `target`.
    pub async fn bind(listen: SocketAddr, target: SocketAddr) -> std::io::Result<FaultyProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            fault: watch::Sender::new(None),
            cuts: watch::Sender::new(0),
            open: AtomicUsize::new(0),
            rng: Mutex::new(fastrand::Rng::with_seed(u64::from(addr.port()))),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(connection(accepting.clone(), client));
            }
        });
        Ok(FaultyProxy { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Puts `fault` in force (`None`: a healthy link again).
    pub fn set(&self, fault: Option<NetFault>) {
        self.shared.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Option<NetFault> {
        *self.shared.fault.borrow()
    }

    /// Closes every connection open now (both sides see the connection end); new ones are
    /// accepted as before.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }
}

/// Counts a connection while it is open.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(shared: Arc<Shared>, client: TcpStream) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = Open(shared.clone());
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let connect = async {
        passable(&mut shared.fault.subscribe()).await;
        TcpStream::connect(shared.target).await
    };
    let server = tokio::select! {
        server = connect => server,
        _ = cuts.changed() => return,
    };
    // The target refused: so does the proxy (the client sees its connection close).
    let Ok(server) = server else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (an end of stream, an error) ends the connection: Redis and HTTP
    // clients do not half-close.
    tokio::select! {
        _ = pump(&shared, client_read, server_write) => {}
        _ = pump(&shared, server_read, client_write) => {}
        _ = cuts.changed() => {}
    }
}

/// Waits while a blackhole is in force.
async fn passable(fault: &mut watch::Receiver<Option<NetFault>>) {
    while *fault.borrow_and_update() == Some(NetFault::Blackhole) {
        if fault.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction chunk by chunk, each chunk meeting the fault in force when it arrives.
async fn pump(shared: &Shared, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) -> std::io::Result<()> {
    let mut fault = shared.fault.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        passable(&mut fault).await;
        let hold = match *fault.borrow() {
            Some(NetFault::Latency { base, jitter }) => Some(base + jitter.mul_f64(shared.rng.lock().unwrap().f64())),
            Some(NetFault::Loss { probability }) => {
                let mut rng = shared.rng.lock().unwrap();
                (rng.f64() < probability).then(|| Duration::from_millis(rng.u64(200..=1000)))
            }
            Some(NetFault::Blackhole) | None => None,
        };
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads its echo; how long the round trip took.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let started = Instant::now();
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
        started.elapsed()
    }

    #[tokio::test]
    async fn forwards_both_ways_when_healthy() {
        let proxy = FaultyProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut s, b"ping").await;
        assert_eq!(proxy.open_connections(), 1);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let proxy = FaultyProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set(Some(NetFault::Latency { base: Duration::from_millis(100), jitter: Duration::from_millis(20) }));
        // Once on the way there, once on the way back.
        assert!(round_trip(&mut s, b"slow").await >= Duration::from_millis(200));
        proxy.set(None);
        assert_eq!(proxy.fault(), None);
        round_trip(&mut s, b"fast again").await;
    }

    #[tokio::test]
    async fn loss_holds_chunks_back_but_keeps_them_in_order() {
        let proxy = FaultyProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set(Some(NetFault::Loss { probability: 1.0 }));
        // Every chunk is held at least 200 ms each way, and nothing is lost or reordered.
        assert!(round_trip(&mut s, b"lossy").await >= Duration::from_millis(400));
        proxy.set(Some(NetFault::Loss { probability: 0.0 }));
        round_trip(&mut s, b"clean").await;
    }

    #[tokio::test]
    async fn cut_closes_open_connections_and_accepts_new_ones() {
        let proxy = FaultyProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut s, b"before").await;
        proxy.cut();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0, "the cut connection ends");
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut again, b"after").await;
    }

    #[tokio::test]
    async fn blackhole_forwards_nothing_until_it_ends() {
        let proxy = FaultyProxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"warm").await;
        proxy.set(Some(NetFault::Blackhole));
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"held").await.unwrap();
        new.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        for s in [&mut open, &mut new] {
            let quiet = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
            assert!(quiet.is_err(), "nothing comes back through a blackhole");
        }
        proxy.set(None);
        for s in [&mut open, &mut new] {
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"held", "what waited is delivered once the blackhole ends");
        }
    }

    #[tokio::test]
    async fn a_refused_target_closes_the_client() {
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let proxy = FaultyProxy::start(gone).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    }
}
