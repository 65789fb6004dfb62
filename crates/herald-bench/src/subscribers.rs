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

/// How subscribers reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    /// HTTP/1.1 over TCP: one connection per subscriber.
    #[default]
    Plain,
    /// HTTP/1.1 over TLS: one connection per subscriber.
    Tls,
    /// HTTP/2 over TLS, this many streams (subscribers) per connection.
    H2(usize),
}

impl Transport {
    /// `plain`, `tls`, or `h2:STREAMS_PER_CONNECTION`.
    pub fn parse(s: &str) -> Result<Transport, String> {
        match s.split_once(':') {
            None if s == "plain" => Ok(Transport::Plain),
            None if s == "tls" => Ok(Transport::Tls),
            None if s == "h2" => Ok(Transport::H2(1)),
            Some(("h2", n)) => {
                n.parse().ok().filter(|&n| n > 0).map(Transport::H2).ok_or_else(|| format!("bad stream count {n:?}"))
            }
            _ => Err(format!("expected plain, tls or h2:N, got {s:?}")),
        }
    }

    pub fn tls(self) -> bool {
        self != Transport::Plain
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("plain"),
            Transport::Tls => f.write_str("tls"),
            Transport::H2(n) => write!(f, "h2:{n}"),
        }
    }
}

/// The certificate herald serves in TLS runs (the tests' fixture, for 127.0.0.1 and localhost),
/// and its key; the subscribers trust it alone.
pub const CERT_PEM: &[u8] = include_bytes!("../../../tests/fixtures/tls-a.pem");
pub const KEY_PEM: &[u8] = include_bytes!("../../../tests/fixtures/tls-a.key");

/// A TLS client configuration that trusts [`CERT_PEM`] alone and offers `alpn`.
pub(crate) fn client_config(alpn: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(CERT_PEM) {
        roots.add(cert.expect("the fixture certificate parses")).expect("a valid root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

fn connector(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(client_config(alpn)))
}

/// A byte stream a subscriber reads: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

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
        Subscribers::start_over(Transport::Plain, addr, path, n, per_process, bin).await
    }

    /// [`Subscribers::start`] over `transport`.
    pub async fn start_over(
        transport: Transport,
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
            groups = subscribe(transport, addr, path, 0..n, counts.clone(), stopped).await;
        } else {
            let processes = n.div_ceil(per_process);
            for p in 0..processes {
                let range = (n * p / processes)..(n * (p + 1) / processes);
                groups.push(child(bin, transport, addr, path, range, counts.clone(), stopped.clone())?);
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
    transport: Transport,
    addr: SocketAddr,
    path: &str,
    range: std::ops::Range<usize>,
    counts: Arc<Counts>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Vec<Receipt>>> {
    let mut child = tokio::process::Command::new(bin)
        .args(["subscribers", "--addr", &addr.to_string(), "--path", path, "--transport", &transport.to_string()])
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
    #[arg(long, default_value = "plain", value_parser = Transport::parse)]
    transport: Transport,
}

pub async fn run_child(args: ChildArgs) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let path: &'static str = args.path.leak();
    let range = args.first..args.first + args.count;
    let tasks = subscribe(args.transport, args.addr, path, range, counts.clone(), stopped).await;
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
    transport: Transport,
    addr: SocketAddr,
    path: &'static str,
    range: std::ops::Range<usize>,
    counts: Arc<Counts>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<JoinHandle<Vec<Receipt>>> {
    // Subscribers per connection, and the TLS client when there is one.
    let per_conn = match transport {
        Transport::H2(n) => n,
        Transport::Plain | Transport::Tls => 1,
    };
    let tls = match transport {
        Transport::Plain => None,
        Transport::Tls => Some(connector(b"http/1.1")),
        Transport::H2(_) => Some(connector(b"h2")),
    };
    let mut tasks = Vec::with_capacity(range.len());
    let first = range.start;
    for (opened, i) in range.clone().enumerate() {
        if !(i - first).is_multiple_of(per_conn) {
            continue;
        }
        let streams = per_conn.min(range.end - i);
        let src = Ipv4Addr::new(127, 1 + (i / 62_500) as u8, ((i / 250) % 250) as u8 + 1, (i % 250) as u8 + 1);
        let (mine, stop, tls) = (counts.clone(), stop.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let got = match (transport, tls) {
                (Transport::H2(_), Some(tls)) => h2_connection(addr, src, &tls, path, streams, &mine, stop).await,
                (_, tls) => subscriber(addr, src, tls.as_ref(), path, &mine, stop).await,
            };
            got.unwrap_or_else(|e| {
                if mine.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("\na subscription failed (the first; more are counted): {e}");
                }
                Vec::new()
            })
        }));
        if opened / BATCH != (opened + streams) / BATCH {
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
    tls: Option<&tokio_rustls::TlsConnector>,
    path: &str,
    counts: &Counts,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Vec<Receipt>> {
    let mut buf = vec![0u8; 16 << 10];
    let mut attempt = 1;
    let (mut s, mut n) = loop {
        let (s, n) = open(addr, src, tls, path, &mut buf).await?;
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
        keep = scan(&mut buf, keep + n, &mut got);
        n = tokio::select! {
            n = s.read(&mut buf[keep..]) => n?,
            _ = stop.wait_for(|stop| *stop) => 0,
        };
    }
}

/// Records the markers in `buf[..end]` not seen before; moves the bytes a marker split across
/// reads may start with to the front, and returns how many.
fn scan(buf: &mut [u8], end: usize, got: &mut Vec<Receipt>) -> usize {
    let at = now_ns();
    let mut i = 0;
    while let Some(pos) = find(&buf[i..end], MARKER) {
        let start = i + pos;
        if start + MARKER_LEN > end {
            break;
        }
        if let Some(k) = std::str::from_utf8(&buf[start + 3..start + MARKER_LEN]).ok().and_then(|d| d.parse().ok()) {
            if !got.iter().any(|(seen, _)| *seen == k) {
                got.push((k, at));
            }
        }
        i = start + MARKER_LEN;
    }
    let keep = (end - i).min(MARKER_LEN - 1);
    buf.copy_within(end - keep..end, 0);
    keep
}

/// A TCP connection from `src`, with TLS over it when `tls` is given.
async fn connect(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<Box<dyn Io>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let tcp: TcpStream = socket.connect(addr).await?;
    Ok(match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            Box::new(tls.connect(name, tcp).await?)
        }
    })
}

/// Connects from `src`, asks for the stream, and reads the answer's first bytes into `buf`.
async fn open(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: Option<&tokio_rustls::TlsConnector>,
    path: &str,
    buf: &mut [u8],
) -> std::io::Result<(Box<dyn Io>, usize)> {
    let mut s = connect(addr, src, tls).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n").as_bytes()).await?;
    let n = s.read(buf).await?;
    Ok((s, n))
}

/// One HTTP/2 connection from `src` carrying `streams` subscribers; their receipts together.
async fn h2_connection(
    addr: SocketAddr,
    src: Ipv4Addr,
    tls: &tokio_rustls::TlsConnector,
    path: &str,
    streams: usize,
    counts: &Arc<Counts>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<Vec<Receipt>> {
    let io = connect(addr, src, Some(tls)).await?;
    let (mut client, conn) = h2::client::handshake(io).await.map_err(std::io::Error::other)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams {
        client = client.ready().await.map_err(std::io::Error::other)?;
        let req = http::Request::get(format!("https://{addr}{path}"))
            .header("accept", "text/event-stream")
            .body(())
            .expect("a valid request");
        let (answer, _) = client.send_request(req, true).map_err(std::io::Error::other)?;
        let (counts, mut stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let answer = answer.await.map_err(std::io::Error::other)?;
            if answer.status() != 200 {
                return Err(std::io::Error::other(format!("the stream was refused: {}", answer.status())));
            }
            counts.ready.fetch_add(1, Ordering::Relaxed);
            let mut body = answer.into_body();
            let (mut buf, mut keep, mut got) = (vec![0u8; 16 << 10], 0, Vec::new());
            loop {
                let data = tokio::select! {
                    data = body.data() => data,
                    _ = stop.wait_for(|stop| *stop) => None,
                };
                let Some(data) = data else { return Ok(got) };
                let data = data.map_err(std::io::Error::other)?;
                let _ = body.flow_control().release_capacity(data.len());
                for piece in data.chunks(buf.len() - MARKER_LEN) {
                    buf[keep..keep + piece.len()].copy_from_slice(piece);
                    keep = scan(&mut buf, keep + piece.len(), &mut got);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        match task.await.map_err(std::io::Error::other)? {
            Ok(got) => all.extend(got),
            Err(e) => {
                if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("\nan HTTP/2 stream failed (the first; more are counted): {e}");
                }
            }
        }
    }
    driver.abort();
    Ok(all)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
