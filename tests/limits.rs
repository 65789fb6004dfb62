//! The public listener's limits: slow clients, oversized headers, connection count, and request
//! bodies streamed through without buffering.

use std::time::Duration;

use herald_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROUTES: &str = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n";

fn with_server(yaml: String, extra: &str) -> String {
    yaml.replacen("server:\n", &format!("server:\n{extra}"), 1)
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&with_server(config(upstream, ROUTES), "  header_timeout: 300ms\n")).await;
    let mut slow = TcpStream::connect(gw.public).await.unwrap();
    slow.write_all(b"GET /echo HTTP/1.1\r\nhost: herald\r\nx-one: ").await.unwrap();
    // It never finishes its headers; herald closes the connection instead of waiting forever.
    let answer = read_to_close(&mut slow).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Meanwhile and afterwards others are served.
    assert_eq!(reqwest::get(gw.url("/echo")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&with_server(config(upstream, ROUTES), "  max_header_size: 16KiB\n")).await;
    let mut client = TcpStream::connect(gw.public).await.unwrap();
    let big = "x".repeat(64 << 10);
    client.write_all(format!("GET /echo HTTP/1.1\r\nhost: herald\r\nx-big: {big}\r\n\r\n").as_bytes()).await.unwrap();
    let answer = read_to_close(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
}

#[tokio::test]
async fn over_max_connections_new_clients_wait() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&with_server(config(upstream, ROUTES), "  max_connections: 2\n")).await;
    let a = gw.subscribe("/tasks/event-stream", &[]).await;
    let mut b = gw.subscribe("/tasks/event-stream", &[]).await;
    b.next_within(SOON).await.expect("snapshot");
    let third = tokio::spawn(reqwest::get(gw.url("/echo")));
    // herald goes on serving what it holds after the third client connected (a change polled and
    // streamed): the third waits, not herald.
    api.add_task("while the third waits");
    b.next_within(SOON).await.expect("the open stream is served");
    assert!(!third.is_finished(), "a third connection is not served while two are open");
    drop(a);
    let answer = tokio::time::timeout(SOON, third).await.expect("served once a slot frees").unwrap().unwrap();
    assert_eq!(answer.status(), 200);
}

/// Uploads 100 MiB, chunked or with a Content-Length; what herald's peak RSS grew by.
async fn upload_100_mib(gw: &Gateway, with_length: bool) -> u64 {
    let before = gw.peak_rss();
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let body = futures_util::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let mut req = reqwest::Client::new().post(gw.url("/echo")).body(reqwest::Body::wrap_stream(body));
    if with_length {
        req = req.header("content-length", 100 << 20);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(echo["body_len"], 100 << 20);
    gw.peak_rss().saturating_sub(before)
}

#[tokio::test]
async fn a_100_mib_upload_streams_through_with_bounded_memory() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    // Chunked (through hyper), then with a length (herald's fast lane).
    for with_length in [false, true] {
        let grew = upload_100_mib(&gw, with_length).await;
        assert!(grew < 24 << 20, "herald's peak RSS grew by {} MiB for a 100 MiB upload", grew >> 20);
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_and_the_body_passed_on() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let mut conn = TcpStream::connect(gw.public).await.unwrap();
    conn.write_all(b"POST /echo HTTP/1.1\r\nhost: herald\r\ncontent-length: 5\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(SOON, conn.read_exact(&mut interim)).await.expect("100 Continue arrives").unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(b"hello").await.unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"body\":\"hello\""), "{answer}");
}

#[tokio::test]
async fn watches_are_bounded_in_all_and_per_credential() {
    let (_api, upstream) = start_api().await;
    let yaml = config(upstream, "limits:\n  max_watches: 3\n  max_watches_per_scope: 2\n")
        + "routes:\n  - name: mine\n    path: /me/tasks\n    vary: [authorization]\n";
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();
    let get = |query: &str, user: &str| {
        client.get(gw.url(&format!("/me/tasks?{query}"))).header("authorization", format!("Bearer {user}")).send()
    };
    assert_eq!(get("a", "alice").await.unwrap().status(), 200);
    assert_eq!(get("b", "alice").await.unwrap().status(), 200);
    let third = get("c", "alice").await.unwrap();
    assert_eq!(third.status(), 429, "alice's third watch");
    assert!(third.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(get("a", "alice").await.unwrap().status(), 200, "her existing watches still answer");

    assert_eq!(get("a", "bob").await.unwrap().status(), 200, "bob has his own allowance");
    let full = get("b", "bob").await.unwrap();
    assert_eq!(full.status(), 503, "the fourth watch in all");
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(gw.metric("herald_watches_refused_total{route=\"mine\"}").await, 2.0);
}

#[tokio::test]
async fn only_the_listed_query_parameters_form_a_watch() {
    let (api, upstream) = start_api().await;
    let yaml = config(upstream, "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    query: [state]\n");
    let gw = Gateway::start(&yaml).await;
    for junk in 0..20 {
        let resp = reqwest::get(gw.url(&format!("/tasks?state=open&junk={junk}"))).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let watches: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    let paths: Vec<_> = watches["watches"].as_array().unwrap().iter().map(|w| w["path"].clone()).collect();
    assert_eq!(paths, [serde_json::json!("/tasks?state=open")]);
    let polled: Vec<_> = api.seen("/tasks").into_iter().map(|r| r.target).collect();
    assert_eq!(polled, ["/tasks?state=open"], "one poll, without the unlisted parameter");
}

#[tokio::test]
async fn idle_connections_are_closed_and_streams_are_not() {
    let (api, upstream) = start_api().await;
    let yaml = with_server(
        config(upstream, "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll: { interval: 100ms, min_interval: 100ms }\n"),
        "  idle_timeout: 300ms\n",
    );
    let gw = Gateway::start(&yaml).await;
    let mut stream = gw.subscribe("/tasks/event-stream", &[]).await;
    stream.next_within(SOON).await.expect("a snapshot");
    // A pass-through (fast lane) and a cache answer (hyper), each on a kept-alive connection.
    for path in ["/echo", "/tasks"] {
        let mut conn = TcpStream::connect(gw.public).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: herald\r\n\r\n").as_bytes()).await.unwrap();
        let answer = read_to_close(&mut conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer:.80}");
    }
    // The stream outlived many idle timeouts, and still gets changes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    api.add_task("after a while");
    let ev = stream.next_within(SOON).await.expect("the stream is still open");
    assert!(ev.data.contains("after a while"), "{}", ev.data);
}

#[tokio::test]
async fn a_subscriber_that_reads_nothing_is_dropped_after_write_timeout() {
    let (api, upstream) = start_api().await;
    let yaml = config(
        upstream,
        "sse:\n  write_timeout: 500ms\nroutes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll: { interval: 50ms, min_interval: 50ms, adaptive: false }\n",
    );
    let gw = Gateway::start(&yaml).await;
    api.pad_tasks(64 << 10);
    // A client with a tiny receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(gw.public).await.unwrap();
    stuck.write_all(b"GET /tasks/event-stream HTTP/1.1\r\nhost: herald\r\n\r\n").await.unwrap();
    let subscribers = "herald_sse_subscribers{route=\"tasks\"}";
    gw.metric_until(subscribers, |v| v >= 1.0).await;
    // Changes keep coming (each event about 200 KiB) until its socket is full.
    let feeder = tokio::spawn({
        let api = api.clone();
        async move {
            for i in 0.. {
                api.add_task(&format!("task {i}"));
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
    });
    // Dropped once a write stalled for write_timeout.
    gw.metric_until(subscribers, |v| v == 0.0).await;
    feeder.abort();
    drop(stuck);
}

#[tokio::test]
async fn a_websocket_tunnel_counts_against_max_connections() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&with_server(config(upstream, ROUTES), "  max_connections: 1\n")).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.public)).await.expect("handshake");
    let other = tokio::spawn(reqwest::get(gw.url("/echo")));
    // The tunnel still carries messages after the other client connected: it waits, not herald.
    echo_through(&mut ws, "while the other waits").await;
    assert!(!other.is_finished(), "the tunnel holds the only connection slot");
    drop(ws);
    let answer = tokio::time::timeout(SOON, other).await.expect("served once the tunnel closed").unwrap().unwrap();
    assert_eq!(answer.status(), 200);
}

/// Sends `text` through a WebSocket tunnelled to the test API's echo, and reads it back.
async fn echo_through<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.unwrap();
    let echoed = tokio::time::timeout(SOON, ws.next()).await.expect("echoed in time").unwrap().unwrap();
    assert_eq!(echoed, Message::text(text));
}
