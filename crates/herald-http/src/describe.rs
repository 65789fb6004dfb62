//! Machine-readable descriptions of what a configuration serves (spec section 14): an
//! AsyncAPI 3.0 document (each route's SSE channel and its events; the webhook deliveries as
//! `send` operations) and an OpenAPI 3.1 document (the stream endpoints, the webhook subscription
//! API, and the deliveries as top-level `webhooks`). `herald describe` prints them; the public
//! listener serves them at `/_herald/v1/asyncapi.json` and `/_herald/v1/openapi.json`.
//!
//! Built from the configuration alone: the same file gives the same documents, byte for byte.
//! They name routes, paths and event types, never the upstream's address or any credential.

use herald_config::{Access, Config, Format, Payload, Route};
use serde_json::{json, Map, Value};

/// The JSON Schema dialect both documents' schemas are written in (draft 2020-12 is OpenAPI
/// 3.1's; AsyncAPI 3.0 reads these schemas as its own, a superset of draft 07 for what is used).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The AsyncAPI 3.0 document of `config`.
pub fn asyncapi(config: &Config) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    for route in &config.routes {
        let events = stream_events(route);
        let messages: Map<String, Value> = events.iter().map(|e| (e.name.clone(), e.asyncapi_message())).collect();
        let refs: Vec<Value> =
            events.iter().map(|e| json!({"$ref": format!("#/channels/{}/messages/{}", route.name, e.name)})).collect();
        let mut channel = json!({
            "address": format!("{}/event-stream", route.path.trim_end_matches('/')),
            "title": format!("{} stream", route.name),
            "description": stream_description(route),
            "servers": [{"$ref": "#/servers/public"}],
            "messages": messages,
        });
        let params = path_params(&route.path);
        if !params.is_empty() {
            channel["parameters"] = params
                .iter()
                .map(|p| (p.clone(), json!({"description": format!("The `{{{p}}}` segment of the route path.")})))
                .collect::<Map<_, _>>()
                .into();
        }
        channels.insert(route.name.clone(), channel);
        operations.insert(
            format!("{}.stream", route.name),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{}", route.name)},
                "title": format!("Stream {}", route.path),
                "summary": "herald sends these events to each SSE subscriber of the watch.",
                "messages": refs,
            }),
        );

        if route.webhooks {
            let name = format!("{}.webhooks", route.name);
            let types = webhook_types(route);
            let messages: Map<String, Value> = types.iter().map(|t| (t.clone(), webhook_message(route, t))).collect();
            let refs: Vec<Value> =
                types.iter().map(|t| json!({"$ref": format!("#/channels/{name}/messages/{t}")})).collect();
            channels.insert(
                name.clone(),
                json!({
                    "address": null,
                    "title": format!("{} webhooks", route.name),
                    "description": format!(
                        "Signed Standard Webhooks POSTs to each subscription's `url` (made through the \
                         subscription API) for changes of `{}`; retried on `webhooks.retry_schedule`.",
                        route.path
                    ),
                    "messages": messages,
                }),
            );
            operations.insert(
                format!("{name}.deliver"),
                json!({
                    "action": "send",
                    "channel": {"$ref": format!("#/channels/{name}")},
                    "title": format!("Deliver {} changes", route.name),
                    "summary": "herald POSTs each message to the subscription's url until a 2xx.",
                    "messages": refs,
                }),
            );
        }
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "herald",
            "version": VERSION,
            "description": "Changes of the resources herald watches, pushed as Server-Sent Events and \
                            webhooks. Streams: `GET <address>` with `Accept: text/event-stream`; resume \
                            with `Last-Event-ID`. Generated from the gateway's configuration.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "public": {
                "host": config.server.listen.to_string(),
                "protocol": if config.server.tls.is_some() { "https" } else { "http" },
                "description": "herald's public listener.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas(), "messageTraits": {"webhook": webhook_trait()}},
    })
}

/// The OpenAPI 3.1 document of `config`.
pub fn openapi(config: &Config) -> Value {
    let mut paths = Map::new();
    for route in &config.routes {
        let params = path_params(&route.path);
        let mut parameters: Vec<Value> = params
            .iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.push(json!({"name": "Last-Event-ID", "in": "header", "required": false,
            "description": "Resume after this event id (from the watch's history); unknown ids get a fresh snapshot.",
            "schema": {"type": "string", "maxLength": 256}}));
        parameters.push(json!({"name": "lastEventId", "in": "query", "required": false,
            "description": "The same, for clients that cannot set headers.", "schema": {"type": "string", "maxLength": 256}}));
        for name in &route.vary {
            if route.access != Access::Public {
                parameters.push(json!({"name": name, "in": "header", "required": false,
                    "description": "Part of the subscriber's credential, presented to the upstream.",
                    "schema": {"type": "string"}}));
            }
        }
        let events: Vec<String> = stream_events(route).into_iter().map(|e| format!("`{}`", e.name)).collect();
        paths.insert(
            format!("{}/event-stream", route.path.trim_end_matches('/')),
            json!({"get": {
                "operationId": format!("stream_{}", route.name.replace('-', "_")),
                "tags": ["streams"],
                "summary": format!("Stream changes of {}", route.path),
                "description": format!("{} Events: {}.", stream_description(route), events.join(", ")),
                "parameters": parameters,
                "responses": {
                    "200": {"description": "An SSE stream (see the AsyncAPI document for its events).",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "400": {"description": "A path herald refuses (`..`, encoded separators)."},
                    "401": {"description": "The upstream's own answer to the subscriber's credential."},
                    "403": {"description": "The upstream's own answer to the subscriber's credential."},
                    "429": retry_after("Too many watches for this credential (`limits.max_watches_per_scope`)."),
                    "503": retry_after("Too many watches or subscribers, storage unavailable, or shutting down."),
                },
            }}),
        );
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "herald",
            "version": VERSION,
            "description": "herald's own endpoints in front of the upstream API: SSE streams of the \
                            routes, the webhook subscription API, and (under `webhooks`) the deliveries a \
                            receiver gets. Everything else is passed through to the upstream. Generated \
                            from the gateway's configuration.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": format!("{}://{}", if config.server.tls.is_some() { "https" } else { "http" }, config.server.listen)}],
        "tags": [{"name": "streams"}, {"name": "webhooks"}],
        "paths": paths,
        "components": {"schemas": schemas()},
    });
    if !config.webhooks.api_keys.is_empty() {
        let paths = doc["paths"].as_object_mut().expect("paths");
        paths.extend(webhook_api());
        doc["components"]["securitySchemes"] = json!({"apiKey": {"type": "http", "scheme": "bearer",
            "description": "One of `webhooks.api_keys`."}});
    }
    let mut webhooks = Map::new();
    for route in config.routes.iter().filter(|r| r.webhooks) {
        for t in webhook_types(route) {
            webhooks.insert(
                t.clone(),
                json!({"post": {
                    "operationId": format!("deliver_{}", t.replace(['.', '-'], "_")),
                    "summary": format!("`{t}`, POSTed to a subscription's url"),
                    "parameters": webhook_headers(),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": webhook_payload(route, &t)}}},
                    "responses": {
                        "2XX": {"description": "Delivered."},
                        "410": {"description": "The subscription is disabled."},
                        "default": {"description": "Retried on `webhooks.retry_schedule` (429 and 503 honour Retry-After)."},
                    },
                }}),
            );
        }
    }
    doc["webhooks"] = webhooks.into();
    doc
}

/// One event a route's stream can carry.
struct StreamEvent {
    name: String,
    summary: &'static str,
    payload: Value,
}

impl StreamEvent {
    fn asyncapi_message(&self) -> Value {
        json!({
            "name": self.name,
            "title": format!("event: {}", self.name),
            "summary": self.summary,
            "contentType": "application/json",
            "payload": self.payload,
        })
    }
}

fn stream_events(route: &Route) -> Vec<StreamEvent> {
    let event = |name: &str, summary, payload| StreamEvent { name: name.to_string(), summary, payload };
    let mut events = vec![event(
        "snapshot",
        "The whole representation: first on a fresh stream, and after a resync.",
        schema_ref("Representation"),
    )];
    match route.events.format {
        Format::Snapshot => events.push(event("change", "The whole new representation.", schema_ref("Representation"))),
        Format::JsonPatch => events.push(event(
            "patch",
            "RFC 6902 operations turning the previous representation into the new one.",
            schema_ref("JsonPatch"),
        )),
        Format::MergePatch => events.push(event(
            "merge-patch",
            "An RFC 7396 document turning the previous representation into the new one.",
            schema_ref("MergePatch"),
        )),
        Format::Collection => {
            for action in ["created", "updated", "deleted"] {
                events.push(StreamEvent {
                    name: format!("{}.{action}", type_name(route)),
                    summary: "One changed item of the collection.",
                    payload: item_event(route),
                });
            }
        }
    }
    events.push(event(
        "upstream-status",
        "The upstream started (ok: false) or stopped (ok: true) failing.",
        schema_ref("UpstreamStatus"),
    ));
    events.push(event("error", "The stream is being closed, and why.", schema_ref("StreamError")));
    events
}

fn stream_description(route: &Route) -> String {
    let access = match route.access {
        Access::Public => "one watch for everybody".to_string(),
        Access::Shared => format!(
            "one watch for everybody; each subscriber admitted by the upstream on its {}",
            route.vary.join(", ")
        ),
        Access::PerSubscriber => format!("one watch per credential ({})", route.vary.join(", ")),
    };
    format!("Changes of `{}` ({access}), format `{}`.", route.path, route.events.format.as_str())
}

/// `{name}` segments of a route path.
fn path_params(path: &str) -> Vec<String> {
    path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).map(str::to_string).collect()
}

fn type_name(route: &Route) -> &str {
    route.events.type_prefix.as_deref().unwrap_or(&route.name)
}

/// The event types a route's webhook subscriptions can get.
fn webhook_types(route: &Route) -> Vec<String> {
    let t = type_name(route);
    let mut types: Vec<String> = match route.events.format {
        Format::Collection => ["created", "updated", "deleted"].iter().map(|a| format!("{t}.{a}")).collect(),
        _ => vec![format!("{t}.changed")],
    };
    types.push("herald.ping".into());
    types
}

/// A collection item event; `resourceDetails` is required where the route's payload is rich
/// (a subscription may still ask for lean).
fn item_event(route: &Route) -> Value {
    let rich = route.events.collection.as_ref().is_none_or(|c| c.payload == Payload::Rich);
    let mut schema = schema_ref("ItemEvent");
    if rich {
        schema = json!({"allOf": [schema, {"required": ["resourceDetails"]}]});
    }
    schema
}

fn webhook_message(route: &Route, event_type: &str) -> Value {
    json!({
        "name": event_type,
        "title": event_type,
        "contentType": "application/json",
        "traits": [{"$ref": "#/components/messageTraits/webhook"}],
        "payload": webhook_payload(route, event_type),
    })
}

/// The Standard Webhooks body of an event type on a route.
fn webhook_payload(route: &Route, event_type: &str) -> Value {
    let data = if event_type == "herald.ping" {
        json!({"type": "object", "required": ["subscription"], "properties": {"subscription": {"type": "string"}}})
    } else if route.events.format == Format::Collection {
        schema_ref("ItemEvent")
    } else {
        let mut changed = schema_ref("Changed");
        if route.events.format != Format::JsonPatch {
            changed = json!({"allOf": [changed, {"not": {"required": ["patch"]}}]});
        }
        changed
    };
    json!({
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"const": event_type},
            "timestamp": {"type": "string", "format": "date-time", "description": "When the change was detected."},
            "data": data,
        },
    })
}

/// The Standard Webhooks headers of every delivery, as an AsyncAPI message trait.
fn webhook_trait() -> Value {
    json!({
        "headers": {
            "type": "object",
            "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
            "properties": webhook_header_schemas(),
        }
    })
}

fn webhook_header_schemas() -> Value {
    json!({
        "webhook-id": {"type": "string", "description": "The message id: the same on every retry; deduplicate on it."},
        "webhook-timestamp": {"type": "string", "pattern": "^[0-9]+$", "description": "This attempt's time, Unix seconds."},
        "webhook-signature": {"type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)?$",
            "description": "v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">; two, space-separated, for 24 h after a secret rotation."},
        "traceparent": {"type": "string", "description": "W3C Trace Context of this attempt."},
    })
}

fn webhook_headers() -> Vec<Value> {
    let required = ["webhook-id", "webhook-timestamp", "webhook-signature"];
    let Value::Object(headers) = webhook_header_schemas() else { unreachable!() };
    headers
        .into_iter()
        .map(|(name, mut schema)| {
            let description = schema.as_object_mut().and_then(|s| s.remove("description")).unwrap_or_default();
            json!({"name": name, "in": "header", "required": required.contains(&name.as_str()),
                "description": description, "schema": schema})
        })
        .collect()
}

fn retry_after(description: &str) -> Value {
    json!({"description": description, "headers": {"Retry-After": {"description": "Seconds to wait.",
        "schema": {"type": "integer", "minimum": 0}}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schemas the formats fix, shared by both documents.
fn schemas() -> Value {
    json!({
        "Representation": {"description": "The upstream's representation (JSON), after `ignore` pointers are removed."},
        "JsonPatch": {
            "type": "array",
            "description": "RFC 6902 JSON Patch.",
            "items": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": {},
                },
            },
        },
        "MergePatch": {"description": "RFC 7396 JSON Merge Patch (null removes a member)."},
        "Link": {
            "type": "object",
            "required": ["href", "rel"],
            "properties": {"href": {"type": "string"}, "rel": {"type": "string"}},
        },
        "ItemEvent": {
            "type": "object",
            "required": ["eventType", "resourceType", "resourceId", "_links"],
            "properties": {
                "eventType": {"type": "string", "description": "<type>.created, .updated or .deleted"},
                "resourceType": {"type": "string"},
                "resourceId": {"type": "string"},
                "resourceDetails": {"description": "The item (for .deleted: as last seen); absent when lean."},
                "_links": {"type": "array", "items": schema_ref("Link"), "description": "self (the item) and list (the collection)."},
            },
        },
        "Changed": {
            "type": "object",
            "required": ["path", "_links"],
            "properties": {
                "path": {"type": "string"},
                "representation": {"description": "The whole new representation (rich only)."},
                "patch": {"allOf": [schema_ref("JsonPatch")], "description": "From the previous state (json-patch routes only)."},
                "_links": {"type": "array", "items": schema_ref("Link")},
            },
        },
        "UpstreamStatus": {
            "type": "object",
            "required": ["ok"],
            "properties": {"ok": {"type": "boolean"}, "status": {"type": "integer"}, "error": {"type": "string"}},
        },
        "StreamError": {
            "type": "object",
            "description": "{\"status\":401} or 403: the credential was refused (do not reconnect with it); \
                            {\"reason\":\"shutdown\"} or \"reconfigured\": reconnect after `retry`.",
            "properties": {"status": {"type": "integer"}, "reason": {"type": "string"}},
        },
        "Subscription": {
            "type": "object",
            "required": ["id", "url", "path", "filter", "payload", "status", "declared", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "url": {"type": "string", "format": "uri"},
                "path": {"type": "string"},
                "filter": {"type": "array", "items": {"type": "string"}},
                "payload": {"enum": ["rich", "lean"]},
                "description": {"type": ["string", "null"]},
                "status": {"enum": ["active", "paused", "disabled", "unauthorized"]},
                "declared": {"type": "boolean", "description": "Declared in the configuration (read-only)."},
                "created_at": {"type": "string", "format": "date-time"},
                "failing_since": {"type": ["string", "null"], "format": "date-time"},
                "secret": {"type": "string", "description": "Only in the answer that creates it."},
            },
        },
        "NewSubscription": {
            "type": "object",
            "required": ["url", "path"],
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "path": {"type": "string", "description": "A concrete path (and query) matching a route with webhooks: true."},
                "filter": {"type": "array", "items": {"type": "string"}, "description": "Event types; * may end one (task.*)."},
                "payload": {"enum": ["rich", "lean"]},
                "secret": {"type": "string", "pattern": "^whsec_"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Presented to the upstream when polling for this subscription; never returned."},
                "description": {"type": "string"},
            },
        },
        "SubscriptionChange": {
            "type": "object",
            "properties": {
                "status": {"enum": ["active", "paused"]},
                "filter": {"type": "array", "items": {"type": "string"}},
                "url": {"type": "string", "format": "uri"},
                "payload": {"enum": ["rich", "lean"]},
            },
        },
        "Delivery": {
            "type": "object",
            "required": ["id", "event", "status", "attempts", "created_at"],
            "properties": {
                "id": {"type": "string", "description": "The webhook-id."},
                "event": {"type": "string"},
                "status": {"enum": ["pending", "delivered", "dead"]},
                "attempts": {"type": "integer"},
                "created_at": {"type": "string", "format": "date-time"},
                "last_attempt": {"type": ["string", "null"], "format": "date-time"},
                "last_status": {"type": ["integer", "null"]},
                "last_error": {"type": ["string", "null"]},
                "next_attempt": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "required": ["field", "detail"],
                    "properties": {"field": {"type": "string"}, "detail": {"type": "string"}}}},
            },
        },
    })
}

/// The webhook subscription API's paths.
fn webhook_api() -> Map<String, Value> {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let problem =
        |d: &str| json!({"description": d, "content": {"application/problem+json": {"schema": schema_ref("Problem")}}});
    let ok = |d: &str, schema: Value| json!({"description": d, "content": {"application/json": {"schema": schema}}});
    let body = |schema: Value| json!({"required": true, "content": {"application/json": {"schema": schema}}});
    let op = |id: &str, summary: &str, responses: Value| json!({"operationId": id, "tags": ["webhooks"], "summary": summary, "security": [{"apiKey": []}], "responses": responses});
    let with = |mut op: Value, key: &str, value: Value| {
        op[key] = value;
        op
    };
    let list = json!({"type": "object", "required": ["subscriptions"],
        "properties": {"subscriptions": {"type": "array", "items": schema_ref("Subscription")}}});
    let deliveries = json!({"type": "object", "required": ["deliveries"],
        "properties": {"deliveries": {"type": "array", "items": schema_ref("Delivery")}}});
    let mut paths = Map::new();
    paths.insert(
        "/_herald/v1/webhooks".into(),
        json!({
            "get": op("list_subscriptions", "Your key's subscriptions and the declared ones", json!({
                "200": ok("The subscriptions (no secrets).", list), "401": problem("No or a wrong API key.")})),
            "post": with(op("create_subscription", "Subscribe a receiver to a watched path", json!({
                "201": ok("The subscription, with its secret (shown only here).", schema_ref("Subscription")),
                "400": problem("An invalid field, a private destination, or the upstream refusing the path."),
                "401": problem("No or a wrong API key."),
                "429": retry_after("Too many watches for this credential."),
                "503": retry_after("Too many watches."),
            })), "requestBody", body(schema_ref("NewSubscription"))),
        }),
    );
    paths.insert(
        "/_herald/v1/webhooks/{id}".into(),
        json!({
            "parameters": id,
            "get": op("get_subscription", "One subscription", json!({
                "200": ok("The subscription.", schema_ref("Subscription")), "404": problem("No such subscription for this key.")})),
            "patch": with(op("change_subscription", "Pause, resume or change a subscription", json!({
                "200": ok("The subscription.", schema_ref("Subscription")), "400": problem("An invalid field."),
                "404": problem("No such subscription for this key.")})), "requestBody", body(schema_ref("SubscriptionChange"))),
            "delete": op("delete_subscription", "Delete a subscription and its pending messages", json!({
                "204": {"description": "Deleted."}, "404": problem("No such subscription for this key.")})),
        }),
    );
    paths.insert(
        "/_herald/v1/webhooks/{id}/secret/rotate".into(),
        json!({"parameters": id, "post": op("rotate_secret", "A new signing secret (the old one signs too for 24 h)", json!({
            "200": ok("The new secret.", json!({"type": "object", "required": ["secret"], "properties": {"secret": {"type": "string"}}})),
            "404": problem("No such subscription for this key.")}))}),
    );
    paths.insert(
        "/_herald/v1/webhooks/{id}/deliveries".into(),
        json!({"parameters": id, "get": with(op("list_deliveries", "Recent messages, newest first", json!({
            "200": ok("The messages.", deliveries), "404": problem("No such subscription for this key.")})),
            "parameters", json!([
                {"name": "status", "in": "query", "required": false, "schema": {"enum": ["pending", "delivered", "dead"]}},
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ]))}),
    );
    paths.insert(
        "/_herald/v1/webhooks/{id}/replay".into(),
        json!({"parameters": id, "post": with(op("replay", "Send again the messages created since a time", json!({
            "202": ok("How many were queued again.", json!({"type": "object", "required": ["replayed"], "properties": {"replayed": {"type": "integer"}}})),
            "404": problem("No such subscription for this key.")})),
            "requestBody", body(json!({"type": "object", "required": ["since"], "properties": {"since": {"type": "string", "format": "date-time"}}})))}),
    );
    paths.insert(
        "/_herald/v1/webhooks/{id}/test".into(),
        json!({"parameters": id, "post": op("test", "Send a herald.ping event", json!({
            "202": ok("The message id.", json!({"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}})),
            "404": problem("No such subscription for this key.")}))}),
    );
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let yaml = "upstream: {url: 'http://10.1.2.3:8081', headers: {Authorization: 'Bearer service-secret'}}\n\
                    webhooks: {api_keys: [api-key-0123456789abc]}\n\
                    routes:\n\
                    \x20 - {name: tasks, path: /tasks, events: {format: collection, type: task, collection: {id: /id}}}\n\
                    \x20 - {name: task, path: '/tasks/{id}', events: {format: json-patch}}\n\
                    \x20 - {name: mine, path: /me, access: per-subscriber, vary: [authorization], webhooks: false}\n";
        herald_config::load("t.yaml", yaml, &|_| None).unwrap()
    }

    #[test]
    fn every_route_is_a_channel_with_its_format_s_events() {
        let doc = asyncapi(&config());
        let channels = doc["channels"].as_object().unwrap();
        let names: Vec<&str> = channels.keys().map(String::as_str).collect();
        assert_eq!(names, ["mine", "task", "task.webhooks", "tasks", "tasks.webhooks"]);
        assert_eq!(channels["task"]["address"], "/tasks/{id}/event-stream");
        assert!(channels["task"]["parameters"]["id"].is_object());
        let events: Vec<&str> = channels["tasks"]["messages"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(events, ["error", "snapshot", "task.created", "task.deleted", "task.updated", "upstream-status"]);
        assert!(channels["task"]["messages"]["patch"].is_object());
        assert!(channels["mine"]["messages"]["change"].is_object());
        assert_eq!(doc["operations"]["tasks.webhooks.deliver"]["action"], "send");
    }

    #[test]
    fn openapi_has_the_streams_the_api_and_the_deliveries() {
        let doc = openapi(&config());
        assert!(doc["paths"]["/tasks/{id}/event-stream"]["get"].is_object());
        assert!(doc["paths"]["/_herald/v1/webhooks/{id}/deliveries"]["get"].is_object());
        let webhooks: Vec<&str> = doc["webhooks"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(webhooks, ["herald.ping", "task.changed", "task.created", "task.deleted", "task.updated"]);
    }

    #[test]
    fn neither_names_the_upstream_nor_a_credential() {
        let config = config();
        for doc in [asyncapi(&config), openapi(&config)] {
            let text = doc.to_string();
            for secret in ["10.1.2.3", "service-secret", "api-key-0123456789abc"] {
                assert!(!text.contains(secret), "{secret}");
            }
        }
    }
}
