//! The attacks on credential scopes (spec section 5), each with what the user now gets: no
//! subscriber borrows the service credential, admissions hold for one target, repeated headers
//! count whole, a path parameter never reaches another upstream path, cache answers are private.

use herald_tests::*;
use serde_json::json;

/// herald with `routes` in front of an API where a service account has a task of its own (so
/// borrowing its token shows), `upstream.headers` naming that account (the usual setup).
async fn with_service_token(routes: &str) -> (LegacyApi, Gateway) {
    let (api, upstream) = start_api().await;
    api.add_user_task("service", "the service account's own task");
    let yaml = config(upstream, &format!("routes:\n{routes}"))
        .replace("  timeout: 2s\n", "  timeout: 2s\n  headers:\n    authorization: Bearer service\n");
    (api, Gateway::start(&yaml).await)
}

fn route(name: &str, path: &str, access: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    path: {path}\n    access: {access}\n    vary: [authorization]\n    poll:\n      interval: 5s\n{extra}"
    )
}

fn saw_service_token(api: &LegacyApi, path: &str) -> bool {
    api.seen(path).iter().any(|r| r.authorization.as_deref().is_some_and(|a| a.contains("service")))
}

#[tokio::test]
async fn an_anonymous_subscriber_on_a_shared_route_gets_the_upstreams_401_not_the_service_token() {
    let (api, gw) = with_service_token(&route("board", "/me/tasks", "shared", "")).await;

    let anonymous = gw.subscribe("/me/tasks/event-stream", &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(!saw_service_token(&api, "/me/tasks"), "the admission check carried the service token");
    // Not cached for the next anonymous client either, and a cache GET is refused the same way.
    assert_eq!(gw.subscribe("/me/tasks/event-stream", &[]).await.status, 401);
    assert_eq!(reqwest::get(gw.url("/me/tasks")).await.unwrap().status(), 401);

    // A subscriber with a credential the upstream accepts is admitted and gets the shared watch,
    // which is polled with the service credential.
    let mut alice = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.next_within(SOON).await.unwrap().json()[0]["owner"], "service");
    let admissions: Vec<_> = api.seen("/me/tasks").into_iter().filter_map(|r| r.authorization).collect();
    assert_eq!(admissions.iter().filter(|a| *a == "Bearer alice").count(), 1, "{admissions:?}");
}

#[tokio::test]
async fn an_anonymous_subscriber_on_a_per_subscriber_route_is_polled_without_the_service_token() {
    let (api, gw) = with_service_token(&route("mine", "/me/tasks", "per-subscriber", "")).await;

    let anonymous = gw.subscribe("/me/tasks/event-stream", &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&anonymous.body).unwrap(), json!({"error": "unauthorized"}));
    let poll = reqwest::get(gw.url("/me/tasks")).await.unwrap();
    assert_eq!(poll.status(), 401);
    assert!(!saw_service_token(&api, "/me/tasks"), "a per-subscriber poll carried the service token");

    // Bob's own token is what his watch is polled with.
    let mut bob = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer bob")]).await;
    assert_eq!(bob.next_within(SOON).await.unwrap().json()[0]["owner"], "bob");
    assert!(!saw_service_token(&api, "/me/tasks"));
}

#[tokio::test]
async fn an_admission_holds_for_one_target_only() {
    let (api, gw) = with_service_token(&route("task", "/me/tasks/{id}", "shared", "    authorize_ttl: 10m\n")).await;
    let alice = [("authorization", "Bearer alice")];

    let mut own = gw.subscribe("/me/tasks/a1/event-stream", &alice).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.next_within(SOON).await.unwrap().json()["owner"], "alice");
    // Admitted for a1 is not admitted for b1: the upstream is asked again, with alice's token.
    let other = gw.subscribe("/me/tasks/b1/event-stream", &alice).await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(
        reqwest::Client::new()
            .get(gw.url("/me/tasks/b1"))
            .header("authorization", "Bearer alice")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // Nor for another query of the same path.
    let queried = gw.subscribe("/me/tasks/b1/event-stream?owner=bob", &alice).await;
    assert_eq!(queried.status, 403);
    let asked: Vec<_> = api.seen("/me/tasks/b1").into_iter().map(|r| r.authorization).collect();
    assert!(asked.iter().all(|a| a.as_deref() == Some("Bearer alice")), "{asked:?}");
    assert_eq!(asked.len(), 3, "each target checked on its own: {asked:?}");
}

#[tokio::test]
async fn repeated_vary_headers_count_whole() {
    let (api, upstream) = start_api().await;
    let extra = "    vary: [authorization, cookie]\n";
    let yaml = config(upstream, "routes:\n")
        + &route("mine", "/me/tasks", "per-subscriber", "").replace("    vary: [authorization]\n", extra);
    let gw = Gateway::start(&yaml).await;

    // A GET of /me/tasks with these header fields, each sent as its own line.
    let client = reqwest::Client::new();
    let get = |fields: &[(&str, &str)]| {
        let req = fields.iter().fold(client.get(gw.url("/me/tasks")), |req, (name, value)| req.header(*name, *value));
        async move { req.send().await.unwrap() }
    };

    // Two Authorization fields: the upstream sees both, not only alice's first one.
    let both = get(&[("authorization", "Bearer alice"), ("authorization", "Bearer bob")]).await;
    assert_eq!(both.status(), 401, "the second field must not be dropped");
    let sent = api.seen("/me/tasks").last().unwrap().authorization.clone();
    assert_eq!(sent.as_deref(), Some("Bearer alice, Bearer bob"));

    // Cookie crumbs (several cookie fields, as HTTP/2 sends them) are one credential: the same
    // scope as the joined header, and forwarded whole.
    let alice = ("authorization", "Bearer alice");
    let crumbs = get(&[alice, ("cookie", "a=1"), ("cookie", "b=2")]).await;
    assert_eq!(crumbs.status(), 200);
    let joined = get(&[alice, ("cookie", "a=1; b=2")]).await;
    assert_eq!(joined.headers()["x-herald-cache"], "hit", "the same credential: the same watch");
    let other = get(&[alice, ("cookie", "a=1")]).await;
    assert_eq!(other.headers()["x-herald-cache"], "miss", "a cookie fewer: another scope");
    let cookies: std::collections::BTreeSet<_> = api.seen("/me/tasks").into_iter().filter_map(|r| r.cookie).collect();
    assert_eq!(cookies, ["a=1", "a=1; b=2"].map(String::from).into(), "the crumbs went upstream whole");
}

#[tokio::test]
async fn a_path_parameter_never_reaches_another_upstream_path() {
    let (api, gw) = with_service_token("  - name: task\n    path: /tasks/{id}\n    access: public\n").await;
    let before = api.seen_all().len();
    // Sent as written: an HTTP client library would resolve the dot segments itself.
    let status_of = |path: &'static str, accept: &'static str| {
        let addr = gw.public;
        async move {
            use tokio::io::AsyncWriteExt;
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: {accept}\r\nconnection: close\r\n\r\n");
            conn.write_all(head.as_bytes()).await.unwrap();
            let answer = read_to_close(&mut conn).await;
            answer.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0)
        }
    };
    for path in [
        "/tasks/%2e%2e",
        "/tasks/%2E%2e/event-stream",
        "/tasks/..",
        "/tasks/.",
        "/tasks/..%2fme%2ftasks",
        "/tasks/a%5c..",
        "/tasks/a%00",
        "/tasks/%0d%0a",
    ] {
        assert_eq!(status_of(path, "*/*").await, 400, "{path}");
        assert_eq!(status_of(path, "text/event-stream").await, 400, "{path} as a stream");
    }
    assert_eq!(api.seen_all().len(), before, "no poll left herald: {:?}", &api.seen_all()[before..]);
    assert_eq!(reqwest::get(gw.url("/tasks/1")).await.unwrap().status(), 200, "a plain id still works");
}

#[tokio::test]
async fn cache_answers_on_credential_routes_are_private_and_drop_last_event_id() {
    let (_api, upstream) = start_api().await;
    let yaml = config(upstream, "routes:\n")
        + &route("mine", "/me/tasks", "per-subscriber", "")
        + "  - name: tasks\n    path: /tasks\n    access: public\n";
    let gw = Gateway::start(&yaml).await;
    let mine =
        reqwest::Client::new().get(gw.url("/me/tasks")).header("authorization", "Bearer alice").send().await.unwrap();
    assert_eq!(mine.status(), 200);
    assert_eq!(mine.headers()["cache-control"], "private");
    assert_eq!(mine.headers()["vary"], "authorization");
    let public = reqwest::get(gw.url("/tasks")).await.unwrap();
    assert!(public.headers().get("cache-control").is_none() && public.headers().get("vary").is_none());

    // lastEventId is herald's own parameter: the same watch as without it.
    let resumed = reqwest::get(gw.url("/tasks?lastEventId=abc-1")).await.unwrap();
    assert_eq!(resumed.headers()["x-herald-cache"], "hit");
    let watches: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    let paths: Vec<_> =
        watches["watches"].as_array().unwrap().iter().map(|w| w["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(paths, ["/me/tasks", "/tasks"]);
}

#[tokio::test]
async fn a_password_in_the_upstream_url_is_sent_on_polls_but_never_logged_or_passed_through() {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n")
        .replace(&format!("url: http://{upstream}"), &format!("url: http://svc:hunter2@{upstream}"));
    let gw = Gateway::start(&yaml).await;
    assert_eq!(reqwest::get(gw.url("/tasks")).await.unwrap().status(), 200);
    let basic = "Basic c3ZjOmh1bnRlcjI="; // svc:hunter2
    assert_eq!(api.seen("/tasks")[0].authorization.as_deref(), Some(basic), "polls carry it");
    let echoed: serde_json::Value =
        serde_json::from_str(&reqwest::get(gw.url("/echo")).await.unwrap().text().await.unwrap()).unwrap();
    assert!(echoed["headers"].get("authorization").is_none(), "pass-through never carries it: {echoed}");
    assert!(gw.logs().contains(&upstream.to_string()) && !gw.logs().contains("hunter2"), "{}", gw.logs());
}
