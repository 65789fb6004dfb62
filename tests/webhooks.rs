//! Webhooks end to end: the subscription API, signed delivery to the testkit receiver (which
//! verifies every request with the Standard Webhooks reference library), retries, 410, the SSRF
//! guard, and durability across `kill -9`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use herald_testkit::{Behaviour, Receiver};
use herald_tests::*;
use serde_json::{json, Value};

const KEY: &str = "test-api-key-0123456789";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Public task list as a collection; fast polls and a short retry schedule so tests run quickly.
fn yaml(upstream: SocketAddr, data: &Path, webhooks_extra: &str) -> String {
    config(
        upstream,
        &format!(
            "storage:\n  kind: embedded\n  path: {}\n\
             webhooks:\n  api_keys: [{KEY}]\n  timeout: 2s\n  \
             retry_schedule: [50ms, 100ms, 150ms, 200ms, 250ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms]\n\
             {webhooks_extra}\
             routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
             poll: {{ interval: 50ms, min_interval: 50ms, adaptive: false, jitter: 0 }}\n    \
             events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n  \
             - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
             poll: {{ interval: 50ms, min_interval: 50ms, adaptive: false, jitter: 0 }}\n",
            data.display()
        ),
    )
}

fn allow_loopback() -> &'static str {
    "  allow_private_destinations: [127.0.0.0/8]\n"
}

/// The signing secret of operational events in these tests.
const OPS_SECRET: &str = "whsec_b3BlcmF0aW9uYWwtZXZlbnRzLXNlY3JldCE=";

/// A receiver for operational events: it verifies them (Standard Webhooks library) against
/// [`OPS_SECRET`] alone.
async fn ops_receiver() -> (Receiver, SocketAddr) {
    let (ops, addr) = receiver().await;
    ops.trust_only(OPS_SECRET);
    (ops, addr)
}

/// `webhooks.operational_*` keys sending to `addr`.
fn operational(addr: SocketAddr) -> String {
    format!("  operational_url: 'http://{addr}/ops'\n  operational_secret: '{OPS_SECRET}'\n")
}

async fn receiver() -> (Receiver, SocketAddr) {
    let r = Receiver::new();
    let addr = r.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (r, addr)
}

async fn api(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    api_as(gw, Some(KEY), method, path, body).await
}

async fn api_as(gw: &Gateway, key: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), gw.url(&format!("/_herald/v1/webhooks{path}")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until the webhook watch recorded where it starts from (changes before that are not
/// deliveries, they are its starting point).
async fn started_watching(gw: &Gateway) {
    eventually("the webhook watch records its starting point", || gw.logs().contains("change recorded for webhooks"))
        .await;
}

/// The ids of tasks whose `task.created` was accepted.
fn created(r: &Receiver) -> HashSet<String> {
    r.accepted()
        .iter()
        .filter(|d| d.event_type == "task.created")
        .map(|d| d.body["data"]["resourceId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_key_and_names_what_is_wrong() {
    let (_api, upstream) = start_api().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&yaml(upstream, dir.path(), allow_loopback())).await;

    let (status, body) = api_as(&gw, None, "GET", "", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["status"], 401);
    assert_eq!(api_as(&gw, Some("test-api-key-0123456780"), "GET", "", None).await.0, 401);

    let (status, body) = api(
        &gw,
        "POST",
        "",
        Some(json!({"url": "ftp://x", "path": "/nope", "filter": ["*.x"], "payload": "fat", "secret": "whsec_abc"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let fields: HashSet<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, HashSet::from(["url", "path", "filter", "payload", "secret"]), "{body}");

    let (status, body) =
        api(&gw, "POST", "", Some(json!({"url": "http://x.example", "path": "/tasks", "colour": 1}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["field"], "colour", "{body}");

    // Private destinations are refused, also behind a name, unless allowed (here: 127.0.0.0/8 only).
    for url in ["http://10.0.0.1/hook", "http://169.254.169.254/", "http://[::1]:9/", "http://[::ffff:10.0.0.1]/"] {
        let (status, body) = api(&gw, "POST", "", Some(json!({"url": url, "path": "/tasks"}))).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "url", "{body}");
    }

    // The upstream decides whether the path may be watched with these headers.
    let (status, body) = api(
        &gw,
        "POST",
        "",
        Some(
            json!({"url": "http://127.0.0.1:9/h", "path": "/me/tasks", "headers": {"Authorization": "Bearer mallory"}}),
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "headers", "{body}");

    let (status, created) = api(
        &gw,
        "POST",
        "",
        Some(json!({"url": "http://127.0.0.1:9/h", "path": "/me/tasks", "headers": {"Authorization": "Bearer alice"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let (status, one) = api(&gw, "GET", &format!("/{id}"), None).await;
    assert_eq!(status, 200);
    assert!(one.get("secret").is_none() && one.get("headers").is_none(), "no secrets after creation: {one}");
    let (_, list) = api(&gw, "GET", "", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("whsec_") && !list.to_string().contains("alice"), "{list}");
    assert!(!gw.logs().contains("Bearer alice"), "credentials never logged");

    let (status, patched) = api(&gw, "PATCH", &format!("/{id}"), Some(json!({"status": "paused"}))).await;
    assert_eq!((status, patched["status"].as_str()), (200, Some("paused")));
    assert_eq!(api(&gw, "DELETE", &format!("/{id}"), None).await.0, 204);
    assert_eq!(api(&gw, "GET", &format!("/{id}"), None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_keys_the_api_is_not_there() {
    let (_api, upstream) = start_api().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml(upstream, dir.path(), "").replace(&format!("api_keys: [{KEY}]"), "api_keys: []");
    let gw = Gateway::start(&yaml).await;
    assert_eq!(api(&gw, "GET", "", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_delivered_signed_and_listed() {
    let (upstream_api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&yaml(upstream, dir.path(), allow_loopback())).await;

    let (status, sub) = api(
        &gw,
        "POST",
        "",
        Some(json!({"url": format!("http://{recv_addr}/hook"), "path": "/tasks", "filter": ["task.*"], "secret": SECRET})),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    recv.trust(SECRET);
    let id = sub["id"].as_str().unwrap().to_string();

    let mut expected = HashSet::new();
    for i in 0..20 {
        expected.insert(upstream_api.add_task(&format!("t{i}")));
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    assert!(recv.wait_until(SOON, |_| created(&recv) == expected).await, "got {:?}", created(&recv));
    let first = &recv.accepted()[0];
    assert_eq!(first.body["data"]["resourceType"], "task");
    assert!(first.body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(recv.rejected(), 0, "every request verifies with the reference library");

    let (status, ping) = api(&gw, "POST", &format!("/{id}/test"), None).await;
    assert_eq!(status, 202);
    assert!(recv.wait_until(SOON, |d| d.iter().any(|d| d.event_type == "herald.ping")).await);

    eventually_async("deliveries listed as delivered", || async {
        let (_, list) = api(&gw, "GET", &format!("/{id}/deliveries?status=delivered&limit=1000"), None).await;
        list.as_array().unwrap().len() == expected.len() + 1
    })
    .await;
    let (_, list) = api(&gw, "GET", &format!("/{id}/deliveries?limit=1"), None).await;
    assert_eq!(list[0]["id"], ping["message"], "newest first");
    assert_eq!(list[0]["attempts"], 1);
    assert_eq!(list[0]["last_status"], 204);
    assert!(gw.metric("herald_webhook_deliveries_total{outcome=\"success\"}").await >= 21.0);

    // Rotation: both secrets sign for a day; a receiver that knows only the new one verifies.
    let (status, rotated) = api(&gw, "POST", &format!("/{id}/secret/rotate"), None).await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap();
    recv.trust_only(new_secret);
    let later = upstream_api.add_task("after rotation");
    assert!(recv.wait_until(SOON, |_| created(&recv).contains(&later)).await);
    let last = recv.accepted().into_iter().last().unwrap();
    assert_eq!(last.signature.split(' ').count(), 2, "signed with both secrets: {}", last.signature);

    // Replay sends held messages again, with their original ids.
    let before = recv.accepted().len();
    let (status, replayed) =
        api(&gw, "POST", &format!("/{id}/replay"), Some(json!({"since": "2000-01-01T00:00:00Z"}))).await;
    assert_eq!(status, 202);
    let n = replayed["replayed"].as_u64().unwrap() as usize;
    assert!(n >= expected.len(), "{replayed}");
    assert!(recv.wait_until(SOON, |d| d.len() >= before + n).await);
    let ids: HashSet<String> = recv.accepted()[before..].iter().map(|d| d.id.clone()).collect();
    assert!(ids.is_subset(&recv.accepted()[..before].iter().map(|d| d.id.clone()).collect()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_40_percent_of_requests_still_gets_everything() {
    let (upstream_api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    recv.trust(SECRET);
    recv.behave(Behaviour::FailFraction(0.4));
    let dir = tempfile::tempdir().unwrap();
    let static_sub = format!(
        "  subscriptions:\n    - {{ id: flaky, url: 'http://{recv_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n"
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &format!("{}{static_sub}", allow_loopback()))).await;
    started_watching(&gw).await;

    let mut expected = HashSet::new();
    for i in 0..40 {
        expected.insert(upstream_api.add_task(&format!("t{i}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        recv.wait_until(SOON, |_| created(&recv) == expected).await,
        "missing: {:?}",
        expected.difference(&created(&recv))
    );
    let requests = recv.requests();
    let failed: HashSet<&String> = requests.iter().filter(|r| r.status == 500).map(|r| &r.id).collect();
    assert!(!failed.is_empty(), "some requests failed");
    let accepted = recv.accepted_ids();
    assert!(failed.iter().all(|id| accepted.contains(*id)), "retries reuse the webhook-id of the failed attempt");
    assert!(gw.metric("herald_webhook_deliveries_total{outcome=\"retry\"}").await >= failed.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_nothing_and_changes_made_while_down_arrive() {
    let (upstream_api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    recv.trust(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let static_sub = format!(
        "  subscriptions:\n    - {{ id: durable, url: 'http://{recv_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n"
    );
    let config = yaml(upstream, dir.path(), &format!("{}{static_sub}", allow_loopback()));
    let mut gw = Gateway::start(&config).await;
    started_watching(&gw).await;

    // A slow receiver keeps messages in flight and in the queue when the process dies.
    recv.behave(Behaviour::FailFraction(0.7));
    let mut expected = HashSet::new();
    for i in 0..30 {
        expected.insert(upstream_api.add_task(&format!("burst {i}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("KILL");
    assert!(gw.wait(SOON).await.is_some());
    assert_ne!(created(&recv), expected, "the kill came before everything was delivered");

    // Changes while herald is down.
    for i in 0..5 {
        expected.insert(upstream_api.add_task(&format!("while down {i}")));
    }
    recv.behave(Behaviour::Accept);
    let _gw = Gateway::start(&config).await;
    assert!(
        recv.wait_until(SOON, |_| created(&recv) == expected).await,
        "missing after restart: {:?}",
        expected.difference(&created(&recv))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_and_private_destinations_get_no_connection() {
    let (upstream_api, upstream) = start_api().await;
    let (gone, gone_addr) = receiver().await;
    gone.trust(SECRET);
    gone.behave(Behaviour::Answer(410, None));
    // 127.0.0.2 is loopback too, but outside the one address allowed.
    let private = Receiver::new();
    let private_addr = private.serve("127.0.0.2:0".parse().unwrap()).await.unwrap();
    private.trust(SECRET);
    let dir = tempfile::tempdir().unwrap();
    // Declared subscriptions are not checked when made: the check at connection stops this one.
    let webhooks = format!(
        "  allow_private_destinations: [127.0.0.1/32]\n  subscriptions:\n    \
         - {{ id: gone, url: 'http://{gone_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n    \
         - {{ id: private, url: 'http://{private_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n"
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &webhooks)).await;
    started_watching(&gw).await;
    upstream_api.add_task("x");

    eventually_async("the 410 disables the subscription", || async {
        api(&gw, "GET", "/gone", None).await.1["status"] == "disabled"
    })
    .await;
    eventually_async("the private destination is refused at connection", || async {
        let (_, list) = api(&gw, "GET", "/private/deliveries", None).await;
        list[0]["last_error"].as_str().is_some_and(|e| e.contains("loopback"))
    })
    .await;
    assert!(private.requests().is_empty(), "no request reached the private receiver");
    assert_eq!(gone.requests().len(), 1, "nothing after the 410");
    upstream_api.add_task("y");
    // The change reaches the subscription still enabled (a second message, for "y"): by then the
    // disabled one would have had its message too.
    eventually_async("the change is recorded for the enabled subscription", || async {
        api(&gw, "GET", "/private/deliveries", None).await.1.as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    let (_, gone_messages) = api(&gw, "GET", "/gone/deliveries", None).await;
    assert_eq!(gone_messages.as_array().map(Vec::len), Some(1), "a disabled subscription gets no message");
    assert_eq!(gone.requests().len(), 1, "a disabled subscription gets nothing");
    assert_eq!(gw.metric("herald_webhook_deliveries_total{outcome=\"disabled\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_redirects_are_not_followed() {
    let (upstream_api, upstream) = start_api().await;
    let (busy, busy_addr) = receiver().await;
    busy.trust(SECRET);
    busy.behave(Behaviour::Answer(503, Some(1)));
    let (moved, moved_addr) = receiver().await;
    moved.trust(SECRET);
    moved.behave(Behaviour::Answer(302, None));
    let dir = tempfile::tempdir().unwrap();
    let subs = format!(
        "  subscriptions:\n    \
         - {{ id: busy, url: 'http://{busy_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n    \
         - {{ id: moved, url: 'http://{moved_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n"
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &format!("{}{subs}", allow_loopback()))).await;
    started_watching(&gw).await;
    upstream_api.add_task("x");

    eventually("two attempts at the busy receiver", || busy.requests().len() >= 2).await;
    let seen = busy.requests();
    let waited = seen[1].at.duration_since(seen[0].at).unwrap();
    // The schedule says 50 ms; Retry-After says 1 s.
    assert!(waited >= Duration::from_millis(900), "second attempt after {waited:?}");
    assert_eq!(seen[0].id, seen[1].id, "same webhook-id on the retry");

    eventually("the redirect is retried, not followed", || moved.requests().len() >= 3).await;
    assert!(moved.requests().iter().all(|r| r.path == "/hook"), "nothing went to the Location");
    let (_, list) = api(&gw, "GET", "/moved/deliveries", None).await;
    assert_eq!(list[0]["last_status"], 302);
    assert_eq!(list[0]["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_failing_for_disable_after_is_disabled() {
    let (upstream_api, upstream) = start_api().await;
    let (down, down_addr) = receiver().await;
    down.trust(SECRET);
    down.behave(Behaviour::Answer(500, None));
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!(
        "{}  disable_after: 700ms\n  subscriptions:\n    \
         - {{ id: down, url: 'http://{down_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n",
        allow_loopback()
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &webhooks)).await;
    started_watching(&gw).await;
    upstream_api.add_task("x");
    eventually_async("disabled after failing for 700ms", || async {
        api(&gw, "GET", "/down", None).await.1["status"] == "disabled"
    })
    .await;
    let (_, sub) = api(&gw, "GET", "/down", None).await;
    assert!(sub["failing_since"].is_string(), "{sub}");
    let (_, list) = api(&gw, "GET", "/down/deliveries?status=dead", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Re-enabled by hand, it starts afresh.
    let (status, sub) = api(&gw, "PATCH", "/down", Some(json!({"status": "active"}))).await;
    assert_eq!((status, sub["status"].as_str(), sub["failing_since"].is_null()), (200, Some("active"), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_private_address_gets_no_connection() {
    let (upstream_api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    recv.trust(SECRET);
    let dir = tempfile::tempdir().unwrap();
    // No allowance at all: `localhost` resolves to loopback at every connection, so nothing is sent.
    let webhooks = format!(
        "  subscriptions:\n    \
         - {{ id: named, url: 'http://localhost:{}/hook', path: /tasks, secret: '{SECRET}' }}\n",
        recv_addr.port()
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &webhooks)).await;
    started_watching(&gw).await;
    upstream_api.add_task("x");
    eventually_async("the connection is refused after resolution", || async {
        let (_, list) = api(&gw, "GET", "/named/deliveries", None).await;
        list[0]["last_error"].as_str().is_some_and(|e| e.contains("loopback"))
    })
    .await;
    assert!(recv.requests().is_empty(), "no request reached the receiver");
}

/// [`eventually`] for checks that need to await.
async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SOON;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_belongs_to_the_key_that_made_it() {
    const OTHER: &str = "another-api-key-9876543210";
    let (_api, upstream) = start_api().await;
    let (_recv, recv_addr) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let declared = format!(
        "  subscriptions:\n    - {{ id: declared, url: 'http://{recv_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n"
    );
    let yaml = yaml(upstream, dir.path(), &format!("{}{declared}", allow_loopback()))
        .replace(&format!("api_keys: [{KEY}]"), &format!("api_keys: [{KEY}, {OTHER}]"));
    let gw = Gateway::start(&yaml).await;

    let (status, sub) =
        api(&gw, "POST", "", Some(json!({"url": format!("http://{recv_addr}/hook"), "path": "/tasks"}))).await;
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap().to_string();

    // The other key cannot see, list, change, rotate, replay, test or delete it: 404 throughout.
    let mine = format!("/{id}");
    for (method, path, body) in [
        ("GET", mine.clone(), None),
        ("PATCH", mine.clone(), Some(json!({"status": "paused"}))),
        ("POST", format!("{mine}/secret/rotate"), None),
        ("GET", format!("{mine}/deliveries"), None),
        ("POST", format!("{mine}/replay"), Some(json!({"since": "2020-01-01T00:00:00Z"}))),
        ("POST", format!("{mine}/test"), None),
        ("DELETE", mine.clone(), None),
    ] {
        let (status, body) = api_as(&gw, Some(OTHER), method, &path, body).await;
        assert_eq!(status, 404, "{method} {path} with another key: {body}");
    }
    let (_, listed) = api_as(&gw, Some(OTHER), "GET", "", None).await;
    let ids: Vec<_> = listed.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["declared"], "another key lists only what the configuration declares");

    // Its own key still sees it, unchanged.
    let (status, own) = api(&gw, "GET", &mine, None).await;
    assert_eq!((status, own["status"].as_str()), (200, Some("active")));
    let (_, listed) = api(&gw, "GET", "", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(api(&gw, "DELETE", &mine, None).await.0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_on_disk_and_a_wrong_key_stops_herald_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let (_api, upstream) = start_api().await;
    let (_recv, recv_addr) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let key = |k: &str| format!("  encryption_key: '{}='\n", k.repeat(43));
    let yaml = |k: &str| {
        yaml(upstream, dir.path(), allow_loopback())
            .replace("  kind: embedded\n", &format!("  kind: embedded\n{}", key(k)))
    };
    let mut gw = Gateway::start(&yaml("A")).await;
    let (status, _) = api(
        &gw,
        "POST",
        "",
        Some(json!({"url": format!("http://{recv_addr}/hook"), "path": "/me/tasks", "secret": SECRET,
                    "headers": {"authorization": "Bearer alice"}})),
    )
    .await;
    assert_eq!(status, 201);
    gw.sigterm();
    assert_eq!(gw.wait(SOON).await.and_then(|s| s.code()), Some(0));

    let file = dir.path().join("herald.redb");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    for secret in [&SECRET["whsec_".len()..], "Bearer alice"] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in the file");
    }

    let yaml_path = dir.path().join("wrong.yaml");
    std::fs::write(&yaml_path, yaml("E")).unwrap();
    let out = std::process::Command::new(herald_bin()).args(["run", "-c"]).arg(&yaml_path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.encryption_key is not the key this store was encrypted with"), "{stderr}");

    // With the right key, the subscription is back.
    let gw = Gateway::start(&yaml("A")).await;
    let (_, listed) = api(&gw, "GET", "", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_queued_message_is_set_aside_and_the_rest_delivered() {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    // The embedded store's message table, as herald-store defines it.
    const MESSAGES: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("messages");
    let (upstream_api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    recv.trust(SECRET);
    // Failing at first (and no retries soon), so the messages wait in the queue.
    recv.behave(Behaviour::Answer(500, None));
    let dir = tempfile::tempdir().unwrap();
    let static_sub = format!(
        "  subscriptions:\n    - {{ id: queued, url: 'http://{recv_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n"
    );
    let config = yaml(upstream, dir.path(), &format!("{}{static_sub}", allow_loopback()))
        .replace("retry_schedule: [50ms,", "retry_schedule: [2s,");
    let mut gw = Gateway::start(&config).await;
    started_watching(&gw).await;
    // One change at a time: each is recorded as its own message before the next is made.
    let pending_now = || async { api(&gw, "GET", "/queued/deliveries?status=pending", None).await.1 };
    for i in 0..3 {
        upstream_api.add_task(&format!("queued {i}"));
        eventually_async("the change is recorded", || async {
            pending_now().await.as_array().is_some_and(|l| l.len() == i + 1)
        })
        .await;
    }
    let pending = pending_now().await;
    assert_eq!(pending.as_array().unwrap().len(), 3, "{pending}");
    gw.sigterm();
    gw.wait(SOON).await.expect("herald stops");

    // One record is damaged while herald is down.
    let broken = pending[1]["id"].as_str().unwrap().to_string();
    {
        let db = redb::Database::open(dir.path().join("herald.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(MESSAGES).unwrap().insert(("queued", broken.as_str()), &b"{\"not a message"[..]).unwrap();
        tx.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(MESSAGES).unwrap().len().unwrap(), 3);
    }

    recv.behave(Behaviour::Accept);
    let gw = Gateway::start(&config).await;
    assert!(recv.wait_until(SOON, |accepted| accepted.len() == 2).await, "the two readable messages are delivered");
    // Listed as dead at once (the listing cannot read it either), and set aside when its turn
    // in the queue comes (its retry was due up to a few seconds later).
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let (_, dead) = api(&gw, "GET", "/queued/deliveries?status=dead", None).await;
        let dead = dead.as_array().unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0]["id"], broken.as_str());
        if dead[0]["last_error"].as_str().unwrap().starts_with("unreadable record set aside") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never set aside: {dead:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recv.accepted().len(), 2, "only the readable ones were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_over_the_watch_limit_is_asked_to_come_back_later() {
    let (_api, upstream) = start_api().await;
    let (_recv, recv_addr) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&(yaml(upstream, dir.path(), allow_loopback()) + "limits:\n  max_watches: 1\n")).await;
    let url = format!("http://{recv_addr}/hook");
    let (status, _) = api(&gw, "POST", "", Some(json!({"url": url, "path": "/tasks"}))).await;
    assert_eq!(status, 201);
    let resp = reqwest::Client::new()
        .post(gw.url("/_herald/v1/webhooks"))
        .bearer_auth(KEY)
        .body(json!({"url": url, "path": "/tasks?state=open"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "herald's own limit, not a bad request");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_events_tell_of_dead_messages_and_disabled_and_recovered_subscriptions() {
    let (upstream_api, upstream) = start_api().await;
    let (ops, ops_addr) = ops_receiver().await;
    let (gone, gone_addr) = receiver().await;
    gone.trust(SECRET);
    gone.behave(Behaviour::Answer(410, None));
    let (flaky, flaky_addr) = receiver().await;
    flaky.trust(SECRET);
    flaky.behave(Behaviour::Answer(500, None));
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!(
        "{}{}  subscriptions:\n    \
         - {{ id: gone, url: 'http://{gone_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n    \
         - {{ id: flaky, url: 'http://{flaky_addr}/hook', path: /tasks, secret: '{SECRET}' }}\n",
        allow_loopback(),
        operational(ops_addr)
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &webhooks)).await;
    started_watching(&gw).await;
    upstream_api.add_task("x");

    let told = |event_type: &'static str, subscription: &'static str| {
        let ops = ops.clone();
        move || {
            ops.accepted().iter().any(|d| d.event_type == event_type && d.body["data"]["subscription"] == subscription)
        }
    };
    eventually("the 410 disabled gone", told("herald.subscription.disabled", "gone")).await;
    eventually("gone's message is dead", told("herald.message.dead", "gone")).await;
    let disabled = ops.accepted().into_iter().find(|d| d.event_type == "herald.subscription.disabled").unwrap();
    assert!(disabled.body["data"]["reason"].as_str().unwrap().contains("410"), "{}", disabled.body);

    eventually("flaky failed at least once", || !flaky.requests().is_empty()).await;
    flaky.behave(Behaviour::Accept);
    eventually("flaky recovered", told("herald.subscription.recovered", "flaky")).await;
    assert!(!ops
        .accepted()
        .iter()
        .any(|d| d.body["data"]["subscription"] == "flaky" && d.event_type != "herald.subscription.recovered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_whose_own_credentials_are_refused_stops_as_unauthorized() {
    let (upstream_api, upstream) = start_api().await;
    let (ops, ops_addr) = ops_receiver().await;
    let (hook, hook_addr) = receiver().await;
    hook.trust(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!(
        "{}{}  subscriptions:\n    \
         - {{ id: alices, url: 'http://{hook_addr}/hook', path: /me/tasks, secret: '{SECRET}', \
         headers: {{ Authorization: 'Bearer alice' }} }}\n",
        allow_loopback(),
        operational(ops_addr)
    );
    let gw = Gateway::start(&yaml(upstream, dir.path(), &webhooks)).await;
    started_watching(&gw).await;
    upstream_api.revoke("alice");

    alices_disabled_on_401(&gw, &ops).await;
    assert!(hook.accepted().is_empty(), "nothing was delivered on refused credentials");
}

/// Alice's subscription becomes `unauthorized`, and the operator is told why (her 401).
async fn alices_disabled_on_401(gw: &Gateway, ops: &Receiver) {
    eventually_async("alice's subscription is unauthorized", || async {
        api(gw, "GET", "/alices", None).await.1["status"] == "unauthorized"
    })
    .await;
    eventually("the operator is told", || {
        ops.accepted().iter().any(|d| {
            d.event_type == "herald.subscription.disabled"
                && d.body["data"]["subscription"] == "alices"
                && d.body["data"]["reason"].as_str().is_some_and(|r| r.contains("401"))
        })
    })
    .await;
}

/// A `shared` route over the API's per-user `/me/tasks`, polled with the service account's
/// token (`upstream.headers`); its subscriptions' own credentials re-checked every `ttl`.
fn shared_yaml(upstream: SocketAddr, data: &Path, webhooks_extra: &str, ttl: &str) -> String {
    config(
        upstream,
        &format!(
            "storage:\n  kind: embedded\n  path: {}\n\
             webhooks:\n  api_keys: [{KEY}]\n  timeout: 2s\n  retry_schedule: [50ms, 100ms]\n\
             {webhooks_extra}\
             routes:\n  - name: team\n    path: /me/tasks\n    access: shared\n    vary: [authorization]\n    \
             authorize_ttl: {ttl}\n    \
             poll: {{ interval: 50ms, min_interval: 50ms, max_interval: 200ms, adaptive: false, jitter: 0 }}\n",
            data.display()
        ),
    )
    .replacen("  timeout: 2s\n", "  timeout: 2s\n  headers:\n    authorization: Bearer service\n", 1)
}

/// A declared subscription to `/me/tasks` presenting `user`'s credential, delivering to `addr`.
fn declared_as(id: &str, user: &str, addr: SocketAddr) -> String {
    format!(
        "    - {{ id: {id}, url: 'http://{addr}/hook', path: /me/tasks, secret: '{SECRET}', \
         headers: {{ Authorization: 'Bearer {user}' }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_credential_marks_no_subscription_unauthorized_and_the_operator_is_told() {
    let (upstream_api, upstream) = start_api().await;
    // The service account does not exist yet: the shared watch's polls get 401.
    upstream_api.add_user("alice");
    let (ops, ops_addr) = ops_receiver().await;
    let (hook, hook_addr) = receiver().await;
    hook.trust(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!(
        "{}{}  subscriptions:\n{}",
        allow_loopback(),
        operational(ops_addr),
        declared_as("alices", "alice", hook_addr)
    );
    let gw = Gateway::start(&shared_yaml(upstream, dir.path(), &webhooks, "10m")).await;

    eventually("the operator is told the service credential was refused", || {
        ops.accepted().iter().any(|d| {
            d.event_type == "herald.upstream.refused"
                && d.body["data"]["status"] == 401
                && d.body["data"]["subscriptions"] == json!(["alices"])
        })
    })
    .await;
    assert!(gw.logs().contains("service credential"), "a log line says so");
    // A new subscription is not told its headers are wrong: herald's own credential failed.
    let body = json!({"url": format!("http://{hook_addr}/hook"), "path": "/me/tasks",
                      "headers": {"authorization": "Bearer alice"}});
    let (status, problem) = api(&gw, "POST", "", Some(body)).await;
    assert_eq!(status, 502, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("service credential"), "{problem}");
    assert_eq!(api(&gw, "GET", "/alices", None).await.1["status"], "active", "alice's own credential is fine");
    assert!(!ops.accepted().iter().any(|d| d.event_type == "herald.subscription.disabled"));

    // The service account comes back: the watch recovers and delivers.
    upstream_api.add_user("service");
    started_watching(&gw).await;
    upstream_api.add_user_task("service", "after the service credential works again");
    assert!(hook.wait_until(SOON, |d| !d.is_empty()).await, "delivered once the service credential works");
    assert_eq!(api(&gw, "GET", "/alices", None).await.1["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_route_checks_each_subscriptions_own_credentials_again_every_authorize_ttl() {
    let (upstream_api, upstream) = start_api().await;
    for user in ["service", "alice", "bob"] {
        upstream_api.add_user(user);
    }
    let (ops, ops_addr) = ops_receiver().await;
    let (alice_hook, alice_addr) = receiver().await;
    let (bob_hook, bob_addr) = receiver().await;
    alice_hook.trust(SECRET);
    bob_hook.trust(SECRET);
    let dir = tempfile::tempdir().unwrap();
    let webhooks = format!(
        "{}{}  subscriptions:\n{}{}",
        allow_loopback(),
        operational(ops_addr),
        declared_as("alices", "alice", alice_addr),
        declared_as("bobs", "bob", bob_addr)
    );
    let gw = Gateway::start(&shared_yaml(upstream, dir.path(), &webhooks, "200ms")).await;
    started_watching(&gw).await;
    let checks_of = |user: &str| {
        let bearer = format!("Bearer {user}");
        upstream_api.seen("/me/tasks").iter().filter(|r| r.authorization.as_deref() == Some(bearer.as_str())).count()
    };
    eventually("alice's credential is checked again", || checks_of("alice") >= 2).await;

    upstream_api.revoke("alice");
    alices_disabled_on_401(&gw, &ops).await;

    // Only alice's: bob's goes on, and gets the next change alone.
    assert_eq!(api(&gw, "GET", "/bobs", None).await.1["status"], "active");
    upstream_api.add_user_task("service", "after alice was revoked");
    assert!(bob_hook.wait_until(SOON, |d| !d.is_empty()).await, "bob's subscription still delivers");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alice_hook.accepted().is_empty(), "nothing for the unauthorized subscription");
    assert_eq!(api(&gw, "GET", "/bobs", None).await.1["status"], "active");
    assert!(!ops.accepted().iter().any(|d| d.body["data"]["subscription"] == "bobs"));
}
