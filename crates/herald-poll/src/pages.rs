//! Paginated collections (`poll.pages`, spec section 3): every page of a collection is fetched,
//! each conditionally with its own validators, and the pages' items merged into one JSON array
//! before change detection. So a change on page 7 is one item event, an item pushed onto the
//! next page by an insertion is no event at all, and a collection with more pages than
//! `max_pages` is a poll error, never a truncated list (which would look like mass deletion).

use std::sync::Mutex;

use bytes::Bytes;
use herald_config::{NextPage, Pages};
use serde_json::Value;

use crate::client::{Answer, Fetch, Request};
use crate::PollError;

/// One page as last fetched: where it was, its validators, its items and where it pointed.
#[derive(Default)]
pub(crate) struct Page {
    target: String,
    etag: Option<String>,
    last_modified: Option<String>,
    items: Vec<Value>,
    next: Option<String>,
}

/// The pages of a watch's last whole poll.
#[derive(Default)]
pub(crate) struct PageCache(Mutex<Vec<Page>>);

/// Polls every page of the collection `first` names. `NotModified` when every page answered
/// 304; the merged array otherwise; a failing page's answer as it is.
pub(crate) async fn fetch(
    fetch: &dyn Fetch,
    cfg: &Pages,
    cache: &PageCache,
    first: Request<'_>,
) -> Result<Answer, PollError> {
    // Taken, not copied: a page answering 304 moves its items into this poll's list. After a
    // failed poll the next one asks every page afresh.
    let mut known = std::mem::take(&mut *cache.0.lock().unwrap());
    let known_pages = known.len();
    let mut pages: Vec<Page> = Vec::new();
    let (mut unchanged, mut max_age) = (true, None);
    let mut target = first.target.to_string();
    loop {
        if pages.len() == cfg.max_pages {
            return Err(PollError::TooManyPages { max: cfg.max_pages });
        }
        let before = known.iter().position(|p| p.target == target);
        let validators = before.map(|i| &known[i]);
        let answer = fetch
            .fetch(Request {
                target: &target,
                credentials: first.credentials,
                withhold: first.withhold,
                etag: validators.and_then(|p| p.etag.as_deref()),
                last_modified: validators.and_then(|p| p.last_modified.as_deref()),
            })
            .await?;
        let page = match answer {
            Answer::NotModified { max_age: age } => {
                let Some(i) = before else { return Ok(Answer::NotModified { max_age: age }) };
                max_age = max_age.or(age);
                std::mem::take(&mut known[i])
            }
            Answer::Ok { body, etag, last_modified, max_age: age, link, .. } => {
                unchanged = false;
                max_age = max_age.or(age);
                let invalid = |why: String| PollError::InvalidPage { target: target.clone(), why };
                let mut doc: Value = serde_json::from_slice(&body).map_err(|e| invalid(format!("not JSON: {e}")))?;
                let next = next_target(fetch, cfg, &target, &doc, link.as_deref());
                let items = match doc.pointer_mut(&cfg.items).map(Value::take) {
                    Some(Value::Array(items)) => items,
                    _ => return Err(invalid(format!("no array at {:?}", cfg.items))),
                };
                Page { target: target.clone(), etag, last_modified, items, next }
            }
            status @ Answer::Status { .. } => return Ok(status),
        };
        let next = page.next.clone();
        pages.push(page);
        match next {
            // A page naming one seen already would loop.
            Some(next) if pages.iter().all(|p| p.target != next) => target = next,
            _ => break,
        }
    }
    let merged = (!(unchanged && known_pages == pages.len())).then(|| {
        let items: Vec<&Value> = pages.iter().flat_map(|p| &p.items).collect();
        serde_json::to_vec(&items).expect("values serialize")
    });
    *cache.0.lock().unwrap() = pages;
    let Some(body) = merged else { return Ok(Answer::NotModified { max_age }) };
    Ok(Answer::Ok {
        body: Bytes::from(body),
        content_type: Some("application/json".into()),
        etag: None,
        last_modified: None,
        max_age,
        link: None,
    })
}

/// Where the page at `target` says the next one is: its `Link: <…>; rel="next"`, or the URL or
/// cursor at the configured pointer.
fn next_target(fetch: &dyn Fetch, cfg: &Pages, target: &str, doc: &Value, link: Option<&str>) -> Option<String> {
    let named = match &cfg.next {
        NextPage::Link => next_link(link?)?,
        NextPage::Pointer(pointer) => match doc.pointer(pointer)? {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) if cfg.cursor_param.is_some() => n.to_string(),
            _ => return None,
        },
    };
    Some(match &cfg.cursor_param {
        Some(param) => with_param(target, param, &named),
        None => resolve(fetch, target, &named),
    })
}

/// The URL of the `rel="next"` link in a Link field value (RFC 8288).
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|link| {
        let (url, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        let next = params.split(';').any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|rel| rel.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
        });
        next.then(|| url.to_string())
    })
}

/// A named next page as a target: absolute URLs and absolute paths as they are (under the
/// upstream URL), a query alone on the current path.
fn resolve(fetch: &dyn Fetch, current: &str, named: &str) -> String {
    if named.starts_with('?') {
        let path = current.split('?').next().unwrap_or(current);
        return format!("{path}{named}");
    }
    fetch.target_of(named)
}

/// `target` with the query parameter `param` set to `value` (percent-encoded).
fn with_param(target: &str, param: &str, value: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut pairs: Vec<String> =
        query.split('&').filter(|p| !p.is_empty() && p.split('=').next() != Some(param)).map(str::to_string).collect();
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    pairs.push(format!("{param}={encoded}"));
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        let value = r#"</tasks?page=1>; rel="first", </tasks?page=3>; rel="next", </tasks?page=9>; rel=last"#;
        assert_eq!(next_link(value).as_deref(), Some("/tasks?page=3"));
        assert_eq!(
            next_link(r#"<https://api.example/v1/t?c=x>; rel="prev next""#).as_deref(),
            Some("https://api.example/v1/t?c=x")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
    }

    #[test]
    fn a_cursor_replaces_its_parameter_and_keeps_the_others() {
        assert_eq!(with_param("/tasks?state=open&cursor=a", "cursor", "b c/d"), "/tasks?state=open&cursor=b%20c%2Fd");
        assert_eq!(with_param("/tasks", "after", "42"), "/tasks?after=42");
    }

    #[test]
    fn next_urls_are_targets_under_the_upstream_url() {
        use crate::client::absolute_path;
        assert_eq!(absolute_path("https://api.example/v1/tasks?page=2", "/v1"), "/tasks?page=2");
        assert_eq!(absolute_path("/v1/tasks?page=2", "/v1"), "/tasks?page=2");
        assert_eq!(absolute_path("/v10/tasks", "/v1"), "/v10/tasks");
        assert_eq!(absolute_path("http://h:1/tasks", ""), "/tasks");
    }
}
