//! The `delta` scenario: a big collection (`--items` of about `--item-bytes` each) in which
//! `--changes` items change before every poll, watched once by full polling and once by delta
//! polling (`poll.delta`, one after the other, so neither takes CPU from the other): upstream
//! body bytes and herald CPU per poll, and the events each sent.

use std::time::Duration;

use herald_testkit::{DeltaCursor, DeltaForm, LegacyApi, SseClient};
use herald_tests::Gateway;
use serde_json::{json, Value};

use crate::usage;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Items in the collection.
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    /// About this many bytes of JSON per item.
    #[arg(long, default_value_t = 200)]
    pub item_bytes: usize,
    /// Items changed before each poll.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Polls measured per mode.
    #[arg(long, default_value_t = 20)]
    pub polls: usize,
    /// The poll interval.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    api.set_delta_form(DeltaForm { cursor: DeltaCursor::Max, tombstones: true });
    api.add_tasks(args.items.saturating_sub(api.tasks().as_array().map_or(0, Vec::len)));
    // {"id":"12345","title":"Task 12345","done":false,"rev":123456,"notes":"…"} is about 75
    // bytes without its notes.
    api.pad_tasks(args.item_bytes.saturating_sub(75));
    let whole = api.tasks().to_string().len();
    let mut modes = Vec::new();
    for (round, delta) in [(0, None), (1, Some("{param: since, from: 'max:/rev', deleted: /deleted}"))] {
        modes.push(measure(&args, &api, upstream, round, delta).await?);
    }
    let (full, by_delta) = (&modes[0], &modes[1]);
    let ratio = |key: &str| full[key].as_f64().unwrap_or(0.0) / by_delta[key].as_f64().unwrap_or(1.0).max(1e-9);
    Ok(json!({
        "scenario": "delta",
        "items": args.items,
        "collection_bytes": whole,
        "changes_per_poll": args.changes,
        "polls": args.polls,
        "interval_seconds": args.interval.as_secs_f64(),
        "full": full,
        "delta": by_delta,
        "bytes_ratio": ratio("upstream_bytes_per_poll"),
        "cpu_ratio": ratio("cpu_ms_per_poll"),
    }))
}

/// One gateway on `/changes/tasks`, polled as `delta` says: `args.polls` polls, each after
/// `args.changes` items changed, and what they cost.
async fn measure(
    args: &Args,
    api: &LegacyApi,
    upstream: std::net::SocketAddr,
    round: usize,
    delta: Option<&str>,
) -> anyhow::Result<Value> {
    let interval = humantime::format_duration(args.interval);
    let delta = delta.map_or(String::new(), |d| format!(", delta: {d}"));
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
         upstream: {{ url: 'http://{upstream}', max_body: 1GiB, timeout: 60s }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {{ kind: memory }}\n\
         routes:\n  - name: tasks\n    path: /changes/tasks\n    access: public\n    \
         poll: {{ interval: {interval}, min_interval: {interval}, adaptive: false, jitter: 0{delta} }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let mut stream = SseClient::connect(&gw.url("/changes/tasks/event-stream"), &[]).await;
    anyhow::ensure!(stream.next().await.is_some_and(|ev| ev.event == "snapshot"), "no snapshot");
    let bytes = "herald_upstream_bytes_total{route=\"tasks\"}";
    let (cpu0, bytes0, requests0) = (usage(gw.pid()).cpu_seconds, gw.metric(bytes).await, requests(api));
    let mut events = 0;
    for poll in 0..args.polls {
        // Changed at once, right after the previous poll's events: the next poll sees them all.
        api.edit(|tasks, _| {
            for j in 0..args.changes {
                let i = (poll * args.changes + j) * 7919 % tasks.len();
                tasks[i]["title"] = json!(format!("round {round}, poll {poll}, change {j}"));
            }
        });
        for _ in 0..args.changes {
            let ev = tokio::time::timeout(args.interval * 10, stream.next()).await.ok().flatten();
            anyhow::ensure!(ev.is_some_and(|ev| ev.event == "task.updated"), "poll {poll}: a change did not arrive");
            events += 1;
        }
    }
    let polls = requests(api) - requests0;
    let cpu = usage(gw.pid()).cpu_seconds - cpu0;
    let received = gw.metric(bytes).await - bytes0;
    Ok(json!({
        "upstream_requests": polls,
        "upstream_bytes_per_poll": received / polls as f64,
        "cpu_ms_per_poll": cpu * 1000.0 / polls as f64,
        "events": events,
        "peak_rss_bytes": gw.peak_rss(),
    }))
}

fn requests(api: &LegacyApi) -> u64 {
    api.stats("/changes/tasks").requests
}

/// The table for a delta result, then its JSON line.
pub fn print(r: &Value) {
    println!(
        "delta: {} items ({} bytes), {} changed before each of {} polls every {} s",
        r["items"], r["collection_bytes"], r["changes_per_poll"], r["polls"], r["interval_seconds"]
    );
    for mode in ["full", "delta"] {
        let m = &r[mode];
        println!(
            "  {mode:>5}: {} requests   {:.0} upstream bytes per poll   {:.2} ms herald CPU per poll   {} events   peak RSS {} MiB",
            m["upstream_requests"],
            m["upstream_bytes_per_poll"].as_f64().unwrap_or(0.0),
            m["cpu_ms_per_poll"].as_f64().unwrap_or(0.0),
            m["events"],
            m["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
        );
    }
    println!(
        "  delta polling: {:.0}x fewer upstream bytes, {:.1}x less CPU per poll",
        r["bytes_ratio"].as_f64().unwrap_or(0.0),
        r["cpu_ratio"].as_f64().unwrap_or(0.0)
    );
    println!("{r}");
}
