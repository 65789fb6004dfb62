//! The `cluster` scenario: herald in cluster mode on a `redis-server` of its own.
//!
//! 1. One replica in one process (`storage.kind: memory`, the in-process path) with `--subs`
//!    subscribers, then `--replicas` replicas on Redis with `--subs` each, in the same run: for
//!    each, the spread and latency of every change over all subscribers, deliveries per second,
//!    CPU per delivery (all herald processes), and the upstream requests per poll interval.
//! 2. Takeover: `--kills` times, `kill -9` of the replica holding the lease, and the time until
//!    the upstream sees a poll from another one (a new replica replaces the killed one).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_testkit::{LegacyApi, SseClient};
use herald_tests::{Gateway, RedisServer};
use serde_json::{json, Value};

use crate::fanout::{change_stats, tasks_yaml};
use crate::subscribers::{now_ns, Subscribers, PER_PROCESS};
use crate::{percentile, usage, Usage};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Replicas on Redis.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// SSE subscribers per replica (and on the one-process baseline).
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// `storage.lease`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Holders killed for the takeover distribution.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    #[arg(long, default_value_t = PER_PROCESS)]
    pub per_process: usize,
    /// The `herald-bench` binary that serves child subscribers (default: this one).
    #[arg(skip)]
    pub bench_bin: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let redis = RedisServer::start().await.ok_or_else(|| anyhow::anyhow!("the cluster scenario needs redis-server"))?;
    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    let poll = humantime::format_duration(args.poll).to_string();
    let lease = humantime::format_duration(args.lease).to_string();
    let clustered = format!("{{ kind: redis, url: '{}', prefix: bench, lease: {lease} }}", redis.url());

    let one = Gateway::start(&tasks_yaml(upstream, &poll, "{ kind: memory }")).await;
    let baseline = measure(&args, &api, &[&one]).await?;
    drop(one);

    let mut gws = Vec::new();
    for _ in 0..args.replicas {
        gws.push(Gateway::start(&tasks_yaml(upstream, &poll, &clustered)).await);
    }
    let cluster = measure(&args, &api, &gws.iter().collect::<Vec<_>>()).await?;
    let takeover = takeovers(&args, &api, &mut gws, &tasks_yaml(upstream, &poll, &clustered)).await?;
    Ok(json!({
        "scenario": "cluster",
        "replicas": args.replicas,
        "one_process": baseline,
        "cluster": cluster,
        "takeover_ms": takeover,
        "lease_ms": args.lease.as_millis() as u64,
    }))
}

/// `--subs` subscribers on each of `gws`, `--changes` changes; the figures over all of them.
async fn measure(args: &Args, api: &LegacyApi, gws: &[&Gateway]) -> anyhow::Result<Value> {
    let bin = match &args.bench_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    };
    // The markers of an earlier measurement must not be in the snapshot: a subscriber would
    // count that marker as received when it connected (it made one change of the cluster
    // run look 6 s late: the spread of the connections).
    api.retitle("1", "not changed yet");
    tokio::time::sleep(args.poll * 2).await;
    let mut groups = Vec::new();
    for gw in gws {
        groups.push(Subscribers::start(gw.public, "/tasks/event-stream", args.subs, args.per_process, &bin).await?);
    }
    let want = args.subs * gws.len();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let ready: usize = groups.iter().map(|g| g.counts.ready.load(Ordering::Relaxed)).sum();
        let failed: usize = groups.iter().map(|g| g.counts.failed.load(Ordering::Relaxed)).sum();
        eprint!("\r{} replica(s): {ready} of {want} subscribers connected   ", gws.len());
        if ready + failed >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let connected: usize = groups.iter().map(|g| g.counts.ready.load(Ordering::Relaxed)).sum();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pids: Vec<u32> = gws.iter().map(|gw| gw.pid()).collect();
    let total = || pids.iter().map(|&p| usage(p)).fold(Usage::default(), Usage::sum);
    let before = total();
    let polls_before = api.stats("/tasks").requests;
    let started = Instant::now();
    let mut made = Vec::new();
    for k in 1..=args.changes {
        eprint!("\r{} replica(s), {connected} subscribers: change {k}/{}   ", gws.len(), args.changes);
        made.push(now_ns());
        api.retitle("1", &format!("chg{k:06}"));
        tokio::time::sleep(args.every).await;
    }
    eprintln!();
    let elapsed = started.elapsed();
    let polls = api.stats("/tasks").requests - polls_before;
    let after = total();
    let mut gaps = 0.0;
    for gw in gws {
        gaps += gw.metric("herald_cluster_gaps_filled_total").await;
    }
    let mut per_change: Vec<Vec<u64>> = vec![Vec::new(); args.changes];
    // Per replica, per change: when its first and its last subscriber had it (ms after the
    // change), to tell a replica that was late from subscribers that were.
    let mut by_replica = Vec::new();
    for group in groups {
        let mut mine: Vec<Vec<u64>> = vec![Vec::new(); args.changes];
        for (k, at) in group.finish().await {
            if (1..=args.changes).contains(&k) {
                per_change[k - 1].push(at);
                mine[k - 1].push(at);
            }
        }
        let ms = |k: usize, t: Option<&u64>| t.map_or(-1.0, |t| (t.saturating_sub(made[k]) as f64 / 1e6).round());
        let rows: Vec<Value> =
            mine.iter().enumerate().map(|(k, t)| json!([ms(k, t.iter().min()), ms(k, t.iter().max())])).collect();
        by_replica.push(rows);
    }
    let stats = change_stats(&made, &per_change);
    let cpu = after.cpu_seconds - before.cpu_seconds;
    Ok(json!({
        "replicas": gws.len(),
        "subscribers": connected,
        "delivered": stats["delivered"],
        "expected": connected * args.changes,
        "spread_ms": stats["spread_ms"],
        "latency_ms": stats["latency_ms"],
        "deliveries_per_second": stats["deliveries_per_second"],
        "cpu_us_per_delivery": cpu / stats["delivered"].as_f64().unwrap_or(0.0).max(1.0) * 1e6,
        "rss_mib": after.rss_bytes as f64 / (1 << 20) as f64,
        "upstream_polls_per_interval": polls as f64 / (elapsed.as_secs_f64() / args.poll.as_secs_f64()),
        "first_last_ms_by_replica": by_replica,
        "gaps_filled": gaps,
    }))
}

/// Kills the lease holder `--kills` times; for each, the time until another replica polls.
async fn takeovers(args: &Args, api: &LegacyApi, gws: &mut [Gateway], yaml: &str) -> anyhow::Result<Value> {
    let mut clients: Vec<SseClient> = Vec::new();
    for gw in gws.iter() {
        clients.push(gw.subscribe("/tasks/event-stream", &[]).await);
    }
    let mut times = Vec::new();
    for i in 0..args.kills {
        eprint!("\rtakeover {}/{}   ", i + 1, args.kills);
        let h = holder(gws).await?;
        let killed = Instant::now();
        gws[h].signal("KILL");
        gws[h].wait(Duration::from_secs(10)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let took = loop {
            if let Some(r) = api.seen("/tasks").into_iter().find(|r| r.at > killed) {
                break r.at - killed;
            }
            anyhow::ensure!(Instant::now() < deadline, "no replica polled within 30s of the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        times.push(took.as_secs_f64() * 1000.0);
        gws[h] = Gateway::start(yaml).await;
        clients[h] = gws[h].subscribe("/tasks/event-stream", &[]).await;
        // Let the new replica settle as a follower before the next kill.
        tokio::time::sleep(args.lease).await;
    }
    eprintln!();
    times.sort_by(f64::total_cmp);
    Ok(json!({
        "kills": times.len(),
        "p50": percentile(&times, 50.0),
        "p90": percentile(&times, 90.0),
        "max": times.last().copied().unwrap_or(0.0),
        "min": times.first().copied().unwrap_or(0.0),
    }))
}

/// The replica holding the lease on `/tasks` (its name holds its process id).
async fn holder(gws: &[Gateway]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = serde_json::from_str(&gws[0].admin_get("/admin/watches").await)?;
        let name = v["watches"][0]["holder"].as_str().unwrap_or_default().to_string();
        if let Some(i) = gws.iter().position(|gw| name.contains(&format!("-{}-", gw.pid()))) {
            return Ok(i);
        }
        anyhow::ensure!(Instant::now() < deadline, "no lease holder found");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The table, then the JSON line.
pub fn print(r: &Value) {
    for part in ["one_process", "cluster"] {
        let p = &r[part];
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!(
            "{part:>11}: {} replica(s), {} subscribers, {} of {} delivered; spread p50 {:.1} ms p99 {:.1} ms; \
             latency p50 {:.0} ms p99 {:.0} ms; {:.0} deliveries/s; {:.2} µs CPU per delivery; {:.2} upstream polls per interval",
            p["replicas"],
            p["subscribers"],
            p["delivered"],
            p["expected"],
            f(&p["spread_ms"]["p50"]),
            f(&p["spread_ms"]["p99"]),
            f(&p["latency_ms"]["p50"]),
            f(&p["latency_ms"]["p99"]),
            f(&p["deliveries_per_second"]),
            f(&p["cpu_us_per_delivery"]),
            f(&p["upstream_polls_per_interval"]),
        );
    }
    // The slowest change's breakdown: which replica's subscribers had it late.
    if let Some(rows) = r["cluster"]["first_last_ms_by_replica"].as_array() {
        let changes = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
        let last = |k: usize| rows.iter().map(|r| r[k][1].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
        if let Some(k) = (0..changes).max_by(|a, b| last(*a).total_cmp(&last(*b))) {
            let each: Vec<String> = rows.iter().map(|r| format!("{}..{} ms", r[k][0], r[k][1])).collect();
            println!(
                "    slowest: change {} reached each replica's subscribers (first..last) {}; gaps filled {}",
                k + 1,
                each.join(", "),
                r["cluster"]["gaps_filled"]
            );
        }
    }
    let t = &r["takeover_ms"];
    println!(
        "   takeover: {} kills, lease {} ms: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        t["kills"],
        r["lease_ms"],
        t["p50"].as_f64().unwrap_or(0.0),
        t["p90"].as_f64().unwrap_or(0.0),
        t["max"].as_f64().unwrap_or(0.0)
    );
    println!("{r}");
}
