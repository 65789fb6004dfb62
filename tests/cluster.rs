//! Cluster mode end to end (spec section 12): several herald processes on one `redis-server`
//! the test starts (and kills), one fake upstream that counts what it is asked. Skipped, with a
//! note, where `redis-server` is not installed (`.ci/run` installs it).

use std::time::{Duration, Instant};

use herald_tests::*;
use serde_json::Value;

/// Polls every 500ms; the lease is `lease`.
fn cluster_config(upstream: std::net::SocketAddr, redis: &str, lease: &str, extra: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  shutdown_grace: 3s\n\
         upstream:\n  url: http://{upstream}\n  timeout: 10s\n\
         log:\n  format: json\n  level: debug\n\
         storage:\n  kind: redis\n  url: {redis}\n  prefix: t\n  lease: {lease}\n\
         sse:\n  heartbeat: 500ms\n\
         routes:\n  - name: board\n    path: /board\n    access: public\n    cache: true\n    events:\n      format: json-patch\n\
         \x20   poll:\n      interval: 500ms\n      min_interval: 500ms\n      adaptive: false\n      jitter: 0\n{extra}"
    )
}

async fn replicas(n: usize, yaml: &str) -> Vec<Gateway> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Gateway::start(yaml).await);
    }
    out
}

/// A subscriber's view of the board: applies what it receives, checks ids only grow.
struct Follower {
    client: SseClient,
    doc: Value,
    last: u64,
    epoch: Option<String>,
    snapshots: usize,
    changes: usize,
}

impl Follower {
    async fn connect(gw: &Gateway, headers: &[(&str, &str)]) -> Follower {
        let client = gw.subscribe("/board/event-stream", headers).await;
        assert_eq!(client.status, 200, "{}", client.body);
        Follower { client, doc: Value::Null, last: 0, epoch: None, snapshots: 0, changes: 0 }
    }

    fn apply(&mut self, ev: &SseEvent) {
        let id = ev.id.as_deref().expect("every event has an id");
        let (epoch, seq) = id.rsplit_once('-').unwrap();
        let seq: u64 = seq.parse().unwrap();
        match ev.event.as_str() {
            "snapshot" => {
                self.snapshots += 1;
                self.doc = ev.json();
            }
            "patch" => {
                assert_eq!(self.epoch.as_deref(), Some(epoch), "a patch in a new epoch without a snapshot");
                assert!(seq > self.last, "ids strictly increase: {} after {}", seq, self.last);
                let patch: json_patch::Patch = serde_json::from_value(ev.json()).unwrap();
                json_patch::patch(&mut self.doc, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}"));
                self.changes += 1;
            }
            _ => {}
        }
        self.epoch = Some(epoch.to_string());
        self.last = seq;
    }

    /// Reads, applying what comes, until the stream ends as a stopping replica ends it: an
    /// `error` event `{"reason":"shutdown"}`, then the end of the response.
    async fn until_shutdown(&mut self) {
        loop {
            let ev = self.client.next_within(SOON).await.expect("the stream ends with an error event first");
            if ev.event == "error" {
                assert_eq!(ev.json()["reason"], "shutdown", "{ev:?}");
                break;
            }
            self.apply(&ev);
        }
        assert!(self.client.next_within(SOON).await.is_none(), "the stream ends after its error event");
    }

    /// Connects again, to `gw`, from the last id received (as an EventSource does).
    async fn resume(&mut self, gw: &Gateway) {
        let id = self.client.last_event_id.clone().expect("an id to resume from");
        self.client = gw.subscribe("/board/event-stream", &[("last-event-id", &id)]).await;
        assert_eq!(self.client.status, 200, "{}", self.client.body);
    }

    /// Reads until the document equals `want`.
    async fn until(&mut self, want: &Value) {
        let deadline = tokio::time::Instant::now() + SOON;
        while &self.doc != want {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self
                .client
                .next_within(left)
                .await
                .unwrap_or_else(|| panic!("converged to {want}, holds {}", self.doc));
            self.apply(&ev);
        }
    }
}

/// `each` followers of the board on every gateway, in gateway order, each holding `board`.
async fn followers_on(gws: &[Gateway], each: usize, board: &Value) -> Vec<Follower> {
    let mut followers = Vec::new();
    for gw in gws {
        for _ in 0..each {
            followers.push(Follower::connect(gw, &[]).await);
        }
    }
    for f in &mut followers {
        f.until(board).await;
    }
    followers
}

const API_KEY: &str = "test-api-key-0123456789";
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A `/tasks` collection route polled every 300 ms, for [`cluster_config`]'s `extra`.
const TASKS_ROUTE: &str = "  - name: tasks\n    path: /tasks\n    access: public\n    \
     poll: { interval: 300ms, min_interval: 300ms, adaptive: false, jitter: 0 }\n    \
     events: { format: collection, type: task, collection: { id: /id } }\n";

/// [`TASKS_ROUTE`], and webhooks through the API (`API_KEY`), for [`cluster_config`]'s `extra`.
fn tasks_with_webhooks() -> String {
    format!(
        "{TASKS_ROUTE}\
         webhooks:\n  api_keys: [{API_KEY}]\n  timeout: 2s\n  allow_private_destinations: [127.0.0.0/8]\n  \
         retry_schedule: [200ms, 500ms, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]\n"
    )
}

/// Subscribes the receiver at `recv` to `/tasks` through `gw`'s API (secret `WEBHOOK_SECRET`),
/// then waits until a replica's webhook watch recorded its starting point; the subscription's id.
async fn subscribe_webhook(gws: &[Gateway], recv: std::net::SocketAddr) -> String {
    let created = reqwest::Client::new()
        .post(gws[0].url("/_herald/v1/webhooks"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"url": format!("http://{recv}/hook"), "path": "/tasks", "secret": WEBHOOK_SECRET})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = serde_json::from_str::<Value>(&created.text().await.unwrap()).unwrap()["id"].as_str().unwrap().to_string();
    eventually("the webhook watch records its starting point", || {
        gws.iter().any(|gw| gw.logs().contains("change recorded for webhooks"))
    })
    .await;
    id
}

/// A webhook receiver on a free port that trusts `WEBHOOK_SECRET`, and its address.
async fn receiver() -> (herald_testkit::Receiver, std::net::SocketAddr) {
    let recv = herald_testkit::Receiver::new();
    let addr = recv.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    recv.trust(WEBHOOK_SECRET);
    (recv, addr)
}

/// Whether `recv` accepted the `task.created` of the task titled `title`.
fn delivered(recv: &herald_testkit::Receiver, title: &str) -> bool {
    recv.accepted().iter().any(|d| d.event_type == "task.created" && d.body.to_string().contains(title))
}

/// The poll times the upstream saw for `/board`.
fn polls(api: &LegacyApi) -> Vec<Instant> {
    api.seen("/board").into_iter().map(|r| r.at).collect()
}

#[tokio::test]
async fn three_replicas_poll_once_per_interval_and_every_subscriber_gets_every_change() {
    let Some(redis) = RedisServer::start().await else { return };
    one_poll_for_three_replicas(&redis.url()).await;
}

async fn one_poll_for_three_replicas(redis: &str) {
    let (api, upstream) = start_api().await;
    let gws = replicas(3, &cluster_config(upstream, redis, "2s", "")).await;
    let mut followers = followers_on(&gws, 3, &api.board()).await;
    let before = polls(&api).len();
    for i in 0..4 {
        api.add_task(&format!("cluster {i}"));
        let want = api.board();
        for f in &mut followers {
            f.until(&want).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let times = polls(&api);
    // One replica polls: no two polls closer than half an interval (three pollers would be).
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(250), "two polls {:?} apart", pair[1] - pair[0]);
    }
    assert!(times.len() > before, "polls went on");
    for f in &followers {
        assert_eq!(f.snapshots, 1, "one snapshot each, then patches");
        assert_eq!(f.changes, 4, "every change once");
    }
    let holders: Vec<Value> = futures_util::future::join_all(gws.iter().map(|gw| gw.admin_get("/admin/watches")))
        .await
        .into_iter()
        .map(|t| serde_json::from_str::<Value>(&t).unwrap()["watches"][0]["holder"].clone())
        .collect();
    assert!(
        holders.iter().all(|h| h.is_string() && h == &holders[0]),
        "every replica names the one holder: {holders:?}"
    );
    let leases: f64 =
        futures_util::future::join_all(gws.iter().map(|gw| gw.metric("herald_cluster_leases{route=\"board\"}")))
            .await
            .into_iter()
            .sum();
    assert_eq!(leases, 1.0);
}

#[tokio::test]
async fn a_client_resumes_on_another_replica_with_exactly_the_events_it_missed() {
    let Some(redis) = RedisServer::start().await else { return };
    resume_on_another_replica(&redis.url()).await;
}

async fn resume_on_another_replica(redis: &str) {
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, redis, "2s", "")).await;
    let mut on_a = Follower::connect(&gws[0], &[]).await;
    let mut watcher = Follower::connect(&gws[1], &[]).await;
    api.add_task("one");
    on_a.until(&api.board()).await;
    let last_id = on_a.client.last_event_id.clone().unwrap();
    drop(on_a);

    api.add_task("two");
    watcher.until(&api.board()).await;
    api.add_task("three");
    watcher.until(&api.board()).await;

    let mut resumed = gws[1].subscribe("/board/event-stream", &[("last-event-id", &last_id)]).await;
    assert_eq!(resumed.status, 200);
    let first = resumed.next_within(SOON).await.unwrap();
    let second = resumed.next_within(SOON).await.unwrap();
    assert_eq!((first.event.as_str(), second.event.as_str()), ("patch", "patch"), "no snapshot: {first:?}");
    let (epoch, seq) = last_id.rsplit_once('-').unwrap();
    let seq: u64 = seq.parse().unwrap();
    assert_eq!(first.id.as_deref(), Some(format!("{epoch}-{}", seq + 1).as_str()));
    assert_eq!(second.id.as_deref(), Some(format!("{epoch}-{}", seq + 2).as_str()));
    assert!(resumed.next_within(Duration::from_millis(800)).await.is_none(), "nothing more");
}

#[tokio::test]
async fn legacy_pollers_get_the_same_etag_from_every_replica() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", "")).await;
    let client = reqwest::Client::new();
    let a = client.get(gws[0].url("/board")).send().await.unwrap();
    assert_eq!(a.status(), 200);
    let etag = a.headers()["etag"].to_str().unwrap().to_string();
    let b = client.get(gws[1].url("/board")).send().await.unwrap();
    assert_eq!(b.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = serde_json::from_str(&b.text().await.unwrap()).unwrap();
    assert_eq!(body, api.board());
    let not_modified = client.get(gws[1].url("/board")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(not_modified.status(), 304);
}

#[tokio::test]
async fn one_credential_shares_a_watch_across_replicas_two_never_do() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    api.add_user("bob");
    api.add_user_task("alice", "alice's");
    api.add_user_task("bob", "bob's");
    let mine = "  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
                poll:\n      interval: 500ms\n      min_interval: 500ms\n      adaptive: false\n      jitter: 0\n";
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", mine)).await;
    let mut streams = Vec::new();
    for (gw, user) in [(&gws[0], "alice"), (&gws[1], "alice"), (&gws[1], "bob")] {
        let auth = format!("Bearer {user}");
        let mut s = gw.subscribe("/me/tasks/event-stream", &[("authorization", &auth)]).await;
        assert_eq!(s.status, 200, "{}", s.body);
        let snapshot = s.next_within(SOON).await.unwrap().json();
        assert_eq!(snapshot[0]["owner"], user, "{user} sees only their own");
        streams.push(s);
    }
    let scopes = |text: String| -> Vec<String> {
        let v: Value = serde_json::from_str(&text).unwrap();
        v["watches"].as_array().unwrap().iter().map(|w| w["scope"].as_str().unwrap().to_string()).collect()
    };
    let on_a = scopes(gws[0].admin_get("/admin/watches").await);
    let on_b = scopes(gws[1].admin_get("/admin/watches").await);
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_b.len(), 2);
    assert!(on_b.contains(&on_a[0]), "alice's scope is the same on both replicas");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let alice: Vec<Instant> = api
        .seen("/me/tasks")
        .into_iter()
        .filter(|r| r.authorization.as_deref() == Some("Bearer alice"))
        .map(|r| r.at)
        .collect();
    for pair in alice.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(250),
            "alice's watch polled twice in {:?}",
            pair[1] - pair[0]
        );
    }
    api.add_user_task("bob", "bob's second");
    let ev = streams[2].until(SOON, |e| e.event != "snapshot").await;
    assert!(ev.last().unwrap().data.contains("bob's second"));
    for alice in &mut streams[..2] {
        assert!(alice.next_within(Duration::from_millis(1500)).await.is_none(), "alice never hears of bob's tasks");
    }
}

/// The replica holding the board's lease (its name holds its process id), as the replicas
/// following the board say.
async fn holder(gws: &[Gateway]) -> usize {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        for gw in gws {
            let text = gw.admin_get("/admin/watches").await;
            let v: Value = serde_json::from_str(&text).unwrap();
            if let Some(name) = v["watches"][0]["holder"].as_str() {
                if let Some(i) = gws.iter().position(|gw| name.contains(&format!("-{}-", gw.pid()))) {
                    return i;
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no replica names a holder");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(gw: &Gateway) -> u16 {
    reqwest::get(format!("http://{}/readyz", gw.admin)).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn kill_9_of_the_holder_moves_the_lease_and_subscribers_see_no_gap() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let mut gws = replicas(3, &cluster_config(upstream, &redis.url(), "1s", "")).await;
    let mut followers = followers_on(&gws, 2, &api.board()).await;
    let h = holder(&gws).await;
    // The holder's own subscribers lose their connection with it.
    followers.drain(2 * h..2 * h + 2);
    let killed = Instant::now();
    gws[h].signal("KILL");
    assert!(gws[h].wait(SOON).await.is_some());
    for i in 0..5 {
        api.add_task(&format!("after the kill {i}"));
        let want = api.board();
        for f in &mut followers {
            f.until(&want).await;
        }
    }
    let takeover = polls(&api).into_iter().find(|t| *t > killed).expect("another replica polls");
    assert!(takeover - killed <= Duration::from_secs(2), "takeover took {:?} (lease 1s)", takeover - killed);
    for f in &followers {
        assert_eq!((f.snapshots, f.changes), (1, 5), "no gap, no duplicate, no resync");
    }
    let survivors: Vec<&Gateway> = gws.iter().enumerate().filter(|(i, _)| *i != h).map(|(_, g)| g).collect();
    let mut changes = 0.0;
    for gw in survivors {
        changes += gw.metric("herald_cluster_lease_changes_total{route=\"board\"}").await;
    }
    assert_eq!(changes, 1.0, "one survivor took the lease");
}

#[tokio::test]
async fn sigterm_hands_the_lease_over_at_once_and_its_clients_resume_elsewhere_by_id() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    // A long lease (its ticks every 30 s): a takeover that waited for a tick or for the lease
    // to lapse would show.
    let yaml = cluster_config(upstream, &redis.url(), "90s", "");
    let mut gws = replicas(3, &yaml).await;
    // Each with the index of its gateway.
    let followers = followers_on(&gws, 2, &api.board()).await;
    let mut followers: Vec<(usize, Follower)> = followers.into_iter().enumerate().map(|(i, f)| (i / 2, f)).collect();
    for round in 0..3 {
        let h = holder(&gws).await;
        let next = (h + 1) % gws.len();
        let stopping = Instant::now();
        gws[h].sigterm();
        for (at, f) in followers.iter_mut().filter(|(at, _)| *at == h) {
            f.until_shutdown().await;
            f.resume(&gws[next]).await;
            *at = next;
        }
        let exit = gws[h].wait(SOON).await.expect("a stopping replica exits within its grace");
        assert!(exit.success(), "{exit:?}");
        let exited = Instant::now();
        api.add_task(&format!("round {round}"));
        let want = api.board();
        for (_, f) in &mut followers {
            f.until(&want).await;
        }
        // The first poll after the stopping replica exited is another's.
        let takeover = polls(&api).into_iter().find(|t| *t > exited).expect("another replica polls");
        assert!(
            takeover - stopping < Duration::from_secs(5),
            "the next poll came {:?} after SIGTERM (lease 90 s, ticks 30 s)",
            takeover - stopping
        );
        gws[h] = Gateway::start(&yaml).await;
    }
    for (_, f) in &followers {
        assert_eq!((f.snapshots, f.changes), (1, 3), "every change once, resumed by id: no second snapshot");
    }
}

#[tokio::test]
async fn a_stopping_replica_hands_its_claimed_webhook_messages_back() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    recv.behave(herald_testkit::Behaviour::Stall);
    // An attempt may take a minute, so a message claimed by a replica that dies waits 70 s.
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  shutdown_grace: 4s\n\
         upstream:\n  url: http://{upstream}\n  timeout: 10s\n\
         log:\n  format: json\n  level: debug\n\
         storage:\n  kind: redis\n  url: {}\n  prefix: hb\n  lease: 2s\n\
         webhooks:\n  timeout: 60s\n  allow_private_destinations: [127.0.0.0/8]\n  subscriptions:\n    \
         - {{ id: stalled, url: 'http://{recv_addr}/hook', path: /tasks, secret: '{WEBHOOK_SECRET}' }}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         poll: {{ interval: 200ms, min_interval: 200ms, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n",
        redis.url()
    );
    let mut gws = replicas(2, &yaml).await;
    eventually("the webhook watch records its starting point", || {
        gws.iter().any(|gw| gw.logs().contains("change recorded for webhooks"))
    })
    .await;
    let task = api.add_task("handed back");
    let deadline = tokio::time::Instant::now() + SOON;
    let victim = loop {
        let mut attempting = None;
        for (i, gw) in gws.iter().enumerate() {
            let status: Value = serde_json::from_str(&gw.admin_get("/admin/status").await).unwrap();
            if status["webhooks"]["in_flight"].as_u64() > Some(0) {
                attempting = Some(i);
            }
        }
        if let Some(i) = attempting {
            break i;
        }
        assert!(tokio::time::Instant::now() < deadline, "no replica attempts the message");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Taken is not yet sent: the receiver holds the request before the replica is stopped.
    eventually("the receiver holds the attempt", || recv.requests().iter().any(|r| r.status == 408)).await;
    recv.behave(herald_testkit::Behaviour::Accept);
    let stopping = Instant::now();
    gws[victim].sigterm();
    let delivered = recv
        .wait_until(Duration::from_secs(40), |seen| {
            seen.iter().any(|d| d.event_type == "task.created" && d.body["data"]["resourceId"] == task.as_str())
        })
        .await;
    assert!(delivered, "not delivered {:?} after SIGTERM (its claim lasts 70 s)", stopping.elapsed());
    assert!(gws[victim].wait(SOON).await.expect("exits").success());
    assert!(gws[victim].logs().contains("webhook messages in flight handed back"), "{}", gws[victim].logs());
    let survivor = &gws[1 - victim];
    // The receiver has it before the survivor has read its answer.
    survivor.metric_until("herald_webhook_deliveries_total{outcome=\"success\"}", |n| n == 1.0).await;
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_is_fenced_and_follows() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "1s", "")).await;
    let mut first = Follower::connect(&gws[0], &[]).await;
    let mut second = Follower::connect(&gws[1], &[]).await;
    first.until(&api.board()).await;
    second.until(&api.board()).await;
    let h = holder(&gws).await;
    let (mut on_holder, mut on_other) = if h == 0 { (first, second) } else { (second, first) };

    // The holder's next poll is answered late; it is paused while that poll is in flight.
    let seen = polls(&api).len();
    api.fail_next("/board", [Fault::Delay(Duration::from_millis(1500))]);
    eventually("the holder's poll is in flight", || polls(&api).len() > seen).await;
    gws[h].signal("STOP");
    api.add_task("while the holder sleeps");
    let want = api.board();
    on_other.until(&want).await;
    gws[h].signal("CONT");

    gws[h].metric_until("herald_cluster_fenced_total{route=\"board\"}", |v| v >= 1.0).await;
    on_holder.until(&want).await;
    api.add_task("afterwards");
    let want = api.board();
    on_holder.until(&want).await;
    on_other.until(&want).await;
    for f in [&on_holder, &on_other] {
        assert_eq!((f.snapshots, f.changes), (1, 2), "each change once");
    }
    assert!(gws[h].logs().contains("fencing"), "the refusal is logged");
}

/// The replica that polls a webhook watch (and so records it) is paused past its lease while the
/// resource changes three times, each carried by every stream, and the webhook watch's lease is
/// taken elsewhere meanwhile: the replica that took the polls over, once it can take the webhook
/// watch, delivers each version in its own message, in order, not the last one alone.
#[tokio::test]
async fn a_webhook_watch_taken_over_delivers_each_version_its_paused_holder_missed() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    let task = api.add_task("version 0");
    let yaml = cluster_config(upstream, &redis.url(), "3s", &tasks_with_webhooks());
    // Started first, with a subscriber: it polls, so it takes the webhook watch too.
    let poller = Gateway::start(&yaml).await;
    let mut polled = poller.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(polled.next_within(SOON).await.expect("a snapshot").event, "snapshot");
    let mut gws = replicas(2, &yaml).await;
    gws.push(poller);
    let held = 2;
    subscribe_webhook(&gws, recv_addr).await;
    eventually("the replica that polls holds the webhook watch", || {
        gws[held].logs().contains("webhook watch lease taken")
    })
    .await;
    let mut streams = Vec::new();
    for gw in &gws[..held] {
        eventually("it follows the watch too", || gw.logs().contains("webhook watch followed, its versions kept"))
            .await;
        let mut stream = gw.subscribe("/tasks/event-stream", &[]).await;
        assert_eq!(stream.next_within(SOON).await.expect("a snapshot").event, "snapshot");
        streams.push(stream);
    }

    gws[held].signal("STOP");
    // The webhook watch's lease stays taken (as by a replica that is slow to let go) until the
    // replica that takes the polls over has polled every version.
    let lease = redis.cli(&["--scan", "--pattern", "t:{wh-*}:lease"]).trim().to_string();
    assert_eq!(redis.cli(&["SET", &lease, "elsewhere/1", "PX", "60000"]).trim(), "OK", "{lease}");
    for v in 1..=3 {
        let title = format!("version {v}");
        api.retitle(&task, &title);
        // Every replica's watch holds each version before the next change.
        for stream in &mut streams {
            while !stream.next_within(SOON).await.expect("the change reaches the stream").data.contains(&title) {}
        }
    }
    assert!(updated_titles(&recv).is_empty(), "nothing recorded while the lease is taken");
    assert_eq!(redis.cli(&["DEL", &lease]).trim(), "1");
    let versions = || updated_titles(&recv);
    eventually("every version is delivered", || versions().len() >= 3).await;
    gws[held].signal("CONT");
    assert_eq!(versions(), ["version 1", "version 2", "version 3"], "each version in its own message, in order");
}

/// The titles ("version N") the `task.updated` messages `recv` accepted carried, in the order
/// the messages were made (their webhook-ids; deliveries run concurrently), each once.
fn updated_titles(recv: &herald_testkit::Receiver) -> Vec<String> {
    let made: std::collections::BTreeMap<String, String> = recv
        .accepted()
        .iter()
        .filter(|d| d.event_type == "task.updated")
        .filter_map(|d| {
            let title = d.body["data"]["resourceDetails"]["title"].as_str()?;
            Some((d.id.clone(), title.to_string()))
        })
        .collect();
    made.into_values().collect()
}

/// Redis refuses the webhook watch's writes for a while (its record is of the wrong type) while
/// the polls go on and the streams carry three changes: once it takes them again, each version
/// is delivered in its own message, in order.
#[tokio::test]
async fn changes_polled_while_redis_refuses_the_webhook_record_are_delivered_one_by_one() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    let task = api.add_task("version 0");
    let gws = replicas(1, &cluster_config(upstream, &redis.url(), "3s", &tasks_with_webhooks())).await;
    subscribe_webhook(&gws, recv_addr).await;
    let mut stream = gws[0].subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(stream.next_within(SOON).await.expect("a snapshot").event, "snapshot");

    assert_eq!(redis.cli(&["RENAME", "{t:wh}:states", "{t:wh}:states-away"]).trim(), "OK");
    assert_eq!(redis.cli(&["SET", "{t:wh}:states", "not a hash"]).trim(), "OK");
    for v in 1..=3 {
        let title = format!("version {v}");
        api.retitle(&task, &title);
        while !stream.next_within(SOON).await.expect("the change reaches the stream").data.contains(&title) {}
    }
    eventually("the record is refused", || gws[0].logs().contains("cannot record a change for webhooks")).await;
    assert!(updated_titles(&recv).is_empty());
    // One command: a retry between two could find no record at all.
    assert_eq!(redis.cli(&["RENAME", "{t:wh}:states-away", "{t:wh}:states"]).trim(), "OK");

    eventually("every version is delivered", || updated_titles(&recv).len() >= 3).await;
    assert_eq!(
        updated_titles(&recv),
        ["version 1", "version 2", "version 3"],
        "each version in its own message, in order"
    );
}

#[tokio::test]
async fn redis_restarted_empty_gives_everybody_a_snapshot_never_a_silent_gap() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "1s", "")).await;
    let mut followers = followers_on(&gws, 1, &api.board()).await;
    let epoch = followers[0].epoch.clone();

    redis.kill();
    for gw in &gws {
        let deadline = tokio::time::Instant::now() + SOON;
        while readyz(gw).await != 503 {
            assert!(tokio::time::Instant::now() < deadline, "/readyz stays 200 without redis");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let refused = gws[0].subscribe("/board/event-stream", &[]).await;
    assert_eq!(refused.status, 503);
    assert!(refused.headers.contains_key("retry-after"));
    // Open streams stay open: heartbeats go on.
    for f in &mut followers {
        let comments = f.client.comments;
        assert!(f.client.next_within(Duration::from_millis(1500)).await.is_none());
        assert!(f.client.comments > comments, "heartbeats while redis is down");
    }
    api.add_task("while redis was down");

    redis.restart().await;
    let want = api.board();
    for f in &mut followers {
        f.until(&want).await;
        assert_eq!(f.snapshots, 2, "a snapshot after redis lost the state");
        assert_ne!(f.epoch, epoch, "in a new epoch");
    }
    for gw in &gws {
        assert_eq!(readyz(gw).await, 200);
    }
    api.add_task("after");
    let want = api.board();
    for f in &mut followers {
        f.until(&want).await;
    }
}

#[tokio::test]
async fn redis_restarted_empty_keeps_every_webhook_subscription_and_the_change_it_missed() {
    let Some(mut redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    let yaml = cluster_config(upstream, &redis.url(), "1s", &tasks_with_webhooks());
    let gws = replicas(2, &yaml).await;
    let id = subscribe_webhook(&gws, recv_addr).await;
    let delivered = |title: &str| delivered(&recv, title);
    api.add_task("before the restart");
    eventually("delivered before the restart", || delivered("before the restart")).await;

    redis.kill();
    api.add_task("while redis was down");
    redis.restart().await;
    eventually("the change made meanwhile is delivered", || delivered("while redis was down")).await;
    api.add_task("after the restart");
    eventually("and the next one", || delivered("after the restart")).await;
    assert!(gws.iter().any(|gw| gw.logs().contains("redis lost herald's data")), "said in the log");
    // A replica started now reads the subscription from Redis.
    let late = Gateway::start(&yaml).await;
    let listed = reqwest::Client::new()
        .get(late.url(&format!("/_herald/v1/webhooks/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "the subscription is in redis again");
    let lost: f64 = futures_util::future::join_all(gws.iter().map(|gw| gw.metric("herald_redis_data_lost_total")))
        .await
        .into_iter()
        .sum();
    assert!(lost >= 1.0);
}

#[tokio::test]
async fn lost_pubsub_notices_are_filled_from_the_log() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", "")).await;
    let mut followers = followers_on(&gws, 1, &api.board()).await;
    let gaps = || async {
        let mut sum = 0.0;
        for gw in &gws {
            sum += gw.metric("herald_cluster_gaps_filled_total").await;
        }
        sum
    };
    let mut changes = 0;
    for i in 0..20 {
        // Cut every pub/sub connection just before the next poll finds a change.
        api.add_task(&format!("change {i}"));
        changes += 1;
        let last = *polls(&api).last().unwrap();
        let next = last + Duration::from_millis(430);
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        let want = api.board();
        for f in &mut followers {
            f.until(&want).await;
        }
        if gaps().await > 0.0 {
            break;
        }
    }
    assert!(gaps().await > 0.0, "a notice lost while pub/sub reconnected is counted");
    for f in &followers {
        assert_eq!((f.snapshots, f.changes), (1, changes), "every change once, in order");
    }
}

#[tokio::test]
async fn through_sentinel_three_replicas_poll_once_and_clients_resume_anywhere() {
    let Some(master) = RedisServer::start().await else { return };
    let Some(sentinel) = RedisServer::sentinel(&master).await else { return };
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port);
    one_poll_for_three_replicas(&url).await;
    resume_on_another_replica(&url).await;
}

/// `url` for `storage.url`, then the keys that make herald trust the fixtures' private CA and
/// present their client certificate (what [`cluster_config`] takes as `redis`).
fn over_tls(url: &str) -> String {
    format!(
        "{url}\n  ca_file: {}\n  client_cert: {}\n  client_key: {}",
        fixture("redis-ca.pem"),
        fixture("redis-client.pem"),
        fixture("redis-client.key")
    )
}

#[tokio::test]
async fn over_tls_with_a_private_ca_and_a_client_certificate_replicas_poll_once_and_clients_resume_anywhere() {
    let Some(redis) = RedisServer::tls(true, &[]).await else { return };
    one_poll_for_three_replicas(&over_tls(&redis.url())).await;
    resume_on_another_replica(&over_tls(&redis.url())).await;
}

#[tokio::test]
async fn through_sentinel_over_tls_the_private_ca_reaches_sentinels_and_master() {
    let Some(master) = RedisServer::tls(true, &[]).await else { return };
    let Some(sentinel) = RedisServer::sentinel(&master).await else { return };
    resume_on_another_replica(&over_tls(&format!("rediss+sentinel://127.0.0.1:{}/mymaster", sentinel.port))).await;
}

/// `herald run` with `yaml` until it exits (within [`SOON`]: it must not hang): its exit code
/// and what it printed.
async fn run_until_exit(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let run = tokio::process::Command::new(herald_bin()).args(["run", "-c"]).arg(&path).kill_on_drop(true).output();
    let out = tokio::time::timeout(SOON, run).await.expect("herald exits instead of waiting").unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn over_tls_without_the_right_ca_or_client_certificate_herald_refuses_to_start_and_says_why() {
    let Some(redis) = RedisServer::tls(true, &[]).await else { return };
    let (_api, upstream) = start_api().await;
    // Only the public web roots: they do not know the private CA.
    let (code, stderr) = run_until_exit(&cluster_config(upstream, &redis.url(), "2s", "")).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TLS: the server's certificate is not trusted"), "{stderr}");
    assert!(stderr.contains("storage.ca_file"), "names the key that fixes it: {stderr}");

    // The CA, but no client certificate for a server that asks for one.
    let ca_only = format!("{}\n  ca_file: {}", redis.url(), fixture("redis-ca.pem"));
    let (code, stderr) = run_until_exit(&cluster_config(upstream, &ca_only, "2s", "")).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TLS: the server refused the handshake"), "{stderr}");
    assert!(stderr.contains("storage.client_cert"), "{stderr}");

    // A file that holds no certificate: a configuration problem at its key, before any connection.
    let not_a_ca = format!("{}\n  ca_file: {}", redis.url(), fixture("redis-client.key"));
    let (code, stderr) = run_until_exit(&cluster_config(upstream, &not_a_ca, "2s", "")).await;
    assert_eq!(code, Some(64), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("storage.ca_file")).unwrap_or_else(|| panic!("{stderr}"));
    let (at, message) = line.split_once(": storage.ca_file: ").unwrap_or_else(|| panic!("{line}"));
    assert!(at.ends_with("gateway.yaml:14:12"), "file:line:col of the key first: {line}");
    assert!(message.contains("no PEM certificate"), "{line}");
}

/// A primary, a standby replicating it, and three Sentinels (quorum 2) ready to fail over:
/// each knows the standby and the two others (they find each other through the primary).
async fn sentinel_group() -> Option<(RedisServer, RedisServer, Vec<RedisServer>)> {
    let primary = RedisServer::start().await?;
    let standby = RedisServer::with_args(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await?;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(RedisServer::sentinel_of(&primary, 2).await?);
    }
    let standby_port = standby.port.to_string();
    eventually("the sentinels know each other and the standby", || {
        sentinels.iter().all(|s| {
            s.cli(&["SENTINEL", "SENTINELS", "mymaster"]).lines().filter(|l| *l == "name").count() == 2
                && s.cli(&["SENTINEL", "REPLICAS", "mymaster"]).lines().any(|l| l == standby_port)
        })
    })
    .await;
    Some((primary, standby, sentinels))
}

/// Waits until every Sentinel names `port` as the master; a failover is given a minute (it
/// is retried after `failover-timeout` when the first election fails).
async fn sentinels_name_master(sentinels: &[RedisServer], port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let names = |s: &RedisServer| s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
    while !sentinels.iter().all(|s| names(s).lines().nth(1) == Some(port.to_string().as_str())) {
        let seen: Vec<String> = sentinels.iter().map(|s| names(s).replace('\n', " ")).collect();
        assert!(tokio::time::Instant::now() < deadline, "no failover to port {port}: the sentinels say {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum over `gws` of one metric sample.
async fn total(gws: &[Gateway], sample: &str) -> f64 {
    futures_util::future::join_all(gws.iter().map(|gw| gw.metric(sample))).await.into_iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_moves_every_replica_to_the_promoted_primary_and_nothing_is_lost() {
    let Some((mut primary, standby, sentinels)) = sentinel_group().await else { return };
    let (api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    let hosts: Vec<String> = sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let url = format!("redis+sentinel://{}/mymaster", hosts.join(","));
    let gws = replicas(3, &cluster_config(upstream, &url, "2s", &tasks_with_webhooks())).await;
    let mut followers = followers_on(&gws, 2, &api.board()).await;

    // A webhook subscription made through the API, well before the failover.
    subscribe_webhook(&gws, recv_addr).await;
    let delivered = |title: &str| delivered(&recv, title);
    api.add_task("before the failover");
    for f in &mut followers {
        f.until(&api.board()).await;
    }
    eventually("the webhook is delivered", || delivered("before the failover")).await;
    // Replication is asynchronous: what the test relies on is on the standby before the kill.
    assert_eq!(primary.cli(&["WAIT", "1", "10000"]).trim(), "1", "the standby has it all");

    primary.kill();
    sentinels_name_master(&sentinels, standby.port).await;
    for gw in &gws {
        let deadline = tokio::time::Instant::now() + SOON;
        while readyz(gw).await != 200 {
            assert!(tokio::time::Instant::now() < deadline, "/readyz stays 503 after the failover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for i in 0..3 {
        api.add_task(&format!("after the failover {i}"));
        let want = api.board();
        for f in &mut followers {
            f.until(&want).await;
        }
    }
    for i in 0..3 {
        eventually("the subscription made before the failover delivers after it", || {
            delivered(&format!("after the failover {i}"))
        })
        .await;
    }

    // One replica polls again, and the lease stays where it is.
    let changes = total(&gws, "herald_cluster_lease_changes_total{route=\"board\"}").await;
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let times: Vec<Instant> = polls(&api).into_iter().filter(|t| *t > since).collect();
    assert!(times.len() >= 2, "polls go on");
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(250), "two polls {:?} apart", pair[1] - pair[0]);
    }
    assert_eq!(total(&gws, "herald_cluster_lease_changes_total{route=\"board\"}").await, changes, "no takeovers");
    assert_eq!(total(&gws, "herald_cluster_leases{route=\"board\"}").await, 1.0);
    for f in &followers {
        assert!(f.changes + f.snapshots >= 5, "each follower heard the changes: {} {}", f.changes, f.snapshots);
    }
    assert!(total(&gws, "herald_redis_errors_total{op=\"lease\"}").await > 0.0, "the replicas saw the primary go");
}

/// A Redis Cluster of three masters, started by the test.
async fn redis_cluster() -> Option<Vec<RedisServer>> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisServer::with_args(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]).await?);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let out = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + SOON;
        while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(tokio::time::Instant::now() < deadline, "the cluster did not form");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Some(nodes)
}

#[tokio::test]
async fn on_a_redis_cluster_three_replicas_poll_once_and_clients_resume_anywhere() {
    let Some(nodes) = redis_cluster().await else { return };
    let hosts: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let url = format!("redis+cluster://{}", hosts.join(","));
    one_poll_for_three_replicas(&url).await;
    resume_on_another_replica(&url).await;
}

#[tokio::test]
async fn a_revoked_credential_ends_its_streams_on_every_replica() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    let mine = "  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
                poll:\n      interval: 500ms\n      min_interval: 500ms\n      adaptive: false\n      jitter: 0\n";
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", mine)).await;
    let mut streams = Vec::new();
    for gw in &gws {
        let mut s = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
        assert_eq!(s.status, 200, "{}", s.body);
        assert_eq!(s.next_within(SOON).await.unwrap().event, "snapshot");
        streams.push(s);
    }
    api.revoke("alice");
    for s in &mut streams {
        let end = s.until(SOON, |e| e.event == "error").await;
        assert_eq!(end.last().map(|e| (e.event.as_str(), e.data.as_str())), Some(("error", "{\"status\":401}")));
    }
    // Nothing of alice's is served from Redis afterwards: a new stream polls anew and is refused.
    let again = gws[1].subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    assert_eq!(again.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_on_three_replicas_lose_nothing_when_one_is_killed_mid_burst() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let (recv, recv_addr) = receiver().await;
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  shutdown_grace: 3s\n\
         upstream:\n  url: http://{upstream}\n  timeout: 10s\n\
         log:\n  format: json\n  level: debug\n\
         storage:\n  kind: redis\n  url: {}\n  prefix: wh\n  lease: 1s\n\
         webhooks:\n  api_keys: [{API_KEY}]\n  timeout: 2s\n  max_in_flight: 64\n  \
         retry_schedule: [50ms, 100ms, 200ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms, 300ms]\n  \
         allow_private_destinations: [127.0.0.0/8]\n  subscriptions:\n    \
         - {{ id: durable, url: 'http://{recv_addr}/hook', path: /tasks, secret: '{WEBHOOK_SECRET}' }}\n\
         routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
         poll: {{ interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0 }}\n    \
         events: {{ format: collection, type: task, collection: {{ id: /id }} }}\n",
        redis.url()
    );
    let mut gws = replicas(3, &yaml).await;
    let holder = || gws.iter().position(|gw| gw.logs().contains("webhook watch lease taken"));
    eventually("a replica watches the subscription's resource", || holder().is_some()).await;
    let victim = holder().unwrap();
    // Changes before the watch recorded its starting point are that starting point, not deliveries.
    eventually("the webhook watch records its starting point", || {
        gws[victim].logs().contains("change recorded for webhooks")
    })
    .await;

    recv.behave(herald_testkit::Behaviour::FailFraction(0.3));
    let mut expected = std::collections::HashSet::new();
    for i in 0..2000 {
        expected.insert(api.add_task(&format!("burst {i}")));
        if i == 1000 {
            gws[victim].signal("KILL");
        }
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(gws[victim].wait(SOON).await.is_some());
    let created = |r: &herald_testkit::Receiver| -> std::collections::HashSet<String> {
        r.accepted()
            .iter()
            .filter(|d| d.event_type == "task.created")
            .map(|d| d.body["data"]["resourceId"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while created(&recv) != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} tasks never delivered",
            expected.difference(&created(&recv)).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At least once; a duplicate is the same message again (its webhook-id), never a new one.
    let mut ids: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for d in recv.accepted().iter().filter(|d| d.event_type == "task.created") {
        let task = d.body["data"]["resourceId"].as_str().unwrap().to_string();
        let first = ids.entry(task.clone()).or_insert_with(|| d.id.clone());
        assert_eq!(*first, d.id, "task {task} delivered under two webhook-ids");
    }
    assert_eq!(recv.rejected(), 0, "every request is signed with the subscription's secret");
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let mut delivering = 0;
    for i in survivors {
        if gws[i].metric("herald_webhook_deliveries_total{outcome=\"success\"}").await > 0.0 {
            delivering += 1;
        }
    }
    assert!(delivering >= 1);
}

#[tokio::test]
async fn a_write_through_one_replica_refreshes_a_watch_another_holds() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let tasks = "  - name: tasks\n    path: /tasks\n    access: public\n    poll: {interval: 30s, adaptive: false}\n";
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", tasks)).await;
    let mut subscriber = gws[0].subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(subscriber.next_within(SOON).await.expect("snapshot").event, "snapshot");
    // The watch lives on the first replica (it holds the lease); the second has none at all.
    assert_eq!(holder(&gws).await, 0);

    let written = reqwest::Client::new()
        .post(gws[1].url("/tasks"))
        .body(serde_json::json!({"title": "through the other replica"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 201);
    let change = subscriber.next_within(SOON).await.expect("the change, long before the next poll");
    assert!(change.data.contains("through the other replica"), "{}", change.data);
    let polls: Vec<Instant> = api.seen("/tasks").into_iter().filter(|r| r.method == "GET").map(|r| r.at).collect();
    assert_eq!(polls.len(), 2, "the first poll and the refresh, by the holder");
    assert!(polls[1] - polls[0] < Duration::from_secs(30));
}

/// `storage.encryption_key` for the cluster's replicas.
const ENCRYPTION_KEY: &str = "  encryption_key: 'c2VhbGVkIGluIHJlZGlzIGZvciBoZXJhbGQgdGVzdHM='\n";

/// A per-subscriber route on `/me/tasks`.
const MINE: &str = "  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
                    poll:\n      interval: 500ms\n      min_interval: 500ms\n      adaptive: false\n      jitter: 0\n";

/// Every key and value in the server, as `redis-cli` prints them.
fn everything(redis: &RedisServer) -> String {
    let mut out = String::new();
    for key in redis.cli(&["--scan"]).lines() {
        out.push_str(key);
        out.push('\n');
        out.push_str(&match redis.cli(&["TYPE", key]).trim() {
            "string" => redis.cli(&["GET", key]),
            "hash" => redis.cli(&["HGETALL", key]),
            "stream" => redis.cli(&["XRANGE", key, "-", "+"]),
            "zset" => redis.cli(&["ZRANGE", key, "0", "-1"]),
            other => panic!("{key} is a {other}"),
        });
    }
    out
}

/// The hash tags (`t:{…}`) of the watches whose state is in Redis.
fn watch_tags(redis: &RedisServer) -> Vec<String> {
    let metas = redis.cli(&["--scan", "--pattern", "t:{*}:meta"]);
    metas.lines().map(|k| k.trim_end_matches(":meta").to_string()).collect()
}

#[tokio::test]
async fn with_an_encryption_key_redis_holds_no_credential_scope_or_per_user_data() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    api.add_user_task("alice", "alice's secret diary");
    let yaml = cluster_config(upstream, &redis.url(), "2s", MINE)
        .replace("  prefix: t\n", &format!("  prefix: t\n{ENCRYPTION_KEY}"));
    let gws = replicas(2, &yaml).await;
    let mut streams = Vec::new();
    for gw in &gws {
        let mut s = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
        assert_eq!(s.status, 200, "{}", s.body);
        assert!(s.next_within(SOON).await.unwrap().data.contains("alice's secret diary"));
        streams.push(s);
    }
    api.add_user_task("alice", "alice's second secret");
    for s in &mut streams {
        let change = s.until(SOON, |e| e.event != "snapshot").await;
        assert!(change.last().unwrap().data.contains("alice's second secret"), "{change:?}");
    }
    let watches: Value = serde_json::from_str(&gws[0].admin_get("/admin/watches").await).unwrap();
    let scope = watches["watches"][0]["scope"].as_str().unwrap().to_string();
    assert_eq!(scope.len(), 16);

    let all = everything(&redis);
    assert_eq!(watch_tags(&redis).len(), 1, "{all}");
    for secret in ["alice's", "diary", "Bearer", "alice", &scope] {
        assert!(!all.contains(secret), "{secret:?} is in redis: {all}");
    }
    // Offline guessing: with any 32 bytes Redis holds as the scope key, a guessed credential
    // hashes to something else than alice's scope.
    for key in redis.cli(&["--scan"]).lines() {
        if redis.cli(&["STRLEN", key]).trim() == "32" {
            let bytes = redis_bytes(&redis, key);
            let guess = herald_core::ScopeHasher::new(bytes.try_into().unwrap())
                .scope([("authorization", Some(&b"Bearer alice"[..]))]);
            assert_ne!(guess.to_string(), scope, "{key} holds the scope key in the clear");
        }
    }
}

/// The raw bytes of a string key.
fn redis_bytes(redis: &RedisServer, key: &str) -> Vec<u8> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--no-raw", "GET", key])
        .output()
        .unwrap()
        .stdout;
    // `--no-raw` quotes the value with C-style escapes.
    let text = String::from_utf8(out).unwrap();
    let quoted = text.trim().trim_start_matches('"').trim_end_matches('"');
    let mut bytes = Vec::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            bytes.extend(c.to_string().as_bytes());
            continue;
        }
        match chars.next().unwrap() {
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            'n' => bytes.push(b'\n'),
            'r' => bytes.push(b'\r'),
            't' => bytes.push(b'\t'),
            'a' => bytes.push(7),
            'b' => bytes.push(8),
            other => bytes.push(other as u8),
        }
    }
    bytes
}

#[tokio::test]
async fn a_forged_log_entry_or_end_notice_reaches_no_frame_a_resuming_client_gets_a_snapshot() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", "")).await;
    let mut live = Follower::connect(&gws[0], &[]).await;
    api.add_task("before the forgery");
    live.until(&api.board()).await;
    let last_id = live.client.last_event_id.clone().unwrap();
    let (epoch, seq) = last_id.rsplit_once('-').unwrap();
    let seq: u64 = seq.parse().unwrap();

    // Someone with write access to Redis appends an entry whose name carries new lines (one whose
    // data does is refused the same way, see herald-store's watch_log tests), and announces it.
    let tag = watch_tags(&redis).pop().expect("the board's state is in redis");
    let redis_epoch = redis.cli(&["HGET", &format!("{tag}:meta"), "e"]).trim().to_string();
    let forged = format!("{}-0", seq + 1);
    let injected = format!("patch\nid: {epoch}-999\nevent: injected");
    redis.cli(&["XADD", &format!("{tag}:log"), &forged, "k", "c", "n", &injected, "d", "[]"]);
    redis.cli(&["HSET", &format!("{tag}:meta"), "s", &(seq + 1).to_string()]);
    redis.cli(&["PUBLISH", &format!("{tag}:ch"), &format!("{redis_epoch}:{}", seq + 1)]);

    // The live subscriber starts over from a snapshot; a client resuming from before the forged
    // entry, on either replica, gets one too.
    let resync = live.client.next_within(SOON).await.expect("a snapshot, the stream open");
    assert_eq!(resync.event, "snapshot", "{resync:?}");
    live.apply(&resync);
    let mut seen = vec![resync];
    for gw in &gws {
        let mut resumed = gw.subscribe("/board/event-stream", &[("last-event-id", &last_id)]).await;
        assert_eq!(resumed.status, 200);
        let first = resumed.next_within(SOON).await.unwrap();
        assert_eq!(first.event, "snapshot", "{first:?}");
        seen.push(first);
    }
    // An end published for the (public) watch closes nothing: what follows still arrives.
    redis.cli(&["PUBLISH", &format!("{tag}:ch"), "end:401"]);
    api.add_task("after the forgery");
    let want = api.board();
    while live.doc != want {
        let ev = live.client.next_within(SOON).await.expect("the next change");
        assert_ne!(ev.event, "error", "a forged end closed the stream");
        live.apply(&ev);
        seen.push(ev);
    }
    for ev in &seen {
        assert!(ev.event != "injected" && !ev.data.contains("injected"), "{ev:?}");
        assert_ne!(ev.id.as_deref(), Some(format!("{epoch}-999").as_str()));
    }
}

#[tokio::test]
async fn with_an_encryption_key_a_forged_end_notice_closes_no_stream() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    let yaml = cluster_config(upstream, &redis.url(), "2s", MINE)
        .replace("  prefix: t\n", &format!("  prefix: t\n{ENCRYPTION_KEY}"));
    let gws = replicas(2, &yaml).await;
    let mut streams = Vec::new();
    for gw in &gws {
        let mut s = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
        assert_eq!(s.status, 200, "{}", s.body);
        assert_eq!(s.next_within(SOON).await.unwrap().event, "snapshot");
        streams.push(s);
    }
    let tag = watch_tags(&redis).pop().expect("alice's state is in redis");
    let epoch = redis.cli(&["HGET", &format!("{tag}:meta"), "e"]).trim().to_string();
    for forged in ["end:401".to_string(), format!("end:401:{epoch}"), format!("end:403:{epoch} {}", "0".repeat(32))] {
        redis.cli(&["PUBLISH", &format!("{tag}:ch"), &forged]);
    }
    // What follows the forged notices on the channel still reaches every stream: none closed.
    api.add_user_task("alice", "still here");
    for s in &mut streams {
        let events = s.until(SOON, |e| e.data.contains("still here") || e.event == "error").await;
        let last = events.last().expect("the change");
        assert!(last.data.contains("still here"), "{events:?}");
    }
    // A genuine end still ends them.
    api.revoke("alice");
    for s in &mut streams {
        let end = s.until(SOON, |e| e.event == "error").await;
        assert_eq!(end.last().map(|e| (e.event.as_str(), e.data.as_str())), Some(("error", "{\"status\":401}")));
    }
}

/// The Redis user docs/operations.md and deploy/compose.yaml give herald, for `storage.prefix: t`:
/// its own keys and channels, and the commands it uses.
const ACL: &str = "herald on >herald-test-password resetkeys resetchannels ~t:* ~{t:wh}:* &t:* -@all \
    +ping +select +multi +exec +evalsha +eval +script|load +subscribe +unsubscribe \
    +publish +get +set +incr +del +exists +pexpire +hget +hset +hsetnx +hmget +hgetall +hkeys +hdel +hexists \
    +zadd +zrem +zrange +zrevrange +zrangebyscore +zcard +xadd +xrange +xrevrange";

#[tokio::test]
async fn replicas_need_no_more_than_the_documented_redis_acl() {
    let Some(redis) =
        RedisServer::with_args(&[&["--user"], &ACL.split_whitespace().collect::<Vec<_>>()[..]].concat()).await
    else {
        return;
    };
    let url = format!("redis://herald:herald-test-password@127.0.0.1:{}", redis.port);
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    let yaml =
        cluster_config(upstream, &url, "2s", MINE).replace("  prefix: t\n", &format!("  prefix: t\n{ENCRYPTION_KEY}"));
    let gws = replicas(2, &yaml).await;
    let mut board = Follower::connect(&gws[0], &[]).await;
    let mut mine = gws[1].subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    api.add_task("one");
    api.add_user_task("alice", "alice's");
    board.until(&api.board()).await;
    assert!(mine.until(SOON, |e| e.data.contains("alice's")).await.last().is_some_and(|e| e.data.contains("alice's")));
    let written = reqwest::Client::new()
        .post(gws[1].url("/tasks"))
        .body(serde_json::json!({"title": "through the other replica"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(written.status().is_success() || written.status() == 404, "{}", written.status());
    for gw in &gws {
        for op in ["append", "lease", "ping", "publish", "queue", "read", "secret"] {
            let sample = format!("herald_redis_errors_total{{op=\"{op}\"}}");
            assert_eq!(gw.metric(&sample).await, 0.0, "{op}: {}", gw.logs());
        }
    }
    // And nothing outside the prefix: another program's key is out of reach.
    let other = redis.cli(&["--user", "herald", "--pass", "herald-test-password", "--no-auth-warning", "GET", "other"]);
    assert!(other.contains("NOPERM"), "{other}");
}

#[tokio::test]
async fn a_delta_polled_collection_survives_a_takeover_with_one_whole_read_and_no_gap() {
    let Some(redis) = RedisServer::start().await else { return };
    let (api, upstream) = start_api().await;
    api.set_delta_form(herald_testkit::DeltaForm { cursor: herald_testkit::DeltaCursor::Max, tombstones: true });
    let changes = "  - name: changes\n    path: /changes/tasks\n    access: public\n    \
                   poll: {interval: 500ms, min_interval: 500ms, adaptive: false, jitter: 0, \
                   delta: {param: since, from: 'max:/rev', deleted: /deleted}}\n    \
                   events: {format: collection, type: task, collection: {id: /id}}\n";
    let mut gws = replicas(2, &cluster_config(upstream, &redis.url(), "1s", changes)).await;
    let mut streams = Vec::new();
    for gw in &gws {
        let mut stream = gw.subscribe("/changes/tasks/event-stream", &[]).await;
        assert_eq!(stream.next_within(SOON).await.expect("snapshot").event, "snapshot");
        streams.push(stream);
    }
    let created = |ev: Option<SseEvent>| {
        let ev = ev.expect("an event");
        assert_eq!(ev.event, "task.created", "{}", ev.data);
        ev.json()["resourceId"].as_str().unwrap().to_string()
    };
    let before = api.add_task("before the kill");
    for stream in &mut streams {
        assert_eq!(created(stream.next_within(SOON).await), before);
    }
    let deltas = || api.seen_all().into_iter().filter(|r| r.target.starts_with("/changes/tasks?since=")).count();
    eventually("the holder polls by delta", || deltas() > 0).await;

    let h = holder(&gws).await;
    let mut survivor = streams.remove(1 - h);
    let killed = Instant::now();
    gws[h].signal("KILL");
    assert!(gws[h].wait(SOON).await.is_some());
    for i in 0..3 {
        let id = api.add_task(&format!("after the kill {i}"));
        assert_eq!(created(survivor.next_within(SOON).await), id, "each change once, in order");
    }
    let after: Vec<_> =
        api.seen_all().into_iter().filter(|r| r.at > killed && r.target.starts_with("/changes/")).collect();
    let whole = after.iter().filter(|r| r.target == "/changes/tasks").count();
    assert_eq!(whole, 1, "the new holder reads the whole collection once: {after:?}");
    assert!(after.iter().any(|r| r.target.contains("since=")), "then deltas again");
}
