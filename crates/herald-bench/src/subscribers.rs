//! The load generator's SSE subscribers: N connections to one stream, each recording when every
//! change marker (`chg000001`…) arrives. They run in this process while N fits its file
//! descriptors, else split over child processes (`herald-bench subscribers`), which report back
//! on their stdout. Times are nanoseconds of the system clock, so that they compare across
//! processes on this machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

const MARKER: &[u8] = b"chg";
const MARKER_LEN: usize = 3 + 6;

/// A receipt: change number, when it arrived (nanoseconds since the Unix epoch).
pub type Receipt = (usize, u64);

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Subscribers one process opens at most; beyond, the load is split over child processes
/// (one process may hold about 20,000 file descriptors here).
pub const PER_PROCESS: usize = 15_000;

/// How far the subscriptions got.
#[derive(Default)]
pub struct Counts {
    /// Answered with a 200 and a stream.
    pub ready: AtomicUsize,
    /// Refused, or failed to connect.
    pub failed: AtomicUsize,
    /// Attempts refused with a 5xx and made again.
    pub retried: AtomicUsize,
}

impl Counts {
    fn settled(&self) -> usize {
        self.ready.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Running subscribers, wherever they run.
pub struct Subscribers {
    pub counts: Arc<Counts>,
    stop: tokio::sync::watch::Sender<bool>,
    groups: Vec<JoinHandle<Vec<Receipt>>>,
}

impl Subscribers {
    /// Opens `n` subscriptions to `path` at `addr`; in child processes running `bin` when `n` is
    /// over `per_process`.
    pub async fn start(
        addr: SocketAddr,
        path: &str,
        n: usize,
        per_process: usize,
        bin: &std::path::Path,
    ) -> anyhow::Result<Subscribers> {
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let path: &'static str = path.to_owned().leak();
        let mut groups = Vec::new();
        if n <= per_process {
            groups = subscribe(addr, path, 0..n, counts.clone(), stopped).await;
        } else {
            let processes = n.div_ceil(per_process);
            for p in 0..processes {
                let range = (n * p / processes)..(n * (p + 1) / processes);
                groups.push(child(bin, addr, path, range, counts.clone(), stopped.clone())?);
            }
        }
        Ok(Subscribers { counts, stop, groups })
    }

    /// Closes every subscription; returns every receipt.
    pub async fn finish(self) -> Vec<Receipt> {
        self.stop.send_replace(true);
        let mut all = Vec::new();
        for g in self.groups {
            all.extend(g.await.unwrap_or_default());
        }
        all
    }
}

/// A child process holding the subscribers `range`: its `ready R F T` lines update `counts`;
/// closing its stdin stops it, and it answers with one line of receipts.
fn child(
    bin: &std::path::Path,
    addr: SocketAddr,
    path: &str,
    range: std::ops::Range<usize>,
    counts: Arc<Counts>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Vec<Receipt>>> {
    let mut child = tokio::process::Command::new(bin)
        .args(["subscribers", "--addr", &addr.to_string(), "--path", path])
        .args(["--first", &range.start.to_string(), "--count", &range.len().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    Ok(tokio::spawn(async move {
        // The child's counts so far: ready, failed, retried.
        let mut seen = [0; 3];
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line,
                _ = stop.wait_for(|s| *s), if stdin.is_some() => {
                    stdin = None;
                    continue;
                }
            };
            let Ok(Some(line)) = line else { return Vec::new() };
            let mut fields = line.split(' ');
            if fields.next() == Some("ready") {
                for (counter, seen) in [&counts.ready, &counts.failed, &counts.retried].into_iter().zip(&mut seen) {
                    let now = fields.next().and_then(|n| n.parse().ok()).unwrap_or(*seen);
                    counter.fetch_add(now - *seen, Ordering::Relaxed);
                    *seen = now;
                }
            } else if let Some(json) = line.strip_prefix("receipts ") {
                let _ = child.wait().await;
                return serde_json::from_str(json).unwrap_or_default();
            }
        }
    }))
}

/// `herald-bench subscribers`: the child side of [`Subscribers`].
#[derive(clap::Args, Clone)]
pub struct ChildArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    path: String,
    /// Index of the first subscriber (picks its source addresses).
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
}

pub async fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let path: &'static str = args.path.leak();
    let tasks = subscribe(args.addr, path, args.first..args.first + args.count, counts.clone(), stopped).await;
    let mut stdin = tokio::io::stdin();
    let mut out = tokio::io::stdout();
    let mut sink = [0u8; 64];
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let [ready, failed, retried] =
                    [&counts.ready, &counts.failed, &counts.retried].map(|c| c.load(Ordering::Relaxed));
                out.write_all(format!("ready {ready} {failed} {retried}\n").as_bytes()).await?;
                out.flush().await?;
            }
            n = stdin.read(&mut sink) => if n.unwrap_or(0) == 0 { break },
        }
    }
    stop.send_replace(true);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    out.write_all(format!("receipts {}\n", serde_json::to_string(&all)?).as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

/// Subscriptions opened at once: the next batch waits until the one before is answered, so that
/// a server slower to accept than the load generator is to connect is not overrun.
const BATCH: usize = 500;

/// Opens the subscriptions numbered `range`, spreading source addresses over 127.0.0.0/8 so that
/// no one address runs out of ephemeral ports. Returns their tasks.
pub(crate) async fn subscribe(
    addr: SocketAddr,
    path: &'static str,
    range: std::ops::Range<usize>,
    counts: Arc<Counts>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<JoinHandle<Vec<Receipt>>> {
    let mut tasks = Vec::with_capacity(range.len());
    for (opened, i) in range.enumerate() {
        let src = Ipv4Addr::new(127, 1 + (i / 62_500) as u8, ((i / 250) % 250) as u8 + 1, (i % 250) as u8 + 1);
        let (mine, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let got = subscriber(addr, src, path, &mine, stop).await;
            got.unwrap_or_else(|e| {
                if mine.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("\na subscription failed (the first; more are counted): {e}");
                }
                Vec::new()
            })
        }));
        if opened % BATCH == BATCH - 1 {
            let waited = Instant::now();
            while counts.settled() + BATCH <= opened && waited.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    tasks
}

/// Attempts at a stream the server refuses with a 5xx, a second apart (as a client that
/// reconnects would; Pushpin refuses some under a burst of connections).
const ATTEMPTS: usize = 5;

/// One SSE subscriber: records when each marker arrives, until the server closes or `stop`.
async fn subscriber(
    addr: SocketAddr,
    src: Ipv4Addr,
    path: &str,
    counts: &Counts,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Vec<Receipt>> {
    let mut buf = vec![0u8; 16 << 10];
    let mut attempt = 1;
    let (mut s, mut n) = loop {
        let (s, n) = open(addr, src, path, &mut buf).await?;
        if buf.starts_with(b"HTTP/1.1 200 ") || buf.starts_with(b"HTTP/1.0 200 ") {
            break (s, n);
        }
        if attempt == ATTEMPTS || !buf.starts_with(b"HTTP/1.1 5") {
            let answer = String::from_utf8_lossy(&buf[..n.min(600)]).into_owned();
            return Err(std::io::Error::other(format!("the stream was refused: {answer}")));
        }
        counts.retried.fetch_add(1, Ordering::Relaxed);
        attempt += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    counts.ready.fetch_add(1, Ordering::Relaxed);
    let mut got: Vec<Receipt> = Vec::new();
    // Bytes kept from the previous read, so a marker split across reads is still found.
    let mut keep = 0;
    loop {
        if n == 0 {
            return Ok(got);
        }
        let at = now_ns();
        let end = keep + n;
        let mut i = 0;
        while let Some(pos) = find(&buf[i..end], MARKER) {
            let start = i + pos;
            if start + MARKER_LEN > end {
                break;
            }
            if let Some(k) = std::str::from_utf8(&buf[start + 3..start + MARKER_LEN]).ok().and_then(|d| d.parse().ok())
            {
                if !got.iter().any(|(seen, _)| *seen == k) {
                    got.push((k, at));
                }
            }
            i = start + MARKER_LEN;
        }
        keep = (end - i).min(MARKER_LEN - 1);
        buf.copy_within(end - keep..end, 0);
        n = tokio::select! {
            n = s.read(&mut buf[keep..]) => n?,
            _ = stop.wait_for(|stop| *stop) => 0,
        };
    }
}

/// Connects from `src`, asks for the stream, and reads the answer's first bytes into `buf`.
async fn open(addr: SocketAddr, src: Ipv4Addr, path: &str, buf: &mut [u8]) -> std::io::Result<(TcpStream, usize)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let mut s = socket.connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n").as_bytes()).await?;
    let n = s.read(buf).await?;
    Ok((s, n))
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
