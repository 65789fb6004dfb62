//! Write-through refresh end to end (spec section 13): a write passed through herald that
//! succeeds re-polls, at once, the watches it can have changed, so subscribers see it long
//! before the next scheduled poll; nothing else does.

use std::time::{Duration, Instant};

use herald_testkit::{Fault, LegacyApi};
use herald_tests::*;
use serde_json::json;

/// Polls every 30 s: anything sooner is a refresh.
const ROUTES: &str = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll: {interval: 30s, adaptive: false}\n  \
    - name: task\n    path: '/tasks/{id}'\n    access: public\n    poll: {interval: 30s, adaptive: false}\n    events: {format: merge-patch}\n";

const INTERVAL: Duration = Duration::from_secs(30);

/// When the upstream was polled for `target` (GETs only: writes are not polls).
fn polls(api: &LegacyApi, target: &str) -> Vec<Instant> {
    api.seen(target).into_iter().filter(|r| r.method == "GET" && r.target == target).map(|r| r.at).collect()
}

/// The test API, herald with [`ROUTES`] in front, and a subscriber of `/tasks` past its snapshot.
async fn list_watched() -> (LegacyApi, Gateway, SseClient) {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let mut list = gw.subscribe("/tasks/event-stream", &[]).await;
    list.next_within(SOON).await.expect("snapshot");
    (api, gw, list)
}

#[tokio::test]
async fn a_write_through_herald_reaches_the_item_and_collection_subscribers_before_the_next_poll() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let mut list = gw.subscribe("/tasks/event-stream", &[]).await;
    let mut item = gw.subscribe("/tasks/2/event-stream", &[]).await;
    assert_eq!(list.next_within(SOON).await.expect("snapshot").event, "snapshot");
    assert_eq!(item.next_within(SOON).await.expect("snapshot").event, "snapshot");

    let written = reqwest::Client::new()
        .patch(gw.url("/tasks/2"))
        .body(json!({"title": "written through herald"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    let written_at =
        api.seen("/tasks/2").into_iter().find(|r| r.method == "PATCH").expect("the write passed through").at;

    let patch = item.next_within(SOON).await.expect("the item's change");
    assert_eq!(patch.event, "merge-patch");
    assert_eq!(patch.json(), json!({"title": "written through herald"}));
    let change = list.next_within(SOON).await.expect("the collection's change");
    assert_eq!(change.json(), api.tasks());

    // From the upstream's log: each watch was polled again right after the write, long before
    // its next scheduled poll.
    for target in ["/tasks", "/tasks/2"] {
        let times = polls(&api, target);
        assert_eq!(times.len(), 2, "{target}: the first poll and one refresh");
        assert!(times[1] >= written_at && times[1] - times[0] < INTERVAL, "{target}: refreshed, not scheduled");
    }
}

#[tokio::test]
async fn failed_writes_reads_and_paths_outside_routes_refresh_nothing() {
    let (api, gw, mut list) = list_watched().await;
    let client = reqwest::Client::new();
    let status = |resp: reqwest::Response| resp.status().as_u16();
    // A 500 (the upstream failing), a 404 (no such task), a 405 (a read-only resource), a GET
    // passed through, and a write that succeeds on a path no route watches.
    api.fail_next("/tasks/1", [Fault::Status(500, None)]);
    let failed = client.patch(gw.url("/tasks/1")).body(json!({"title": "lost"}).to_string()).send();
    assert_eq!(status(failed.await.unwrap()), 500);
    assert_eq!(status(client.patch(gw.url("/tasks/999")).body(json!({}).to_string()).send().await.unwrap()), 404);
    assert_eq!(status(client.post(gw.url("/board")).body(json!({}).to_string()).send().await.unwrap()), 405);
    assert_eq!(status(client.get(gw.url("/board")).send().await.unwrap()), 200);
    assert_eq!(status(client.post(gw.url("/echo/tasks")).body("x").send().await.unwrap()), 200);
    // Then one write that counts: after it, the collection was polled once more, not more.
    assert_eq!(
        status(client.post(gw.url("/tasks")).body(json!({"title": "new"}).to_string()).send().await.unwrap()),
        201
    );
    let change = list.next_within(SOON).await.expect("the new task");
    assert_eq!(change.json(), api.tasks());
    assert_eq!(polls(&api, "/tasks").len(), 2, "the first poll and the one successful write's refresh");
}

#[tokio::test]
async fn a_burst_of_writes_is_one_refresh_in_flight_and_at_most_one_after_it() {
    let (api, gw, mut list) = list_watched().await;
    let before = polls(&api, "/tasks").len();
    // The collection's next polls take a second: the burst lands while one is in flight.
    api.fail_next("/tasks", [Fault::Delay(Duration::from_secs(1)), Fault::Delay(Duration::from_secs(1))]);
    let client = reqwest::Client::new();
    // Writes to the items (the delay is the collection's only): each refreshes the collection.
    let writes = (0..100).map(|i| {
        let (client, url) = (client.clone(), gw.url(&format!("/tasks/{}", 1 + i % 3)));
        tokio::spawn(
            async move { client.patch(url).body(json!({"title": format!("burst {i}")}).to_string()).send().await },
        )
    });
    for write in futures_util::future::join_all(writes).await {
        assert_eq!(write.unwrap().unwrap().status(), 200);
    }
    // Every task arrives...
    let all = api.tasks();
    while list.next_within(SOON).await.expect("the burst's changes").json() != all {}
    // ...with at most two polls for the 100 writes: the one the first write started, and one
    // after it for the writes that came while it was in flight.
    let refreshes = polls(&api, "/tasks").len() - before;
    assert!((1..=2).contains(&refreshes), "{refreshes} polls for 100 writes");
}

#[tokio::test]
async fn writes_wait_for_the_upstream_s_retry_after() {
    let (api, gw, _list) = list_watched().await;
    let client = reqwest::Client::new();
    let write =
        |i: usize| client.patch(gw.url("/tasks/1")).body(json!({"title": format!("write {i}")}).to_string()).send();
    // The refresh the first write asks for is answered 429, Retry-After 60 s.
    api.fail_next("/tasks", [Fault::Status(429, Some(60))]);
    assert_eq!(write(0).await.unwrap().status(), 200);
    eventually("the refresh answered 429", || api.stats("/tasks").errors == 1).await;
    let answered = polls(&api, "/tasks").len();
    for i in 1..=10 {
        assert_eq!(write(i).await.unwrap().status(), 200);
    }
    // A refresh polls within milliseconds; a slow machine only makes this wait longer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(polls(&api, "/tasks").len(), answered, "no poll before the Retry-After deadline");
}

#[tokio::test]
async fn a_user_s_write_refreshes_every_scope_of_the_watch_and_leaks_nothing() {
    let (api, upstream) = start_api().await;
    let routes =
        "routes:\n  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
                  poll: {interval: 30s, adaptive: false}\n";
    let gw = Gateway::start(&config(upstream, routes)).await;
    let as_user = |user: &str| format!("Bearer {user}");
    let mut alice = gw.subscribe("/me/tasks/event-stream", &[("authorization", &as_user("alice"))]).await;
    let mut bob = gw.subscribe("/me/tasks/event-stream", &[("authorization", &as_user("bob"))]).await;
    alice.next_within(SOON).await.expect("alice's snapshot");
    bob.next_within(SOON).await.expect("bob's snapshot");
    let polls_of = |user: &str| {
        let who = as_user(user);
        api.seen("/me/tasks")
            .iter()
            .filter(|r| r.method == "GET" && r.authorization.as_deref() == Some(who.as_str()))
            .count()
    };
    let write = |user: &str, title: &str| {
        reqwest::Client::new()
            .post(gw.url("/me/tasks"))
            .header("authorization", as_user(user))
            .body(json!({"title": title}).to_string())
            .send()
    };
    let bob_before = polls_of("bob");

    assert_eq!(write("alice", "alice's secret plan").await.unwrap().status(), 201);
    let change = alice.next_within(SOON).await.expect("alice's own change");
    assert!(change.data.contains("alice's secret plan"), "{}", change.data);
    // Bob's watch was polled again too (the write may have changed it), with bob's credential.
    eventually("bob's watch refreshed", || polls_of("bob") > bob_before).await;

    // The next thing bob sees is his own change, never alice's.
    assert_eq!(write("bob", "bob's errand").await.unwrap().status(), 201);
    let bob_sees = bob.next_within(SOON).await.expect("bob's own change");
    assert!(bob_sees.data.contains("bob's errand") && !bob_sees.data.contains("alice"), "{}", bob_sees.data);
}

#[tokio::test]
async fn refresh_on_write_false_leaves_the_route_to_its_schedule() {
    let (api, upstream) = start_api().await;
    let routes = ROUTES.replacen("access: public\n", "access: public\n    refresh_on_write: false\n", 1);
    let gw = Gateway::start(&config(upstream, &routes)).await;
    let mut list = gw.subscribe("/tasks/event-stream", &[]).await;
    let mut item = gw.subscribe("/tasks/1/event-stream", &[]).await;
    list.next_within(SOON).await.expect("snapshot");
    item.next_within(SOON).await.expect("snapshot");
    let client = reqwest::Client::new();
    assert_eq!(
        client.patch(gw.url("/tasks/1")).body(json!({"done": true}).to_string()).send().await.unwrap().status(),
        200
    );
    // The item route still refreshes (marker); the collection route does not.
    assert_eq!(item.next_within(SOON).await.expect("the item's change").json(), json!({"done": true}));
    assert_eq!(polls(&api, "/tasks").len(), 1, "only the first poll of the route that opted out");
}

const KEY: &str = "hint-key-0123456789abcdef";

#[tokio::test]
async fn a_change_hint_re_polls_the_watches_of_its_paths() {
    let (api, upstream) = start_api().await;
    let hints = format!("{ROUTES}storage: {{kind: memory}}\nwebhooks:\n  api_keys: ['{KEY}']\n  notify: true\n");
    let gw = Gateway::start(&config(upstream, &hints)).await;
    let mut list = gw.subscribe("/tasks/event-stream", &[]).await;
    let mut item = gw.subscribe("/tasks/3/event-stream", &[]).await;
    list.next_within(SOON).await.expect("snapshot");
    item.next_within(SOON).await.expect("snapshot");
    let client = reqwest::Client::new();
    let hint = |key: &str| {
        client
            .post(gw.url("/_herald/v1/notify"))
            .bearer_auth(key)
            .body(json!({"paths": ["/tasks/3"]}).to_string())
            .send()
    };

    assert_eq!(hint("not-the-key-0123456789").await.unwrap().status(), 401);
    let bad =
        client.post(gw.url("/_herald/v1/notify")).bearer_auth(KEY).body(json!({"paths": ["tasks"]}).to_string()).send();
    assert_eq!(bad.await.unwrap().status(), 400);

    // The upstream changed behind herald's back and says so.
    api.retitle("3", "changed at the source");
    let answer = hint(KEY).await.unwrap();
    assert_eq!(answer.status(), 202);
    // No count: how many watches a path has would tell any key how many users watch it.
    assert_eq!(serde_json::from_str::<serde_json::Value>(&answer.text().await.unwrap()).unwrap(), json!({}));
    // The item and its collection are re-polled.
    assert_eq!(
        item.next_within(SOON).await.expect("the item's change").json(),
        json!({"title": "changed at the source"})
    );
    assert_eq!(list.next_within(SOON).await.expect("the collection's change").json(), api.tasks());
    assert_eq!(polls(&api, "/tasks/3").len(), 2, "polled for the hint, not on its schedule");
}

#[tokio::test]
async fn change_hints_are_off_unless_configured() {
    let (_api, upstream) = start_api().await;
    let keys_only = format!("{ROUTES}storage: {{kind: memory}}\nwebhooks:\n  api_keys: ['{KEY}']\n");
    let gw = Gateway::start(&config(upstream, &keys_only)).await;
    let hint = reqwest::Client::new()
        .post(gw.url("/_herald/v1/notify"))
        .bearer_auth(KEY)
        .body(json!({"paths": ["/tasks"]}).to_string());
    assert_eq!(hint.send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn pollers_are_told_where_the_stream_is() {
    let (_api, upstream) = start_api().await;
    let routes = format!("{ROUTES}  - name: board\n    path: /board\n    access: public\n    cache: false\n");
    let gw = Gateway::start(&config(upstream, &routes)).await;
    let link = |resp: &reqwest::Response| resp.headers().get("link").map(|v| v.to_str().unwrap().to_string());
    let get = |path: &str| reqwest::get(gw.url(path));
    // A cache answer, and a 304 from the cache.
    let cached = get("/tasks?state=open&lastEventId=5").await.unwrap();
    let etag = cached.headers()["etag"].to_str().unwrap().to_string();
    let expected = "</tasks/event-stream?state=open>; rel=\"alternate\"; type=\"text/event-stream\"";
    assert_eq!(link(&cached).as_deref(), Some(expected));
    let client = reqwest::Client::new();
    let not_modified = client.get(gw.url("/tasks?state=open")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(link(&not_modified).as_deref(), Some(expected));
    // A GET passed through on a route path (cache: false), and one on no route.
    let passed = get("/board").await.unwrap();
    assert_eq!(passed.headers().get("x-herald-cache"), None, "passed through");
    assert_eq!(link(&passed).as_deref(), Some("</board/event-stream>; rel=\"alternate\"; type=\"text/event-stream\""));
    assert_eq!(link(&get("/echo").await.unwrap()), None);
}

/// Subscribers of the watch of `path`, as /admin/watches counts them (streams and held polls).
async fn watchers(gw: &Gateway, path: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    v["watches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["path"] == path)
        .map(|w| w["subscribers"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_long_poll_is_held_until_the_watch_changes_and_costs_the_upstream_nothing() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let first = client.get(gw.url("/tasks")).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let polls_before = polls(&api, "/tasks").len();

    let held = (0..1000).map(|_| {
        let (client, url, etag) = (client.clone(), gw.url("/tasks"), etag.clone());
        tokio::spawn(async move {
            let resp = client.get(url).header("if-none-match", etag).header("prefer", "wait=60").send().await.unwrap();
            let applied = resp.headers().get("preference-applied").map(|v| v.to_str().unwrap().to_string());
            let etag = resp.headers()["etag"].to_str().unwrap().to_string();
            (resp.status().as_u16(), applied, etag, resp.text().await.unwrap())
        })
    });
    let held: Vec<_> = held.collect();
    eventually_async_gw(&gw, "all 1,000 held", |n| n == 1000).await;
    assert_eq!(polls(&api, "/tasks").len(), polls_before, "held requests cost the upstream nothing");

    // A write through herald: every held request gets the new representation.
    let write = client.post(gw.url("/tasks")).body(json!({"title": "wake them"}).to_string()).send().await.unwrap();
    assert_eq!(write.status(), 201);
    for answer in futures_util::future::join_all(held).await {
        let (status, applied, new_etag, body) = answer.unwrap();
        assert_eq!((status, applied.as_deref()), (200, Some("wait=60")));
        assert_ne!(new_etag, etag);
        assert!(body.contains("wake them"), "{body}");
    }
    assert_eq!(polls(&api, "/tasks").len(), polls_before + 1, "one refresh, whatever the number held");
}

/// Waits until the watch of `/tasks` counts `check`-many subscribers.
async fn eventually_async_gw(gw: &Gateway, what: &str, check: impl Fn(u64) -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let n = watchers(gw, "/tasks").await;
        if check(n) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {n} subscribers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_long_poll_without_a_change_is_a_304_and_a_client_that_leaves_frees_its_place() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let first = reqwest::get(gw.url("/tasks")).await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let quiet = client.get(gw.url("/tasks")).header("if-none-match", &etag).header("prefer", "wait=1").send();
    let quiet = quiet.await.unwrap();
    assert_eq!(quiet.status(), 304);
    assert_eq!(quiet.headers()["preference-applied"], "wait=1");
    assert_eq!(quiet.headers()["etag"].to_str().unwrap(), etag);

    // A held request whose client goes away.
    let mut conn = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let head = format!("GET /tasks HTTP/1.1\r\nhost: herald\r\nif-none-match: {etag}\r\nprefer: wait=100\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes()).await.unwrap();
    eventually_async_gw(&gw, "the request is held", |n| n == 1).await;
    drop(conn);
    eventually_async_gw(&gw, "its place is freed", |n| n == 0).await;
}
