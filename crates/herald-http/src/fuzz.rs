//! herald's own TLS server connection ([`crate::tls_stream`]) against any client bytes, for the
//! fuzz target in `fuzz/` (it panics when an invariant breaks): no panic, buffers within their
//! bounds after every step, and data intact when nothing was forged.
//!
//! A fuzzer cannot complete a handshake by itself (the server's keys are fresh each time), so
//! half of the inputs let a real rustls client complete one first and then script what it does:
//! application data, key updates, close_notify, and raw bytes past its encryption.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::runtime::Runtime;

use crate::tls_stream::TlsStream;

/// A stall is a bug (every wait here has a waker that fires); an input taking this long stalled.
const STALL: Duration = Duration::from_secs(20);
/// Key updates rustls takes in a row without application data between (BoringSSL's limit too);
/// a client sending more is refused, rightly.
const KEY_UPDATES_IN_A_ROW: usize = 32;

/// What every input shares, built once: the runtime and the TLS configurations.
pub struct TlsFuzz {
    runtime: Runtime,
    server: Arc<ServerConfig>,
    /// A client of TLS 1.2 only and one of TLS 1.3 only, both trusting the server's certificate.
    clients: [Arc<ClientConfig>; 2],
}

impl TlsFuzz {
    /// A server with the certificate and key in `cert_pem` and `key_pem` (PEM) and both TLS
    /// versions, as herald's listener would have.
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().expect("certificate");
        let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key");
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key)
            .expect("server configuration");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).expect("root");
        }
        let client = |version| {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .expect("versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        };
        let clients = [client(&rustls::version::TLS12), client(&rustls::version::TLS13)];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        TlsFuzz { runtime, server: Arc::new(server), clients }
    }

    /// One connection. `input[0]`'s low bit chooses raw bytes (0) or a real client (1), which
    /// speaks TLS 1.3 when bit 1 is set; `input[1]` how the bytes are cut into reads and
    /// writes; the rest is the client's bytes (raw) or its script (real client).
    pub fn run(&self, input: &[u8]) {
        let [mode, split, rest @ ..] = input else { return };
        let connection = async {
            if mode & 1 == 0 {
                self.raw(*split, rest).await
            } else {
                let client = self.clients[usize::from(mode >> 1 & 1)].clone();
                self.scripted(client, *split, rest).await
            }
        };
        self.runtime.block_on(async {
            tokio::time::timeout(STALL, connection).await.expect("the connection stalled");
        });
    }

    /// A client that sends `bytes` as they are, cut into pieces by `split`.
    async fn raw(&self, split: u8, bytes: &[u8]) {
        let io = Scripted { input: bytes, at: 0, piece: 0, split, paused: false };
        let accepted = TlsStream::accept_watched(io, self.server.clone(), |tls| tls.assert_bounded()).await;
        // Only a forgery of the server's own key exchange would get here.
        if let Ok(mut tls) = accepted {
            let _ = read_some(&mut tls).await;
            let _ = tls.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            tls.assert_bounded();
        }
    }

    /// A real client that completes the handshake, then follows `script`: pairs of an operation
    /// and a length. The server reads until the end or an error, then answers.
    async fn scripted(&self, client: Arc<ClientConfig>, split: u8, script: &[u8]) {
        let (server_io, client_io) = tokio::io::duplex(16 * 1024);
        let answer = vec![b'a'; usize::from(split) * 64];
        let server = async {
            // In TLS 1.3 the client is done first: forged bytes may reach a server still in it.
            let accepted = TlsStream::accept_watched(server_io, self.server.clone(), |tls| tls.assert_bounded()).await;
            let Ok(mut tls) = accepted else { return (Vec::new(), true) };
            let read = read_some(&mut tls).await;
            let _ = tls.write_all(&answer).await;
            tls.assert_bounded();
            let _ = tls.shutdown().await;
            read
        };
        let client = async {
            let name = ServerName::try_from("localhost").expect("name");
            let mut conn = ClientConnection::new(client, name).expect("client");
            let mut io = client_io;
            handshake(&mut conn, &mut io).await;
            let (sent, forged) = follow(&mut conn, &mut io, script).await;
            // What the server answers, to its end.
            let _ = io.shutdown().await;
            let mut raw = Vec::new();
            let _ = io.read_to_end(&mut raw).await;
            let mut received = Vec::new();
            let mut raw = &raw[..];
            while !raw.is_empty() && conn.read_tls(&mut raw).is_ok() && conn.process_new_packets().is_ok() {
                let _ = conn.reader().read_to_end(&mut received);
            }
            (sent, forged, received)
        };
        let ((read, server_failed), (sent, forged, received)) = tokio::join!(server, client);
        assert!(sent.starts_with(&read), "the server read what the client did not send");
        if !forged {
            assert!(!server_failed, "a well-behaved client's connection failed (its handshake or a read)");
            assert_eq!(read.len(), sent.len(), "the server read all the client sent, to close_notify");
            assert!(received == answer, "the client got the server's answer intact");
        }
    }
}

/// What the server reads to the end (close_notify or the socket's), and whether reading failed.
async fn read_some<IO: AsyncRead + AsyncWrite + Unpin>(tls: &mut TlsStream<IO>) -> (Vec<u8>, bool) {
    let mut read = Vec::new();
    let mut buf = [0; 1000];
    loop {
        let n = tls.read(&mut buf).await;
        tls.assert_bounded();
        match n {
            Ok(0) => return (read, false),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(_) => return (read, true),
        }
    }
}

/// The client's side of the handshake over `io`.
async fn handshake(conn: &mut ClientConnection, io: &mut DuplexStream) {
    let mut buf = vec![0; 4096];
    loop {
        send(conn, io).await;
        if !conn.is_handshaking() {
            return;
        }
        let n = io.read(&mut buf).await.expect("pipe");
        assert!(n > 0, "the server left a real client's handshake");
        conn.read_tls(&mut &buf[..n]).expect("read_tls");
        conn.process_new_packets().expect("the server's handshake");
    }
}

/// Follows `script` (see [`TlsFuzz::scripted`]): returns the application data sent, and whether
/// raw bytes went past the client's encryption (after which the server may fail).
async fn follow(conn: &mut ClientConnection, io: &mut DuplexStream, script: &[u8]) -> (Vec<u8>, bool) {
    let (mut sent, mut forged) = (Vec::new(), false);
    let mut key_updates = 0;
    let mut ops = script;
    while let [op, len, rest @ ..] = ops {
        let len = usize::from(*len).min(rest.len());
        let (bytes, next) = rest.split_at(len);
        ops = next;
        match op % 4 {
            0 => {
                // Application data, as much as 64 times over (records of every size).
                let times = usize::from(op >> 2).max(1);
                for _ in 0..times {
                    conn.writer().write_all(bytes).expect("plaintext");
                    sent.extend_from_slice(bytes);
                }
                if !bytes.is_empty() {
                    key_updates = 0;
                }
            }
            1 if !bytes.is_empty() => {
                send(conn, io).await;
                if io.write_all(bytes).await.is_err() {
                    break;
                }
                forged = true;
            }
            // TLS 1.2 has no key update; then this does nothing.
            2 if key_updates < KEY_UPDATES_IN_A_ROW => {
                key_updates += 1;
                let _ = conn.refresh_traffic_keys();
            }
            3 => {
                conn.send_close_notify();
                break;
            }
            _ => {}
        }
        if !send(conn, io).await {
            break;
        }
    }
    if !forged {
        conn.send_close_notify();
        send(conn, io).await;
    }
    (sent, forged)
}

/// Writes what `conn` has for the socket; false once the server is gone.
async fn send(conn: &mut ClientConnection, io: &mut DuplexStream) -> bool {
    while conn.wants_write() {
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("write_tls");
        if io.write_all(&out).await.is_err() {
            return false;
        }
    }
    true
}

/// The server's socket with a raw client: `input` arrives in pieces (their sizes vary with
/// `split`; all at once when it is 0), a read finding nothing between two of them; what the
/// server writes is taken `split` bytes at a time, and dropped.
struct Scripted<'a> {
    input: &'a [u8],
    at: usize,
    /// Pieces given so far.
    piece: usize,
    split: u8,
    /// The last read found nothing (and woke the task to try again).
    paused: bool,
}

impl Scripted<'_> {
    fn piece_len(&self) -> usize {
        match usize::from(self.split) {
            0 => usize::MAX,
            split => 1 + (split * (self.piece + 1)) % (4 * split + 1),
        }
    }
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at > 0 && !self.paused && self.at < self.input.len() {
            self.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.paused = false;
        let n = self.piece_len().min(self.input.len() - self.at).min(buf.remaining());
        buf.put_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        self.piece += 1;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let n = match self.split {
            0 => data.len(),
            split => data.len().min(usize::from(split)),
        };
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = include_bytes!("../../../tests/fixtures/tls-a.pem");
    const KEY: &[u8] = include_bytes!("../../../tests/fixtures/tls-a.key");

    #[test]
    fn the_harness_runs_raw_bytes_and_scripts_of_both_versions() {
        let fuzz = TlsFuzz::new(CERT, KEY);
        // The 109 bytes of issue 24, whole and a few bytes at a time.
        let mut partial = vec![0x16, 3, 1, 0, 97, 1, 0, 1, 0];
        partial.resize(102, 7);
        partial.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
        for split in [0, 3] {
            fuzz.run(&[[0, split].as_slice(), &partial].concat());
        }
        // Data, a key update, more data of 64 records, close_notify; then the same with raw bytes
        // forged in between.
        let script = [0, 5, 1, 2, 3, 4, 5, 2, 0, 0xfc, 3, 9, 9, 9];
        let forged = [0, 2, 7, 7, 1, 6, 0x17, 3, 3, 0, 1, 0, 0, 2, 8, 8];
        for mode in [1, 3] {
            for split in [0, 1, 200] {
                fuzz.run(&[[mode, split].as_slice(), &script].concat());
                fuzz.run(&[[mode, split].as_slice(), &forged].concat());
            }
        }
    }

    /// Writes the seed corpus of `fuzz/corpus/tls_stream` into `$HERALD_SEEDS`: real
    /// ClientHellos (each version, ALPN, a resumption), the record sequence of issue 24, and
    /// scripts for a real client.
    #[test]
    #[ignore = "a tool: HERALD_SEEDS=dir cargo test -p herald-http --lib seed_corpus -- --ignored"]
    fn seed_corpus() {
        let dir = std::path::PathBuf::from(std::env::var("HERALD_SEEDS").expect("HERALD_SEEDS"));
        std::fs::create_dir_all(&dir).unwrap();
        let fuzz = TlsFuzz::new(CERT, KEY);
        let mut server = (*fuzz.server).clone();
        server.send_tls13_tickets = 2;
        let server = Arc::new(server);
        let name = || ServerName::try_from("localhost").unwrap();
        let hello = |conn: &mut ClientConnection| {
            let mut out = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
            out
        };
        let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, client) in fuzz.clients.iter().enumerate() {
            let mut h2 = (**client).clone();
            h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            for (j, config) in [client.clone(), Arc::new(h2)].into_iter().enumerate() {
                let mut conn = ClientConnection::new(config.clone(), name()).unwrap();
                let first = hello(&mut conn);
                // The rest of the handshake in memory, for a ticket; then a resumption's hello.
                let mut peer = rustls::ServerConnection::new(server.clone()).unwrap();
                let mut bytes = first.clone();
                for _ in 0..10 {
                    peer.read_tls(&mut &bytes[..]).unwrap();
                    peer.process_new_packets().unwrap();
                    bytes.clear();
                    while peer.wants_write() {
                        peer.write_tls(&mut bytes).unwrap();
                    }
                    conn.read_tls(&mut &bytes[..]).unwrap();
                    conn.process_new_packets().unwrap();
                    bytes = hello(&mut conn);
                }
                assert!(!conn.is_handshaking());
                let again = hello(&mut ClientConnection::new(config, name()).unwrap());
                seeds.push((format!("hello-{i}-{j}"), [&[0, 0][..], &first].concat()));
                seeds.push((format!("hello-{i}-{j}-in-pieces"), [&[0, 5][..], &first].concat()));
                seeds.push((format!("resumption-{i}-{j}"), [&[0, 0][..], &again].concat()));
            }
        }
        let mut partial = vec![0x16, 3, 1, 0, 97, 1, 0, 1, 0];
        partial.resize(102, 7);
        partial.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
        seeds.push(("issue-24".into(), [&[0, 0][..], &partial].concat()));
        for mode in [1, 3] {
            seeds.push((format!("script-{mode}"), vec![mode, 2, 0, 5, 1, 2, 3, 4, 5, 2, 0, 0xfc, 3, 9, 9, 9, 3, 0]));
            seeds.push((format!("script-{mode}-forged"), vec![mode, 0, 0, 2, 7, 7, 1, 6, 0x17, 3, 3, 0, 1, 0]));
        }
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
