//! Pub/sub: one connection per replica carries the append notices of every watch it follows.
//! Pub/sub delivers at most once (a notice is lost when the connection drops), so a notice is
//! only a wake-up: the follower reads what it missed from the watch's log, and after a
//! reconnect every follower is told to check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Redis;
use crate::StoreError;

/// What a follower hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Events up to `seq` of `epoch` were appended (or the state was written anew).
    Appended { epoch: u64, seq: u64 },
    /// The watch ended for everybody: its credential was refused with this status.
    Ended(u16),
    /// The connection was lost and is back: notices may have been missed.
    Reconnected,
    /// A write through some replica (or a change hint) may have changed the watches of this
    /// path: whoever polls them polls now.
    Refresh(String),
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
                    let Some(note) = parse(message.get_payload_bytes()) else { continue };
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

/// `<epoch>:<seq>`, `end:<status>` or `refresh:<path>`.
fn parse(payload: &[u8]) -> Option<Note> {
    let (a, b) = std::str::from_utf8(payload).ok()?.split_once(':')?;
    Some(match a {
        "end" => Note::Ended(b.parse().ok()?),
        "refresh" => Note::Refresh(b.to_string()),
        _ => Note::Appended { epoch: a.parse().ok()?, seq: b.parse().ok()? },
    })
}
