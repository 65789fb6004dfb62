//! The service credential obtained by OAuth 2.0 client credentials (`upstream.auth`): polls carry
//! a token herald renews before it expires, a 401 is answered with one retry on a fresh token, a
//! refused token endpoint is a poll error like any other, the token never goes on a request
//! made for a subscriber (whatever the route's `vary`), and neither secret nor token is ever
//! shown.

use std::time::{Duration, Instant};

use herald_tests::*;
use serde_json::json;

const SECRET: &str = "s3cr3t-hunter2-oauth";

/// herald with `upstream.auth` pointing at the API's token endpoint, and `routes`.
async fn with_token_endpoint(lifetime: Duration, routes: &str) -> (LegacyApi, Gateway) {
    let (api, upstream) = start_api().await;
    api.issue_tokens("herald", SECRET, lifetime);
    api.add_user_task("service", "the service account's own task");
    // A timeout no poll reaches on a busy machine: a poll that times out would be an error.
    let auth = format!(
        "  timeout: 10s\n  auth:\n    kind: oauth2_client_credentials\n    token_url: http://{upstream}/oauth/token\n    \
         client_id: herald\n    client_secret: {SECRET}\n    scope: tasks.read\n"
    );
    let yaml = config(upstream, &format!("routes:\n{routes}")).replace("  timeout: 2s\n", &auth);
    (api, Gateway::start(&yaml).await)
}

/// A public route on `/service/tasks` (which requires a valid token), polled every 200 ms.
const SERVICE_ROUTE: &str = "  - name: service\n    path: /service/tasks\n    access: public\n    poll:\n      \
     interval: 200ms\n      min_interval: 200ms\n      max_interval: 2s\n      adaptive: false\n      jitter: 0\n";

/// Neither the secret nor any token issued shows in herald's logs, metrics or watch list.
async fn nothing_secret_shows(api: &LegacyApi, gw: &Gateway) {
    let shown = [gw.logs(), gw.admin_get("/metrics").await, gw.admin_get("/admin/watches").await].join("\n");
    assert!(!shown.contains(SECRET), "the client secret was shown");
    for token in api.issued_tokens() {
        assert!(!shown.contains(&token), "a token was shown: {token}");
    }
}

#[tokio::test]
async fn a_stream_whose_upstream_needs_the_token_keeps_flowing_across_renewals() {
    // Renewed after half its lifetime (the margin is at most half): 3 s of slack for a poll
    // stalled on a busy machine before the token it carries expires.
    let lifetime = Duration::from_secs(6);
    let renewal = lifetime / 2;
    let (api, gw) = with_token_endpoint(lifetime, SERVICE_ROUTE).await;
    let started = Instant::now();
    let mut c = gw.subscribe("/service/tasks/event-stream", &[]).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.next_within(SOON).await.unwrap().json().as_array().unwrap().len(), 3);

    // Several lifetimes, with a change now and then: every change arrives, no error does.
    let mut events = Vec::new();
    for i in 0..3 {
        let title = format!("change {i}");
        api.add_task(&title);
        events.extend(c.until(SOON, |ev| ev.data.contains(&title)).await);
        tokio::time::sleep(lifetime).await;
    }
    api.add_task("last change");
    events.extend(c.until(SOON, |ev| ev.data.contains("last change")).await);
    assert!(events.last().unwrap().data.contains("last change"), "{events:?}");
    let errors: Vec<_> = events.iter().filter(|ev| ev.event == "upstream-status").collect();
    assert!(errors.is_empty(), "{errors:?}");

    // At most one token request per renewal period, besides one after each 401. And at least
    // one per lifetime: the changes were polled a lifetime apart or more, and no token serves
    // two such polls.
    let run = started.elapsed().as_secs_f64();
    let asked = api.token_requests() as f64;
    let rejected = api.rejected_tokens() as f64;
    assert!(asked >= 4.0, "{asked} token requests in {run:.1}s");
    assert!(asked <= run / renewal.as_secs_f64() + 2.0 + rejected, "{asked} token requests in {run:.1}s");
    // Renewed ahead of time: each new token is asked for while the one before it is still
    // valid. The API ends a token at its expiry, so renewing at expiry (or on the 401 of an
    // expired token) would show as rejected polls; renewing ahead shows as none, unless a poll
    // stalled for the 3 s between renewal and expiry.
    let issued = api.token_issue_times();
    let ahead = issued.windows(2).filter(|w| w[1] < w[0] + lifetime).count();
    assert!(ahead * 2 >= issued.len() - 1, "{ahead} of {} renewals ahead of expiry", issued.len() - 1);
    assert!(rejected * 2.0 < asked, "{rejected} polls sent with an expired token, {asked} tokens");
    // What the endpoint was sent: the grant and the scope.
    assert_eq!(api.token_forms()[0], "grant_type=client_credentials&scope=tasks.read");
    assert!(gw.metric("herald_upstream_token_refreshes_total{outcome=\"ok\"}").await >= 2.0);
    nothing_secret_shows(&api, &gw).await;
}

#[tokio::test]
async fn a_token_refused_early_is_replaced_and_the_poll_retried_once() {
    let (api, gw) = with_token_endpoint(Duration::from_secs(3600), SERVICE_ROUTE).await;
    let mut c = gw.subscribe("/service/tasks/event-stream", &[]).await;
    assert_eq!(c.status, 200, "{}", c.body);
    c.next_within(SOON).await.unwrap();
    assert_eq!(api.token_requests(), 1);

    // The API ends the token long before its hour: the next poll is answered 401, herald asks
    // for a new token and polls again; the subscriber sees the change and nothing else.
    api.invalidate_tokens();
    api.add_task("after the rotation");
    let next = c.next_within(SOON).await.unwrap();
    assert_ne!(next.event, "upstream-status", "{}", next.data);
    assert!(next.data.contains("after the rotation"), "{}", next.data);
    assert_eq!(api.token_requests(), 2);
    assert_eq!(api.rejected_tokens(), 1, "one poll was answered 401, then retried with the new token");
    let refused: Vec<_> = api.seen("/service/tasks").into_iter().filter_map(|r| r.authorization).collect();
    let tokens = api.issued_tokens();
    assert!(refused.iter().all(|a| tokens.iter().any(|t| *a == format!("Bearer {t}"))), "{refused:?}");
    nothing_secret_shows(&api, &gw).await;
}

#[tokio::test]
async fn a_refused_token_endpoint_is_a_poll_error_that_is_backed_off_and_recovered_from() {
    let (api, gw) = with_token_endpoint(Duration::from_secs(3600), SERVICE_ROUTE).await;
    // A first subscriber gets the status of a failed poll.
    api.refuse_tokens(true);
    let first = gw.subscribe("/service/tasks/event-stream", &[]).await;
    assert_eq!(first.status, 502, "{}", first.body);
    assert!(first.body.contains("token endpoint answered 401: invalid_client"), "{}", first.body);
    assert!(!api.seen("/service/tasks").iter().any(|r| r.authorization.is_some()), "polled without a token");

    // An open stream is told, with the reason. (A refusal is remembered for a second from when
    // it came, before herald answered: then it is forgotten.)
    api.refuse_tokens(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c = gw.subscribe("/service/tasks/event-stream", &[]).await;
    assert_eq!(c.status, 200, "{}", c.body);
    c.next_within(SOON).await.unwrap();
    api.refuse_tokens(true);
    api.invalidate_tokens();
    let down = c.next_within(SOON).await.unwrap();
    assert_eq!(down.event, "upstream-status");
    assert_eq!(down.json()["ok"], false);
    assert_eq!(down.json()["error"], "token endpoint answered 401: invalid_client", "{}", down.data);

    // Backed off: at 200 ms a poll, 3 s would be 15 token requests; backing off to 2 s, fewer.
    let before = api.token_requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = api.token_requests() - before;
    assert!(during < 10, "{during} token requests in 3 s while refused");

    api.refuse_tokens(false);
    let up = c.until(SOON, |ev| ev.event == "upstream-status").await.pop().unwrap();
    assert_eq!(up.json(), json!({"ok": true}));
    for outcome in ["ok", "refused"] {
        let sample = format!("herald_upstream_token_refreshes_total{{outcome=\"{outcome}\"}}");
        assert!(gw.metric(&sample).await >= 1.0, "{sample}");
    }
    let metrics = gw.admin_get("/metrics").await;
    assert!(metrics.contains("herald_upstream_token_refreshes_total{outcome=\"error\"} 0"), "{metrics}");
    nothing_secret_shows(&api, &gw).await;
}

#[tokio::test]
async fn a_subscriber_without_a_credential_is_never_polled_with_the_service_token() {
    let mine = "  - name: mine\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
        poll:\n      interval: 5s\n";
    let shared = "  - name: task\n    path: /me/tasks/{id}\n    access: shared\n    vary: [authorization]\n    \
        poll:\n      interval: 5s\n";
    let (api, gw) = with_token_endpoint(Duration::from_secs(3600), &format!("{SERVICE_ROUTE}{mine}{shared}")).await;
    // The service token is in use on the route that needs it.
    let mut service = gw.subscribe("/service/tasks/event-stream", &[]).await;
    assert_eq!(service.status, 200, "{}", service.body);
    service.next_within(SOON).await.unwrap();
    let saw_token = |path: &str| {
        api.seen(path).iter().any(|r| r.authorization.as_deref().is_some_and(|a| a.starts_with("Bearer tok")))
    };

    let anonymous = gw.subscribe("/me/tasks/event-stream", &[]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(reqwest::get(gw.url("/me/tasks")).await.unwrap().status(), 401);
    // The admission check of a shared route is asked without it too.
    assert_eq!(gw.subscribe("/me/tasks/b1/event-stream", &[]).await.status, 401);
    assert!(!saw_token("/me/tasks"), "a per-subscriber poll carried the service token");
    assert!(!saw_token("/me/tasks/b1"), "an admission check carried the service token");

    // Bob's own credential is what his watch is polled with.
    let mut bob = gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer bob")]).await;
    assert_eq!(bob.next_within(SOON).await.unwrap().json()[0]["owner"], "bob");
    assert!(!saw_token("/me/tasks"));
    assert_eq!(api.token_requests(), 1);
    nothing_secret_shows(&api, &gw).await;
}

// With `vary: [cookie]` the service's `authorization` is not a name the route withholds; still
// no request made for a subscriber carries the token: a subscriber without a cookie is not
// admitted (or polled) as the service, and one whose cookie the upstream refuses makes herald
// drop no token and ask for none.
#[tokio::test]
async fn a_route_that_varies_on_cookie_never_sends_the_token_for_a_subscriber() {
    for access in ["shared", "per-subscriber"] {
        let route = format!(
            "  - name: board\n    path: /service/tasks\n    access: {access}\n    vary: [cookie]\n    poll:\n      interval: 5s\n"
        );
        let (api, gw) = with_token_endpoint(Duration::from_secs(3600), &route).await;
        api.refuse_cookie("session=bad");

        let anonymous = gw.subscribe("/service/tasks/event-stream", &[]).await;
        assert_eq!(anonymous.status, 401, "{access}: admitted as the service: {}", anonymous.body);
        for _ in 0..5 {
            let bad = gw.subscribe("/service/tasks/event-stream", &[("cookie", "session=bad")]).await;
            assert_eq!(bad.status, 401, "{access}: {}", bad.body);
        }
        let sent: Vec<_> = api.seen("/service/tasks").into_iter().map(|r| (r.authorization, r.cookie)).collect();
        assert_eq!(sent.len(), 6, "{access}: {sent:?}");
        assert!(sent.iter().all(|(authorization, _)| authorization.is_none()), "{access}: {sent:?}");
        assert_eq!(api.token_requests(), 0, "{access}: a subscriber's 401 cost token requests");
        nothing_secret_shows(&api, &gw).await;
    }
}

// A token said to live for ever (more than a clock can count) is used, not a poll task's end.
#[tokio::test]
async fn a_token_that_lives_for_ever_is_used() {
    let (api, gw) = with_token_endpoint(Duration::from_secs(10_000_000_000_000_000_000), SERVICE_ROUTE).await;
    let connect = gw.subscribe("/service/tasks/event-stream", &[]);
    let mut c = tokio::time::timeout(SOON, connect).await.expect("the first poll never answered");
    assert_eq!(c.status, 200, "{}", c.body);
    c.next_within(SOON).await.unwrap();
    api.add_task("later");
    assert!(c.until(SOON, |ev| ev.data.contains("later")).await.last().is_some_and(|ev| ev.data.contains("later")));
    assert_eq!(api.token_requests(), 1);
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_requires_a_client_certificate_is_polled_with_client_cert() {
    let api = LegacyApi::new();
    let upstream = api
        .serve_mtls(
            "127.0.0.1:0".parse().unwrap(),
            &fixture("tls-a.pem"),
            &fixture("tls-a.key"),
            &fixture("tls-client.pem"),
        )
        .await
        .unwrap();
    let routes = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n";
    let yaml = config(upstream, routes)
        .replace("url: http://", "url: https://")
        .replace("  timeout: 2s\n", &format!("  timeout: 2s\n  ca_file: {}\n", fixture("tls-a.pem").display()));
    let with_cert = yaml.replace(
        "  timeout: 2s\n",
        &format!(
            "  timeout: 2s\n  client_cert: {}\n  client_key: {}\n",
            fixture("tls-client.pem").display(),
            fixture("tls-client.key").display()
        ),
    );

    let gw = Gateway::start(&with_cert).await;
    let mut stream = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(stream.status, 200, "{}\n{}", stream.body, gw.logs());
    assert_eq!(stream.next_within(SOON).await.unwrap().json(), api.tasks(), "polls over mutual TLS");

    // Without the certificate the upstream refuses the handshake: a poll error.
    let without = Gateway::start(&yaml).await;
    assert_eq!(without.subscribe("/tasks/event-stream", &[]).await.status, 502);
}

#[test]
fn an_unreadable_client_certificate_is_a_configuration_error_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    let yaml = "upstream:\n  url: https://127.0.0.1:1\n  client_cert: missing.pem\n  client_key: missing.key\n\
                routes:\n  - name: t\n    path: /t\n";
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(herald_bin()).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Relative to the configuration file, and placed where the key was written.
    assert!(stderr.contains("g.yaml:3:16: upstream.client_cert: cannot use"), "{stderr}");
    assert!(stderr.contains(&dir.path().join("missing.pem").display().to_string()), "{stderr}");
}
