//! Turning two representations into events: RFC 6902 JSON Patch, RFC 7396 JSON Merge Patch, or
//! one event per changed item of a collection. Every format converges: applying the events to
//! the previous state yields the new one (as a set of items, for collections).

mod collection;
mod json_patch;
mod merge_patch;

use std::hash::{Hash, Hasher};

use serde_json::Value;

pub use collection::{collection_events, Collection, CollectionError, ItemEvent, Payload};
pub use json_patch::diff as json_patch;
pub use merge_patch::diff as merge_patch;

/// How a watch turns a change into events (the route's `events.format`).
#[derive(Debug, Clone)]
pub enum Encoding {
    Snapshot,
    JsonPatch { array_id: Option<String> },
    MergePatch,
    Collection(Collection),
}

/// The events for one change.
#[derive(Debug)]
pub enum Encoded {
    /// `(event name, one-line JSON data)`, in order; empty when nothing a subscriber holds changed
    /// (a collection reordered).
    Events(Vec<(String, Vec<u8>)>),
    /// The format cannot express this change: send the new state as a `snapshot`.
    Snapshot,
    /// The representation is not a valid collection; send a `snapshot` and report why.
    Invalid(CollectionError),
}

impl Encoding {
    /// Encodes the change from `old` to `new`; `list` is the watched path, for collection links.
    pub fn encode(&self, old: &Value, new: &Value, new_data: &[u8], list: &str) -> Encoded {
        let to_vec = |v: &Value| serde_json::to_vec(v).expect("JSON values serialize");
        match self {
            Encoding::Snapshot => Encoded::Events(vec![("change".into(), new_data.to_vec())]),
            Encoding::JsonPatch { array_id } => {
                let ops = json_patch(old, new, array_id.as_deref());
                Encoded::Events(vec![("patch".into(), to_vec(&Value::Array(ops)))])
            }
            Encoding::MergePatch => match merge_patch(old, new) {
                Some(patch) => Encoded::Events(vec![("merge-patch".into(), to_vec(&patch))]),
                None => Encoded::Snapshot,
            },
            Encoding::Collection(c) => match collection_events(c, old, new, list) {
                Ok(events) => Encoded::Events(events.into_iter().map(|e| (e.name, to_vec(&e.data))).collect()),
                Err(e) => match collection::items(c, new) {
                    Err(_) => Encoded::Invalid(e),
                    // Only the previous state was invalid: nothing to diff against.
                    Ok(_) => Encoded::Snapshot,
                },
            },
        }
    }
}

/// Hashes and compares a JSON value by content without serializing it.
#[derive(Clone, Copy)]
pub(crate) struct ByContent<'a>(pub(crate) &'a Value);

impl PartialEq for ByContent<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ByContent<'_> {}

impl Hash for ByContent<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_value(self.0, state);
    }
}

fn hash_value<H: Hasher>(v: &Value, state: &mut H) {
    match v {
        Value::Null => state.write_u8(0),
        Value::Bool(b) => {
            state.write_u8(1);
            b.hash(state);
        }
        Value::Number(n) => {
            state.write_u8(2);
            n.hash(state);
        }
        Value::String(s) => {
            state.write_u8(3);
            s.hash(state);
        }
        Value::Array(items) => {
            state.write_u8(4);
            state.write_usize(items.len());
            items.iter().for_each(|i| hash_value(i, state));
        }
        Value::Object(map) => {
            // Equal objects may list their keys in another order: combine per-entry hashes
            // order-independently.
            state.write_u8(5);
            let mut acc = 0u64;
            for (k, v) in map {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                k.hash(&mut h);
                hash_value(v, &mut h);
                acc = acc.wrapping_add(h.finish());
            }
            state.write_u64(acc);
        }
    }
}

/// Escapes a key for use in a JSON Pointer (RFC 6901).
pub(crate) fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1").into()
    } else {
        key.into()
    }
}
