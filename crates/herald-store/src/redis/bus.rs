//! Pub/sub: one connection per replica carries the append notices of every watch it follows.
//! Pub/sub delivers at most once (a notice is lost when the connection drops), so a notice is
//! only a wake-up: the follower reads what it missed from the watch's log, and after a
//! reconnect every follower is told to check.
//!
//! A notice of an append is only a wake-up (what is read is checked), but the messages a replica
//! acts on are checked here: `end:` carries 401 or 403 and, with a key, every `end:` and
//! `refresh:` must be signed for its channel (see [`super::trust`]); anything else is ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::trust::Keys;
use super::Redis;
use crate::StoreError;

/// What a follower hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Events up to `seq` of `epoch` were appended (or the state was written anew).
    Appended { epoch: u64, seq: u64 },
    /// The watch ended for everybody: its credential was refused with `status` (401 or 403) in
    /// `epoch` (`None`: said by a replica of a version that did not tell).
    Ended { status: u16, epoch: Option<u64> },
    /// The connection was lost and is back: notices may have been missed.
    Reconnected,
    /// A write through some replica (or a change hint) may have changed the watches of this
    /// path: whoever polls them polls now.
    Refresh(String),
    /// The holder gave its lease up (it is stopping): a follower takes it now. A wake-up only:
    /// taking a lease is one script that finds whether it is free.
    Released,
}

enum Command {
    Follow { channel: String, notes: mpsc::Sender<Note>, done: oneshot::Sender<Result<(), StoreError>> },
    Leave(String),
}

/// The replica's pub/sub connection.
pub struct Bus {
    commands: mpsc::Sender<Command>,
}

/// Notices for one channel, until dropped.
pub struct Following {
    pub notes: mpsc::Receiver<Note>,
    channel: String,
    commands: mpsc::Sender<Command>,
}

impl Drop for Following {
    fn drop(&mut self) {
        // When the queue is full, the bus finds the receiver gone on the next notice instead.
        let _ = self.commands.try_send(Command::Leave(std::mem::take(&mut self.channel)));
    }
}

impl Bus {
    pub fn start(redis: Arc<Redis>, shutdown: CancellationToken) -> Bus {
        let (commands, rx) = mpsc::channel(1024);
        tokio::spawn(run(redis, rx, shutdown));
        Bus { commands }
    }

    /// Subscribes to `channel`; returns once Redis confirmed it, so that whatever is read after
    /// this call is followed by the notices of every later append.
    pub async fn follow(&self, channel: &str) -> Result<Following, StoreError> {
        let (tx, notes) = mpsc::channel(16);
        let (done, confirmed) = oneshot::channel();
        let gone = || StoreError::Invalid("redis pub/sub stopped".into());
        self.commands
            .send(Command::Follow { channel: channel.to_string(), notes: tx, done })
            .await
            .map_err(|_| gone())?;
        confirmed.await.map_err(|_| gone())??;
        Ok(Following { notes, channel: channel.to_string(), commands: self.commands.clone() })
    }
}

async fn run(redis: Arc<Redis>, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
    let mut followers: HashMap<String, mpsc::Sender<Note>> = HashMap::new();
    let mut attempt = 0usize;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected =
            tokio::time::timeout(redis.timeout, async { redis.pubsub_client(attempt).await?.get_async_pubsub().await })
                .await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                if attempt == 0 || backoff >= Duration::from_secs(2) {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    warn!(error = %error, "redis pub/sub unavailable, retrying");
                }
                attempt += 1;
                // Meanwhile, new followers are refused and leavers forgotten.
                let pause = tokio::time::sleep(backoff);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = &mut pause => break,
                        () = shutdown.cancelled() => return,
                        command = commands.recv() => match command {
                            None => return,
                            Some(Command::Follow { done, .. }) => {
                                let _ = done.send(Err(StoreError::Invalid("redis pub/sub unavailable".into())));
                            }
                            Some(Command::Leave(channel)) => {
                                followers.remove(&channel);
                            }
                        },
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = followers.keys().cloned().collect();
        let mut resubscribed = true;
        for chunk in channels.chunks(512) {
            if sink.subscribe(chunk).await.is_err() {
                resubscribed = false;
                break;
            }
        }
        if !resubscribed {
            continue;
        }
        if attempt > 0 {
            info!(followed = followers.len(), "redis pub/sub connected again");
            for notes in followers.values() {
                let _ = notes.try_send(Note::Reconnected);
            }
        }
        attempt = 1;
        backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Follow { channel, notes, done }) => {
                        let subscribed = sink.subscribe(&channel).await;
                        let ok = subscribed.is_ok();
                        if ok {
                            followers.insert(channel, notes);
                        }
                        let _ = done.send(subscribed.map_err(|e| StoreError::backend("redis subscribe", e)));
                        if !ok {
                            break;
                        }
                    }
                    Some(Command::Leave(channel)) => {
                        if followers.remove(&channel).is_some() && sink.unsubscribe(&channel).await.is_err() {
                            break;
                        }
                    }
                },
                message = stream.next() => {
                    let Some(message) = message else {
                        warn!("redis pub/sub connection lost, reconnecting");
                        // A pause, not a busy loop, when the connection keeps dropping.
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                            () = shutdown.cancelled() => return,
                        }
                        break;
                    };
                    let channel = message.get_channel_name();
                    let Some(notes) = followers.get(channel) else { continue };
                    let Some(note) = parse(redis.keys.as_ref(), channel, message.get_payload_bytes()) else {
                        debug!(channel, "a pub/sub message herald did not send, ignored");
                        continue;
                    };
                    // A full queue drops the notice: the follower reads the log up to date anyway.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = notes.try_send(note) {
                        let channel = channel.to_string();
                        followers.remove(&channel);
                        if sink.unsubscribe(&channel).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// `<epoch>:<seq>`, `end:<status>[:<epoch>]`, `refresh:<path>` or `lease:released`; `end` and
/// `refresh` signed for `channel` when there are `keys`.
fn parse(keys: Option<&Keys>, channel: &str, payload: &[u8]) -> Option<Note> {
    let payload = std::str::from_utf8(payload).ok()?;
    let message = match (payload.split_once(':')?.0, keys) {
        ("end" | "refresh", Some(keys)) => keys.verify(channel, payload)?,
        _ => payload,
    };
    let (a, b) = message.split_once(':')?;
    Some(match a {
        "end" => {
            let (status, epoch) = match b.split_once(':') {
                Some((status, epoch)) => (status, Some(epoch.parse().ok()?)),
                None => (b, None),
            };
            Note::Ended { status: status.parse().ok().filter(|s| matches!(s, 401 | 403))?, epoch }
        }
        "refresh" => Note::Refresh(b.to_string()),
        "lease" if b == "released" => Note::Released,
        _ => Note::Appended { epoch: a.parse().ok()?, seq: b.parse().ok()? },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_herald_sends_is_heard() {
        let ch = "t:{w}:ch";
        assert_eq!(parse(None, ch, b"7:3"), Some(Note::Appended { epoch: 7, seq: 3 }));
        assert_eq!(parse(None, ch, b"end:401:7"), Some(Note::Ended { status: 401, epoch: Some(7) }));
        assert_eq!(parse(None, ch, b"end:403"), Some(Note::Ended { status: 403, epoch: None }));
        for bad in [&b"end:200"[..], b"end:500:7", b"end:401:x", b"end:", b"7:x", b"nothing", b"\xff:1"] {
            assert_eq!(parse(None, ch, bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(None, ch, b"refresh:/tasks"), Some(Note::Refresh("/tasks".into())));
        assert_eq!(parse(None, ch, b"lease:released"), Some(Note::Released));
        assert_eq!(parse(None, ch, b"lease:taken"), None);

        let keys = Keys::new(&[1; 32]);
        let end = keys.sign(ch, "end:401:7");
        assert_eq!(parse(Some(&keys), ch, end.as_bytes()), Some(Note::Ended { status: 401, epoch: Some(7) }));
        assert_eq!(parse(Some(&keys), ch, b"end:401:7"), None, "unsigned");
        assert_eq!(parse(Some(&keys), "t:{v}:ch", end.as_bytes()), None, "another watch's");
        assert_eq!(parse(Some(&keys), ch, b"refresh:/tasks"), None);
        let refresh = keys.sign(ch, "refresh:/a:b");
        assert_eq!(parse(Some(&keys), ch, refresh.as_bytes()), Some(Note::Refresh("/a:b".into())));
        assert_eq!(parse(Some(&keys), ch, b"7:3"), Some(Note::Appended { epoch: 7, seq: 3 }), "a wake-up only");
        assert_eq!(parse(Some(&keys), ch, b"lease:released"), Some(Note::Released), "a wake-up only");
    }
}
