//! RFC 6902 patches as small as the change. Objects are diffed key by key; arrays are aligned
//! with Myers' algorithm (the `similar` crate) on element identity (`array_id`) or content, so
//! inserting, removing or moving one element is one operation, not a cascade of index-shifted
//! replaces.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{json, Value};
use similar::{capture_diff_slices, Algorithm, DiffOp};

use super::{escape, Fingerprint, Pointer};

/// The operations that turn `old` into `new`. `array_id` is a JSON Pointer inside array elements
/// (e.g. `/id`) that identifies them; arrays whose elements do not all carry a unique one are
/// aligned by content instead.
pub fn diff(old: &Value, new: &Value, array_id: Option<&str>) -> Vec<Value> {
    diff_with(old, new, array_id, &Prints::default()).0
}

/// [`diff`], reusing the fingerprints of `old`'s arrays computed when `old` was the new side of
/// the previous diff, and returning those of `new` for the next one. Each change then
/// fingerprints only the new document.
pub fn diff_with(old: &Value, new: &Value, array_id: Option<&str>, old_prints: &Prints) -> (Vec<Value>, Prints) {
    let mut d =
        Differ { ops: Vec::new(), array_id: array_id.map(Pointer::parse), prev: old_prints, next: Prints::default() };
    d.value(&mut String::new(), old, new);
    (d.ops.into_iter().map(Op::into_json).collect(), d.next)
}

/// Fingerprints of the arrays of one document that a diff visited, by their JSON Pointer.
#[derive(Debug, Default)]
pub struct Prints(HashMap<String, ArrayPrints>);

#[derive(Debug, Clone)]
struct ArrayPrints {
    /// One content fingerprint per element.
    content: Vec<Fingerprint>,
    /// One fingerprint of the `array_id` value per element, when every element has one. (Ids
    /// that repeat still give a correct patch: aligned elements are diffed inside.)
    ids: Option<Vec<Fingerprint>>,
}

enum Op<'a> {
    Add {
        path: String,
        value: &'a Value,
    },
    /// `old` is the removed value, kept to recognise moves.
    Remove {
        path: String,
        old: &'a Value,
    },
    Replace {
        path: String,
        value: &'a Value,
    },
    Move {
        from: String,
        path: String,
    },
}

impl Op<'_> {
    fn into_json(self) -> Value {
        match self {
            Op::Add { path, value } => json!({"op": "add", "path": path, "value": value}),
            Op::Remove { path, .. } => json!({"op": "remove", "path": path}),
            Op::Replace { path, value } => json!({"op": "replace", "path": path, "value": value}),
            Op::Move { from, path } => json!({"op": "move", "from": from, "path": path}),
        }
    }
}

struct Differ<'a, 'p> {
    ops: Vec<Op<'a>>,
    array_id: Option<Pointer>,
    prev: &'p Prints,
    next: Prints,
}

impl<'a> Differ<'a, '_> {
    fn value(&mut self, path: &mut String, old: &'a Value, new: &'a Value) {
        match (old, new) {
            (Value::Object(o), Value::Object(n)) => {
                for (k, ov) in o {
                    if !n.contains_key(k) {
                        self.ops.push(Op::Remove { path: child(path, k), old: ov });
                    }
                }
                for (k, nv) in n {
                    match o.get(k) {
                        None => self.ops.push(Op::Add { path: child(path, k), value: nv }),
                        Some(ov) if ov == nv => {}
                        Some(ov) => {
                            let len = path.len();
                            path.push('/');
                            path.push_str(&escape(k));
                            self.value(path, ov, nv);
                            path.truncate(len);
                        }
                    }
                }
            }
            (Value::Array(o), Value::Array(n)) => self.array(path, o, n),
            _ if old == new => {}
            _ => self.ops.push(Op::Replace { path: path.clone(), value: new }),
        }
    }

    fn array(&mut self, path: &mut String, old: &'a [Value], new: &'a [Value]) {
        let prev = self.prev;
        let old_prints = match prev.0.get(path.as_str()).filter(|p| p.content.len() == old.len()) {
            Some(p) => Cow::Borrowed(p),
            None => Cow::Owned(self.prints(old)),
        };
        let new_prints = self.prints(new);
        let by_id = matches!((&old_prints.ids, &new_prints.ids), (Some(_), Some(_)));
        let script = match (&old_prints.ids, &new_prints.ids) {
            (Some(o), Some(n)) => capture_diff_slices(Algorithm::Myers, o, n),
            _ => capture_diff_slices(Algorithm::Myers, &old_prints.content, &new_prints.content),
        };
        let start = self.ops.len();
        // Walking the script in order, the array being patched holds new[..new_index] followed
        // by old[old_index..]: `new_index` is where the next operation applies.
        for op in script {
            match op {
                DiffOp::Equal { old_index, new_index, len } => {
                    // Same identity may still mean changed content.
                    if by_id {
                        for k in 0..len {
                            if old_prints.content[old_index + k] != new_prints.content[new_index + k] {
                                self.element(path, new_index + k, &old[old_index + k], &new[new_index + k]);
                            }
                        }
                    }
                }
                DiffOp::Delete { old_index, old_len, new_index } => {
                    for k in 0..old_len {
                        self.ops.push(Op::Remove { path: index(path, new_index), old: &old[old_index + k] });
                    }
                }
                DiffOp::Insert { new_index, new_len, .. } => {
                    for (k, value) in new[new_index..new_index + new_len].iter().enumerate() {
                        self.ops.push(Op::Add { path: index(path, new_index + k), value });
                    }
                }
                DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                    let paired = old_len.min(new_len);
                    for k in 0..paired {
                        let (o, n) = (&old[old_index + k], &new[new_index + k]);
                        if by_id {
                            // Another item: replace it whole.
                            self.ops.push(Op::Replace { path: index(path, new_index + k), value: n });
                        } else {
                            self.element(path, new_index + k, o, n);
                        }
                    }
                    for k in paired..old_len {
                        self.ops.push(Op::Remove { path: index(path, new_index + paired), old: &old[old_index + k] });
                    }
                    for k in paired..new_len {
                        self.ops.push(Op::Add { path: index(path, new_index + k), value: &new[new_index + k] });
                    }
                }
            }
        }
        merge_moves(&mut self.ops, start, path);
        self.next.0.insert(path.clone(), new_prints);
    }

    /// Fingerprints of the elements, and of their ids when `array_id` is set and every element
    /// has one. One pass: the id is read while the element is still in cache.
    fn prints(&self, items: &[Value]) -> ArrayPrints {
        let mut content = Vec::with_capacity(items.len());
        let mut ids = self.array_id.as_ref().map(|_| Vec::with_capacity(items.len()));
        for item in items {
            content.push(Fingerprint::of(item));
            if let (Some(ptr), Some(list)) = (&self.array_id, &mut ids) {
                match ptr.get(item) {
                    Some(id) => list.push(Fingerprint::of(id)),
                    None => ids = None,
                }
            }
        }
        ArrayPrints { content, ids }
    }

    fn element(&mut self, path: &mut String, i: usize, old: &'a Value, new: &'a Value) {
        if old == new {
            return;
        }
        let len = path.len();
        path.push('/');
        path.push_str(&i.to_string());
        self.value(path, old, new);
        path.truncate(len);
    }
}

/// Adjacent `remove` and `add` of the same value in this array become one `move`.
fn merge_moves(ops: &mut Vec<Op<'_>>, start: usize, array: &str) {
    let at = |p: &str| p.strip_prefix(array).and_then(|r| r.strip_prefix('/')).and_then(|i| i.parse::<usize>().ok());
    let mut i = start;
    while i + 1 < ops.len() {
        let merged = match (&ops[i], &ops[i + 1]) {
            (Op::Remove { path: rp, old }, Op::Add { path: ap, value }) if old == value => match (at(rp), at(ap)) {
                (Some(r), Some(a)) => Some((r, a)),
                _ => None,
            },
            (Op::Add { path: ap, value }, Op::Remove { path: rp, old }) if old == value => match (at(ap), at(rp)) {
                // The removal index counts the added element; undo that.
                (Some(a), Some(r)) if r > a => Some((r - 1, a)),
                (Some(a), Some(r)) if r < a => Some((r, a - 1)),
                _ => None,
            },
            _ => None,
        };
        match merged {
            Some((from, to)) => {
                ops[i] = Op::Move { from: format!("{array}/{from}"), path: format!("{array}/{to}") };
                ops.remove(i + 1);
            }
            None => i += 1,
        }
    }
}

fn child(path: &str, key: &str) -> String {
    format!("{path}/{}", escape(key))
}

fn index(path: &str, i: usize) -> String {
    format!("{path}/{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply(old: &Value, ops: &[Value]) -> Value {
        let patch: ::json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut doc = old.clone();
        ::json_patch::patch(&mut doc, &patch).unwrap_or_else(|e| panic!("{e}: {ops:?}"));
        doc
    }

    fn list(n: usize) -> Value {
        Value::Array((0..n).map(|i| json!({"id": i, "title": format!("task {i}"), "done": false})).collect())
    }

    #[test]
    fn objects_key_by_key() {
        let old = json!({"a": 1, "b": {"c": [1, 2]}, "gone": true, "a/b~": 0});
        let new = json!({"a": 2, "b": {"c": [1, 2], "d": null}, "a/b~": 1});
        let ops = diff(&old, &new, None);
        assert_eq!(
            ops,
            [
                json!({"op": "remove", "path": "/gone"}),
                json!({"op": "replace", "path": "/a", "value": 2}),
                json!({"op": "replace", "path": "/a~1b~0", "value": 1}),
                json!({"op": "add", "path": "/b/d", "value": null}),
            ]
        );
        assert_eq!(apply(&old, &ops), new);
    }

    #[test]
    fn one_insert_at_the_front_of_5000_is_one_add() {
        let old = list(5000);
        let mut new = old.clone();
        new.as_array_mut().unwrap().insert(0, json!({"id": -1, "title": "first"}));
        for array_id in [None, Some("/id")] {
            let ops = diff(&old, &new, array_id);
            assert_eq!(ops, [json!({"op": "add", "path": "/0", "value": {"id": -1, "title": "first"}})]);
        }
    }

    #[test]
    fn one_delete_is_one_remove_and_one_edit_is_one_replace() {
        let old = list(5000);
        let mut new = old.clone();
        new.as_array_mut().unwrap().remove(2500);
        assert_eq!(diff(&old, &new, None), [json!({"op": "remove", "path": "/2500"})]);
        let mut edited = old.clone();
        edited[1234]["done"] = json!(true);
        for array_id in [None, Some("/id")] {
            assert_eq!(diff(&old, &edited, array_id), [json!({"op": "replace", "path": "/1234/done", "value": true})]);
        }
    }

    #[test]
    fn one_move_is_one_move_either_way() {
        let old = list(5000);
        for (from, to) in [(4000, 10), (10, 4000), (0, 4999), (4999, 0)] {
            let mut new = old.clone();
            let item = new.as_array_mut().unwrap().remove(from);
            new.as_array_mut().unwrap().insert(to, item);
            for array_id in [None, Some("/id")] {
                let ops = diff(&old, &new, array_id);
                assert_eq!(ops.len(), 1, "{from}→{to}: {ops:?}");
                assert_eq!(ops[0]["op"], "move");
                assert_eq!(apply(&old, &ops), new);
            }
        }
    }

    #[test]
    fn repeated_or_missing_ids_still_converge() {
        let old = json!([{"id": 1, "v": "a"}, {"id": 1, "v": "b"}, {"v": "no id"}]);
        for new in [json!([{"id": 1, "v": "b"}]), json!([{"id": 1, "v": "b"}, {"id": 2}])] {
            let ops = diff(&old, &new, Some("/id"));
            assert_eq!(apply(&old, &ops), new);
        }
    }

    #[test]
    fn root_of_another_type_is_replaced() {
        let ops = diff(&json!([1]), &json!("text"), None);
        assert_eq!(ops, [json!({"op": "replace", "path": "", "value": "text"})]);
        assert_eq!(apply(&json!([1]), &ops), json!("text"));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            "[a-c~/]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-d~/]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A list of items with ids, edited: inserts, deletes, moves, field edits.
    fn arb_list_edit() -> impl Strategy<Value = (Value, Value)> {
        (1usize..30, prop::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..8))
            .prop_map(|(n, edits)| {
                let old = list(n);
                let mut items = old.as_array().unwrap().clone();
                let mut next = 1000;
                for (kind, a, b) in edits {
                    match kind {
                        0 => {
                            next += 1;
                            items.insert(a.index(items.len() + 1), json!({"id": next, "title": "new"}));
                        }
                        1 if !items.is_empty() => {
                            items.remove(a.index(items.len()));
                        }
                        2 if !items.is_empty() => {
                            let item = items.remove(a.index(items.len()));
                            items.insert(b.index(items.len() + 1), item);
                        }
                        _ if !items.is_empty() => {
                            let i = a.index(items.len());
                            items[i]["title"] = json!(format!("edited {}", b.index(100)));
                        }
                        _ => {}
                    }
                }
                (old, Value::Array(items))
            })
    }

    /// A subscriber applying every patch in order holds each document in turn, also when each
    /// diff reuses the fingerprints the previous one computed.
    fn converges_in_sequence(docs: &[Value], array_id: Option<&str>) -> Result<(), TestCaseError> {
        for array_id in [None, array_id] {
            let mut state = docs[0].clone();
            let mut prints = Prints::default();
            for pair in docs.windows(2) {
                let (ops, next) = diff_with(&pair[0], &pair[1], array_id, &prints);
                prints = next;
                state = apply(&state, &ops);
                prop_assert_eq!(&state, &pair[1]);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn patches_converge_on_random_documents(old in arb_json(), new in arb_json()) {
            let ops = diff(&old, &new, None);
            prop_assert_eq!(apply(&old, &ops), new.clone());
            let with_ids = diff(&old, &new, Some("/a"));
            prop_assert_eq!(apply(&old, &with_ids), new);
        }

        #[test]
        fn patches_converge_on_edited_lists((old, new) in arb_list_edit()) {
            for array_id in [None, Some("/id")] {
                let ops = diff(&old, &new, array_id);
                prop_assert_eq!(apply(&old, &ops), new.clone());
            }
        }

        #[test]
        fn patches_converge_over_edit_sequences(docs in prop::collection::vec(arb_json(), 1..6)) {
            converges_in_sequence(&docs, Some("/a"))?;
        }

        #[test]
        fn patches_converge_over_list_edit_sequences(edits in prop::collection::vec(arb_list_edit(), 1..5)) {
            let docs: Vec<Value> = std::iter::once(edits[0].0.clone()).chain(edits.into_iter().map(|(_, new)| new)).collect();
            converges_in_sequence(&docs, Some("/id"))?;
        }
    }
}
