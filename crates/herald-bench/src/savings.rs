//! The `savings` scenario: N SSE subscribers and M legacy pollers on one resource through herald,
//! against a baseline of the same N + M clients polling the upstream directly, counting the
//! requests the upstream serves in each case.

use std::time::{Duration, Instant};

use herald_testkit::LegacyApi;
use herald_tests::Gateway;
use serde_json::{json, Value};

use crate::subscribers::{Subscribers, PER_PROCESS};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// SSE subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Legacy pollers (plain GETs).
    #[arg(long, default_value_t = 100)]
    pub pollers: usize,
    /// How often each poller (and each client of the baseline) asks.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// How long both runs last; the upstream changes every two `every` meanwhile.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// Pollers GETting `url` every `every` until `until`; the number of answers they got.
async fn poll(url: String, n: usize, every: Duration, until: Instant) -> usize {
    let client = reqwest::Client::builder().pool_max_idle_per_host(n).build().expect("a client");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                // Spread over the interval, as independent clients are.
                tokio::time::sleep(every.mul_f64(i as f64 / n.max(1) as f64)).await;
                let mut answers = 0;
                while Instant::now() < until {
                    if client.get(&url).send().await.is_ok() {
                        answers += 1;
                    }
                    tokio::time::sleep(every).await;
                }
                answers
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total
}

/// Changes the upstream every `period` until `until`.
async fn keep_changing(api: LegacyApi, period: Duration, until: Instant) {
    let mut k = 0;
    while Instant::now() < until {
        tokio::time::sleep(period).await;
        k += 1;
        // The marker subscribers count (see `fanout`).
        api.retitle("1", &format!("chg{k:06}"));
    }
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    // Through herald: one watch polls the upstream; subscribers and pollers are answered by herald.
    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    let every = humantime::format_duration(args.every);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
         upstream: {{ url: 'http://{upstream}' }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {{ kind: memory }}\n\
         sse: {{ max_subscribers: 1000000 }}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         poll: {{ interval: {every}, min_interval: {every}, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let subscribers =
        Subscribers::start(gw.public, "/tasks/event-stream", args.subs, PER_PROCESS, &std::env::current_exe()?).await?;
    let before = api.stats("/tasks").requests;
    let until = Instant::now() + args.duration;
    let changes = tokio::spawn(keep_changing(api.clone(), args.every * 2, until));
    let answered = poll(gw.url("/tasks"), args.pollers, args.every, until).await;
    changes.await?;
    let through_herald = api.stats("/tasks").requests - before;
    let received = subscribers.finish().await.len();
    drop(gw);

    // Baseline: the same clients, all polling the upstream directly.
    let direct_api = LegacyApi::new();
    let direct = direct_api.serve("127.0.0.1:0".parse()?).await?;
    let until = Instant::now() + args.duration;
    let changes = tokio::spawn(keep_changing(direct_api.clone(), args.every * 2, until));
    poll(format!("http://{direct}/tasks"), args.subs + args.pollers, args.every, until).await;
    changes.await?;
    let baseline = direct_api.stats("/tasks").requests;

    Ok(json!({
        "scenario": "savings",
        "subscribers": args.subs,
        "pollers": args.pollers,
        "seconds": args.duration.as_secs_f64(),
        "poller_answers": answered,
        "events_received": received,
        "upstream_requests_through_herald": through_herald,
        "upstream_requests_baseline": baseline,
        "saved_fraction": 1.0 - through_herald as f64 / baseline.max(1) as f64,
    }))
}

/// The table for a savings result, then its JSON line.
pub fn print(r: &Value) {
    println!("savings: {} subscribers + {} pollers for {} s", r["subscribers"], r["pollers"], r["seconds"]);
    println!(
        "  upstream requests     through herald {}   baseline (direct polling) {}   saved {:.2}%",
        r["upstream_requests_through_herald"],
        r["upstream_requests_baseline"],
        r["saved_fraction"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!("  served by herald      {} events pushed, {} poller answers", r["events_received"], r["poller_answers"]);
    println!("{r}");
}
