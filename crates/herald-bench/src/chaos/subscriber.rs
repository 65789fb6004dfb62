//! One SSE subscriber of the fault harness: it keeps a live copy of its resource (a snapshot,
//! then every event applied in order), reconnects through the balancer with `Last-Event-ID`
//! whenever its stream ends or goes silent, and records what it received so that the checker
//! can tell a skipped or repeated event, a divergent history, and a wrong copy apart.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_testkit::{SseClient, SseEvent};
use serde_json::Value;

/// The two resources subscribers follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Resource {
    /// `/tasks`, a collection: `task.created/updated/deleted` events.
    Tasks,
    /// `/board`, JSON Patch events.
    Board,
}

impl Resource {
    pub(super) fn path(self) -> &'static str {
        match self {
            Resource::Tasks => "/tasks",
            Resource::Board => "/board",
        }
    }
}

/// The upstream's representation in the form a copy is compared in: the task list keyed by id
/// (item events do not carry positions), the board as it is.
pub(super) fn comparable(resource: Resource, body: &Value) -> Value {
    match resource {
        Resource::Tasks => Value::Object(
            body.as_array()
                .into_iter()
                .flatten()
                .map(|t| (t["id"].as_str().unwrap_or_default().to_string(), t.clone()))
                .collect(),
        ),
        Resource::Board => body.clone(),
    }
}

/// The change number a copy has reached: task 1's title is `v<n>` (0 before the first change).
pub(super) fn version(resource: Resource, copy: &Value) -> u64 {
    let title = match resource {
        Resource::Tasks => copy["1"]["title"].as_str(),
        Resource::Board => ["open", "done"]
            .iter()
            .flat_map(|col| copy[col].as_array().into_iter().flatten())
            .find(|t| t["id"] == "1")
            .and_then(|t| t["title"].as_str()),
    };
    title.and_then(|t| t.strip_prefix('v')).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// One event as received.
pub(super) struct Received {
    /// `(epoch, seq)` of its id.
    pub(super) id: (String, u64),
    /// A hash of its name and data: the same id must always carry the same event.
    pub(super) digest: u64,
    pub(super) snapshot: bool,
    /// The copy's change number after applying it.
    pub(super) version: u64,
    /// Whether it raised the change number (the event that brought a change to this copy).
    pub(super) raised: bool,
    pub(super) at: Instant,
}

#[derive(Default)]
pub(super) struct Record {
    pub(super) copy: Option<Value>,
    pub(super) last_id: Option<String>,
    pub(super) events: Vec<Received>,
    pub(super) snapshots: u64,
    /// Snapshots that opened a resumed stream (one sent with `Last-Event-ID`).
    pub(super) snapshots_on_resume: u64,
    pub(super) connections: u64,
    /// Streams given up on because nothing, not even a heartbeat, came for a while.
    pub(super) silent_drops: u64,
    /// Broken promises seen as they happened: a skipped or repeated id, a new epoch without a
    /// snapshot, an event that does not apply to the copy.
    pub(super) violations: Vec<String>,
}

/// Follows `resource` through `base` until `stop`; what it saw is in `record`.
pub(super) async fn run(
    client: reqwest::Client,
    base: String,
    resource: Resource,
    heartbeat: Duration,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
) {
    let url = format!("{base}{}/event-stream", resource.path());
    // A stream quiet for three heartbeats is dead (a paused replica keeps the socket open).
    let silence = heartbeat * 3;
    while !stop.load(Ordering::Relaxed) {
        let last_id = record.lock().unwrap().last_id.clone();
        let headers: Vec<(&str, &str)> = last_id.iter().map(|id| ("last-event-id", id.as_str())).collect();
        let opened = tokio::time::timeout(Duration::from_secs(5), SseClient::open(&client, &url, &headers)).await;
        let mut stream = match opened {
            Ok(Ok(s)) if s.status == 200 => s,
            _ => {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(200..800))).await;
                continue;
            }
        };
        record.lock().unwrap().connections += 1;
        let mut first = true;
        let mut heard = Instant::now();
        let mut comments = stream.comments;
        while !stop.load(Ordering::Relaxed) {
            match stream.next_within(Duration::from_millis(500)).await {
                Some(ev) => {
                    heard = Instant::now();
                    apply(resource, &ev, first && last_id.is_some(), &mut record.lock().unwrap());
                    first = false;
                }
                None if !stream.is_open() => break,
                None if stream.comments != comments => {
                    comments = stream.comments;
                    heard = Instant::now();
                }
                None if heard.elapsed() > silence => {
                    record.lock().unwrap().silent_drops += 1;
                    break;
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..500))).await;
    }
}

fn apply(resource: Resource, ev: &SseEvent, opens_resume: bool, rec: &mut Record) {
    let at = Instant::now();
    // `error` (the replica is shutting down) and anything else without an id is not an event
    // of the watch's history.
    let Some(id) = ev.id.clone() else { return };
    let Some((epoch, seq)) = id.rsplit_once('-').and_then(|(e, s)| Some((e.to_string(), s.parse::<u64>().ok()?)))
    else {
        rec.violations.push(format!("malformed event id {id:?}"));
        return;
    };
    let before = rec.copy.as_ref().map_or(0, |c| version(resource, c));
    let snapshot = ev.event == "snapshot";
    if snapshot {
        rec.snapshots += 1;
        rec.snapshots_on_resume += u64::from(opens_resume);
        match serde_json::from_str::<Value>(&ev.data) {
            Ok(v) => rec.copy = Some(comparable(resource, &v)),
            Err(e) => rec.violations.push(format!("snapshot {id} is not JSON: {e}")),
        }
    } else {
        if let Some(prev) = rec.events.last().map(|r| &r.id) {
            if prev.0 != epoch {
                rec.violations.push(format!(
                    "{} {id} opens epoch {epoch} without a snapshot (after {}-{})",
                    ev.event, prev.0, prev.1
                ));
            } else if seq != prev.1 + 1 {
                let what = if seq <= prev.1 { "repeated" } else { "skipped" };
                rec.violations.push(format!("{what}: {} {id} after {}-{}", ev.event, prev.0, prev.1));
            }
        }
        if let Err(e) = apply_event(resource, ev, rec.copy.as_mut()) {
            rec.violations.push(format!("{} {id} does not apply: {e}", ev.event));
        }
    }
    let after = rec.copy.as_ref().map_or(0, |c| version(resource, c));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&ev.event, &ev.data).hash(&mut h);
    rec.events.push(Received {
        id: (epoch, seq),
        digest: h.finish(),
        snapshot,
        version: after,
        raised: !snapshot && after > before,
        at,
    });
    rec.last_id = Some(id);
}

/// Applies one non-snapshot event to the copy.
fn apply_event(resource: Resource, ev: &SseEvent, copy: Option<&mut Value>) -> Result<(), String> {
    let data: Value = serde_json::from_str(&ev.data).map_err(|e| format!("not JSON: {e}"))?;
    if ev.event == "upstream-status" {
        return Ok(());
    }
    let copy = copy.ok_or("an event before any snapshot")?;
    match (resource, ev.event.as_str()) {
        (Resource::Board, "patch") => {
            let patch: json_patch::Patch = serde_json::from_value(data).map_err(|e| e.to_string())?;
            json_patch::patch(copy, &patch).map_err(|e| e.to_string())
        }
        (Resource::Tasks, name) => {
            let id = data["resourceId"].as_str().ok_or("no resourceId")?.to_string();
            let items = copy.as_object_mut().ok_or("the copy is not a collection")?;
            match name.rsplit('.').next() {
                Some("created") | Some("updated") => {
                    items.insert(id, data["resourceDetails"].clone());
                    Ok(())
                }
                Some("deleted") => items.remove(&id).map(drop).ok_or_else(|| format!("deleted {id}, never seen")),
                _ => Err(format!("unexpected event {name}")),
            }
        }
        (_, name) => Err(format!("unexpected event {name}")),
    }
}

/// Every subscriber's records for one resource, read at the end.
pub(super) type Records = BTreeMap<Resource, Vec<Arc<Mutex<Record>>>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, id: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), id: Some(id.into()), data: data.into() }
    }

    fn snapshot(id: &str) -> SseEvent {
        ev("snapshot", id, r#"[{"id":"1","title":"v1"},{"id":"2","title":"x"}]"#)
    }

    fn retitle(id: &str, v: u64) -> SseEvent {
        ev("task.updated", id, &format!(r#"{{"resourceId":"1","resourceDetails":{{"id":"1","title":"v{v}"}}}}"#))
    }

    #[test]
    fn consecutive_events_apply_and_raise_the_version() {
        let mut rec = Record::default();
        apply(Resource::Tasks, &snapshot("e-5"), false, &mut rec);
        apply(Resource::Tasks, &retitle("e-6", 2), false, &mut rec);
        apply(Resource::Tasks, &ev("task.deleted", "e-7", r#"{"resourceId":"2"}"#), false, &mut rec);
        assert!(rec.violations.is_empty(), "{:?}", rec.violations);
        assert_eq!(version(Resource::Tasks, rec.copy.as_ref().unwrap()), 2);
        assert_eq!(rec.events.iter().map(|e| e.raised).collect::<Vec<_>>(), [false, true, false]);
        assert_eq!(rec.last_id.as_deref(), Some("e-7"));
    }

    #[test]
    fn a_skipped_a_repeated_and_an_unannounced_epoch_are_violations() {
        let mut rec = Record::default();
        apply(Resource::Tasks, &snapshot("e-5"), false, &mut rec);
        apply(Resource::Tasks, &retitle("e-7", 2), false, &mut rec);
        apply(Resource::Tasks, &retitle("e-7", 2), false, &mut rec);
        apply(Resource::Tasks, &retitle("f-8", 3), false, &mut rec);
        assert_eq!(rec.violations.len(), 3, "{:?}", rec.violations);
        assert!(rec.violations[0].starts_with("skipped"));
        assert!(rec.violations[1].starts_with("repeated"));
        assert!(rec.violations[2].contains("without a snapshot"));
    }

    #[test]
    fn a_snapshot_opening_a_resumed_stream_is_counted_and_resets_the_order() {
        let mut rec = Record::default();
        apply(Resource::Tasks, &snapshot("e-5"), false, &mut rec);
        apply(Resource::Tasks, &snapshot("f-40"), true, &mut rec);
        apply(Resource::Tasks, &retitle("f-41", 9), false, &mut rec);
        assert!(rec.violations.is_empty(), "{:?}", rec.violations);
        assert_eq!((rec.snapshots, rec.snapshots_on_resume), (2, 1));
    }

    #[test]
    fn a_patch_that_does_not_fit_the_copy_is_a_violation() {
        let mut rec = Record::default();
        let board = r#"{"open":[{"id":"1","title":"v1"}],"done":[]}"#;
        apply(Resource::Board, &ev("snapshot", "e-1", board), false, &mut rec);
        apply(
            Resource::Board,
            &ev("patch", "e-2", r#"[{"op":"replace","path":"/open/0/title","value":"v2"}]"#),
            false,
            &mut rec,
        );
        assert_eq!(version(Resource::Board, rec.copy.as_ref().unwrap()), 2);
        apply(Resource::Board, &ev("patch", "e-3", r#"[{"op":"remove","path":"/done/0"}]"#), false, &mut rec);
        assert_eq!(rec.violations.len(), 1, "{:?}", rec.violations);
        assert!(rec.violations[0].contains("does not apply"));
    }
}
