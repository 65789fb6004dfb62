//! Pass-through (spec section 9): everything herald does not answer itself goes to the upstream,
//! streamed both ways, without hop-by-hop headers, with x-forwarded-* and via added.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{IntCounter, IntCounterVec};
use tracing::debug;

use crate::relay::Deadline;
use crate::server::ConnectionSlot;
use crate::{header_items, text, Body, BoxError};

pub(crate) struct Proxy {
    client: Client<HttpsConnector<HttpConnector>, Progress<Incoming>>,
    /// Scheme and authority of the upstream, e.g. `http://127.0.0.1:8081`.
    authority: String,
    /// A base path the upstream URL carries (`http://host/api` → `/api`), or "".
    base_path: String,
    timeout: Duration,
    /// `x-forwarded-proto`: how clients reached herald.
    proto: HeaderValue,
    /// `herald_proxy_requests_total` by status class (1xx..5xx), resolved once.
    pub(crate) requests: [IntCounter; 5],
    /// Where the fast lane ([`crate::relay`]) sends requests: a plain-http upstream.
    pub(crate) relay: Option<crate::relay::Target>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1). `Trailer`
/// is not among them: it declares the message's trailer fields, end to end.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Proxy {
    pub(crate) fn new(cfg: &herald_config::Upstream, client_tls: bool, requests: IntCounterVec) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls(cfg.ca_file.as_deref()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https);
        let (scheme, rest) = cfg.url.split_once("://").expect("validated by herald-config");
        let (host, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let base_path = base_path.trim_end_matches('/');
        let relay = crate::relay::Target::new(scheme, host, base_path, cfg.timeout);
        Proxy {
            client,
            relay,
            authority: format!("{scheme}://{host}"),
            base_path: base_path.to_string(),
            timeout: cfg.timeout,
            proto: HeaderValue::from_static(if client_tls { "https" } else { "http" }),
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| requests.with_label_values(&[class])),
        }
    }

    pub(crate) async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let resp = self.send(req, peer).await;
        let class = (resp.status().as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[class].inc();
        resp
    }

    async fn send(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        // An `Upgrade` (WebSocket…) keeps its upgrade headers and, once the upstream agrees with
        // a 101, becomes a byte tunnel between client and upstream.
        let upgrade = req.headers().get(header::UPGRADE).cloned().filter(|_| req.version() == http::Version::HTTP_11);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        // A tunnel counts against `max_connections` until it closes, as its connection did.
        let slot = req.extensions_mut().remove::<ConnectionSlot>();
        let (mut parts, body) = req.into_parts();
        // In absolute form: the pool connects to its authority and derives the Host from it.
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri = format!("{}{}{path_and_query}", self.authority, self.base_path).parse::<Uri>();
        let Ok(uri) = uri else { return text(StatusCode::BAD_REQUEST, "invalid request target") };
        let authority = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        // `TE: trailers` says the client accepts trailers; the upstream must hear it to send them.
        let te_trailers = parts.headers.contains_key(header::TE)
            && header_items(&parts.headers, header::TE).any(|t| t.eq_ignore_ascii_case("trailers"));
        strip_hop_by_hop(&mut parts.headers);
        let h = &mut parts.headers;
        if te_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // The upstream gets its own host; the client's is kept in x-forwarded-host.
        let client_host = h.remove(header::HOST);
        // Earlier proxies' addresses first, then the client's.
        let mut forwarded_for = String::new();
        for prior in header_items(h, X_FORWARDED_FOR.clone()).filter(|v| !v.is_empty()) {
            forwarded_for.push_str(prior);
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(&peer.ip().to_string());
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_str(&forwarded_for).expect("from header values"));
        h.insert(X_FORWARDED_PROTO.clone(), self.proto.clone());
        if let Some(host) = client_host.or(authority) {
            h.insert(X_FORWARDED_HOST.clone(), host);
        }
        h.append(header::VIA, HeaderValue::from_static("1.1 herald"));
        if let Some(upgrade) = &upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, upgrade.clone());
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;

        let (body, last_progress) = Progress::new(body);
        let upstream = Request::from_parts(parts, body);
        match self.within_timeout(self.client.request(upstream), &last_progress).await {
            None => text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
            Some(Err(e)) => {
                debug!(error = %e, "pass-through to the upstream failed");
                text(StatusCode::BAD_GATEWAY, "upstream unreachable")
            }
            Some(Ok(mut resp)) => {
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let tunnel = match client_upgrade {
                    Some(client) if switching => Some((client, hyper::upgrade::on(&mut resp))),
                    _ => None,
                };
                let (mut parts, body) = resp.into_parts();
                let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.append(header::VIA, HeaderValue::from_static("1.1 herald"));
                if let (Some((client, upstream)), Some(to)) = (tunnel, upgrade_to) {
                    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    parts.headers.insert(header::UPGRADE, to);
                    tokio::spawn(async move {
                        tunnel_bytes(client, upstream).await;
                        drop(slot);
                    });
                }
                let body = Stalls { inner: body, deadline: Deadline::new(self.timeout) };
                Response::from_parts(parts, body.boxed_unsync())
            }
        }
    }
}

impl Proxy {
    /// Waits for `response` while the request makes progress: `upstream.timeout` bounds the time
    /// without any (connecting, sending the next piece of the body, waiting for the answer once
    /// the body is sent), not the whole exchange, so a large upload is not cut off midway.
    async fn within_timeout<F: Future>(&self, response: F, last_progress: &Mutex<Instant>) -> Option<F::Output> {
        tokio::pin!(response);
        loop {
            let deadline = *last_progress.lock().unwrap() + self.timeout;
            tokio::select! {
                done = &mut response => return Some(done),
                _ = tokio::time::sleep_until(deadline) => {
                    if *last_progress.lock().unwrap() + self.timeout <= Instant::now() {
                        return None;
                    }
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

/// Removes hop-by-hop headers, including those the Connection header names. One pass over the
/// names finds which are there (usually none, or `connection` alone): removing an absent header
/// still costs a hash.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = Vec::new();
    for name in h.keys() {
        if HOP_BY_HOP.contains(name) {
            present.push(name.clone());
        }
    }
    if h.contains_key(header::CONNECTION) {
        // Its options (`close`, `keep-alive`) name no header; anything else does, except that
        // Content-Length stays (as in the fast lane): it frames the body that follows.
        let named = header_items(h, header::CONNECTION)
            .filter(|t| ["close", "keep-alive", "content-length"].iter().all(|o| !t.eq_ignore_ascii_case(o)))
            .filter_map(|t| HeaderName::try_from(t).ok());
        present.extend(named.collect::<Vec<_>>());
    }
    for name in &present {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private-hop, content-length"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert("x-private-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key(header::AUTHORIZATION) && h.contains_key(header::CONTENT_LENGTH));
    }
}
