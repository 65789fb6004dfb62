//! A small SSE client for tests: connects, parses frames, hands out events one by one.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

pub struct SseClient {
    pub status: u16,
    pub headers: http::HeaderMap,
    stream: Option<futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    buf: BytesMut,
    /// The `retry:` value received, in milliseconds.
    pub retry: Option<u64>,
    /// Heartbeat comments received.
    pub comments: usize,
    /// The id of the last event received, as a browser would keep it.
    pub last_event_id: Option<String>,
    /// Non-SSE answers (a refusal) are kept here.
    pub body: String,
}

impl SseClient {
    /// GETs `url` with `headers`; a non-200 answer is read whole into `body`.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> SseClient {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
        SseClient::open(&client, url, headers).await.expect("connect to herald")
    }

    /// [`SseClient::connect`] with the caller's `client`, and an error instead of a panic when
    /// the request fails (a fault harness expects refused and dropped connections).
    pub async fn open(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> reqwest::Result<SseClient> {
        let mut rb = client.get(url).header("accept", "text/event-stream");
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut client = SseClient {
            status,
            headers,
            stream: None,
            buf: BytesMut::new(),
            retry: None,
            comments: 0,
            last_event_id: None,
            body: String::new(),
        };
        if status == 200 {
            client.stream = Some(resp.bytes_stream().boxed());
        } else {
            client.body = resp.text().await.unwrap_or_default();
        }
        Ok(client)
    }

    /// Whether the stream is still open (not ended, not failed).
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// The next event within `wait`; `None` on timeout or when the stream ended.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.next()).await.ok().flatten()
    }

    /// The next event, `None` when the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = find_frame_end(&self.buf) {
                let frame = self.buf.split_to(end + 2);
                if let Some(ev) = self.parse(&frame[..end]) {
                    return Some(ev);
                }
                continue;
            }
            let chunk = self.stream.as_mut()?.next().await;
            match chunk {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                _ => {
                    self.stream = None;
                    return None;
                }
            }
        }
    }

    /// Events until `pred` holds for one (included), within `wait` overall.
    pub async fn until(&mut self, wait: Duration, pred: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.next()).await {
            let done = pred(&ev);
            out.push(ev);
            if done {
                break;
            }
        }
        out
    }

    fn parse(&mut self, frame: &[u8]) -> Option<SseEvent> {
        let text = String::from_utf8_lossy(frame);
        let mut ev = SseEvent { event: "message".into(), id: None, data: String::new() };
        let mut has_data = false;
        for line in text.lines() {
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(v) = line.strip_prefix("retry: ") {
                self.retry = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                ev.event = v.into();
            } else if let Some(v) = line.strip_prefix("id: ") {
                ev.id = Some(v.into());
            } else if let Some(v) = line.strip_prefix("data: ") {
                if has_data {
                    ev.data.push('\n');
                }
                ev.data.push_str(v);
                has_data = true;
            }
        }
        if !has_data {
            return None;
        }
        if ev.id.is_some() {
            self.last_event_id = ev.id.clone();
        }
        Some(ev)
    }
}

fn find_frame_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}
