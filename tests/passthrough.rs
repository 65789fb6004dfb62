//! Pass-through: what herald does not answer reaches the upstream unchanged.

use std::time::Duration;

use herald_tests::*;
use serde_json::Value;

const ROUTES: &str = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n";

#[tokio::test]
async fn method_body_query_and_headers_are_kept() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let client = reqwest::Client::new();
    let body = "x".repeat(3 << 20);
    let resp = client
        .put(gw.url("/echo/items?b=2&a=1&a=3"))
        .header("authorization", "Bearer alice")
        .header("x-custom", "kept")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .header("x-forwarded-for", "10.0.0.1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["via"], "1.1 herald");
    let echo: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/items");
    assert_eq!(echo["query"], "b=2&a=1&a=3");
    assert_eq!(echo["body_len"], body.len());
    let h = &echo["headers"];
    assert_eq!(h["authorization"], "Bearer alice");
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("x-hop").is_none(), "headers named by Connection are hop-by-hop");
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.public.to_string());
    assert_eq!(h["via"], "1.1 herald");
    assert_eq!(h["host"], upstream.to_string());

    // A plain GET on a route is answered from its watch (section 8), not passed through.
    let tasks = reqwest::get(gw.url("/tasks")).await.unwrap();
    assert_eq!(tasks.status(), 200);
    assert_eq!(tasks.headers()["x-herald-cache"], "miss");
    // Upstream errors come back as they are.
    assert_eq!(reqwest::get(gw.url("/nothing")).await.unwrap().status(), 404);
    assert!(gw.metric("herald_proxy_requests_total{status_class=\"4xx\"}").await >= 1.0);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let (api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES).replace("timeout: 2s", "timeout: 300ms")).await;
    api.fail_next("/echo", [Fault::Delay(Duration::from_secs(2))]);
    assert_eq!(reqwest::get(gw.url("/echo")).await.unwrap().status(), 504);
    assert_eq!(reqwest::get(gw.url("/echo")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_websocket_is_tunnelled_to_the_upstream() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.public)).await.expect("handshake through herald");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through", "herald"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(SOON, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(SOON, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_data().len(), big.len());
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn trailers_pass_through_to_clients_that_accept_them() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let raw =
        one_connection(&gw, "GET /trailers HTTP/1.1\r\nhost: herald\r\nte: trailers\r\nconnection: close\r\n\r\n")
            .await
            .to_ascii_lowercase();
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(body.contains("payload") && body.ends_with("0\r\nx-checksum: abc123\r\n\r\n"), "{body:?}");
}

/// An upstream that answers every request head with `reply`, then closes the connection
/// without saying so (as one whose keep-alive timeout just expired would).
async fn closing_upstream(reply: &'static [u8]) -> std::net::SocketAddr {
    raw_upstream(reply, false).await
}

/// An upstream that answers every request head with `reply`, then closes the connection or,
/// with `hold`, keeps it open without sending anything more.
async fn raw_upstream(reply: &'static [u8], hold: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let _ = s.write_all(reply).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    upstream
}

const UNUSED_ROUTE: &str = "routes: [ { name: unused, path: /watched, access: public } ]\n";

/// herald must not send a client's next request over a connection the upstream already closed:
/// a GET may be sent again, a POST must not be sent over a closed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_closed_after_each_answer_are_replaced() {
    let upstream = closing_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = Gateway::start(&config(upstream, UNUSED_ROUTE)).await;
    // One client connection, many requests: each must find a live upstream connection.
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    for i in 0..50 {
        let url = gw.url(&format!("/any/{i}"));
        let resp = if i % 2 == 0 { client.get(url).send() } else { client.post(url).body("x").send() };
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "ok");
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_answer_ended_by_the_upstream_closing_arrives_whole() {
    let upstream =
        closing_upstream(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it, then the close").await;
    let gw = Gateway::start(&config(upstream, UNUSED_ROUTE)).await;
    let resp = reqwest::get(gw.url("/any")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "all of it, then the close");
}

#[tokio::test]
async fn an_upstream_that_stops_midway_through_an_answer_is_cut_off() {
    let upstream = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true).await;
    let gw = Gateway::start(&config(upstream, UNUSED_ROUTE).replace("timeout: 2s", "timeout: 300ms")).await;
    // HTTP/1.1 (herald's fast lane) and HTTP/1.0 (hyper): the client gets what was sent, then
    // the connection closes instead of hanging.
    for version in ["1.1", "1.0"] {
        let raw = one_connection(&gw, &format!("GET /any HTTP/{version}\r\nhost: h\r\n\r\n")).await;
        assert!(raw.starts_with(&format!("HTTP/{version} 200 OK")) && raw.ends_with("\r\n\r\nabc"), "{version}: {raw}");
    }
}

/// A client idling on its keep-alive connection does not hold an upstream connection: herald
/// gives it back and, unused, closes it, while the client's connection stays open.
#[tokio::test]
async fn an_idle_client_does_not_hold_an_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (closed, mut upstream_closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                // Keep-alive: one answer per request head, until herald closes the connection.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        break;
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    let gw = Gateway::start(&config(upstream, UNUSED_ROUTE)).await;
    let mut client = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    assert!(answer(&mut client, "GET /a HTTP/1.1\r\nhost: h\r\n\r\n").await.starts_with("HTTP/1.1 200"));
    tokio::time::timeout(SOON, upstream_closed.recv()).await.expect("the idle upstream connection is closed");
    assert!(answer(&mut client, "GET /b HTTP/1.1\r\nhost: h\r\n\r\n").await.starts_with("HTTP/1.1 200"));
}

/// Sends `request` on a kept-alive connection and reads its answer, one that ends in `ok`.
async fn answer(client: &mut tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\nok") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(SOON, client.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(n > 0, "herald closed the client's connection");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// Writes `requests` on one connection at once and reads every answer until herald closes it.
async fn one_connection(gw: &Gateway, requests: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    conn.write_all(requests.as_bytes()).await.unwrap();
    read_to_close(&mut conn).await
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(upstream, ROUTES)).await;
    let raw = one_connection(
        &gw,
        "POST /echo/a HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nfirstHEAD /echo/b HTTP/1.1\r\nhost: h\r\n\r\n\
         GET /echo/c HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3, "{raw}");
    let (a, c) = (raw.find("\"/echo/a\"").unwrap(), raw.find("\"/echo/c\"").unwrap());
    assert!(a < c && raw[..a].contains("\"body\":\"first\""), "{raw}");
    // The HEAD answer has its length and no body: the next answer follows its head at once.
    let head = &raw[raw.find("HTTP/1.1 200 OK").unwrap() + 1..];
    let head = &head[head.find("HTTP/1.1 200 OK").unwrap()..];
    let (fields, rest) = head.split_once("\r\n\r\n").unwrap();
    assert!(fields.contains("content-length: ") && rest.starts_with("HTTP/1.1 200 OK"), "{head}");
}

#[tokio::test]
async fn a_connection_moves_from_the_fast_lane_to_hyper_and_keeps_its_requests() {
    let (_api, upstream) = start_api().await;
    let gw = Gateway::start(&config(
        upstream,
        "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    cache: true\n",
    ))
    .await;
    // A passed-through GET, a cache answer (hyper's), a chunked upload (hyper's), then another.
    let raw = one_connection(
        &gw,
        "GET /echo/1 HTTP/1.1\r\nhost: h\r\n\r\nGET /tasks HTTP/1.1\r\nhost: h\r\n\r\n\
         POST /echo/2 HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET /echo/3 HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 4, "{raw}");
    assert!(
        raw.contains("x-herald-cache: miss") && raw.contains("\"body\":\"abc\"") && raw.contains("/echo/3"),
        "{raw}"
    );
}
