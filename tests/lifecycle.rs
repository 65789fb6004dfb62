//! The process: `herald check`, graceful shutdown, the admin endpoints.

use std::process::Command;
use std::time::Duration;

use herald_tests::*;
use serde_json::json;

#[test]
fn check_lists_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "server:\n  listen: 127.0.0.1:80800\nupstream:\n  url: ftp://legacy\n  timeout: 5 secs\nroutes:\n  - name: tasks\n    path: /tasks\n    poll: { interval: 5s, min_interval: 10s, max_interval: 2s }\n    colour: blue\n",
    )
    .unwrap();
    let out = Command::new(herald_bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = path.display().to_string();
    let lines: Vec<_> = stderr.lines().filter(|l| l.starts_with(&file)).map(|l| l[file.len()..].to_string()).collect();
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
    let ok = Command::new(herald_bin()).args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let missing = Command::new(herald_bin()).args(["check", "-c", "/nonexistent/gateway.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(64));
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
