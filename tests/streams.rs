//! SSE streams end to end: fan-out from one poll, conditional polls, resume, slow subscribers.

use std::time::Duration;

use herald_tests::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tasks_route(interval: &str, extra: &str) -> String {
    format!(
        "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll:\n      interval: {interval}\n      min_interval: {interval}\n      adaptive: false\n      jitter: 0\n{extra}"
    )
}

#[tokio::test]
async fn hundred_subscribers_cost_one_poll_per_interval() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &tasks_route("500ms", ""))).await;

    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(gw.subscribe("/tasks/event-stream", &[]).await);
    }
    for c in &mut clients {
        assert_eq!(c.status, 200);
        assert_eq!(c.headers["content-type"], "text/event-stream");
        assert_eq!(c.headers["cache-control"], "no-cache");
        assert_eq!(c.headers["x-accel-buffering"], "no");
        let snap = c.next_within(SOON).await.expect("snapshot");
        assert_eq!(snap.event, "snapshot");
        assert_eq!(snap.json(), api.tasks());
        assert_eq!(c.retry, Some(3000));
    }
    let before = api.stats("/tasks");
    let start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    api.add_task("Ship herald");
    for c in &mut clients {
        let ev = c.next_within(SOON).await.expect("change");
        assert_eq!(ev.event, "change");
        assert_eq!(ev.json(), api.tasks());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = api.stats("/tasks");
    let polls = after.requests - before.requests;
    // One watch for all 100: one poll per 500 ms interval (plus one for rounding), never 100 per interval.
    let most = (elapsed / 0.5).ceil() as u64 + 1;
    assert!(polls >= 3 && polls <= most, "{polls} polls in {elapsed:.2}s (at most {most})");
    // Every poll but the one that saw the change was a conditional hit: 304, no body.
    assert!(after.not_modified - before.not_modified >= polls - 1, "{before:?} → {after:?}");
    assert!(gw.metric("herald_upstream_polls_total{outcome=\"not_modified\",route=\"tasks\"}").await >= 2.0);
    assert_eq!(gw.metric("herald_sse_subscribers{route=\"tasks\"}").await, 100.0);
    assert_eq!(gw.metric("herald_watches{route=\"tasks\"}").await, 1.0);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_exactly_what_it_missed() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &tasks_route("200ms", ""))).await;
    // The observer stays connected so the test knows when herald has seen each change.
    let mut observer = gw.subscribe("/tasks/event-stream", &[]).await;
    observer.next_within(SOON).await.unwrap();

    let mut client = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(client.next_within(SOON).await.unwrap().event, "snapshot");
    api.add_task("one");
    let one = client.next_within(SOON).await.unwrap();
    observer.next_within(SOON).await.unwrap();
    let last = client.last_event_id.clone().unwrap();
    drop(client);

    api.add_task("two");
    let two = observer.next_within(SOON).await.unwrap();
    api.retitle("1", "three");
    let three = observer.next_within(SOON).await.unwrap();

    for resume in [
        gw.subscribe("/tasks/event-stream", &[("last-event-id", &last)]).await,
        gw.subscribe(&format!("/tasks/event-stream?lastEventId={last}"), &[]).await,
    ] {
        let mut resume = resume;
        let got = vec![resume.next_within(SOON).await.unwrap(), resume.next_within(SOON).await.unwrap()];
        assert_eq!(got, vec![two.clone(), three.clone()], "exactly the missed events, in order, no snapshot");
        assert!(seq(&one) < seq(&got[0]) && seq(&got[0]) < seq(&got[1]));
        assert_eq!(got[1].json(), api.tasks());
    }

    // An id the history does not hold (or garbage) gets a fresh snapshot.
    for bad in ["1-999999", "garbage", &"9".repeat(300)] {
        let mut c = gw.subscribe("/tasks/event-stream", &[("last-event-id", bad)]).await;
        let ev = c.next_within(SOON).await.unwrap();
        assert_eq!(ev.event, "snapshot", "for {bad:.20}");
        assert_eq!(ev.json(), api.tasks());
    }
}

#[tokio::test]
async fn accept_header_asks_for_a_stream_and_query_is_part_of_the_watch() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &tasks_route("200ms", ""))).await;
    // SseClient sends Accept: text/event-stream on the plain route path.
    let mut c = gw.subscribe("/tasks", &[]).await;
    assert_eq!(c.next_within(SOON).await.unwrap().json(), api.tasks());
    let mut q = gw.subscribe("/tasks/event-stream?state=open", &[]).await;
    assert_eq!(q.next_within(SOON).await.unwrap().event, "snapshot");
    let watches: Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    let mut paths: Vec<_> =
        watches["watches"].as_array().unwrap().iter().map(|w| w["path"].as_str().unwrap().to_string()).collect();
    paths.sort();
    assert_eq!(paths, ["/tasks", "/tasks?state=open"]);
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_delay_the_others_and_is_resynced() {
    let (api, upstream) = start_api().await;
    // Big representations (3 tasks of 200 KB) fill the stalled client's socket buffers quickly.
    api.pad_tasks(200_000);
    let gw = Gateway::start(&config(upstream, &format!("{}sse:\n  queue: 4\n", tasks_route("100ms", "")))).await;

    let mut live = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(live.next_within(SOON).await.unwrap().event, "snapshot");

    // A client that sends its request and then never reads.
    let mut stalled = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    stalled
        .write_all(b"GET /tasks/event-stream HTTP/1.1\r\nhost: herald\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    gw.metric_until("herald_sse_subscribers{route=\"tasks\"}", |open| open == 2.0).await;

    let changes = 30;
    for i in 0..changes {
        api.retitle("1", &format!("title {i}"));
        let ev = live.next_within(SOON).await.expect("the live subscriber keeps receiving");
        assert_eq!(ev.event, "change");
        assert_eq!(ev.json()[0]["title"], format!("title {i}"));
    }

    // Now the stalled client reads. herald noticed it fell behind when its socket drained: a
    // new snapshot replaced the events it could not take, and it ends on the current state.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let final_title = format!("\"title {}\"", changes - 1);
    loop {
        let n = tokio::time::timeout(SOON, stalled.read(&mut buf)).await.expect("stream stays open").unwrap();
        assert!(n > 0, "stream closed");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if text.matches("event: snapshot").count() >= 2 && text.contains(&final_title) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.rsplit_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase across the resync: {ids:?}");
    assert!(ids.len() < changes + 1, "the stalled client skipped events by resyncing, it got {} ids", ids.len());
    assert!(gw.metric("herald_sse_resyncs_total{route=\"tasks\"}").await >= 1.0);
}

#[tokio::test]
async fn without_validators_the_hash_decides() {
    let (api, upstream) = start_api().await;
    api.without_validators();
    let gw = Gateway::start(&config(upstream, &tasks_route("100ms", ""))).await;
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();
    // Three polls found the same body; had one made an event, it would be waiting by now.
    gw.metric_until("herald_upstream_polls_total{outcome=\"unchanged\",route=\"tasks\"}", |v| v >= 3.0).await;
    assert!(c.next_within(Duration::from_millis(300)).await.is_none(), "an identical body is no change");
    api.add_task("new");
    let ev = c.next_within(SOON).await.unwrap();
    assert_eq!((ev.event.as_str(), ev.json()), ("change", api.tasks()));
}

#[tokio::test]
async fn over_max_subscribers_is_503_with_retry_after() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(
        upstream,
        &format!("{}sse:\n  max_subscribers: 2\n  retry: 2s\n", tasks_route("1s", "")),
    ))
    .await;
    let _a = gw.subscribe("/tasks/event-stream", &[]).await;
    let _b = gw.subscribe("/tasks/event-stream", &[]).await;
    let c = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(c.status, 503);
    assert_eq!(c.headers["retry-after"], "2");
    drop(_a);
    gw.metric_until("herald_sse_subscribers{route=\"tasks\"}", |v| v == 1.0).await;
    assert_eq!(gw.subscribe("/tasks/event-stream", &[]).await.status, 200, "a freed place is reusable");
}

#[tokio::test]
async fn heartbeats_keep_idle_streams_alive_and_cors_is_answered() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(
        upstream,
        &format!("{}sse:\n  heartbeat: 200ms\n  cors_origins: [\"https://app.example.com\"]\n", tasks_route("5s", "")),
    ))
    .await;
    let mut c = gw.subscribe("/tasks/event-stream", &[("origin", "https://app.example.com")]).await;
    assert_eq!(c.headers["access-control-allow-origin"], "https://app.example.com");
    c.next_within(SOON).await.unwrap();
    assert!(c.next_within(Duration::from_millis(900)).await.is_none());
    assert!(c.comments >= 2, "heartbeat comments: {}", c.comments);
    let other = gw.subscribe("/tasks/event-stream", &[("origin", "https://evil.example.com")]).await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));

    // A long poll from that origin (the client libraries' fallback) reads the cache answer and
    // its validators; another origin does not.
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, gw.url("/tasks"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-headers", "if-none-match, prefer")
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_string();
    assert!(allowed.contains("if-none-match") && allowed.contains("prefer"), "{allowed}");
    let cached = client.get(gw.url("/tasks")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(cached.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(cached.headers()["access-control-expose-headers"].to_str().unwrap().contains("etag"));
    assert!(cached.headers().contains_key("etag"));
    let cached = client.get(gw.url("/tasks")).header("origin", "https://evil.example.com").send().await.unwrap();
    assert!(!cached.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn over_http2_a_stalled_stream_does_not_block_the_others_on_its_connection() {
    let (api, upstream) = start_api().await;
    api.pad_tasks(200_000);
    let gw = Gateway::start(&config(upstream, &format!("{}sse:\n  queue: 4\n", tasks_route("100ms", "")))).await;
    // One HTTP/2 connection (cleartext, prior knowledge) carries both streams.
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = gw.url("/tasks/event-stream");
    let stalled = client.get(&url).send().await.unwrap();
    assert_eq!(stalled.version(), reqwest::Version::HTTP_2);
    let live = client.get(&url).send().await.unwrap();
    assert_eq!(live.version(), reqwest::Version::HTTP_2);
    let mut live = live.bytes_stream();
    let mut seen = String::new();
    for i in 0..20 {
        api.retitle("1", &format!("title {i}"));
        let want = format!("\"title {i}\"");
        let deadline = tokio::time::Instant::now() + SOON;
        while !seen.contains(&want) {
            let chunk = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut live))
                .await
                .expect("the live stream keeps flowing")
                .unwrap()
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        // Keep only what follows the last complete event.
        if let Some(end) = seen.rfind("\n\n") {
            seen.drain(..end + 2);
        }
    }
    // The stalled stream, read at last, was resynced rather than skipped.
    let mut stalled = stalled.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + SOON;
    while !(text.matches("event: snapshot").count() >= 2 && text.contains("\"title 19\"")) {
        let chunk = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut stalled))
            .await
            .expect("the stalled stream resumes")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// A stream opened on a fresh connection is written by herald directly (no HTTP/1 server state
/// kept for it); one opened after another request on a keep-alive connection goes through
/// hyper. Both stream the same events, and a client that leaves is noticed.
#[tokio::test]
async fn streams_on_fresh_and_reused_connections_behave_the_same() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &tasks_route("50ms", ""))).await;
    let head = b"GET /tasks/event-stream HTTP/1.1\r\nhost: x\r\n\r\n";

    let mut fresh = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    fresh.write_all(head).await.unwrap();
    let mut reused = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    reused.write_all(b"GET /echo/x HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let first = read_until(&mut reused, b"\"path\":\"/echo/x\"").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    reused.write_all(head).await.unwrap();

    api.add_task("seen by both");
    for (name, conn) in [("fresh", &mut fresh), ("reused", &mut reused)] {
        let got = read_until(conn, b"seen by both").await;
        assert!(got.contains("text/event-stream") && got.contains("event: snapshot"), "{name}: {got}");
        assert!(got.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{name}: {got}");
    }
    assert_eq!(gw.metric("herald_sse_subscribers{route=\"tasks\"}").await, 2.0);
    drop(fresh);
    drop(reused);
    let deadline = tokio::time::Instant::now() + SOON;
    while gw.metric("herald_sse_subscribers{route=\"tasks\"}").await != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "the streams of clients that left are closed");
        api.add_task("nudge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads from `conn` until `needle` has arrived; returns all of it as text.
async fn read_until(conn: &mut tokio::net::TcpStream, needle: &[u8]) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(SOON, async {
        while !got.windows(needle.len()).any(|w| w == needle) {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("arrived in time");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn history_is_bounded_in_bytes_too() {
    let (api, upstream) = start_api().await;
    // Each change event carries the whole list of tasks padded to about 3 KiB each: well over
    // the 8 KiB of history, so only the newest events stay.
    let gw = Gateway::start(&config(
        upstream,
        &tasks_route("100ms", "    events:\n      history: 1000\n      history_bytes: 8KiB\n"),
    ))
    .await;
    api.pad_tasks(3 << 10);
    let mut observer = gw.subscribe("/tasks/event-stream", &[]).await;
    observer.next_within(SOON).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        api.add_task(&format!("t{i}"));
        ids.push(observer.next_within(SOON).await.unwrap().id.unwrap());
    }
    // The newest event is still held: resuming from the one before gets exactly it.
    let mut recent = gw.subscribe("/tasks/event-stream", &[("last-event-id", &ids[2])]).await;
    assert_eq!(recent.next_within(SOON).await.unwrap().id.as_deref(), Some(ids[3].as_str()));
    // The first one's successors went over the byte bound: a fresh snapshot instead.
    let mut old = gw.subscribe("/tasks/event-stream", &[("last-event-id", &ids[0])]).await;
    let ev = old.next_within(SOON).await.unwrap();
    assert_eq!(ev.event, "snapshot");
    assert_eq!(ev.json(), api.tasks());
}
