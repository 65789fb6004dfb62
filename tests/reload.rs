//! `SIGHUP` reloads gateway.yaml (section 14): unchanged routes keep their watches, streams and
//! history; changed and removed routes end their streams with `reconfigured`; a file with
//! problems is refused with `herald check`'s messages and the running configuration stays.

use std::time::Duration;

use herald_tests::*;

const TASKS: &str = "  - name: tasks\n    path: /tasks\n    access: public\n    \
                     poll: { interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0 }\n    \
                     events: { format: collection, type: task, collection: { id: /id } }\n";
const BOARD: &str = "  - name: board\n    path: /board\n    access: public\n    \
                     poll: { interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0 }\n    \
                     events: { format: json-patch, array_id: /id }\n";
const TASK: &str = "  - name: task\n    path: '/tasks/{id}'\n    access: public\n    \
                    poll: { interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0 }\n    \
                    events: { format: merge-patch }\n";

/// A stream of `path` whose first event, its snapshot, has been read.
async fn streaming(gw: &Gateway, path: &str) -> herald_testkit::SseClient {
    let mut stream = gw.subscribe(path, &[]).await;
    assert_eq!(stream.status, 200, "{path}");
    assert_eq!(stream.next_within(SOON).await.unwrap().event, "snapshot", "{path}");
    stream
}

/// The next `error` event of a stream, past any change events still on their way.
async fn error_event(stream: &mut herald_testkit::SseClient) -> herald_testkit::SseEvent {
    tokio::time::timeout(SOON, async {
        loop {
            let ev = stream.next().await.expect("an error event before the stream ends");
            if ev.event == "error" {
                return ev;
            }
        }
    })
    .await
    .expect("an error event in time")
}

/// Rewrites the gateway's file and sends SIGHUP; waits for the log line saying how it went.
async fn reload(gw: &Gateway, yaml: &str, outcome: &str) {
    let before = gw.logs().matches(outcome).count();
    std::fs::write(gw.config_file(), yaml).unwrap();
    gw.signal("HUP");
    eventually(outcome, || gw.logs().matches(outcome).count() > before).await;
}

#[tokio::test]
async fn unchanged_routes_keep_their_streams_and_removed_ones_are_told() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &format!("routes:\n{TASKS}{BOARD}"))).await;
    let mut tasks = streaming(&gw, "/tasks/event-stream").await;
    let mut board = streaming(&gw, "/board/event-stream").await;
    api.add_task("before the reload");
    let created = tasks.next_within(SOON).await.unwrap();
    assert_eq!(created.event, "task.created");

    // Adds a route, removes one, leaves one as it was.
    reload(&gw, &config(upstream, &format!("routes:\n{TASKS}{TASK}")), "configuration reloaded").await;

    // (The task added above changed the board too: its patch may come first.)
    let error = error_event(&mut board).await;
    assert_eq!(error.data, r#"{"reason":"reconfigured"}"#, "the removed route's stream is told");
    assert!(board.next_within(Duration::from_secs(2)).await.is_none(), "and then ends");

    // The unchanged route's stream goes on where it was: the next event, no new snapshot.
    let id = api.add_task("after the reload");
    let next = tasks.next_within(SOON).await.unwrap();
    assert_eq!(next.event, "task.created");
    assert_eq!(next.json()["resourceId"], id.as_str());
    assert_eq!(seq(&next), seq(&created) + 1, "the same watch and history");

    // The new route streams; the removed one is no route any more (passed through).
    streaming(&gw, &format!("/tasks/{id}/event-stream")).await;
    let gone = gw.subscribe("/board/event-stream", &[]).await;
    assert_ne!(gone.status, 200);
    let watches = gw.admin_get("/admin/watches").await;
    assert!(!watches.contains("\"board\""), "{watches}");
    // The removed route's watch stopped polling (the new stream above was passed through: one
    // more request at most).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polled = api.seen("/board").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(api.seen("/board").len(), polled, "the retired watch polls no more");
}

#[tokio::test]
async fn a_changed_route_ends_its_streams_and_serves_the_new_settings() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &format!("routes:\n{TASKS}{BOARD}"))).await;
    let mut board = streaming(&gw, "/board/event-stream").await;
    let mut tasks = streaming(&gw, "/tasks/event-stream").await;

    let snapshots = BOARD.replace("format: json-patch, array_id: /id", "format: snapshot");
    reload(&gw, &config(upstream, &format!("routes:\n{TASKS}{snapshots}")), "configuration reloaded").await;
    let error = error_event(&mut board).await;
    assert_eq!(error.data, r#"{"reason":"reconfigured"}"#);
    streaming(&gw, "/board/event-stream").await;
    // Nothing but heartbeats on the unchanged route (the demo API changes nothing by itself here).
    assert!(tasks.next_within(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn a_file_with_problems_is_refused_and_the_running_configuration_stays() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &format!("routes:\n{TASKS}"))).await;
    let mut tasks = streaming(&gw, "/tasks/event-stream").await;

    let bad = config(upstream, &format!("routes:\n{}", TASKS.replace("interval: 100ms,", "interval: 5 secs,")));
    reload(&gw, &bad, "reload refused").await;
    // herald check's own words, with file, line and column.
    let logs = gw.logs();
    assert!(logs.contains("gateway.yaml:") && logs.contains("routes[0].poll.interval: invalid duration"), "{logs}");

    api.add_task("still served");
    assert_eq!(tasks.next_within(SOON).await.unwrap().event, "task.created");
    assert_eq!(reqwest::get(gw.url("/tasks")).await.unwrap().headers()["x-herald-cache"], "hit");
}

#[tokio::test]
async fn webhook_subscriptions_follow_their_route_through_a_reload() {
    const KEY: &str = "test-api-key-0123456789";
    let (api, upstream) = start_api().await;
    let receiver = herald_testkit::Receiver::new();
    let addr = receiver.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let head = format!(
        "storage:\n  kind: memory\nwebhooks:\n  api_keys: [{KEY}]\n  allow_private_destinations: [127.0.0.0/8]\n"
    );
    let gw = Gateway::start(&config(upstream, &format!("{head}routes:\n{TASKS}"))).await;
    let created = reqwest::Client::new()
        .post(gw.url("/_herald/v1/webhooks"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(format!(r#"{{"url":"http://{addr}/hook","path":"/tasks"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let sub: serde_json::Value = serde_json::from_str(&created.text().await.unwrap()).unwrap();
    receiver.trust(sub["secret"].as_str().unwrap());
    api.add_task("before");
    assert!(receiver.wait_until(SOON, |d| d.len() == 1).await, "delivered before the reload");

    // The route changes (lean payloads now): its watch is replaced, and the subscription moves
    // to the new one from what it recorded, so a change made meanwhile is still delivered.
    let lean = TASKS.replace("collection: { id: /id }", "collection: { id: /id, payload: lean }");
    std::fs::write(gw.config_file(), config(upstream, &format!("{head}routes:\n{lean}"))).unwrap();
    api.add_task("during");
    gw.signal("HUP");
    eventually("reloaded", || gw.logs().contains("configuration reloaded")).await;
    api.add_task("after");
    assert!(receiver.wait_until(SOON, |d| d.len() >= 3).await, "every change delivered: {:?}", receiver.accepted());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    let ids: std::collections::HashSet<_> = accepted.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), accepted.len(), "no change delivered twice");
    assert!(accepted.iter().all(|d| d.event_type == "task.created"));
}

#[tokio::test]
async fn api_keys_and_the_admin_token_are_reloaded_so_a_leaked_one_is_revoked_without_a_restart() {
    const OLD_KEY: &str = "leaked-api-key-0123456789";
    const NEW_KEY: &str = "fresh-api-key-0123456789";
    const OLD_TOKEN: &str = "leaked-admin-token-0123456789";
    const NEW_TOKEN: &str = "fresh-admin-token-0123456789";
    let (_api, upstream) = start_api().await;
    let yaml = |key: &str, token: &str| {
        config(upstream, &format!("storage:\n  kind: memory\nwebhooks:\n  api_keys: [{key}]\nroutes:\n{TASKS}"))
            .replace("  shutdown_grace: 3s\n", &format!("  shutdown_grace: 3s\n  admin_token: {token}\n"))
    };
    let gw = Gateway::start(&yaml(OLD_KEY, OLD_TOKEN)).await;
    let client = reqwest::Client::new();
    let api = |key: &'static str| client.get(gw.url("/_herald/v1/webhooks")).bearer_auth(key).send();
    let admin =
        |token: &'static str| client.get(format!("http://{}/admin/watches", gw.admin)).bearer_auth(token).send();
    assert_eq!(api(OLD_KEY).await.unwrap().status(), 200);
    assert_eq!(api(NEW_KEY).await.unwrap().status(), 401);
    assert_eq!(admin(OLD_TOKEN).await.unwrap().status(), 200);
    assert_eq!(admin(NEW_TOKEN).await.unwrap().status(), 401);

    reload(&gw, &yaml(NEW_KEY, OLD_TOKEN), "configuration reloaded").await;
    assert_eq!(api(OLD_KEY).await.unwrap().status(), 401, "the old key is revoked");
    assert_eq!(api(NEW_KEY).await.unwrap().status(), 200, "the new key works");

    let mut feed = SseClient::connect(
        &format!("http://{}/admin/status/events", gw.admin),
        &[("authorization", &format!("Bearer {OLD_TOKEN}"))],
    )
    .await;
    assert_eq!(feed.status, 200);
    reload(&gw, &yaml(NEW_KEY, NEW_TOKEN), "configuration reloaded").await;
    assert_eq!(admin(OLD_TOKEN).await.unwrap().status(), 401, "the old token is revoked");
    let ended = tokio::time::timeout(SOON, async { while feed.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the status feed opened with the old token ends");
    assert_eq!(admin(NEW_TOKEN).await.unwrap().status(), 200, "the new token works");
    assert!(!gw.logs().contains("takes effect at the next restart"), "{}", gw.logs());
}
