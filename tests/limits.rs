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

/// Subscribers of the watches on `path` (whatever their query), as /admin/watches counts them:
/// streams and held long polls.
async fn subscribers(gw: &Gateway, path: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&gw.admin_get("/admin/watches").await).unwrap();
    let on_path = |w: &&serde_json::Value| w["path"].as_str().unwrap().split('?').next() == Some(path);
    v["watches"].as_array().unwrap().iter().filter(on_path).map(|w| w["subscribers"].as_u64().unwrap()).sum()
}

/// Waits until the watches on `path` count `n` subscribers.
async fn subscribers_reach(gw: &Gateway, path: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let now = subscribers(gw, path).await;
        if now == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} subscribers of {path}, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The answer to a long poll (section 8): status, `retry-after`, `etag`.
type Polled = (u16, Option<String>, Option<String>);

/// Starts a long poll of `url` (`If-None-Match: etag`, `Prefer: wait=100`) as a task; its answer
/// is sent on `answers`.
fn long_poll(
    client: &reqwest::Client,
    url: String,
    etag: &str,
    headers: &[(&str, &str)],
    answers: &tokio::sync::mpsc::UnboundedSender<Polled>,
) -> tokio::task::JoinHandle<()> {
    let mut req = client.get(url).header("if-none-match", etag).header("prefer", "wait=100");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let answers = answers.clone();
    tokio::spawn(async move {
        let resp = req.send().await.unwrap();
        let header =
            |name| resp.headers().get(name).map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string());
        let _ = answers.send((resp.status().as_u16(), header("retry-after"), header("etag")));
    })
}

/// The next `n` long poll answers, each within [`SOON`].
async fn answers(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Polled>, n: usize) -> Vec<Polled> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(SOON, rx.recv()).await {
            Ok(Some(answer)) => got.push(answer),
            _ => panic!("{} of {n} long polls answered: {got:?}", got.len()),
        }
    }
    got
}

#[tokio::test]
async fn held_long_polls_and_streams_share_max_subscribers() {
    let (api, upstream) = start_api().await;
    let routes = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll: {interval: 200ms, min_interval: 200ms, adaptive: false}\n";
    let gw = Gateway::start(&(config(upstream, routes) + "sse:\n  max_subscribers: 3\n  retry: 2s\n")).await;
    let client = reqwest::Client::new();
    let first = client.get(gw.url("/tasks")).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    // 40 long polls of what the pollers already have: three are held, the others refused at once.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let polls: Vec<_> = (0..40).map(|_| long_poll(&client, gw.url("/tasks"), &etag, &[], &tx)).collect();
    let refused = answers(&mut rx, 37).await;
    for (status, retry_after, _) in &refused {
        assert_eq!((*status, retry_after.as_deref()), (503, Some("2")), "over sse.max_subscribers");
    }
    subscribers_reach(&gw, "/tasks", 3).await;
    // A stream finds no place either: the same answer.
    let stream = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!((stream.status, &stream.headers["retry-after"]), (503, &"2".parse().unwrap()));

    // A change answers the three held polls, and frees their places.
    api.add_task("wake them");
    let woken = answers(&mut rx, 3).await;
    assert!(woken.iter().all(|(status, _, new)| *status == 200 && new.as_deref() != Some(etag.as_str())), "{woken:?}");
    futures_util::future::join_all(polls).await;
    let etag = woken[0].2.clone().unwrap();
    let held = long_poll(&client, gw.url("/tasks"), &etag, &[], &tx);
    subscribers_reach(&gw, "/tasks", 1).await;
    let _a = gw.subscribe("/tasks/event-stream", &[]).await;
    let _b = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!((_a.status, _b.status), (200, 200), "a held poll and two streams fit");
    long_poll(&client, gw.url("/tasks"), &etag, &[], &tx);
    assert_eq!(answers(&mut rx, 1).await[0].0, 503, "a fourth subscriber of either kind is refused");

    // A poller that goes away frees its place at once.
    held.abort();
    subscribers_reach(&gw, "/tasks", 2).await;
    assert_eq!(gw.subscribe("/tasks/event-stream", &[]).await.status, 200);
}

#[tokio::test]
async fn long_polls_on_made_up_queries_are_bounded_per_credential() {
    let (_api, upstream) = start_api().await;
    let yaml = config(upstream, "limits:\n  max_watches_per_scope: 3\n")
        + "routes:\n  - name: mine\n    path: /me/tasks\n    vary: [authorization]\n";
    let gw = Gateway::start(&yaml).await;
    let client = reqwest::Client::new();
    let alice = [("authorization", "Bearer alice")];
    let first = client.get(gw.url("/me/tasks?q=0")).header("authorization", "Bearer alice").send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    // Every made-up query is a watch of its own, held open by its poll: two more fit alice's three.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let polls: Vec<_> =
        (1..=20).map(|q| long_poll(&client, gw.url(&format!("/me/tasks?q={q}")), &etag, &alice, &tx)).collect();
    let refused = answers(&mut rx, 18).await;
    for (status, retry_after, _) in &refused {
        assert_eq!(*status, 429, "over limits.max_watches_per_scope");
        assert!(retry_after.as_deref().unwrap().parse::<u64>().unwrap() >= 1);
    }
    subscribers_reach(&gw, "/me/tasks", 2).await;
    // As for a stream on one more query.
    let stream = gw.subscribe("/me/tasks/event-stream?q=21", &alice).await;
    assert_eq!(stream.status, 429);
    let bob = client.get(gw.url("/me/tasks?q=1")).header("authorization", "Bearer bob").send().await.unwrap();
    assert_eq!(bob.status(), 200, "bob has his own allowance");
    for poll in polls {
        poll.abort();
    }
}
