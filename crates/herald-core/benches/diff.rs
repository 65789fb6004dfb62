//! The hot functions of a change: normalize + hash a poll body, diff it in each format, encode
//! the SSE frame. Run: `cargo bench -p herald-core --bench diff`.

use std::hint::black_box;

// The allocator the herald binary uses, so the figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use herald_core::diff::{collection_events, json_patch, json_patch_with, merge_patch, Collection, Payload};
use herald_core::{encode_frame, EventId, Representation};
use serde_json::{json, Value};

/// A list of 5,000 task objects, about 1 MiB of JSON.
fn list() -> Value {
    Value::Array(
        (0..5000)
            .map(|i| {
                json!({
                    "id": format!("task-{i:05}"),
                    "title": format!("Task number {i} with a reasonably descriptive title"),
                    "done": i % 3 == 0,
                    "assignee": {"name": format!("user{}", i % 97), "team": "platform"},
                    "tags": ["backend", "q3"],
                    "updated_at": "2026-11-27T12:00:00Z",
                })
            })
            .collect(),
    )
}

/// The same list with 1% of the items changed (every 100th: one field edited).
fn changed(old: &Value) -> Value {
    let mut new = old.clone();
    for i in (0..5000).step_by(100) {
        new[i]["done"] = json!(!new[i]["done"].as_bool().unwrap());
        new[i]["updated_at"] = json!("2026-11-27T12:00:05Z");
    }
    new
}

fn benches(c: &mut Criterion) {
    let old = list();
    let new = changed(&old);
    let body = bytes::Bytes::from(serde_json::to_vec(&new).unwrap());
    eprintln!("document: {} bytes, 5000 items, 50 changed", body.len());
    let mut front = old.clone();
    front.as_array_mut().unwrap().insert(0, json!({"id": "new"}));
    let collection =
        Collection { items: "".into(), id: "/id".into(), payload: Payload::Rich, type_name: "task".into() };

    // In herald every diff after the first reuses the fingerprints the previous diff computed
    // for what is now the old document; prepare them as that previous diff would have.
    let mut before = old.clone();
    before[1]["title"] = json!("an earlier edit");
    let (_, old_prints_by_id) = json_patch_with(&before, &old, Some("/id"), &Default::default());
    let (_, old_prints) = json_patch_with(&before, &old, None, &Default::default());
    c.bench_function("json_patch (as in herald)/5000 items, 1% changed, by id", |b| {
        b.iter(|| json_patch_with(black_box(&old), black_box(&new), Some("/id"), &old_prints_by_id))
    });
    c.bench_function("json_patch (as in herald)/5000 items, 1% changed, by content", |b| {
        b.iter(|| json_patch_with(black_box(&old), black_box(&new), None, &old_prints))
    });
    c.bench_function("json_patch (as in herald)/5000 items, insert at front", |b| {
        b.iter(|| json_patch_with(black_box(&old), black_box(&front), None, &old_prints))
    });
    c.bench_function("json_patch/5000 items, 1% changed, by id", |b| {
        b.iter(|| json_patch(black_box(&old), black_box(&new), Some("/id")))
    });
    c.bench_function("json_patch/5000 items, 1% changed, by content", |b| {
        b.iter(|| json_patch(black_box(&old), black_box(&new), None))
    });
    c.bench_function("merge_patch/5000 items, 1% changed", |b| {
        b.iter(|| merge_patch(black_box(&old), black_box(&new)))
    });
    c.bench_function("collection/5000 items, 1% changed", |b| {
        b.iter(|| collection_events(&collection, black_box(&old), black_box(&new), "/tasks").unwrap())
    });
    c.bench_function("json_patch/5000 items, insert at front", |b| {
        b.iter(|| json_patch(black_box(&old), black_box(&front), None))
    });
    c.bench_function("representation/parse + normalize + hash 1 MiB", |b| {
        b.iter(|| Representation::from_body(black_box(body.clone()), &["/0/updated_at".to_string()]))
    });
    let repr = Representation::from_body(body.clone(), &[]);
    c.bench_function("encode_frame/1 MiB snapshot", |b| {
        b.iter(|| encode_frame("snapshot", Some(EventId { epoch: 1, seq: 2 }), black_box(&repr.data)))
    });
}

criterion_group! {
    name = diff;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(diff);
