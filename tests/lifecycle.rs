//! The process: `herald check`, graceful shutdown, the admin endpoints.

use std::process::Command;
use std::time::Duration;

use herald_tests::*;
use serde_json::json;

/// `herald check -c path`: its exit code, its problem lines without the file name, all it printed.
fn check(path: &std::path::Path) -> (Option<i32>, Vec<String>, String) {
    let out = Command::new(herald_bin()).args(["check", "-c"]).arg(path).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = path.display().to_string();
    let lines = stderr.lines().filter_map(|l| l.strip_prefix(&file)).map(str::to_string).collect();
    (out.status.code(), lines, stderr)
}

#[test]
fn check_lists_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "server:\n  listen: 127.0.0.1:80800\nupstream:\n  url: ftp://legacy\n  timeout: 5 secs\nroutes:\n  - name: tasks\n    path: /tasks\n    poll: { interval: 5s, min_interval: 10s, max_interval: 2s }\n    colour: blue\n",
    )
    .unwrap();
    let (code, lines, stderr) = check(&path);
    assert_eq!(code, Some(64));
    assert_eq!(
        lines,
        [
            ":2:11: server.listen: invalid address \"127.0.0.1:80800\" (expected IP:PORT, e.g. 127.0.0.1:8080)",
            ":4:8: upstream.url: invalid URL \"ftp://legacy\" (expected http://host:port or https://host)",
            ":5:12: upstream.timeout: invalid duration \"5 secs\" (expected e.g. 500ms, 5s, 2m)",
            ":9:41: routes[0].poll.min_interval: min_interval (10s) is longer than max_interval (2s)",
            ":10:5: routes[0].colour: unknown key",
        ],
        "{stderr}"
    );

    std::fs::write(&path, "upstream:\n  url: http://127.0.0.1:1\nroutes:\n  - name: tasks\n    path: /tasks\n")
        .unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
    let missing = Command::new(herald_bin()).args(["check", "-c", "/nonexistent/gateway.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(64));
}

#[test]
fn check_reads_every_file_run_would_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("files.yaml");
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello").unwrap();
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    std::fs::write(
        &path,
        "server:\n  tls: { cert: missing.pem, key: missing-key.pem }\nupstream:\n  url: https://127.0.0.1:1\n  ca_file: not-a-cert.pem\n\
         storage:\n  path: a-file/data\nroutes:\n  - name: tasks\n    path: /tasks\n",
    )
    .unwrap();
    let (code, lines, stderr) = check(&path);
    assert_eq!(code, Some(64));
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(":5:12: upstream.ca_file: cannot use ") && lines[0].contains("no certificate"),
        "{stderr}"
    );
    assert!(lines[1].starts_with(":2:8: server.tls: ") && lines[1].contains("missing.pem"), "{stderr}");
    assert!(lines[2].starts_with(":7:9: storage.path: cannot open the store"), "{stderr}");

    // A store sealed with one key is refused with another.
    // Two keys: the base64 of two different 32-byte values.
    let key = |k: u8| format!("'{}='", (if k == 0 { "A" } else { "E" }).repeat(43));
    let sealed = |k: u8| {
        format!("upstream:\n  url: http://127.0.0.1:1\nstorage:\n  path: data\n  encryption_key: {}\nroutes:\n  - name: t\n    path: /t\n", key(k))
    };
    std::fs::write(&path, sealed(0)).unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::write(&path, sealed(1)).unwrap();
    let (code, lines, stderr) = check(&path);
    assert_eq!(code, Some(64));
    assert!(lines[0].starts_with(":5:19: storage.encryption_key: storage.encryption_key is not the key"), "{stderr}");
}

#[test]
fn the_repository_gateway_yaml_is_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway.yaml");
    let out = Command::new(herald_bin()).args(["check", "-c", root]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn sigterm_closes_streams_with_a_shutdown_event_and_exits() {
    let (_api, upstream) = start_api().await;
    let mut gw =
        Gateway::start(&config(upstream, "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n")).await;
    assert_eq!(gw.admin_get("/healthz").await.trim(), "ok");
    assert_eq!(gw.admin_get("/readyz").await.trim(), "ready");
    let mut c = gw.subscribe("/tasks/event-stream", &[]).await;
    c.next_within(SOON).await.unwrap();

    gw.sigterm();
    let bye = c.next_within(SOON).await.expect("a goodbye event");
    assert_eq!((bye.event.as_str(), bye.json()), ("error", json!({"reason": "shutdown"})));
    assert!(c.next_within(SOON).await.is_none(), "then the stream ends");
    let status = gw.wait(Duration::from_secs(5)).await.expect("exits within shutdown_grace");
    assert!(status.success(), "{status:?}\n{}", gw.logs());
}

#[tokio::test]
async fn shutdown_answers_subscribers_still_waiting_and_readyz_says_so_at_once() {
    let (api, upstream) = start_api().await;
    let gw =
        Gateway::start(&config(upstream, "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n")).await;
    let readyz = |gw: &Gateway| {
        let url = format!("http://{}/readyz", gw.admin);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(readyz(&gw).await, 200);
    // A first poll that takes its time, and a pass-through request that keeps the drain going.
    api.fail_next("/tasks", [Fault::Delay(Duration::from_millis(1500))]);
    api.fail_next("/echo", [Fault::Delay(Duration::from_millis(1500))]);
    let stream_url = gw.url("/tasks/event-stream");
    let waiting = tokio::spawn(async move { SseClient::connect(&stream_url, &[]).await });
    let slow = tokio::spawn(reqwest::get(gw.url("/echo")));
    eventually("both requests reached the upstream", || {
        api.stats("/tasks").requests == 1 && api.stats("/echo").requests == 1
    })
    .await;

    gw.sigterm();
    let mut status = 0;
    for _ in 0..50 {
        status = readyz(&gw).await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 503, "not ready from the moment shutdown begins");
    let waiting = tokio::time::timeout(SOON, waiting).await.expect("answered, not left hanging").unwrap();
    assert_eq!(waiting.status, 503, "{}", waiting.body);
    assert_eq!(slow.await.unwrap().unwrap().status(), 200, "the request in flight finishes");
}

#[tokio::test]
async fn the_admin_token_guards_admin_pages_only() {
    let (_api, upstream) = start_api().await;
    let yaml = config(upstream, "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n").replacen(
        "server:\n",
        "server:\n  admin_token: admin-token-0123456789\n",
        1,
    );
    let gw = Gateway::start(&yaml).await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = reqwest::Client::new().get(format!("http://{}{path}", gw.admin));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/admin/watches", None).await, 401);
    assert_eq!(get("/admin/watches", Some("admin-token-012345678")).await, 401);
    assert_eq!(get("/admin/watches", Some("admin-token-0123456789")).await, 200);
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(open, None).await, 200, "{open}");
    }
    assert!(!gw.logs().contains("admin-token-0123456789"), "the token is never logged");
}
