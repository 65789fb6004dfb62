//! Message heads in the fast lane: which requests it takes, the upstream's request head and the
//! client's answer head, each written once into a reused buffer (RFC 9112; what passes and what
//! is added is the [`policy`]'s).

use std::io::Write;
use std::net::IpAddr;

use httparse::{Header, Status, EMPTY_HEADER};

use crate::policy;
use crate::upstream::Upstream;

/// Header fields a head may have (hyper's limit too).
pub(crate) const MAX_HEADERS: usize = 100;

/// What a request needs.
#[derive(Debug, PartialEq)]
pub(crate) enum Plan {
    /// Relayed: its upstream head is in `out`.
    Relay(Request),
    /// Herald answers its path itself (a route, herald's own API).
    Claimed,
    /// Something only hyper handles.
    Hyper,
}

/// A relayed request.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    /// The head's length in the client's buffer.
    pub(crate) head: usize,
    /// Its body's length (Content-Length).
    pub(crate) body: u64,
    /// A HEAD request: the answer has no body whatever its headers say.
    pub(crate) head_method: bool,
    /// Safe to send again when the upstream closed a kept connection before answering.
    pub(crate) idempotent: bool,
    /// The client asked to close the connection after this answer.
    pub(crate) close: bool,
    /// A write's path (the client's), told to herald when the write succeeds.
    pub(crate) written: Option<Box<str>>,
}

/// How an upstream answer's body is framed.
#[derive(Debug, PartialEq, Clone, Copy)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What an upstream answer head is.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// Interim (1xx), this long: dropped.
    Interim(usize),
    /// The answer, its client head written into `out`.
    Final(Answer),
}

/// A parsed upstream answer.
#[derive(Debug, PartialEq)]
pub(crate) struct Answer {
    /// The head's length in the upstream's buffer.
    pub(crate) head: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The upstream connection can carry another request afterwards.
    pub(crate) reusable: bool,
    /// The client's connection closes after this answer.
    pub(crate) close: bool,
}

/// Plans a request whose head is `buf`: relayed (its upstream head then in `out`), claimed by
/// herald, or hyper's; a write's path is kept when `writes_heard` (someone listens for them). Only what needs nothing more is relayed: HTTP/1.1 with an origin-form
/// target, one Host, a body framed by at most one Content-Length, no Upgrade, Expect or
/// Transfer-Encoding.
pub(crate) fn plan(
    buf: &[u8],
    claims: impl Fn(&str) -> bool,
    upstream: Option<&Upstream>,
    peer: IpAddr,
    writes_heard: bool,
    out: &mut Vec<u8>,
) -> Plan {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(Status::Complete(len)) = req.parse(buf) else { return Plan::Hyper };
    let (Some(method), Some(uri), Some(1)) = (req.method, req.path, req.version) else { return Plan::Hyper };
    let path = uri.split('?').next().unwrap_or(uri);
    if !uri.starts_with('/') {
        return Plan::Hyper;
    }
    if claims(path) {
        return Plan::Claimed;
    }
    let Some(upstream) = upstream else { return Plan::Hyper };
    match request_head(method, uri, req.headers, upstream, peer, out) {
        Some((body, close)) => Plan::Relay(Request {
            head: len,
            body,
            head_method: method == "HEAD",
            idempotent: matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"),
            close,
            written: (writes_heard && policy::is_write(method)).then(|| path.into()),
        }),
        None => Plan::Hyper,
    }
}

/// Writes the upstream's request head into `out`: the fields the policy passes, the upstream's
/// Host, `te: trailers`, x-forwarded-for/-proto/-host and via. Its body length and whether the
/// client asked to close; `None` for what only hyper handles.
fn request_head(
    method: &str,
    uri: &str,
    headers: &[Header],
    upstream: &Upstream,
    peer: IpAddr,
    out: &mut Vec<u8>,
) -> Option<(u64, bool)> {
    let (mut length, mut host, mut close, mut te_trailers, mut names_fields) = (None, None, false, false, false);
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return None;
            }
            length = Some(decimal(h.value)?);
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return None;
            }
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            names_fields |= policy::names_fields(h.value);
            close |= policy::asks_to_close(h.value);
        } else if name.eq_ignore_ascii_case("te") {
            te_trailers |= policy::accepts_trailers(h.value);
        } else if ["transfer-encoding", "upgrade", "expect"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return None;
        }
    }
    let host = host?;
    out.clear();
    for part in [method.as_bytes(), b" ", upstream.base_path.as_bytes(), uri.as_bytes(), b" HTTP/1.1\r\n"] {
        out.extend_from_slice(part);
    }
    put(out, "host", upstream.authority.as_bytes());
    for h in headers {
        if policy::request_field(h.name, names_fields, || connection(headers)) {
            put(out, h.name, h.value);
        }
    }
    if te_trailers {
        put(out, "te", b"trailers");
    }
    out.extend_from_slice(policy::X_FORWARDED_FOR.as_bytes());
    out.extend_from_slice(b": ");
    let earlier = headers.iter().filter(|h| h.name.eq_ignore_ascii_case(policy::X_FORWARDED_FOR)).map(|h| h.value);
    policy::forwarded_for(out, earlier, peer);
    out.extend_from_slice(b"\r\n");
    // The fast lane serves plain connections only.
    put(out, policy::X_FORWARDED_PROTO, policy::forwarded_proto(false).as_bytes());
    put(out, policy::X_FORWARDED_HOST, host);
    put(out, "via", policy::VIA.as_bytes());
    out.extend_from_slice(b"\r\n");
    Some((length.unwrap_or(0), close))
}

/// The values of a head's Connection fields, for the policy.
fn connection<'h>(headers: &'h [Header]) -> impl Iterator<Item = &'h [u8]> {
    headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value)
}

/// Parses the upstream's answer head at the start of `ubuf` and writes the client's into `out`;
/// why herald cannot pass it on, otherwise.
pub(crate) fn parse_answer(
    ubuf: &[u8],
    req: &Request,
    closing: bool,
    out: &mut Vec<u8>,
) -> Result<Parsed, &'static str> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(ubuf) {
        Ok(Status::Complete(head)) => head,
        _ => return Err("malformed head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else { return Err("malformed status line") };
    match status {
        // herald never asks to switch protocols here (Upgrade requests are hyper's).
        101 => return Err("101 Switching Protocols to a request that asked for no upgrade"),
        100..=199 => return Ok(Parsed::Interim(head)),
        _ => {}
    }
    let (mut length, mut chunked, mut names_fields, mut repeated_length) = (None, false, false, false);
    let mut keep_alive = version == 1;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = decimal(h.value).ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length fields");
            }
            repeated_length = length.is_some();
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` alone: other codings would reach the client undeclared.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("a transfer coding other than chunked");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            names_fields |= policy::names_fields(h.value);
            keep_alive &= !policy::asks_to_close(h.value);
        }
    }
    let framing = match (req.head_method || status == 204 || status == 304, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };
    let close = closing || req.close || framing == Framing::UntilClose;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[b'0' + (status / 100) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A 204 has no framing fields at all, and with Transfer-Encoding a Content-Length is wrong
    // (RFC 9112 sections 6.1, 6.2 and 6.3).
    // Repeated equal lengths (allowed above) are passed on as one (RFC 9110 section 8.6).
    let mut no_length = chunked || status == 204;
    let mut date = false;
    for h in resp.headers.iter() {
        let is_length = (no_length || repeated_length) && h.name.eq_ignore_ascii_case("content-length");
        if !(is_length && no_length) && policy::answer_field(h.name, names_fields, || connection(resp.headers)) {
            put(out, h.name, h.value);
            date |= h.name.eq_ignore_ascii_case("date");
            no_length |= is_length;
        }
    }
    if chunked && status != 204 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !date {
        // A proxy adds the Date an answer lacks (RFC 9110 section 6.6.1).
        let _ = write!(out, "date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now()));
    }
    put(out, "via", policy::VIA.as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let reusable = keep_alive && framing != Framing::UntilClose;
    Ok(Parsed::Final(Answer { head, status, framing, reusable, close }))
}

/// herald's own answer when the upstream gave none: the same status and text hyper's engine
/// answers with.
pub(crate) fn error_head(out: &mut Vec<u8>, status: http::StatusCode, msg: &str, close: bool) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ndate: {}\r\n{}\r\n{msg}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        msg.len() + 1,
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        if close { "connection: close\r\n" } else { "" },
    );
}

/// The length of the head at the start of `buf` (through its empty line), once it is all there.
/// `scanned` carries how far an earlier call looked: a head arriving a byte at a time is scanned
/// once, not once per byte.
pub fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let from = scanned.saturating_sub(2);
    *scanned = buf.len();
    memchr::memchr_iter(b'\n', &buf[from..]).map(|i| from + i + 1).find_map(|after| match &buf[after..] {
        [b'\n', ..] => Some(after + 1),
        [b'\r', b'\n', ..] => Some(after + 2),
        _ => None,
    })
}

/// A Content-Length value: digits only (no sign, no list), at most 19 of them.
pub(crate) fn decimal(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn put(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    for part in [name.as_bytes(), b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn upstream() -> Upstream {
        Upstream::new(false, "up:8081", "/api", Duration::from_secs(1))
    }

    /// The length of the head that starts `text`.
    pub(crate) fn len(text: &str) -> usize {
        text.find("\r\n\r\n").unwrap() + 4
    }

    /// The plan for `head`, with the upstream head it wrote.
    fn plan_of(head: &str) -> (Plan, String) {
        let mut out = Vec::new();
        let plan = plan(
            head.as_bytes(),
            |path| path.starts_with("/tasks"),
            Some(&upstream()),
            [10, 1, 2, 3].into(),
            true,
            &mut out,
        );
        (plan, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_upstream_gets_its_own_host_forwarding_fields_and_no_hop_by_hop_ones() {
        let client =
            "POST /items?a=1 HTTP/1.1\r\nHost: herald.example\r\nContent-Length: 5\r\nConnection: close, x-hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nTE: trailers, deflate\r\n\
             X-Forwarded-For: 192.0.2.1, 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\
             Authorization: Bearer alice\r\nVia: 1.0 edge\r\n\r\nhello";
        let (plan, head) = plan_of(client);
        let Plan::Relay(req) = plan else { panic!("{plan:?}") };
        assert_eq!(
            req,
            Request {
                head: len(client),
                body: 5,
                head_method: false,
                idempotent: false,
                close: true,
                written: Some("/items".into())
            }
        );
        assert_eq!(
            head,
            "POST /api/items?a=1 HTTP/1.1\r\nhost: up:8081\r\nContent-Length: 5\r\nAuthorization: Bearer alice\r\n\
             Via: 1.0 edge\r\nte: trailers\r\nx-forwarded-for: 192.0.2.1, 198.51.100.7, 10.1.2.3\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: herald.example\r\nvia: 1.1 herald\r\n\r\n"
        );
    }

    #[test]
    fn a_connection_field_cannot_take_the_length_away() {
        let (plan, head) =
            plan_of("POST /a HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nhi");
        assert!(
            matches!(plan, Plan::Relay(Request { body: 2, .. })) && head.contains("Content-Length: 2\r\n"),
            "{head}"
        );
        let (_, out) = answer("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nhi", &GET);
        assert!(out.contains("Content-Length: 2\r\n"), "{out}");
    }

    #[test]
    fn a_plain_get_is_relayed_and_may_be_sent_twice() {
        let client = "GET / HTTP/1.1\r\nhost: h\r\nconnection: keep-alive\r\n\r\n";
        let (plan, head) = plan_of(client);
        assert_eq!(
            plan,
            Plan::Relay(Request {
                head: len(client),
                body: 0,
                head_method: false,
                idempotent: true,
                close: false,
                written: None
            })
        );
        assert!(head.starts_with("GET /api/ HTTP/1.1\r\nhost: up:8081\r\nx-forwarded-for: 10.1.2.3\r\n"), "{head}");
    }

    #[test]
    fn claimed_paths_are_herald_s_and_the_rest_goes_to_hyper() {
        assert_eq!(plan_of("GET /tasks/event-stream HTTP/1.1\r\nhost: h\r\n\r\n").0, Plan::Claimed);
        for head in [
            "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /a HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /a HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert_eq!(plan_of(head).0, Plan::Hyper, "{head}");
        }
        // An https upstream: hyper's client.
        let plan =
            plan(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n", |_| false, None, [10, 1, 2, 3].into(), true, &mut Vec::new());
        assert_eq!(plan, Plan::Hyper);
    }

    pub(crate) const GET: Request =
        Request { head: 0, body: 0, head_method: false, idempotent: true, close: false, written: None };

    fn answer(head: &str, req: &Request) -> (Result<Parsed, &'static str>, String) {
        let mut out = Vec::new();
        let parsed = parse_answer(head.as_bytes(), req, false, &mut out);
        (parsed, String::from_utf8(out).unwrap())
    }

    /// Found by fuzzing (fuzz/corpus/relay_answer_head): equal repeated lengths went out twice.
    #[test]
    fn repeated_equal_lengths_are_passed_on_once() {
        let head = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 5\r\nDate: x\r\n\r\n";
        let (parsed, out) = answer(head, &GET);
        assert!(matches!(parsed, Ok(Parsed::Final(Answer { framing: Framing::Empty, .. }))));
        assert_eq!(out, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nDate: x\r\nvia: 1.1 herald\r\n\r\n");
    }

    #[test]
    fn a_kept_alive_answer_loses_its_hop_by_hop_fields_and_gains_via() {
        let head = "HTTP/1.1 200 OK\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\nContent-Length: 2\r\n\
                    Connection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nETag: \"a\"\r\n\r\nok";
        let (parsed, out) = answer(head, &GET);
        let expected =
            Answer { head: head.len() - 2, status: 200, framing: Framing::Length(2), reusable: true, close: false };
        assert_eq!(parsed, Ok(Parsed::Final(expected)));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\nContent-Length: 2\r\nETag: \"a\"\r\n\
             via: 1.1 herald\r\n\r\n"
        );
    }

    #[test]
    fn answers_are_framed_as_rfc_9112_says() {
        let framing = |head: &str, req: &Request| match answer(head, req).0 {
            Ok(Parsed::Final(a)) => (a.framing, a.reusable, a.close),
            other => panic!("{head}: {other:?}"),
        };
        let date = "Date: Sat, 28 Nov 2026 04:00:00 GMT\r\n";
        let head_req = Request { head_method: true, ..GET };
        let close_req = Request { close: true, ..GET };
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 9\r\n\r\n"), &head_req),
            (Framing::Empty, true, false)
        );
        assert_eq!(framing(&format!("HTTP/1.1 204 No Content\r\n{date}\r\n"), &GET), (Framing::Empty, true, false));
        assert_eq!(framing(&format!("HTTP/1.1 304 Not Modified\r\n{date}\r\n"), &GET), (Framing::Empty, true, false));
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), &GET),
            (Framing::Chunked, true, false)
        );
        assert_eq!(framing(&format!("HTTP/1.1 200 OK\r\n{date}\r\n"), &GET), (Framing::UntilClose, false, true));
        assert_eq!(
            framing(&format!("HTTP/1.0 200 OK\r\n{date}Content-Length: 1\r\n\r\n"), &GET),
            (Framing::Length(1), false, false)
        );
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 1\r\nConnection: close\r\n\r\n"), &GET),
            (Framing::Length(1), false, false)
        );
        assert_eq!(
            framing(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 1\r\n\r\n"), &close_req),
            (Framing::Length(1), true, true)
        );

        // Chunked replaces a Content-Length; the close-delimited answer tells the client.
        let (_, out) =
            answer(&format!("HTTP/1.1 200 OK\r\n{date}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), &GET);
        assert!(
            !out.to_ascii_lowercase().contains("content-length") && out.contains("transfer-encoding: chunked\r\n"),
            "{out}"
        );
        let (_, out) = answer(&format!("HTTP/1.1 200 OK\r\n{date}\r\n"), &GET);
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
        // A missing Date is added, also for one a Connection field took away.
        let (_, out) = answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &GET);
        assert!(out.contains("\r\ndate: "), "{out}");
        let (_, out) = answer(&format!("HTTP/1.1 200 OK\r\n{date}Connection: date\r\nContent-Length: 0\r\n\r\n"), &GET);
        assert!(out.contains("\r\ndate: ") && !out.contains("Date: "), "{out}");
    }

    #[test]
    fn interim_answers_are_skipped_and_unusable_ones_refused_with_a_reason() {
        let hints = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200";
        assert_eq!(answer(hints, &GET).0, Ok(Parsed::Interim(len(hints))));
        for (head, why) in [
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "101"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer coding"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
            ("HTTP/1.1 OK\r\n\r\n", "malformed"),
        ] {
            let refused = answer(head, &GET).0.unwrap_err();
            assert!(refused.contains(why), "{head}: {refused}");
        }
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line_found_once() {
        let two = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(head_end(two, &mut 0), Some(28));
        // Bare line feeds, as httparse takes them.
        assert_eq!(head_end(b"GET /a HTTP/1.1\nHost: h\n\nGET", &mut 0), Some(25));
        // A byte at a time: found when its last byte arrives.
        let mut scanned = 0;
        let found: Vec<_> = (1..=two.len()).filter_map(|n| head_end(&two[..n], &mut scanned)).collect();
        assert_eq!(found.first(), Some(&28));
        assert_eq!(head_end(b"GET /a HTTP/1.1\r\nHost: h\r\n", &mut 0), None);
    }

    #[test]
    fn content_lengths_are_plain_digits() {
        assert_eq!(decimal(b" 42 "), Some(42));
        assert_eq!(decimal(b"18446744073709551615"), None);
        for bad in [&b""[..], b"+1", b"-1", b"1,1", b"0x10", b"1 1"] {
            assert_eq!(decimal(bad), None);
        }
    }
}
