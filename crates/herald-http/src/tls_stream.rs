//! A server-side TLS connection whose buffers exist only while bytes are in them.
//!
//! tokio-rustls drives rustls's buffered API, which keeps a 4 KiB read buffer for a connection's
//! whole life (rustls's `DeframerVecBuffer` never shrinks below it once the connection has read).
//! A subscriber's connection idles for hours between small writes, so here rustls's unbuffered API
//! runs over buffers this type owns: records read but not yet processed (`incoming`), ciphertext
//! not yet on the socket (`outgoing`) and plaintext not yet read (`plain`). Each is given back as
//! soon as it is empty: an idle connection holds rustls's state and its keys, nothing more.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 4096;
/// The most input held unprocessed: a handshake message of rustls's largest (64 KiB) split over
/// records, and one more record. A peer sending more is broken or hostile.
const MAX_INCOMING: usize = 64 * 1024 + 18 * 1024;
/// Plaintext per write: one record's worth (TLS's largest fragment).
const MAX_FRAGMENT: usize = 16 * 1024;
/// What a record adds to its plaintext, at most: header, explicit nonce (TLS 1.2), content type
/// (TLS 1.3) and tag.
const RECORD_OVERHEAD: usize = 5 + 8 + 1 + 16;
/// Writes given together up to this size share one record (an SSE chunk is three: its size line,
/// the frame, and CRLF); larger ones are copied together through the heap.
const COALESCE: usize = 2048;

pub(crate) struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// Received, not yet processed by rustls.
    incoming: BytesMut,
    /// Encrypted, not yet written to the socket from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted, not yet read from `taken` on.
    plain: Vec<u8>,
    taken: usize,
    /// The peer sent close_notify or closed the socket: nothing more to read.
    read_done: bool,
    /// close_notify is queued: nothing more to write.
    write_done: bool,
    /// rustls or this code failed: rustls is not called again (see [`TlsStream::process`]).
    failed: bool,
}

/// What to do when rustls may send application data.
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where rustls stands once it has processed what was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stand {
    /// Application data may be sent; more can be read from the peer.
    Open,
    /// The handshake waits for the peer.
    Handshaking,
    /// Closed both ways.
    Closed,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// The server's side of a handshake on `io`. Boxed from the start: the connection's futures
    /// then move and keep a pointer, not rustls's state (1.2 KiB), which a future would hold in
    /// each of its states that has had it.
    pub(crate) async fn accept(io: IO, config: Arc<ServerConfig>) -> io::Result<Box<Self>> {
        Self::accept_watched(io, config, |_| {}).await
    }

    /// [`TlsStream::accept`], `watch` shown the connection after each step of the handshake (the
    /// fuzz target, `crate::fuzz`, checks there that the buffers stay within their bounds).
    pub(crate) async fn accept_watched(
        io: IO,
        config: Arc<ServerConfig>,
        mut watch: impl FnMut(&Self),
    ) -> io::Result<Box<Self>> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut tls = Box::new(TlsStream {
            io,
            conn,
            incoming: BytesMut::new(),
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            taken: 0,
            read_done: false,
            write_done: false,
            failed: false,
        });
        std::future::poll_fn(|cx| {
            let step = tls.poll_handshake(cx);
            watch(&tls);
            step
        })
        .await?;
        Ok(tls)
    }

    /// Panics unless the buffers are within their bounds, whatever the peer sent: input held
    /// unprocessed at most `MAX_INCOMING`, decrypted data as much (it is decrypted from that),
    /// and what waits for the socket one handshake flight or one record and an alert.
    pub(crate) fn assert_bounded(&self) {
        assert!(self.incoming.len() <= MAX_INCOMING, "{} bytes held unprocessed", self.incoming.len());
        // `reserve` may allocate up to twice what it holds (a `Vec`'s doubling), and keeps a
        // discarded front until it reclaims it.
        assert!(
            self.incoming.capacity() <= 4 * (MAX_INCOMING + READ_SIZE),
            "{} bytes allocated",
            self.incoming.capacity()
        );
        assert!(
            self.taken <= self.plain.len() && self.plain.len() <= MAX_INCOMING,
            "{} bytes decrypted",
            self.plain.len()
        );
        assert!(
            self.sent <= self.outgoing.len() && self.outgoing.len() <= 32 * 1024,
            "{} bytes to send",
            self.outgoing.len()
        );
    }

    /// The protocol agreed by ALPN.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Until the handshake is done and all it wrote is on the socket: reads never write, and a
    /// TLS 1.2 client sends nothing before it has the server's last handshake flight.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (stand, _) = match self.process(Action::Nothing) {
                Ok(processed) => processed,
                Err(e) => {
                    // The alert, if the socket takes it now; the connection is closed after.
                    let _ = self.poll_send(cx);
                    return Poll::Ready(Err(e));
                }
            };
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if stand == Stand::Closed || self.read_done {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if ready!(self.poll_receive(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Runs rustls over what was received until it needs the socket: handshake records it
    /// answers are queued in `outgoing`, decrypted data in `plain`, and `action` is done once
    /// application data may be sent. Returns where rustls stands and how much of an
    /// `Action::Encrypt` was encrypted (0 when it could not be).
    ///
    /// rustls's unbuffered API keeps no input of its own: a handshake message that spans records
    /// stays in `incoming`, and rustls remembers it by offsets into that buffer. So rustls is
    /// only ever given `incoming`, whose front is discarded by exactly what rustls reports on
    /// every way out of a step, errors included; after an error it is not called again (its
    /// offsets may point past what is left). A call with any other buffer, as an empty one to
    /// fetch an alert once was, indexes out of it: a panic a peer could cause at will.
    fn process(&mut self, action: Action<'_>) -> io::Result<(Stand, usize)> {
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS connection failed earlier"));
        }
        let mut action = Some(action);
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(&mut self.incoming);
            let mut encrypted = 0;
            let step = match state {
                Err(e) => Err(Failure::Tls(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => loop {
                    match traffic.next_record() {
                        Some(Ok(record)) => {
                            discard += record.discard;
                            self.plain.extend_from_slice(record.payload);
                        }
                        Some(Err(e)) => break Err(Failure::Tls(e)),
                        None => break Ok(None),
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    grow_into(&mut self.outgoing, 512, |out| data.encode(out).map_err(Short::from))
                        .map(|()| None)
                        .map_err(Failure::Io)
                }
                // Queued in `outgoing`, which goes out before anything written later.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    Ok(None)
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match action.take() {
                    Some(Action::Encrypt(data)) => grow_into(&mut self.outgoing, data.len() + RECORD_OVERHEAD, |out| {
                        traffic.encrypt(data, out).map_err(Short::from)
                    })
                    .map(|()| encrypted = data.len()),
                    Some(Action::CloseNotify) => grow_into(&mut self.outgoing, RECORD_OVERHEAD, |out| {
                        traffic.queue_close_notify(out).map_err(Short::from)
                    }),
                    Some(Action::Nothing) | None => Ok(()),
                }
                .map(|()| Some(Stand::Open))
                .map_err(Failure::Io),
                Ok(ConnectionState::PeerClosed) => {
                    self.read_done = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.read_done = true;
                    Ok(Some(Stand::Closed))
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Stand::Handshaking)),
                // Early data is not enabled; later states are unknown to this code.
                Ok(_) => Err(Failure::Io(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state"))),
            };
            self.incoming.advance(discard);
            match step {
                Ok(Some(stand)) => return Ok((stand, encrypted)),
                Ok(None) => {}
                Err(failure) => return Err(self.fail(failure)),
            }
        }
    }

    /// Ends the connection's use of rustls after `failure`. The alert rustls queued for the peer
    /// (a handshake failure, a bad record) goes in `outgoing` first, so that a client is told
    /// why, not only cut off; what was received is then given back, rustls never seeing it again.
    fn fail(&mut self, failure: Failure) -> io::Error {
        self.failed = true;
        let e = match failure {
            Failure::Tls(e) => e,
            Failure::Io(e) => {
                self.incoming = BytesMut::new();
                return e;
            }
        };
        // rustls hands out what it queued before it reads input again (the alert is one record).
        // Once only: with nothing queued, rustls would read the same input again and fail again.
        // What it discards does not matter: `incoming` is given back whole after.
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
            let _ = grow_into(&mut self.outgoing, 64, |out| data.encode(out).map_err(Short::from));
        }
        self.incoming = BytesMut::new();
        invalid(e)
    }

    /// Reads from the socket into `incoming`, never past `MAX_INCOMING`; 0 at its end. An empty
    /// buffer is given back while the socket has nothing.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let room = MAX_INCOMING.saturating_sub(self.incoming.len());
        if room == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS input too large")));
        }
        let want = room.min(READ_SIZE);
        self.incoming.reserve(want);
        // Limited: `reserve` may leave more room than asked, and a read fills all it is given.
        let mut limited = BufMut::limit(&mut self.incoming, want);
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut limited);
        if read.is_pending() && self.incoming.is_empty() {
            self.incoming = BytesMut::new();
        }
        read
    }

    /// Writes `outgoing` to the socket; it is given back once all of it is there.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }
}

/// Runs `write` on `room` bytes at the end of `buf`, more if it says it needs more, and keeps
/// what it wrote.
fn grow_into(
    buf: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> io::Result<()> {
    let start = buf.len();
    loop {
        buf.resize(start + room, 0);
        match write(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(());
            }
            Err(Short::Needs(needed)) if needed > room => room = needed,
            Err(Short::Needs(_)) => {
                buf.truncate(start);
                return Err(invalid("TLS record does not fit the room rustls asked for"));
            }
            Err(Short::Failed(e)) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

/// Why a step of [`TlsStream::process`] failed.
enum Failure {
    /// rustls's: the connection is over, and rustls may have an alert queued.
    Tls(rustls::Error),
    /// This code's, with rustls's state intact.
    Io(io::Error),
}

/// Why rustls did not write into a buffer.
enum Short {
    Needs(usize),
    Failed(io::Error),
}

impl From<EncodeError> for Short {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Short::Needs(required_size),
            e => Short::Failed(invalid(e)),
        }
    }
}

impl From<EncryptError> for Short {
    fn from(e: EncryptError) -> Self {
        match e {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Short::Needs(required_size),
            e => Short::Failed(invalid(e)),
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.taken);
                buf.put_slice(&this.plain[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plain.len() {
                    this.plain = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            this.process(Action::Nothing)?;
            if this.taken < this.plain.len() || this.read_done {
                continue;
            }
            // Reads never write: with a reader and a writer in two tasks, the socket's one
            // write waker would be the reader's and the writer's wake-up lost. What rustls
            // answered meanwhile (a key update) goes out before the next application data, as
            // TLS 1.3 asks.
            if ready!(this.poll_receive(cx))? == 0 {
                this.read_done = true;
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What earlier writes queued goes first: a client that reads nothing holds writes back.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_done {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let (_, n) = this.process(Action::Encrypt(&data[..data.len().min(MAX_FRAGMENT)]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // On the socket now if it takes it; otherwise with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else { return self.poll_write(cx, &[]) };
        if first.len() == total || first.len() >= MAX_FRAGMENT {
            return self.poll_write(cx, first);
        }
        // One record for what was given together (encrypted all or nothing, so the count returned
        // is of the leading bytes of `bufs`).
        let take = total.min(MAX_FRAGMENT);
        let mut small = [0u8; COALESCE];
        let mut large = Vec::new();
        let joined = if take <= COALESCE {
            &mut small[..take]
        } else {
            large.resize(take, 0);
            &mut large[..]
        };
        let mut at = 0;
        for b in bufs {
            let n = b.len().min(take - at);
            joined[at..at + n].copy_from_slice(&b[..n]);
            at += n;
        }
        self.poll_write(cx, joined)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_done {
            this.write_done = true;
            this.process(Action::CloseNotify)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ServerConfig> {
        let certs =
            CertificateDer::pem_file_iter(fixture("tls-a.pem")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("tls-a.key")).unwrap();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn connector() -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(fixture("tls-a.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// The server's socket, taking and giving at most `piece` bytes per call.
    struct Pieces {
        io: tokio::io::DuplexStream,
        piece: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = buf.remaining().min(self.piece);
            let mut piece = ReadBuf::new(&mut buf.initialize_unfilled()[..n]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut piece))?;
            let filled = piece.filled().len();
            buf.advance(filled);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            let n = data.len().min(self.piece);
            Pin::new(&mut self.io).poll_write(cx, &data[..n])
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    type Client = tokio_rustls::client::TlsStream<tokio::io::DuplexStream>;

    /// A server and a client over a pipe of `pipe` bytes, both handshakes done.
    async fn pair(
        versions: &[&'static rustls::SupportedProtocolVersion],
        pipe: usize,
    ) -> (Box<TlsStream<Pieces>>, Client) {
        pair_in_pieces(versions, pipe, usize::MAX).await
    }

    /// [`pair`], the server's socket reading and writing `piece` bytes at a time.
    async fn pair_in_pieces(
        versions: &[&'static rustls::SupportedProtocolVersion],
        pipe: usize,
        piece: usize,
    ) -> (Box<TlsStream<Pieces>>, Client) {
        let (server_io, client_io) = tokio::io::duplex(pipe);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            TlsStream::accept(Pieces { io: server_io, piece }, server_config(versions)),
            connector().connect(name, client_io)
        );
        (server.unwrap(), client.unwrap())
    }

    const BOTH: [&[&rustls::SupportedProtocolVersion]; 2] = [&[&rustls::version::TLS13], &[&rustls::version::TLS12]];

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[tokio::test]
    async fn a_megabyte_each_way_at_once_arrives_intact_with_alpn_agreed() {
        for versions in BOTH {
            let (server, client) = pair(versions, 4096).await;
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
            let (mut server_read, mut server_write) = tokio::io::split(server);
            let (mut client_read, mut client_write) = tokio::io::split(client);
            let (up, down) = (pattern(1 << 20, 1), pattern(1 << 20, 7));
            let (sent_up, sent_down) = (up.clone(), down.clone());
            let writes = async {
                tokio::join!(
                    async {
                        client_write.write_all(&sent_up).await.unwrap();
                        client_write.flush().await.unwrap();
                    },
                    async {
                        server_write.write_all(&sent_down).await.unwrap();
                        server_write.flush().await.unwrap();
                    },
                )
            };
            let reads = async {
                let (mut got_up, mut got_down) = (vec![0; up.len()], vec![0; down.len()]);
                tokio::join!(async { server_read.read_exact(&mut got_up).await.unwrap() }, async {
                    client_read.read_exact(&mut got_down).await.unwrap()
                },);
                (got_up, got_down)
            };
            let (_, (got_up, got_down)) = tokio::join!(writes, reads);
            assert!(got_up == up && got_down == down, "bytes changed in transit ({versions:?})");
        }
    }

    #[tokio::test]
    async fn records_read_and_written_three_bytes_at_a_time_arrive_intact() {
        for versions in BOTH {
            let (mut server, mut client) = pair_in_pieces(versions, 64 * 1024, 3).await;
            let (up, down) = (pattern(40_000, 3), pattern(40_000, 9));
            let (mut got_up, mut got_down) = (vec![0; up.len()], vec![0; down.len()]);
            tokio::join!(
                async {
                    client.write_all(&up).await.unwrap();
                    client.flush().await.unwrap();
                    client.read_exact(&mut got_down).await.unwrap();
                },
                async {
                    server.read_exact(&mut got_up).await.unwrap();
                    server.write_all(&down).await.unwrap();
                    server.flush().await.unwrap();
                },
            );
            assert!(got_up == up && got_down == down, "bytes changed in transit ({versions:?})");
        }
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        for versions in BOTH {
            let (mut server, mut client) = pair(versions, 64 * 1024).await;
            client.write_all(b"GET /stream HTTP/1.1\r\n\r\n").await.unwrap();
            client.flush().await.unwrap();
            let mut head = [0; 24];
            server.read_exact(&mut head).await.unwrap();
            server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            server.flush().await.unwrap();
            let mut answer = [0; 19];
            client.read_exact(&mut answer).await.unwrap();
            // A subscriber's connection: the server waits on a read that has nothing.
            let mut scratch = [0; 64];
            let waited = tokio::time::timeout(Duration::from_millis(50), server.read(&mut scratch)).await;
            assert!(waited.is_err(), "nothing was sent");
            assert_eq!(
                (server.incoming.capacity(), server.outgoing.capacity(), server.plain.capacity()),
                (0, 0, 0),
                "buffers given back ({versions:?})"
            );
        }
    }

    #[tokio::test]
    async fn small_writes_given_together_go_in_one_record() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
        // The session tickets sent after the handshake are taken first.
        server.write_all(b"x").await.unwrap();
        client.read_exact(&mut [0]).await.unwrap();
        let parts = [IoSlice::new(b"1a\r\n"), IoSlice::new(b"data: {\"x\":1}\n\n"), IoSlice::new(b"\r\n")];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let n = std::future::poll_fn(|cx| Pin::new(&mut server).poll_write_vectored(cx, &parts)).await.unwrap();
        assert_eq!(n, total);
        // One TLS 1.3 record: a 5-byte header, the data, its content type and a 16-byte tag.
        let (raw, _) = client.get_mut();
        let mut record = vec![0; 5 + total + 1 + 16];
        raw.read_exact(&mut record).await.unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([record[3], record[4]])), total + 1 + 16);
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_followed() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
        for round in 0..3u8 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round; 100]).await.unwrap();
            client.flush().await.unwrap();
            let mut got = [0; 100];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 100]);
            server.write_all(&[round + 10; 100]).await.unwrap();
            server.flush().await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round + 10; 100]);
        }
    }

    #[tokio::test]
    async fn records_that_do_not_decrypt_are_an_error_not_data() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
        // An application-data record of the right shape whose tag does not match.
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend_from_slice(&[0x5a; 40]);
        client.get_mut().0.write_all(&forged).await.unwrap();
        let mut got = [0; 64];
        let read = server.read(&mut got).await;
        assert_eq!(read.map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData));
    }

    #[tokio::test]
    async fn close_notify_ends_reads_cleanly_both_ways() {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("a clean end, not a truncation");
        assert_eq!(got, b"bye");
        assert!(server.write_all(b"more").await.is_err(), "nothing is written after close_notify");

        let (mut server, mut client) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
        client.write_all(b"last").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last");
    }

    #[tokio::test]
    async fn a_failed_handshake_is_an_error_and_a_client_speaking_tls_is_told_why() {
        let (server_io, mut client_io) = tokio::io::duplex(4096);
        client_io.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let accepted = TlsStream::accept(server_io, server_config(&[&rustls::version::TLS13])).await;
        assert_eq!(accepted.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidData));

        // One that offers only TLS 1.2 to a server of TLS 1.3 is told so by an alert.
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(fixture("tls-a.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let old_client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connect = tokio_rustls::TlsConnector::from(Arc::new(old_client))
            .connect(ServerName::try_from("localhost").unwrap(), client_io);
        let (accepted, connected) =
            tokio::join!(TlsStream::accept(server_io, server_config(&[&rustls::version::TLS13])), connect);
        assert_eq!(accepted.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
        let told = connected.err().and_then(|e| e.into_inner()).and_then(|e| e.downcast::<rustls::Error>().ok());
        assert!(
            matches!(told.as_deref(), Some(rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion))),
            "the client was told why: {told:?}"
        );

        // One that leaves mid-handshake.
        let (server_io, client_io) = tokio::io::duplex(4096);
        drop(client_io);
        let accepted = TlsStream::accept(server_io, server_config(&[&rustls::version::TLS13])).await;
        assert_eq!(accepted.err().map(|e| e.kind()), Some(io::ErrorKind::UnexpectedEof));
    }

    /// What a server makes of `bytes` sent by a client that then stops writing.
    async fn accept_bytes(bytes: &[u8]) -> io::Result<()> {
        let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
        client_io.write_all(bytes).await.unwrap();
        client_io.shutdown().await.unwrap();
        TlsStream::accept(server_io, server_config(&[&rustls::version::TLS13, &rustls::version::TLS12])).await.map(drop)
    }

    /// A handshake record holding the first `len` bytes of a ClientHello that claims 256.
    fn partial_client_hello(len: usize) -> Vec<u8> {
        let mut record = vec![0x16, 3, 1];
        record.extend_from_slice(&u16::try_from(4 + len).unwrap().to_be_bytes());
        record.extend_from_slice(&[1, 0, 1, 0]);
        record.extend_from_slice(&pattern(len, 5)[..]);
        record
    }

    #[tokio::test]
    async fn a_record_after_part_of_a_client_hello_is_an_error_not_a_panic() {
        // rustls holds the partial hello in our buffer by its offset; the error after it must
        // not send rustls back to a buffer without those bytes (issue 24: 109 bytes did that).
        let alert = [0x15, 3, 3, 0, 2, 2, 40];
        let mut cases = vec![[partial_client_hello(93), alert.to_vec()].concat()];
        assert_eq!(cases[0].len(), 109);
        // Other records that may not come between a handshake message's fragments.
        cases.push([partial_client_hello(10), vec![0x17, 3, 3, 0, 3, 1, 2, 3]].concat());
        cases.push([partial_client_hello(10), vec![0x14, 3, 3, 0, 1, 1]].concat());
        // A fragment that makes the message larger than rustls takes.
        cases.push([vec![0x16, 3, 1, 0, 2, 1, 0xff], vec![0x16, 3, 1, 0, 2, 0xff, 0xff]].concat());
        let mut huge = vec![0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff];
        huge.extend_from_slice(&alert);
        cases.push(huge);
        // Bytes that are not a record at all.
        cases.push([partial_client_hello(10), b"GET / HTTP/1.1\r\n\r\n".to_vec()].concat());
        for (i, bytes) in cases.iter().enumerate() {
            let accepted = accept_bytes(bytes).await;
            assert_eq!(accepted.map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData), "case {i}");
        }
    }

    #[tokio::test]
    async fn a_handshake_message_that_never_ends_is_refused_at_the_cap_not_past_it() {
        // A ClientHello of rustls's largest size, one byte per record: rustls keeps every
        // record until the message is whole, so the cap is what stops it.
        let mut bytes = vec![0x16, 3, 1, 0, 4, 1, 0, 0xff, 0xff];
        for _ in 0..30_000 {
            bytes.extend_from_slice(&[0x16, 3, 1, 0, 1, 7]);
        }
        let (server_io, mut client_io) = tokio::io::duplex(256 * 1024);
        client_io.write_all(&bytes).await.unwrap();
        let mut held = 0;
        let accepted = TlsStream::accept_watched(server_io, server_config(&[&rustls::version::TLS13]), |tls| {
            held = held.max(tls.incoming.len());
        })
        .await;
        assert_eq!(accepted.err().map(|e| e.to_string()), Some("TLS input too large".to_string()));
        assert_eq!(held, MAX_INCOMING);
    }
}
