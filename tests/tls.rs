//! HTTPS on the public listener: a self-signed certificate, HTTP/2 by ALPN, reload on change.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herald_tests::*;

const ROUTES: &str = "routes:\n  - name: tasks\n    path: /tasks\n    access: public\n";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// `curl -k` against herald: (HTTP version, body, verbose output).
fn curl(args: &[&str], url: &str) -> (String, String, String) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "3", "-v", "-w", "\n%{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = stdout.rsplit_once('\n').unwrap_or(("", ""));
    (version.to_string(), body.to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn start_tls() -> (LegacyApi, Gateway, tempfile::TempDir) {
    start_tls_with(ROUTES).await
}

/// [`start_tls`] with `rest` of the configuration (routes, other sections).
async fn start_tls_with(rest: &str) -> (LegacyApi, Gateway, tempfile::TempDir) {
    let (api, upstream) = start_api().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("tls-a.pem"), dir.path().join("cert.pem")).unwrap();
    std::fs::copy(fixture("tls-a.key"), dir.path().join("key.pem")).unwrap();
    let tls = format!(
        "server:\n  tls:\n    cert: {}\n    key: {}\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let yaml = config(upstream, rest).replacen("server:\n", &tls, 1);
    let gw = Gateway::start(&yaml).await;
    (api, gw, dir)
}

// curl runs as a blocking child process: the fake upstream needs another thread meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2_and_streams_over_it() {
    let (_api, gw, _dir) = start_tls().await;
    let (version, body, verbose) = curl(&[], &gw.https_url("/echo?x=1"));
    assert_eq!(version, "2", "{verbose}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}\n{verbose}"));
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert!(verbose.contains("herald-test-a"), "{verbose}");
    let (version, _, _) = curl(&["--http1.1"], &gw.https_url("/echo"));
    assert_eq!(version, "1.1");
    // An SSE stream over HTTP/2.
    let (_, stream, _) = curl(&["-N", "--max-time", "1"], &gw.https_url("/tasks/event-stream"));
    assert!(stream.contains("event: snapshot"), "{stream}");
    // Plain HTTP on the TLS port is refused, not served.
    assert!(reqwest::get(gw.url("/echo")).await.is_err());
}

// A stream over HTTP/1.1 and TLS is written directly on the TLS connection (as a plain one is on
// its socket); everything else there is hyper's, keep-alive included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_requests_over_http1_and_tls() {
    let (api, gw, _dir) = start_tls().await;
    let (version, stream, verbose) =
        curl(&["--http1.1", "-N", "--max-time", "2", "-H", "accept: text/event-stream"], &gw.https_url("/tasks"));
    assert_eq!(version, "1.1", "{verbose}");
    assert!(stream.contains("event: snapshot") && stream.contains("retry: "), "{stream}\n{verbose}");
    assert!(verbose.contains("transfer-encoding: chunked"), "{verbose}");

    // Events keep coming on a stream held open.
    let (version, stream, _) = {
        let url = gw.https_url("/tasks/event-stream");
        let adding = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            api.add_task("over tls");
        });
        let got =
            tokio::task::spawn_blocking(move || curl(&["--http1.1", "-N", "--max-time", "7"], &url)).await.unwrap();
        adding.await.unwrap();
        got
    };
    assert_eq!(version, "1.1");
    assert!(stream.contains("event: change") && stream.contains("over tls"), "{stream}");

    // A head too large for server.max_header_size (64 KiB) is hyper's to refuse, over TLS too.
    let big = format!("x-big: {}", "b".repeat(80 << 10));
    let (_, _, verbose) = curl(&["--http1.1", "-H", &big], &gw.https_url("/tasks/event-stream"));
    assert!(verbose.contains("< HTTP/1.1 431"), "{verbose:.2000}");

    // Requests that are not streams, one after the other on a kept-alive connection.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(fixture("tls-a.pem")).unwrap()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    for path in ["/tasks", "/echo?n=1", "/echo?n=2"] {
        let resp = client.get(gw.https_url(path)).send().await.unwrap();
        assert_eq!((resp.version(), resp.status().as_u16()), (reqwest::Version::HTTP_11, 200), "{path}");
    }
}

// The direct path over TLS keeps the promise a plain socket keeps (section 6): a subscriber
// whose connection takes nothing for `sse.write_timeout` is dropped.
#[tokio::test]
async fn a_subscriber_over_tls_that_reads_nothing_is_dropped_after_write_timeout() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;

    let (api, gw, _dir) = start_tls_with(
        "sse:\n  write_timeout: 500ms\nroutes:\n  - name: tasks\n    path: /tasks\n    access: public\n    poll: { interval: 50ms, min_interval: 50ms, adaptive: false }\n",
    )
    .await;
    api.pad_tasks(64 << 10);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(fixture("tls-a.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A client with a tiny receive buffer that never reads after its handshake.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(gw.public).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stuck = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)).connect(name, tcp).await.unwrap();
    stuck.write_all(b"GET /tasks/event-stream HTTP/1.1\r\nhost: herald\r\n\r\n").await.unwrap();
    stuck.flush().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_picked_up_without_a_restart() {
    let (_api, gw, dir) = start_tls().await;
    assert!(curl(&[], &gw.https_url("/echo")).2.contains("herald-test-a"));
    // Replace both files, as certbot or a Kubernetes secret update would.
    std::fs::copy(fixture("tls-b.key"), dir.path().join("key.pem")).unwrap();
    std::fs::copy(fixture("tls-b.pem"), dir.path().join("cert.pem")).unwrap();
    gw.signal("HUP");
    let mut served = String::new();
    for _ in 0..50 {
        served = curl(&[], &gw.https_url("/echo")).2;
        if served.contains("herald-test-b") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served.contains("herald-test-b"), "{served}");
}

#[test]
fn unreadable_certificates_are_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(
        &path,
        "server:\n  tls: { cert: missing.pem, key: missing.key }\nupstream:\n  url: http://127.0.0.1:1\nroutes:\n  - name: t\n    path: /t\n",
    )
    .unwrap();
    let out = Command::new(herald_bin()).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.tls: cannot read certificate") && stderr.contains("missing.pem"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_trusted_through_ca_file() {
    let api = LegacyApi::new();
    let upstream =
        api.serve_tls("127.0.0.1:0".parse().unwrap(), &fixture("tls-a.pem"), &fixture("tls-a.key")).await.unwrap();
    let yaml = config(upstream, ROUTES).replace("url: http://", "url: https://");
    let trusted =
        yaml.replace("  timeout: 2s\n", &format!("  timeout: 2s\n  ca_file: {}\n", fixture("tls-a.pem").display()));

    let gw = Gateway::start(&trusted).await;
    let mut stream = gw.subscribe("/tasks/event-stream", &[]).await;
    assert_eq!(stream.status, 200, "{}\n{}", stream.body, gw.logs());
    assert_eq!(stream.next_within(SOON).await.unwrap().json(), api.tasks(), "polls over https");
    let echo = reqwest::get(gw.url("/echo?via=tls")).await.unwrap();
    assert_eq!(echo.status(), 200, "pass-through over https");

    // Without the extra root the self-signed upstream is refused.
    let untrusting = Gateway::start(&yaml).await;
    assert_eq!(untrusting.subscribe("/tasks/event-stream", &[]).await.status, 502);
    assert_eq!(reqwest::get(untrusting.url("/echo")).await.unwrap().status(), 502);
}
