//! The forwarding policy (contract section 9, RFC 9110 section 7.6): which fields of a message
//! pass herald on their way to the next hop, and what herald adds. Both engines ask here, so a
//! header rule is written once and holds for plain, TLS and HTTP/2 clients alike; the
//! differential test (`tests/differential.rs`) checks that they agree.

use std::io::Write;
use std::net::IpAddr;

/// What herald adds to `via`, in both directions.
pub(crate) const VIA: &str = "1.1 herald";

/// Connection-specific fields (RFC 9110 section 7.6.1), never passed on. `Trailer` is not among
/// them: it declares the message's trailer fields, end to end.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "transfer-encoding", "upgrade"];

/// Request fields herald writes itself: the upstream's own Host, and the x-forwarded-* fields it
/// chains or sets (a client's own values are not believed).
const REWRITTEN: [&str; 4] = ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub(crate) const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub(crate) const X_FORWARDED_HOST: &str = "x-forwarded-host";

#[inline]
pub(crate) fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether a field of an answer passes to the client. `connection` gives the answer's
/// Connection field values; it is asked only when `names_fields` (one of them names a field,
/// see [`names_fields`]: most messages name none, and then no field is looked up in them).
#[inline]
pub(crate) fn answer_field<'a, I>(name: &str, names_fields: bool, connection: impl FnOnce() -> I) -> bool
where
    I: IntoIterator<Item = &'a [u8]>,
{
    !(hop_by_hop(name) || names_fields && named(name, connection()))
}

/// Whether a field of a client's request passes to the upstream as it is (see
/// [`answer_field`]); the fields herald rewrites do not.
#[inline]
pub(crate) fn request_field<'a, I>(name: &str, names_fields: bool, connection: impl FnOnce() -> I) -> bool
where
    I: IntoIterator<Item = &'a [u8]>,
{
    !REWRITTEN.iter().any(|r| name.eq_ignore_ascii_case(r)) && answer_field(name, names_fields, connection)
}

/// Whether a Connection field names `name`, which makes it hop-by-hop. Content-Length stays
/// whatever a Connection field says: without it the body that follows would be framed
/// differently.
#[inline]
fn named<'a>(name: &str, connection: impl IntoIterator<Item = &'a [u8]>) -> bool {
    connection.into_iter().flat_map(items).any(|option| option.eq_ignore_ascii_case(name.as_bytes()))
        && !name.eq_ignore_ascii_case("content-length")
}

/// Whether a Connection field value names a header field: an option other than `close` and
/// `keep-alive` (which names one that is hop-by-hop anyway). Most messages have none, and then
/// no field needs looking up in it.
#[inline]
pub(crate) fn names_fields(connection: &[u8]) -> bool {
    items(connection)
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

/// Whether a Connection field value asks to close the connection after this message.
#[inline]
pub(crate) fn asks_to_close(connection: &[u8]) -> bool {
    items(connection).any(|t| t.eq_ignore_ascii_case(b"close"))
}

/// Whether a TE field value says the client accepts trailers: the upstream then hears
/// `te: trailers` (the only TE a proxy passes on), or it would not send them.
#[inline]
pub(crate) fn accepts_trailers(te: &[u8]) -> bool {
    items(te).any(|t| t.eq_ignore_ascii_case(b"trailers"))
}

/// The `x-forwarded-for` value herald sends: earlier proxies' addresses first (from the
/// client's own `x-forwarded-for` fields, in order), then the client's.
#[inline]
pub(crate) fn forwarded_for<'a>(out: &mut Vec<u8>, earlier: impl IntoIterator<Item = &'a [u8]>, peer: IpAddr) {
    for prior in earlier.into_iter().flat_map(items).filter(|v| !v.is_empty()) {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    put_ip(out, peer);
}

/// Whether a request may change the upstream's data, so that its success is worth telling
/// herald (write-through refresh, contract section 13).
#[inline]
pub(crate) fn is_write(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

/// Whether the answer to a write says it was done.
#[inline]
pub(crate) fn write_succeeded(status: u16) -> bool {
    (200..300).contains(&status)
}

/// `x-forwarded-proto`: how the client reached herald.
pub(crate) fn forwarded_proto(client_tls: bool) -> &'static str {
    if client_tls {
        "https"
    } else {
        "http"
    }
}

/// The comma-separated items of a field value, trimmed.
#[inline]
pub(crate) fn items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// An IP address, IPv4 written by hand: formatting addresses was a measurable part of a
/// proxied request's cost (1,300 instructions through `Display`).
#[inline]
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_stay_behind() {
        let values: [&[u8]; 2] = [b"keep-alive, X-Private-Hop", b"content-length, close"];
        let connection = || values;
        let none = || [];
        for name in ["Connection", "keep-alive", "TE", "transfer-encoding", "upgrade", "proxy-authorization"] {
            assert!(!answer_field(name, false, none), "{name}");
        }
        assert!(!answer_field("x-private-hop", true, connection));
        assert!(answer_field("x-private-hop", false, connection), "looked up only when a field is named");
        assert!(answer_field("x-other", true, connection));
        assert!(answer_field("Content-Length", true, connection), "a Connection field cannot take the length away");
        assert!(answer_field("trailer", false, none), "Trailer is end to end");
        for rewritten in ["Host", "x-forwarded-for", "X-Forwarded-Proto", "x-forwarded-host"] {
            assert!(answer_field(rewritten, false, none) && !request_field(rewritten, false, none), "{rewritten}");
        }
        assert!(request_field("authorization", true, connection));
    }

    #[test]
    fn connection_options_that_name_no_field_need_no_lookup() {
        assert!(!names_fields(b"close") && !names_fields(b" keep-alive , close") && !names_fields(b""));
        assert!(names_fields(b"close, x-hop"));
        assert!(asks_to_close(b"keep-alive, Close") && !asks_to_close(b"closed"));
        assert!(accepts_trailers(b"deflate, trailers") && !accepts_trailers(b"trailers;q=0, gzip"));
    }

    #[test]
    fn only_a_write_that_answered_2xx_is_one_herald_is_told_of() {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(is_write(method), "{method}");
        }
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "post"] {
            assert!(!is_write(method), "{method}");
        }
        assert!(write_succeeded(200) && write_succeeded(204) && write_succeeded(299));
        assert!(!write_succeeded(304) && !write_succeeded(404) && !write_succeeded(500) && !write_succeeded(101));
    }

    #[test]
    fn forwarded_for_chains_earlier_proxies_then_the_client() {
        let mut out = Vec::new();
        forwarded_for(&mut out, [&b"192.0.2.1, , 198.51.100.7"[..], b"203.0.113.9"], [10, 1, 2, 3].into());
        assert_eq!(out, b"192.0.2.1, 198.51.100.7, 203.0.113.9, 10.1.2.3");
    }

    #[test]
    fn ip_addresses_are_written_as_displayed() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.100.255", "192.168.1.9", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            put_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }
}
