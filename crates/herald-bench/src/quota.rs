//! The `quota` scenario: an upstream that allows `limit` requests per `window` and says so in
//! its answers (`X-RateLimit-*` or the IETF draft's `RateLimit`), `watches` watches polled far
//! more often than that would allow, and a change now and then: how many requests the upstream
//! refused (429), and how long each change took to reach every watch's subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::{LegacyApi, QuotaForm, SseClient};
use herald_tests::Gateway;
use serde_json::{json, Value};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Requests the upstream allows per window.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Watches (one subscriber each), all of `/tasks`, one query each.
    #[arg(long, default_value_t = 40)]
    pub watches: usize,
    /// Each watch's poll interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How often a task is added.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub change_every: Duration,
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// `ietf` (RateLimit, RateLimit-Policy) or `x` (X-RateLimit-*, the reset as a Unix time).
    #[arg(long, default_value = "x")]
    pub form: String,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let form = match args.form.as_str() {
        "ietf" => QuotaForm::Ietf,
        "x" => QuotaForm::XRateLimit,
        other => anyhow::bail!("--form {other}: expected ietf or x"),
    };
    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    let interval = humantime::format_duration(args.interval);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
         upstream: {{ url: 'http://{upstream}' }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {{ kind: memory }}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         poll: {{ interval: {interval}, min_interval: {interval}, adaptive: false }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    api.enforce_quota(args.limit, args.window, form);
    // When each marker reached each watch's subscriber.
    let arrivals: Arc<Mutex<Vec<(String, usize, Instant)>>> = Arc::default();
    let mut subscribers = Vec::new();
    for w in 0..args.watches {
        let url = gw.url(&format!("/tasks/event-stream?w={w}"));
        let mut stream = SseClient::connect(&url, &[]).await;
        let arrivals = arrivals.clone();
        subscribers.push(tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            loop {
                while let Some(ev) = stream.next().await {
                    for (at, _) in ev.data.match_indices("mark") {
                        let marker = ev.data[at..].chars().take(10).collect::<String>();
                        if seen.insert(marker.clone()) {
                            arrivals.lock().unwrap().push((marker, w, Instant::now()));
                        }
                    }
                }
                // The test client gives up on a stream after 5 minutes: a new one (its snapshot
                // has every task, so no change is missed).
                tokio::time::sleep(Duration::from_millis(100)).await;
                stream = SseClient::connect(&url, &[]).await;
            }
        }));
    }
    let start = Instant::now();
    let mut changes = Vec::new();
    while start.elapsed() + args.change_every <= args.duration {
        tokio::time::sleep(args.change_every).await;
        let marker = format!("mark{:06}", changes.len());
        api.add_task(&marker);
        changes.push((marker, Instant::now()));
    }
    // The last change gets a whole window to arrive.
    let end = start + args.duration;
    tokio::time::sleep(end.saturating_duration_since(Instant::now()).max(args.window)).await;
    let deferred = gw.metric("herald_upstream_requests_deferred_total").await;
    for s in &subscribers {
        s.abort();
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let mut delays = Vec::new();
    // How many watches each change reached.
    let mut per_change = Vec::new();
    for (marker, made) in &changes {
        let before = delays.len();
        for (_, _, at) in arrivals.iter().filter(|(m, ..)| m == marker) {
            delays.push(at.duration_since(*made).as_secs_f64());
        }
        per_change.push(delays.len() - before);
    }
    delays.sort_by(f64::total_cmp);
    let quantile = |q: f64| delays.get(((delays.len() as f64 * q) as usize).min(delays.len().saturating_sub(1)));
    Ok(json!({
        "scenario": "quota",
        "form": args.form,
        "limit": args.limit,
        "window_seconds": args.window.as_secs_f64(),
        "watches": args.watches,
        "interval_seconds": args.interval.as_secs_f64(),
        "seconds": args.duration.as_secs_f64(),
        "upstream_requests": api.stats("/tasks").requests,
        "answered_429": api.quota_refusals(),
        "deferred": deferred,
        "changes": changes.len(),
        "deliveries": delays.len(),
        "deliveries_expected": changes.len() * args.watches,
        "deliveries_per_change": per_change,
        "delay_p50_seconds": quantile(0.5),
        "delay_max_seconds": delays.last(),
    }))
}

/// The table for a quota result, then its JSON line.
pub fn print(r: &Value) {
    println!(
        "quota: {} watches every {} s against {} requests per {} s ({}), {} s",
        r["watches"], r["interval_seconds"], r["limit"], r["window_seconds"], r["form"], r["seconds"]
    );
    println!(
        "  upstream requests {}   answered 429 {}   held back by herald {}",
        r["upstream_requests"], r["answered_429"], r["deferred"]
    );
    println!(
        "  changes {}   delivered {} of {}   change → event p50 {} s, max {} s",
        r["changes"], r["deliveries"], r["deliveries_expected"], r["delay_p50_seconds"], r["delay_max_seconds"]
    );
    println!("{r}");
}
