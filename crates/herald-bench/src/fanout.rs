//! The `fanout` and `idle` scenarios, and the `floor` server they measure herald against.
//!
//! `fanout`: N SSE subscribers on one stream (source addresses spread over 127.0.0.0/8), K
//! changes; for each change, when every subscriber received it. The change is a marker
//! (`chg000001`…) that the target puts in the event: herald gets it from its upstream (a task's
//! title, picked up by the next poll), the floor server from a `POST /pub`.
//!
//! `floor`: the least a broadcast server can do: one pre-encoded frame, one write per subscriber,
//! nothing else. Its spread is what the kernel costs on this machine; herald is reported as a
//! ratio to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::LegacyApi;
use herald_tests::Gateway;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::subscribers::{find, now_ns, Subscribers, Transport, CERT_PEM, KEY_PEM, PER_PROCESS};
use crate::{percentile, usage, Usage};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// What to measure: herald (in front of the testkit API) or floor (the minimal server).
    #[arg(long, default_value = "herald")]
    pub target: Target,
    /// SSE subscribers on the one stream.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Changes made, one after the other.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Time between changes.
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// herald's poll interval (the upstream is polled this often).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Subscribers one load-generator process opens at most; more are split over child processes.
    #[arg(long, default_value_t = PER_PROCESS)]
    pub per_process: usize,
    /// The `herald-bench` binary that serves `floor-server` and `subscribers` (default: this one).
    #[arg(skip)]
    pub bench_bin: Option<PathBuf>,
    /// External target: `host:port/path` subscribers GET as an SSE stream.
    #[arg(long)]
    pub sub: Option<String>,
    /// External target: `host:port/path` a change is POSTed to.
    #[arg(long)]
    pub publish: Option<String>,
    /// External target: the body POSTed for a change, `{marker}` replaced by the change's marker
    /// (JSON when it starts with `{`).
    #[arg(long, default_value = "{marker}")]
    pub publish_body: String,
    /// External target: the processes to measure (their CPU and RSS are summed).
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// How subscribers connect: `plain` (HTTP/1.1), `tls` (HTTP/1.1 over TLS), or `h2:N` (HTTP/2
    /// over TLS, N streams per connection). herald serves the tests' certificate, which they trust.
    #[arg(long, default_value = "plain", value_parser = Transport::parse)]
    pub transport: Transport,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Herald,
    Floor,
    /// A server already running (Nchan…): `--sub`, `--publish` and `--pid` say where and what.
    External,
}

/// A running target: where to subscribe, how to make change `k`, whose process to measure.
enum Running {
    Herald { gw: Gateway, api: LegacyApi, _dir: tempfile::TempDir },
    Floor { child: tokio::process::Child, addr: SocketAddr },
    External { addr: SocketAddr, path: String, publish: (SocketAddr, String), body: String, pids: Vec<u32> },
}

/// herald in front of the testkit API at `upstream`: `/tasks` as item events, polled every
/// `poll`, with `storage` (a YAML flow mapping).
pub(crate) fn tasks_yaml(upstream: SocketAddr, poll: &str, storage: &str) -> String {
    tasks_yaml_with(upstream, poll, storage, "")
}

/// [`tasks_yaml`] with more `server` keys (`server_extra`: `, key: value…`).
fn tasks_yaml_with(upstream: SocketAddr, poll: &str, storage: &str, server_extra: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, max_connections: 100000{server_extra} }}\n\
         upstream: {{ url: 'http://{upstream}' }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {storage}\n\
         sse: {{ max_subscribers: 1000000, heartbeat: 60s }}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         poll: {{ interval: {poll}, min_interval: {poll}, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n"
    )
}

/// `host:port/path` → the address and the path.
fn split_target(s: &str) -> anyhow::Result<(SocketAddr, String)> {
    let (addr, path) = s.split_once('/').ok_or_else(|| anyhow::anyhow!("expected host:port/path, got {s}"))?;
    Ok((addr.parse()?, format!("/{path}")))
}

impl Running {
    async fn start(args: &Args) -> anyhow::Result<Running> {
        Ok(match args.target {
            Target::Herald => {
                let api = LegacyApi::new();
                let upstream = api.serve("127.0.0.1:0".parse()?).await?;
                let dir = tempfile::tempdir()?;
                let poll = humantime::format_duration(args.poll).to_string();
                let mut tls = String::new();
                if args.transport.tls() {
                    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
                    std::fs::write(&cert, CERT_PEM)?;
                    std::fs::write(&key, KEY_PEM)?;
                    tls = format!(", tls: {{ cert: '{}', key: '{}' }}", cert.display(), key.display());
                }
                let gw = Gateway::start(&tasks_yaml_with(upstream, &poll, "{ kind: memory }", &tls)).await;
                Running::Herald { gw, api, _dir: dir }
            }
            Target::Floor => {
                let mut child = tokio::process::Command::new(bench_bin(args)?)
                    .arg("floor-server")
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
                let mut line = String::new();
                tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await?;
                let addr = line.trim().parse()?;
                Running::Floor { child, addr }
            }
            Target::External => {
                let missing = || anyhow::anyhow!("--target external needs --sub, --publish and --pid");
                let (addr, path) = split_target(args.sub.as_deref().ok_or_else(missing)?)?;
                let publish = split_target(args.publish.as_deref().ok_or_else(missing)?)?;
                anyhow::ensure!(!args.pid.is_empty(), missing());
                Running::External { addr, path, publish, body: args.publish_body.clone(), pids: args.pid.clone() }
            }
        })
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Herald { gw, .. } => gw.public,
            Running::Floor { addr, .. } | Running::External { addr, .. } => *addr,
        }
    }

    fn path(&self) -> &str {
        match self {
            Running::Herald { .. } => "/tasks/event-stream",
            Running::Floor { .. } => "/sub",
            Running::External { path, .. } => path,
        }
    }

    /// CPU and RSS of the target's processes.
    fn usage(&self) -> Usage {
        match self {
            Running::Herald { gw, .. } => usage(gw.pid()),
            Running::Floor { child, .. } => usage(child.id().unwrap_or(0)),
            Running::External { pids, .. } => pids.iter().map(|&pid| usage(pid)).fold(Usage::default(), Usage::sum),
        }
    }

    async fn change(&self, k: usize) -> anyhow::Result<()> {
        let marker = format!("chg{k:06}");
        match self {
            Running::Herald { api, .. } => api.retitle("1", &marker),
            Running::Floor { addr, .. } => publish(*addr, "/pub", &marker).await?,
            Running::External { publish: (addr, path), body, .. } => {
                publish(*addr, path, &body.replace("{marker}", &marker)).await?
            }
        }
        Ok(())
    }
}

/// POSTs `body` to `path` and reads the answer's first bytes.
async fn publish(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    let kind = if body.starts_with('{') { "application/json" } else { "text/plain" };
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf).await?;
    Ok(())
}

/// The `herald-bench` binary serving the floor server and child subscribers.
fn bench_bin(args: &Args) -> anyhow::Result<PathBuf> {
    Ok(match &args.bench_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    })
}

/// Runs the scenario; returns the JSON summary.
pub async fn fanout(args: Args) -> anyhow::Result<Value> {
    let target = Running::start(&args).await?;
    let idle_before = target.usage();
    anyhow::ensure!(
        args.transport == Transport::Plain || args.target == Target::Herald,
        "--transport tls and h2 measure herald only"
    );
    let bin = bench_bin(&args)?;
    let subs = Subscribers::start_over(args.transport, target.addr(), target.path(), args.subs, args.per_process, &bin)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (ready, failed) = (&subs.counts.ready, &subs.counts.failed);
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.subs && Instant::now() < deadline {
        eprint!("\r{:?}: {} of {} subscribers connected   ", args.target, ready.load(Ordering::Relaxed), args.subs);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let connected = ready.load(Ordering::Relaxed);
    let refused = failed.load(Ordering::Relaxed);
    let subs_retried = subs.counts.retried.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = target.usage();
    let mut made = Vec::new();
    for k in 1..=args.changes {
        eprint!("\r{:?} {} subscribers: change {k}/{}   ", args.target, connected, args.changes);
        made.push(now_ns());
        target.change(k).await?;
        tokio::time::sleep(args.every).await;
    }
    eprintln!();
    let after = target.usage();
    let receipts = subs.finish().await;
    drop(target);
    let mut per_change: Vec<Vec<u64>> = vec![Vec::new(); args.changes];
    for (k, at) in receipts {
        if (1..=args.changes).contains(&k) {
            per_change[k - 1].push(at);
        }
    }
    let mut summary = summarize(&args, connected, &made, &per_change, &idle_before, &before, &after);
    summary["refused"] = refused.into();
    summary["retried"] = subs_retried.into();
    Ok(summary)
}

fn summarize(
    args: &Args,
    connected: usize,
    made: &[u64],
    per_change: &[Vec<u64>],
    idle_before: &Usage,
    before: &Usage,
    after: &Usage,
) -> Value {
    let stats = change_stats(made, per_change);
    let cpu = after.cpu_seconds - before.cpu_seconds;
    json!({
        "scenario": "fanout",
        "target": format!("{:?}", args.target).to_lowercase(),
        "subscribers": connected,
        "changes": args.changes,
        "delivered": stats["delivered"],
        "delivered_per_change": per_change.iter().map(Vec::len).collect::<Vec<_>>(),
        "expected": connected * args.changes,
        "spread_ms": stats["spread_ms"],
        "latency_ms": stats["latency_ms"],
        "deliveries_per_second": stats["deliveries_per_second"],
        "cpu_seconds_per_change": cpu / args.changes as f64,
        "rss_mib": after.rss_bytes as f64 / (1 << 20) as f64,
        "rss_per_subscriber_bytes": (before.rss_bytes.saturating_sub(idle_before.rss_bytes)) as f64 / connected.max(1) as f64,
        "poll_interval_ms": args.poll.as_secs_f64() * 1000.0,
        "transport": args.transport.to_string(),
    })
}

/// For changes made at `made` (ns) and received at `per_change[k]`: how many were delivered,
/// the spread of each change over its subscribers, latencies, and deliveries per second.
pub(crate) fn change_stats(made: &[u64], per_change: &[Vec<u64>]) -> Value {
    let ms = |ns: u64| ns as f64 / 1e6;
    let (mut spreads, mut latencies, mut rates, mut delivered) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (k, times) in per_change.iter().enumerate() {
        delivered += times.len();
        let (Some(&first), Some(&last)) = (times.iter().min(), times.iter().max()) else { continue };
        spreads.push(ms(last - first));
        latencies.extend(times.iter().map(|&t| ms(t.saturating_sub(made[k]))));
        rates.push(times.len() as f64 / ((last - first) as f64 / 1e9).max(1e-3));
    }
    for v in [&mut spreads, &mut latencies, &mut rates] {
        v.sort_by(f64::total_cmp);
    }
    json!({
        "delivered": delivered,
        "spread_ms": { "p50": percentile(&spreads, 50.0), "p99": percentile(&spreads, 99.0) },
        "latency_ms": { "p50": percentile(&latencies, 50.0), "p99": percentile(&latencies, 99.0), "max": latencies.last().copied().unwrap_or(0.0) },
        "deliveries_per_second": percentile(&rates, 50.0).round(),
    })
}

#[derive(clap::Args, Clone)]
pub struct IdleArgs {
    /// What to measure.
    #[arg(long, default_value = "herald")]
    pub target: Target,
    /// Subscriber counts to measure at, each on a fresh target.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,19000")]
    pub sizes: Vec<usize>,
    #[arg(skip)]
    pub bench_bin: Option<PathBuf>,
    /// How subscribers connect (see `fanout --transport`).
    #[arg(long, default_value = "plain", value_parser = Transport::parse)]
    pub transport: Transport,
}

/// The `idle` scenario: memory per idle subscriber at each size (RSS growth / N).
pub async fn idle(args: IdleArgs) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    for &subs in &args.sizes {
        let r = fanout(Args {
            target: args.target,
            subs,
            changes: 0,
            every: Duration::ZERO,
            poll: Duration::from_secs(1),
            per_process: PER_PROCESS,
            bench_bin: args.bench_bin.clone(),
            sub: None,
            publish: None,
            publish_body: String::new(),
            pid: Vec::new(),
            transport: args.transport,
        })
        .await?;
        rows.push(json!({ "transport": args.transport.to_string(), "subscribers": r["subscribers"], "rss_per_subscriber_bytes": r["rss_per_subscriber_bytes"], "rss_mib": r["rss_mib"] }));
    }
    Ok(json!({ "scenario": "idle", "target": format!("{:?}", args.target).to_lowercase(), "sizes": rows }))
}

/// The table for an idle result, then its JSON line.
pub fn print_idle(r: &Value) {
    println!("idle {}:", r["target"].as_str().unwrap_or("?"));
    for row in r["sizes"].as_array().into_iter().flatten() {
        println!(
            "  {:>7} subscribers   RSS {:>7.1} MiB   {:>6.0} bytes per subscriber",
            row["subscribers"],
            row["rss_mib"].as_f64().unwrap_or(0.0),
            row["rss_per_subscriber_bytes"].as_f64().unwrap_or(0.0)
        );
    }
    println!("{r}");
}

/// The table for a fanout result.
pub fn print(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "fanout {}: {} subscribers × {} changes, {} of {} delivered",
        r["target"].as_str().unwrap_or("?"),
        r["subscribers"],
        r["changes"],
        r["delivered"],
        r["expected"]
    );
    println!(
        "  spread first→last     p50 {:.1} ms   p99 {:.1} ms",
        f(&r["spread_ms"]["p50"]),
        f(&r["spread_ms"]["p99"])
    );
    println!(
        "  change → receipt      p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"])
    );
    println!("  deliveries/s          {:.0}", f(&r["deliveries_per_second"]));
    println!(
        "  CPU per change        {:.1} ms;  RSS {:.0} MiB, {:.0} bytes per subscriber",
        f(&r["cpu_seconds_per_change"]) * 1000.0,
        f(&r["rss_mib"]),
        f(&r["rss_per_subscriber_bytes"])
    );
    println!("{r}");
}

/// The floor server: prints its address, then serves `GET /sub` (an SSE stream) and `POST /pub`
/// (the body becomes one frame written to every subscriber).
pub async fn floor_server() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let subscribers: Arc<Mutex<Vec<tokio::net::tcp::OwnedWriteHalf>>> = Arc::default();
    loop {
        let (mut s, _) = listener.accept().await?;
        let subscribers = subscribers.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            let head_end = loop {
                let Ok(n) = s.read(&mut buf[read..]).await else { return };
                if n == 0 {
                    return;
                }
                read += n;
                if let Some(p) = find(&buf[..read], b"\r\n\r\n") {
                    break p + 4;
                }
            };
            if buf.starts_with(b"POST") {
                let body = String::from_utf8_lossy(&buf[head_end..read]).into_owned();
                let frame = format!("event: change\ndata: {body}\n\n");
                let mut subs = std::mem::take(&mut *subscribers.lock().unwrap());
                // One write per subscriber, in turn; a full socket buffer is the only wait.
                for w in &mut subs {
                    let _ = w.write_all(frame.as_bytes()).await;
                }
                subscribers.lock().unwrap().extend(subs);
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
            } else {
                let (mut r, mut w) = s.into_split();
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n: ok\n\n";
                if w.write_all(head.as_bytes()).await.is_ok() {
                    subscribers.lock().unwrap().push(w);
                    // Hold the read half until the client leaves.
                    let _ = r.read(&mut buf).await;
                }
            }
        });
    }
}

/// A GRIP origin for Pushpin (`herald-bench grip-origin`): answers every request with an SSE
/// stream that Pushpin holds open on the channel `bench` (`Grip-Hold: stream`), so that a
/// publish to `bench` reaches every subscriber through Pushpin.
pub async fn grip_origin(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("{}", listener.local_addr()?);
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ngrip-hold: stream\r\n\
        grip-channel: bench\r\ncontent-length: 6\r\n\r\n: ok\n\n";
    loop {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            // Keep-alive: one answer per request head.
            let mut buf = vec![0u8; 8192];
            let mut read = 0;
            loop {
                match find(&buf[..read], b"\r\n\r\n") {
                    Some(p) => {
                        if s.write_all(ANSWER).await.is_err() {
                            return;
                        }
                        buf.copy_within(p + 4..read, 0);
                        read -= p + 4;
                    }
                    None if read == buf.len() => return,
                    None => match s.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    },
                }
            }
        });
    }
}
