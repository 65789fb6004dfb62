//! Credential scopes end to end: per-subscriber watches never mix users, the upstream decides
//! access, revoked credentials end their streams, shared routes admit per credential.

use herald_tests::*;
use serde_json::json;

const ME: &str = "routes:\n  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    poll:\n      interval: 200ms\n      min_interval: 100ms\n      adaptive: false\n";

#[tokio::test]
async fn alice_never_sees_bobs_data_and_bad_tokens_get_the_upstreams_401() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ME)).await;

    let mut alice = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    let mut bob = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer bob")]).await;
    let mut alice2 = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.next_within(SOON).await.unwrap().json()[0]["owner"], "alice");
    assert_eq!(alice2.next_within(SOON).await.unwrap().json()[0]["owner"], "alice");
    assert_eq!(bob.next_within(SOON).await.unwrap().json()[0]["owner"], "bob");

    api.add_user_task("bob", "Bob's surprise");
    let ev = bob.next_within(SOON).await.unwrap();
    assert_eq!(ev.event, "change");
    assert!(ev.data.contains("Bob's surprise"));
    api.add_user_task("alice", "Alice's next step");
    for a in [&mut alice, &mut alice2] {
        let ev = a.next_within(SOON).await.unwrap();
        assert!(ev.data.contains("Alice's next step") && !ev.data.contains("bob"), "{}", ev.data);
    }

    // Two credentials, two watches; the two alices share one.
    let watches: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    let rows = watches["watches"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().map(|w| w["subscribers"].as_u64().unwrap()).sum::<u64>(), 3);

    for headers in [&[("authorization", "Bearer mallory")][..], &[]] {
        let refused = gw.subscribe("/me/tasks/event-stream", headers).await;
        assert_eq!(refused.status, 401);
        assert_eq!(refused.headers["content-type"], "application/json");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&refused.body).unwrap(), json!({"error": "unauthorized"}));
    }

    // No credential in logs, metrics or admin output.
    let metrics = gw.admin_get("/metrics").await;
    let admin = gw.admin_get("/admin/watches").await;
    for place in [gw.logs(), metrics, admin] {
        for secret in ["Bearer", "alice", "mallory"] {
            assert!(!place.contains(secret), "{secret:?} leaked into:\n{place}");
        }
    }
}

#[tokio::test]
async fn a_revoked_token_ends_the_stream() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ME)).await;
    let mut alice = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    let mut bob = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer bob")]).await;
    alice.next_within(SOON).await.unwrap();
    bob.next_within(SOON).await.unwrap();

    api.revoke("alice");
    let end = alice.next_within(SOON).await.expect("an error event");
    assert_eq!(end.event, "error");
    assert_eq!(end.json(), json!({"status": 401}));
    assert!(alice.next_within(SOON).await.is_none(), "the stream is closed after the error");

    // Bob is unaffected; alice's watch is gone.
    api.add_user_task("bob", "still here");
    assert!(bob.next_within(SOON).await.unwrap().data.contains("still here"));
    let watches: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    assert_eq!(watches["watches"].as_array().unwrap().len(), 1);
    assert_eq!(gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await.status, 401);
}

#[tokio::test]
async fn shared_routes_admit_each_credential_then_share_one_watch() {
    let (api, upstream) = start_api().await;
    // A shared watch of /me/tasks polls with upstream.headers (here: bob's token) for everyone,
    // after checking each subscriber's own token once.
    let yaml = config(upstream, "")
        .replace("  timeout: 2s\n", "  timeout: 2s\n  headers:\n    authorization: Bearer bob\n")
        + "routes:\n  - name: board\n    path: /me/tasks\n    access: shared\n    vary: [authorization]\n    authorize_ttl: 1m\n    poll:\n      interval: 5s\n";
    let gw = Gateway::start(&yaml).await;
    let before = api.stats("/me/tasks").requests;
    let mut alice = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.next_within(SOON).await.unwrap().json()[0]["owner"], "bob", "the shared representation");
    let _alice_again = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    let denied = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer mallory")]).await;
    assert_eq!(denied.status, 401);
    // Each answer above came after its admission check and alice's snapshot after the first poll:
    // alice's admission (once, then cached), mallory's, and the watch's first poll.
    assert_eq!(api.stats("/me/tasks").requests - before, 3);
}
