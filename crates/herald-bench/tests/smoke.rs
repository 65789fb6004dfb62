//! Each scenario, for a few seconds with a handful of clients: they must run and measure what
//! they say (every event and message arrives). No figure is asserted: performance is measured
//! by running `herald-bench` by hand (docs/benchmarks.md).

use std::time::Duration;

use herald_bench::{cluster, delta, fanout, freshness, quota, savings, token, webhooks};
use herald_tests::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_against_the_floor_server_and_herald() {
    // Herald's subscribers split over two child processes, as when one process's file
    // descriptors would not be enough; over TLS, and over HTTP/2 (five streams a connection).
    use herald_bench::subscribers::Transport;
    for (target, per_process, transport) in [
        (fanout::Target::Floor, 20, Transport::Plain),
        (fanout::Target::Herald, 10, Transport::Plain),
        (fanout::Target::Herald, 10, Transport::Tls),
        (fanout::Target::Herald, 20, Transport::H2(5)),
    ] {
        let r = fanout::fanout(fanout::Args {
            target,
            subs: 20,
            changes: 2,
            every: Duration::from_millis(400),
            poll: Duration::from_millis(100),
            per_process,
            bench_bin: Some(env!("CARGO_BIN_EXE_herald-bench").into()),
            sub: None,
            publish: None,
            publish_body: String::new(),
            pid: Vec::new(),
            transport,
        })
        .await
        .unwrap();
        assert_eq!(r["subscribers"], 20, "{r}");
        assert_eq!(r["delivered"], r["expected"], "{target:?} {transport}: {r}");
        assert!(r["spread_ms"]["p99"].as_f64().is_some() && r["rss_mib"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_runs() {
    let r = fanout::idle(fanout::IdleArgs {
        target: fanout::Target::Herald,
        sizes: vec![10, 20],
        bench_bin: Some(env!("CARGO_BIN_EXE_herald-bench").into()),
        transport: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!(r["sizes"][1]["subscribers"], 20, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_runs() {
    let r = webhooks::run(webhooks::Args {
        subs: 3,
        batch: 1,
        every: Duration::from_millis(50),
        duration: Duration::from_secs(1),
        max_in_flight: 16,
        storage: webhooks::Storage::Embedded,
        replicas: 1,
    })
    .await
    .unwrap();
    webhooks::check(&r).unwrap();
    assert!(r["delivered_unique"].as_u64().unwrap() >= 3, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_run_on_redis_replicas() {
    if RedisServer::start().await.is_none() {
        return;
    }
    let r = webhooks::run(webhooks::Args {
        subs: 3,
        batch: 1,
        every: Duration::from_millis(50),
        duration: Duration::from_secs(1),
        max_in_flight: 16,
        storage: webhooks::Storage::Redis,
        replicas: 2,
    })
    .await
    .unwrap();
    webhooks::check(&r).unwrap();
    assert_eq!(r["replicas"], 2, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savings_runs() {
    let r = savings::run(savings::Args {
        subs: 5,
        pollers: 5,
        every: Duration::from_millis(200),
        duration: Duration::from_millis(1200),
    })
    .await
    .unwrap();
    let (through, baseline) =
        (r["upstream_requests_through_herald"].as_u64().unwrap(), r["upstream_requests_baseline"].as_u64().unwrap());
    assert!(through > 0 && baseline > through, "{r}");
    assert!(r["poller_answers"].as_u64().unwrap() > 0, "{r}");
    assert!(r["events_received"].as_u64().unwrap() > 0, "subscribers got the changes: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_runs() {
    let r = quota::run(quota::Args {
        limit: 20,
        window: Duration::from_secs(2),
        watches: 4,
        interval: Duration::from_millis(100),
        change_every: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        form: "ietf".into(),
    })
    .await
    .unwrap();
    assert_eq!(r["deliveries"], r["deliveries_expected"], "{r}");
    assert!(r["changes"].as_u64().unwrap() > 0 && r["upstream_requests"].as_u64().unwrap() > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_runs() {
    let r = delta::run(delta::Args {
        items: 300,
        item_bytes: 200,
        changes: 3,
        polls: 3,
        interval: Duration::from_millis(200),
    })
    .await
    .unwrap();
    for mode in ["full", "delta"] {
        assert_eq!(r[mode]["events"], 9, "{r}");
    }
    assert!(r["bytes_ratio"].as_f64().unwrap() > 10.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_runs() {
    // Tokens renewed every second over 6 s; then 10 s tokens (renewed after 5 s) all invalidated
    // after 3 s, so that the poll after it is answered 401 and retried. (herald drops a token
    // for a 401 at most once a quarter of its lifetime: revocations further apart are all
    // retried, see token.rs.)
    for (lifetime, invalidate_every) in [(2, None), (10, Some(Duration::from_secs(3)))] {
        let r = token::run(token::Args {
            subscribers: 5,
            lifetime: Duration::from_secs(lifetime),
            duration: Duration::from_secs(6),
            interval: Duration::from_millis(200),
            change_every: Duration::from_secs(1),
            invalidate_every,
        })
        .await
        .unwrap();
        let n = |key: &str| r[key].as_f64().unwrap();
        assert!(n("changes") > 0.0 && n("deliveries") == n("deliveries_expected"), "{r}");
        assert_eq!((n("failures_reaching_subscribers"), n("error_events")), (0.0, 0.0), "{r}");
        assert!(n("token_requests") > 1.0, "{r}");
        // Never more than one a renewal period, besides one after each 401.
        assert!(n("token_requests") <= n("token_requests_formula") + 2.0 + n("polls_answered_401"), "{r}");
        // herald counts a token once it is answered: one may be in flight.
        assert!(r["token_refreshes"]["ok"].as_f64().unwrap() + 1.0 >= n("token_requests"), "{r}");
        if invalidate_every.is_some() {
            assert!(n("invalidations") >= 1.0 && n("polls_answered_401") >= 1.0, "{r}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs() {
    if RedisServer::start().await.is_none() {
        return;
    }
    let r = cluster::run(cluster::Args {
        replicas: 2,
        subs: 5,
        changes: 2,
        every: Duration::from_millis(500),
        poll: Duration::from_millis(100),
        lease: Duration::from_secs(1),
        kills: 2,
        per_process: 15_000,
        bench_bin: Some(env!("CARGO_BIN_EXE_herald-bench").into()),
    })
    .await
    .unwrap();
    for part in ["one_process", "cluster"] {
        assert_eq!(r[part]["delivered"], r[part]["expected"], "{part}: {r}");
    }
    assert_eq!(r["cluster"]["subscribers"], 10, "{r}");
    assert_eq!(r["takeover_ms"]["kills"], 2, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_runs() {
    let r = freshness::run(freshness::Args {
        subs: 5,
        writes: 5,
        interval: Duration::from_secs(2),
        baseline_writes: 2,
        baseline_every: Duration::from_millis(200),
    })
    .await
    .unwrap();
    for part in ["refresh", "baseline"] {
        assert_eq!(r[part]["delivered"], r[part]["expected"], "{part}: {r}");
    }
    // With refresh, one poll per write (and the first); without, the schedule's only.
    assert!(r["refresh"]["upstream_polls"].as_u64().unwrap() >= 6, "{r}");
    assert!(
        r["refresh"]["latency_ms"]["p99"].as_f64().unwrap() < r["baseline"]["latency_ms"]["p50"].as_f64().unwrap(),
        "{r}"
    );
}
