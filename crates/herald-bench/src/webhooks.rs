//! The `webhooks` scenario: `subs` subscriptions on one collection route, the upstream adding
//! `batch` items every `every`; herald detects each change, stores one message per item per
//! subscription, and delivers them to a receiver that verifies every signature. Reports
//! deliveries per second and the latency from change detected (the payload's `timestamp`, set
//! when the messages are created) to the first attempt's arrival.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use herald_testkit::{LegacyApi, Receiver};
use herald_tests::{Gateway, RedisServer};
use serde_json::{json, Value};

use crate::{percentile, usage, Usage};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[derive(clap::Args)]
pub struct Args {
    /// Webhook subscriptions (all on the same route).
    #[arg(long, default_value_t = 100)]
    pub subs: usize,
    /// Items the upstream adds per change.
    #[arg(long, default_value_t = 3)]
    pub batch: usize,
    /// Time between upstream changes (and herald's poll interval).
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// How long changes are made.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// webhooks.max_in_flight.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Where the queue lives: `embedded` (one herald) or `redis` (`--replicas` heralds sharing a
    /// `redis-server` the scenario starts).
    #[arg(long, default_value = "embedded")]
    pub storage: Storage,
    /// herald replicas, with `--storage redis`.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Embedded,
    Redis,
}

/// Runs the scenario; returns the JSON summary.
pub async fn run(args: Args) -> anyhow::Result<Value> {
    let upstream_api = LegacyApi::new();
    let upstream = upstream_api.serve("127.0.0.1:0".parse()?).await?;
    let receiver = Receiver::new();
    let receiver_addr = receiver.serve("127.0.0.1:0".parse()?).await?;
    receiver.trust(SECRET);
    let data = tempfile::tempdir()?;
    let redis = match args.storage {
        Storage::Redis => {
            Some(RedisServer::start().await.ok_or_else(|| anyhow::anyhow!("--storage redis needs redis-server"))?)
        }
        Storage::Embedded => None,
    };
    let storage = match &redis {
        Some(redis) => format!("{{ kind: redis, url: '{}', prefix: bench, lease: 2s }}", redis.url()),
        None => format!("{{ kind: embedded, path: '{}' }}", data.path().display()),
    };
    let every = humantime::format_duration(args.every);
    let mut yaml = format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
         upstream: {{ url: 'http://{upstream}', max_polls_per_second: 1000 }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {storage}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         poll: {{ interval: {every}, min_interval: {every}, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n\
         webhooks:\n  max_in_flight: {}\n  allow_private_destinations: [127.0.0.0/8]\n  subscriptions:\n",
        args.max_in_flight
    );
    for i in 0..args.subs {
        yaml.push_str(&format!(
            "    - {{ id: s{i}, url: 'http://{receiver_addr}/hook/{i}', path: /tasks, secret: '{SECRET}' }}\n"
        ));
    }
    let mut gws = Vec::new();
    for _ in 0..if redis.is_some() { args.replicas.max(1) } else { 1 } {
        gws.push(Gateway::start(&yaml).await);
    }
    let total = || gws.iter().map(|gw| usage(gw.pid())).fold(Usage::default(), Usage::sum);
    // Let every webhook watch record its starting point.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = total();

    let started = Instant::now();
    let mut added = 0usize;
    let mut tick = tokio::time::interval(args.every);
    while started.elapsed() < args.duration {
        tick.tick().await;
        for _ in 0..args.batch {
            upstream_api.add_task("bench");
            added += 1;
        }
        let got = receiver.accepted_count();
        eprint!(
            "\r{:>5.1}s  items added {added:>6}  deliveries {got:>8}  ({:.0}/s)   ",
            started.elapsed().as_secs_f64(),
            got as f64 / started.elapsed().as_secs_f64()
        );
    }
    let expected = added * args.subs;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.accepted_count() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = receiver.accepted_count() >= expected;
    let wall = started.elapsed();
    let after = total();
    eprintln!();

    let accepted = receiver.accepted();
    let unique: HashSet<&str> = accepted.iter().map(|d| d.id.as_str()).collect();
    let mut seen = HashSet::new();
    let mut latencies: Vec<f64> = accepted
        .iter()
        .filter(|d| seen.insert(d.id.as_str()))
        .filter_map(|d| {
            let ts = humantime::parse_rfc3339(d.body["timestamp"].as_str()?).ok()?;
            Some(d.received.duration_since(ts).unwrap_or_default().as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    // Per change (messages created together share a timestamp): when its first message arrived.
    let mut firsts: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for d in &accepted {
        let Some(ts) = d.body["timestamp"].as_str() else { continue };
        let Ok(at) = humantime::parse_rfc3339(ts) else { continue };
        let ms = d.received.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0;
        firsts.entry(ts).and_modify(|m| *m = m.min(ms)).or_insert(ms);
    }
    let mut firsts: Vec<f64> = firsts.into_values().collect();
    firsts.sort_by(f64::total_cmp);
    let first = accepted.iter().map(|d| d.received).min().unwrap_or(SystemTime::now());
    let last = accepted.iter().map(|d| d.received).max().unwrap_or(SystemTime::now());
    let span = last.duration_since(first).unwrap_or_default().as_secs_f64().max(1e-3);
    let result = json!({
        "scenario": "webhooks",
        "storage": format!("{:?}", args.storage).to_lowercase(),
        "replicas": gws.len(),
        "subscriptions": args.subs,
        "items_added": added,
        "messages_expected": expected,
        "delivered_unique": unique.len(),
        "duplicates": accepted.len() - unique.len(),
        "drained": drained,
        "deliveries_per_second": (unique.len() as f64 / span).round(),
        "latency_ms": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
        "first_of_change_ms": {
            "p50": percentile(&firsts, 50.0),
            "p99": percentile(&firsts, 99.0),
        },
        "herald_cpu_seconds": after.cpu_seconds - before.cpu_seconds,
        "herald_cpu_percent_of_one_core": ((after.cpu_seconds - before.cpu_seconds) / wall.as_secs_f64() * 100.0).round(),
        "herald_rss_mib": after.rss_bytes as f64 / (1 << 20) as f64,
        "rejected_signatures": receiver.rejected(),
        "span_seconds": span,
    });
    Ok(result)
}

/// The table for a webhooks result.
pub fn print(r: &Value) {
    println!(
        "webhooks ({} store, {} herald): {} subscriptions, {} items → {} messages; delivered {} (+{} duplicates) in {:.1}s",
        r["storage"].as_str().unwrap_or("?"),
        r["replicas"],
        r["subscriptions"],
        r["items_added"],
        r["messages_expected"],
        r["delivered_unique"],
        r["duplicates"],
        r["span_seconds"].as_f64().unwrap_or(0.0)
    );
    println!("  deliveries/s            {}", r["deliveries_per_second"]);
    println!(
        "  change → first attempt  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        r["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["max"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  first message of a change p50 {:.1} ms   p99 {:.1} ms",
        r["first_of_change_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["first_of_change_ms"]["p99"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  herald CPU              {:.1} s ({}% of one core), RSS {:.0} MiB",
        r["herald_cpu_seconds"].as_f64().unwrap_or(0.0),
        r["herald_cpu_percent_of_one_core"],
        r["herald_rss_mib"].as_f64().unwrap_or(0.0)
    );
    println!("{r}");
}

/// Fails unless every message arrived, each with a valid signature.
pub fn check(r: &Value) -> anyhow::Result<()> {
    anyhow::ensure!(r["drained"] == true, "not every message arrived within 60 s of the last change");
    anyhow::ensure!(r["rejected_signatures"] == 0, "signatures failed to verify");
    Ok(())
}
