//! A connection's way in. A plain one's requests start in the pass-through's fast lane, which
//! asks dispatch whether herald claims a path; a claimed request for a stream is answered
//! directly on the socket ([`direct`]); anything else goes to hyper with the bytes read so far.
//! An HTTP/1.1 connection over TLS has its first request read here: a stream is answered
//! directly on the TLS connection the same way, anything else goes to hyper.

use std::net::SocketAddr;

use herald_proxy::fast::{self, Outcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::app::Current;
use crate::direct;
use crate::io::Limits;

/// Where a plain connection goes after the front.
pub(crate) enum Front {
    /// It is finished.
    Done,
    /// To hyper, starting with these bytes.
    Hyper(TcpStream, Vec<u8>),
}

/// The first request of an HTTP/1.1 connection over TLS: a stream request is answered here
/// (`None`: the connection is finished), anything else is handed back with the bytes read, for
/// hyper, which also answers a head that is too large, too slow or malformed.
pub(crate) async fn tls<S>(
    mut stream: S,
    peer: SocketAddr,
    current: &Current,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Option<(S, Vec<u8>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut read, mut scanned) = (Vec::new(), 0);
    let head = tokio::time::timeout(limits.header_timeout, async {
        loop {
            let got = tokio::select! {
                got = stream.read_buf(&mut read) => got,
                _ = shutdown.cancelled() => return false,
            };
            match got {
                Ok(0) | Err(_) => return false,
                // Too large for a head: hyper answers 431.
                Ok(_) if read.len() > limits.max_header_size => return false,
                Ok(_) if fast::head_end(&read, &mut scanned).is_some() => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    match head {
        // The client left, sent nothing in time, or herald is shutting down: hyper would only
        // close it too.
        _ if shutdown.is_cancelled() => return None,
        Err(_) | Ok(false) if read.is_empty() => return None,
        Ok(true) => {}
        Err(_) | Ok(false) => return Some((stream, read)),
    }
    let Some(answer) = direct::parse(&read).and_then(|req| current.get().direct_stream(req)) else {
        return Some((stream, read));
    };
    // A stream holds no read buffer for hours.
    drop(read);
    let resp = answer.await;
    if let Err(e) = direct::write(&mut stream, resp, limits.write_timeout).await {
        debug!(error = %e, %peer, "stream ended with an error");
    }
    None
}

pub(crate) async fn plain(
    stream: TcpStream,
    peer: SocketAddr,
    current: &Current,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Front {
    let fast_limits = fast::Limits {
        header_timeout: limits.header_timeout,
        max_header_size: limits.max_header_size,
        idle_timeout: limits.idle_timeout,
    };
    let claims = |path: &str| current.claims(path);
    let app = current.get();
    match fast::serve(stream, peer, app.proxy.fast_lane(), claims, fast_limits, shutdown).await {
        Outcome::Done => Front::Done,
        Outcome::Hyper(stream, read) => Front::Hyper(stream, read),
        Outcome::Claimed(mut stream, read) => {
            let Some(answer) = direct::parse(&read).and_then(|req| current.get().direct_stream(req)) else {
                return Front::Hyper(stream, read);
            };
            let resp = answer.await;
            if let Err(e) = direct::write(&mut stream, resp, limits.write_timeout).await {
                debug!(error = %e, %peer, "stream ended with an error");
            }
            Front::Done
        }
    }
}
