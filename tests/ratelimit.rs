//! The upstream's quota end to end (spec section 10): an upstream that announces its quota in
//! `RateLimit` (the IETF draft) or `X-RateLimit-*` fields and refuses requests over it with a
//! 429 is never sent one too many, however much more the configured intervals would ask, and
//! every change still reaches every subscriber.

use herald_testkit::{LegacyApi, QuotaForm};
use herald_tests::*;
use std::time::Duration;

/// Ten watches of `/tasks` (one per query) polled every 200 ms: 50 polls a second if nothing
/// held them back.
const WATCHES: usize = 10;
const ROUTES: &str = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    \
    poll: {interval: 200ms, min_interval: 200ms, adaptive: false, jitter: 0}\n";

async fn quota_is_spared_and_every_change_delivered(form: QuotaForm) {
    let api = LegacyApi::new();
    // 30 requests per 5 s: a tenth of what the intervals would spend.
    api.enforce_quota(30, Duration::from_secs(5), form);
    let upstream = api.serve("127.0.0.1:0".parse().unwrap()).await.expect("bind the fake upstream");
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let mut streams = Vec::new();
    for w in 0..WATCHES {
        let mut stream = gw.subscribe(&format!("/tasks/event-stream?w={w}"), &[]).await;
        stream.next_within(SOON).await.unwrap_or_else(|| panic!("{form:?}: snapshot of watch {w}"));
        streams.push(stream);
    }
    // A change every couple of seconds, over four windows or so: each one reaches every watch.
    for change in 0..6 {
        let id = api.add_task(&format!("change {change}"));
        for (w, stream) in streams.iter_mut().enumerate() {
            let ev = stream.next_within(SOON).await.unwrap_or_else(|| panic!("{form:?}: change {change} on watch {w}"));
            assert!(ev.data.contains(&id), "{form:?}: watch {w} got {ev:?}, not change {change}");
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert_eq!(api.quota_refusals(), 0, "{form:?}: requests over the upstream's quota");
    assert!(
        gw.metric("herald_upstream_requests_deferred_total").await > 0.0,
        "{form:?}: the quota held nothing back (the test does not test anything)"
    );
}

#[tokio::test]
async fn the_ietf_draft_ratelimit_fields_are_honoured() {
    quota_is_spared_and_every_change_delivered(QuotaForm::Ietf).await;
}

#[tokio::test]
async fn x_ratelimit_fields_with_a_unix_reset_are_honoured() {
    quota_is_spared_and_every_change_delivered(QuotaForm::XRateLimit).await;
}

/// herald in front of an API where `routes` are polled, `upstream.headers` naming the service
/// account and `max_concurrency: 2` (one slot for first polls and admission checks).
async fn with_two_slots(routes: &str) -> (LegacyApi, Gateway) {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, &format!("routes:\n{routes}")).replace(
        "  timeout: 2s\n",
        "  timeout: 2s\n  max_concurrency: 2\n  headers:\n    authorization: Bearer service\n",
    );
    (api, Gateway::start(&yaml).await)
}

const MINE: &str = "  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n";

// One user whose quota the upstream says is spent for an hour holds no poll slot while herald
// waits for the reset: asking again, that user is told when to come back, at once, and other
// users' first polls (which share one slot here) go on.
#[tokio::test]
async fn a_credential_without_quota_left_holds_no_poll_slot_until_its_reset() {
    let (api, gw) = with_two_slots(MINE).await;
    api.spend_quota_of(Some("mallory"));
    let mallory = [("authorization", "Bearer mallory")];
    let first = gw.subscribe("/me/tasks/event-stream", &mallory).await;
    assert_eq!(first.status, 429, "the upstream's answer: {}", first.body);

    let again = tokio::time::timeout(SOON, gw.subscribe("/me/tasks/event-stream", &mallory))
        .await
        .expect("a request waiting for the quota's reset");
    assert_eq!(again.status, 503, "{}", again.body);
    assert!(again.body.starts_with("upstream quota exhausted until "), "{}", again.body);
    let retry_after: u64 = again.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 3000 && retry_after <= 3600, "Retry-After: {retry_after}");
    // Held back in herald: the upstream was asked once.
    let asked = api.seen("/me/tasks").iter().filter(|r| r.authorization.as_deref() == Some("Bearer mallory")).count();
    assert_eq!(asked, 1);

    // Meanwhile (mallory asking on), alice's first poll gets the slot.
    let asking = tokio::spawn({
        let url = gw.url("/me/tasks/event-stream");
        async move {
            for _ in 0..5 {
                SseClient::connect(&url, &[("authorization", "Bearer mallory")]).await;
            }
        }
    });
    let alice =
        tokio::time::timeout(SOON, gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]))
            .await
            .expect("alice's first poll waited for mallory's quota");
    assert_eq!(alice.status, 200, "{}", alice.body);
    asking.await.unwrap();
    assert!(gw.metric("herald_upstream_requests_deferred_total").await >= 1.0);
}

// What the upstream answers a subscriber who sent no credential ("none left for an hour") is
// that subscriber's quota, not the service's: herald's own polls go on.
#[tokio::test]
async fn an_anonymous_subscribers_spent_quota_does_not_stop_heralds_own_polls() {
    let public = "  - name: tasks\n    path: /tasks\n    access: public\n    \
        poll: {interval: 200ms, min_interval: 200ms, adaptive: false, jitter: 0}\n";
    let (api, gw) = with_two_slots(&format!("{MINE}{public}")).await;
    api.spend_quota_of(None);
    let mut tasks = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(tasks.status, 200, "{}", tasks.body);
    tasks.next_within(SOON).await.unwrap();

    let anonymous = gw.subscribe("/me/tasks/event-stream", &[]).await;
    assert_eq!(anonymous.status, 429, "{}", anonymous.body);
    let id = api.add_task("after the anonymous 429");
    let ev = tasks.next_within(SOON).await.expect("herald's own polls stopped");
    assert!(ev.data.contains(&id), "{ev:?}");
    assert_eq!(gw.metric("herald_upstream_rate_limit_remaining").await, -1.0, "the service budget has no reading");
}
