//! Delta polling (`poll.delta`, spec section 3), for a collection whose API can list what
//! changed since a value (`?updated_since=…`, `?since=<cursor>`). The watch reads the whole
//! collection once; from then on each poll asks only `?<param>=<value>`, with the value taken
//! from the previous answer, and upserts the items it gets by id into the collection it holds
//! (removing those marked deleted, or listed by a deleted feed). The merged collection then goes
//! through change detection like a whole one, so subscribers get the very events a full poll
//! would have sent. The whole collection is read again every `full_every` (and whenever the
//! held collection is not the one the value was taken with: a poll a cluster replica could not
//! commit, a lease taken over), which repairs any drift with only its differences as events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use herald_config::{Deleted, Delta, DeltaFrom, Route};
use herald_core::diff::item_id;
use herald_core::Representation;
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::budget::Budget;
use super::got::{Changed, Got};
use super::pages::{path_of, with_param, PageCache};
use super::whole::whole;
use crate::client::{Answer, Fetch, Request};
use crate::PollError;

/// The longest value herald puts in a query (an upstream's cursor is usually tens of bytes;
/// a URL of many kilobytes is refused by most servers anyway).
const MAX_VALUE: usize = 2048;

/// Where a watch's delta polling stands; no position until a whole read gave a value.
#[derive(Default)]
pub(crate) struct DeltaState {
    position: Mutex<Option<Position>>,
    /// Deltas could not be used: until then, the watch polls as without `poll.delta`.
    suspended: Mutex<Option<Instant>>,
}

impl DeltaState {
    /// Polls as without `poll.delta` (one conditional GET, or every page) for `full_every`,
    /// saying why: an upstream whose deltas cannot be used costs what full polling costs, not a
    /// failed delta and a whole read every poll, and the log says so once per `full_every`.
    fn suspend(&self, route: &Route, delta: &Delta, why: &str) {
        warn!(route = %route.name, why, retry_in = ?delta.full_every, "delta polling suspended: polling whole");
        *self.position.lock().unwrap() = None;
        *self.suspended.lock().unwrap() = Some(Instant::now() + delta.full_every);
    }

    fn is_suspended(&self) -> bool {
        let mut suspended = self.suspended.lock().unwrap();
        match *suspended {
            Some(until) if Instant::now() < until => true,
            _ => {
                *suspended = None;
                false
            }
        }
    }
}

struct Position {
    /// What the next delta asks from (a string or a number).
    value: Value,
    /// The hash of the collection `value` was taken with: deltas apply to that one only.
    basis: blake3::Hash,
    /// When the collection was last read whole.
    full_at: Instant,
    /// The positions of `basis`'s items by id, once a delta needed them.
    index: Option<HashMap<String, usize>>,
}

/// Where the items and their ids are in every answer: the route's collection, or with
/// `json-patch` the answer itself, its elements identified by `array_id`.
struct Shape<'a> {
    items: &'a str,
    id: &'a str,
}

impl<'a> Shape<'a> {
    fn of(route: &'a Route) -> Self {
        match &route.events.collection {
            Some(c) => Shape { items: &c.items, id: &c.id },
            None => Shape { items: "", id: route.events.array_id.as_deref().unwrap_or("/id") },
        }
    }

    fn items<'v>(&self, doc: &'v Value) -> Option<&'v Vec<Value>> {
        doc.pointer(self.items).and_then(Value::as_array)
    }

    fn id(&self, item: &Value) -> Option<String> {
        item.pointer(self.id).and_then(item_id).map(|id| id.into_owned())
    }
}

/// Polls the collection `request` names: only what changed since the held collection was
/// taken, or the whole of it when it is time to (see the module's description). `None` while
/// delta polling is suspended: the watch polls as without `poll.delta`.
pub(crate) async fn fetch(
    fetch: &dyn Fetch,
    route: &Route,
    delta: &Delta,
    state: &DeltaState,
    request: Request<'_>,
    held: Option<&Representation>,
    budget: &mut Budget<'_>,
) -> Result<Option<Got>, PollError> {
    if state.is_suspended() {
        return Ok(None);
    }
    let shape = Shape::of(route);
    // Taken for the poll (its index is kept up to date in place) and put back after it; a
    // watch polls once at a time.
    let position = state.position.lock().unwrap().take();
    if let (Some(mut position), Some(held)) = (position, held) {
        if position.basis == held.hash
            && position.full_at.elapsed() < delta.full_every
            && shape.items(&held.value).is_some()
        {
            match delta_read(fetch, route, delta, &shape, &mut position, request, held, budget).await {
                // A delta herald cannot use (not JSON, no items, an item without an id, a merged
                // collection over max_body): the whole collection instead, from this poll on.
                Err(PollError::InvalidPage { why, .. }) => {
                    state.suspend(route, delta, &why);
                    return Ok(None);
                }
                got => {
                    *state.position.lock().unwrap() = Some(position);
                    return got.map(Some);
                }
            }
        }
    }
    whole_read(fetch, route, delta, state, request, budget).await.map(Some)
}

/// Asks for what changed since `position`'s value and merges it into `held`; `position`
/// moves on when that succeeds, and stays as it was when it fails.
#[allow(clippy::too_many_arguments)]
async fn delta_read(
    fetch: &dyn Fetch,
    route: &Route,
    delta: &Delta,
    shape: &Shape<'_>,
    position: &mut Position,
    request: Request<'_>,
    held: &Representation,
    budget: &mut Budget<'_>,
) -> Result<Got, PollError> {
    let value = text(&position.value);
    if value.len() > MAX_VALUE {
        // Taken from a delta: the whole read in its place will not keep it.
        return Err(invalid(request.target, format!("the delta value is longer than {MAX_VALUE} bytes")));
    }
    let target = with_param(request.target, &delta.param, &value);
    let capture = match &delta.from {
        DeltaFrom::Header(name) => Some(name.as_str()),
        _ => None,
    };
    let ask = |target| Request {
        target,
        credentials: request.credentials,
        withhold: request.withhold,
        capture,
        ..Request::default()
    };
    let answer = whole(fetch, route, &PageCache::default(), ask(&target), budget).await?;
    let (body, max_age, captured) = match answer {
        Answer::Ok { body, max_age, captured, .. } => (body, max_age, captured),
        other => return Ok(Got::from_answer(other, &route.ignore)),
    };
    let mut bytes = body.len() as u64;
    let doc = parse(&body, &target)?;
    let items = shape.items(&doc).ok_or_else(|| no_array(&target, shape))?;
    let mut removed = Vec::new();
    if let Deleted::Feed(suffix) = &delta.deleted {
        let (path, query) = request.target.split_once('?').map_or((request.target, None), |(p, q)| (p, Some(q)));
        let feed = match query {
            Some(query) => format!("{path}{suffix}?{query}"),
            None => format!("{path}{suffix}"),
        };
        let feed = with_param(&feed, &delta.param, &value);
        let body = match whole(fetch, route, &PageCache::default(), ask(&feed), budget).await? {
            Answer::Ok { body, .. } => body,
            other => return Ok(Got::from_answer(other, &route.ignore)),
        };
        bytes += body.len() as u64;
        let gone = parse(&body, &feed)?;
        let gone = shape.items(&gone).ok_or_else(|| no_array(&feed, shape))?;
        for item in gone {
            // A feed may list the removed items, or only their ids.
            let id = shape.id(item).or_else(|| item_id(item).map(|id| id.into_owned()));
            removed.push(id.ok_or_else(|| invalid(&feed, format!("a removed item without an id at {}", shape.id)))?);
        }
    }

    let next = next_value(&delta.from, position.value.clone(), items, &doc, captured);
    let flag = match &delta.deleted {
        Deleted::Flag(pointer) => Some(pointer.as_str()),
        _ => None,
    };
    let index = position.index.get_or_insert_with(|| index_of(&held.value, shape));
    let merged = merge(&held.value, shape, index, items, flag, &removed).map_err(|why| invalid(&target, why))?;
    position.value = next;
    let Some(merged) = merged else {
        return Ok(Got::NotModified { max_age, etag: None, last_modified: None });
    };
    // Only when every held item has an id of its own does the index name them all, and only
    // then are the items the delta touched the only ones a diff could report.
    let whole_index = index.len() == shape.items(&held.value).map_or(0, Vec::len);
    merged.update(index);
    let mut repr = Representation::from_value(merged.doc, &route.ignore);
    if repr.data.len() as u64 > fetch.max_body() {
        let why =
            format!("the collection merged from deltas is larger than upstream.max_body ({} bytes)", fetch.max_body());
        return Err(invalid(&target, why));
    }
    repr.content_type.clone_from(&held.content_type);
    position.basis = repr.hash;
    let changed =
        whole_index.then_some(Changed { before: Value::Array(merged.before), after: Value::Array(merged.after) });
    Ok(Got::Fresh { repr, max_age, bytes, changed })
}

/// Reads the whole collection (unconditionally: its answer gives the value deltas start from).
async fn whole_read(
    fetch: &dyn Fetch,
    route: &Route,
    delta: &Delta,
    state: &DeltaState,
    request: Request<'_>,
    budget: &mut Budget<'_>,
) -> Result<Got, PollError> {
    let capture = match &delta.from {
        DeltaFrom::Header(name) => Some(name.as_str()),
        _ => None,
    };
    let request = Request { etag: None, last_modified: None, capture, ..request };
    let answer = whole(fetch, route, &PageCache::default(), request, budget).await?;
    let captured = match &answer {
        Answer::Ok { captured, .. } => captured.clone(),
        _ => None,
    };
    let mut got = Got::from_answer(answer, &route.ignore);
    if let Got::Fresh { repr, .. } = &mut got {
        let shape = Shape::of(route);
        let items = shape.items(&repr.value).map_or(&[][..], Vec::as_slice);
        let value = next_value(&delta.from, Value::Null, items, &repr.value, captured);
        if let Deleted::Flag(flag) = &delta.deleted {
            without_tombstones(repr, &shape, flag, &route.ignore);
        }
        // Without a usable value (an empty collection read by `max:`, an answer without its
        // cursor, a value too long for a query), the next poll reads the whole collection again.
        let position = if value.is_null() {
            None
        } else if text(&value).len() > MAX_VALUE {
            state.suspend(route, delta, &format!("the delta value is longer than {MAX_VALUE} bytes"));
            None
        } else {
            Some(Position { value, basis: repr.hash, full_at: Instant::now(), index: None })
        };
        *state.position.lock().unwrap() = position;
    }
    Ok(got)
}

/// Takes the items marked deleted out of a whole read, as a delta takes them out: the watch
/// never holds an item its tombstone removed (an API may list soft-deleted items in full).
fn without_tombstones(repr: &mut Representation, shape: &Shape, flag: &str, ignore: &[String]) {
    let dead = |item: &Value| item.pointer(flag) == Some(&Value::Bool(true));
    if !shape.items(&repr.value).is_some_and(|items| items.iter().any(dead)) {
        return;
    }
    let mut doc = (*repr.value).clone();
    if let Some(Value::Array(items)) = doc.pointer_mut(shape.items) {
        items.retain(|item| !dead(item));
    }
    let mut filtered = Representation::from_value(doc, ignore);
    filtered.content_type = repr.content_type.take();
    *repr = filtered;
}

/// The value the next delta asks from: the greatest `max:` field seen (`previous` included),
/// or the answer's `body:` value or `header:` field; `previous` when the answer has none.
fn next_value(from: &DeltaFrom, previous: Value, items: &[Value], doc: &Value, captured: Option<String>) -> Value {
    let found = match from {
        DeltaFrom::Max(pointer) => {
            return items.iter().filter_map(|item| item.pointer(pointer)).fold(previous, greater);
        }
        DeltaFrom::Body(pointer) => doc.pointer(pointer).filter(|v| v.is_string() || v.is_number()).cloned(),
        DeltaFrom::Header(_) => captured.map(Value::String),
    };
    found.unwrap_or(previous)
}

/// The greater of two values of one kind (numbers as numbers, strings as strings); a value of
/// another kind than the first one seen is passed over.
fn greater(max: Value, v: &Value) -> Value {
    let wins = match (&max, v) {
        (Value::Null, Value::String(_) | Value::Number(_)) => true,
        (Value::String(a), Value::String(b)) => b > a,
        (Value::Number(a), Value::Number(b)) => match (a.as_u64(), b.as_u64(), a.as_i64(), b.as_i64()) {
            (Some(a), Some(b), ..) => b > a,
            (.., Some(a), Some(b)) => b > a,
            _ => b.as_f64() > a.as_f64(),
        },
        _ => false,
    };
    if wins {
        v.clone()
    } else {
        max
    }
}

/// A value as a query parameter carries it: a string's text, a number's JSON form.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The held collection's item positions by id (items without one are left out: a delta
/// naming no id cannot reach them).
fn index_of(held: &Value, shape: &Shape) -> HashMap<String, usize> {
    let items = shape.items(held).map_or(&[][..], Vec::as_slice);
    items.iter().enumerate().filter_map(|(i, item)| Some((shape.id(item)?, i))).collect()
}

/// A delta merged into the held collection.
struct Merged {
    doc: Value,
    /// The held items that changed or went, in the held order; what replaced them and the new
    /// items, in the new order: the only items a diff of the two collections reports.
    before: Vec<Value>,
    after: Vec<Value>,
    /// Positions (in the held list) and ids of the items that went, in order.
    gone: BTreeMap<usize, String>,
    /// Ids and positions of the items added at the end (before those that went are taken out).
    appended: HashMap<String, usize>,
}

impl Merged {
    /// `index` (of the held collection) made the index of the merged one.
    fn update(&self, index: &mut HashMap<String, usize>) {
        for id in self.gone.values() {
            index.remove(id);
        }
        index.extend(self.appended.iter().map(|(id, &at)| (id.clone(), at)));
        if !self.gone.is_empty() {
            let gone: Vec<usize> = self.gone.keys().copied().collect();
            for at in index.values_mut() {
                *at -= gone.partition_point(|&g| g < *at);
            }
        }
    }
}

/// `held` with `items` upserted by id in order (a known item replaced where it is, a new one
/// appended; an item whose `flag` is `true` removed) and the `removed` ids taken out; `None`
/// when that changes nothing. `index` holds the positions of `held`'s items.
fn merge(
    held: &Value,
    shape: &Shape,
    index: &HashMap<String, usize>,
    items: &[Value],
    flag: Option<&str>,
    removed: &[String],
) -> Result<Option<Merged>, String> {
    let before = shape.items(held).ok_or("the held collection has no array")?;
    // Copied on the first change only: most deltas bring nothing new.
    let mut after: Option<Vec<Value>> = None;
    let mut appended: HashMap<String, usize> = HashMap::new();
    let mut touched: BTreeSet<usize> = BTreeSet::new();
    let mut gone: BTreeMap<usize, String> = BTreeMap::new();
    let at = |id: &str, appended: &HashMap<String, usize>| index.get(id).or_else(|| appended.get(id)).copied();
    for item in items {
        let id = shape.id(item).ok_or_else(|| format!("an item without an id at {}", shape.id))?;
        let tombstone = flag.is_some_and(|f| item.pointer(f) == Some(&Value::Bool(true)));
        match (at(&id, &appended), tombstone) {
            (Some(i), true) => {
                gone.insert(i, id);
            }
            (None, true) => {}
            (Some(i), false) => {
                let was_gone = gone.remove(&i).is_some();
                let now = after.as_ref().map_or_else(|| &before[i], |a| &a[i]);
                if was_gone || now != item {
                    after.get_or_insert_with(|| before.clone())[i] = item.clone();
                    touched.insert(i);
                }
            }
            (None, false) => {
                let after = after.get_or_insert_with(|| before.clone());
                appended.insert(id, after.len());
                touched.insert(after.len());
                after.push(item.clone());
            }
        }
    }
    for id in removed {
        if let Some(i) = at(id, &appended) {
            gone.insert(i, id.clone());
        }
    }
    if after.is_none() && gone.is_empty() {
        return Ok(None);
    }
    appended.retain(|_, at| !gone.contains_key(at));
    let mut list = after.unwrap_or_else(|| before.clone());
    let held_touched: BTreeSet<usize> =
        touched.iter().chain(gone.keys()).copied().filter(|&i| i < before.len()).collect();
    let was = held_touched.into_iter().map(|i| before[i].clone()).collect();
    let is = touched.iter().filter(|i| !gone.contains_key(i)).map(|&i| list[i].clone()).collect();
    if !gone.is_empty() {
        let mut i = 0;
        list.retain(|_| {
            i += 1;
            !gone.contains_key(&(i - 1))
        });
    }
    let list = Value::Array(list);
    let doc = if shape.items.is_empty() {
        list
    } else {
        let mut doc = held.clone();
        *doc.pointer_mut(shape.items).expect("found above") = list;
        doc
    };
    Ok(Some(Merged { doc, before: was, after: is, gone, appended }))
}

fn parse(body: &[u8], target: &str) -> Result<Value, PollError> {
    serde_json::from_slice(body).map_err(|e| invalid(target, format!("not JSON: {e}")))
}

fn no_array(target: &str, shape: &Shape) -> PollError {
    invalid(target, format!("no array at {:?}", shape.items))
}

fn invalid(target: &str, why: String) -> PollError {
    PollError::InvalidPage { path: path_of(target).into(), why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FetchFuture;
    use crate::limit::{Limiter, Priority};
    use bytes::Bytes;
    use serde_json::json;
    use std::collections::VecDeque;
    use std::time::Duration;

    const SHAPE: Shape<'static> = Shape { items: "", id: "/id" };

    /// The merged collection; checks on the way that the index kept up to date is the merged
    /// collection's, and that the touched items' events are the whole diff's.
    fn merged(held: Value, items: Value, flag: Option<&str>, removed: &[&str]) -> Option<Value> {
        let mut index = index_of(&held, &SHAPE);
        let removed: Vec<String> = removed.iter().map(|s| s.to_string()).collect();
        let merged = merge(&held, &SHAPE, &index, items.as_array().unwrap(), flag, &removed).unwrap()?;
        merged.update(&mut index);
        assert_eq!(index, index_of(&merged.doc, &SHAPE), "the index follows");
        let collection = herald_core::diff::Collection {
            items: String::new(),
            id: "/id".into(),
            payload: herald_core::diff::Payload::Rich,
            type_name: "t".into(),
        };
        let all = herald_core::diff::collection_events(&collection, &held, &merged.doc, "/t").unwrap();
        let touched = herald_core::diff::collection_events(
            &collection,
            &Value::Array(merged.before.clone()),
            &Value::Array(merged.after.clone()),
            "/t",
        )
        .unwrap();
        let names = |events: Vec<herald_core::diff::ItemEvent>| -> Vec<(String, Vec<u8>)> {
            events.into_iter().map(|e| (e.name, e.data)).collect()
        };
        assert_eq!(names(touched), names(all), "the touched items' events are the whole diff's");
        Some(merged.doc)
    }

    #[test]
    fn items_are_upserted_in_place_appended_and_removed_by_id() {
        let held = json!([{"id": 1, "t": "a"}, {"id": 2, "t": "b"}, {"id": 3, "t": "c"}]);
        // The same items again: nothing changed, nothing copied.
        assert_eq!(merged(held.clone(), json!([{"id": 2, "t": "b"}]), None, &[]), None);
        let items = json!([{"id": 2, "t": "B"}, {"id": 4, "t": "d"}, {"id": 1, "gone": true}, {"id": 9, "gone": true}]);
        assert_eq!(
            merged(held.clone(), items, Some("/gone"), &[]),
            Some(json!([{"id": 2, "t": "B"}, {"id": 3, "t": "c"}, {"id": 4, "t": "d"}]))
        );
        // A deleted feed; an item removed and created again in one delta comes back where it was.
        let items = json!([{"id": 5, "t": "e"}, {"id": 2, "gone": true}, {"id": 2, "t": "b2"}]);
        assert_eq!(
            merged(held.clone(), items, Some("/gone"), &["3", "5"]),
            Some(json!([{"id": 1, "t": "a"}, {"id": 2, "t": "b2"}]))
        );
        // Ids as numbers and strings are one identity, as in collection events.
        assert_eq!(
            merged(held, json!([{"id": "1", "t": "A"}]), None, &[]),
            Some(json!([{"id": "1", "t": "A"}, {"id": 2, "t": "b"}, {"id": 3, "t": "c"}]))
        );
    }

    #[test]
    fn random_deltas_keep_every_item_s_last_word_and_the_untouched_in_order() {
        for round in 0..500 {
            let mut rng = fastrand::Rng::with_seed(round);
            let n = rng.usize(0..12);
            let held: Vec<Value> = (0..n).map(|id| json!({"id": id, "v": 0})).collect();
            let ops: Vec<Value> = (0..rng.usize(0..10))
                .map(|k| match rng.bool() {
                    true => json!({"id": rng.usize(0..n + 4), "gone": true}),
                    false => json!({"id": rng.usize(0..n + 4), "v": k + 1}),
                })
                .collect();
            let removed: Vec<String> = (0..rng.usize(0..3)).map(|_| rng.usize(0..n + 4).to_string()).collect();
            let removed: Vec<&str> = removed.iter().map(String::as_str).collect();
            let got = merged(Value::Array(held.clone()), Value::Array(ops.clone()), Some("/gone"), &removed);
            let got = got.unwrap_or_else(|| Value::Array(held.clone()));
            let ids: Vec<u64> = got.as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
            let case = format!("round {round}: {ops:?} removed {removed:?} -> {got}");
            for id in 0..(n + 4) as u64 {
                let last = ops.iter().rev().find(|op| op["id"] == id);
                let present = match last {
                    _ if removed.contains(&id.to_string().as_str()) => false,
                    Some(op) => op.get("gone").is_none(),
                    None => id < n as u64,
                };
                assert_eq!(ids.iter().filter(|&&i| i == id).count(), usize::from(present), "{id}: {case}");
                if let (true, Some(op)) = (present, last) {
                    let item = got.as_array().unwrap().iter().find(|i| i["id"] == id).unwrap();
                    assert_eq!(item["v"], op["v"], "{case}");
                }
            }
            let untouched: Vec<u64> =
                (0..n as u64).filter(|id| !ops.iter().any(|op| op["id"] == *id) && ids.contains(id)).collect();
            let kept: Vec<u64> = ids.iter().copied().filter(|id| untouched.contains(id)).collect();
            assert_eq!(kept, untouched, "{case}");
        }
    }

    #[test]
    fn an_item_without_an_id_is_an_error_and_the_collection_can_sit_under_a_pointer() {
        let held = json!({"data": [{"id": 1}], "total": 1});
        let shape = Shape { items: "/data", id: "/id" };
        let index = index_of(&held, &shape);
        let got = merge(&held, &shape, &index, &[json!({"id": 2})], None, &[]).unwrap().map(|m| m.doc);
        assert_eq!(got, Some(json!({"data": [{"id": 1}, {"id": 2}], "total": 1})));
        let err = merge(&held, &shape, &index, &[json!({"name": "x"})], None, &[]).err().unwrap();
        assert_eq!(err, "an item without an id at /id");
    }

    #[test]
    fn the_next_value_is_the_greatest_seen_or_the_answers_own() {
        let items = [json!({"u": "2026-01-02T00:00:00Z"}), json!({"u": "2026-01-03T00:00:00Z"}), json!({"u": 7})];
        let max = DeltaFrom::Max("/u".into());
        assert_eq!(next_value(&max, Value::Null, &items, &Value::Null, None), json!("2026-01-03T00:00:00Z"));
        assert_eq!(next_value(&max, json!("2027"), &items, &Value::Null, None), json!("2027"));
        let numbers = [json!({"u": 9}), json!({"u": 10}), json!({"u": 2})];
        assert_eq!(next_value(&max, json!(3), &numbers, &Value::Null, None), json!(10));
        assert_eq!(next_value(&max, json!(u64::MAX), &numbers, &Value::Null, None), json!(u64::MAX));
        let body = DeltaFrom::Body("/next".into());
        assert_eq!(next_value(&body, json!("c1"), &[], &json!({"next": "c2"}), None), json!("c2"));
        assert_eq!(next_value(&body, json!("c1"), &[], &json!({"next": null}), None), json!("c1"));
        let header = DeltaFrom::Header("x-cursor".into());
        assert_eq!(next_value(&header, json!("c1"), &[], &Value::Null, Some("c3".into())), json!("c3"));
        assert_eq!(next_value(&header, json!("c1"), &[], &Value::Null, None), json!("c1"));
        assert_eq!(text(&json!(10)), "10");
    }

    /// Answers each target from a queue of its own and records the targets asked.
    #[derive(Default)]
    struct Script {
        answers: Mutex<HashMap<String, VecDeque<Value>>>,
        asked: Mutex<Vec<String>>,
        /// `upstream.max_body`; none when 0.
        max_body: u64,
    }

    impl Script {
        fn then(&self, target: &str, body: Value) -> &Self {
            self.answers.lock().unwrap().entry(target.into()).or_default().push_back(body);
            self
        }

        fn asked(&self) -> Vec<String> {
            std::mem::take(&mut self.asked.lock().unwrap())
        }
    }

    impl Fetch for Script {
        fn fetch<'a>(&'a self, req: Request<'a>) -> FetchFuture<'a> {
            self.asked.lock().unwrap().push(req.target.to_string());
            let body = self.answers.lock().unwrap().get_mut(req.target).and_then(VecDeque::pop_front);
            let answer = match body {
                Some(body) => Answer::body(body.to_string()),
                None => Answer::Status { status: 404, content_type: None, body: Bytes::new(), retry_after: None },
            };
            Box::pin(async move { Ok(answer) })
        }

        fn max_body(&self) -> u64 {
            if self.max_body == 0 {
                u64::MAX
            } else {
                self.max_body
            }
        }
    }

    fn route(delta: &str) -> (Route, Delta) {
        let yaml = format!(
            "upstream: {{url: 'http://upstream.test'}}\nroutes:\n  - name: tasks\n    path: /tasks\n    \
             poll: {{ delta: {delta} }}\n    events: {{ format: collection, collection: {{ items: '' }} }}\n"
        );
        let route = herald_config::load("t.yaml", &yaml, &|_| None).unwrap().routes.remove(0);
        let delta = route.poll.delta.clone().unwrap();
        (route, delta)
    }

    async fn poll(
        script: &Script,
        (route, delta): &(Route, Delta),
        state: &DeltaState,
        held: &mut Option<Representation>,
    ) -> Got {
        let limiter = Limiter::new(1000.0, 4);
        let mut budget = Budget { limiter: &limiter, priority: Priority::Subscribed, first: None };
        let request = Request { target: "/tasks?q=1", ..Request::default() };
        let got = match fetch(script, route, delta, state, request, held.as_ref(), &mut budget).await.unwrap() {
            Some(got) => got,
            // Suspended: polled as without `poll.delta`, as `strategy::fetch` does.
            None => {
                let answer = whole(script, route, &PageCache::default(), request, &mut budget).await.unwrap();
                Got::from_answer(answer, &route.ignore)
            }
        };
        if let Got::Fresh { repr, .. } = &got {
            *held = Some(repr.clone());
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn reads_whole_then_only_deltas_until_full_every_or_until_the_held_collection_is_another() {
        let script = Script::default();
        let route = route("{ param: since, from: 'max:/u', deleted: 'feed:/deleted', full_every: 1h }");
        let state = DeltaState::default();
        let mut held = None;
        script.then("/tasks?q=1", json!([{"id": 1, "u": 5}, {"id": 2, "u": 8}]));
        assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::Fresh { .. }));
        assert_eq!(script.asked(), ["/tasks?q=1"]);

        // Nothing new (the API lists what changed at the value too): nothing changed.
        script.then("/tasks?q=1&since=8", json!([{"id": 2, "u": 8}])).then("/tasks/deleted?q=1&since=8", json!([]));
        assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::NotModified { .. }));
        assert_eq!(script.asked(), ["/tasks?q=1&since=8", "/tasks/deleted?q=1&since=8"]);

        script
            .then("/tasks?q=1&since=8", json!([{"id": 3, "u": 9}]))
            .then("/tasks/deleted?q=1&since=8", json!([{"id": 1}]));
        let Got::Fresh { repr, bytes, .. } = poll(&script, &route, &state, &mut held).await else { panic!() };
        assert_eq!(repr.value.as_ref(), &json!([{"id": 2, "u": 8}, {"id": 3, "u": 9}]));
        assert_eq!(bytes, 16 + 10, "the delta's bytes and the feed's");
        script.asked();

        // A collection that is not the one the value was taken with (a replica's poll that
        // could not be committed): the whole collection again.
        held = Some(Representation::from_body(Bytes::from_static(b"[{\"id\": 2, \"u\": 8}]"), &[]));
        script.then("/tasks?q=1", json!([{"id": 2, "u": 8}, {"id": 3, "u": 9}]));
        assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::Fresh { .. }));
        assert_eq!(script.asked(), ["/tasks?q=1"]);

        tokio::time::advance(Duration::from_secs(3599)).await;
        script.then("/tasks?q=1&since=9", json!([])).then("/tasks/deleted?q=1&since=9", json!([]));
        assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::NotModified { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        script.then("/tasks?q=1", json!([{"id": 3, "u": 9}]));
        let Got::Fresh { repr, .. } = poll(&script, &route, &state, &mut held).await else { panic!() };
        assert_eq!(repr.value.as_ref(), &json!([{"id": 3, "u": 9}]));
        assert_eq!(script.asked(), ["/tasks?q=1&since=9", "/tasks/deleted?q=1&since=9", "/tasks?q=1"]);
    }

    /// A watch of `/tasks?q=1` polled by delta from `max:/u` that has read `[{id: 1, u: 5}]` whole.
    async fn started(script: &Script) -> ((Route, Delta), DeltaState, Option<Representation>) {
        let route = route("{ param: since, from: 'max:/u' }");
        let state = DeltaState::default();
        let mut held = None;
        script.then("/tasks?q=1", json!([{"id": 1, "u": 5}]));
        poll(script, &route, &state, &mut held).await;
        script.asked();
        (route, state, held)
    }

    // A delta answer herald cannot use: the whole collection instead, in that poll and every
    // poll until `full_every` (as without `poll.delta`), then deltas are tried again.
    #[tokio::test(start_paused = true)]
    async fn a_delta_herald_cannot_use_suspends_deltas_until_full_every() {
        for unusable in [json!({"items": []}), json!([{"u": 6}]), json!("no")] {
            let script = Script::default();
            let (route, state, mut held) = started(&script).await;
            script.then("/tasks?q=1&since=5", unusable).then("/tasks?q=1", json!([{"id": 1, "u": 5}]));
            assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::Fresh { .. }));
            assert_eq!(script.asked(), ["/tasks?q=1&since=5", "/tasks?q=1"]);
            // Suspended: whole reads only.
            script.then("/tasks?q=1", json!([{"id": 1, "u": 5}, {"id": 2, "u": 6}]));
            let Got::Fresh { repr, .. } = poll(&script, &route, &state, &mut held).await else { panic!() };
            assert_eq!(repr.value.as_ref(), &json!([{"id": 1, "u": 5}, {"id": 2, "u": 6}]));
            assert_eq!(script.asked(), ["/tasks?q=1"]);
            // After full_every: a whole read gives a value, and deltas follow from it.
            tokio::time::advance(Duration::from_secs(3600)).await;
            script.then("/tasks?q=1", json!([{"id": 1, "u": 5}, {"id": 2, "u": 6}]));
            poll(&script, &route, &state, &mut held).await;
            script.then("/tasks?q=1&since=6", json!([{"id": 3, "u": 7}]));
            let Got::Fresh { repr, .. } = poll(&script, &route, &state, &mut held).await else { panic!() };
            assert_eq!(repr.value.as_ref(), &json!([{"id": 1, "u": 5}, {"id": 2, "u": 6}, {"id": 3, "u": 7}]));
            assert_eq!(script.asked(), ["/tasks?q=1", "/tasks?q=1&since=6"]);
        }
    }

    #[tokio::test]
    async fn the_merged_collection_is_held_to_max_body() {
        let script = Script { max_body: 64, ..Script::default() };
        let (route, state, mut held) = started(&script).await;
        // Each delta fits; together they do not: the whole collection is read instead (and
        // refused by its own size, like full polling's).
        script.then("/tasks?q=1&since=5", json!([{"id": 2, "u": 6, "t": "x".repeat(20)}]));
        assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::Fresh { .. }));
        script.then("/tasks?q=1&since=6", json!([{"id": 3, "u": 7, "t": "y".repeat(20)}]));
        script.then("/tasks?q=1", json!([{"id": 1, "u": 5}]));
        let Got::Fresh { repr, .. } = poll(&script, &route, &state, &mut held).await else { panic!() };
        assert_eq!(repr.value.as_ref(), &json!([{"id": 1, "u": 5}]));
        assert_eq!(script.asked(), ["/tasks?q=1&since=5", "/tasks?q=1&since=6", "/tasks?q=1"]);
    }

    #[tokio::test]
    async fn whole_reads_leave_out_the_items_marked_deleted_as_deltas_do() {
        let script = Script::default();
        let route = route("{ param: since, from: 'max:/u', deleted: /gone }");
        let state = DeltaState::default();
        let mut held = None;
        script.then("/tasks?q=1", json!([{"id": 1, "u": 5}, {"id": 2, "u": 9, "gone": true}]));
        let Got::Fresh { repr, .. } = poll(&script, &route, &state, &mut held).await else { panic!() };
        assert_eq!(repr.value.as_ref(), &json!([{"id": 1, "u": 5}]));
        // The tombstone's value counts: the next delta asks from it.
        script.then("/tasks?q=1&since=9", json!([]));
        assert!(matches!(poll(&script, &route, &state, &mut held).await, Got::NotModified { .. }));
        assert_eq!(script.asked(), ["/tasks?q=1", "/tasks?q=1&since=9"]);
    }
}
