//! Where a chunked body ends (RFC 9112 section 7.1): the fast lane copies the bytes as they are,
//! trailers included, and follows only the framing.

use httparse::{Status, EMPTY_HEADER};

/// The longest chunk-size line (with extensions) and trailer section taken.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 << 10;

#[derive(Debug, Default)]
pub(crate) struct Chunks {
    state: State,
}

#[derive(Debug, Default, PartialEq)]
enum State {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: this many data bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section, ending with an empty line.
    Trailers,
    Done,
}

impl Chunks {
    /// How many bytes at the start of `buf` belong to the body: all of them, unless the body
    /// ends within them or they end inside a size line or the trailer section (whose start is
    /// then left for the next call, with more bytes after it). Why the framing is broken,
    /// otherwise.
    pub(crate) fn advance(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Done => return Ok(at),
                State::Size => match httparse::parse_chunk_size(rest) {
                    Ok(Status::Complete((n, 0))) => (at, self.state) = (at + n, State::Trailers),
                    Ok(Status::Complete((n, size))) => (at, self.state) = (at + n, State::Data(size)),
                    Ok(Status::Partial) if rest.len() < MAX_CHUNK_LINE => return Ok(at),
                    _ => return Err("invalid chunk-size line"),
                },
                State::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    if take < left {
                        self.state = State::Data(left - take);
                        return Ok(at);
                    }
                    self.state = State::DataEnd;
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => (at, self.state) = (at + 2, State::Size),
                    [] | [b'\r'] => return Ok(at),
                    _ => return Err("chunk data longer than its size"),
                },
                State::Trailers => match httparse::parse_headers(rest, &mut [EMPTY_HEADER; 32]) {
                    Ok(Status::Complete((n, _))) => (at, self.state) = (at + n, State::Done),
                    Ok(Status::Partial) if rest.len() < MAX_TRAILERS => return Ok(at),
                    _ => return Err("invalid trailer section"),
                },
            }
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const CHUNKED: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nx-sum: abc\r\n\r\n";

    #[test]
    fn a_chunked_body_ends_after_its_trailers_however_it_arrives() {
        let mut whole = CHUNKED.to_vec();
        whole.extend_from_slice(b"HTTP/1.1 200");
        let mut chunks = Chunks::default();
        assert_eq!(chunks.advance(&whole), Ok(CHUNKED.len()));
        assert!(chunks.done());

        // In every pair of pieces, kept bytes carried over as the copy loop carries them.
        for split in 1..CHUNKED.len() {
            let (mut chunks, mut pending, mut passed) = (Chunks::default(), Vec::new(), 0);
            for piece in [&CHUNKED[..split], &CHUNKED[split..]] {
                pending.extend_from_slice(piece);
                let n = chunks.advance(&pending).unwrap();
                pending.drain(..n);
                passed += n;
            }
            assert!(chunks.done() && pending.is_empty() && passed == CHUNKED.len(), "split at {split}");
        }
    }

    #[test]
    fn broken_chunk_framing_is_refused() {
        for body in [&b"zz\r\n"[..], b"4\r\nWikiXX", b"0\r\nbad header\r\n\r\n"] {
            assert!(Chunks::default().advance(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        assert!(Chunks::default().advance(&[b'1'; MAX_CHUNK_LINE]).is_err());
    }
}
