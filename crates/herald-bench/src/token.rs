//! The `token` scenario: a stream whose upstream wants a short-lived OAuth 2.0 bearer token
//! (`upstream.auth`, client credentials, from the testkit's `POST /oauth/token`), `--subscribers`
//! subscribers on it for `--duration`, a task added every `--change-every` and, optionally, every
//! token revoked every `--invalidate-every`: how many tokens herald asked for against what
//! renewing `lifetime − margin` after each one implies, how many polls the upstream answered 401,
//! whether any of them reached a subscriber as an error, and every change delivered to every
//! subscriber.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_testkit::{LegacyApi, SseClient};
use herald_tests::Gateway;
use serde_json::{json, Value};

use crate::percentile;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Subscribers on `/service/tasks/event-stream` (one watch, polled with the token).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// How long each token lives (the token endpoint's `expires_in`: whole seconds).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lifetime: Duration,
    /// How long changes (and invalidations) go on once every subscriber is connected. A little
    /// over 10 minutes, so that a renewal due at the 10th minute falls inside the run.
    #[arg(long, default_value = "605s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The route's poll interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How often a task is added on the upstream.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub change_every: Duration,
    /// Every token issued so far is invalidated this often (a revocation, a key rotation): the
    /// next poll is answered 401, and herald must ask for a new token and poll again.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub invalidate_every: Option<Duration>,
}

/// The client herald is configured with, and the one the token endpoint knows.
const CLIENT_ID: &str = "herald";
const CLIENT_SECRET: &str = "bench-secret";

/// Change markers are task titles: `chg000001`…
const MARKER: &str = "chg";
const MARKER_LEN: usize = MARKER.len() + 6;

/// How long before a token expires herald renews it: 10% of its lifetime, at least 30 s, at most
/// half of it (docs/configuration.md, `upstream.auth`). Stated here again rather than imported:
/// it is what the measured figure is held against.
pub fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).max(Duration::from_secs(30)).min(lifetime / 2)
}

/// Token requests a client renewing every `period` makes over `run`: one at the start and one
/// every `period` after it, the count starting over at each of `restarts` (offsets into the run
/// at which every token was invalidated, so that the next poll needed a new one).
pub fn expected_requests(run: Duration, period: Duration, restarts: &[Duration]) -> u64 {
    let mut bounds = vec![Duration::ZERO];
    bounds.extend(restarts.iter().copied().filter(|r| *r < run));
    bounds.push(run);
    let period = period.as_nanos().max(1);
    bounds.windows(2).map(|w| (w[1] - w[0]).as_nanos().div_ceil(period) as u64).sum()
}

/// What one subscriber received.
#[derive(Default)]
struct Seen {
    /// Change markers, in any event (a `task.created`, or a snapshot after a reconnect).
    markers: HashSet<String>,
    /// `upstream-status` events saying the upstream failed: what a poll error looks like to a
    /// subscriber.
    failures: usize,
    /// `upstream-status` events saying it answers again.
    recoveries: usize,
    /// `error` events (herald ending the stream).
    errors: usize,
    /// The first failure's data, for the report.
    first_failure: Option<String>,
    /// Streams opened again after one ended.
    reconnects: usize,
    /// Reconnections answered with something other than a stream.
    refused: usize,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.lifetime >= Duration::from_secs(2) && args.lifetime.subsec_nanos() == 0,
        "--lifetime {:?}: whole seconds, at least 2 s (expires_in is in seconds)",
        args.lifetime
    );
    let api = LegacyApi::new();
    let upstream = api.serve("127.0.0.1:0".parse()?).await?;
    api.issue_tokens(CLIENT_ID, CLIENT_SECRET, args.lifetime);
    let interval = humantime::format_duration(args.interval);
    let yaml = format!(
        "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0 }}\n\
         upstream:\n  url: 'http://{upstream}'\n  \
         auth: {{ kind: oauth2_client_credentials, token_url: 'http://{upstream}/oauth/token', \
         client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET} }}\n\
         log: {{ format: json, level: info }}\n\
         storage: {{ kind: memory }}\n\
         routes:\n  - name: service\n    path: /service/tasks\n    access: public\n    \
         poll: {{ interval: {interval}, min_interval: {interval}, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let url = gw.url("/service/tasks/event-stream");
    let delivered = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let stream = SseClient::connect(&url, &[]).await;
        anyhow::ensure!(stream.status == 200, "a subscriber was answered {}: {}", stream.status, stream.body);
        subscribers.push(tokio::spawn(subscribe(stream, url.clone(), delivered.clone(), stopped.clone())));
    }

    // The first subscriber's poll asked for the first token: the run, for tokens, starts there.
    let first_token = *api.token_issue_times().first().ok_or_else(|| anyhow::anyhow!("no token was issued"))?;
    let start = Instant::now();
    let end = start + args.duration;
    let mut changes = 0;
    // When every token was invalidated, from the first token.
    let mut restarts = Vec::new();
    let mut next_change = start + args.change_every;
    let mut next_invalidation = args.invalidate_every.map(|every| start + every);
    loop {
        // Changes up to the end (their delivery is awaited after it), invalidations before it
        // (the poll answered 401 after one at the very end would fall outside the counts).
        let invalidation = next_invalidation.filter(|at| *at < end);
        let next = invalidation.map_or(next_change, |i| i.min(next_change));
        if next > end {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        if next == next_change {
            changes += 1;
            api.add_task(&format!("{MARKER}{changes:06}"));
            next_change += args.change_every;
        }
        if let (Some(at), Some(every)) = (invalidation, args.invalidate_every) {
            if at == next {
                api.invalidate_tokens();
                restarts.push(at.duration_since(first_token));
                next_invalidation = Some(at + every);
            }
        }
    }
    tokio::time::sleep_until(end.into()).await;
    let run = end.duration_since(first_token);
    let (requests, rejected, issued, polls) =
        (api.token_requests(), api.rejected_tokens(), api.token_issue_times(), api.stats("/service/tasks").requests);
    let refresh = |outcome: &str| format!("herald_upstream_token_refreshes_total{{outcome=\"{outcome}\"}}");
    let refreshes = json!({
        "ok": gw.metric(&refresh("ok")).await,
        "refused": gw.metric(&refresh("refused")).await,
        "error": gw.metric(&refresh("error")).await,
    });
    let poll_errors = gw.metric("herald_upstream_polls_total{outcome=\"error\",route=\"service\"}").await;

    // The last change gets time to reach every subscriber (a poll, then the fan-out).
    let expected_deliveries = changes * args.subscribers;
    let deadline = Instant::now() + Duration::from_secs(60) + args.interval * 10;
    while delivered.load(Ordering::Relaxed) < expected_deliveries && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    let mut seen = Vec::with_capacity(subscribers.len());
    for s in subscribers {
        seen.push(s.await?);
    }
    let sum = |f: fn(&Seen) -> usize| seen.iter().map(f).sum::<usize>();

    let margin = renew_margin(args.lifetime);
    let period = args.lifetime - margin;
    let expected = expected_requests(run, period, &restarts);
    let mut gaps: Vec<f64> = issued.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    gaps.sort_by(f64::total_cmp);
    Ok(json!({
        "scenario": "token",
        "subscribers": args.subscribers,
        "lifetime_seconds": args.lifetime.as_secs_f64(),
        "renew_margin_seconds": margin.as_secs_f64(),
        "interval_seconds": args.interval.as_secs_f64(),
        "invalidate_every_seconds": args.invalidate_every.map(|d| d.as_secs_f64()),
        "seconds": run.as_secs_f64(),
        "token_requests": requests,
        "token_requests_expected": expected,
        "token_requests_formula": run.as_secs_f64() / period.as_secs_f64(),
        "ratio": requests as f64 / expected.max(1) as f64,
        "renewal_gap_seconds": { "p50": percentile(&gaps, 50.0), "min": gaps.first(), "max": gaps.last() },
        "token_refreshes": refreshes,
        "invalidations": restarts.len(),
        "upstream_polls": polls,
        "polls_answered_401": rejected,
        "poll_errors": poll_errors,
        "failures_reaching_subscribers": sum(|s| s.failures),
        "subscribers_with_failures": seen.iter().filter(|s| s.failures > 0).count(),
        "first_failure": seen.iter().find_map(|s| s.first_failure.clone()),
        "recoveries": sum(|s| s.recoveries),
        "error_events": sum(|s| s.errors),
        "reconnects": sum(|s| s.reconnects),
        "reconnects_refused": sum(|s| s.refused),
        "changes": changes,
        "deliveries": sum(|s| s.markers.len()),
        "deliveries_expected": expected_deliveries,
    }))
}

/// One subscriber: reads `stream` until `stop`, counting markers (into `delivered` too) and
/// failures; a stream that ends is resumed from its last event id, as EventSource would.
async fn subscribe(
    mut stream: SseClient,
    url: String,
    delivered: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut last_id: Option<String> = None;
    loop {
        let ev = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return seen,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else {
            // The test client gives up on a stream after 5 minutes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let headers: Vec<_> = last_id.iter().map(|id| ("last-event-id", id.as_str())).collect();
            stream = SseClient::connect(&url, &headers).await;
            seen.reconnects += 1;
            if stream.status != 200 {
                seen.refused += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            continue;
        };
        if ev.id.is_some() {
            last_id = ev.id.clone();
        }
        match ev.event.as_str() {
            "upstream-status" => {
                let ok = serde_json::from_str::<Value>(&ev.data).is_ok_and(|v| v["ok"] == true);
                if ok {
                    seen.recoveries += 1;
                } else {
                    seen.failures += 1;
                    seen.first_failure.get_or_insert_with(|| ev.data.clone());
                }
            }
            "error" => seen.errors += 1,
            _ => {}
        }
        for (at, _) in ev.data.match_indices(MARKER) {
            if let Some(marker) = ev.data.get(at..at + MARKER_LEN) {
                if seen.markers.insert(marker.to_string()) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The table for a token result, then its JSON line.
pub fn print(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let invalidating = match r["invalidate_every_seconds"].as_f64() {
        Some(every) => format!(", every token invalidated every {every} s ({} times)", r["invalidations"]),
        None => String::new(),
    };
    println!(
        "token: {} subscribers, polled every {} s, tokens living {} s (renewed {} s before expiry), {:.0} s{invalidating}",
        r["subscribers"],
        r["interval_seconds"],
        r["lifetime_seconds"],
        r["renew_margin_seconds"],
        f(&r["seconds"])
    );
    println!(
        "  token requests {}   expected {} (run / (lifetime − margin) = {:.1})   ratio {:.2}   renewed every {:.1} s (median; {:.1}–{:.1})",
        r["token_requests"],
        r["token_requests_expected"],
        f(&r["token_requests_formula"]),
        f(&r["ratio"]),
        f(&r["renewal_gap_seconds"]["p50"]),
        f(&r["renewal_gap_seconds"]["min"]),
        f(&r["renewal_gap_seconds"]["max"]),
    );
    let refreshes = &r["token_refreshes"];
    println!(
        "  token refreshes (herald): ok {}   refused {}   error {}",
        refreshes["ok"], refreshes["refused"], refreshes["error"]
    );
    println!(
        "  upstream polls {}   answered 401 {}   failed polls (herald) {}",
        r["upstream_polls"], r["polls_answered_401"], r["poll_errors"]
    );
    println!(
        "  reaching subscribers: failures {} (on {} subscribers)   recoveries {}   error events {}   reconnects {}",
        r["failures_reaching_subscribers"],
        r["subscribers_with_failures"],
        r["recoveries"],
        r["error_events"],
        r["reconnects"]
    );
    println!("  changes {}   delivered {} of {}", r["changes"], r["deliveries"], r["deliveries_expected"]);
    println!("{r}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_margin_is_herald_s() {
        assert_eq!(renew_margin(S(30)), S(15), "capped at half");
        assert_eq!(renew_margin(S(120)), S(30), "at least 30 s");
        assert_eq!(renew_margin(S(3600)), S(360), "a tenth");
        assert_eq!(renew_margin(S(2)), S(1));
    }

    #[test]
    fn one_request_at_the_start_and_one_every_period() {
        // 0, 15, …, 600: 41 over 605 s; a renewal due at the very end is not in the run.
        assert_eq!(expected_requests(S(605), S(15), &[]), 41);
        assert_eq!(expected_requests(S(600), S(15), &[]), 40);
        assert_eq!(expected_requests(S(10), S(15), &[]), 1);
    }

    #[test]
    fn an_invalidation_starts_the_count_over() {
        // Every 37 s: 0, 15, 30 in each of 16 whole segments, then one in the last 13 s.
        let restarts: Vec<_> = (1..=16).map(|k| S(37 * k)).collect();
        assert_eq!(expected_requests(S(605), S(15), &restarts), 16 * 3 + 1);
        // One at the very end of the run costs nothing inside it.
        assert_eq!(expected_requests(S(30), S(15), &[S(30)]), 2);
    }
}
