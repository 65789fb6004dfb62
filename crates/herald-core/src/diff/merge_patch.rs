//! RFC 7396 merge patches. A merge patch reads `null` as "remove", so a new state that holds a
//! `null` where the patch would have to write it cannot be expressed; `diff` says so with `None`
//! and the caller sends a snapshot instead.

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`, or `None` when no merge patch can.
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov @ Value::Object(_)) if nv.is_object() => {
                        patch.insert(k.clone(), diff(ov, nv)?);
                    }
                    _ => {
                        patch.insert(k.clone(), copied(nv)?);
                    }
                }
            }
            Some(Value::Object(patch))
        }
        _ => copied(new),
    }
}

/// `value` as a patch member that sets it whole: impossible when it is `null` or when an object
/// in it holds a `null` member (applying merges objects, which drops those members).
fn copied(value: &Value) -> Option<Value> {
    fn has_null_member(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(|v| v.is_null() || has_null_member(v)),
            _ => false,
        }
    }
    (!value.is_null() && !has_null_member(value)).then(|| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn apply(old: &Value, patch: &Value) -> Value {
        let mut doc = old.clone();
        ::json_patch::merge(&mut doc, patch);
        doc
    }

    #[test]
    fn the_rfc_example() {
        let old = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
        let new = json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"});
        let patch = diff(&old, &new).unwrap();
        assert_eq!(
            patch,
            json!({"title": "Hello!", "author": {"familyName": null}, "tags": ["example"], "phoneNumber": "+01-123-456-7890"})
        );
        assert_eq!(apply(&old, &patch), new);
    }

    #[test]
    fn nulls_that_cannot_be_written_are_refused() {
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": null})), None);
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": {"b": null}})), None);
        assert_eq!(diff(&json!([1]), &json!(null)), None);
        // Inside arrays a null is copied as is.
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": [null]})), Some(json!({"a": [null]})));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf =
            prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), (-3i64..3).prop_map(Value::from)];
        leaf.prop_recursive(4, 30, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_patch_always_converges(old in arb_json(), new in arb_json()) {
            match diff(&old, &new) {
                Some(patch) => prop_assert_eq!(apply(&old, &patch), new),
                // Only when a null had to be written.
                None => prop_assert!(new.is_null() || new.to_string().contains("null")),
            }
        }
    }
}
