//! The JSON Patch diff of a 5,000-item list in a loop, for profilers:
//! `cargo bench -p herald-core --bench profile --no-run`, then
//! `perf record -g target/release/deps/profile-* id` (or `content`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{json, Value};
fn main() {
    let old = Value::Array((0..5000).map(|i| json!({"id": format!("task-{i:05}"),"title": format!("Task number {i} with a reasonably descriptive title"),"done": i % 3 == 0,"assignee": {"name": format!("user{}", i % 97), "team": "platform"},"tags": ["backend", "q3"],"updated_at": "2026-11-27T12:00:00Z"})).collect());
    let mut new = old.clone();
    for i in (0..5000).step_by(100) {
        new[i]["done"] = json!(!new[i]["done"].as_bool().unwrap());
    }
    let mode = std::env::args().nth(1).unwrap_or_default();
    let id = if mode == "id" { Some("/id") } else { None };
    // As in herald: the previous diff left the fingerprints of `old`.
    let (_, prints) = herald_core::diff::json_patch_with(&new, &old, id, &Default::default());
    let t = std::time::Instant::now();
    for _ in 0..50 {
        let ops = herald_core::diff::json_patch_with(&old, &new, id, &prints);
        std::hint::black_box(ops);
    }
    eprintln!("{:?} per diff", t.elapsed() / 50);
}
