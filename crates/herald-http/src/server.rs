//! The accept loop: HTTP/1.1 and HTTP/2 on one listener (by ALPN over TLS, by preface
//! otherwise), upgrades allowed, each connection asked to finish on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::app::App;
use crate::relay::{self, Outcome};
use crate::{direct, Body, BoxError, Tls};

/// Limits of one listener (`server.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(s: &herald_config::Server) -> Self {
        Limits {
            header_timeout: s.header_timeout,
            max_header_size: s.max_header_size.min(16 << 20) as usize,
            max_connections: s.max_connections,
        }
    }
}

/// A client must finish the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` fires; then asks every open connection to finish and waits
/// for them, at most `grace`. With `front` (the public listener), plain connections start in its
/// fast lane ([`relay`]: pass-through and SSE streams) and go to `handler`, through hyper, when
/// they need more.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    handler: F,
    front: Option<Arc<App>>,
    shutdown: CancellationToken,
    grace: Duration,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let connections = TaskTracker::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Headers must arrive within this: a slowloris client cannot hold a connection forever.
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size);
    builder.http2().max_header_list_size(limits.max_header_size as u32);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At `max_connections`, stop accepting: the kernel's backlog holds new clients meanwhile.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            // Boxed: hyper keeps a slot as large as this future for the connection's whole life,
            // and the handler's (every dispatch path, the proxy's among them) is tens of KiB.
            let answer = Box::pin(handler(req, peer));
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let (builder, tls, shutdown, front) = (builder.clone(), tls.clone(), shutdown.clone(), front.clone());
        connections.spawn(async move {
            let _slot = slot;
            // Each branch boxed: a task's future is as large as its largest state, and the TLS
            // one (rustls's connection state inline) would make every plain connection cost ~20 KiB.
            let served = match tls {
                None => {
                    let outcome = match front {
                        None => Outcome::Hyper(stream, Vec::new()),
                        Some(app) => Box::pin(relay::serve(stream, peer, app, limits, &shutdown)).await,
                    };
                    match outcome {
                        Outcome::Done => return,
                        Outcome::Stream(mut stream, answer) => {
                            let resp = answer.await;
                            if let Err(e) = direct::write(&mut stream, resp).await {
                                debug!(error = %e, %peer, "stream ended with an error");
                            }
                            return;
                        }
                        Outcome::Hyper(stream, read) => {
                            let io = TokioIo::new(direct::Prefixed::new(read, stream));
                            Box::pin(connection(&builder, io, service, &shutdown)).await
                        }
                    }
                }
                Some(tls) => {
                    let handshake = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            Box::pin(connection(&builder, TokioIo::new(stream), service, &shutdown)).await
                        }
                        Ok(Err(e)) => return debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    }
                }
            };
            if let Err(e) = served {
                debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        warn!(?grace, "connections still open after shutdown_grace, closing them");
    }
}

/// One connection, with upgrades (WebSocket) allowed; on shutdown it is asked to finish what
/// it is doing and close.
async fn connection<I, S>(
    builder: &Builder<TokioExecutor>,
    io: TokioIo<I>,
    service: S,
    shutdown: &CancellationToken,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = std::convert::Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Boxed once here: the wrappers below move it, and every move of a large future into
    // another would add its size to the task's again.
    let mut conn = Box::pin(builder.serve_connection_with_upgrades(io, service));
    tokio::select! {
        served = conn.as_mut() => served,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
