//! Both engines, one policy: the same generated request, sent through hyper's engine and through
//! the fast lane, must reach the upstream as the same head (field order aside) with the same
//! body, and the same upstream answer must reach the client with the same status, fields and
//! body (each engine frames the body its own way: chunked, by length, or until close).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_proxy::fast::{self, Outcome};
use herald_proxy::{Proxy, Upstream};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A message as one side received it: its start line, its fields (lowercased names, sorted) and
/// its body.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    start: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

/// How the fake upstream frames its answer's body.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length,
    Chunked,
    /// Chunked, with a Content-Length too (which the coding overrides, RFC 9112 section 6.3).
    ChunkedAndLength,
    UntilClose,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    reason: &'static str,
    fields: Vec<(String, String)>,
    framing: Framing,
    body: Vec<u8>,
}

impl Answer {
    /// The bytes the upstream writes to a request with `method`.
    fn bytes(&self, method: &str) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason).into_bytes();
        for (name, value) in &self.fields {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let bodiless = matches!(self.status, 204 | 304);
        match self.framing {
            Framing::Length if self.status != 204 => {
                out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes())
            }
            Framing::Chunked if !bodiless => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::ChunkedAndLength if !bodiless => {
                out.extend_from_slice(b"content-length: 3\r\ntransfer-encoding: chunked\r\n")
            }
            _ => {}
        }
        if self.framing == Framing::UntilClose {
            // The upstream closes after it: an answer without a body would not say so otherwise,
            // and a connection kept by either engine would race with the close.
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if method == "HEAD" || bodiless {
            return out;
        }
        match self.framing {
            Framing::Chunked | Framing::ChunkedAndLength => {
                for chunk in self.body.chunks(7) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            _ => out.extend_from_slice(&self.body),
        }
        out
    }
}

/// The fake upstream, both engines in front of it, and what the upstream received.
struct Bench {
    fast: SocketAddr,
    hyper: SocketAddr,
    answer: Arc<Mutex<Option<Answer>>>,
    received: Arc<Mutex<Vec<Message>>>,
    /// Set when the fast lane did not relay a request itself.
    not_taken: Arc<AtomicBool>,
}

impl Bench {
    async fn start() -> Bench {
        let answer = Arc::new(Mutex::new(None::<Answer>));
        let received = Arc::new(Mutex::new(Vec::new()));
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn({
            let (answer, received) = (answer.clone(), received.clone());
            async move {
                loop {
                    let (conn, _) = upstream.accept().await.unwrap();
                    tokio::spawn(upstream_connection(conn, answer.clone(), received.clone()));
                }
            }
        });

        let requests = prometheus::IntCounterVec::new(prometheus::Opts::new("r", "r"), &["status_class"]).unwrap();
        let upstream = Upstream::new(false, &up_addr.to_string(), "/base", Duration::from_secs(5));
        let proxy = Arc::new(Proxy::new(upstream, false, &requests, None, CancellationToken::new()));
        let not_taken = Arc::new(AtomicBool::new(false));

        let fast_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fast = fast_listener.local_addr().unwrap();
        tokio::spawn({
            let (proxy, not_taken) = (proxy.clone(), not_taken.clone());
            async move {
                let limits = fast::Limits {
                    header_timeout: Duration::from_secs(5),
                    max_header_size: 64 << 10,
                    idle_timeout: Duration::from_secs(5),
                };
                loop {
                    let (conn, peer) = fast_listener.accept().await.unwrap();
                    let (proxy, not_taken) = (proxy.clone(), not_taken.clone());
                    tokio::spawn(async move {
                        let shutdown = CancellationToken::new();
                        if !matches!(
                            fast::serve(conn, peer, proxy.fast_lane(), |_| false, limits, &shutdown).await,
                            Outcome::Done
                        ) {
                            not_taken.store(true, Ordering::SeqCst);
                        }
                    });
                }
            }
        });

        let hyper_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hyper = hyper_listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (conn, peer) = hyper_listener.accept().await.unwrap();
                let proxy = proxy.clone();
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.forward(req, peer).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .with_upgrades(),
                );
            }
        });
        Bench { fast, hyper, answer, received, not_taken }
    }

    /// Sends `request` through `engine`: what the upstream received and what the client got.
    async fn through(&self, engine: SocketAddr, request: &[u8], method: &str) -> (Option<Message>, Message) {
        self.received.lock().unwrap().clear();
        let mut client = TcpStream::connect(engine).await.unwrap();
        client.write_all(request).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), read_message(&mut client, false, method == "HEAD"))
            .await
            .expect("an answer in time")
            .expect("a well-formed answer");
        let upstream = self.received.lock().unwrap().pop();
        (upstream, got)
    }
}

/// Serves one upstream connection: records each request and answers with the current answer.
async fn upstream_connection(
    mut conn: TcpStream,
    answer: Arc<Mutex<Option<Answer>>>,
    received: Arc<Mutex<Vec<Message>>>,
) {
    loop {
        let Some(req) = read_message(&mut conn, true, false).await else { return };
        let method = req.start.split(' ').next().unwrap_or("").to_string();
        received.lock().unwrap().push(req);
        let answer = answer.lock().unwrap().clone().expect("an answer is set");
        if conn.write_all(&answer.bytes(&method)).await.is_err() || answer.framing == Framing::UntilClose {
            return;
        }
    }
}

/// Reads one message (a request when `request`), its body by its framing.
async fn read_message(conn: &mut TcpStream, request: bool, head_request: bool) -> Option<Message> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if conn.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let (start, fields, status) = if request {
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&buf[..end]).ok()?;
        let start = format!("{} {} HTTP/1.{}", req.method?, req.path?, req.version?);
        (start, fields_of(req.headers), 0)
    } else {
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&buf[..end]).ok()?;
        let start = format!("HTTP/1.{} {} {}", resp.version?, resp.code?, resp.reason.unwrap_or(""));
        (start, fields_of(resp.headers), resp.code?)
    };
    let mut rest = buf.split_off(end);
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if field("transfer-encoding").is_some() {
        dechunk(conn, rest).await?
    } else if let Some(length) = field("content-length") {
        let length: usize = length.parse().ok()?;
        while rest.len() < length {
            if conn.read_buf(&mut rest).await.ok()? == 0 {
                return None;
            }
        }
        rest.truncate(length);
        rest
    } else if request {
        Vec::new()
    } else {
        conn.read_to_end(&mut rest).await.ok()?;
        rest
    };
    Some(Message { start, fields, body })
}

fn fields_of(headers: &[httparse::Header]) -> Vec<(String, String)> {
    let mut fields: Vec<_> =
        headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned())).collect();
    fields.sort();
    fields
}

/// A chunked body's data (trailers dropped).
async fn dechunk(conn: &mut TcpStream, mut rest: Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        while !rest.windows(2).any(|w| w == b"\r\n") {
            if conn.read_buf(&mut rest).await.ok()? == 0 {
                return None;
            }
        }
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // The trailer section, up to its empty line.
            let mut after = rest.split_off(line_end + 2);
            while !(after.starts_with(b"\r\n") || after.windows(4).any(|w| w == b"\r\n\r\n")) {
                if conn.read_buf(&mut after).await.ok()? == 0 {
                    return None;
                }
            }
            return Some(body);
        }
        while rest.len() < line_end + 2 + size + 2 {
            if conn.read_buf(&mut rest).await.ok()? == 0 {
                return None;
            }
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest.drain(..line_end + 2 + size + 2);
    }
}

/// What a client may send that the fast lane relays: HTTP/1.1, one Host, a body framed by its
/// length, fields from a pool that holds every rule of the policy.
fn request() -> impl Strategy<Value = (String, Vec<u8>)> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
    let path = "(/[a-z0-9._~-]{0,6}){1,3}(\\?[a-z]{1,3}=[a-z0-9%]{0,4}(&[a-z]{1,3}=[a-z0-9]{0,3})?)?";
    let field = prop_oneof![
        (
            Just("Connection"),
            prop::sample::select(vec![
                "close",
                "keep-alive",
                "x-hop",
                "X-Custom, close",
                "content-length",
                "te, x-hop"
            ])
        ),
        (Just("TE"), prop::sample::select(vec!["trailers", "deflate", "deflate, trailers"])),
        (Just("X-Forwarded-For"), prop::sample::select(vec!["192.0.2.1", "192.0.2.1, 198.51.100.7", " , 10.0.0.1"])),
        (
            prop::sample::select(vec![
                "Accept",
                "Authorization",
                "X-Custom",
                "x-hop",
                "Cookie",
                "Keep-Alive",
                "Proxy-Authorization",
                "Trailer",
                "X-Forwarded-Proto",
                "X-Forwarded-Host",
                "Via",
                "Forwarded",
                "Content-Type",
                "If-None-Match",
                "User-Agent",
            ]),
            prop::sample::select(vec!["a", "Bearer x", "1.0 edge", "text/plain; q=0.5", "\"v1\"", "k=v; k2=v2"]),
        ),
    ];
    let fields = prop::collection::vec(field, 0..8);
    let body = prop::collection::vec(any::<u8>(), 0..48);
    (method, path, fields, body, any::<bool>(), any::<bool>()).prop_map(
        |(method, path, fields, body, host_first, zero_length)| {
            let mut head = format!("{method} {path} HTTP/1.1\r\n");
            if host_first {
                head.push_str("Host: herald.example\r\n");
            }
            for (name, value) in fields {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            if !host_first {
                head.push_str("host: herald.example:8080\r\n");
            }
            if !body.is_empty() || zero_length {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            (method.to_string(), bytes)
        },
    )
}

fn answer() -> impl Strategy<Value = Answer> {
    let status = prop::sample::select(vec![
        (200, "OK"),
        (201, "Created"),
        (204, "No Content"),
        (301, "Moved"),
        (304, "Not Modified"),
        (404, "Nope"),
        (503, "Service Unavailable"),
    ]);
    let field = (
        prop::sample::select(vec![
            "Content-Type",
            "ETag",
            "Set-Cookie",
            "Cache-Control",
            "X-Custom",
            "Keep-Alive",
            "x-hop",
            "Proxy-Authenticate",
            "Vary",
            "Date",
            "Via",
            "Location",
            "Connection",
        ]),
        prop::sample::select(vec![
            "a",
            "\"v1\"",
            "x-hop",
            "keep-alive",
            "x-custom, keep-alive",
            "Sat, 28 Nov 2026 04:00:00 GMT",
        ]),
    );
    let framing =
        prop::sample::select(vec![Framing::Length, Framing::Chunked, Framing::ChunkedAndLength, Framing::UntilClose]);
    (status, prop::collection::vec(field, 0..6), framing, prop::collection::vec(any::<u8>(), 0..40)).prop_map(
        |((status, reason), fields, framing, body)| {
            let fields = fields.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            let body = if matches!(status, 204 | 304) { Vec::new() } else { body };
            Answer { status, reason, fields, framing, body }
        },
    )
}

/// The fields whose value one engine sets its own way: framing (each engine frames the body its
/// own way), `date` (when the upstream sent none, each adds the time it answered), and whether
/// the connection closes.
fn comparable(message: &Message) -> Vec<(String, String)> {
    let has_date = message.fields.iter().any(|(n, _)| n == "date");
    let mut fields: Vec<_> = message
        .fields
        .iter()
        .filter(|(n, _)| !["transfer-encoding", "content-length", "connection", "date"].contains(&n.as_str()))
        .cloned()
        .collect();
    if has_date {
        fields.push(("date".into(), "(present)".into()));
    }
    fields
}

#[test]
fn both_engines_pass_the_same_request_to_the_upstream_and_the_same_answer_to_the_client() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let bench = runtime.block_on(Bench::start());
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    let result = runner.run(&(request(), answer()), |((method, request), answer)| {
        runtime.block_on(async {
            *bench.answer.lock().unwrap() = Some(answer.clone());
            bench.not_taken.store(false, Ordering::SeqCst);
            let (fast_up, fast_got) = bench.through(bench.fast, &request, &method).await;
            prop_assert!(!bench.not_taken.load(Ordering::SeqCst), "the fast lane did not relay it");
            let (hyper_up, hyper_got) = bench.through(bench.hyper, &request, &method).await;
            let (fast_up, hyper_up) =
                (fast_up.expect("fast lane reached the upstream"), hyper_up.expect("hyper reached the upstream"));

            prop_assert_eq!(&fast_up.start, &hyper_up.start);
            prop_assert_eq!(&fast_up.body, &hyper_up.body);
            prop_assert_eq!(&fast_up.fields, &hyper_up.fields, "the upstream's request heads differ");

            // The upstream's own status line, and its length when it gave one.
            prop_assert_eq!(fast_got.start.split_once(' ').map(|s| s.1), hyper_got.start.split_once(' ').map(|s| s.1));
            prop_assert_eq!(comparable(&fast_got), comparable(&hyper_got), "the client's answer fields differ");
            prop_assert_eq!(&fast_got.body, &hyper_got.body);
            Ok::<(), TestCaseError>(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
