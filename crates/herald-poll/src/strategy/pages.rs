//! Paginated collections (`poll.pages`, spec section 3): every page of a collection is fetched,
//! each conditionally with its own validators, and the pages' items merged into one JSON array
//! before change detection. So a change on page 7 is one item event, an item pushed onto the
//! next page by an insertion is no event at all, and a collection with more pages than
//! `max_pages` is a poll error, never a truncated list (which would look like mass deletion).

use std::sync::Mutex;

use bytes::Bytes;
use herald_config::{NextPage, Pages};
use reqwest::Url;
use serde_json::Value;

use super::budget::Budget;
use crate::client::{Answer, Fetch, Request};
use crate::PollError;

/// One page as last fetched: where it was, its validators, its items and where it pointed.
#[derive(Default)]
pub(crate) struct Page {
    target: String,
    etag: Option<String>,
    last_modified: Option<String>,
    items: Vec<Value>,
    /// The size of the body the items came in, counted against `upstream.max_body`.
    bytes: u64,
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
    budget: &mut Budget<'_>,
) -> Result<Answer, PollError> {
    // Taken, not copied: a page answering 304 moves its items into this poll's list. After a
    // failed poll the next one asks every page afresh.
    let mut known = std::mem::take(&mut *cache.0.lock().unwrap());
    let known_pages = known.len();
    let mut pages: Vec<Page> = Vec::new();
    let (mut unchanged, mut max_age, mut bytes) = (true, None, 0);
    let mut target = first.target.to_string();
    loop {
        if pages.len() == cfg.max_pages {
            return Err(PollError::TooManyPages { max: cfg.max_pages });
        }
        let before = known.iter().position(|p| p.target == target);
        let validators = before.map(|i| &known[i]);
        // The previous page's permit is back before this one's is asked for.
        let permit = budget.permit().await;
        let answer = fetch
            .fetch(Request {
                target: &target,
                credentials: first.credentials,
                withhold: first.withhold,
                etag: validators.and_then(|p| p.etag.as_deref()),
                last_modified: validators.and_then(|p| p.last_modified.as_deref()),
                capture: None,
            })
            .await?;
        drop(permit);
        let page = match answer {
            Answer::NotModified { max_age: age, etag, last_modified, link } => {
                let Some(i) = before else {
                    return Ok(Answer::NotModified { max_age: age, etag: None, last_modified: None, link: None });
                };
                max_age = max_age.or(age);
                let mut page = std::mem::take(&mut known[i]);
                // What the 304 says replaces what is stored (RFC 9111 section 4.3.4): an upstream
                // that pins its page links to a version names the current one here.
                page.etag = etag.or(page.etag);
                page.last_modified = last_modified.or(page.last_modified);
                if let (NextPage::Link, Some(link)) = (&cfg.next, link) {
                    page.next = next_page(fetch, cfg, &target, None, Some(&link))?;
                }
                page
            }
            Answer::Ok { body, etag, last_modified, max_age: age, link, .. } => {
                unchanged = false;
                max_age = max_age.or(age);
                let invalid = |why: String| PollError::InvalidPage { path: path_of(&target).into(), why };
                let mut doc: Value = serde_json::from_slice(&body).map_err(|e| invalid(format!("not JSON: {e}")))?;
                let next = next_page(fetch, cfg, &target, Some(&doc), link.as_deref())?;
                let items = match doc.pointer_mut(&cfg.items).map(Value::take) {
                    Some(Value::Array(items)) => items,
                    _ => return Err(invalid(format!("no array at {:?}", cfg.items))),
                };
                Page { target: target.clone(), etag, last_modified, items, bytes: body.len() as u64, next }
            }
            status @ Answer::Status { .. } => return Ok(status),
        };
        bytes += page.bytes;
        if bytes > fetch.max_body() {
            return Err(PollError::PagesTooLarge { limit: fetch.max_body() });
        }
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
    let Some(body) = merged else {
        return Ok(Answer::NotModified { max_age, etag: None, last_modified: None, link: None });
    };
    Ok(Answer::Ok {
        body: Bytes::from(body),
        content_type: Some("application/json".into()),
        etag: None,
        last_modified: None,
        max_age,
        link: None,
        captured: None,
    })
}

/// The target of the page after the one at `target`, as its `Link: <…>; rel="next"` or the
/// URL or cursor at the configured pointer of its body `doc` names it; `None` on the last page.
fn next_page(
    fetch: &dyn Fetch,
    cfg: &Pages,
    target: &str,
    doc: Option<&Value>,
    link: Option<&str>,
) -> Result<Option<String>, PollError> {
    let invalid = |why: String| PollError::InvalidPage { path: path_of(target).into(), why };
    let named = match &cfg.next {
        NextPage::Link => link.map(next_link).transpose().map_err(invalid)?.flatten(),
        NextPage::Pointer(pointer) => match doc.and_then(|doc| doc.pointer(pointer)) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) if cfg.cursor_param.is_some() => Some(n.to_string()),
            _ => None,
        },
    };
    let Some(named) = named else { return Ok(None) };
    match &cfg.cursor_param {
        Some(param) => Ok(Some(with_param(target, param, &named))),
        None => resolve(fetch.base_url(), target, &named).map(Some).map_err(invalid),
    }
}

/// The URL of the `rel="next"` link in a Link field value (RFC 8288 section 3): links are
/// `<URI-Reference>` with `;`-separated parameters, separated by commas outside `<…>` and quoted
/// strings; whitespace may surround `=`, and names are case-insensitive. `Err` when the value
/// does not parse: a page whose next link cannot be read must not pass for the last one (the
/// items of the pages after it would look deleted).
fn next_link(value: &str) -> Result<Option<String>, String> {
    let malformed = || format!("its Link field does not parse (RFC 8288): {:?}", truncated(value));
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Ok(None);
        }
        let (url, after) = rest.strip_prefix('<').and_then(|r| r.split_once('>')).ok_or_else(malformed)?;
        rest = after;
        let mut next = false;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            let Some(param) = rest.strip_prefix(';') else { break };
            let param = param.trim_start_matches([' ', '\t']);
            let name_end = param.find(['=', ';', ',', ' ', '\t']).unwrap_or(param.len());
            let (name, after) = param.split_at(name_end);
            let after = after.trim_start_matches([' ', '\t']);
            let (value, after) = match after.strip_prefix('=') {
                None => (String::new(), after),
                Some(v) => param_value(v.trim_start_matches([' ', '\t'])).ok_or_else(malformed)?,
            };
            rest = after;
            next |= name.eq_ignore_ascii_case("rel")
                && value.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next"));
        }
        if next {
            return Ok(Some(url.to_string()));
        }
        if !(rest.is_empty() || rest.starts_with(',')) {
            return Err(malformed());
        }
    }
}

/// A link parameter's value, a token or a quoted string (unescaped), and what follows it.
fn param_value(s: &str) -> Option<(String, &str)> {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s.find([';', ',', ' ', '\t']).unwrap_or(s.len());
        return Some((s[..end].to_string(), &s[end..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &quoted[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// At most 100 bytes of `s` (on a character boundary), for a message.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(100);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The target of the URL reference `named`, resolved against the URL of the page at `current`
/// (RFC 3986 section 5), when it is on the upstream: the same scheme, host and port as `base`,
/// no userinfo, a path under `base`'s. Anything else is refused, never requested: a page must
/// not send herald's service credential, or a subscriber's own, to another host.
fn resolve(base: &str, current: &str, named: &str) -> Result<String, String> {
    let base = Url::parse(base).map_err(|e| format!("upstream.url: {e}"))?;
    let page = Url::parse(&format!("{base}{current}", base = base.as_str().trim_end_matches('/')))
        .map_err(|e| format!("the page's URL: {e}"))?;
    let next = page.join(named).map_err(|e| format!("its next page is not a URL reference: {e}"))?;
    if next.scheme() != base.scheme()
        || next.host() != base.host()
        || next.port_or_known_default() != base.port_or_known_default()
        || !next.username().is_empty()
        || next.password().is_some()
    {
        return Err("its next page is not on the upstream (another scheme, host or port, or userinfo)".into());
    }
    let base_path = base.path().trim_end_matches('/');
    let path = match next.path().strip_prefix(base_path) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return Err("its next page is outside upstream.url's path".into()),
    };
    Ok(match next.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    })
}

/// A target's path, without the query (which may carry what is not ours to show).
pub(crate) fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// `target` with the query parameter `param` set to `value` (percent-encoded).
pub(crate) fn with_param(target: &str, param: &str, value: &str) -> String {
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
    use crate::client::FetchFuture;
    use crate::limit::{Limiter, Priority};
    use std::collections::{HashMap, VecDeque};

    /// Answers each target from a queue of its own (404 when it has none left) and records the
    /// targets asked.
    #[derive(Default)]
    struct Pager {
        answers: Mutex<HashMap<String, VecDeque<Answer>>>,
        asked: Mutex<Vec<String>>,
    }

    impl Pager {
        fn then(&self, target: &str, answer: Answer) -> &Self {
            self.answers.lock().unwrap().entry(target.into()).or_default().push_back(answer);
            self
        }
    }

    impl Fetch for Pager {
        fn fetch<'a>(&'a self, req: Request<'a>) -> FetchFuture<'a> {
            self.asked.lock().unwrap().push(req.target.to_string());
            let answer = self.answers.lock().unwrap().get_mut(req.target).and_then(VecDeque::pop_front);
            let answer = answer.unwrap_or(Answer::Status {
                status: 404,
                content_type: None,
                body: Bytes::new(),
                retry_after: None,
            });
            Box::pin(async move { Ok(answer) })
        }

        fn max_body(&self) -> u64 {
            1000
        }
    }

    fn page(items: &str, etag: &str, next: Option<&str>) -> Answer {
        Answer::Ok {
            body: Bytes::from(format!(r#"{{"items":{items}}}"#)),
            content_type: None,
            etag: Some(etag.into()),
            last_modified: None,
            max_age: None,
            link: next.map(|n| format!("<{n}>; rel=\"next\"")),
            captured: None,
        }
    }

    fn by_link() -> Pages {
        Pages { next: NextPage::Link, cursor_param: None, items: "/items".into(), max_pages: 10 }
    }

    async fn poll(pager: &Pager, cache: &PageCache, target: &str) -> Result<Answer, PollError> {
        let limiter = Limiter::new(100.0, 4);
        let first = limiter.acquire(Priority::Subscribed).await;
        fetch(
            pager,
            &by_link(),
            cache,
            Request { target, ..Request::default() },
            &mut Budget { limiter: &limiter, priority: Priority::Subscribed, first: Some(first) },
        )
        .await
    }

    fn items(answer: Result<Answer, PollError>) -> String {
        match answer {
            Ok(Answer::Ok { body, .. }) => String::from_utf8(body.to_vec()).unwrap(),
            other => panic!("expected a merged list, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_304_names_the_next_page_afresh() {
        let (pager, cache) = (Pager::default(), PageCache::default());
        pager
            .then("/t", page("[1]", "\"p1\"", Some("/t?page=2&v=1")))
            .then("/t?page=2&v=1", page("[2]", "\"a\"", None));
        assert_eq!(items(poll(&pager, &cache, "/t").await), "[1,2]");
        // Page 2 changed: page 1 is the same, but its link pins the new version.
        pager.then(
            "/t",
            Answer::NotModified {
                max_age: None,
                etag: Some("\"p1\"".into()),
                last_modified: None,
                link: Some("</t?page=2&v=2>; rel=\"next\"".into()),
            },
        );
        pager.then("/t?page=2&v=2", page("[3]", "\"b\"", None));
        assert_eq!(items(poll(&pager, &cache, "/t").await), "[1,3]");
        assert_eq!(pager.asked.lock().unwrap().last().map(String::as_str), Some("/t?page=2&v=2"));
    }

    #[tokio::test]
    async fn a_next_page_off_the_upstream_is_an_error_never_a_request() {
        for next in ["//evil.example/t", "http://upstream.test@evil.example/t", "http://evil.example/t"] {
            let (pager, cache) = (Pager::default(), PageCache::default());
            pager.then("/t?token=s3cret", page("[1]", "\"p1\"", Some(next)));
            let err = poll(&pager, &cache, "/t?token=s3cret").await.expect_err(next);
            assert!(matches!(err, PollError::InvalidPage { .. }), "{next}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{next}: the query is not shown: {err}");
            assert_eq!(*pager.asked.lock().unwrap(), ["/t?token=s3cret"], "{next}: nothing else asked");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_page_takes_a_permit() {
        let (pager, cache) = (Pager::default(), PageCache::default());
        pager.then("/t", page("[1]", "\"1\"", Some("/t?page=2")));
        pager.then("/t?page=2", page("[2]", "\"2\"", Some("/t?page=3")));
        pager.then("/t?page=3", page("[3]", "\"3\"", None));
        // One poll a second, and one slot: the first page's permit in hand, the next two pages
        // take two seconds (and the slot is given back between pages).
        let limiter = Limiter::new(1.0, 1);
        let first = limiter.acquire(Priority::Subscribed).await;
        let start = tokio::time::Instant::now();
        let mut budget = Budget { limiter: &limiter, priority: Priority::Subscribed, first: Some(first) };
        let merged =
            fetch(&pager, &by_link(), &cache, Request { target: "/t", ..Request::default() }, &mut budget).await;
        assert_eq!(items(merged), "[1,2,3]");
        assert_eq!(start.elapsed().as_secs(), 2);
    }

    #[tokio::test]
    async fn the_merged_pages_are_held_to_max_body() {
        let (pager, cache) = (Pager::default(), PageCache::default());
        let big = format!("[\"{}\"]", "x".repeat(400));
        pager.then("/t", page(&big, "\"1\"", Some("/t?page=2")));
        pager.then("/t?page=2", page(&big, "\"2\"", Some("/t?page=3")));
        pager.then("/t?page=3", page(&big, "\"3\"", None));
        let err = poll(&pager, &cache, "/t").await.expect_err("three pages of 400 bytes");
        assert!(matches!(err, PollError::PagesTooLarge { limit: 1000 }), "{err}");
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let next = |value: &str| next_link(value).unwrap();
        let value = r#"</tasks?page=1>; rel="first", </tasks?page=3>; rel="next", </tasks?page=9>; rel=last"#;
        assert_eq!(next(value).as_deref(), Some("/tasks?page=3"));
        assert_eq!(
            next(r#"<https://api.example/v1/t?c=x>; rel="prev next""#).as_deref(),
            Some("https://api.example/v1/t?c=x")
        );
        assert_eq!(next(r#"</a>; rel="prev""#), None);
        assert_eq!(
            next(r##"</a>; title="a, b; rel=next"; rel="prev", </b>; anchor="#x"; rel=next"##).as_deref(),
            Some("/b")
        );
        assert_eq!(next(""), None);
    }

    #[test]
    fn a_link_field_that_does_not_parse_is_an_error_not_the_last_page() {
        for value in ["</a; rel=next", "/a; rel=next", r#"</a>; rel="next"#, "</a> junk; rel=next"] {
            assert!(next_link(value).is_err(), "{value}");
        }
    }

    // A comma is legal inside a URI (RFC 3986 sub-delims), e.g. a cursor or a list of ids.
    #[test]
    fn a_next_link_with_a_comma_in_its_url_is_found() {
        let next = |value: &str| next_link(value).unwrap();
        assert_eq!(next(r#"</tasks?ids=1,2&page=2>; rel="next""#).as_deref(), Some("/tasks?ids=1,2&page=2"));
        assert_eq!(
            next(r#"</tasks?page=1>; rel="prev", </tasks?after=a,b>; rel="next""#).as_deref(),
            Some("/tasks?after=a,b")
        );
    }

    // RFC 8288 section 3, `link-param = token BWS [ "=" BWS ( token / quoted-string ) ]`.
    #[test]
    fn a_next_link_with_whitespace_around_the_equals_sign_is_found() {
        assert_eq!(next_link(r#"</tasks?page=2>; rel = "next""#).unwrap().as_deref(), Some("/tasks?page=2"));
        assert_eq!(next_link(r#"</tasks?page=2>; REL="next""#).unwrap().as_deref(), Some("/tasks?page=2"));
    }

    #[tokio::test]
    async fn a_collection_is_never_cut_short_by_a_comma_in_its_next_link() {
        let (pager, cache) = (Pager::default(), PageCache::default());
        pager.then("/t", page("[1]", "\"1\"", Some("/t?after=a,b")));
        pager.then("/t?after=a,b", page("[2]", "\"2\"", None));
        assert_eq!(items(poll(&pager, &cache, "/t").await), "[1,2]", "asked: {:?}", pager.asked.lock().unwrap());
    }

    #[test]
    fn a_cursor_replaces_its_parameter_and_keeps_the_others() {
        assert_eq!(with_param("/tasks?state=open&cursor=a", "cursor", "b c/d"), "/tasks?state=open&cursor=b%20c%2Fd");
        assert_eq!(with_param("/tasks", "after", "42"), "/tasks?after=42");
    }

    #[test]
    fn next_pages_resolve_against_the_page_and_stay_on_the_upstream() {
        let ok = |base: &str, current: &str, named: &str| resolve(base, current, named).unwrap();
        assert_eq!(ok("http://h:1", "/tasks?page=1", "/tasks?page=2"), "/tasks?page=2");
        assert_eq!(ok("http://h:1", "/tasks?page=1", "?page=2"), "/tasks?page=2");
        assert_eq!(ok("http://h:1/v1", "/tasks?page=1", "http://h:1/v1/tasks?page=2"), "/tasks?page=2");
        assert_eq!(ok("http://h:1/v1", "/tasks/all?page=1", "more?page=2"), "/tasks/more?page=2");
        assert_eq!(ok("https://api.example/v1", "/tasks", "https://API.example:443/v1/tasks?c=x"), "/tasks?c=x");
        assert_eq!(ok("http://[::1]:8081", "/tasks", "http://[0:0:0:0:0:0:0:1]:8081/tasks?page=2"), "/tasks?page=2");
        assert!(resolve("http://[::1]:8081", "/tasks", "http://[::2]:8081/tasks").is_err());
        assert!(resolve("http://h", "/tasks", "http://h:8080/tasks").is_err());
        assert_eq!(ok("http://h", "/tasks", "http://h:80/tasks?page=2"), "/tasks?page=2");
        // Relative references stay relative: `@host` is a path segment on the upstream.
        assert_eq!(ok("http://h:1", "/paged/tasks", "@evil.example:80/x"), "/paged/@evil.example:80/x");
        for named in [
            "//evil.example/tasks",
            "http://evil.example/tasks",
            "http://h:2/tasks",
            "https://h:1/tasks",
            "http://user@h:1/tasks",
            "http://h:1@evil.example:80/x",
            "http://h:1:pw@evil.example/x",
            "ftp://h:1/tasks",
            "javascript:alert(1)",
        ] {
            assert!(resolve("http://h:1", "/tasks", named).is_err(), "{named} must be refused");
        }
        // Out of the upstream's path, by name or by dot segments.
        assert!(resolve("http://h:1/v1", "/tasks", "/v10/tasks").is_err());
        assert!(resolve("http://h:1/v1", "/tasks", "/admin").is_err());
        assert!(resolve("http://h:1/v1", "/tasks", "../admin").is_err());
        assert!(resolve("http://h:1/v1", "/tasks", "/v1/../admin").is_err());
    }
}
