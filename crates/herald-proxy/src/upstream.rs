//! The upstream as both engines address it, made once from its URL's parts (herald-config
//! parses the URL; nothing here parses it again).

use std::time::Duration;

/// Where pass-through requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https`: hyper's client with rustls; `http` may also take the fast lane.
    pub(crate) https: bool,
    /// `host[:port]`: the Host the upstream gets.
    pub(crate) authority: String,
    /// `host:port`, to connect to.
    pub(crate) addr: String,
    /// The URL's path, put in front of every request target ("" for none, never a trailing `/`).
    pub(crate) base_path: String,
    /// `upstream.timeout`: the longest wait without progress.
    pub(crate) timeout: Duration,
    /// `upstream.ca_file`: extra trust roots for an https upstream.
    pub(crate) ca_file: Option<String>,
}

impl Upstream {
    /// From the parts of an `http[s]://authority[/base-path]` URL herald-config checked.
    pub fn new(https: bool, authority: &str, base_path: &str, timeout: Duration) -> Self {
        let port_given = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| port.parse::<u16>().is_ok() && (!host.starts_with('[') || host.ends_with(']')));
        let addr = match port_given {
            true => authority.to_string(),
            false => format!("{authority}:{}", if https { 443 } else { 80 }),
        };
        Upstream {
            https,
            authority: authority.to_string(),
            addr,
            base_path: base_path.trim_end_matches('/').to_string(),
            timeout,
            ca_file: None,
        }
    }

    /// Extra trust roots (a PEM file) for an https upstream.
    pub fn with_ca_file(mut self, path: Option<String>) -> Self {
        self.ca_file = path;
        self
    }

    /// What hyper's client puts in front of a request's path and query: `http://host:port/base`.
    pub(crate) fn prefix(&self) -> String {
        format!("{}://{}{}", if self.https { "https" } else { "http" }, self.authority, self.base_path)
    }

    /// Whether the fast lane can reach it: plain http, and a base path it can copy as it is.
    pub(crate) fn fast_lane(&self) -> bool {
        let path_ok = self.base_path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        !self.https && path_ok && !self.authority.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_has_a_port_to_connect_to() {
        let addr = |https, authority| Upstream::new(https, authority, "", Duration::from_secs(1)).addr;
        assert_eq!(addr(false, "api.example"), "api.example:80");
        assert_eq!(addr(true, "api.example"), "api.example:443");
        assert_eq!(addr(false, "127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(addr(false, "[::1]"), "[::1]:80");
        assert_eq!(addr(false, "[::1]:8081"), "[::1]:8081");
    }

    #[test]
    fn only_a_plain_upstream_with_a_plain_base_path_takes_the_fast_lane() {
        let up = |https, base| Upstream::new(https, "api.example", base, Duration::from_secs(1));
        assert!(up(false, "/api/").fast_lane());
        assert_eq!(up(false, "/api/").prefix(), "http://api.example/api");
        assert!(!up(true, "").fast_lane());
        assert!(!up(false, "/a b").fast_lane());
    }
}
