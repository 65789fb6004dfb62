//! The faults the harness injects, one at a time, each healed before the next: what happens to
//! herald replicas (killed, paused, restarted in turn) and to Redis (restarted, failed over, its
//! pub/sub connections killed, its links slowed, made lossy or cut).

use std::time::Duration;

use herald_testkit::NetFault;

use super::redis::Topology;
use super::replicas::Replica;
use super::Scraper;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `kill -9` of a replica, started again a few seconds later.
    Kill,
    /// `SIGSTOP` of a replica for longer than `storage.lease`, then `SIGCONT`.
    Pause,
    /// `SIGTERM` to each replica in turn: wait for it to exit, start it again, wait until ready.
    Rolling,
    /// `kill -9` of the Redis master, started again from its AOF.
    RedisRestart,
    /// `SENTINEL FAILOVER`: the replica becomes master, the old master its replica.
    Failover,
    /// `CLIENT KILL TYPE pubsub` on the master.
    PubsubKill,
    /// 50–250 ms added to every chunk to and from the master, for 10 s.
    RedisLatency,
    /// One chunk in ten held back 200 ms – 1 s, to and from the master, for 10 s.
    RedisLoss,
    /// Every connection to the master closed at once.
    RedisCut,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Rolling,
        Kind::RedisRestart,
        Kind::Failover,
        Kind::PubsubKill,
        Kind::RedisLatency,
        Kind::RedisLoss,
        Kind::RedisCut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Rolling => "rolling",
            Kind::RedisRestart => "redis-restart",
            Kind::Failover => "failover",
            Kind::PubsubKill => "pubsub-kill",
            Kind::RedisLatency => "redis-latency",
            Kind::RedisLoss => "redis-loss",
            Kind::RedisCut => "redis-cut",
        }
    }
}

/// How long a network fault on the Redis link lasts.
const NET_FAULT: Duration = Duration::from_secs(10);

/// What a fault needs to reach.
pub(super) struct Targets<'a> {
    pub(super) replicas: &'a tokio::sync::Mutex<Vec<Replica>>,
    pub(super) redis: &'a tokio::sync::Mutex<Topology>,
    pub(super) scraper: &'a Scraper,
    pub(super) lease: Duration,
}

/// Injects one fault of `kind` and heals it; a line saying what was done.
pub(super) async fn inject(kind: Kind, t: &Targets<'_>, rng: &mut fastrand::Rng) -> anyhow::Result<String> {
    match kind {
        Kind::Kill => {
            let mut replicas = t.replicas.lock().await;
            let i = rng.usize(..replicas.len());
            // Its counters as late as possible: a lease it took just before dying still counts.
            t.scraper.scrape(&replicas[i]).await;
            replicas[i].kill().await;
            let down = Duration::from_millis(rng.u64(2000..5000));
            tokio::time::sleep(down).await;
            replicas[i].start(Duration::from_secs(60)).await?;
            Ok(format!("replica {i} killed, restarted after {down:?}"))
        }
        Kind::Pause => {
            let replicas = t.replicas.lock().await;
            let i = rng.usize(..replicas.len());
            t.scraper.scrape(&replicas[i]).await;
            let paused = t.lease + Duration::from_millis(rng.u64(1000..4000));
            replicas[i].signal("STOP");
            tokio::time::sleep(paused).await;
            replicas[i].signal("CONT");
            Ok(format!("replica {i} paused for {paused:?}"))
        }
        Kind::Rolling => {
            let mut replicas = t.replicas.lock().await;
            let mut took = Vec::new();
            for r in replicas.iter_mut() {
                t.scraper.scrape(r).await;
                let started = std::time::Instant::now();
                r.signal("TERM");
                match r.wait(Duration::from_secs(15)).await {
                    Some(status) if status.success() => {}
                    Some(status) => {
                        anyhow::bail!("replica {} exited {status} on SIGTERM; see {}", r.index, r.log.display())
                    }
                    None => {
                        r.kill().await;
                        anyhow::bail!(
                            "replica {} did not exit within 15 s of SIGTERM; see {}",
                            r.index,
                            r.log.display()
                        )
                    }
                }
                let stopped = started.elapsed();
                r.start(Duration::from_secs(60)).await?;
                took.push(format!("{}: stopped in {:.1}s", r.index, stopped.as_secs_f64()));
            }
            Ok(format!("rolling restart ({})", took.join(", ")))
        }
        Kind::RedisRestart => {
            let mut redis = t.redis.lock().await;
            let m = redis.master().ok_or_else(|| anyhow::anyhow!("no master known to the Sentinels"))?;
            redis.nodes[m].restart().await?;
            redis.settled(None).await?;
            Ok(format!("redis {} (master) killed and restarted from its AOF", redis.nodes[m].name))
        }
        Kind::Failover => {
            let redis = t.redis.lock().await;
            let before = redis.master().map(|m| redis.nodes[m].name).unwrap_or("?");
            redis.failover().await?;
            let after = redis.master().map(|m| redis.nodes[m].name).unwrap_or("?");
            Ok(format!("failover from {before} to {after}"))
        }
        Kind::PubsubKill => {
            let redis = t.redis.lock().await;
            let m = redis.master().ok_or_else(|| anyhow::anyhow!("no master known to the Sentinels"))?;
            let killed = redis.nodes[m].cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            Ok(format!("{} pub/sub connections killed on {}", killed.trim(), redis.nodes[m].name))
        }
        Kind::RedisLatency | Kind::RedisLoss => {
            let redis = t.redis.lock().await;
            let m = redis.master().ok_or_else(|| anyhow::anyhow!("no master known to the Sentinels"))?;
            let fault = match kind {
                Kind::RedisLatency => {
                    NetFault::Latency { base: Duration::from_millis(50), jitter: Duration::from_millis(200) }
                }
                _ => NetFault::Loss { probability: 0.1 },
            };
            redis.nodes[m].proxy.set(Some(fault));
            tokio::time::sleep(NET_FAULT).await;
            redis.nodes[m].proxy.set(None);
            Ok(format!("{fault:?} towards {} for {NET_FAULT:?}", redis.nodes[m].name))
        }
        Kind::RedisCut => {
            let redis = t.redis.lock().await;
            let m = redis.master().ok_or_else(|| anyhow::anyhow!("no master known to the Sentinels"))?;
            let open = redis.nodes[m].proxy.open_connections();
            redis.nodes[m].proxy.cut();
            Ok(format!("{open} connections to {} cut", redis.nodes[m].name))
        }
    }
}
