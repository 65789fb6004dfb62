//! A plain connection's way in: its requests start in the pass-through's fast lane, which asks
//! dispatch whether herald claims a path; a claimed request for a stream is answered directly on
//! the socket ([`direct`]); anything else goes to hyper with the bytes read so far.

use std::net::SocketAddr;

use herald_proxy::fast::{self, Outcome};
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
