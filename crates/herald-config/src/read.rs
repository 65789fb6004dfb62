//! Reads the position-keeping YAML tree into [`Config`], collecting every problem on the way.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::units::{parse_duration, parse_size};
use crate::yaml::{self, Kind, Node, Pos};
use crate::*;

/// Loads a configuration from `text`; `file` names it in problems, `env` resolves `${VAR}`.
pub fn load(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problems> {
    let mut cx = Cx { file, env, problems: Vec::new(), positions: HashMap::new() };
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            cx.problem(e.pos, "", format!("invalid YAML: {}", e.message));
            return Err(Problems(cx.problems));
        }
    };
    let mut config = cx.config(&root);
    cx.validate(&config);
    if cx.problems.is_empty() {
        config.positions = Positions::new(file, cx.positions);
        Ok(config)
    } else {
        cx.problems.sort_by_key(|p| (p.line, p.col));
        Err(Problems(cx.problems))
    }
}

struct Cx<'a> {
    file: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    /// key path → where its value was written, for problems found after reading.
    positions: HashMap<String, Pos>,
}

/// A mapping being read: keys are taken one by one, what is left is unknown.
struct MapReader<'n> {
    path: String,
    entries: Vec<(&'n Node, &'n Node)>,
}

impl<'n> MapReader<'n> {
    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn take(&mut self, key: &str) -> Option<&'n Node> {
        #[cfg(test)]
        schema::asked(&self.child(key));
        let i = self.entries.iter().position(|(k, _)| matches!(&k.kind, Kind::Scalar { text, .. } if text == key))?;
        Some(self.entries.remove(i).1)
    }

    /// Reads `key` with `parse` into `slot` when present and valid.
    fn field<'a, T>(
        &mut self,
        cx: &mut Cx<'a>,
        key: &str,
        slot: &mut T,
        parse: impl FnOnce(&mut Cx<'a>, &Node, &str) -> Option<T>,
    ) {
        if let Some(node) = self.take(key) {
            let path = self.child(key);
            cx.positions.insert(path.clone(), node.pos);
            if let Some(v) = parse(cx, node, &path) {
                *slot = v;
            }
        }
    }

    /// Reports every key nobody took.
    fn finish(mut self, cx: &mut Cx) {
        for (k, _) in std::mem::take(&mut self.entries) {
            let name = match &k.kind {
                Kind::Scalar { text, .. } => text.clone(),
                _ => format!("<{}>", k.describe()),
            };
            cx.problem(k.pos, &self.child(&name), "unknown key");
        }
    }
}

impl<'a> Cx<'a> {
    fn problem(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A problem found after reading, placed where `path` (or its closest parent) was written.
    fn problem_at(&mut self, path: &str, message: impl Into<String>) {
        let pos = crate::position(&self.positions, path);
        self.problem(pos, path, message);
    }

    fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<MapReader<'n>> {
        self.positions.insert(path.to_string(), node.pos);
        match &node.kind {
            Kind::Map(entries) => {
                Some(MapReader { path: path.to_string(), entries: entries.iter().map(|(k, v)| (k, v)).collect() })
            }
            Kind::Null => Some(MapReader { path: path.to_string(), entries: Vec::new() }),
            _ => {
                self.problem(node.pos, path, format!("expected a mapping, found {}", node.describe()));
                None
            }
        }
    }

    fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            Kind::Null => Some(&[]),
            _ => {
                self.problem(node.pos, path, format!("expected a list, found {}", node.describe()));
                None
            }
        }
    }

    /// A scalar as text, with `${VAR}` and `${VAR:-default}` resolved.
    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } => self.interpolate(text, node.pos, path),
            _ => {
                self.problem(node.pos, path, format!("expected a string, found {}", node.describe()));
                None
            }
        }
    }

    fn interpolate(&mut self, text: &str, pos: Pos, path: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let Some(end) = rest[i..].find('}') else {
                self.problem(pos, path, "unterminated ${ in value");
                return None;
            };
            let inner = &rest[i + 2..i + end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                self.problem(pos, path, format!("invalid variable reference ${{{inner}}}"));
                return None;
            }
            match ((self.env)(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    self.problem(
                        pos,
                        path,
                        format!(
                            "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                        ),
                    );
                    return None;
                }
            }
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let s = self.string(node, path)?;
        let d = parse_duration(&s);
        if d.is_none() {
            self.problem(node.pos, path, format!("invalid duration {s:?} (expected e.g. 500ms, 5s, 2m)"));
        }
        d
    }

    fn size(&mut self, node: &Node, path: &str) -> Option<u64> {
        let s = self.string(node, path)?;
        let v = parse_size(&s);
        if v.is_none() {
            self.problem(node.pos, path, format!("invalid size {s:?} (expected e.g. 512KiB, 8MiB)"));
        }
        v
    }

    fn number<T: std::str::FromStr>(&mut self, node: &Node, path: &str, what: &str) -> Option<T> {
        let s = self.string(node, path)?;
        let v = s.parse().ok();
        if v.is_none() {
            self.problem(node.pos, path, format!("invalid value {s:?} (expected {what})"));
        }
        v
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match self.string(node, path)?.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            s => {
                self.problem(node.pos, path, format!("invalid value {s:?} (expected true or false)"));
                None
            }
        }
    }

    fn socket_addr(&mut self, node: &Node, path: &str) -> Option<SocketAddr> {
        let s = self.string(node, path)?;
        let v = s.parse().ok();
        if v.is_none() {
            self.problem(node.pos, path, format!("invalid address {s:?} (expected IP:PORT, e.g. 127.0.0.1:8080)"));
        }
        v
    }

    fn one_of<T: Copy>(&mut self, node: &Node, path: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, path)?;
        let found = choices.iter().find(|(name, _)| *name == s).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
            self.problem(node.pos, path, format!("invalid value {s:?} (expected one of: {})", names.join(", ")));
        }
        found
    }

    fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.seq(node, path)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &format!("{path}[{i}]"))?);
        }
        Some(out)
    }

    /// A JSON Pointer: "" (the whole document, when `allow_root`) or starting with `/`.
    fn pointer(&mut self, node: &Node, path: &str, allow_root: bool) -> Option<String> {
        let s = self.string(node, path)?;
        if s.starts_with('/') || (allow_root && s.is_empty()) {
            Some(s)
        } else {
            self.problem(node.pos, path, format!("invalid JSON Pointer {s:?} (expected e.g. /id)"));
            None
        }
    }

    fn config(&mut self, root: &Node) -> Config {
        let mut config = Config {
            server: Server::default(),
            limits: Limits::default(),
            upstream: Upstream::default(),
            routes: Vec::new(),
            sse: Sse::default(),
            storage: Storage::default(),
            webhooks: Webhooks::default(),
            log: Log::default(),
            positions: Positions::default(),
        };
        let Some(mut m) = self.map(root, "") else { return config };
        m.field(self, "server", &mut config.server, |cx, n, p| Some(cx.server(n, p)));
        m.field(self, "limits", &mut config.limits, |cx, n, p| Some(cx.limits(n, p)));
        match m.take("upstream") {
            Some(n) => config.upstream = self.upstream(n, "upstream"),
            None => self.problem(root.pos, "upstream.url", "is required"),
        }
        match m.take("routes") {
            Some(n) => {
                self.positions.insert("routes".into(), n.pos);
                config.routes = self.routes(n);
            }
            None => self.problem(root.pos, "routes", "is required (at least one route)"),
        }
        m.field(self, "sse", &mut config.sse, |cx, n, p| Some(cx.sse(n, p)));
        m.field(self, "storage", &mut config.storage, |cx, n, p| Some(cx.storage(n, p)));
        m.field(self, "webhooks", &mut config.webhooks, |cx, n, p| Some(cx.webhooks(n, p)));
        m.field(self, "log", &mut config.log, |cx, n, p| Some(cx.log(n, p)));
        m.finish(self);
        config
    }

    fn server(&mut self, node: &Node, path: &str) -> Server {
        let mut s = Server::default();
        let Some(mut m) = self.map(node, path) else { return s };
        m.field(self, "listen", &mut s.listen, Cx::socket_addr);
        m.field(self, "admin_listen", &mut s.admin_listen, Cx::socket_addr);
        m.field(self, "shutdown_grace", &mut s.shutdown_grace, Cx::duration);
        m.field(self, "header_timeout", &mut s.header_timeout, Cx::duration);
        m.field(self, "max_header_size", &mut s.max_header_size, Cx::size);
        m.field(self, "max_connections", &mut s.max_connections, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "idle_timeout", &mut s.idle_timeout, Cx::duration);
        m.field(self, "admin_token", &mut s.admin_token, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "access_log", &mut s.access_log, Cx::boolean);
        m.field(self, "tls", &mut s.tls, |cx, n, p| {
            let mut tm = cx.map(n, p)?;
            let (mut cert, mut key) = (None, None);
            tm.field(cx, "cert", &mut cert, |cx, n, p| cx.string(n, p).map(Some));
            tm.field(cx, "key", &mut key, |cx, n, p| cx.string(n, p).map(Some));
            tm.finish(cx);
            match (cert, key) {
                (Some(cert), Some(key)) => Some(Some(Tls { cert, key })),
                _ => {
                    cx.problem(n.pos, p, "needs both cert and key (PEM files)");
                    None
                }
            }
        });
        m.finish(self);
        s
    }

    fn limits(&mut self, node: &Node, path: &str) -> Limits {
        let mut l = Limits::default();
        let Some(mut m) = self.map(node, path) else { return l };
        m.field(self, "max_watches", &mut l.max_watches, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "max_watches_per_scope", &mut l.max_watches_per_scope, |cx, n, p| {
            cx.number(n, p, "a positive integer")
        });
        m.finish(self);
        l
    }

    fn upstream(&mut self, node: &Node, path: &str) -> Upstream {
        let mut u = Upstream::default();
        let Some(mut m) = self.map(node, path) else { return u };
        let mut basic = None;
        match m.take("url") {
            Some(n) => {
                self.positions.insert("upstream.url".into(), n.pos);
                if let Some(url) = self.string(n, "upstream.url") {
                    let (url, userinfo) = split_userinfo(&url);
                    match crate::UpstreamUrl::parse(&url) {
                        Ok(parsed) => u.url = parsed,
                        Err(msg) => self.problem(n.pos, "upstream.url", msg),
                    }
                    basic = userinfo;
                }
            }
            None => self.problem(node.pos, "upstream.url", "is required"),
        }
        m.field(self, "timeout", &mut u.timeout, Cx::duration);
        m.field(self, "max_concurrency", &mut u.max_concurrency, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "max_polls_per_second", &mut u.max_polls_per_second, |cx, n, p| {
            cx.number(n, p, "a positive number")
        });
        m.field(self, "max_body", &mut u.max_body, Cx::size);
        m.field(self, "ca_file", &mut u.ca_file, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "headers", &mut u.headers, Cx::headers);
        m.field(self, "client_cert", &mut u.client_cert, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "client_key", &mut u.client_key, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "auth", &mut u.auth, |cx, n, p| cx.upstream_auth(n, p).map(Some));
        m.field(self, "rate_limit_reserve", &mut u.rate_limit_reserve, |cx, n, p| {
            cx.number(n, p, "a whole number of requests").map(Some)
        });
        m.field(self, "rate_limit_headers", &mut u.rate_limit_headers, Cx::boolean);
        m.finish(self);
        if u.client_cert.is_some() != u.client_key.is_some() {
            let (set, missing) =
                if u.client_cert.is_some() { ("client_cert", "client_key") } else { ("client_key", "client_cert") };
            self.problem_at(&format!("upstream.{set}"), format!("needs upstream.{missing} too (both or neither)"));
        }
        if u.auth.is_some() && (basic.is_some() || u.headers.iter().any(|(name, _)| name == "authorization")) {
            self.problem_at(
                "upstream.auth",
                "the token is the authorization header: remove it from upstream.headers (and any user:password from upstream.url)",
            );
        }
        // `user:password@` in the URL is a service credential like upstream.headers (and sent
        // as one, unless an authorization header is configured); the URL itself keeps none, so
        // it can be logged and is never forwarded on pass-through.
        if let Some(credentials) = basic.filter(|_| !u.headers.iter().any(|(name, _)| name == "authorization")) {
            u.headers.push(("authorization".into(), credentials));
        }
        u
    }

    /// `upstream.auth`: the one kind herald knows, `oauth2_client_credentials`.
    fn upstream_auth(&mut self, node: &Node, path: &str) -> Option<UpstreamAuth> {
        let mut m = self.map(node, path)?;
        let mut ok = true;
        match m.take("kind") {
            Some(n) => {
                self.positions.insert(m.child("kind"), n.pos);
                match self.string(n, &m.child("kind")).as_deref() {
                    Some("oauth2_client_credentials") => {}
                    Some(other) => {
                        self.problem(
                            n.pos,
                            &m.child("kind"),
                            format!("invalid value {other:?} (expected oauth2_client_credentials)"),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            None => {
                self.problem(node.pos, &m.child("kind"), "is required (oauth2_client_credentials)");
                ok = false;
            }
        }
        let mut required = |cx: &mut Cx<'a>, m: &mut MapReader, key: &str| -> String {
            let mut value = None;
            m.field(cx, key, &mut value, |cx, n, p| cx.string(n, p).map(Some));
            match value {
                Some(v) if v.is_empty() => {
                    cx.problem_at(&m.child(key), "must not be empty");
                    ok = false;
                    v
                }
                Some(v) => v,
                None => {
                    cx.problem(node.pos, &m.child(key), "is required");
                    ok = false;
                    String::new()
                }
            }
        };
        let token_url = required(self, &mut m, "token_url");
        let client_id = required(self, &mut m, "client_id");
        let client_secret = required(self, &mut m, "client_secret");
        let mut auth = UpstreamAuth { token_url, client_id, client_secret, scope: None, audience: None };
        m.field(self, "scope", &mut auth.scope, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "audience", &mut auth.audience, |cx, n, p| cx.string(n, p).map(Some));
        m.finish(self);
        if let Some(problem) = token_url_problem(&auth.token_url).filter(|_| !auth.token_url.is_empty()) {
            self.problem_at(&format!("{path}.token_url"), problem);
            ok = false;
        }
        ok.then_some(auth)
    }

    /// A mapping of header names to values; names lower-cased.
    fn headers(&mut self, node: &Node, path: &str) -> Option<Vec<(String, String)>> {
        let mut hm = self.map(node, path)?;
        let mut out = Vec::new();
        for (k, v) in std::mem::take(&mut hm.entries) {
            let name = self.string(k, path)?;
            let value = self.string(v, &format!("{path}.{name}"))?;
            if !valid_header_name(&name) {
                self.problem(k.pos, &format!("{path}.{name}"), "invalid header name");
            }
            out.push((name.to_ascii_lowercase(), value));
        }
        Some(out)
    }

    fn storage(&mut self, node: &Node, path: &str) -> Storage {
        let mut s = Storage::default();
        let Some(mut m) = self.map(node, path) else { return s };
        if let Some(n) = m.take("kind") {
            self.positions.insert(m.child("kind"), n.pos);
            match self.string(n, "storage.kind").as_deref() {
                Some("embedded") => s.kind = StorageKind::Embedded,
                Some("memory") => s.kind = StorageKind::Memory,
                Some("redis") => s.kind = StorageKind::Redis,
                Some(other) => self.problem(
                    n.pos,
                    "storage.kind",
                    format!("invalid value {other:?} (expected one of: embedded, memory, redis)"),
                ),
                None => {}
            }
        }
        m.field(self, "path", &mut s.path, Cx::string);
        m.field(self, "encryption_key", &mut s.encryption_key, |cx, n, p| {
            use base64::Engine;
            let text = cx.string(n, p)?;
            let key = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok();
            match key.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
                Some(key) => Some(Some(key)),
                None => {
                    // The value is a secret: the message never repeats it.
                    cx.problem(
                        n.pos,
                        p,
                        "invalid key (expected the base64 of 32 bytes, e.g. `openssl rand -base64 32`)",
                    );
                    None
                }
            }
        });
        m.field(self, "url", &mut s.url, |cx, n, p| {
            let url = cx.string(n, p)?;
            match crate::RedisUrl::parse(&url) {
                Ok(_) => Some(url),
                Err(e) => {
                    // The URL may hold a password: the message names the problem, not the value.
                    cx.problem(n.pos, p, e);
                    None
                }
            }
        });
        m.field(self, "prefix", &mut s.prefix, |cx, n, p| {
            let prefix = cx.string(n, p)?;
            let valid = !prefix.is_empty()
                && prefix.len() <= 64
                && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
            if !valid {
                cx.problem(n.pos, p, format!("invalid prefix {prefix:?} (expected 1-64 of [A-Za-z0-9_.:-])"));
                return None;
            }
            Some(prefix)
        });
        m.field(self, "lease", &mut s.lease, Cx::duration);
        m.field(self, "ca_file", &mut s.ca_file, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "client_cert", &mut s.client_cert, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "client_key", &mut s.client_key, |cx, n, p| cx.string(n, p).map(Some));
        m.finish(self);
        s
    }

    fn webhooks(&mut self, node: &Node, path: &str) -> Webhooks {
        let mut w = Webhooks::default();
        let Some(mut m) = self.map(node, path) else { return w };
        m.field(self, "api_keys", &mut w.api_keys, Cx::strings);
        m.field(self, "timeout", &mut w.timeout, Cx::duration);
        m.field(self, "retry_schedule", &mut w.retry_schedule, |cx, n, p| {
            let items = cx.seq(n, p)?;
            items.iter().enumerate().map(|(i, item)| cx.duration(item, &format!("{p}[{i}]"))).collect()
        });
        m.field(self, "max_in_flight", &mut w.max_in_flight, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "allow_private_destinations", &mut w.allow_private_destinations, |cx, n, p| {
            if matches!(n.kind, Kind::Seq(_)) {
                let cidrs = cx.strings(n, p)?;
                let mut nets = Vec::new();
                for (i, c) in cidrs.iter().enumerate() {
                    match c.parse::<ipnet::IpNet>() {
                        Ok(net) => nets.push(net),
                        Err(_) => match c.parse::<std::net::IpAddr>() {
                            Ok(ip) => nets.push(ip.into()),
                            Err(_) => cx.problem(
                                n.pos,
                                &format!("{p}[{i}]"),
                                format!("invalid CIDR {c:?} (expected e.g. 127.0.0.0/8)"),
                            ),
                        },
                    }
                }
                Some(PrivateDestinations::Cidrs(nets))
            } else {
                let all = cx.boolean(n, p)?;
                Some(if all { PrivateDestinations::All } else { PrivateDestinations::None })
            }
        });
        m.field(self, "disable_after", &mut w.disable_after, Cx::duration);
        m.field(self, "notify", &mut w.notify, Cx::boolean);
        m.field(self, "operational_url", &mut w.operational_url, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "operational_secret", &mut w.operational_secret, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "subscriptions", &mut w.subscriptions, |cx, n, p| {
            let items = cx.seq(n, p)?;
            Some(items.iter().enumerate().filter_map(|(i, item)| cx.subscription(item, &format!("{p}[{i}]"))).collect())
        });
        m.finish(self);
        w
    }

    fn subscription(&mut self, node: &Node, path: &str) -> Option<StaticSubscription> {
        let mut m = self.map(node, path)?;
        let mut s = StaticSubscription::default();
        for (key, slot) in [("id", &mut s.id), ("url", &mut s.url), ("path", &mut s.path)] {
            *slot = self.required_string(&mut m, node, key);
        }
        m.field(self, "filter", &mut s.filter, |cx, n, p| {
            let filters = cx.strings(n, p)?;
            for f in &filters {
                if let Err(msg) = check_filter(f) {
                    cx.problem(n.pos, p, msg);
                }
            }
            Some(filters)
        });
        m.field(self, "payload", &mut s.payload, |cx, n, p| {
            cx.one_of(n, p, &[("rich", Payload::Rich), ("lean", Payload::Lean)]).map(Some)
        });
        m.field(self, "secret", &mut s.secret, |cx, n, p| {
            let secret = cx.string(n, p)?;
            match check_secret(&secret) {
                Ok(()) => Some(Some(secret)),
                Err(msg) => {
                    cx.problem(n.pos, p, msg);
                    None
                }
            }
        });
        m.field(self, "headers", &mut s.headers, Cx::headers);
        m.field(self, "description", &mut s.description, |cx, n, p| cx.string(n, p).map(Some));
        m.finish(self);
        Some(s)
    }

    /// A string key that must be present in the mapping `node`; empty (with a problem) when not.
    fn required_string(&mut self, m: &mut MapReader, node: &Node, key: &str) -> String {
        let path = m.child(key);
        let Some(n) = m.take(key) else {
            self.problem(node.pos, &path, "is required");
            return String::new();
        };
        self.positions.insert(path.clone(), n.pos);
        self.string(n, &path).unwrap_or_default()
    }

    fn routes(&mut self, node: &Node) -> Vec<Route> {
        let Some(items) = self.seq(node, "routes") else { return Vec::new() };
        items.iter().enumerate().filter_map(|(i, n)| self.route(n, &format!("routes[{i}]"))).collect()
    }

    fn route(&mut self, node: &Node, path: &str) -> Option<Route> {
        let mut m = self.map(node, path)?;
        let mut name = String::new();
        let mut route_path = String::new();
        for (key, slot) in [("name", &mut name), ("path", &mut route_path)] {
            *slot = self.required_string(&mut m, node, key);
        }
        let mut r = Route::new(name, route_path);
        m.field(self, "access", &mut r.access, |cx, n, p| {
            cx.one_of(
                n,
                p,
                &[("per-subscriber", Access::PerSubscriber), ("shared", Access::Shared), ("public", Access::Public)],
            )
        });
        m.field(self, "vary", &mut r.vary, |cx, n, p| {
            let names = cx.strings(n, p)?;
            for name in &names {
                if !valid_header_name(name) {
                    cx.problem(n.pos, p, format!("invalid header name {name:?}"));
                }
            }
            Some(names.into_iter().map(|s| s.to_ascii_lowercase()).collect())
        });
        m.field(self, "query", &mut r.query, |cx, n, p| {
            if matches!(n.kind, Kind::Null) {
                return Some(None);
            }
            cx.strings(n, p).map(Some)
        });
        m.field(self, "authorize_ttl", &mut r.authorize_ttl, Cx::duration);
        m.field(self, "poll", &mut r.poll, |cx, n, p| Some(cx.poll(n, p)));
        m.field(self, "ignore", &mut r.ignore, |cx, n, p| {
            let ptrs = cx.strings(n, p)?;
            for ptr in &ptrs {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    cx.problem(n.pos, p, format!("invalid JSON Pointer {ptr:?} (must start with /)"));
                }
            }
            Some(ptrs)
        });
        m.field(self, "events", &mut r.events, |cx, n, p| Some(cx.events(n, p)));
        m.field(self, "cache", &mut r.cache, Cx::boolean);
        m.field(self, "refresh_on_write", &mut r.refresh_on_write, Cx::boolean);
        m.field(self, "webhooks", &mut r.webhooks, Cx::boolean);
        m.finish(self);
        Some(r)
    }

    fn poll(&mut self, node: &Node, path: &str) -> Poll {
        let mut p = Poll::default();
        let Some(mut m) = self.map(node, path) else { return p };
        m.field(self, "interval", &mut p.interval, Cx::duration);
        m.field(self, "min_interval", &mut p.min_interval, Cx::duration);
        m.field(self, "max_interval", &mut p.max_interval, Cx::duration);
        m.field(self, "adaptive", &mut p.adaptive, Cx::boolean);
        m.field(self, "jitter", &mut p.jitter, |cx, n, path| cx.number(n, path, "a fraction between 0 and 1"));
        m.field(self, "linger", &mut p.linger, Cx::duration);
        m.field(self, "pages", &mut p.pages, |cx, n, path| Some(Some(cx.pages(n, path))));
        m.field(self, "delta", &mut p.delta, |cx, n, path| {
            if matches!(n.kind, Kind::Null) {
                Some(None)
            } else {
                cx.delta(n, path).map(Some)
            }
        });
        m.finish(self);
        p
    }

    fn delta(&mut self, node: &Node, path: &str) -> Option<Delta> {
        let mut m = self.map(node, path)?;
        let mut d = Delta {
            param: "updated_since".into(),
            from: DeltaFrom::Max("/updated_at".into()),
            deleted: Deleted::None,
            full_every: Duration::from_secs(3600),
        };
        m.field(self, "param", &mut d.param, |cx, n, p| {
            let param = cx.string(n, p)?;
            // RFC 3986's unreserved characters, and the brackets of `filter[updated_at]`.
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~[]".contains(c);
            if param.is_empty() || !param.chars().all(allowed) {
                cx.problem(n.pos, p, format!("invalid query parameter name {param:?}"));
                return None;
            }
            Some(param)
        });
        m.field(self, "from", &mut d.from, |cx, n, p| {
            let from = cx.string(n, p)?;
            let parsed = match from.split_once(':') {
                Some(("max", ptr)) if ptr.starts_with('/') => Some(DeltaFrom::Max(ptr.into())),
                Some(("body", ptr)) if ptr.starts_with('/') => Some(DeltaFrom::Body(ptr.into())),
                Some(("header", name)) if valid_header_name(name) => Some(DeltaFrom::Header(name.to_ascii_lowercase())),
                _ => None,
            };
            if parsed.is_none() {
                cx.problem(
                    n.pos,
                    p,
                    format!(
                        "invalid value {from:?} (expected max:<JSON Pointer>, body:<JSON Pointer> or header:<name>)"
                    ),
                );
            }
            parsed
        });
        m.field(self, "deleted", &mut d.deleted, |cx, n, p| {
            if matches!(n.kind, Kind::Null) {
                return Some(Deleted::None);
            }
            let deleted = cx.string(n, p)?;
            match deleted.strip_prefix("feed:") {
                // `/deleted`, `/removed/ids`: path segments, none empty, `.` or `..`.
                Some(suffix)
                    if suffix.starts_with('/')
                        && suffix[1..].split('/').all(|s| {
                            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_graphic() && !"?#%".contains(c))
                        }) =>
                {
                    Some(Deleted::Feed(suffix.into()))
                }
                None if deleted.starts_with('/') => Some(Deleted::Flag(deleted)),
                _ => {
                    cx.problem(
                        n.pos,
                        p,
                        format!("invalid value {deleted:?} (expected a JSON Pointer to a tombstone flag such as /deleted, or feed:/<path suffix>)"),
                    );
                    None
                }
            }
        });
        m.field(self, "full_every", &mut d.full_every, Cx::duration);
        m.finish(self);
        Some(d)
    }

    fn pages(&mut self, node: &Node, path: &str) -> Pages {
        let mut pages = Pages { next: NextPage::Link, cursor_param: None, items: String::new(), max_pages: 20 };
        let Some(mut m) = self.map(node, path) else { return pages };
        m.field(self, "next", &mut pages.next, |cx, n, p| match cx.string(n, p)?.as_str() {
            "link" => Some(NextPage::Link),
            pointer if pointer.starts_with('/') => Some(NextPage::Pointer(pointer.to_string())),
            other => {
                cx.problem(
                    n.pos,
                    p,
                    format!("invalid value {other:?} (expected link, or a JSON Pointer such as /next)"),
                );
                None
            }
        });
        m.field(self, "cursor_param", &mut pages.cursor_param, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "items", &mut pages.items, |cx, n, p| cx.pointer(n, p, true));
        m.field(self, "max_pages", &mut pages.max_pages, |cx, n, p| {
            match cx.number::<usize>(n, p, "a positive integer")? {
                0 => {
                    cx.problem(n.pos, p, "must be at least 1");
                    None
                }
                max => Some(max),
            }
        });
        m.finish(self);
        if pages.cursor_param.is_some() && pages.next == NextPage::Link {
            self.problem(
                node.pos,
                &format!("{path}.cursor_param"),
                "only applies with next: a JSON Pointer to a cursor",
            );
        }
        pages
    }

    fn events(&mut self, node: &Node, path: &str) -> Events {
        let mut e = Events::default();
        let Some(mut m) = self.map(node, path) else { return e };
        m.field(self, "format", &mut e.format, |cx, n, p| {
            cx.one_of(
                n,
                p,
                &[
                    ("snapshot", Format::Snapshot),
                    ("json-patch", Format::JsonPatch),
                    ("merge-patch", Format::MergePatch),
                    ("collection", Format::Collection),
                ],
            )
        });
        m.field(self, "array_id", &mut e.array_id, |cx, n, p| cx.pointer(n, p, false).map(Some));
        m.field(self, "collection", &mut e.collection, |cx, n, p| {
            let mut c = CollectionConfig::default();
            let mut cm = cx.map(n, p)?;
            cm.field(cx, "items", &mut c.items, |cx, n, p| cx.pointer(n, p, true));
            cm.field(cx, "id", &mut c.id, |cx, n, p| cx.pointer(n, p, false));
            cm.field(cx, "payload", &mut c.payload, |cx, n, p| {
                cx.one_of(n, p, &[("rich", Payload::Rich), ("lean", Payload::Lean)])
            });
            cm.finish(cx);
            Some(Some(c))
        });
        m.field(self, "type", &mut e.type_prefix, |cx, n, p| cx.string(n, p).map(Some));
        m.field(self, "history", &mut e.history, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "history_bytes", &mut e.history_bytes, Cx::size);
        m.finish(self);
        e
    }

    fn sse(&mut self, node: &Node, path: &str) -> Sse {
        let mut s = Sse::default();
        let Some(mut m) = self.map(node, path) else { return s };
        m.field(self, "heartbeat", &mut s.heartbeat, Cx::duration);
        m.field(self, "retry", &mut s.retry, Cx::duration);
        m.field(self, "max_subscribers", &mut s.max_subscribers, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "queue", &mut s.queue, |cx, n, p| cx.number(n, p, "a positive integer"));
        m.field(self, "cors_origins", &mut s.cors_origins, Cx::strings);
        m.field(self, "write_timeout", &mut s.write_timeout, Cx::duration);
        m.finish(self);
        s
    }

    fn log(&mut self, node: &Node, path: &str) -> Log {
        let mut l = Log::default();
        let Some(mut m) = self.map(node, path) else { return l };
        m.field(self, "format", &mut l.format, |cx, n, p| {
            cx.one_of(n, p, &[("text", LogFormat::Text), ("json", LogFormat::Json)])
        });
        m.field(self, "level", &mut l.level, |cx, n, p| {
            cx.one_of(
                n,
                p,
                &[("error", "error"), ("warn", "warn"), ("info", "info"), ("debug", "debug"), ("trace", "trace")],
            )
            .map(String::from)
        });
        m.finish(self);
        l
    }

    /// Checks that involve more than one key, or ranges.
    fn validate(&mut self, c: &Config) {
        let u = &c.upstream;
        if u.max_concurrency == 0 {
            self.problem_at("upstream.max_concurrency", "must be at least 1");
        }
        if !(u.max_polls_per_second > 0.0 && u.max_polls_per_second.is_finite()) {
            self.problem_at("upstream.max_polls_per_second", "must be a positive number");
        }
        if u.timeout.is_zero() {
            self.problem_at("upstream.timeout", "must be longer than 0");
        }
        if c.server.header_timeout.is_zero() {
            self.problem_at("server.header_timeout", "must be longer than 0");
        }
        if c.server.max_header_size < 8192 {
            self.problem_at("server.max_header_size", "must be at least 8KiB");
        }
        if c.server.max_connections == 0 {
            self.problem_at("server.max_connections", "must be at least 1");
        }
        if c.server.idle_timeout.is_zero() {
            self.problem_at("server.idle_timeout", "must be longer than 0");
        }
        if c.server.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            self.problem_at("server.admin_token", "too short (use at least 16 characters)");
        }
        if c.limits.max_watches == 0 {
            self.problem_at("limits.max_watches", "must be at least 1");
        }
        if c.limits.max_watches_per_scope == 0 {
            self.problem_at("limits.max_watches_per_scope", "must be at least 1");
        }
        if c.sse.write_timeout.is_zero() {
            self.problem_at("sse.write_timeout", "must be longer than 0");
        }
        if c.sse.queue == 0 {
            self.problem_at("sse.queue", "must be at least 1");
        }
        if c.sse.heartbeat.is_zero() {
            self.problem_at("sse.heartbeat", "must be longer than 0");
        }
        if c.sse.max_subscribers == 0 {
            self.problem_at("sse.max_subscribers", "must be at least 1");
        }
        if c.storage.kind == StorageKind::Redis {
            self.validate_redis(&c.storage);
        }
        if c.server.listen == c.server.admin_listen && c.server.listen.port() != 0 {
            self.problem_at("server.admin_listen", "must differ from server.listen");
        }
        if self.positions.contains_key("routes") && c.routes.is_empty() && self.problems.is_empty() {
            self.problem_at("routes", "at least one route is required");
        }
        let mut names = HashSet::new();
        let mut patterns: Vec<(Vec<Segment>, usize)> = Vec::new();
        for (i, r) in c.routes.iter().enumerate() {
            let at = |key: &str| format!("routes[{i}].{key}");
            if !r.name.is_empty() {
                if !r.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
                    self.problem_at(&at("name"), format!("invalid name {:?} (use only a-z, 0-9, _ and -)", r.name));
                } else if !names.insert(r.name.as_str()) {
                    self.problem_at(&at("name"), format!("duplicate route name {:?}", r.name));
                }
            }
            if !r.path.is_empty() {
                match parse_pattern(&r.path) {
                    None => self.problem_at(
                        &at("path"),
                        format!("invalid path {:?} (expected /literal/{{param}} segments, no query)", r.path),
                    ),
                    Some(segs) => {
                        if let Some((_, j)) = patterns.iter().find(|(s, _)| shapes_equal(s, &segs)) {
                            self.problem_at(&at("path"), format!("same path as routes[{j}]"));
                        } else {
                            patterns.push((segs, i));
                        }
                    }
                }
            }
            let p = &r.poll;
            if p.interval.is_zero() {
                self.problem_at(&at("poll.interval"), "must be longer than 0");
            }
            if p.min_interval.is_zero() {
                self.problem_at(&at("poll.min_interval"), "must be longer than 0");
            }
            if p.min_interval > p.max_interval {
                self.problem_at(
                    &at("poll.min_interval"),
                    format!(
                        "min_interval ({}) is longer than max_interval ({})",
                        show(p.min_interval),
                        show(p.max_interval)
                    ),
                );
            } else if p.interval < p.min_interval || p.interval > p.max_interval {
                self.problem_at(
                    &at("poll.interval"),
                    format!(
                        "interval ({}) must lie between min_interval ({}) and max_interval ({})",
                        show(p.interval),
                        show(p.min_interval),
                        show(p.max_interval)
                    ),
                );
            }
            if !(0.0..1.0).contains(&p.jitter) {
                self.problem_at(&at("poll.jitter"), format!("must be at least 0 and below 1, found {}", p.jitter));
            }
            let ev = &r.events;
            if let Some(delta) = &p.delta {
                let by_id = match ev.format {
                    Format::Collection => true,
                    Format::JsonPatch => ev.array_id.is_some(),
                    _ => false,
                };
                if !by_id {
                    self.problem_at(
                        &at("poll.delta"),
                        "delta polling needs events.format collection, or json-patch with events.array_id (items are upserted by id)",
                    );
                }
                if p.pages.is_some() && !matches!(delta.from, DeltaFrom::Max(_)) {
                    self.problem_at(
                        &at("poll.delta.from"),
                        "with poll.pages, the value must come from max:<JSON Pointer>",
                    );
                }
                if delta.full_every.is_zero() {
                    self.problem_at(&at("poll.delta.full_every"), "must be longer than 0");
                }
            }
            match (ev.format, &ev.collection) {
                (Format::Collection, None) => {
                    self.problem_at(&at("events.format"), "format collection needs events.collection (items, id)")
                }
                (f, Some(_)) if f != Format::Collection => {
                    self.problem_at(&at("events.collection"), "only applies to format collection")
                }
                _ => {}
            }
            if ev.array_id.is_some() && ev.format != Format::JsonPatch {
                self.problem_at(&at("events.array_id"), "only applies to format json-patch");
            }
            if r.events.history_bytes < 1024 {
                self.problem_at(&at("events.history_bytes"), "must be at least 1KiB");
            }
            if r.events.history == 0 {
                self.problem_at(&at("events.history"), "must be at least 1");
            }
            if r.access != Access::Public && r.vary.is_empty() {
                self.problem_at(&at("vary"), format!("access {} needs at least one vary header", r.access.as_str()));
            }
        }
        self.validate_webhooks(c);
    }

    fn validate_redis(&mut self, s: &Storage) {
        if s.lease < Duration::from_secs(1) {
            self.problem_at("storage.lease", "must be at least 1s (it is renewed every third of it)");
        }
        if s.client_cert.is_some() != s.client_key.is_some() {
            let (set, missing) =
                if s.client_cert.is_some() { ("client_cert", "client_key") } else { ("client_key", "client_cert") };
            self.problem_at(&format!("storage.{set}"), format!("needs storage.{missing} too (both or neither)"));
        }
        // A CA or a client certificate with a plain URL means the operator believes the
        // connection is encrypted: it is not, so say so instead of ignoring the file.
        let plain = crate::RedisUrl::parse(&s.url).is_ok_and(|url| !url.tls());
        for (key, set) in [("ca_file", s.ca_file.is_some()), ("client_cert", s.client_cert.is_some())] {
            if set && plain {
                self.problem_at(
                    &format!("storage.{key}"),
                    "is for TLS, but storage.url is not (use rediss://, rediss+sentinel:// or rediss+cluster://)",
                );
            }
        }
    }

    fn validate_webhooks(&mut self, c: &Config) {
        let table = RouteTable::new(&c.routes);
        let w = &c.webhooks;
        if w.timeout.is_zero() {
            self.problem_at("webhooks.timeout", "must be longer than 0");
        }
        if w.max_in_flight == 0 {
            self.problem_at("webhooks.max_in_flight", "must be at least 1");
        }
        if w.disable_after.is_zero() {
            self.problem_at("webhooks.disable_after", "must be longer than 0");
        }
        for (i, key) in w.api_keys.iter().enumerate() {
            if key.len() < 16 {
                self.problem_at(&format!("webhooks.api_keys[{i}]"), "too short (use at least 16 characters)");
            }
        }
        if let Some(url) = &w.operational_url {
            if let Err(msg) = check_destination_url(url) {
                self.problem_at("webhooks.operational_url", msg);
            }
            match &w.operational_secret {
                None => self.problem_at("webhooks.operational_secret", "is required with operational_url"),
                Some(secret) => {
                    if let Err(msg) = check_secret(secret) {
                        self.problem_at("webhooks.operational_secret", msg);
                    }
                }
            }
        }
        let mut ids = HashSet::new();
        for (i, s) in w.subscriptions.iter().enumerate() {
            let at = |key: &str| format!("webhooks.subscriptions[{i}].{key}");
            if !s.id.is_empty() {
                if !valid_subscription_id(&s.id) {
                    self.problem_at(&at("id"), format!("invalid id {:?} (use 1-64 of A-Z, a-z, 0-9, _ and -)", s.id));
                } else if !ids.insert(s.id.as_str()) {
                    self.problem_at(&at("id"), format!("duplicate subscription id {:?}", s.id));
                }
            }
            if !s.url.is_empty() {
                if let Err(msg) = check_destination_url(&s.url) {
                    self.problem_at(&at("url"), msg);
                }
            }
            if !s.path.is_empty() {
                let route = s.path.split('?').next().and_then(|p| table.find(p)).map(|i| &c.routes[i]);
                match route {
                    None => self.problem_at(&at("path"), format!("{:?} matches no route", s.path)),
                    Some(r) if !r.webhooks => {
                        self.problem_at(&at("path"), format!("route {:?} does not allow webhooks", r.name))
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// Ids of subscriptions: what the API generates (`ep_…`) or what the file names.
pub fn valid_subscription_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn shapes_equal(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Param(_), Segment::Param(_)) => true,
            _ => false,
        })
}

fn show(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// `url` without its `user:password@`, and that userinfo as an `Authorization: Basic` value.
/// What is wrong with `upstream.auth.token_url`, if anything. A path and a query are the
/// endpoint's own (Azure AD B2C names its policy in the query); a `user:password@` is refused,
/// never echoed: the client authenticates with `client_id` and `client_secret`, and a second
/// `Authorization` would go with them.
fn token_url_problem(url: &str) -> Option<String> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return Some(format!("invalid URL {url:?} (expected http:// or https://)"));
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Some(
            "a user:password@ in the URL is not sent: give the client's id and secret as client_id and client_secret"
                .into(),
        );
    }
    if authority.is_empty() || rest.contains('#') || rest.contains(char::is_whitespace) {
        return Some(format!("invalid URL {url:?} (expected http[s]://host[:port][/path][?query])"));
    }
    None
}

fn split_userinfo(url: &str) -> (String, Option<String>) {
    use base64::Engine;
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return (url.to_string(), None) };
    let decode = |s: &str| String::from_utf8_lossy(&percent_decode(s.as_bytes())).into_owned();
    let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    let pair = format!("{}:{}", decode(user), decode(password));
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
    (format!("{scheme}://{}", &rest[at + 1..]), Some(basic))
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The keys the reader asks for, recorded by the schema test (`tests/schema.rs` beside it).
#[cfg(test)]
mod schema;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn a_password_in_the_upstream_url_becomes_a_header_and_leaves_the_url() {
        let c = ok("upstream: {url: 'http://svc:p%40ss@127.0.0.1:8081/api'}\nroutes: [{name: t, path: /t}]\n");
        assert_eq!(c.upstream.url, "http://127.0.0.1:8081/api");
        assert_eq!(c.upstream.headers, [("authorization".to_string(), "Basic c3ZjOnBAc3M=".to_string())]);
        let configured =
            "upstream: {url: 'http://svc:pw@h:1', headers: {Authorization: Bearer x}}\nroutes: [{name: t, path: /t}]\n";
        assert_eq!(ok(configured).upstream.headers, [("authorization".to_string(), "Bearer x".to_string())]);
        let bad = load("g.yaml", "upstream: {url: 'http://svc:hunter2@'}\nroutes: [{name: t, path: /t}]\n", &env);
        let text = bad.unwrap_err().to_string();
        assert!(text.contains("upstream.url") && !text.contains("hunter2"), "{text}");
    }

    fn ok(text: &str) -> Config {
        load("g.yaml", text, &env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(text: &str) -> Vec<String> {
        load("g.yaml", text, &env).unwrap_err().0.iter().map(|p| p.to_string()).collect()
    }

    const MINIMAL: &str = "upstream:\n  url: http://127.0.0.1:8081\nroutes:\n  - name: tasks\n    path: /tasks\n";

    #[test]
    fn oauth2_client_credentials_are_read_with_the_secret_from_the_environment_and_never_printed() {
        let c = ok(&MINIMAL.replace(
            "url: http://127.0.0.1:8081",
            "url: http://127.0.0.1:8081\n  auth:\n    kind: oauth2_client_credentials\n    \
             token_url: https://idp.example/oauth/token\n    client_id: herald\n    \
             client_secret: ${TOKEN}\n    scope: tasks.read",
        ));
        let auth = c.upstream.auth.as_ref().unwrap();
        assert_eq!(auth.client_secret, "s3cret");
        assert_eq!(auth.scope.as_deref(), Some("tasks.read"));
        assert_eq!(auth.audience, None);
        let printed = format!("{c:?}");
        assert!(printed.contains("herald") && !printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn oauth2_settings_are_checked_where_they_are_written() {
        let got = problems(&MINIMAL.replace(
            "url: http://127.0.0.1:8081",
            "url: http://127.0.0.1:8081\n  headers: {authorization: Bearer x}\n  \
             auth: {kind: saml, token_url: 'ftp://x', client_id: a}",
        ));
        let text = got.join("\n");
        assert!(text.contains("g.yaml:4:16: upstream.auth.kind: invalid value \"saml\""), "{text}");
        assert!(text.contains("upstream.auth.client_secret: is required"), "{text}");
        assert!(text.contains("upstream.auth.token_url: invalid URL"), "{text}");
        let both = problems(&MINIMAL.replace(
            "url: http://127.0.0.1:8081",
            "url: http://127.0.0.1:8081\n  headers: {authorization: Bearer x}\n  \
             auth: {kind: oauth2_client_credentials, token_url: 'http://x/t', client_id: a, client_secret: b}",
        ));
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(both[0].contains("upstream.auth: the token is the authorization header"), "{both:?}");
    }

    #[test]
    fn a_token_url_may_have_a_query_but_no_userinfo_and_the_client_is_never_empty() {
        let auth = |fields: &str| {
            MINIMAL.replace(
                "url: http://127.0.0.1:8081",
                &format!("url: http://127.0.0.1:8081\n  auth: {{kind: oauth2_client_credentials, {fields}}}"),
            )
        };
        // Azure AD B2C names its policy in the query.
        let b2c = "https://t.b2clogin.com/t.onmicrosoft.com/oauth2/v2.0/token?p=B2C_1_signin";
        let c = ok(&auth(&format!("token_url: '{b2c}', client_id: a, client_secret: b")));
        assert_eq!(c.upstream.auth.unwrap().token_url, b2c);

        let got = problems(&auth("token_url: 'https://id:pw@idp.example/token', client_id: '', client_secret: ''"));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with("g.yaml:3:54: upstream.auth.token_url: a user:password@ in the URL is not sent")
                && got[1].starts_with("g.yaml:3:100: upstream.auth.client_id: must not be empty")
                && got[2].starts_with("g.yaml:3:119: upstream.auth.client_secret: must not be empty"),
            "{got:?}"
        );
        assert!(!got.join("").contains("pw"), "the password is echoed: {got:?}");
        let got = problems(&auth("token_url: 'https://idp.example/token#x', client_id: a, client_secret: b"));
        assert!(got.len() == 1 && got[0].contains("upstream.auth.token_url: invalid URL"), "{got:?}");
    }

    #[test]
    fn the_rate_limit_headers_are_read_unless_turned_off() {
        assert!(ok(MINIMAL).upstream.rate_limit_headers);
        let c = ok(&MINIMAL.replace("url: http://127.0.0.1:8081", "url: http://h\n  rate_limit_headers: false"));
        assert!(!c.upstream.rate_limit_headers);
        let got = problems(&MINIMAL.replace("url: http://127.0.0.1:8081", "url: http://h\n  rate_limit_headers: 0"));
        assert!(got.len() == 1 && got[0].contains("upstream.rate_limit_headers: "), "{got:?}");
    }

    #[test]
    fn the_rate_limit_reserve_is_a_whole_number() {
        assert_eq!(ok(MINIMAL).upstream.rate_limit_reserve, None);
        let c = ok(&MINIMAL.replace("url: http://127.0.0.1:8081", "url: http://h\n  rate_limit_reserve: 5"));
        assert_eq!(c.upstream.rate_limit_reserve, Some(5));
        let got = problems(&MINIMAL.replace("url: http://127.0.0.1:8081", "url: http://h\n  rate_limit_reserve: -1"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("upstream.rate_limit_reserve: invalid value \"-1\""), "{got:?}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let got = problems(&MINIMAL.replace("url: http://127.0.0.1:8081", "url: https://h\n  client_cert: c.pem"));
        assert_eq!(got, ["g.yaml:3:16: upstream.client_cert: needs upstream.client_key too (both or neither)"]);
        let c =
            ok(&MINIMAL
                .replace("url: http://127.0.0.1:8081", "url: https://h\n  client_cert: c.pem\n  client_key: k.pem"));
        assert_eq!(
            (c.upstream.client_cert.as_deref(), c.upstream.client_key.as_deref()),
            (Some("c.pem"), Some("k.pem"))
        );
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let c = ok(MINIMAL);
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.routes[0].poll, Poll::default());
        assert_eq!(c.routes[0].access, Access::PerSubscriber);
        assert_eq!(c.routes[0].vary, ["authorization", "cookie"]);
        assert_eq!(c.sse.queue, 64);
        assert_eq!(c.upstream.max_body, 8 << 20);
    }

    #[test]
    fn interpolates_variables_with_defaults() {
        let c = ok(&MINIMAL.replace(
            "url: http://127.0.0.1:8081",
            "url: ${UP:-http://127.0.0.1:9}\n  headers:\n    Authorization: Bearer ${TOKEN}",
        ));
        assert_eq!(c.upstream.url, "http://127.0.0.1:9");
        assert_eq!(c.upstream.headers, [("authorization".to_string(), "Bearer s3cret".to_string())]);
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "\
server:
  listen: nowhere
  shutdown_grace: 5 secs
upstream:
  url: ${MISSING}
routes:
  - name: Tasks
    path: /tasks
    poll:
      interval: 5s
      min_interval: 10s
      max_interval: 2s
    colour: blue
  - name: b
    path: tasks
    events: { format: json-pach }
sse:
  queue: 0
";
        let got = problems(text);
        assert_eq!(
            got,
            [
                "g.yaml:2:11: server.listen: invalid address \"nowhere\" (expected IP:PORT, e.g. 127.0.0.1:8080)",
                "g.yaml:3:19: server.shutdown_grace: invalid duration \"5 secs\" (expected e.g. 500ms, 5s, 2m)",
                "g.yaml:5:8: upstream.url: environment variable MISSING is not set (write ${MISSING:-default} to give a default)",
                "g.yaml:7:11: routes[0].name: invalid name \"Tasks\" (use only a-z, 0-9, _ and -)",
                "g.yaml:11:21: routes[0].poll.min_interval: min_interval (10s) is longer than max_interval (2s)",
                "g.yaml:13:5: routes[0].colour: unknown key",
                "g.yaml:15:11: routes[1].path: invalid path \"tasks\" (expected /literal/{param} segments, no query)",
                "g.yaml:16:23: routes[1].events.format: invalid value \"json-pach\" (expected one of: snapshot, json-patch, merge-patch, collection)",
                "g.yaml:18:10: sse.queue: must be at least 1",
            ]
        );
    }

    #[test]
    fn required_keys_and_syntax_errors() {
        let got = problems("log:\n  level: info\n");
        assert!(got.iter().any(|p| p.contains("upstream.url: is required")), "{got:?}");
        assert!(got.iter().any(|p| p.contains("routes: is required")), "{got:?}");
        let got = problems("routes: [\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("g.yaml:") && got[0].contains("invalid YAML"), "{got:?}");
    }

    #[test]
    fn cluster_storage() {
        let c = ok(&format!(
            "{MINIMAL}storage:\n  kind: redis\n  url: redis+cluster://a:1,b:2\n  prefix: gw1\n  lease: 3s\n"
        ));
        assert_eq!(c.storage.kind, StorageKind::Redis);
        assert_eq!((c.storage.prefix.as_str(), c.storage.lease), ("gw1", Duration::from_secs(3)));
        let got = problems(&format!(
            "{MINIMAL}storage:\n  kind: redis\n  url: 'ftp://u:hunter2@x'\n  prefix: 'a b'\n  lease: 500ms\n"
        ));
        for expected in [
            "storage.url: invalid scheme \"ftp\"",
            "storage.prefix: invalid prefix \"a b\"",
            "storage.lease: must be at least 1s",
        ] {
            assert!(got.iter().any(|p| p.contains(expected)), "{expected}: {got:?}");
        }
        assert!(got.iter().all(|p| !p.contains("hunter2")), "the password is never repeated: {got:?}");
    }

    #[test]
    fn redis_tls_files() {
        let c = ok(&format!(
            "{MINIMAL}storage:\n  kind: redis\n  url: rediss+sentinel://s1,s2/m\n  ca_file: ca.pem\n  \
             client_cert: me.pem\n  client_key: me.key\n"
        ));
        assert_eq!(c.storage.ca_file.as_deref(), Some("ca.pem"));
        assert_eq!(
            (c.storage.client_cert.as_deref(), c.storage.client_key.as_deref()),
            (Some("me.pem"), Some("me.key"))
        );
        let got = problems(&format!(
            "{MINIMAL}storage:\n  kind: redis\n  url: redis://h\n  ca_file: ca.pem\n  client_key: me.key\n"
        ));
        for expected in
            ["storage.ca_file: is for TLS, but storage.url is not", "storage.client_key: needs storage.client_cert too"]
        {
            assert!(got.iter().any(|p| p.contains(expected)), "{expected}: {got:?}");
        }
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn webhooks_and_storage() {
        let c = ok(&format!(
            "{MINIMAL}    webhooks: true\nstorage:\n  kind: memory\nwebhooks:\n  api_keys: [0123456789abcdef]\n  \
             retry_schedule: [1s, 2m]\n  allow_private_destinations: [127.0.0.0/8, ::1]\n  subscriptions:\n  \
             - {{ id: ci, url: 'https://ci.example.com/hook', path: /tasks, filter: [task.*], payload: lean }}\n"
        ));
        assert_eq!(c.storage.kind, StorageKind::Memory);
        assert_eq!(c.webhooks.retry_schedule, [Duration::from_secs(1), Duration::from_secs(120)]);
        assert_eq!(
            c.webhooks.allow_private_destinations,
            PrivateDestinations::Cidrs(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
        );
        let s = &c.webhooks.subscriptions[0];
        assert_eq!(
            (s.id.as_str(), s.filter.as_slice(), s.payload),
            ("ci", &["task.*".to_string()][..], Some(Payload::Lean))
        );

        let got = problems(&format!(
            "{MINIMAL}    webhooks: false\nstorage: {{ kind: redis }}\nwebhooks:\n  api_keys: [short]\n  \
             allow_private_destinations: [10.0.0.0/33]\n  subscriptions:\n  \
             - {{ id: a, url: 'ftp://x', path: /tasks, filter: ['*.x'], secret: whsec_abc }}\n  \
             - {{ id: a, url: 'http://x', path: /nope }}\n"
        ));
        for expected in [
            "webhooks.api_keys[0]: too short",
            "webhooks.allow_private_destinations[0]: invalid CIDR \"10.0.0.0/33\"",
            "webhooks.subscriptions[0].url: invalid URL \"ftp://x\"",
            "webhooks.subscriptions[0].path: route \"tasks\" does not allow webhooks",
            "webhooks.subscriptions[0].filter: invalid event type filter \"*.x\"",
            "webhooks.subscriptions[0].secret: invalid secret",
            "webhooks.subscriptions[1].id: duplicate subscription id \"a\"",
            "webhooks.subscriptions[1].path: \"/nope\" matches no route",
        ] {
            assert!(got.iter().any(|p| p.contains(expected)), "{expected}: {got:?}");
        }
    }

    #[test]
    fn secrets_and_filters() {
        assert!(check_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(check_secret("whsec_YWJj").unwrap_err().contains("3 bytes"));
        assert!(check_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        for ok in ["task.created", "task.*", "*", "board.changed"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "task.", "*.created", "task.**", "a b"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(check_destination_url("https://example.com/hook?x=1").is_ok());
        for bad in ["example.com", "http://", "http://user@host/", "ftp://x"] {
            assert!(check_destination_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_formats_and_their_keys() {
        let c = ok(&format!(
            "{MINIMAL}    events:\n      format: collection\n      type: task\n      collection: {{ items: /data, id: /key, payload: lean }}\n"
        ));
        let e = &c.routes[0].events;
        assert_eq!(e.format, Format::Collection);
        assert_eq!(
            e.collection,
            Some(CollectionConfig { items: "/data".into(), id: "/key".into(), payload: Payload::Lean })
        );
        let got = problems(&format!("{MINIMAL}    events: {{ format: collection, array_id: id }}\n"));
        assert!(got.iter().any(|p| p.contains("events.format: format collection needs events.collection")), "{got:?}");
        assert!(got.iter().any(|p| p.contains("events.array_id: invalid JSON Pointer \"id\"")), "{got:?}");
        let got = problems(&format!("{MINIMAL}    events: {{ format: snapshot, array_id: /id, collection: {{}} }}\n"));
        assert!(got.iter().any(|p| p.contains("events.array_id: only applies to format json-patch")), "{got:?}");
        assert!(got.iter().any(|p| p.contains("events.collection: only applies to format collection")), "{got:?}");
    }

    #[test]
    fn delta_polling_is_read_and_checked_against_the_format() {
        let collection = "    events: { format: collection, collection: { items: /data } }\n";
        let c = ok(&format!(
            "{MINIMAL}    poll: {{ delta: {{ param: since, from: 'body:/cursor', deleted: 'feed:/deleted', full_every: 10m }} }}\n{collection}"
        ));
        let delta = c.routes[0].poll.delta.clone().unwrap();
        assert_eq!(delta.param, "since");
        assert_eq!(delta.from, DeltaFrom::Body("/cursor".into()));
        assert_eq!(delta.deleted, Deleted::Feed("/deleted".into()));
        assert_eq!(delta.full_every, Duration::from_secs(600));
        let c =
            ok(&format!("{MINIMAL}    poll: {{ delta: {{ from: 'header:X-Cursor', deleted: /gone }} }}\n{collection}"));
        let delta = c.routes[0].poll.delta.clone().unwrap();
        assert_eq!(
            (delta.param.as_str(), delta.from, delta.deleted),
            ("updated_since", DeltaFrom::Header("x-cursor".into()), Deleted::Flag("/gone".into()))
        );
        assert_eq!(delta.full_every, Duration::from_secs(3600));
        let c =
            ok(&format!("{MINIMAL}    poll: {{ delta: {{}} }}\n    events: {{ format: json-patch, array_id: /id }}\n"));
        assert_eq!(c.routes[0].poll.delta.as_ref().unwrap().from, DeltaFrom::Max("/updated_at".into()));

        let got = problems(&format!("{MINIMAL}    poll: {{ delta: {{}} }}\n    events: {{ format: json-patch }}\n"));
        assert!(
            got.iter().any(|p| p.contains("routes[0].poll.delta: delta polling needs events.format collection")),
            "{got:?}"
        );
        let got = problems(&format!(
            "{MINIMAL}    poll: {{ delta: {{ param: 'a&b', from: 'max:updated', deleted: 'feed:../x', full_every: 0s }} }}\n{collection}"
        ));
        for expected in [
            "g.yaml:6:29: routes[0].poll.delta.param: invalid query parameter name \"a&b\"",
            "routes[0].poll.delta.from: invalid value \"max:updated\"",
            "routes[0].poll.delta.deleted: invalid value \"feed:../x\"",
            "routes[0].poll.delta.full_every: must be longer than 0",
        ] {
            assert!(got.iter().any(|p| p.contains(expected)), "{expected}: {got:?}");
        }
        for (param, deleted) in [("up;dated", "feed:/"), ("été", "feed:/x//y"), ("a/b", "feed:/./x")] {
            let got = problems(&format!(
                "{MINIMAL}    poll: {{ delta: {{ param: '{param}', deleted: '{deleted}' }} }}\n{collection}"
            ));
            assert!(got.iter().any(|p| p.contains("delta.param: invalid query parameter name")), "{got:?}");
            assert!(got.iter().any(|p| p.contains("delta.deleted: invalid value")), "{got:?}");
        }
        let c = ok(&format!(
            "{MINIMAL}    poll: {{ delta: {{ param: 'filter[updated_at]', deleted: 'feed:/removed/ids' }} }}\n{collection}"
        ));
        assert_eq!(c.routes[0].poll.delta.as_ref().unwrap().param, "filter[updated_at]");
        let got = problems(&format!(
            "{MINIMAL}    poll: {{ pages: {{ next: link }}, delta: {{ from: 'header:x-cursor' }} }}\n{collection}"
        ));
        assert!(
            got.iter().any(|p| p.contains("poll.delta.from: with poll.pages, the value must come from max:")),
            "{got:?}"
        );
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let got = problems(&format!("{MINIMAL}  - name: tasks\n    path: /tasks\n"));
        assert!(got.iter().any(|p| p.contains("duplicate route name")), "{got:?}");
        assert!(got.iter().any(|p| p.contains("same path as routes[0]")), "{got:?}");
    }

    #[test]
    fn patterns() {
        assert_eq!(
            parse_pattern("/tasks/{id}"),
            Some(vec![Segment::Literal("tasks".into()), Segment::Param("id".into())])
        );
        assert_eq!(parse_pattern("/"), Some(vec![]));
        assert_eq!(parse_pattern("tasks"), None);
        assert_eq!(parse_pattern("/tasks//x"), None);
        assert_eq!(parse_pattern("/tasks?x=1"), None);
    }
}
