//! Cluster mode end to end (spec section 12): several herald processes on one `redis-server`
//! the test starts (and kills), one fake upstream that counts what it is asked.

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

    /// Reads until the document equals `want`.
    async fn until(&mut self, want: &Value) {
        let deadline = tokio::time::Instant::now() + SOON;
        while &self.doc != want {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.client.next_within(left).await.unwrap_or_else(|| panic!("converged to {want}, holds {}", self.doc));
            self.apply(&ev);
        }
    }
}

/// The poll times the upstream saw for `/board`.
fn polls(api: &LegacyApi) -> Vec<Instant> {
    api.seen("/board").into_iter().map(|r| r.at).collect()
}

#[tokio::test]
async fn three_replicas_poll_once_per_interval_and_every_subscriber_gets_every_change() {
    let redis = RedisServer::start().await;
    let (api, upstream) = start_api().await;
    let gws = replicas(3, &cluster_config(upstream, &redis.url(), "2s", "")).await;
    let mut followers = Vec::new();
    for gw in &gws {
        for _ in 0..3 {
            followers.push(Follower::connect(gw, &[]).await);
        }
    }
    for f in &mut followers {
        f.until(&api.board()).await;
    }
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
    assert!(holders.iter().all(|h| h.is_string() && h == &holders[0]), "every replica names the one holder: {holders:?}");
    let leases: f64 = futures_util::future::join_all(gws.iter().map(|gw| gw.metric("herald_cluster_leases{route=\"board\"}")))
        .await
        .into_iter()
        .sum();
    assert_eq!(leases, 1.0);
}

#[tokio::test]
async fn a_client_resumes_on_another_replica_with_exactly_the_events_it_missed() {
    let redis = RedisServer::start().await;
    let (api, upstream) = start_api().await;
    let gws = replicas(2, &cluster_config(upstream, &redis.url(), "2s", "")).await;
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
    let redis = RedisServer::start().await;
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
    let redis = RedisServer::start().await;
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
        assert!(pair[1] - pair[0] >= Duration::from_millis(250), "alice's watch polled twice in {:?}", pair[1] - pair[0]);
    }
    api.add_user_task("bob", "bob's second");
    let ev = streams[2].until(SOON, |e| e.event != "snapshot").await;
    assert!(ev.last().unwrap().data.contains("bob's second"));
    for alice in &mut streams[..2] {
        assert!(alice.next_within(Duration::from_millis(1500)).await.is_none(), "alice never hears of bob's tasks");
    }
}
