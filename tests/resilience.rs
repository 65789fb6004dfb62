//! A flaky upstream: errors, timeouts and 429s are backed off and recovered from, without a crash.

use std::time::Duration;

use herald_tests::*;
use serde_json::json;

#[tokio::test]
async fn flaky_upstream_is_backed_off_and_recovered_from() {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, "")
        .replace("timeout: 2s", "timeout: 300ms")
        + "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll:\n      interval: 100ms\n      min_interval: 100ms\n      max_interval: 400ms\n      adaptive: false\n      jitter: 0\n";
    let mut gw = Gateway::start(&yaml).await;
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();

    api.fail_next("/tasks", [Fault::Status(500, None), Fault::Status(500, None), Fault::Delay(Duration::from_secs(1))]);
    let down = c.next_within(SOON).await.unwrap();
    assert_eq!(down.event, "upstream-status");
    assert_eq!(down.json(), json!({"ok": false, "status": 500, "error": "upstream answered 500"}));
    let up = c.next_within(SOON).await.unwrap();
    assert_eq!((up.event.as_str(), up.json()), ("upstream-status", json!({"ok": true})));
    assert!(seq(&down) < seq(&up));
    assert!(gw.metric("herald_upstream_polls_total{outcome=\"error\",route=\"tasks\"}").await >= 3.0);

    // 429 with Retry-After: herald waits at least that long before asking again.
    let before = api.stats("/tasks").requests;
    api.fail_next("/tasks", [Fault::Status(429, Some(2))]);
    let down = c.next_within(SOON).await.unwrap();
    assert_eq!(down.json()["status"], 429);
    let asked_at = tokio::time::Instant::now();
    let up = c.next_within(SOON).await.unwrap();
    assert_eq!(up.json(), json!({"ok": true}));
    assert!(asked_at.elapsed() >= Duration::from_millis(1500), "Retry-After: 2 honoured");
    // Only the failing poll and the retry after Retry-After reached the upstream meanwhile.
    assert!(api.stats("/tasks").requests - before <= 3);

    // Still serving, and changes flow again.
    api.add_task("after the storm");
    let ev = c.next_within(SOON).await.unwrap();
    assert_eq!((ev.event.as_str(), ev.json()), ("change", api.tasks()));
    assert!(gw.is_running());
}

#[tokio::test]
async fn a_first_poll_that_fails_is_answered_with_the_upstream_status() {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, "").replace("timeout: 2s", "timeout: 300ms")
        + "routes:\n  - name: task\n    path: /tasks/{id}\n    access: public\n";
    let gw = Gateway::start(&yaml).await;
    let missing = gw.subscribe("/tasks/404/event-stream", &[]).await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("no such task"));

    api.fail_next("/tasks/1", [Fault::Delay(Duration::from_secs(1))]);
    let slow = gw.subscribe("/tasks/1/event-stream", &[]).await;
    assert_eq!(slow.status, 504, "a poll that times out is a 504");
    let mut ok = gw.subscribe("/tasks/1/event-stream", &[]).await;
    assert_eq!(ok.next_within(SOON).await.unwrap().json()["id"], "1");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw =
        Gateway::start(&(config(port, "") + "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n")).await;
    assert_eq!(gw.subscribe("/tasks/event-stream", &[]).await.status, 502);
    assert_eq!(reqwest::get(gw.url("/other")).await.unwrap().status(), 502);
}

#[tokio::test]
async fn a_body_over_max_body_is_a_poll_error_not_a_crash() {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, "").replace("timeout: 2s", "timeout: 2s\n  max_body: 64KiB")
        + "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll:\n      interval: 100ms\n      min_interval: 100ms\n      adaptive: false\n";
    let mut gw = Gateway::start(&yaml).await;
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();
    api.pad_tasks(100_000);
    let down = c.next_within(SOON).await.unwrap();
    assert_eq!(down.event, "upstream-status");
    assert_eq!(down.json(), json!({"ok": false, "error": "upstream body larger than max_body (65536 bytes)"}));
    api.pad_tasks(0);
    api.add_task("small again");
    assert_eq!(c.next_within(SOON).await.unwrap().json(), json!({"ok": true}));
    assert_eq!(c.next_within(SOON).await.unwrap().json(), api.tasks());
    assert!(gw.is_running());
}
