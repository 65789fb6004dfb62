//! Following a request: the access log (`server.access_log`) and W3C `traceparent`, passed
//! through from clients and added to polls and webhook deliveries.

use std::time::Duration;

use herald_testkit::Receiver;
use herald_tests::*;
use serde_json::{json, Value};

const ROUTES: &str = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
                      poll: { interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0 }\n    \
                      events: { format: collection, type: task, collection: { id: /id } }\n";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The access log's lines, parsed.
fn access_lines(gw: &Gateway) -> Vec<Value> {
    gw.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "herald::access")
        .map(|v| v["fields"].clone())
        .collect()
}

/// A well-formed `traceparent` value's trace id.
fn trace_id(traceparent: &str) -> &str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16), "{traceparent}");
    parts[1]
}

#[tokio::test]
async fn the_access_log_has_a_line_per_request_and_no_credential() {
    let (_api, upstream) = start_api().await;
    let yaml = config(upstream, ROUTES).replace("shutdown_grace: 3s", "shutdown_grace: 3s\n  access_log: true");
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();

    let echo = client
        .get(gw.url("/echo/x?token=query-secret-123"))
        .header("authorization", "Bearer header-secret-456")
        .header("traceparent", TRACE)
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), 200);
    let echoed: Value = serde_json::from_str(&echo.text().await.unwrap()).unwrap();
    assert_eq!(echoed["headers"]["traceparent"], TRACE, "passed through untouched");

    let mut stream = gw.subscribe("/tasks/event-stream", &[("cookie", "session=cookie-secret-789")]).await;
    assert_eq!(stream.status, 200);
    stream.next_within(SOON).await.expect("a snapshot");
    drop(stream);
    assert_eq!(client.get(gw.url("/tasks")).send().await.unwrap().status(), 200);

    eventually("three access lines", || access_lines(&gw).len() >= 3).await;
    let lines = access_lines(&gw);
    let pass = lines.iter().find(|l| l["route"] == "pass-through").expect("the pass-through's line");
    assert_eq!(
        (pass["method"].as_str(), pass["path"].as_str(), pass["status"].as_u64()),
        (Some("GET"), Some("/echo/x"), Some(200))
    );
    assert_eq!(pass["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(pass["bytes"].as_u64().unwrap() > 0 && pass["duration_ms"].as_f64().is_some());
    let streamed = lines.iter().find(|l| l["path"] == "/tasks/event-stream").expect("the stream's line, when it ended");
    assert_eq!((streamed["route"].as_str(), streamed["trace_id"].as_str()), (Some("tasks"), Some("-")));
    assert!(streamed["bytes"].as_u64().unwrap() > 0);
    assert!(lines.iter().any(|l| l["path"] == "/tasks" && l["route"] == "tasks"), "the cache answer's line");

    let logs = gw.logs();
    for secret in ["query-secret-123", "header-secret-456", "cookie-secret-789"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[tokio::test]
async fn the_fast_lane_passes_a_traceparent_through_too() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let echo = reqwest::Client::new().get(gw.url("/echo")).header("traceparent", TRACE).send().await.unwrap();
    let echoed: Value = serde_json::from_str(&echo.text().await.unwrap()).unwrap();
    assert_eq!(echoed["headers"]["traceparent"], TRACE);
    assert!(access_lines(&gw).is_empty(), "no access log unless asked for");
}

#[tokio::test]
async fn every_poll_and_webhook_attempt_carries_a_traceparent_of_its_own() {
    let (api, upstream) = start_api().await;
    let receiver = Receiver::new();
    let addr = receiver.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let key = "test-api-key-0123456789";
    let yaml = config(
        upstream,
        &format!(
            "storage:\n  kind: memory\nwebhooks:\n  api_keys: [{key}]\n  allow_private_destinations: [127.0.0.0/8]\n{ROUTES}"
        ),
    );
    let gw = Gateway::start(&yaml).await;
    let created = reqwest::Client::new()
        .post(gw.url("/_herald/v1/webhooks"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(json!({"url": format!("http://{addr}/hook"), "path": "/tasks"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let secret: Value = serde_json::from_str(&created.text().await.unwrap()).unwrap();
    receiver.trust(secret["secret"].as_str().unwrap());

    eventually("a few polls", || api.seen("/tasks").len() >= 3).await;
    let polls: Vec<String> = api.seen("/tasks").into_iter().map(|r| r.traceparent.expect("a traceparent")).collect();
    let ids: std::collections::HashSet<&str> = polls.iter().map(|t| trace_id(t)).collect();
    assert_eq!(ids.len(), polls.len(), "a new trace per poll");
    // herald logs each poll's trace id, so a line of the upstream's can be found in herald's.
    let last = trace_id(polls.last().unwrap()).to_string();
    eventually("the poll's trace id in herald's log", || gw.logs().contains(&last)).await;

    api.add_task("traced");
    assert!(receiver.wait_until(Duration::from_secs(10), |d| !d.is_empty()).await, "a delivery");
    let delivery = receiver.accepted().remove(0);
    let traced = delivery.traceparent.expect("a traceparent on the delivery");
    assert!(!ids.contains(trace_id(&traced)));
}

#[tokio::test]
async fn the_status_page_and_its_feed_need_the_admin_token_and_show_no_scope() {
    const TOKEN: &str = "status-token-0123456789";
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    let yaml = config(
        upstream,
        "routes:\n  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n",
    )
    .replacen("server:\n", &format!("server:\n  admin_token: {TOKEN}\n"), 1);
    let gw = Gateway::start(&yaml).await;
    let mut mine = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    assert_eq!(mine.next_within(SOON).await.unwrap().event, "snapshot");

    let client = reqwest::Client::new();
    let admin = |path: &str| format!("http://{}{path}", gw.admin);
    for path in ["/", "/admin/status", "/admin/status/events"] {
        let refused = client.get(admin(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let challenges: Vec<_> = refused.headers().get_all("www-authenticate").iter().collect();
        assert!(challenges[0].to_str().unwrap().starts_with("Basic realm="), "{challenges:?}");
        let wrong = client.get(admin(path)).basic_auth("admin", Some("not-the-token-0123456")).send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    let page = client.get(admin("/")).basic_auth("anyone", Some(TOKEN)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("EventSource"));

    let watches: Value = serde_json::from_str(
        &client.get(admin("/admin/watches")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap(),
    )
    .unwrap();
    let scope = watches["watches"][0]["scope"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {TOKEN}");
    let mut feed =
        herald_testkit::SseClient::connect(&admin("/admin/status/events"), &[("authorization", &bearer)]).await;
    assert_eq!(feed.status, 200);
    let status = feed.next_within(SOON).await.expect("a status event");
    assert_eq!(status.event, "status");
    let state = status.json();
    assert_eq!(state["watches"][0]["route"], "mine");
    assert_eq!(state["watches"][0]["subscribers"], 1);
    assert_eq!(state["routes"]["mine"]["subscribers"], 1.0);
    assert!(!status.data.contains(&scope) && !status.data.contains("alice"), "{}", status.data);
    // Live: the states that follow come by themselves, and show the subscriber gone.
    drop(mine);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let later = feed.next_within(SOON).await.expect("the next status event");
        if later.json()["watches"][0]["subscribers"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the feed still shows the subscriber: {}", later.data);
    }
}
