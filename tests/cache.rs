//! Legacy pollers answered from the watch (spec section 8).

use std::time::Duration;

use herald_tests::*;

fn routes(extra: &str) -> String {
    format!(
        "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll:\n      interval: 1s\n      min_interval: 1s\n      adaptive: false\n      jitter: 0\n{extra}  - name: mine\n    path: /me/tasks\n    vary: [authorization]\n    poll:\n      interval: 1s\n      min_interval: 1s\n      adaptive: false\n"
    )
}

#[tokio::test]
async fn many_pollers_cost_the_upstream_one_poll_per_interval() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &routes(""))).await;
    let client = reqwest::Client::new();
    let before = api.stats("/tasks").requests;

    let first = client.get(gw.url("/tasks")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-herald-cache"], "miss");
    assert_eq!(first.headers()["content-type"], "application/json");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert!(first.headers().contains_key("age"));
    let body: serde_json::Value = serde_json::from_str(&first.text().await.unwrap()).unwrap();
    assert_eq!(body, api.tasks());

    // 200 pollers at once, twice.
    for _ in 0..2 {
        let answers = futures(&client, &gw.url("/tasks"), 200).await;
        assert!(answers.iter().all(|(status, cache)| *status == 200 && cache == "hit"), "{answers:?}");
    }
    // The first poll, and at most the interval's polls since: never one per poller.
    assert!(api.stats("/tasks").requests - before <= 3, "{:?}", api.stats("/tasks"));
    assert!(gw.metric("herald_cache_requests_total{result=\"hit\",route=\"tasks\"}").await >= 400.0);

    // If-None-Match with herald's ETag: 304, no body.
    let again = client.get(gw.url("/tasks")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    // A change upstream reaches pollers within an interval, with a new ETag.
    api.add_task("new");
    let mut fresh = None;
    for _ in 0..100 {
        let r = client.get(gw.url("/tasks")).header("if-none-match", &etag).send().await.unwrap();
        if r.status() == 200 {
            fresh = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = fresh.expect("the change arrives");
    assert_ne!(fresh.headers()["etag"], etag.as_str());
    let body: serde_json::Value = serde_json::from_str(&fresh.text().await.unwrap()).unwrap();
    assert_eq!(body, api.tasks());
    // HEAD: the same headers, no body.
    let head = client.head(gw.url("/tasks")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-herald-cache"], "hit");
}

async fn futures(client: &reqwest::Client, url: &str, n: usize) -> Vec<(u16, String)> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.headers()["x-herald-cache"].to_str().unwrap().to_string())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn alices_cached_body_is_never_served_to_bob() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &routes(""))).await;
    let client = reqwest::Client::new();
    let get = |token: &'static str| client.get(gw.url("/me/tasks")).header("authorization", token).send();
    let alice = get("Bearer alice").await.unwrap().text().await.unwrap();
    assert!(alice.contains("Alice's secret plan"));
    let alice_again = get("Bearer alice").await.unwrap();
    assert_eq!(alice_again.headers()["x-herald-cache"], "hit");
    let bob = get("Bearer bob").await.unwrap();
    assert_eq!(bob.headers()["x-herald-cache"], "miss", "bob gets his own watch");
    let bob = bob.text().await.unwrap();
    assert!(bob.contains("Bob's birthday list") && !bob.contains("Alice"), "{bob}");
    let mallory = get("Bearer mallory").await.unwrap();
    assert_eq!(mallory.status(), 401, "the upstream's own refusal");
    assert_eq!(api.stats("/me/tasks").requests, 3, "alice, bob and mallory once each");
}

#[tokio::test]
async fn upstream_errors_are_passed_on_not_cached() {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, &routes(""))
        .replace("interval: 1s\n      min_interval: 1s\n      adaptive: false\n      jitter: 0\n", "interval: 100ms\n      min_interval: 100ms\n      max_interval: 200ms\n      adaptive: false\n      jitter: 0\n");
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(gw.url("/tasks")).send().await.unwrap().status(), 200);
    api.fail_next("/tasks", std::iter::repeat_n(Fault::Status(503, None), 8));
    // Once the watch sees the failure, pollers get the upstream's answer, not the old copy.
    let mut seen_503 = false;
    for _ in 0..100 {
        let r = client.get(gw.url("/tasks")).send().await.unwrap();
        if r.status() == 503 {
            assert!(!r.headers().contains_key("x-herald-cache"), "passed through");
            seen_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_503);
    assert!(gw.metric("herald_cache_requests_total{result=\"bypass\",route=\"tasks\"}").await >= 1.0);
    // A route with cache: false always passes through.
    let gw2 = Gateway::start(&config(upstream, &routes("    cache: false\n"))).await;
    let r = client.get(gw2.url("/tasks")).send().await.unwrap();
    assert!(!r.headers().contains_key("x-herald-cache"));
    assert_eq!(r.headers()["via"], "1.1 herald");
}

/// A long poll held on a per-subscriber watch whose credential the upstream then refuses: the
/// watch is revoked (its streams get `event: error`, spec section 5), and the held request gets
/// the upstream's own refusal, not a 304 that says the revoked credential's copy is current.
#[tokio::test]
async fn a_held_long_poll_of_a_revoked_credential_gets_the_upstream_s_refusal() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, &routes(""))).await;
    let client = reqwest::Client::new();
    let alice = "Bearer alice";
    let first = client.get(gw.url("/me/tasks")).header("authorization", alice).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let held = tokio::spawn(
        client
            .get(gw.url("/me/tasks"))
            .header("authorization", alice)
            .header("if-none-match", &etag)
            .header("prefer", "wait=20")
            .send(),
    );
    // Held: the watch counts it as a subscriber.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let v: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
        if v["watches"].as_array().unwrap().iter().any(|w| w["subscribers"] == 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the long poll is never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    api.revoke("alice");
    let answer = held.await.unwrap().unwrap();
    assert_eq!(answer.status(), 401, "not a 304: the revoked credential's copy is not current");
}
