//! What a change becomes for webhook subscribers (spec section 7): collection routes send their
//! item events; other routes send `<type>.changed` with the path, the new representation (rich),
//! the JSON Patch (json-patch routes) and links. Bodies are the Standard Webhooks payload
//! `{"type","timestamp","data"}`.

use herald_config::{Format, Payload, Route};
use herald_core::diff::{collection_events, json_patch, Collection, CollectionError};
use serde::Serialize;
use serde_json::Value;

/// One event: its type and its data (one line of JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub event_type: String,
    pub data: String,
}

/// The type prefix of a route's events: `events.type`, else the route name.
pub fn type_name(route: &Route) -> &str {
    route.events.type_prefix.as_deref().unwrap_or(&route.name)
}

/// The payload kind a subscription gets when it did not choose one.
pub fn default_payload(route: &Route) -> Payload {
    route.events.collection.as_ref().map_or(Payload::Rich, |c| c.payload)
}

#[derive(Serialize)]
struct Changed<'a> {
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    representation: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Vec<Value>>,
    _links: [Link<'a>; 1],
}

#[derive(Serialize)]
struct Link<'a> {
    href: &'a str,
    rel: &'static str,
}

/// The events for the change from `old` to `new` of the resource at `path` (+ query).
pub fn events(
    route: &Route,
    old: &Value,
    new: &Value,
    path: &str,
    payload: Payload,
) -> Result<Vec<WebhookEvent>, CollectionError> {
    let list = path.split('?').next().unwrap_or(path);
    if let (Format::Collection, Some(c)) = (route.events.format, &route.events.collection) {
        let c = Collection {
            items: c.items.clone(),
            id: c.id.clone(),
            payload: match payload {
                Payload::Rich => herald_core::diff::Payload::Rich,
                Payload::Lean => herald_core::diff::Payload::Lean,
            },
            type_name: type_name(route).to_string(),
        };
        let events = collection_events(&c, old, new, list)?;
        return Ok(events
            .into_iter()
            .map(|e| WebhookEvent {
                event_type: e.name,
                data: String::from_utf8(e.data).expect("item data is UTF-8 JSON"),
            })
            .collect());
    }
    let patch =
        (route.events.format == Format::JsonPatch).then(|| json_patch(old, new, route.events.array_id.as_deref()));
    let changed = Changed {
        path,
        representation: (payload == Payload::Rich).then_some(new),
        patch,
        _links: [Link { href: path, rel: "self" }],
    };
    Ok(vec![WebhookEvent {
        event_type: format!("{}.changed", type_name(route)),
        data: serde_json::to_string(&changed).expect("JSON values serialize"),
    }])
}

/// The request body: `{"type","timestamp","data"}`, `timestamp` in RFC 3339 (UTC, milliseconds).
pub fn body(event_type: &str, at_ms: u64, data: &str) -> String {
    format!(
        r#"{{"type":{},"timestamp":"{}","data":{data}}}"#,
        serde_json::to_string(event_type).expect("strings serialize"),
        rfc3339(at_ms)
    )
}

/// Unix milliseconds as RFC 3339, UTC, with milliseconds (payloads and the API).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// Whether `event_type` passes a subscription's filter (empty: everything; `task.*`: a prefix).
pub fn matches(filter: &[String], event_type: &str) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => f == event_type,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(yaml_events: &str) -> Route {
        let text = format!(
            "upstream: {{url: 'http://127.0.0.1:1'}}\nroutes:\n  - name: tasks\n    path: /tasks\n{yaml_events}"
        );
        herald_config::load("t.yaml", &text, &|_| None).unwrap().routes.remove(0)
    }

    #[test]
    fn collection_routes_send_item_events() {
        let r = route("    events: { format: collection, type: task, collection: { id: /id } }\n");
        let old = json!([{"id": "1", "t": "a"}]);
        let new = json!([{"id": "1", "t": "b"}, {"id": "2", "t": "c"}]);
        let ev = events(&r, &old, &new, "/tasks", Payload::Lean).unwrap();
        let types: Vec<_> = ev.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["task.updated", "task.created"]);
        let data: Value = serde_json::from_str(&ev[1].data).unwrap();
        assert_eq!(data["resourceId"], "2");
        assert!(data.get("resourceDetails").is_none(), "lean");
    }

    #[test]
    fn other_routes_send_changed_with_a_patch_where_the_route_patches() {
        let r = route("    events: { format: json-patch }\n");
        let ev = events(&r, &json!({"a": 1}), &json!({"a": 2}), "/tasks?x=1", Payload::Rich).unwrap();
        assert_eq!(ev[0].event_type, "tasks.changed");
        assert_eq!(
            ev[0].data,
            r#"{"path":"/tasks?x=1","representation":{"a":2},"patch":[{"op":"replace","path":"/a","value":2}],"_links":[{"href":"/tasks?x=1","rel":"self"}]}"#
        );
        let r = route("");
        let lean = events(&r, &json!(1), &json!(2), "/tasks", Payload::Lean).unwrap();
        assert_eq!(lean[0].data, r#"{"path":"/tasks","_links":[{"href":"/tasks","rel":"self"}]}"#);
    }

    #[test]
    fn bodies_and_filters() {
        assert_eq!(
            body("task.created", 1_649_367_553_123, "{}"),
            r#"{"type":"task.created","timestamp":"2022-04-07T21:39:13.123Z","data":{}}"#
        );
        let f = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(matches(&[], "anything"));
        assert!(matches(&f(&["task.*"]), "task.created"));
        assert!(!matches(&f(&["task.*"]), "board.changed"));
        assert!(matches(&f(&["board.changed", "*"]), "x.y"));
        assert!(!matches(&f(&["task.created"]), "task.deleted"));
    }
}
