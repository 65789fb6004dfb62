//! The stores in Redis (cluster mode), against a `redis-server` the test starts: the operations
//! the webhook engine relies on, as one replica and as two sharing the queue, and the watch
//! log's guarded append.

use std::sync::Arc;
use std::time::Duration;

use herald_store::redis::{Acquired, Appended, Entry, Redis, RedisStore, Update, WatchLog};
use herald_store::{
    message_id, Attempted, Message, MessageStatus, Store, StoreError, Subscription, SubscriptionStatus, Subscriptions,
};
use herald_tests::RedisServer;

fn sub(id: &str) -> Subscription {
    Subscription {
        id: id.into(),
        url: "https://example.com/hook".into(),
        path: "/tasks".into(),
        filter: vec![],
        payload: None,
        secret: "whsec_secret".into(),
        previous_secret: None,
        headers: vec![("authorization".into(), "Bearer token".into())],
        description: None,
        status: SubscriptionStatus::Active,
        declared: false,
        created_at: 1,
        failing_since: None,
        owner: None,
    }
}

fn msg(sub: &str, created: u64) -> Message {
    Message {
        id: message_id(created),
        subscription: sub.into(),
        event_type: "task.created".into(),
        payload: format!("{{\"n\":{created}}}"),
        created_at: created,
        status: MessageStatus::Pending,
        attempts: 0,
        next_attempt: created,
        last_attempt: None,
        last_status: None,
        last_error: None,
    }
}

async fn store(server: &RedisServer, key: Option<&[u8; 32]>, claim: Duration) -> Result<RedisStore, StoreError> {
    let redis = Redis::connect(
        &server.url(),
        Default::default(),
        "t",
        Duration::from_secs(2),
        key,
        &prometheus::Registry::new(),
    )
    .await?;
    RedisStore::open(redis, claim).await
}

#[tokio::test]
async fn two_replicas_share_subscriptions_and_claim_each_message_once() {
    let Some(server) = RedisServer::start().await else { return };
    let a = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    let b = Arc::new(store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap());
    assert_eq!(a.scope_key().await.unwrap(), b.scope_key().await.unwrap(), "one scope key for the cluster");

    let Subscriptions::Changed { generation, subs } = b.subscriptions_since(None).await.unwrap() else {
        panic!("a first read reads them")
    };
    assert!(subs.is_empty());
    assert!(matches!(b.subscriptions_since(Some(generation)).await.unwrap(), Subscriptions::Unchanged));
    a.put_subscription(sub("s1")).await.unwrap();
    let Subscriptions::Changed { subs, .. } = b.subscriptions_since(Some(generation)).await.unwrap() else {
        panic!("others learn that subscriptions changed")
    };
    assert_eq!(subs, [sub("s1")]);
    assert_eq!(b.subscriptions().await.unwrap(), [sub("s1")]);
    let raw = server.cli(&["HGET", "{t:wh}:subs", "s1"]);
    assert!(!raw.contains("whsec_secret") && !raw.contains("Bearer"), "sealed at rest: {raw}");
    assert!(matches!(store(&server, Some(&[8; 32]), Duration::from_secs(60)).await, Err(StoreError::WrongKey)));
    assert!(matches!(store(&server, None, Duration::from_secs(60)).await, Err(StoreError::KeyNeeded)));

    // A change is recorded once: the second replica, diffing from the same old state, is refused.
    let (m1, m2) = (msg("s1", 100), msg("s1", 50));
    assert!(a.record_change("w".into(), None, b"[1]".to_vec(), vec![m1.clone(), m2.clone()]).await.unwrap());
    assert!(!b.record_change("w".into(), None, b"[1]".to_vec(), vec![msg("s1", 60)]).await.unwrap());
    assert_eq!(b.watch_state("w".into()).await.unwrap().as_deref(), Some(&b"[1]"[..]));
    assert_eq!(a.pending().await.unwrap(), 2);
    assert_eq!(b.next_due().await.unwrap(), Some(50));

    // Taking claims: what one replica took, the other does not get.
    let taken = a.due(1000, 1, vec![]).await.unwrap();
    assert_eq!(taken.iter().map(|m| m.created_at).collect::<Vec<_>>(), [50]);
    let other = b.due(1000, 10, vec![]).await.unwrap();
    assert_eq!(other.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [m1.id.as_str()]);
    assert!(a.due(1000, 10, vec![]).await.unwrap().is_empty(), "both claimed");

    // Outcomes: delivered leaves the queue; a retry comes due again when scheduled.
    let mut delivered = taken[0].clone();
    delivered.status = MessageStatus::Delivered;
    let mut retry = other[0].clone();
    retry.attempts = 1;
    retry.next_attempt = 2000;
    b.complete(vec![
        Attempted { message: delivered, taken_due: 50 },
        Attempted { message: retry.clone(), taken_due: 100 },
    ])
    .await
    .unwrap();
    assert_eq!(a.pending().await.unwrap(), 1);
    assert_eq!(a.next_due().await.unwrap(), Some(2000));
    assert_eq!(a.due(2000, 10, vec![]).await.unwrap(), [retry]);

    // Listing without payloads; replay; delete takes the messages with it.
    let listed = a.messages("s1".into(), None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|m| m.payload.is_empty()));
    assert_eq!(listed[0].created_at, 100, "newest first");
    assert_eq!(a.messages("s1".into(), Some(MessageStatus::Delivered), 10).await.unwrap().len(), 1);
    assert_eq!(a.replay("s1".into(), 0, 3000).await.unwrap(), 1, "the delivered one");
    assert!(b.delete_subscription("s1".into()).await.unwrap());
    assert_eq!(a.pending().await.unwrap(), 0);
    assert!(a.messages("s1".into(), None, 10).await.unwrap().is_empty());
    assert!(!a.delete_subscription("s1".into()).await.unwrap());
}

#[tokio::test]
async fn a_claim_lapses_so_a_dead_replicas_messages_are_delivered_by_another() {
    let Some(server) = RedisServer::start().await else { return };
    let a = store(&server, None, Duration::from_millis(300)).await.unwrap();
    let b = store(&server, None, Duration::from_millis(300)).await.unwrap();
    a.put_subscription(sub("s")).await.unwrap();
    a.enqueue(vec![msg("s", 10)]).await.unwrap();
    let now = herald_store::now_ms();
    let taken = a.due(now, 10, vec![]).await.unwrap();
    assert_eq!(taken.len(), 1);
    // `a` dies here. Within the claim, nobody else takes it; after it, `b` does, same id.
    assert!(b.due(now, 10, vec![]).await.unwrap().is_empty());
    let again = b.due(now + 301, 10, vec![]).await.unwrap();
    assert_eq!(again.iter().map(|m| &m.id).collect::<Vec<_>>(), [&taken[0].id]);
}

#[tokio::test]
async fn prune_keeps_pending_and_recent() {
    let Some(server) = RedisServer::start().await else { return };
    let s = store(&server, None, Duration::from_secs(60)).await.unwrap();
    s.put_subscription(sub("s")).await.unwrap();
    let mut finished = Vec::new();
    for created in [10, 20, 30] {
        let mut m = msg("s", created);
        m.status = MessageStatus::Delivered;
        finished.push(m);
    }
    let pending = msg("s", 5);
    s.enqueue(finished.iter().cloned().chain([pending.clone()]).collect()).await.unwrap();
    // Delivered before 15 goes; then only the newest finished one is kept.
    assert_eq!(s.prune(15, 0, 1).await.unwrap(), 2);
    let left: Vec<u64> = s.messages("s".into(), None, 10).await.unwrap().iter().map(|m| m.created_at).collect();
    assert_eq!(left, [30, 5]);
}

/// Every key and value in the server, as `redis-cli` prints them (strings, hashes, streams, sets).
fn everything(server: &RedisServer) -> String {
    let mut out = String::new();
    for key in server.cli(&["--scan"]).lines() {
        out.push_str(key);
        out.push('\n');
        let dump = match server.cli(&["TYPE", key]).trim() {
            "string" => server.cli(&["GET", key]),
            "hash" => server.cli(&["HGETALL", key]),
            "stream" => server.cli(&["XRANGE", key, "-", "+"]),
            "zset" => server.cli(&["ZRANGE", key, "0", "-1"]),
            other => panic!("{key} is a {other}"),
        };
        out.push_str(&dump);
    }
    out
}

#[tokio::test]
async fn with_a_key_per_user_state_and_messages_are_sealed_and_forged_messages_never_delivered() {
    let Some(server) = RedisServer::start().await else { return };
    let a = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    a.put_subscription(sub("s1")).await.unwrap();
    // A webhook watch's name holds its credential scope's hash.
    let watch = "mine\u{0}/me/tasks\u{0}5ca1ab1e5ca1ab1e".to_string();
    let mut m = msg("s1", 100);
    m.payload = r#"{"data":"alice's diary"}"#.into();
    assert!(a.record_change(watch.clone(), None, br#"["alice's diary"]"#.to_vec(), vec![m.clone()]).await.unwrap());
    let all = everything(&server);
    for secret in ["5ca1ab1e", "alice's diary", "whsec_secret", "Bearer"] {
        assert!(!all.contains(secret), "{secret} is in redis: {all}");
    }
    // Still one state to compare against, whoever records the next change.
    let b = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.watch_state(watch.clone()).await.unwrap().as_deref(), Some(&br#"["alice's diary"]"#[..]));
    let expected = Some(br#"["alice's diary"]"#.to_vec());
    assert!(b.record_change(watch.clone(), expected.clone(), b"[]".to_vec(), vec![]).await.unwrap());
    assert!(!a.record_change(watch, expected, b"[2]".to_vec(), vec![]).await.unwrap(), "diffed from an old state");
    // The scope key is sealed too: whoever reads redis cannot hash a guessed credential.
    let scope_key = a.scope_key().await.unwrap();
    assert_eq!(b.scope_key().await.unwrap(), scope_key);
    assert!(!everything(&server).contains(&String::from_utf8_lossy(&scope_key).into_owned()));
    assert!(server.cli(&["--scan"]).lines().all(|k| server.cli(&["STRLEN", k]).trim() != "32"), "no bare key");

    // A message written into redis by someone else would be signed with s1's secret: it is not.
    let mut forged = msg("s1", 10);
    forged.payload = r#"{"data":"forged"}"#.into();
    let record = serde_json::to_string(&serde_json::json!({
        "id": forged.id, "subscription": "s1", "event_type": "task.created", "payload": forged.payload,
        "created_at": 10, "status": "pending", "attempts": 0, "next_attempt": 10,
        "last_attempt": null, "last_status": null, "last_error": null,
    }))
    .unwrap();
    server.cli(&["HSET", "{t:wh}:msgs", &forged.id, &record]);
    server.cli(&["ZADD", "{t:wh}:queue", "10", &forged.id]);
    let due = a.due(1000, 10, vec![]).await.unwrap();
    assert_eq!(due.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [m.id.as_str()], "only herald's own");
    assert_eq!(due[0].payload, m.payload);
    assert_eq!(server.cli(&["ZSCORE", "{t:wh}:queue", &forged.id]).trim(), "", "the forged one is dropped");
}

#[tokio::test]
async fn a_scope_key_stored_before_the_encryption_key_was_set_is_kept_and_sealed() {
    let Some(server) = RedisServer::start().await else { return };
    let plain = store(&server, None, Duration::from_secs(60)).await.unwrap();
    let scope_key = plain.scope_key().await.unwrap();
    assert_eq!(server.cli(&["STRLEN", "t:scope-key"]).trim(), "32");
    let sealed = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    assert_eq!(sealed.scope_key().await.unwrap(), scope_key, "the same credential, the same scope");
    assert_ne!(server.cli(&["STRLEN", "t:scope-key"]).trim(), "32");
    assert!(matches!(plain.scope_key().await, Err(StoreError::KeyNeeded)));
}

#[tokio::test]
async fn a_message_handed_back_is_due_at_once_for_another_replica() {
    let Some(server) = RedisServer::start().await else { return };
    let claim = Duration::from_secs(60);
    let (a, b) = (store(&server, None, claim).await.unwrap(), store(&server, None, claim).await.unwrap());
    a.put_subscription(sub("s1")).await.unwrap();
    a.enqueue(vec![msg("s1", 1)]).await.unwrap();
    let taken = a.due(herald_store::now_ms(), 10, vec![]).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(b.due(herald_store::now_ms(), 10, vec![]).await.unwrap().is_empty(), "claimed by a for a minute");
    a.hand_back(vec![taken[0].id.clone(), "never-queued".into()], herald_store::now_ms()).await.unwrap();
    let again = b.due(herald_store::now_ms(), 10, vec![]).await.unwrap();
    assert_eq!(again.iter().map(|m| &m.id).collect::<Vec<_>>(), vec![&taken[0].id]);
    assert_eq!(b.pending().await.unwrap(), 1, "a message never queued is not added by handing it back");
}

/// The watch log `w` on `server`, its lease held as `r1`.
async fn held_watch_log(server: &RedisServer) -> (WatchLog, String) {
    let (url, registry) = (server.url(), prometheus::Registry::new());
    let redis = Redis::connect(&url, Default::default(), "t", Duration::from_secs(2), None, &registry);
    let log = redis.await.unwrap().watch_log("w", Duration::from_secs(600));
    let Acquired::Held(lease) = log.acquire("r1", Duration::from_secs(10)).await.unwrap() else { panic!("free") };
    (log, lease)
}

/// A poll's result: the representation `body`, and one event saying so.
fn change(body: impl ToString) -> Update {
    let body = body.to_string();
    Update {
        body: Some((body.clone().into(), None)),
        events: vec![Entry { seq: 0, kind: b'c', name: "patch".into(), data: body.into() }],
        ..Update::default()
    }
}

#[tokio::test]
async fn an_append_diffed_from_a_state_redis_has_moved_past_is_refused() {
    let Some(server) = RedisServer::start().await else { return };
    let (log, lease) = held_watch_log(&server).await;
    let Appended::Done { epoch, first: 1, last: 1 } = log.append(&lease, (0, 0), 7, 10, &change("a")).await.unwrap()
    else {
        panic!("a new watch's first append is done")
    };
    // The same change again from the state before it, as a holder whose answer was lost makes it.
    assert_eq!(log.append(&lease, (epoch, 0), 7, 10, &change("a")).await.unwrap(), Appended::Moved { epoch, seq: 1 });
    assert_eq!(
        log.append(&lease, (epoch, 1), 7, 10, &change("b")).await.unwrap(),
        Appended::Done { epoch, first: 2, last: 2 }
    );
    let (meta, entries) = log.read(Some(0), 10).await.unwrap().unwrap();
    assert_eq!((meta.seq, entries.len(), &meta.body[..]), (2, 2, &b"b"[..]), "each change logged once");
}

#[tokio::test]
async fn a_watch_state_behind_what_its_writer_applied_is_written_anew_in_a_new_epoch() {
    let Some(server) = RedisServer::start().await else { return };
    let (log, lease) = held_watch_log(&server).await;
    let poll = Update { last_poll: Some(1), ..Update::default() };
    let Appended::Done { epoch, .. } = log.append(&lease, (0, 0), 7, 100, &change(1)).await.unwrap() else {
        panic!("written")
    };
    assert_eq!(epoch, 7);
    assert_eq!(
        log.append(&lease, (7, 1), 8, 100, &change(2)).await.unwrap(),
        Appended::Done { epoch, first: 2, last: 2 }
    );
    // A writer behind Redis (it has not read the last write yet) writes nothing: it reads Redis.
    assert_eq!(log.append(&lease, (7, 1), 8, 100, &poll).await.unwrap(), Appended::Moved { epoch, seq: 2 });

    // A failover to a replica that never received the second write: Redis is back at 1, the
    // writer (and whoever followed it) at 2. Numbering on would give 2 to another event.
    server.cli(&["XDEL", "t:{w}:log", "2-0"]);
    server.cli(&["HSET", "t:{w}:meta", "s", "1"]);
    assert_eq!(log.append(&lease, (7, 2), 9, 100, &poll).await.unwrap(), Appended::StateNeeded);
    assert_eq!(log.read(None, 10).await.unwrap(), None, "the state that lost writes is gone");
    assert_eq!(
        log.append(&lease, (7, 2), 9, 100, &change(3)).await.unwrap(),
        Appended::Done { epoch: 9, first: 1, last: 1 }
    );
}

#[tokio::test]
async fn a_store_that_lost_its_data_says_so_until_a_replica_writes_back_what_it_holds() {
    let Some(mut server) = RedisServer::start().await else { return };
    let a = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    let scope_key = a.scope_key().await.unwrap();
    a.put_subscription(sub("kept")).await.unwrap();
    let Subscriptions::Changed { generation, .. } = a.subscriptions_since(None).await.unwrap() else { panic!() };

    server.restart().await; // empty
                            // The first call after the restart finds the old connection broken.
    let _ = a.subscriptions_since(Some(generation)).await;
    assert!(matches!(a.subscriptions_since(Some(generation)).await.unwrap(), Subscriptions::Lost));
    // A replica started on the empty store meanwhile: its subscription is kept, not overwritten.
    let b = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    assert_ne!(b.scope_key().await.unwrap(), scope_key, "a new one, as a starting replica makes it");
    let mut newer = sub("kept");
    newer.description = Some("written since".into());
    b.put_subscription(newer.clone()).await.unwrap();
    assert!(matches!(a.subscriptions_since(Some(generation)).await.unwrap(), Subscriptions::Lost));

    let same = a.restore(scope_key, vec![sub("kept"), sub("only-in-a")]).await.unwrap();
    assert!(!same, "b made a scope key of its own first");
    let Subscriptions::Changed { mut subs, .. } = a.subscriptions_since(None).await.unwrap() else {
        panic!("whole again, for a too")
    };
    subs.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(subs, [newer, sub("only-in-a")]);
    assert!(!matches!(b.subscriptions_since(None).await.unwrap(), Subscriptions::Lost), "and for b");
}
