//! Event formats end to end: whatever the format, a subscriber that applies what it receives —
//! across reconnects with Last-Event-ID in the middle of a burst of changes — ends on the
//! upstream's current representation.

use std::collections::HashMap;
use std::time::Duration;

use herald_tests::*;
use serde_json::{json, Value};

fn route(path: &str, events: &str) -> String {
    format!(
        "routes:\n  - name: r\n    path: {path}\n    access: public\n    poll:\n      interval: 25ms\n      min_interval: 25ms\n      adaptive: false\n      jitter: 0\n    events:\n{events}"
    )
}

/// What a subscriber holds, updated by the events it receives.
enum State {
    Doc(Value),
    Items(HashMap<String, Value>),
}

impl State {
    fn apply(&mut self, ev: &SseEvent) {
        let data = ev.json();
        match (self, ev.event.as_str()) {
            (State::Doc(doc), "snapshot") => *doc = data,
            (State::Items(items), "snapshot") => *items = by_id(&data),
            (State::Doc(doc), "patch") => {
                let patch: json_patch::Patch = serde_json::from_value(data).unwrap();
                json_patch::patch(doc, &patch).unwrap_or_else(|e| panic!("patch does not apply: {e}"));
            }
            (State::Doc(doc), "merge-patch") => json_patch::merge(doc, &data),
            (State::Items(items), name) if name.ends_with(".deleted") => {
                assert!(items.remove(data["resourceId"].as_str().unwrap()).is_some(), "deleted an unknown item");
            }
            (State::Items(items), name) if name.ends_with(".created") || name.ends_with(".updated") => {
                items.insert(data["resourceId"].as_str().unwrap().to_string(), data["resourceDetails"].clone());
            }
            (_, "upstream-status") => {}
            (_, other) => panic!("unexpected event {other}"),
        }
    }

    fn matches(&self, upstream: &Value) -> bool {
        match self {
            State::Doc(doc) => doc == upstream,
            State::Items(items) => *items == by_id(upstream),
        }
    }
}

fn by_id(list: &Value) -> HashMap<String, Value> {
    list.as_array().unwrap().iter().map(|t| (t["id"].as_str().unwrap().to_string(), t.clone())).collect()
}

/// Runs a burst of 40 edits while the subscriber reconnects every third event, then checks that
/// it converged. Returns the events it received after the first snapshot.
async fn converges(path: &str, events: &str, items: bool, current: impl Fn(&LegacyApi) -> Value) -> Vec<SseEvent> {
    let (api, upstream) = start_api().await;
    for i in 0..20 {
        api.add_task(&format!("seed {i}"));
    }
    let gw = Gateway::start(&config(upstream, &route(path, events))).await;
    let url = format!("{path}/event-stream");
    let mut client = gw.subscribe(&url, &[]).await;
    let first = client.next_within(SOON).await.unwrap();
    assert_eq!(first.event, "snapshot");
    let mut state = if items { State::Items(HashMap::new()) } else { State::Doc(Value::Null) };
    state.apply(&first);

    let burst = tokio::spawn({
        let api = api.clone();
        async move {
            for i in 0..40u32 {
                let n = api.tasks().as_array().unwrap().len();
                let id = |k: usize| api.tasks()[k % n]["id"].as_str().unwrap().to_string();
                match i % 5 {
                    0 => drop(api.add_task(&format!("burst {i}"))),
                    1 => api.toggle(&id(i as usize * 7)),
                    2 => api.retitle(&id(i as usize * 3), &format!("retitled {i}")),
                    3 => api.move_task(i as usize % n, (i as usize * 11) % n),
                    _ => api.remove_task(&id(i as usize * 5)),
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    });

    let mut received = Vec::new();
    let mut reconnects = 0;
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "did not converge");
        match client.next_within(Duration::from_millis(300)).await {
            Some(ev) => {
                state.apply(&ev);
                received.push(ev);
                if received.len() % 3 == 0 {
                    // Reconnect where a browser would: with the last id it saw.
                    let last = client.last_event_id.clone().unwrap();
                    client = gw.subscribe(&url, &[("last-event-id", &last)]).await;
                    reconnects += 1;
                    let resumed = client.next_within(Duration::from_millis(300)).await;
                    if let Some(ev) = resumed {
                        assert_ne!(ev.event, "snapshot", "a resume within the history gets no snapshot");
                        state.apply(&ev);
                        received.push(ev);
                    }
                }
            }
            None if burst.is_finished() && state.matches(&current(&api)) => break,
            None => {}
        }
    }
    assert!(reconnects >= 2, "only {reconnects} reconnects");
    let ids: Vec<u64> = received.iter().filter(|e| e.id.is_some()).map(seq).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase across reconnects: {ids:?}");
    received
}

#[tokio::test]
async fn json_patch_converges_across_reconnects() {
    let events = converges("/tasks", "      format: json-patch\n      array_id: /id\n", false, LegacyApi::tasks).await;
    assert!(events.iter().all(|e| e.event == "patch"));
}

#[tokio::test]
async fn one_edit_is_one_small_operation() {
    let (api, upstream) = start_api().await;
    let gw =
        Gateway::start(&config(upstream, &route("/tasks", "      format: json-patch\n      array_id: /id\n"))).await;
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();
    api.toggle("2");
    assert_eq!(c.next_within(SOON).await.unwrap().json(), json!([{"op": "replace", "path": "/1/done", "value": true}]));
    api.move_task(2, 0);
    assert_eq!(c.next_within(SOON).await.unwrap().json(), json!([{"op": "move", "from": "/2", "path": "/0"}]));
    let id = api.add_task("new");
    assert_eq!(
        c.next_within(SOON).await.unwrap().json(),
        json!([{"op": "add", "path": "/3", "value": {"done": false, "id": id, "title": "new"}}])
    );
}

#[tokio::test]
async fn json_patch_by_content_converges_on_a_nested_document() {
    converges("/board", "      format: json-patch\n", false, LegacyApi::board).await;
}

#[tokio::test]
async fn merge_patch_converges_across_reconnects() {
    let events = converges("/board", "      format: merge-patch\n", false, LegacyApi::board).await;
    assert!(events.iter().any(|e| e.event == "merge-patch"));
}

#[tokio::test]
async fn collection_events_converge_as_a_set() {
    let events = converges(
        "/tasks",
        "      format: collection\n      type: task\n      collection: { items: \"\", id: /id }\n",
        true,
        LegacyApi::tasks,
    )
    .await;
    for kind in ["task.created", "task.updated", "task.deleted"] {
        assert!(events.iter().any(|e| e.event == kind), "no {kind} event");
    }
    let created = events.iter().find(|e| e.event == "task.created").unwrap().json();
    let id = created["resourceId"].as_str().unwrap();
    assert_eq!(
        created["_links"],
        json!([{"href": format!("/tasks/{id}"), "rel": "self"}, {"href": "/tasks", "rel": "list"}])
    );
}

#[tokio::test]
async fn a_reorder_alone_sends_no_collection_event_and_lean_omits_details() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(
        upstream,
        &route("/tasks", "      format: collection\n      collection: { id: /id, payload: lean }\n"),
    ))
    .await;
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();
    api.move_task(0, 2);
    assert!(c.next_within(Duration::from_millis(500)).await.is_none(), "a reorder changes no item");
    api.toggle("1");
    let ev = c.next_within(SOON).await.unwrap();
    assert_eq!(ev.event, "r.updated", "the type defaults to the route name");
    assert_eq!(ev.json()["resourceId"], "1");
    assert!(ev.json().get("resourceDetails").is_none());
}

#[tokio::test]
async fn an_invalid_collection_is_reported_and_resynced_not_a_crash() {
    let (api, upstream) = start_api().await;
    let mut gw = Gateway::start(&config(
        upstream,
        &route("/tasks", "      format: collection\n      collection: { id: /title }\n"),
    ))
    .await;
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();
    api.add_task("Call the plumber"); // a second item with the same "id" (title)
    let status = c.next_within(SOON).await.unwrap();
    assert_eq!(status.event, "upstream-status");
    assert_eq!(status.json(), json!({"ok": false, "error": "invalid collection: duplicate item id Call the plumber"}));
    let snapshot = c.next_within(SOON).await.unwrap();
    assert_eq!((snapshot.event.as_str(), snapshot.json()), ("snapshot", api.tasks()));
    assert_eq!(gw.metric("herald_collection_invalid_total{route=\"r\"}").await, 1.0);
    api.retitle("4", "Something else");
    assert_eq!(c.next_within(SOON).await.unwrap().json(), json!({"ok": true}));
    let resync = c.next_within(SOON).await.unwrap();
    assert_eq!((resync.event.as_str(), resync.json()), ("snapshot", api.tasks()));
    api.toggle("4");
    assert_eq!(c.next_within(SOON).await.unwrap().event, "r.updated", "item events resume");
    assert!(gw.is_running());
}
