//! The SSRF guard: webhook destinations must be public addresses, unless the operator allows
//! private ones (`webhooks.allow_private_destinations`). Checked when a subscription is made and
//! again on every new connection, after DNS resolution, by the delivery client's resolver: a name
//! that resolved to a public address at subscription time and to 127.0.0.1 later (DNS rebinding)
//! still gets no connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use herald_config::PrivateDestinations;

/// Which addresses deliveries may connect to.
#[derive(Debug, Clone)]
pub struct Guard {
    allow: PrivateDestinations,
}

/// Why a destination is refused. Safe to show to the API caller and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{host} resolves to {ip}, a {class} address; deliveries go to public addresses only (webhooks.allow_private_destinations)")]
    Private { host: String, ip: IpAddr, class: &'static str },
    #[error("cannot resolve {host}: {reason}")]
    Unresolvable { host: String, reason: String },
}

impl Guard {
    pub fn new(allow: PrivateDestinations) -> Self {
        Guard { allow }
    }

    /// `Err` with the address's class when deliveries may not connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        let Some(class) = special(ip) else { return Ok(()) };
        let allowed = match &self.allow {
            PrivateDestinations::All => true,
            PrivateDestinations::None => false,
            PrivateDestinations::Cidrs(nets) => {
                let v4 = embedded_v4(ip).map(IpAddr::V4);
                nets.iter().any(|n| n.contains(&ip) || v4.is_some_and(|v4| n.contains(&v4)))
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(class)
        }
    }

    /// Resolves `host` and checks every address it has: all must be allowed.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<(), Refused> {
        let addrs = resolve(host, port).await?;
        for addr in addrs {
            self.check(addr.ip()).map_err(|class| Refused::Private { host: host.into(), ip: addr.ip(), class })?;
        }
        Ok(())
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
    let unresolvable = |reason: String| Refused::Unresolvable { host: host.into(), reason };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| unresolvable("DNS timed out".into()))?
        .map_err(|e| unresolvable(e.to_string()))?
        .collect::<Vec<_>>();
    if found.is_empty() {
        return Err(unresolvable("no addresses".into()));
    }
    Ok(found)
}

/// The resolver of the delivery client: resolves, then keeps only allowed addresses; none left
/// is a connection error that names the reason.
pub(crate) struct GuardedResolver(pub(crate) Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addrs = resolve(host, 0).await?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match guard.check(a.ip()) {
                    Ok(()) => true,
                    Err(class) => {
                        refused = Some(Refused::Private { host: host.into(), ip: a.ip(), class });
                        false
                    }
                })
                .collect();
            match refused {
                // A name with any private address is refused whole, as at subscription time.
                Some(r) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                None => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or
/// NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] => Some(tail),
        [0, 0, 0, 0, 0, 0, ..] if !tail.is_unspecified() && tail != Ipv4Addr::new(0, 0, 0, 1) => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(tail),
        _ => None,
    }
}

/// The class of a non-public address, `None` for a public one.
fn special(ip: IpAddr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return special_v4(v4);
    }
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "shared (CGNAT)",
        (224..=239, ..) => "multicast",
        (0, ..) => "unspecified",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) | (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        "link-local"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) || s[0] == 0x2002 {
        // documentation, discard-only, 6to4 (which embeds arbitrary IPv4 addresses)
        "reserved"
    } else if s[0] & 0xe000 != 0x2000 {
        // Everything outside 2000::/3 (global unicast) is not routed on the internet.
        "reserved"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(guard: &Guard, ip: &str) -> bool {
        guard.check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn refuses_every_non_public_class() {
        let guard = Guard::new(PrivateDestinations::None);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "2002:7f00:1::",
        ] {
            assert!(refused(&guard, ip), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:1.1.1.1"] {
            assert!(!refused(&guard, ip), "{ip} is public");
        }
    }

    #[test]
    fn allowances() {
        let guard = Guard::new(PrivateDestinations::Cidrs(vec!["127.0.0.0/8".parse().unwrap()]));
        assert!(!refused(&guard, "127.0.0.2"));
        assert!(!refused(&guard, "::ffff:127.0.0.1"), "mapped addresses follow their IPv4 allowance");
        assert!(refused(&guard, "10.0.0.1"));
        assert!(refused(&guard, "::1"));
        assert!(!refused(&Guard::new(PrivateDestinations::All), "10.0.0.1"));
    }

    #[tokio::test]
    async fn the_delivery_resolver_refuses_names_of_private_addresses() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let resolver = GuardedResolver(Arc::new(Guard::new(PrivateDestinations::None)));
        let err = match resolver.resolve(reqwest::dns::Name::from_str("localhost").unwrap()).await {
            Ok(_) => panic!("localhost must not resolve for deliveries"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");
        let open = GuardedResolver(Arc::new(Guard::new(PrivateDestinations::All)));
        assert!(open.resolve(reqwest::dns::Name::from_str("localhost").unwrap()).await.is_ok());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let guard = Guard::new(PrivateDestinations::None);
        let err = guard.check_host("localhost", 80).await.unwrap_err();
        assert!(matches!(err, Refused::Private { class: "loopback", .. }), "{err}");
        assert!(guard.check_host("[::1]", 80).await.is_err());
    }
}
