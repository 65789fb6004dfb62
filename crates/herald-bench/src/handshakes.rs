//! The `handshakes` scenario: full TLS handshakes per second (no session resumption), each
//! followed by one small request on the new connection, then closed; `--conns` clients at once
//! for `--secs`. Against herald (started here, serving the tests' certificate) or a server already
//! running (`--addr`, e.g. nginx with the same certificate: benches/handshakes.sh runs both).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_testkit::LegacyApi;
use herald_tests::Gateway;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::percentile;
use crate::subscribers::{client_config, CERT_PEM, KEY_PEM};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Clients, each handshaking again as soon as its last connection closed.
    #[arg(long, default_value_t = 32)]
    pub conns: usize,
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// A TLS server already running; default: herald, started here.
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// The request made on each connection (herald answers `/_herald/none` itself: a 404).
    #[arg(long, default_value = "/_herald/none")]
    pub path: String,
}

/// A TLS client trusting the tests' certificate, without session resumption, so every
/// connection is a full handshake.
fn client() -> tokio_rustls::TlsConnector {
    let mut config = client_config(b"http/1.1");
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One connection: handshake, request, read to the end; how long it took.
async fn once(tls: &tokio_rustls::TlsConnector, addr: SocketAddr, request: &[u8]) -> std::io::Result<Duration> {
    let started = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut s = tls.connect(name, tcp).await?;
    s.write_all(request).await?;
    let mut sink = [0u8; 4096];
    let mut answered = false;
    loop {
        match s.read(&mut sink).await {
            Ok(0) => break,
            Ok(n) => answered |= sink[..n].starts_with(b"HTTP/1.1 "),
            // Servers that close without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && answered => break,
            Err(e) => return Err(e),
        }
    }
    if !answered {
        return Err(std::io::Error::other("no answer"));
    }
    Ok(started.elapsed())
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    // herald with TLS in front of the testkit API, unless another server is named.
    let mut herald = None;
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let api = LegacyApi::new();
            let upstream = api.serve("127.0.0.1:0".parse()?).await?;
            let dir = tempfile::tempdir()?;
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, CERT_PEM)?;
            std::fs::write(&key, KEY_PEM)?;
            let yaml = format!(
                "server: {{ listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, tls: {{ cert: '{}', key: '{}' }} }}\n\
                 upstream: {{ url: 'http://{upstream}' }}\nlog: {{ format: json, level: info }}\n\
                 routes: [ {{ name: tasks, path: /tasks, access: public }} ]\n",
                cert.display(),
                key.display()
            );
            let gw = Gateway::start(&yaml).await;
            let addr = gw.public;
            herald = Some((gw, api, dir));
            addr
        }
    };
    let tls = client();
    let request: Arc<[u8]> =
        format!("GET {} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n", args.path).into_bytes().into();
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.conns {
        let (tls, request) = (tls.clone(), request.clone());
        clients.push(tokio::spawn(async move {
            let (mut took, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                match once(&tls, addr, &request).await {
                    Ok(d) => took.push(d.as_secs_f64() * 1000.0),
                    Err(_) => failed += 1,
                }
            }
            (took, failed)
        }));
    }
    let (mut took, mut failed) = (Vec::new(), 0);
    for c in clients {
        let (t, f) = c.await?;
        took.extend(t);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(herald);
    took.sort_by(f64::total_cmp);
    let per_second = took.len() as f64 / elapsed;
    eprintln!(
        "  {} handshakes in {elapsed:.1} s: {per_second:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {failed} failed",
        took.len(),
        percentile(&took, 50.0),
        percentile(&took, 99.0)
    );
    Ok(json!({
        "scenario": "handshakes",
        "target": args.addr.map_or("herald".to_string(), |a| a.to_string()),
        "conns": args.conns,
        "handshakes": took.len(),
        "per_second": per_second.round(),
        "ms": { "p50": percentile(&took, 50.0), "p99": percentile(&took, 99.0) },
        "failed": failed,
    }))
}
