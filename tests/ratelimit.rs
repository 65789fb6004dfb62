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
