//! Paginated collections end to end (spec section 3, `poll.pages`): every page followed and
//! merged before change detection, each polled conditionally; more pages than `max_pages` is a
//! poll error that keeps the last whole representation.

use herald_testkit::LegacyApi;
use herald_tests::*;

/// `/paged/tasks` as one collection of task events, its pages followed as `follow` says.
fn routes(follow: &str, max_pages: usize) -> String {
    format!(
        "routes:\n  - name: paged\n    path: /paged/tasks\n    access: public\n    \
         poll: {{interval: 200ms, min_interval: 200ms, adaptive: false, jitter: 0, \
         pages: {{{follow}, items: /items, max_pages: {max_pages}}}}}\n    \
         events: {{format: collection, type: task, collection: {{id: /id}}}}\n"
    )
}

/// A task event's name and the task it is about.
fn item_event(ev: &SseEvent) -> (String, Option<String>) {
    (ev.event.clone(), ev.json()["resourceId"].as_str().map(str::to_string))
}

/// The test API with `n` tasks (it starts with three), two to a page.
async fn with_tasks(n: usize) -> (LegacyApi, std::net::SocketAddr) {
    let (api, upstream) = start_api().await;
    for i in 3..n {
        api.add_task(&format!("task {i}"));
    }
    (api, upstream)
}

#[tokio::test]
async fn five_pages_are_one_collection_and_a_change_on_page_four_is_one_event() {
    // By Link, by the next URL in the body, by a cursor in the body.
    for next in ["next: link", "next: /next", "next: /cursor, cursor_param: page"] {
        let (api, upstream) = with_tasks(10).await;
        let gw = Gateway::start(&config(upstream, &routes(next, 20))).await;
        let mut stream = gw.subscribe("/paged/tasks/event-stream", &[]).await;
        let snapshot = stream.next_within(SOON).await.expect("snapshot");
        assert_eq!(snapshot.json(), api.tasks(), "{next}: every page, in order");
        // Unchanged polls ask each page conditionally.
        eventually("every page answered 304", || api.stats("/paged/tasks").not_modified >= 5).await;

        // The seventh task is on page four.
        let seventh = api.tasks()[6]["id"].as_str().unwrap().to_string();
        api.retitle(&seventh, "changed on page four");
        let ev = stream.next_within(SOON).await.expect("the change");
        assert_eq!(item_event(&ev), ("task.updated".into(), Some(seventh.clone())), "{next}");
        // Then the next change: nothing came between (no event for an unchanged page).
        let added = api.add_task("the eleventh");
        let ev = stream.next_within(SOON).await.expect("the next change");
        assert_eq!(item_event(&ev), ("task.created".into(), Some(added.clone())), "{next}");
    }
}

#[tokio::test]
async fn an_item_pushed_onto_the_next_page_is_not_deleted_and_created() {
    let (api, upstream) = with_tasks(10).await;
    let gw = Gateway::start(&config(upstream, &routes("next: link", 20))).await;
    let mut stream = gw.subscribe("/paged/tasks/event-stream", &[]).await;
    stream.next_within(SOON).await.expect("snapshot");
    // Inserted at the start of page two: every later item moves one place, some onto the next page.
    let inserted = api.insert_task(2, "inserted on page two");
    let ev = stream.next_within(SOON).await.expect("the insertion");
    assert_eq!(item_event(&ev), ("task.created".into(), Some(inserted.clone())));
    let marker = api.add_task("marker");
    let ev = stream.next_within(SOON).await.expect("the marker");
    assert_eq!(
        item_event(&ev),
        ("task.created".into(), Some(marker.clone())),
        "nothing between the insertion and the marker: no delete/create for the items that moved"
    );
}

#[tokio::test]
async fn more_pages_than_max_pages_is_a_poll_error_that_keeps_the_last_whole_list() {
    let (api, upstream) = with_tasks(6).await;
    let gw = Gateway::start(&config(upstream, &routes("next: link", 3))).await;
    let mut stream = gw.subscribe("/paged/tasks/event-stream", &[]).await;
    let whole = stream.next_within(SOON).await.expect("snapshot").json();
    assert_eq!(whole.as_array().map(Vec::len), Some(6));

    api.add_task("a seventh: a fourth page");
    let status = stream.next_within(SOON).await.expect("a status event");
    assert_eq!(status.event, "upstream-status", "{}", status.data);
    assert!(status.data.contains("max_pages"), "{}", status.data);
    // A new subscriber gets the last whole list, never a truncated one.
    let mut late = gw.subscribe("/paged/tasks/event-stream", &[]).await;
    assert_eq!(late.next_within(SOON).await.expect("snapshot").json(), whole);
}

/// A listener on another port that records every request it gets and answers with a page of
/// its own: where a next page must never lead.
async fn foreign_host() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut head = vec![0; 8192];
            let n = conn.read(&mut head).await.unwrap_or(0);
            record.lock().unwrap().push(String::from_utf8_lossy(&head[..n]).into_owned());
            let body = r#"{"items":[{"id":"evil","title":"injected"}]}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_next_page_on_another_host_is_a_poll_error_and_no_credential_leaves() {
    let (port, foreign) = foreign_host().await;
    // The service credential on a public route; a subscriber's own on a per-subscriber one.
    for (access, headers, token) in [
        ("public", "  headers:\n    authorization: Bearer service-key\n", None),
        ("per-subscriber\n    vary: [authorization]", "", Some("Bearer alice")),
    ] {
        let (api, upstream) = with_tasks(4).await;
        let yaml = config(upstream, "").replace("  timeout: 2s\n", &format!("  timeout: 2s\n{headers}"))
            + &format!(
                "routes:\n  - name: paged\n    path: /paged/tasks\n    access: {access}\n    \
                 poll: {{interval: 200ms, min_interval: 200ms, max_interval: 400ms, adaptive: false, jitter: 0, \
                 pages: {{next: link, items: /items, max_pages: 20}}}}\n    \
                 events: {{format: collection, type: task, collection: {{id: /id}}}}\n"
            );
        let gw = Gateway::start(&yaml).await;
        let auth: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
        let mut stream = gw.subscribe("/paged/tasks/event-stream", &auth).await;
        stream.next_within(SOON).await.expect("snapshot");
        for next in [
            format!("//127.0.0.1:{port}/x"),
            format!("http://127.0.0.1:{port}/x"),
            format!("http://{upstream}@127.0.0.1:{port}/x"),
            // A relative reference: a path on the upstream (which answers 404), not userinfo.
            format!("@127.0.0.1:{port}/x"),
        ] {
            api.set_page_links(herald_testkit::PageLinks::Fixed(next.clone()));
            let status = stream.next_within(SOON).await.expect("a status event");
            assert_eq!(status.event, "upstream-status", "{access} {next}: {}", status.data);
            assert_eq!(status.json()["ok"], false, "{access} {next}: {}", status.data);
            assert!(!status.data.contains(&port.to_string()), "{access} {next}: {}", status.data);
            api.set_page_links(herald_testkit::PageLinks::Plain);
            let recovered = stream.next_within(SOON).await.expect("recovered");
            assert_eq!((recovered.event.as_str(), recovered.json()["ok"].as_bool()), ("upstream-status", Some(true)));
        }
        assert!(
            foreign.lock().unwrap().is_empty(),
            "{access}: nothing sent to another host: {:?}",
            foreign.lock().unwrap()
        );
        let asked: Vec<_> = api.seen_all().into_iter().map(|r| r.target).collect();
        assert!(
            asked.contains(&format!("/paged/@127.0.0.1:{port}/x")),
            "{access}: the relative one asked of the upstream"
        );
    }
}

#[tokio::test]
async fn a_page_answering_304_names_the_current_next_page() {
    let (api, upstream) = with_tasks(6).await;
    api.set_page_links(herald_testkit::PageLinks::Versioned);
    let gw = Gateway::start(&config(upstream, &routes("next: link", 20))).await;
    let mut stream = gw.subscribe("/paged/tasks/event-stream", &[]).await;
    assert_eq!(stream.next_within(SOON).await.expect("snapshot").json(), api.tasks());
    eventually("page one answered 304", || api.stats("/paged/tasks").not_modified >= 3).await;
    // The fifth task is on page three: page one is unchanged, its Link names the new version.
    let fifth = api.tasks()[4]["id"].as_str().unwrap().to_string();
    api.retitle(&fifth, "changed on page three");
    let ev = stream.next_within(SOON).await.expect("the change");
    assert_eq!(item_event(&ev), ("task.updated".into(), Some(fifth)));
}
