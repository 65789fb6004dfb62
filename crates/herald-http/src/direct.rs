//! SSE streams served without keeping hyper's connection state.
//!
//! A stream lives for hours and writes a few frames; hyper would keep an HTTP/1 connection's read
//! and write buffers (8 KiB and up to 16 KiB) and its dispatcher for all that time. So on a plain
//! connection, when a request head read by [`crate::relay`] asks for a stream, the response is
//! written to the socket directly (head, then each frame as a chunk) and the connection closes
//! when the stream ends. Connections that need hyper go to it with the bytes already read put
//! back in front ([`Prefixed`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::Body;

/// The answer to a stream request.
pub(crate) type DirectAnswer = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A GET head without a body, HTTP/1.1, that this module may answer; `None` otherwise.
pub(crate) fn parse(buf: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf).ok()? else { return None };
    if len != buf.len() || req.method != Some("GET") || req.version != Some(1) {
        // Pipelined bytes after the head, another method, or HTTP/1.0: hyper's.
        return None;
    }
    let mut builder = Request::builder().method(http::Method::GET).uri(req.path?);
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "content-length" || name == "transfer-encoding" || name == "upgrade" || name == "expect" {
            return None;
        }
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).ok()
}

/// Writes `resp` to the connection (TCP, or TLS over it): chunked when its length is unknown (a
/// stream), with a length otherwise; stops when the body ends or the client leaves. The
/// connection is not reused.
pub(crate) async fn write<S>(stream: &mut S, resp: Response<Body>, write_timeout: Duration) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let length = http_body::Body::size_hint(resp.body()).exact();
    // The answer's fields are dropped once written out: a stream lasts hours.
    let (head, mut body) = {
        let (parts, body) = resp.into_parts();
        (head(&parts, length), body)
    };
    // A subscriber whose socket takes nothing for `sse.write_timeout` is dropped.
    let mut conn = crate::io::Stalled::new(stream, write_timeout);
    conn.write_all(&head).await?;
    drop(head);
    // Flushed after the head and each frame: a TLS connection may hold what a write could not
    // put on the socket until it is flushed, and a stream idles between frames.
    conn.flush().await?;
    let mut scratch = [0u8; 64];
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // Anything the client sends now is ignored; its leaving ends the stream.
            n = conn.read(&mut scratch) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(mut data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if length.is_some() {
            conn.write_all_buf(&mut data).await?;
        } else {
            let mut size = [0u8; 18];
            let mut chunk = Buf::chain(chunk_size(data.len(), &mut size), data).chain(&b"\r\n"[..]);
            while chunk.has_remaining() {
                conn.write_buf(&mut chunk).await?;
            }
        }
        conn.flush().await?;
    }
    if length.is_none() {
        conn.write_all(b"0\r\n\r\n").await?;
    }
    conn.shutdown().await
}

/// The head of an answer written by [`write`]: `connection: close`, and chunked unless `length`.
fn head(parts: &http::response::Parts, length: Option<u64>) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ndate: {}\r\nconnection: close\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or(""),
        httpdate::fmt_http_date(std::time::SystemTime::now())
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => head.extend_from_slice(format!("content-length: {n}\r\n\r\n").as_bytes()),
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
    }
    head
}

/// A chunk's size line (`1a2b\r\n`), written into `buf`.
fn chunk_size(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf[..digits].iter_mut().enumerate() {
        *b = b"0123456789abcdef"[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    buf[digits..digits + 2].copy_from_slice(b"\r\n");
    &buf[..digits + 2]
}

/// A connection with bytes already read put back in front, for hyper.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix: Bytes::from(prefix), inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that holds writes until flushed (as TLS may) gets the head and each frame
    /// while the stream waits for the next one.
    #[tokio::test]
    async fn each_frame_is_flushed_while_the_stream_waits() {
        use futures_util::StreamExt;
        use http_body_util::StreamBody;

        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let (frames, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let body = stream_of(rx).map(|b| Ok::<_, crate::BoxError>(hyper::body::Frame::data(b)));
        let resp = Response::new(StreamBody::new(body).boxed_unsync());
        let writer = tokio::spawn(async move {
            let mut held = tokio::io::BufWriter::new(server);
            write(&mut held, resp, Duration::from_secs(30)).await
        });
        frames.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"data: 1\n\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("the frame arrives while the stream waits for the next")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
        drop(frames);
        writer.await.unwrap().unwrap();
    }

    /// The receiving half of a channel as a stream.
    fn stream_of(rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0u8; 18];
        for len in [0, 1, 15, 16, 255, 4096, 1 << 20, usize::MAX] {
            assert_eq!(chunk_size(len, &mut buf), format!("{len:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn only_plain_get_heads_are_taken() {
        let req =
            parse(b"GET /tasks/event-stream?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        assert_eq!(req.uri(), "/tasks/event-stream?x=1");
        assert_eq!(req.headers()["accept"], "text/event-stream");
        for other in [
            &b"POST /tasks HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /tasks HTTP/1.0\r\n\r\n",
            b"GET /tasks HTTP/1.1\r\ncontent-length: 1\r\n\r\nx",
            b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            b"GET /tasks HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert!(parse(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
