//! The `freshness` scenario: how long a write made through herald takes to reach subscribers of
//! a route polled only every `interval`, with write-through refresh (the default) and, in the
//! same run, without it (`refresh_on_write: false`: the interval-bound latency).
//!
//! Each write is a `POST /tasks` through herald whose title is a change marker (`chg000001`…);
//! every subscriber notes when the marker arrives. Latency: from just before the write is sent
//! to the marker's arrival, over every subscriber and every write.

use std::time::Duration;

use herald_testkit::LegacyApi;
use herald_tests::{Gateway, SseClient};
use serde_json::{json, Value};

use crate::percentile;
use crate::subscribers::{now_ns, Subscribers, PER_PROCESS};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Subscribers on the route's stream (one of them in this process paces the writes).
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Writes with refresh on, one after another (each waits until its change arrived).
    #[arg(long, default_value_t = 1000)]
    pub writes: usize,
    /// The route's poll interval.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Writes with refresh off (each waits for the next scheduled poll).
    #[arg(long, default_value_t = 40)]
    pub baseline_writes: usize,
    /// Time between two writes with refresh off.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub baseline_every: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let refresh = measure(&args, true, args.writes, Duration::ZERO).await?;
    let baseline = measure(&args, false, args.baseline_writes, args.baseline_every).await?;
    Ok(json!({
        "scenario": "freshness",
        "subscribers": args.subs,
        "interval_s": args.interval.as_secs_f64(),
        "refresh": refresh,
        "baseline": baseline,
    }))
}

/// `writes` writes through a fresh herald (refresh on or off), `every` apart, or each after the
/// previous one arrived when `every` is zero.
async fn measure(args: &Args, refresh: bool, writes: usize, every: Duration) -> anyhow::Result<Value> {
    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    let interval = humantime::format_duration(args.interval);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
         upstream: {{ url: 'http://{upstream}', max_polls_per_second: 1000 }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {{ kind: memory }}\n\
         sse: {{ max_subscribers: 1000000 }}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    refresh_on_write: {refresh}\n    \
         poll: {{ interval: {interval}, min_interval: 1s, max_interval: {interval}, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let others = args.subs.saturating_sub(1);
    let subscribers =
        Subscribers::start(gw.public, "/tasks/event-stream", others, PER_PROCESS, &std::env::current_exe()?).await?;
    let mut pacer = gw.subscribe("/tasks/event-stream", &[]).await;
    anyhow::ensure!(pacer.status == 200, "the pacing subscriber got {}", pacer.status);
    wait_ready(&subscribers, others).await?;

    let client = reqwest::Client::new();
    // When write k was sent, at index k (markers count from 1).
    let mut sent_ns = vec![0u64];
    let mut pacer_ms = Vec::with_capacity(writes);
    let started = std::time::Instant::now();
    for k in 1..=writes {
        let marker = format!("chg{k:06}");
        let sent = now_ns();
        sent_ns.push(sent);
        let resp = client.post(gw.url("/tasks")).body(json!({ "title": marker }).to_string()).send().await?;
        anyhow::ensure!(resp.status() == 201, "write {k}: {}", resp.status());
        if every.is_zero() {
            let arrived = until_marker(&mut pacer, &marker, args.interval * 2).await?;
            pacer_ms.push(arrived.saturating_sub(sent) as f64 / 1e6);
        } else {
            tokio::time::sleep(every).await;
        }
    }
    if !every.is_zero() {
        // Without refresh, the last write arrives with the poll after it.
        let last = format!("chg{writes:06}");
        until_marker(&mut pacer, &last, args.interval * 2).await?;
    }
    let elapsed = started.elapsed();
    // The pacer saw the last change; the others get it within moments (fan-out to a thousand
    // takes milliseconds): receipts are collected after a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let receipts = subscribers.finish().await;
    let mut latencies: Vec<f64> = receipts
        .iter()
        .filter(|(k, _)| (1..=writes).contains(k))
        .map(|&(k, at)| at.saturating_sub(sent_ns[k]) as f64 / 1e6)
        .collect();
    let expected = others * writes;
    let delivered = latencies.len();
    latencies.extend(pacer_ms);
    latencies.sort_by(f64::total_cmp);
    let polls = api.seen("/tasks").into_iter().filter(|r| r.method == "GET").count();
    Ok(json!({
        "refresh_on_write": refresh,
        "writes": writes,
        "delivered": delivered,
        "expected": expected,
        "seconds": elapsed.as_secs_f64(),
        "upstream_polls": polls,
        "latency_ms": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
    }))
}

async fn wait_ready(subscribers: &Subscribers, n: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while subscribers.counts.ready.load(std::sync::atomic::Ordering::Relaxed) < n {
        anyhow::ensure!(std::time::Instant::now() < deadline, "subscribers not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Reads `client` until an event carries `marker`; when it arrived (ns since the epoch).
async fn until_marker(client: &mut SseClient, marker: &str, within: Duration) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(ev) = client.next_within(left).await else { anyhow::bail!("{marker} never arrived") };
        if ev.data.contains(marker) {
            return Ok(now_ns());
        }
    }
}

/// The table for a freshness result, then its JSON line.
pub fn print(r: &Value) {
    println!("freshness: {} subscribers, route interval {} s", r["subscribers"], r["interval_s"]);
    for part in ["refresh", "baseline"] {
        let p = &r[part];
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!(
            "  {:>8} (refresh_on_write: {}): {} writes, {} of {} delivered; write → event p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {} upstream polls",
            part,
            p["refresh_on_write"],
            p["writes"],
            p["delivered"],
            p["expected"],
            f(&p["latency_ms"]["p50"]),
            f(&p["latency_ms"]["p99"]),
            f(&p["latency_ms"]["max"]),
            p["upstream_polls"],
        );
    }
    println!("{r}");
}
