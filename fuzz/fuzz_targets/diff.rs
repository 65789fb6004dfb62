//! Any two JSON documents: each diff engine's events turn the first into the second, checked
//! with the reference `json-patch` crate (RFC 6902 and RFC 7396) and, for collections, by
//! applying the item events to the first document's items.
#![no_main]

use std::collections::HashMap;

use herald_core::diff::{collection_events, json_patch_with, merge_patch, Collection, Payload, Prints};
use serde_json::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Two documents separated by a NUL byte.
    let Some(at) = data.iter().position(|&b| b == 0) else { return };
    let (Ok(old), Ok(new)) =
        (serde_json::from_slice::<Value>(&data[..at]), serde_json::from_slice::<Value>(&data[at + 1..]))
    else {
        return;
    };

    for array_id in [None, Some("/id")] {
        let (ops, _) = json_patch_with(&old, &new, array_id, &Prints::default());
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.clone())).expect("RFC 6902 operations");
        let mut doc = old.clone();
        json_patch::patch(&mut doc, &patch).unwrap_or_else(|e| panic!("{e}: {ops:?}"));
        assert_eq!(doc, new, "json-patch {array_id:?}: {ops:?}");
    }

    if let Some(patch) = merge_patch(&old, &new) {
        let mut doc = old.clone();
        json_patch::merge(&mut doc, &patch);
        assert_eq!(doc, new, "merge-patch: {patch}");
    }

    let c = Collection { items: String::new(), id: "/id".into(), payload: Payload::Rich, type_name: "t".into() };
    if let Ok(events) = collection_events(&c, &old, &new, "/t") {
        let items = |doc: &Value| -> HashMap<String, Value> {
            herald_core::diff::collection_items(&c, doc)
                .map(|items| items.into_iter().map(|(id, v)| (id.into_owned(), v.clone())).collect())
                .unwrap_or_default()
        };
        let mut state = items(&old);
        for e in &events {
            let data = e.json();
            let id = data["resourceId"].as_str().expect("a resourceId").to_string();
            if e.name.ends_with(".deleted") {
                assert!(state.remove(&id).is_some(), "deleted an unknown item {id}");
            } else {
                state.insert(id, data["resourceDetails"].clone());
            }
        }
        assert_eq!(state, items(&new));
    }
});
