//! hyper's engine: any request hyper has parsed (TLS, HTTP/2, chunked uploads, WebSocket) goes to
//! the upstream through hyper's client, streamed both ways, rewritten by the [`policy`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::debug;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::deadline::Deadline;
use crate::error::ForwardError;
use crate::metrics::Requests;
use crate::upstream::Upstream;
use crate::{policy, Body, BoxError, OnWrite, TunnelHold};

pub(crate) struct HyperLane {
    upstream: Upstream,
    client: Client<HttpsConnector<HttpConnector>, Progress<Incoming>>,
    /// `x-forwarded-proto`: how clients reached herald.
    proto: HeaderValue,
    requests: Requests,
    on_write: Option<OnWrite>,
}

impl HyperLane {
    pub(crate) fn new(upstream: Upstream, client_tls: bool, requests: Requests, on_write: Option<OnWrite>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(upstream.timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls(upstream.ca_file.as_deref()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https);
        let proto = HeaderValue::from_static(policy::forwarded_proto(client_tls));
        HyperLane { upstream, client, proto, requests, on_write }
    }

    pub(crate) async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let resp = self.send(req, peer).await.unwrap_or_else(|error| {
            error.log();
            // The client left while its body was sent: what it would have got.
            let (status, msg) = error.answer().unwrap_or((StatusCode::BAD_REQUEST, "incomplete request"));
            error_answer(status, msg)
        });
        self.requests.count(resp.status().as_u16());
        resp
    }

    async fn send(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ForwardError> {
        // An `Upgrade` (WebSocket…) keeps its upgrade headers and, once the upstream agrees with
        // a 101, becomes a byte tunnel between client and upstream.
        let upgrade = req.headers().get(header::UPGRADE).cloned().filter(|_| req.version() == http::Version::HTTP_11);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let hold = req.extensions_mut().remove::<TunnelHold>();
        let written =
            (self.on_write.is_some() && policy::is_write(req.method().as_str())).then(|| req.uri().path().to_string());
        let (mut parts, body) = req.into_parts();
        self.upstream_head(&mut parts, peer)?;
        if let Some(upgrade) = upgrade {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, upgrade);
        }

        let (body, last_progress) = Progress::new(body);
        let upstream = Request::from_parts(parts, body);
        let timeout = self.upstream.timeout;
        let Some(answer) = within_timeout(self.client.request(upstream), &last_progress, timeout).await else {
            return Err(ForwardError::TimedOut(timeout));
        };
        let mut resp = answer.map_err(|e| ForwardError::Unreachable(e.into()))?;
        if let (Some(path), Some(on_write)) = (written, &self.on_write) {
            if policy::write_succeeded(resp.status().as_u16()) {
                on_write(&path);
            }
        }
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let tunnel = match client_upgrade {
            Some(client) if switching => Some((client, hyper::upgrade::on(&mut resp))),
            _ => None,
        };
        let (mut parts, body) = resp.into_parts();
        let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
        parts.headers = answer_fields(&parts.headers);
        if let (Some((client, upstream)), Some(to)) = (tunnel, upgrade_to) {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, to);
            tokio::spawn(async move {
                tunnel_bytes(client, upstream).await;
                drop(hold);
            });
        }
        let body = Stalls { inner: body, deadline: Deadline::new(timeout) };
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    /// Turns the client's request head into the upstream's: its URL (in absolute form: the
    /// pool connects to its authority and derives the Host from it) and the policy's fields.
    fn upstream_head(&self, parts: &mut request::Parts, peer: SocketAddr) -> Result<(), ForwardError> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri = format!("{}{path_and_query}", self.upstream.prefix());
        let uri = uri.parse::<Uri>().map_err(ForwardError::InvalidTarget)?;
        let client = std::mem::take(&mut parts.headers);
        let connection = connection_values(&client);
        let mut h = HeaderMap::with_capacity(client.len() + 5);
        for (name, value) in &client {
            if policy::request_field(name.as_str(), !connection.is_empty(), || connection.iter().copied()) {
                h.append(name.clone(), value.clone());
            }
        }
        if client.get_all(header::TE).iter().any(|te| policy::accepts_trailers(te.as_bytes())) {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let mut forwarded_for = Vec::new();
        let earlier = client.get_all(policy::X_FORWARDED_FOR).iter().map(HeaderValue::as_bytes);
        policy::forwarded_for(&mut forwarded_for, earlier, peer.ip());
        let forwarded_for = HeaderValue::from_maybe_shared(Bytes::from(forwarded_for)).expect("from header values");
        h.insert(HeaderName::from_static(policy::X_FORWARDED_FOR), forwarded_for);
        h.insert(HeaderName::from_static(policy::X_FORWARDED_PROTO), self.proto.clone());
        // The client's Host (HTTP/2: its `:authority`).
        let host = client.get(header::HOST).cloned();
        let host = host.or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        if let Some(host) = host {
            h.insert(HeaderName::from_static(policy::X_FORWARDED_HOST), host);
        }
        h.append(header::VIA, HeaderValue::from_static(policy::VIA));
        parts.headers = h;
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        Ok(())
    }
}

/// The fields of an upstream answer the client gets: those the policy passes, and `via`. With
/// a Transfer-Encoding, a Content-Length is wrong (RFC 9112 section 6.3): hyper frames the body
/// again, by the length only when it is the real one.
fn answer_fields(upstream: &HeaderMap) -> HeaderMap {
    let connection = connection_values(upstream);
    let coded = upstream.contains_key(header::TRANSFER_ENCODING);
    let mut h = HeaderMap::with_capacity(upstream.len() + 1);
    for (name, value) in upstream {
        let wrong_length = coded && name == header::CONTENT_LENGTH;
        if !wrong_length && policy::answer_field(name.as_str(), !connection.is_empty(), || connection.iter().copied()) {
            h.append(name.clone(), value.clone());
        }
    }
    h.append(header::VIA, HeaderValue::from_static(policy::VIA));
    h
}

/// A message's Connection field values when one names a field (see [`policy::names_fields`]).
fn connection_values(h: &HeaderMap) -> Vec<&[u8]> {
    let values = || h.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes);
    if values().any(policy::names_fields) {
        values().collect()
    } else {
        Vec::new()
    }
}

/// herald's own answer when the upstream gave none: the same bytes the fast lane writes.
fn error_answer(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{msg}\n"))).map_err(|e| match e {}).boxed_unsync())
        .expect("static parts are valid")
}

/// Waits for `response` while the request makes progress: `upstream.timeout` bounds the time
/// without any (connecting, sending the next piece of the body, waiting for the answer once the
/// body is sent), not the whole exchange, so a large upload is not cut off midway.
async fn within_timeout<F: Future>(
    response: F,
    last_progress: &Mutex<Instant>,
    timeout: Duration,
) -> Option<F::Output> {
    tokio::pin!(response);
    loop {
        let deadline = *last_progress.lock().unwrap() + timeout;
        tokio::select! {
            done = &mut response => return Some(done),
            _ = tokio::time::sleep_until(deadline) => {
                if *last_progress.lock().unwrap() + timeout <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

/// A request body that notes when it last moved, for the pass-through timeout.
struct Progress<B> {
    inner: B,
    last: Arc<Mutex<Instant>>,
}

impl<B> Progress<B> {
    fn new(inner: B) -> (Self, Arc<Mutex<Instant>>) {
        let last = Arc::new(Mutex::new(Instant::now()));
        (Progress { inner, last: last.clone() }, last)
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Progress<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() {
            *self.last.lock().unwrap() = Instant::now();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An answer body that fails when the upstream sends nothing of it for `upstream.timeout`
/// (hyper then ends the client's answer short, as the fast lane does).
struct Stalls<B> {
    inner: B,
    deadline: Deadline,
}

impl<B> hyper::body::Body for Stalls<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.deadline.restart();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                std::task::ready!(self.deadline.poll_expired(cx));
                Poll::Ready(Some(Err("the upstream sent nothing of its answer within upstream.timeout".into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// TLS towards an https upstream: the webpki roots plus `upstream.ca_file` (already checked
/// readable by the poll client, which loads it first).
fn upstream_tls(ca_file: Option<&str>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path).into_iter().flatten().flatten() {
            if let Err(e) = roots.add(cert) {
                tracing::warn!(error = %e, path, "upstream.ca_file: a certificate was not added");
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Copies bytes both ways between an upgraded client connection and the upstream's.
async fn tunnel_bytes(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => return debug!(error = %e, "upgrade failed"),
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_loses_its_hop_by_hop_fields_and_a_length_its_coding_replaces() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private-hop, content-length"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert("x-private-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let out = answer_fields(&h);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(out[header::CONTENT_LENGTH], "2");
        assert_eq!(out.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(out[header::VIA], "1.1 herald");

        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(!answer_fields(&h).contains_key(header::CONTENT_LENGTH));
    }
}
