//! Delta polling end to end (spec section 3, `poll.delta`): after one whole read, only what
//! changed since is asked for, merged by id into the collection herald holds, and subscribers
//! get exactly the events full polling would have sent.

use herald_testkit::{DeltaCursor, DeltaForm, LegacyApi};
use herald_tests::*;
use serde_json::{json, Value};

/// One route on the test API's `/changes/tasks`, polled every 100 ms, with `delta` (or whole).
fn route(format: &str, items: &str, delta: Option<&str>) -> String {
    let events = match format {
        "collection" => format!("{{format: collection, type: task, collection: {{items: '{items}', id: /id}}}}"),
        _ => "{format: json-patch, array_id: /id}".to_string(),
    };
    let delta = delta.map_or(String::new(), |d| format!(", delta: {d}"));
    format!(
        "routes:\n  - name: changes\n    path: /changes/tasks\n    access: public\n    \
         poll: {{interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0{delta}}}\n    \
         events: {events}\n"
    )
}

/// The events' names and data (ids differ between gateways).
async fn next_events(stream: &mut SseClient, n: usize, what: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    while events.len() < n {
        let ev = stream.next_within(SOON).await.unwrap_or_else(|| panic!("{what}: {} of {n} events", events.len()));
        events.push((ev.event.clone(), ev.json()));
    }
    events
}

/// One step of the change script: made at once (no poll sees half of it); how many item events
/// it makes.
type Step = fn(&LegacyApi) -> usize;

const SCRIPT: [(&str, Step); 6] = [
    ("retitle one", |api| {
        api.edit(|tasks, _| tasks[4]["title"] = json!("retitled"));
        1
    }),
    ("add two", |api| {
        api.edit(|tasks, new| {
            tasks.push(new("one more"));
            tasks.push(new("and another"));
        });
        2
    }),
    ("remove one, change another", |api| {
        api.edit(|tasks, _| {
            tasks.remove(1);
            tasks[7]["done"] = json!(true);
        });
        2
    }),
    ("toggle three", |api| {
        api.edit(|tasks, _| {
            for i in [0, 3, 9] {
                tasks[i]["done"] = json!(!tasks[i]["done"].as_bool().unwrap());
            }
        });
        3
    }),
    ("remove two, add one", |api| {
        api.edit(|tasks, new| {
            tasks.remove(5);
            tasks.remove(0);
            tasks.push(new("late arrival"));
        });
        3
    }),
    ("change the one added last", |api| {
        api.edit(|tasks, _| tasks.last_mut().unwrap()["title"] = json!("renamed"));
        1
    }),
];

#[tokio::test]
async fn the_same_changes_make_the_same_events_as_full_polling() {
    let cases = [
        ("collection", DeltaCursor::Max, true, "{param: since, from: 'max:/rev', deleted: /deleted}"),
        ("collection", DeltaCursor::Body, false, "{param: since, from: 'body:/next', deleted: 'feed:/deleted'}"),
        ("collection", DeltaCursor::Header, true, "{param: since, from: 'header:x-next-since', deleted: /deleted}"),
        ("json-patch", DeltaCursor::Max, false, "{param: since, from: 'max:/rev', deleted: 'feed:/deleted'}"),
    ];
    for (format, cursor, tombstones, delta) in cases {
        let case = format!("{format}, {delta}");
        let (api, upstream) = start_api().await;
        api.set_delta_form(DeltaForm { cursor, tombstones });
        api.add_tasks(12);
        let items = if cursor == DeltaCursor::Body { "/items" } else { "" };
        let full = Gateway::start(&config(upstream, &route(format, items, None))).await;
        let by_delta = Gateway::start(&config(upstream, &route(format, items, Some(delta)))).await;
        let mut full_stream = full.subscribe("/changes/tasks/event-stream", &[]).await;
        let mut delta_stream = by_delta.subscribe("/changes/tasks/event-stream", &[]).await;
        let snapshot = next_events(&mut full_stream, 1, &case).await;
        assert_eq!(next_events(&mut delta_stream, 1, &case).await, snapshot, "{case}: the snapshots");

        for (what, step) in SCRIPT {
            let items = step(&api);
            // A collection sends one event per changed item; json-patch one patch per change.
            let n = if format == "collection" { items } else { 1 };
            let expected = next_events(&mut full_stream, n, &format!("{case}: {what}, full")).await;
            let got = next_events(&mut delta_stream, n, &format!("{case}: {what}, delta")).await;
            assert_eq!(got, expected, "{case}: {what}");
        }
        // The delta gateway read the whole collection once; every other poll asked for changes.
        let deltas: Vec<_> = api.seen_all().into_iter().filter(|r| r.target.contains("since=")).collect();
        assert!(deltas.len() >= SCRIPT.len(), "{case}: {} delta polls", deltas.len());
        let whole = api.seen_all().iter().filter(|r| r.target == "/changes/tasks").count();
        assert!(whole >= SCRIPT.len(), "{case}: the full-polling gateway polls the whole list");
        let logs = by_delta.logs();
        assert!(!logs.contains("upstream started failing"), "{case}: {logs}");
    }
}

#[tokio::test]
async fn without_tombstones_a_removal_is_found_by_the_next_full_read() {
    let (api, upstream) = start_api().await;
    api.set_delta_form(DeltaForm { cursor: DeltaCursor::Max, tombstones: false });
    let delta = Some("{param: since, from: 'max:/rev', full_every: 2s}");
    let gw = Gateway::start(&config(upstream, &route("collection", "", delta))).await;
    let mut stream = gw.subscribe("/changes/tasks/event-stream", &[]).await;
    stream.next_within(SOON).await.expect("snapshot");
    let first = api.tasks()[0]["id"].as_str().unwrap().to_string();
    api.remove_task(&first);
    let added = api.add_task("added after");
    // The addition comes with the next delta; the removal when the whole list is read again.
    let ev = stream.next_within(SOON).await.expect("the addition");
    assert_eq!((ev.event.as_str(), ev.json()["resourceId"].as_str()), ("task.created", Some(added.as_str())));
    let ev = stream.next_within(SOON).await.expect("the removal");
    assert_eq!((ev.event.as_str(), ev.json()["resourceId"].as_str()), ("task.deleted", Some(first.as_str())));
    let reads = api.seen_all().iter().filter(|r| r.target == "/changes/tasks").count();
    assert!(reads >= 2, "the first read and the repair: {reads}");
}

#[tokio::test]
async fn each_subscriber_s_collection_is_polled_for_its_own_changes_with_its_own_credential() {
    let (api, upstream) = start_api().await;
    api.set_delta_form(DeltaForm { cursor: DeltaCursor::Max, tombstones: true });
    let routes = "routes:\n  - name: mine\n    path: /changes/me/tasks\n    access: per-subscriber\n    \
                  vary: [authorization]\n    \
                  poll: {interval: 100ms, min_interval: 100ms, adaptive: false, jitter: 0, \
                  delta: {param: since, from: 'max:/rev', deleted: /deleted}}\n    \
                  events: {format: collection, type: task, collection: {id: /id}}\n";
    let gw = Gateway::start(&config(upstream, routes)).await;
    let mut alice = gw.subscribe("/changes/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    let mut bob = gw.subscribe("/changes/me/tasks/event-stream", &[("authorization", "Bearer bob")]).await;
    alice.next_within(SOON).await.expect("alice's snapshot");
    bob.next_within(SOON).await.expect("bob's snapshot");
    eventually("both watches poll by delta", || {
        let deltas: Vec<_> = api.seen_all().into_iter().filter(|r| r.target.contains("since=")).collect();
        ["Bearer alice", "Bearer bob"].iter().all(|who| deltas.iter().any(|r| r.authorization.as_deref() == Some(*who)))
    })
    .await;

    api.add_user_task("alice", "alice's new task");
    api.add_user_task("bob", "bob's new task");
    let ev = alice.next_within(SOON).await.expect("alice's task");
    assert_eq!((ev.event.as_str(), ev.json()["resourceDetails"]["owner"].as_str()), ("task.created", Some("alice")));
    let ev = bob.next_within(SOON).await.expect("bob's task");
    assert_eq!(
        (ev.event.as_str(), ev.json()["resourceDetails"]["owner"].as_str()),
        ("task.created", Some("bob")),
        "bob's first event is his own task, never alice's"
    );
    // Every poll carried a subscriber's own credential, never none.
    for r in api.seen_all().iter().filter(|r| r.target.starts_with("/changes/")) {
        assert!(matches!(r.authorization.as_deref(), Some("Bearer alice" | "Bearer bob")), "{r:?}");
    }
}
