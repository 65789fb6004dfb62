//! The hub: the registry of watches. Every watch by key, created by the first subscriber (its
//! loop started by the coordination), dropped `linger` after the last one left; the routes by
//! slot (and their reloads); the keys subscribers are given (credential scopes, allowed query
//! parameters), the limits on watches, and the admission checks of `shared` routes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herald_config::{Access, Route};
use herald_core::{encode_frame, Scope, ScopeHasher};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::client::{Answer, Fetch, Request};
use crate::cluster::Cluster;
use crate::coordination::{Coordination, Registry};
use crate::limit::{Limiter, Priority};
use crate::metrics::PollMetrics;
use crate::poll::Poller;
use crate::refusal::Refusal;
use crate::route::RouteCtx;
use crate::watch::{Current, Joined, Ready, SubscriberGuard, Watch, WatchInfo, WatchKey};

/// Who a subscriber is: its own `vary` headers (marked sensitive), presented on its admission
/// checks and its per-subscriber watch's polls, and its credential scope, which the watches it
/// creates count against.
#[derive(Clone)]
pub struct Credentials {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub scope: Scope,
}

impl Default for Credentials {
    /// Nobody in particular: no headers, the everybody scope (public routes, tests).
    fn default() -> Self {
        Credentials { headers: Vec::new(), scope: Scope::Everybody }
    }
}

pub struct HubConfig {
    pub routes: Vec<Route>,
    /// `sse.queue`: events a subscriber may fall behind before it is resynced.
    pub queue: usize,
    pub max_polls_per_second: f64,
    pub max_concurrency: usize,
    /// The key credential scopes are hashed with (kept by the store, so webhook watches keep their keys).
    pub scope_key: [u8; 32],
    pub limits: herald_config::Limits,
    /// Cluster mode (`storage.kind: redis`).
    pub cluster: Option<Arc<Cluster>>,
}

pub struct Hub {
    /// Every route this process has served, by slot: a reload appends the routes it changes or
    /// adds and retires those it changes or removes, so a slot never names another route.
    routes: RwLock<Vec<Arc<RouteCtx>>>,
    metrics: PollMetrics,
    /// Polls the upstream for every watch (and makes the admission checks).
    poller: Poller,
    queue: usize,
    limits: herald_config::Limits,
    watches: Mutex<Watches>,
    /// Shared routes: admission checks that passed, for `authorize_ttl`.
    admitted: moka::sync::Cache<Admission, Duration>,
    scopes: ScopeHasher,
    shutdown: CancellationToken,
    /// Who polls each watch and where its events go: this process, or the cluster in Redis.
    coordination: Coordination,
}

/// Every live watch by key, and how many each credential scope created.
#[derive(Default)]
struct Watches {
    map: HashMap<WatchKey, Arc<Watch>>,
    per_scope: HashMap<Scope, usize>,
}

impl Hub {
    pub fn new(cfg: HubConfig, fetch: Arc<dyn Fetch>, metrics: &PollMetrics, shutdown: CancellationToken) -> Arc<Self> {
        let routes = cfg.routes.into_iter().map(|r| Arc::new(RouteCtx::new(r, metrics))).collect();
        let hub = Arc::new(Hub {
            routes: RwLock::new(routes),
            metrics: metrics.clone(),
            poller: Poller { fetch, limiter: Limiter::new(cfg.max_polls_per_second, cfg.max_concurrency) },
            queue: cfg.queue,
            limits: cfg.limits,
            watches: Mutex::new(Watches::default()),
            admitted: moka::sync::Cache::builder().max_capacity(100_000).expire_after(AuthorizeTtl).build(),
            scopes: ScopeHasher::new(cfg.scope_key),
            shutdown: shutdown.clone(),
            coordination: Coordination::new(cfg.cluster),
        });
        for route in hub.routes.read().unwrap().iter() {
            hub.coordination.add_route(&route.cfg.name);
        }
        hub.coordination.start(&hub, shutdown);
        hub
    }

    /// Cluster mode's handle, when herald runs in it.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.coordination.cluster()
    }

    /// The route in slot `index` (from dispatch, or a [`WatchKey`]).
    pub fn route(&self, index: usize) -> Arc<RouteCtx> {
        self.routes.read().unwrap()[index].clone()
    }

    /// Applies a reloaded configuration's routes: a route whose name and settings are unchanged
    /// keeps its slot, its watches, their streams and history; the others get new slots, and the
    /// routes they replace (or that are gone) are retired: their watches end, and their streams
    /// with `event: error` `{"reason":"reconfigured"}` (clients reconnect, to the new route if
    /// there is one). Returns the slot of each of `routes`, in order.
    pub fn reload(&self, routes: Vec<Route>) -> Vec<usize> {
        let mut slots = Vec::with_capacity(routes.len());
        let retired: Vec<Arc<RouteCtx>> = {
            let mut table = self.routes.write().unwrap();
            let live = |r: &Arc<RouteCtx>| !r.retired.load(Ordering::Relaxed);
            for route in routes {
                match table.iter().position(|r| live(r) && r.cfg == route) {
                    Some(slot) => slots.push(slot),
                    None => {
                        self.coordination.add_route(&route.name);
                        table.push(Arc::new(RouteCtx::new(route, &self.metrics)));
                        slots.push(table.len() - 1);
                    }
                }
            }
            let retired: Vec<_> = table
                .iter()
                .enumerate()
                .filter(|(i, r)| live(r) && !slots.contains(i))
                .map(|(_, r)| r.clone())
                .collect();
            for r in &retired {
                r.retired.store(true, Ordering::Relaxed);
            }
            retired
        };
        if retired.is_empty() {
            return slots;
        }
        let ended: Vec<Arc<Watch>> = {
            let mut watches = self.watches.lock().unwrap();
            let ended: Vec<_> =
                watches.map.values().filter(|w| retired.iter().any(|r| Arc::ptr_eq(r, &w.route))).cloned().collect();
            for w in &ended {
                unmap(&mut watches, w);
            }
            ended
        };
        for r in &retired {
            info!(route = %r.cfg.name, "route changed or removed by a reload: its streams end with reconfigured");
        }
        for w in ended {
            w.terminate(encode_frame("error", None, br#"{"reason":"reconfigured"}"#));
        }
        slots
    }

    /// The watch a subscriber presenting `headers` joins for `target` on a route (section 5),
    /// and the credentials its polls carry; or, on a `shared` route whose admission check
    /// fails, the upstream's answer.
    pub async fn watch_key(
        &self,
        route_index: usize,
        target: String,
        headers: &HeaderMap,
    ) -> Result<(WatchKey, Credentials), Refusal> {
        let path = target.split('?').next().unwrap_or_default();
        if let Err(e) = herald_config::check_segments(path) {
            return Err(Refusal::herald(400, format!("{e}\n"), None));
        }
        let route = self.route(route_index);
        let (key, credentials) = self.key_on(&route, route_index, target, headers);
        if route.access == Access::Shared {
            self.admit(&route, route_index, &key.target, &credentials).await?;
        }
        Ok((key, credentials))
    }

    /// [`Hub::watch_key`] without the admission check of `shared` routes.
    pub fn key_for(&self, route_index: usize, target: String, headers: &HeaderMap) -> (WatchKey, Credentials) {
        self.key_on(&self.route(route_index), route_index, target, headers)
    }

    /// [`Hub::key_for`] with the route (in slot `route_index`) at hand.
    fn key_on(
        &self,
        route: &Route,
        route_index: usize,
        target: String,
        headers: &HeaderMap,
    ) -> (WatchKey, Credentials) {
        let target = allowed_query(route, target);
        match route.access {
            Access::Public => {
                (WatchKey { route: route_index, target, scope: Scope::Everybody }, Credentials::default())
            }
            // One watch for all; the subscriber's credentials are for its admission check, and
            // its scope counts the watches it creates.
            Access::Shared => {
                (WatchKey { route: route_index, target, scope: Scope::Everybody }, self.vary(route, headers))
            }
            Access::PerSubscriber => {
                let credentials = self.vary(route, headers);
                (WatchKey { route: route_index, target, scope: credentials.scope }, credentials)
            }
        }
    }

    /// The scope of a subscriber's own `vary` headers, and those headers (marked sensitive).
    ///
    /// A header sent several times (several `cookie` fields, HTTP/2 cookie crumbs) counts whole:
    /// its fields are joined in order (`; ` for cookies, `, ` otherwise, RFC 9110 section 5.3),
    /// hashed and forwarded as one, so a second field can neither be ignored nor swapped.
    fn vary(&self, route: &Route, headers: &HeaderMap) -> Credentials {
        let vary: Vec<(HeaderName, HeaderValue)> = route
            .vary
            .iter()
            .filter_map(|name| {
                let name = HeaderName::try_from(name.as_str()).ok()?;
                let mut value = combined(headers, &name)?;
                value.set_sensitive(true);
                Some((name, value))
            })
            .collect();
        let scope = self.scopes.scope(route.vary.iter().map(|n| {
            let value = vary.iter().find(|(name, _)| name.as_str() == n).map(|(_, v)| v.as_bytes());
            (n.as_str(), value)
        }));
        Credentials { headers: vary, scope }
    }

    /// Joins (or creates) the watch for `key`. The first subscriber of a new watch waits for its
    /// first poll; a non-2xx answer is returned as a [`Refusal`] and no stream is opened.
    pub async fn subscribe(
        self: &Arc<Self>,
        key: WatchKey,
        credentials: Credentials,
        last_event_id: Option<&str>,
    ) -> Result<Joined, Refusal> {
        loop {
            let (watch, guard, _) = self.ready_watch(&key, &credentials).await?;
            match watch.join(last_event_id, guard) {
                Some(joined) => return Ok(joined),
                // The watch ended between lookup and join (revoked credential): start anew.
                None => continue,
            }
        }
    }

    /// The current representation of the watch for `key` (created if needed, and then kept
    /// for `linger`), for answering a legacy poller; `None` while its upstream is failing.
    pub async fn current(
        self: &Arc<Self>,
        key: WatchKey,
        credentials: Credentials,
    ) -> Result<Option<Current>, Refusal> {
        loop {
            let (watch, _guard, created) = self.ready_watch(&key, &credentials).await?;
            if let Some(current) = watch.current(created) {
                return Ok(current);
            }
        }
    }

    /// The watch for `key`, created if needed, once its first poll succeeded; counted as
    /// subscribed while the guard lives. `true` when this call created it.
    async fn ready_watch(
        self: &Arc<Self>,
        key: &WatchKey,
        credentials: &Credentials,
    ) -> Result<(Arc<Watch>, SubscriberGuard, bool), Refusal> {
        if !self.coordination.available().await {
            return Err(Refusal::herald(503, "storage unavailable, try again later\n", Some(Duration::from_secs(1))));
        }
        let (watch, guard, created) = {
            let mut watches = self.watches.lock().unwrap();
            let (watch, created) = match watches.map.get(key) {
                Some(watch) => (watch.clone(), false),
                None => (self.create(&mut watches, key, credentials)?, true),
            };
            let guard = watch.count_in();
            (watch, guard, created)
        };
        let mut ready = watch.ready.subscribe();
        let shutting_down = || Refusal::herald(503, "herald is shutting down\n", Some(Duration::from_secs(1)));
        tokio::select! {
            r = ready.wait_for(|r| !matches!(r, Ready::Pending)) => match r.map(|r| r.clone()) {
                Ok(Ready::Refused(refusal)) => Err(refusal),
                Ok(_) => Ok((watch, guard, created)),
                Err(_) => Err(shutting_down()),
            },
            // A first poll still waiting for its turn when shutdown begins: answered, not left hanging.
            _ = self.shutdown.cancelled() => Err(shutting_down()),
        }
    }

    /// A new watch for `key` with its poll loop, unless that would pass `limits`.
    fn create(
        self: &Arc<Self>,
        watches: &mut Watches,
        key: &WatchKey,
        credentials: &Credentials,
    ) -> Result<Arc<Watch>, Refusal> {
        let route = self.route(key.route);
        if route.retired.load(Ordering::Relaxed) {
            // Dispatched just before a reload replaced its route: the client asks again.
            return Err(Refusal::herald(503, "route reconfigured, try again\n", Some(Duration::from_secs(1))));
        }
        // Watches end `linger` after their last subscriber: a fair time to come back.
        let retry = Some(route.cfg.poll.linger.max(Duration::from_secs(1)));
        if watches.map.len() >= self.limits.max_watches {
            route.metrics.refused.inc();
            return Err(Refusal::herald(503, "too many watches, try again later\n", retry));
        }
        let owner = credentials.scope;
        if owner != Scope::Everybody {
            let count = watches.per_scope.entry(owner).or_default();
            if *count >= self.limits.max_watches_per_scope {
                route.metrics.refused.inc();
                return Err(Refusal::herald(429, "too many watches for this credential, try again later\n", retry));
            }
            *count += 1;
        }
        route.metrics.watches.inc();
        // Only a per-subscriber watch is polled with its subscribers' own headers.
        let headers = match route.cfg.access {
            Access::PerSubscriber => credentials.headers.clone(),
            Access::Shared | Access::Public => Vec::new(),
        };
        let watch = Arc::new(Watch::new(key.clone(), route, owner, headers, self.queue));
        watches.map.insert(key.clone(), watch.clone());
        let task = self.coordination.spawn(self.clone(), watch.clone());
        tokio::spawn(supervise(Arc::downgrade(self), watch.clone(), task));
        Ok(watch)
    }

    /// `shared` routes: admits a subscriber whose own `vary` headers, and none of the
    /// configured headers of those names, get a 2xx from the upstream for `target`; successes
    /// are remembered per (route, target, credential) for `authorize_ttl`.
    async fn admit(
        &self,
        route: &Route,
        route_index: usize,
        target: &str,
        credentials: &Credentials,
    ) -> Result<(), Refusal> {
        let admission = Admission { route: route_index, scope: credentials.scope, target: target.into() };
        if self.admitted.contains_key(&admission) {
            return Ok(());
        }
        let permit = self.poller.limiter.acquire(Priority::Background).await;
        let request =
            Request { target, credentials: &credentials.headers, withhold: &route.vary, ..Request::default() };
        let answer = self.poller.fetch.fetch(request).await;
        drop(permit);
        match answer {
            Ok(Answer::Ok { .. }) => {
                self.admitted.insert(admission, route.authorize_ttl);
                Ok(())
            }
            Ok(Answer::Status { status, content_type, body, .. }) => Err(Refusal::upstream(status, content_type, body)),
            Ok(Answer::NotModified { .. }) => Err(Refusal::unexpected_304()),
            Err(e) => Err(Refusal::from(&e)),
        }
    }

    /// A write to `path` answered 2xx, or a hint named it: re-polls at once the live watches it
    /// can have changed, on routes with `refresh_on_write` — those of `path` itself and of its
    /// collection (`/tasks/42` → `/tasks`), whatever their query, in every credential scope.
    /// In cluster mode the replica holding each watch's lease polls, wherever the write came in.
    /// Returns how many watches were asked here.
    pub async fn refresh(&self, path: &str) -> usize {
        // In cluster mode every replica hears it, this one too: asking here as well would poll twice.
        if self.coordination.announce_refresh(path).await {
            return self.matching(path, false);
        }
        self.matching(path, true)
    }

    /// This process's watches a write to `path` can have changed, asked to poll when `ask`.
    fn matching(&self, path: &str, ask: bool) -> usize {
        let collection = path.rsplit_once('/').map(|(parent, _)| if parent.is_empty() { "/" } else { parent });
        let watches = self.watches.lock().unwrap();
        let mut asked = 0;
        for watch in watches.map.values() {
            let p = watch.path();
            if watch.route.cfg.refresh_on_write && (p == path || Some(p) == collection) {
                if ask {
                    watch.refresh.ask();
                }
                asked += 1;
            }
        }
        asked
    }

    pub fn watches(&self) -> Vec<WatchInfo> {
        let watches = self.watches.lock().unwrap();
        let mut infos: Vec<_> = watches.map.values().map(|w| w.info()).collect();
        infos.sort_by(|a, b| (&a.route, &a.path, &a.scope).cmp(&(&b.route, &b.path, &b.scope)));
        infos
    }

    fn remove(&self, watch: &Arc<Watch>) {
        unmap(&mut self.watches.lock().unwrap(), watch);
    }
}

impl Registry for Hub {
    fn poller(&self) -> &Poller {
        &self.poller
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Removes the watch when nobody has been subscribed for `linger`; `true` when it is out of
    /// the map (so its poll loop ends).
    fn lingered_out(&self, watch: &Arc<Watch>) -> bool {
        // Under the map lock: a subscriber joins under it too, so none can slip in meanwhile.
        let mut watches = self.watches.lock().unwrap();
        if !watches.map.get(&watch.key).is_some_and(|w| Arc::ptr_eq(w, watch)) {
            // Taken out of the map by a reload that retired its route: nobody can join it, so
            // its poll loop ends too.
            return true;
        }
        let idle_since = watch.state.lock().unwrap().idle_since;
        let idle = watch.subscribers() == 0 && idle_since.elapsed() >= watch.route.cfg.poll.linger;
        if idle {
            unmap(&mut watches, watch);
        }
        idle
    }

    /// Out of the map, and (on shutdown) every stream says goodbye and ends (its clients
    /// reconnect after `retry`).
    fn end(&self, watch: &Arc<Watch>) {
        if self.shutdown.is_cancelled() {
            watch.terminate(encode_frame("error", None, br#"{"reason":"shutdown"}"#));
        }
        self.remove(watch);
    }

    /// A per-subscriber watch whose credential the upstream refused: its streams end.
    fn revoke(&self, watch: &Arc<Watch>, status: u16) {
        info!(route = %watch.route.cfg.name, scope = %watch.key.scope, status, "credential refused by upstream, closing its streams");
        // Out of the map first, so a new subscriber starts a new watch instead of joining this one.
        self.remove(watch);
        watch.terminate(encode_frame("error", None, format!("{{\"status\":{status}}}").as_bytes()));
    }

    fn refresh_local(&self, path: &str) -> usize {
        self.matching(path, true)
    }
}

/// Waits for a watch's poll loop to end. One that panicked (a bug) must not leave the watch
/// "starting" forever with its first subscribers waiting, or its streams open and silent: it
/// leaves the map (the next subscriber starts a new watch), its first subscribers get a `502`,
/// and its streams end with `event: error` `{"reason":"internal"}`.
async fn supervise(hub: std::sync::Weak<Hub>, watch: Arc<Watch>, task: tokio::task::JoinHandle<()>) {
    let Err(e) = task.await else { return };
    let Ok(panic) = e.try_into_panic() else { return };
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(route = %watch.route.cfg.name, scope = %watch.key.scope, panic = %why, "a watch's poll loop panicked; the watch ends");
    if let Some(hub) = hub.upgrade() {
        hub.remove(&watch);
    }
    watch.ready.send_if_modified(|ready| match ready {
        Ready::Pending => {
            *ready = Ready::Refused(Refusal::herald(502, "internal error while polling the upstream\n", None));
            true
        }
        _ => false,
    });
    watch.terminate(encode_frame("error", None, br#"{"reason":"internal"}"#));
}

/// Takes `watch` out of the map, unless a newer watch already holds its key.
fn unmap(watches: &mut Watches, watch: &Arc<Watch>) {
    if watches.map.get(&watch.key).is_some_and(|w| Arc::ptr_eq(w, watch)) {
        watches.map.remove(&watch.key);
        watch.route.metrics.watches.dec();
        if let Some(count) = watches.per_scope.get_mut(&watch.owner) {
            *count -= 1;
            if *count == 0 {
                watches.per_scope.remove(&watch.owner);
            }
        }
    }
}

/// One admission check that passed: this credential may read this target of this route.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Admission {
    route: usize,
    scope: Scope,
    target: Box<str>,
}

/// Admissions expire after their route's `authorize_ttl`.
/// An admission is remembered for its route's `authorize_ttl` (the value).
struct AuthorizeTtl;

impl moka::Expiry<Admission, Duration> for AuthorizeTtl {
    fn expire_after_create(&self, _key: &Admission, ttl: &Duration, _now: std::time::Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

/// `target` with only the query parameters `routes[].query` lists (all of them when it lists
/// none), so that a flood of made-up parameters cannot make new watches.
fn allowed_query(route: &Route, target: String) -> String {
    let (Some(allowed), Some((path, query))) = (&route.query, target.split_once('?')) else { return target };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| allowed.iter().any(|a| a == pair.split_once('=').map_or(*pair, |(name, _)| name)))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Every field of header `name`, in order, as one value (`None` when it is absent).
fn combined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut fields = headers.get_all(name).iter();
    let first = fields.next()?;
    let Some(second) = fields.next() else { return Some(first.clone()) };
    let separator: &[u8] = if name == http::header::COOKIE { b"; " } else { b", " };
    let mut joined = first.as_bytes().to_vec();
    for field in std::iter::once(second).chain(fields) {
        joined.extend_from_slice(separator);
        joined.extend_from_slice(field.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FetchFuture;
    use crate::PollError;
    use bytes::Bytes;
    use herald_core::EventKind;
    use std::collections::VecDeque;
    use tokio::time::Instant;

    /// Answers polls from a script (then 304s) and records when each poll came.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Result<Answer, PollError>>>,
        /// When, with which ETag, of which target.
        polls: Mutex<Vec<(Instant, Option<String>, String)>>,
    }

    impl Script {
        fn then(&self, a: Result<Answer, PollError>) -> &Self {
            self.answers.lock().unwrap().push_back(a);
            self
        }
        fn poll_offsets(&self, start: Instant) -> Vec<u64> {
            self.polls.lock().unwrap().iter().map(|(t, ..)| (*t - start).as_secs()).collect()
        }
        /// When `target` was polled.
        fn polls_of(&self, target: &str) -> Vec<Instant> {
            self.polls.lock().unwrap().iter().filter(|(.., t)| t == target).map(|(at, ..)| *at).collect()
        }
    }

    impl Fetch for Script {
        fn fetch<'a>(&'a self, req: Request<'a>) -> FetchFuture<'a> {
            self.polls.lock().unwrap().push((Instant::now(), req.etag.map(str::to_string), req.target.to_string()));
            // When the script is done: 304 to a conditional request, `[]` to a first one.
            let conditional = req.etag.is_some();
            let next = self.answers.lock().unwrap().pop_front();
            Box::pin(async move {
                next.unwrap_or_else(|| match conditional {
                    true => Ok(Answer::NotModified { max_age: None, etag: None, last_modified: None, link: None }),
                    false => ok("[]", "\"0\""),
                })
            })
        }
    }

    fn ok(body: &str, etag: &str) -> Result<Answer, PollError> {
        Ok(Answer::Ok {
            body: Bytes::from(body.to_string()),
            content_type: None,
            etag: Some(etag.into()),
            last_modified: None,
            max_age: None,
            link: None,
            captured: None,
        })
    }

    fn status(status: u16, retry_after: Option<u64>) -> Result<Answer, PollError> {
        Ok(Answer::Status {
            status,
            content_type: None,
            body: Bytes::from_static(b"nope"),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    fn hub(script: Arc<Script>, access: Access) -> Arc<Hub> {
        hub_with(script, access, "routes: [{name: tasks, path: /tasks}]", 100.0, Duration::from_secs(10))
    }

    /// A hub of `routes` (the first with `access`), polling every `interval`, `rate` polls a
    /// second at most.
    fn hub_with(script: Arc<Script>, access: Access, routes: &str, rate: f64, interval: Duration) -> Arc<Hub> {
        let yaml = format!("upstream: {{url: 'http://127.0.0.1:1'}}\n{routes}\n");
        let mut routes = herald_config::load("t.yaml", &yaml, &|_| None).unwrap().routes;
        for route in &mut routes {
            route.poll = herald_config::Poll {
                interval,
                min_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(80),
                adaptive: false,
                jitter: 0.0,
                linger: Duration::from_secs(30),
                pages: None,
                delta: None,
            };
        }
        routes[0].access = access;
        let cfg = HubConfig {
            routes,
            queue: 16,
            max_polls_per_second: rate,
            max_concurrency: 4,
            scope_key: [7; 32],
            limits: herald_config::Limits::default(),
            cluster: None,
        };
        Hub::new(cfg, script, &PollMetrics::new(&prometheus::Registry::new()).unwrap(), CancellationToken::new())
    }

    fn key() -> WatchKey {
        WatchKey { route: 0, target: "/tasks".into(), scope: Scope::Everybody }
    }

    fn text(frame: &Bytes) -> String {
        String::from_utf8(frame.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn polls_on_schedule_backs_off_on_errors_and_recovers() {
        let script = Arc::new(Script::default());
        script
            .then(ok("[1]", "\"a\""))
            .then(ok("[1,2]", "\"b\""))
            .then(status(500, None))
            .then(Err(PollError::Timeout))
            .then(status(429, Some(90)))
            .then(ok("[1,2]", "\"b\""));
        let start = Instant::now();
        let hub = hub(script.clone(), Access::Public);
        let mut joined = hub.subscribe(key(), Credentials::default(), None).await.unwrap();
        assert!(text(&joined.initial[0]).starts_with("event: snapshot\n"));
        assert!(text(&joined.initial[0]).ends_with("data: [1]\n\n"));

        let change = joined.rx.recv().await.unwrap();
        assert!(text(&change.frame).contains("event: change\n") && text(&change.frame).ends_with("data: [1,2]\n\n"));
        let down = joined.rx.recv().await.unwrap();
        assert!(
            text(&down.frame).ends_with("data: {\"ok\":false,\"status\":500,\"error\":\"upstream answered 500\"}\n\n")
        );
        let up = joined.rx.recv().await.unwrap();
        assert!(text(&up.frame).ends_with("data: {\"ok\":true}\n\n"));
        assert!(change.seq < down.seq && down.seq < up.seq, "ids strictly increase");

        // First poll at once; then every 10s; errors double the delay (20s, 40s, 80s = max_interval);
        // Retry-After 90s wins over the 80s backoff.
        assert_eq!(script.poll_offsets(start), [0, 10, 20, 40, 80, 170]);
        // Conditional requests carry the last ETag.
        assert_eq!(script.polls.lock().unwrap()[1].1.as_deref(), Some("\"a\""));
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(
            script.poll_offsets(start),
            [0, 10, 20, 40, 80, 170, 180, 190],
            "back on the interval after recovery"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_is_encoded_once_and_shared_by_every_subscriber() {
        let script = Arc::new(Script::default());
        script.then(ok("[1]", "\"a\"")).then(ok("[1,2]", "\"b\""));
        let hub = hub(script, Access::Public);
        let mut subscribers = Vec::new();
        for _ in 0..3 {
            subscribers.push(hub.subscribe(key(), Credentials::default(), None).await.unwrap());
        }
        let snapshots: Vec<_> = subscribers.iter().map(|s| s.initial[0].as_ptr()).collect();
        assert!(snapshots.iter().all(|p| *p == snapshots[0]), "one snapshot frame for all");
        let mut frames = Vec::new();
        for s in &mut subscribers {
            frames.push(s.rx.recv().await.unwrap().frame);
        }
        assert!(frames.iter().all(|f| f.as_ptr() == frames[0].as_ptr()), "the same bytes, not copies");
    }

    #[tokio::test(start_paused = true)]
    async fn first_poll_refusal_is_returned_and_no_watch_remains() {
        let script = Arc::new(Script::default());
        script.then(status(404, None));
        let hub = hub(script, Access::Public);
        let refusal = hub.subscribe(key(), Credentials::default(), None).await.err().unwrap();
        assert_eq!(refusal.status, 404);
        assert_eq!(&refusal.body[..], b"nope");
        tokio::task::yield_now().await;
        assert!(hub.watches().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_credential_ends_the_streams() {
        let script = Arc::new(Script::default());
        script.then(ok("[1]", "\"a\"")).then(status(401, None));
        let hub = hub(script, Access::PerSubscriber);
        let mut joined = hub.subscribe(key(), Credentials::default(), None).await.unwrap();
        let end = joined.rx.recv().await.unwrap();
        assert_eq!(end.kind, EventKind::Terminal);
        assert_eq!(text(&end.frame), "event: error\ndata: {\"status\":401}\n\n");
        tokio::task::yield_now().await;
        assert!(hub.watches().is_empty(), "the watch is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_polling_after_linger_and_resumes_from_history() {
        let script = Arc::new(Script::default());
        script.then(ok("[1]", "\"a\"")).then(ok("[2]", "\"b\"")).then(ok("[3]", "\"c\""));
        let start = Instant::now();
        let hub = hub(script.clone(), Access::Public);
        let joined = hub.subscribe(key(), Credentials::default(), None).await.unwrap();
        let snapshot = text(&joined.initial[0]);
        let id = snapshot.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().to_string();
        drop(joined);

        tokio::time::sleep(Duration::from_secs(25)).await;
        // Two changes happened while nobody listened; a client resuming from `id` gets both.
        let resumed = hub.subscribe(key(), Credentials::default(), Some(&id)).await.unwrap();
        let frames: Vec<_> = resumed.initial.iter().map(text).collect();
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames[0].ends_with("data: [2]\n\n") && frames[1].ends_with("data: [3]\n\n"));
        drop(resumed);

        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(hub.watches().is_empty());
        let polls = script.poll_offsets(start);
        assert!(polls.iter().all(|&t| t <= 60), "no poll after linger (30s after the last subscriber left): {polls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_polls_at_once_unless_the_upstream_asked_to_wait() {
        let script = Arc::new(Script::default());
        script.then(ok("[1]", "\"a\"")).then(ok("[1,2]", "\"b\"")).then(status(429, Some(60)));
        let start = Instant::now();
        let hub = hub(script.clone(), Access::Public);
        let _joined = hub.subscribe(key(), Credentials::default(), None).await.unwrap();
        // A write at 3s: polled at once, not at 10s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(hub.refresh("/tasks").await, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(script.poll_offsets(start), [0, 3]);
        // At 13s the upstream answers 429, Retry-After 60: ten writes meanwhile poll nothing,
        // and the poll at the deadline answers them (no second poll right after it).
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(script.poll_offsets(start), [0, 3, 13]);
        for _ in 0..10 {
            hub.refresh("/tasks").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        assert_eq!(script.poll_offsets(start), [0, 3, 13], "nothing before the Retry-After deadline");
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(script.poll_offsets(start), [0, 3, 13, 73, 83], "the deadline, then the interval");
    }

    #[tokio::test(start_paused = true)]
    async fn scheduled_polls_keep_their_share_under_a_flood_of_watches_and_of_writes() {
        // 10 polls/s: 5/s at most for first polls, lingering watches and refreshes.
        let script = Arc::new(Script::default());
        let routes = "routes: [{name: board, path: /board}, {name: tasks, path: /tasks}]";
        let hub = hub_with(script.clone(), Access::Public, routes, 10.0, Duration::from_secs(10));
        let board = WatchKey { route: 0, target: "/board".into(), scope: Scope::Everybody };
        let _board = hub.subscribe(board, Credentials::default(), None).await.unwrap();
        // Forty subscribed watches that every write refreshes (4 scheduled polls/s)...
        let mut joined = Vec::new();
        for i in 0..40 {
            let key = WatchKey { route: 1, target: format!("/tasks?list={i}"), scope: Scope::Everybody };
            joined.push(hub.subscribe(key, Credentials::default(), None).await.unwrap());
        }
        let start = Instant::now();
        // ...a write every 100 ms, and made-up watches asked for as fast as they are answered
        // (the per-scope limit refuses most; those made linger).
        let storm = tokio::spawn({
            let hub = hub.clone();
            async move {
                loop {
                    hub.refresh("/tasks").await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let flood = tokio::spawn({
            let hub = hub.clone();
            async move {
                for i in 0.. {
                    let key = WatchKey { route: 1, target: format!("/tasks?made-up={i}"), scope: Scope::Everybody };
                    drop(hub.subscribe(key, Credentials::default(), None).await);
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(120)).await;
        storm.abort();
        flood.abort();
        // Every subscribed watch polled on its schedule (10 s), the refreshed ones more often.
        let targets = std::iter::once("/board".to_string()).chain((0..40).map(|i| format!("/tasks?list={i}")));
        for target in targets {
            let polls: Vec<_> = script.polls_of(&target).into_iter().filter(|at| *at >= start).collect();
            let longest = polls.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(Duration::MAX);
            assert!(
                polls.len() >= 11 && longest <= Duration::from_millis(10_500),
                "{target}: {} polls, longest gap {longest:?}",
                polls.len()
            );
        }
        assert!(script.polls_of("/tasks?list=0").len() > 12, "refreshes polled the refreshed watches too");
    }
    // A poll held back for the upstream's quota is no failure while the watch stays within its
    // max_interval: polled again at the reset, no word to the subscribers. Held back longer, they
    // are told, and a first subscriber is told to come back then.
    #[tokio::test(start_paused = true)]
    async fn a_poll_held_back_for_the_quota_is_polled_at_the_reset_and_reported_when_long() {
        let held = |secs| {
            let wait = Duration::from_secs(secs);
            Err(PollError::QuotaExhausted { until: std::time::SystemTime::now() + wait, wait })
        };
        let script = Arc::new(Script::default());
        script.then(ok("[1]", "\"a\"")).then(held(30)).then(ok("[1,2]", "\"b\"")).then(held(600));
        script.then(ok("[1,2,3]", "\"c\""));
        let start = Instant::now();
        let hub = hub(script.clone(), Access::Public);
        let mut joined = hub.subscribe(key(), Credentials::default(), None).await.unwrap();
        let change = joined.rx.recv().await.unwrap();
        assert!(text(&change.frame).ends_with("data: [1,2]\n\n"), "{}", text(&change.frame));
        let down = text(&joined.rx.recv().await.unwrap().frame);
        assert!(down.contains(r#"data: {"ok":false,"error":"upstream quota exhausted until "#), "{down}");
        let up = text(&joined.rx.recv().await.unwrap().frame);
        assert!(up.ends_with("data: {\"ok\":true}\n\n"), "{up}");
        // Every 10 s; held back 30 s, then 600 s (the max_interval is 80 s).
        assert_eq!(script.poll_offsets(start), [0, 10, 40, 50, 650]);

        let script = Arc::new(Script::default());
        script.then(held(3600));
        let refusal =
            hub_with(script, Access::Public, "routes: [{name: t, path: /tasks}]", 100.0, Duration::from_secs(10))
                .subscribe(key(), Credentials::default(), None)
                .await
                .err()
                .unwrap();
        assert_eq!((refusal.status, refusal.retry_after), (503, Some(Duration::from_secs(3600))));
    }

    // A bug that panics in a poll loop leaves nobody waiting: a first subscriber is answered,
    // an open stream ends, and the next subscriber starts a new watch.
    #[tokio::test(start_paused = true)]
    async fn a_poll_loop_that_panics_answers_its_subscribers_and_leaves_no_watch() {
        /// Answers the second poll with `[]`, and panics at every other.
        #[derive(Default)]
        struct Buggy(std::sync::atomic::AtomicUsize);
        impl Fetch for Buggy {
            fn fetch<'a>(&'a self, _req: Request<'a>) -> FetchFuture<'a> {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    assert_eq!(n, 1, "a bug");
                    ok("[]", "\"0\"")
                })
            }
        }
        let yaml = "upstream: {url: 'http://127.0.0.1:1'}\nroutes: [{name: tasks, path: /tasks, access: public}]\n";
        let cfg = HubConfig {
            routes: herald_config::load("t.yaml", yaml, &|_| None).unwrap().routes,
            queue: 16,
            max_polls_per_second: 100.0,
            max_concurrency: 4,
            scope_key: [7; 32],
            limits: herald_config::Limits::default(),
            cluster: None,
        };
        let metrics = PollMetrics::new(&prometheus::Registry::new()).unwrap();
        let hub = Hub::new(cfg, Arc::new(Buggy::default()), &metrics, CancellationToken::new());
        let within = Duration::from_secs(600);

        // The first poll panics: its subscriber gets a 502, and no watch is left.
        let first = tokio::time::timeout(within, hub.subscribe(key(), Credentials::default(), None));
        let refusal = first.await.expect("the first subscriber was never answered").err().unwrap();
        assert_eq!(refusal.status, 502);
        assert!(hub.watches().is_empty());
        // A new watch opens; its next poll panics: its stream ends.
        let mut joined = hub.subscribe(key(), Credentials::default(), None).await.unwrap();
        let end = tokio::time::timeout(within, joined.rx.recv()).await.expect("the stream never ended").unwrap();
        assert_eq!(end.kind, EventKind::Terminal);
        assert_eq!(text(&end.frame), "event: error\ndata: {\"reason\":\"internal\"}\n\n");
        assert!(hub.watches().is_empty());
    }
}
