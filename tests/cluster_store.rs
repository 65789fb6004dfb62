//! The webhook store in Redis (cluster mode), against a `redis-server` the test starts: the
//! operations the webhook engine relies on, as one replica and as two sharing the queue.

use std::sync::Arc;
use std::time::Duration;

use herald_store::redis::{Redis, RedisStore};
use herald_store::{
    message_id, Attempted, Message, MessageStatus, Store, StoreError, Subscription, SubscriptionStatus,
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
    let redis = Redis::connect(&server.url(), "t", Duration::from_secs(2), &prometheus::Registry::new()).await?;
    RedisStore::open(redis, key, claim).await
}

#[tokio::test]
async fn two_replicas_share_subscriptions_and_claim_each_message_once() {
    let Some(server) = RedisServer::start().await else { return };
    let a = store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap();
    let b = Arc::new(store(&server, Some(&[7; 32]), Duration::from_secs(60)).await.unwrap());
    assert_eq!(a.scope_key().await.unwrap(), b.scope_key().await.unwrap(), "one scope key for the cluster");

    let generation = b.generation().await.unwrap();
    a.put_subscription(sub("s1")).await.unwrap();
    assert!(b.generation().await.unwrap() > generation, "others learn that subscriptions changed");
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
