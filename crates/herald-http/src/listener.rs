//! The listener: accepts connections up to `server.max_connections`, does the TLS handshake,
//! serves HTTP/1.1 and HTTP/2 on one port (by ALPN over TLS, by preface otherwise) with
//! upgrades allowed, and on shutdown asks each connection to finish, within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::app::Current;
use crate::front::{self, Front};
use crate::io::{Activity, Limits, Stalled};
use crate::tls_stream::TlsStream;
use crate::{direct, Body, BoxError, Tls};

/// A client must finish the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` fires; then asks every open connection to finish and waits
/// for them, at most `grace`. With `front` (the public listener), plain connections go through
/// [`front`] first (the pass-through's fast lane, direct SSE streams) and to `handler`, through
/// hyper, when they need more.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    handler: F,
    front: Option<Arc<Current>>,
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
        // The connection's place under `max_connections`, carried by its requests so that a
        // WebSocket tunnel made from one keeps it until the tunnel closes.
        let slot = herald_proxy::TunnelHold(Arc::new(slot));
        let activity = Activity::new();
        let service = {
            let (slot, activity) = (slot.clone(), activity.clone());
            hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let in_flight = activity.begin();
                req.extensions_mut().insert(slot.clone());
                // Boxed: hyper keeps a slot as large as this future for the connection's whole
                // life, and the handler's (every dispatch path, the proxy's among them) is tens of KiB.
                let answer = Box::pin(handler.clone()(req, peer));
                async move {
                    let resp = answer.await;
                    // In flight until the answer's body is done (a stream: until it ends).
                    Ok::<_, std::convert::Infallible>(resp.map(|body| {
                        body.map_frame(move |frame| {
                            let _ = &in_flight;
                            frame
                        })
                        .boxed_unsync()
                    }))
                }
            })
        };
        let (builder, tls, shutdown, front) = (builder.clone(), tls.clone(), shutdown.clone(), front.clone());
        connections.spawn(async move {
            let _slot = slot;
            // Each branch boxed: a task's future is as large as its largest state, and the TLS
            // one (rustls's connection state inline) would make every plain connection cost ~20 KiB.
            let served = match tls {
                None => {
                    let (stream, read) = match &front {
                        None => (stream, Vec::new()),
                        Some(current) => match Box::pin(front::plain(stream, peer, current, limits, &shutdown)).await {
                            Front::Done => return,
                            Front::Hyper(stream, read) => (stream, read),
                        },
                    };
                    let io = Stalled::new(direct::Prefixed::new(read, stream), limits.write_timeout);
                    Box::pin(connection(&builder, TokioIo::new(io), service, &activity, limits, &shutdown)).await
                }
                Some(tls) => {
                    let front = front.as_deref();
                    match Box::pin(tls_connection(
                        &tls, stream, peer, front, &builder, service, &activity, limits, &shutdown,
                    ))
                    .await
                    {
                        Some(served) => served,
                        None => return,
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

/// A TLS connection: the handshake, then its first request through [`front::tls`] when it speaks
/// HTTP/1.1 (a stream is answered there), then hyper. `None` when it ended before hyper.
#[allow(clippy::too_many_arguments)]
async fn tls_connection<S>(
    tls: &Tls,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    front: Option<&Current>,
    builder: &Builder<TokioExecutor>,
    service: S,
    activity: &Activity,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Option<Result<(), BoxError>>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = std::convert::Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let stream = Stalled::new(stream, limits.write_timeout);
    // Each step boxed on its own: a future is as large as its largest state, and the one that
    // ends in hyper (an HTTP/2 connection) would otherwise keep room for the handshake's and the
    // direct stream's for its whole life. (The TLS stream is boxed too: see `TlsStream::accept`.)
    let handshake = Box::pin(TlsStream::accept(stream, tls.config()));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(error = %e, %peer, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let h2 = stream.alpn_protocol() == Some(b"h2");
    let (stream, read) = match front {
        Some(current) if !h2 => Box::pin(front::tls(stream, peer, current, limits, shutdown)).await?,
        _ => (stream, Vec::new()),
    };
    let io = TokioIo::new(direct::Prefixed::new(read, stream));
    Some(Box::pin(connection(builder, io, service, activity, limits, shutdown)).await)
}

/// One connection, with upgrades (WebSocket) allowed; on shutdown, or once it has had nothing
/// in flight for `idle_timeout` (an idle keep-alive or HTTP/2 connection), it is asked to finish
/// what it is doing and close.
async fn connection<I, S>(
    builder: &Builder<TokioExecutor>,
    io: TokioIo<I>,
    service: S,
    activity: &Activity,
    limits: Limits,
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
        () = activity.idle(limits.idle_timeout) => {
            debug!("connection idle for server.idle_timeout, closing it");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}
