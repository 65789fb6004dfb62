//! The fast lane's parsers against any input, with the invariants they keep: for the property
//! tests below and the fuzz targets in `fuzz/` (each panics when an invariant breaks).

use std::time::Duration;

use httparse::{Status, EMPTY_HEADER};

use super::chunked::Chunks;
use super::head::{decimal, head_end, parse_answer, plan, Framing, Parsed, Plan, Request, MAX_HEADERS};
use crate::upstream::Upstream;

/// A client's request head: when relayed (`true`), the upstream gets a well-formed head with
/// its own Host and exactly the framing the relay will copy.
pub fn request_head(input: &[u8]) -> bool {
    let Some(end) = head_end(input, &mut 0) else { return false };
    let upstream = Upstream::new(false, "up:8081", "/api", Duration::from_secs(1));
    let mut out = Vec::new();
    let Plan::Relay(req) = plan(&input[..end], |_| false, Some(&upstream), [10, 1, 2, 3].into(), false, &mut out)
    else {
        return false;
    };
    assert!(req.head <= end);
    assert_eq!(fields(&out, "host", false), [&b"up:8081"[..]]);
    assert!(fields(&out, "transfer-encoding", false).is_empty());
    let lengths = fields(&out, "content-length", false);
    assert!(lengths.len() <= 1 && lengths.iter().all(|l| decimal(l) == Some(req.body)));
    // A body is framed by its length (`Content-Length: 0` may stand for none).
    assert!(req.body == 0 || !lengths.is_empty());
    true
}

/// An upstream's answer head: when passed on (`true`), the client gets a well-formed head with
/// one framing, the one the relay follows.
pub fn answer_head(input: &[u8]) -> bool {
    if head_end(input, &mut 0).is_none() {
        return false;
    }
    let get = Request { head: 0, body: 0, head_method: false, idempotent: true, close: false, written: None };
    let mut out = Vec::new();
    let Ok(Parsed::Final(answer)) = parse_answer(input, &get, false, &mut out) else { return false };
    assert!(answer.head <= input.len());
    let (lengths, codings) = (fields(&out, "content-length", true), fields(&out, "transfer-encoding", true));
    match answer.framing {
        Framing::Chunked => assert!(lengths.is_empty() && codings == [&b"chunked"[..]]),
        Framing::Length(n) => {
            assert!(codings.is_empty() && !lengths.is_empty() && lengths.iter().all(|l| decimal(l) == Some(n)))
        }
        Framing::UntilClose => assert!(codings.is_empty() && lengths.is_empty() && answer.close),
        Framing::Empty if answer.status == 204 => assert!(codings.is_empty() && lengths.is_empty()),
        Framing::Empty => assert!(codings.len() <= 1 && lengths.len() <= 1),
    }
    true
}

/// A chunked body, whole and in two pieces: the framing never claims more than it was given,
/// and where it ends does not depend on how the bytes arrived.
pub fn chunked_body(input: &[u8]) {
    let mut whole = Chunks::default();
    let took = whole.advance(input);
    if let Ok(n) = took {
        assert!(n <= input.len());
    }
    let split = input.first().map_or(0, |&b| b as usize % (input.len() + 1));
    let mut pieces = Chunks::default();
    let mut pending = Vec::new();
    let mut passed = 0;
    for piece in [&input[..split], &input[split..]] {
        pending.extend_from_slice(piece);
        match pieces.advance(&pending) {
            Ok(n) => {
                passed += n;
                pending.drain(..n);
            }
            Err(_) => {
                assert!(!whole.done(), "split at {split}: refused in pieces, taken whole");
                return;
            }
        }
        if pieces.done() {
            break;
        }
    }
    if whole.done() {
        assert!(pieces.done() && took == Ok(passed), "split at {split}: {took:?} whole, {passed} in pieces");
    }
}

/// The values of `name` in a head herald wrote, which must parse whole.
fn fields<'h>(head: &'h [u8], name: &str, response: bool) -> Vec<&'h [u8]> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS + 8];
    let parsed = if response {
        httparse::Response::new(&mut headers).parse(head)
    } else {
        httparse::Request::new(&mut headers).parse(head)
    };
    assert_eq!(parsed, Ok(Status::Complete(head.len())), "{}", String::from_utf8_lossy(head));
    headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
}

#[cfg(test)]
mod tests {
    use super::super::chunked::tests::CHUNKED;
    use super::*;

    /// Deterministic pseudo-random mutations (xorshift) of `seed`: bytes replaced by ones that
    /// matter to HTTP's grammar, inserted or removed.
    fn mutations(seed: &[u8], count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
        const SPECIAL: &[u8] = b"\r\n:; ,\t0123456789abcdefxXzZ-/?\x00\x7f\x80\xff";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        (0..count).map(move |_| {
            let mut bytes = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = next() % (bytes.len() + 1);
                let byte = SPECIAL[next() % SPECIAL.len()];
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => drop(bytes.remove(at)),
                    _ => bytes.insert(at, byte),
                }
            }
            bytes
        })
    }

    #[test]
    fn whatever_a_client_sends_the_upstream_gets_a_well_formed_head_with_one_framing() {
        let seed =
            b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nConnection: x-a, close, content-length\r\n\
                     X-A: 1\r\nX-Forwarded-For: 10.0.0.1\r\nTE: trailers\r\n\r\nhello world!";
        let relayed = mutations(seed, 20_000).filter(|input| request_head(input)).count();
        assert!(relayed > 1_000, "only {relayed} mutations relayed");
    }

    #[test]
    fn whatever_an_upstream_answers_the_client_gets_a_well_formed_head_with_one_framing() {
        let seed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: x-b, content-length\r\n\
                     X-B: 1\r\nDate: Sat, 28 Nov 2026 04:00:00 GMT\r\n\r\n0\r\n\r\n";
        let passed = mutations(seed, 20_000).filter(|input| answer_head(input)).count();
        assert!(passed > 1_000, "only {passed} mutations passed on");
    }

    #[test]
    fn chunk_framing_never_claims_more_than_it_was_given() {
        for input in mutations(CHUNKED, 20_000) {
            chunked_body(&input);
        }
    }
}
