//! Collection events: the array at `items`, items identified by the value at `id`; one
//! `<type>.created` / `.updated` / `.deleted` event per changed item. A reorder alone changes no
//! item and emits nothing.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::Value;

use super::Pointer;

/// Where the items are and how to name their events.
#[derive(Debug, Clone)]
pub struct Collection {
    /// JSON Pointer to the array ("" = the whole body).
    pub items: String,
    /// JSON Pointer inside an item to its identity.
    pub id: String,
    pub payload: Payload,
    /// `resourceType`, and the prefix of event names.
    pub type_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// With `resourceDetails`: the item (as last seen, for `.deleted`).
    Rich,
    Lean,
}

/// One item event: its name (`task.created`) and its data, encoded (one line of JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemEvent {
    pub name: String,
    pub data: Vec<u8>,
}

impl ItemEvent {
    /// The data, parsed.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).expect("item data is JSON")
    }
}

/// Why a representation cannot be read as a collection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionError {
    #[error("collection.items {0:?} does not point at an array")]
    NotAnArray(String),
    #[error("{count} item(s) without an id at {pointer:?} (first at index {first})")]
    MissingId { pointer: String, count: usize, first: usize },
    #[error("duplicate item id {0}")]
    DuplicateId(String),
}

/// The events that turn the items of `old` into those of `new`; `list` is the path the links
/// point under (`/tasks` → `/tasks/{id}`).
pub fn collection_events(
    c: &Collection,
    old: &Value,
    new: &Value,
    list: &str,
) -> Result<Vec<ItemEvent>, CollectionError> {
    let old_items = items(c, old)?;
    let new_items = items(c, new)?;
    let old_by_id: HashMap<&str, &Value> = old_items.iter().map(|(id, v)| (id.as_ref(), *v)).collect();
    let new_ids: HashSet<&str> = new_items.iter().map(|(id, _)| id.as_ref()).collect();
    let mut events = Vec::new();
    for (id, item) in &new_items {
        match old_by_id.get(id.as_ref()) {
            None => events.push(event(c, "created", id, item, list)),
            Some(before) if before != item => events.push(event(c, "updated", id, item, list)),
            Some(_) => {}
        }
    }
    for (id, item) in &old_items {
        if !new_ids.contains(id.as_ref()) {
            events.push(event(c, "deleted", id, item, list));
        }
    }
    Ok(events)
}

/// The items with their ids as strings, checked for missing and duplicate ids.
pub fn items<'v>(c: &Collection, doc: &'v Value) -> Result<Vec<(Cow<'v, str>, &'v Value)>, CollectionError> {
    let array =
        doc.pointer(&c.items).and_then(Value::as_array).ok_or_else(|| CollectionError::NotAnArray(c.items.clone()))?;
    let id_ptr = Pointer::parse(&c.id);
    let mut out = Vec::with_capacity(array.len());
    let mut missing = (0, None);
    for (i, item) in array.iter().enumerate() {
        match id_ptr.get(item).and_then(id_string) {
            Some(id) => out.push((id, item)),
            None => {
                missing.0 += 1;
                missing.1.get_or_insert(i);
            }
        }
    }
    if let (count, Some(first)) = missing {
        return Err(CollectionError::MissingId { pointer: c.id.clone(), count, first });
    }
    let mut seen = HashSet::with_capacity(out.len());
    if let Some((dup, _)) = out.iter().find(|(id, _)| !seen.insert(id.as_ref())) {
        return Err(CollectionError::DuplicateId(dup.to_string()));
    }
    Ok(out)
}

/// Strings as they are, numbers in their JSON form; other values are not ids.
pub fn id_string(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// An item event's data, fields in the order the contract shows them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemData<'a> {
    event_type: &'a str,
    resource_type: &'a str,
    resource_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_details: Option<&'a Value>,
    #[serde(rename = "_links")]
    links: &'a [Link<'a>],
}

#[derive(Serialize)]
struct Link<'a> {
    href: &'a str,
    rel: &'a str,
}

/// What a path segment must encode: all but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn event(c: &Collection, what: &str, id: &str, item: &Value, list: &str) -> ItemEvent {
    let name = format!("{}.{what}", c.type_name);
    let list = list.trim_end_matches('/');
    // One path segment, whatever the id holds (`/`, `?`, `#`): a link never leaves the list.
    let this = format!("{list}/{}", utf8_percent_encode(id, SEGMENT));
    let links = [Link { href: &this, rel: "self" }, Link { href: list, rel: "list" }];
    // An id that is a dot segment (`.`, `..`, even encoded) or empty names no item's own path.
    let links = if matches!(id, "" | "." | "..") { &links[1..] } else { &links[..] };
    let data = ItemData {
        event_type: &name,
        resource_type: &c.type_name,
        resource_id: id,
        resource_details: (c.payload == Payload::Rich).then_some(item),
        links,
    };
    let data = serde_json::to_vec(&data).expect("item data serializes");
    ItemEvent { name, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_items_link_is_one_path_segment_whatever_its_id() {
        let c = Collection { items: String::new(), id: "/id".into(), payload: Payload::Lean, type_name: "t".into() };
        let ev = event(&c, "created", "//evil.example/x?y#z", &Value::Null, "/tasks");
        let data: Value = serde_json::from_slice(&ev.data).unwrap();
        assert_eq!(data["_links"][0]["href"], "/tasks/%2F%2Fevil.example%2Fx%3Fy%23z");
        assert_eq!(data["resourceId"], "//evil.example/x?y#z");
        for dots in ["..", ".", ""] {
            let ev = event(&c, "created", dots, &Value::Null, "/tasks");
            let data: Value = serde_json::from_slice(&ev.data).unwrap();
            assert_eq!(data["_links"], serde_json::json!([{"href": "/tasks", "rel": "list"}]), "{dots:?}");
        }
        let ev = event(&c, "created", "a-b.c_d~1", &Value::Null, "/tasks/");
        let data: Value = serde_json::from_slice(&ev.data).unwrap();
        assert_eq!(data["_links"][0]["href"], "/tasks/a-b.c_d~1");
    }
    use serde_json::json;

    fn tasks(payload: Payload) -> Collection {
        Collection { items: "".into(), id: "/id".into(), payload, type_name: "task".into() }
    }

    #[test]
    fn the_spec_example() {
        let old = json!([{"id": "x1", "title": "old"}, {"id": "gone", "title": "bye"}]);
        let new = json!([{"id": "abc123", "title": "new"}, {"id": "x1", "title": "edited"}]);
        let events = collection_events(&tasks(Payload::Rich), &old, &new, "/tasks").unwrap();
        assert_eq!(events[0].name, "task.created");
        assert_eq!(
            String::from_utf8(events[0].data.clone()).unwrap(),
            r#"{"eventType":"task.created","resourceType":"task","resourceId":"abc123","resourceDetails":{"id":"abc123","title":"new"},"_links":[{"href":"/tasks/abc123","rel":"self"},{"href":"/tasks","rel":"list"}]}"#
        );
        assert_eq!(events[1].name, "task.updated");
        assert_eq!(events[2].name, "task.deleted");
        assert_eq!(events[2].json()["resourceDetails"], json!({"id": "gone", "title": "bye"}), "as last seen");
        let lean = collection_events(&tasks(Payload::Lean), &old, &new, "/tasks").unwrap();
        assert!(lean.iter().all(|e| e.json().get("resourceDetails").is_none()));
    }

    #[test]
    fn reorders_emit_nothing_and_numbers_are_ids() {
        let old = json!({"data": {"items": [{"id": 1}, {"id": 2}]}});
        let new = json!({"data": {"items": [{"id": 2}, {"id": 1}]}});
        let c = Collection { items: "/data/items".into(), ..tasks(Payload::Rich) };
        assert_eq!(collection_events(&c, &old, &new, "/t").unwrap(), []);
    }

    #[test]
    fn bad_collections_are_reported() {
        let c = tasks(Payload::Rich);
        let ok = json!([{"id": 1}]);
        assert_eq!(collection_events(&c, &ok, &json!({"a": 1}), "/t"), Err(CollectionError::NotAnArray("".into())));
        assert_eq!(
            collection_events(&c, &ok, &json!([{"id": 1}, {"x": 1}, {}]), "/t"),
            Err(CollectionError::MissingId { pointer: "/id".into(), count: 2, first: 1 })
        );
        assert_eq!(
            collection_events(&c, &ok, &json!([{"id": 1}, {"id": "1"}]), "/t"),
            Err(CollectionError::DuplicateId("1".into()))
        );
    }

    /// What a subscriber holds: items by id, updated by the events.
    fn apply(state: &mut HashMap<String, Value>, events: &[ItemEvent]) {
        for e in events {
            let data = e.json();
            let id = data["resourceId"].as_str().unwrap().to_string();
            if e.name.ends_with(".deleted") {
                assert!(state.remove(&id).is_some(), "deleted an unknown item");
            } else {
                state.insert(id, data["resourceDetails"].clone());
            }
        }
    }

    proptest! {
        #[test]
        fn events_converge_as_a_set(seq in prop::collection::vec(prop::collection::btree_map(0u8..12, 0u8..3, 0..10), 1..8)) {
            let c = tasks(Payload::Rich);
            let docs: Vec<Value> = seq
                .iter()
                .map(|m| Value::Array(m.iter().rev().map(|(id, v)| json!({"id": id.to_string(), "v": v})).collect()))
                .collect();
            let mut state: HashMap<String, Value> =
                items(&c, &docs[0]).unwrap().into_iter().map(|(id, v)| (id.into_owned(), v.clone())).collect();
            for pair in docs.windows(2) {
                apply(&mut state, &collection_events(&c, &pair[0], &pair[1], "/t").unwrap());
                let want: HashMap<String, Value> =
                    items(&c, &pair[1]).unwrap().into_iter().map(|(id, v)| (id.into_owned(), v.clone())).collect();
                prop_assert_eq!(&state, &want);
            }
        }
    }
}
