//! The public listener's application: each request dispatched (section 4) to the part of herald
//! that answers it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use herald_config::Config;
use herald_poll::Hub;
use herald_proxy::{OnWrite, Proxy, Upstream};
use herald_sse::Sessions;
use herald_webhooks::Webhooks;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use crate::access::Entry;
use crate::cache::{Cache, Cached};
use crate::cors::Cors;
use crate::direct::DirectAnswer;
use crate::dispatch::{Dispatch, Doc, Routing};
use crate::response::{json, text};
use crate::stream::Streams;
use crate::webhook_api::Endpoint;
use crate::{describe, webhook_api, Body};

/// Metrics of the public listener.
#[derive(Clone)]
pub struct HttpMetrics {
    proxy_requests: IntCounterVec,
    cache_requests: IntCounterVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let proxy_requests = IntCounterVec::new(
            Opts::new(
                "herald_proxy_requests_total",
                "Requests passed through to the upstream, by response status class.",
            ),
            &["status_class"],
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "herald_cache_requests_total",
                "Plain GETs on cache routes: hit (answered from a running watch), miss (waited for a new watch's first poll), bypass (upstream failing: passed on).",
            ),
            &["route", "result"],
        )?;
        registry.register(Box::new(proxy_requests.clone()))?;
        registry.register(Box::new(cache_requests.clone()))?;
        Ok(HttpMetrics { proxy_requests, cache_requests })
    }
}

/// Everything the public listener needs to answer a request.
pub struct App {
    pub(crate) routing: Routing,
    streams: Streams,
    cache: Cache,
    cors: Cors,
    pub(crate) proxy: Proxy,
    webhooks: Arc<Webhooks>,
    /// `server.access_log`.
    access_log: bool,
    /// The AsyncAPI and OpenAPI documents of the configuration, encoded once.
    asyncapi: Bytes,
    openapi: Bytes,
}

impl App {
    /// `slots`: the hub's slot of each of `config.routes` ([`Hub::reload`]). `shutdown` also
    /// closes the pass-through's idle upstream connections.
    pub fn new(
        config: &Config,
        slots: &[usize],
        hub: Arc<Hub>,
        sessions: Sessions,
        webhooks: Arc<Webhooks>,
        metrics: HttpMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        let url = &config.upstream.url;
        let upstream = Upstream::new(url.https(), url.authority(), url.base_path(), config.upstream.timeout)
            .with_ca_file(config.upstream.ca_file.clone());
        let client_tls = config.server.tls.is_some();
        // Write-through refresh (section 13): a write that succeeded re-polls what it changed.
        let on_write = config.routes.iter().any(|r| r.refresh_on_write).then(|| {
            let hub = hub.clone();
            Arc::new(move |path: &str| {
                let (hub, path) = (hub.clone(), path.to_string());
                tokio::spawn(async move { hub.refresh(&path).await });
            }) as OnWrite
        });
        App {
            routing: Routing::new(config, slots),
            cache: Cache::new(config, slots, hub.clone(), sessions.clone(), &metrics.cache_requests),
            streams: Streams { hub, sessions },
            cors: Cors::new(config.sse.cors_origins.clone()),
            proxy: Proxy::new(upstream, client_tls, &metrics.proxy_requests, on_write, shutdown),
            webhooks,
            access_log: config.server.access_log,
            asyncapi: Bytes::from(describe::asyncapi(config).to_string()),
            openapi: Bytes::from(describe::openapi(config).to_string()),
        }
    }

    /// Answers one request. The branches other than the pass-through are boxed: this future is
    /// moved into a box for every request, so it is kept as small as the pass-through's.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let dispatch = self.routing.dispatch(req.method(), req.uri(), req.headers());
        if self.access_log {
            let entry = Entry::new(&req, self.answered_by(&dispatch), peer);
            return entry.log(Box::pin(self.answer(req, peer, dispatch)).await);
        }
        self.answer(req, peer, dispatch).await
    }

    async fn answer(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr, dispatch: Dispatch) -> Response<Body> {
        match dispatch {
            Dispatch::Pass(None) => self.proxy.forward(req, peer).await,
            // A pass-through GET on a route path says where its stream is (section 8).
            Dispatch::Pass(Some(watched)) => with_link(self.proxy.forward(req, peer).await, watched.stream_link()),
            Dispatch::WebhookApi => Box::pin(webhook_api::answer(&self.webhooks, Endpoint::Subscriptions, req)).await,
            Dispatch::Notify => Box::pin(webhook_api::answer(&self.webhooks, Endpoint::Notify, req)).await,
            Dispatch::NotFound => text(StatusCode::NOT_FOUND, "not found"),
            Dispatch::Describe(doc) => json(match doc {
                Doc::AsyncApi => self.asyncapi.clone(),
                Doc::OpenApi => self.openapi.clone(),
            }),
            Dispatch::Stream(watched) => Box::pin(self.stream(&req, watched)).await,
            Dispatch::Cache(watched) => {
                let link = watched.stream_link();
                let origin = req.headers().get(header::ORIGIN).cloned();
                let mut resp = match Box::pin(self.cache.answer(req, watched)).await {
                    Cached::Answer(resp) => resp,
                    Cached::PassThrough(req) => self.proxy.forward(req, peer).await,
                };
                // A client's long poll from another origin, as its streams.
                self.cors.allow_origin(origin.as_ref(), &mut resp);
                with_link(resp, link)
            }
            Dispatch::Preflight => self.cors.preflight(req.headers()),
        }
    }

    /// What the access log names as having answered a request.
    fn answered_by(&self, dispatch: &Dispatch) -> String {
        match dispatch {
            Dispatch::Stream(w) | Dispatch::Cache(w) => self.streams.hub.route(w.route).name.clone(),
            Dispatch::Pass(_) => "pass-through".into(),
            Dispatch::WebhookApi => "webhook-api".into(),
            Dispatch::Notify => "notify".into(),
            Dispatch::NotFound => "not-found".into(),
            Dispatch::Describe(_) => "describe".into(),
            Dispatch::Preflight => "preflight".into(),
        }
    }

    /// For a plain connection's request read outside hyper ([`crate::direct`]): its answer
    /// when it asks for a stream.
    pub(crate) fn direct_stream(self: Arc<Self>, req: Request<()>) -> Option<DirectAnswer> {
        match self.routing.dispatch(req.method(), req.uri(), req.headers()) {
            Dispatch::Stream(watched) => Some(Box::pin(async move { self.stream(&req, watched).await })),
            _ => None,
        }
    }

    async fn stream<B>(&self, req: &Request<B>, watched: crate::dispatch::Watched) -> Response<Body> {
        let mut resp = self.streams.open(req.headers(), watched).await;
        self.cors.allow(req.headers(), &mut resp);
        resp
    }
}

/// The application in force. A reload replaces it whole; a request keeps the one it started with.
pub struct Current(RwLock<Arc<App>>);

impl Current {
    pub fn new(app: App) -> Arc<Self> {
        Arc::new(Current(RwLock::new(Arc::new(app))))
    }

    pub fn get(&self) -> Arc<App> {
        self.0.read().unwrap().clone()
    }

    pub fn replace(&self, app: App) {
        *self.0.write().unwrap() = Arc::new(app);
    }

    /// [`Routing::claims`] of the application in force (the fast lane asks it per request).
    pub(crate) fn claims(&self, path: &str) -> bool {
        self.0.read().unwrap().routing.claims(path)
    }
}

/// `resp` with a `link` to the stream of what it answered.
fn with_link(mut resp: Response<Body>, link: Option<http::HeaderValue>) -> Response<Body> {
    if let Some(link) = link {
        resp.headers_mut().append(http::header::LINK, link);
    }
    resp
}
