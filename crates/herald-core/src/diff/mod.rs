//! Turning two representations into events: RFC 6902 JSON Patch, RFC 7396 JSON Merge Patch, or
//! one event per changed item of a collection. Every format converges: applying the events to
//! the previous state yields the new one (as a set of items, for collections).

mod collection;
mod json_patch;
mod merge_patch;

use std::hash::{Hash, Hasher};

use serde_json::Value;

use crate::Representation;

pub use collection::{
    collection_events, id_string as item_id, items as collection_items, Collection, CollectionError, ItemEvent, Payload,
};
pub use json_patch::{diff as json_patch, diff_with as json_patch_with, Prints};
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
    /// Also returns what `new` should keep for the next change (see [`Prints`]).
    pub fn encode(&self, old: &Representation, new: &Representation, list: &str) -> (Encoded, Prints) {
        let to_vec = |v: &Value| serde_json::to_vec(v).expect("JSON values serialize");
        let (old_v, new_v) = (&*old.value, &*new.value);
        let encoded = match self {
            Encoding::Snapshot => Encoded::Events(vec![("change".into(), new.data.to_vec())]),
            Encoding::JsonPatch { array_id } => {
                let (ops, prints) = json_patch_with(old_v, new_v, array_id.as_deref(), &old.prints);
                return (Encoded::Events(vec![("patch".into(), to_vec(&Value::Array(ops)))]), prints);
            }
            Encoding::MergePatch => match merge_patch(old_v, new_v) {
                Some(patch) => Encoded::Events(vec![("merge-patch".into(), to_vec(&patch))]),
                None => Encoded::Snapshot,
            },
            Encoding::Collection(c) => match collection_events(c, old_v, new_v, list) {
                Ok(events) => Encoded::Events(events.into_iter().map(|e| (e.name, e.data)).collect()),
                Err(e) => match collection::items(c, new_v) {
                    Err(_) => Encoded::Invalid(e),
                    // Only the previous state was invalid: nothing to diff against.
                    Ok(_) => Encoded::Snapshot,
                },
            },
        };
        (encoded, Prints::default())
    }
}

impl Encoding {
    /// Encodes a change known to touch only these items (`before`: the old versions of those
    /// that changed or went, `after`: the new versions and the new items, each an array in
    /// collection order) when the format allows: collection events name items, so the events of
    /// those items are the events of the whole change. `None` for other formats (a JSON Patch
    /// names positions in the whole document).
    pub fn encode_items(&self, before: &Value, after: &Value, list: &str) -> Option<Encoded> {
        let Encoding::Collection(c) = self else { return None };
        let items = Collection { items: String::new(), ..c.clone() };
        let events = collection_events(&items, before, after, list).ok()?;
        Some(Encoded::Events(events.into_iter().map(|e| (e.name, e.data)).collect()))
    }
}

/// A 128-bit content fingerprint of a JSON value, for aligning arrays by content: comparing two
/// fingerprints is one instruction, comparing two values walks both. Two different elements
/// share a fingerprint with probability about 2^-128; the diff would then miss that change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Fingerprint(u64, u64);

impl Fingerprint {
    pub(crate) fn of(v: &Value) -> Fingerprint {
        let mut h = Fp128 { a: 0x243f_6a88_85a3_08d3, b: 0x1319_8a2e_0370_7344 };
        hash_value(v, &mut h);
        Fingerprint(h.a, h.b)
    }
}

/// Two lanes of an Fx-style multiply-rotate hash: fast, not keyed, not for adversaries (a
/// crafted collision could only hide a change of the upstream's own data from its subscribers).
struct Fp128 {
    a: u64,
    b: u64,
}

impl Fp128 {
    #[inline]
    fn word(&mut self, w: u64) {
        self.a = (self.a.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
        self.b = (self.b.rotate_left(23) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for Fp128 {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i) | 0x100);
    }

    fn write_u64(&mut self, i: u64) {
        self.word(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.word(i as u64);
    }

    fn finish(&self) -> u64 {
        self.a
    }
}

fn hash_value<H: Hasher>(v: &Value, state: &mut H) {
    match v {
        Value::Null => state.write_u8(0),
        Value::Bool(b) => state.write_u8(1 + u8::from(*b)),
        Value::Number(n) => {
            state.write_u8(3);
            n.hash(state);
        }
        Value::String(s) => {
            state.write_u8(4);
            state.write_usize(s.len());
            state.write(s.as_bytes());
        }
        Value::Array(items) => {
            state.write_u8(5);
            state.write_usize(items.len());
            items.iter().for_each(|i| hash_value(i, state));
        }
        Value::Object(map) => {
            // serde_json keeps keys sorted (no `preserve_order`): equal objects hash alike.
            state.write_u8(6);
            state.write_usize(map.len());
            for (k, v) in map {
                state.write_usize(k.len());
                state.write(k.as_bytes());
                hash_value(v, state);
            }
        }
    }
}

/// A parsed JSON Pointer, walked without re-parsing it for every array element.
pub(crate) struct Pointer(Vec<String>);

impl Pointer {
    pub(crate) fn parse(ptr: &str) -> Pointer {
        Pointer(ptr.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
    }

    pub(crate) fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for token in &self.0 {
            v = match v {
                Value::Object(m) => m.get(token)?,
                Value::Array(a) => a.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
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
