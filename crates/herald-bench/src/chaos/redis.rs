//! The Redis side of the fault harness: a primary and a replica, each with AOF and each behind a
//! [`FaultyProxy`], and three Sentinels that know both only by their proxies' addresses (each
//! server announces its proxy's port), so that herald, the Sentinels and the replication link all
//! go through the proxies and a degraded link degrades all of them, as on a real network.
//!
//! Each server runs from a configuration file of its own that Sentinel rewrites (`REPLICAOF` +
//! `CONFIG REWRITE` at a failover), so a server restarted after a failover keeps the role
//! Sentinel gave it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::FaultyProxy;

/// One `redis-server` and the proxy in front of it.
pub(super) struct Node {
    pub(super) name: &'static str,
    /// Where the server itself listens (only the harness talks to it directly).
    pub(super) port: u16,
    pub(super) proxy: FaultyProxy,
    conf: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `kill -9`, then start it again from its configuration file and AOF; waits until it answers.
    pub(super) async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start().await
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub(super) async fn start(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.bin)
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        // Loading a long AOF takes a moment: `LOADING` answers until it is read.
        wait_for(Duration::from_secs(30), &format!("redis {} answers PING", self.name), || {
            cli(self.port, &["PING"]).trim() == "PONG"
        })
        .await
    }

    /// `redis-cli` against the server itself (not through the proxy).
    pub(super) fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// `master` or `slave`, from `ROLE`.
    pub(super) fn role(&self) -> String {
        self.cli(&["ROLE"]).lines().next().unwrap_or_default().trim().to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Sentinel: a `redis-server --sentinel` with its own (rewritten by itself) configuration.
struct Sentinel {
    port: u16,
    child: Child,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) struct Topology {
    /// The first primary, then its replica; which is the master now is Sentinel's to say.
    pub(super) nodes: Vec<Node>,
    sentinels: Vec<Sentinel>,
}

/// How the servers persist and replicate.
pub(super) struct Options {
    pub(super) bin: PathBuf,
    /// `appendfsync`: `always` or `everysec`.
    pub(super) appendfsync: String,
    /// `min-replicas-to-write` (0: off), as docs/operations.md recommends against losing writes
    /// to an asynchronous failover.
    pub(super) min_replicas_to_write: u32,
}

impl Topology {
    /// Starts both servers, their proxies and three Sentinels under `dir`; waits until the
    /// Sentinels agree on the master and know the replica.
    pub(super) async fn start(dir: &Path, opts: &Options) -> anyhow::Result<Topology> {
        if Command::new(&opts.bin).arg("--version").output().is_err() {
            anyhow::bail!(
                "the chaos scenario needs redis-server ({} not found; apt-get install redis-server, or pass --redis-bin)",
                opts.bin.display()
            );
        }
        if Command::new("redis-cli").arg("--version").output().is_err() {
            anyhow::bail!("the chaos scenario needs redis-cli (apt-get install redis-tools)");
        }
        let mut nodes = Vec::new();
        let mut primary_proxy: Option<SocketAddr> = None;
        for name in ["primary", "replica"] {
            let port = free_port();
            let proxy = FaultyProxy::start(format!("127.0.0.1:{port}").parse()?).await?;
            let home = dir.join(name);
            std::fs::create_dir_all(&home)?;
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {home}\nlogfile {home}/redis.log\n\
                 appendonly yes\nappendfsync {fsync}\nsave \"\"\n\
                 replica-announce-ip 127.0.0.1\nreplica-announce-port {announce}\n\
                 min-replicas-to-write {min}\nmin-replicas-max-lag 5\n",
                home = home.display(),
                fsync = opts.appendfsync,
                announce = proxy.addr().port(),
                min = opts.min_replicas_to_write,
            );
            match primary_proxy {
                None => primary_proxy = Some(proxy.addr()),
                // The replication link goes through the primary's proxy too.
                Some(p) => conf.push_str(&format!("replicaof 127.0.0.1 {}\n", p.port())),
            }
            let path = home.join("redis.conf");
            std::fs::write(&path, conf)?;
            let mut node = Node { name, port, proxy, conf: path, bin: opts.bin.clone(), child: None };
            node.start().await?;
            nodes.push(node);
        }
        let primary = primary_proxy.expect("a primary");
        wait_for(Duration::from_secs(30), "the replica is in sync", || {
            nodes[1].cli(&["INFO", "replication"]).contains("master_link_status:up")
        })
        .await?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let home = dir.join(format!("sentinel{i}"));
            std::fs::create_dir_all(&home)?;
            let conf = home.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {home}\nlogfile {home}/sentinel.log\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor mymaster 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds mymaster 1500\n\
                     sentinel failover-timeout mymaster 6000\n\
                     sentinel parallel-syncs mymaster 1\n",
                    home = home.display(),
                    p = primary.port()
                ),
            )?;
            let child = Command::new(&opts.bin)
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start a Sentinel: {e}"))?;
            sentinels.push(Sentinel { port, child });
        }
        let topology = Topology { nodes, sentinels };
        wait_for(Duration::from_secs(60), "the Sentinels know the replica and each other", || {
            topology.sentinels.iter().all(|s| {
                cli(s.port, &["SENTINEL", "CKQUORUM", "mymaster"]).starts_with("OK")
                    && cli(s.port, &["SENTINEL", "REPLICAS", "mymaster"]).contains("127.0.0.1")
                    && cli(s.port, &["SENTINEL", "SENTINELS", "mymaster"]).lines().filter(|l| *l == "ip").count() == 2
            })
        })
        .await?;
        Ok(topology)
    }

    /// herald's `storage.url`.
    pub(super) fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    /// The node the Sentinels name as master (by its proxy's port), if they answer.
    pub(super) fn master(&self) -> Option<usize> {
        for s in &self.sentinels {
            let out = cli(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
            let port: Option<u16> = out.lines().nth(1).and_then(|p| p.trim().parse().ok());
            if let Some(i) = port.and_then(|p| self.nodes.iter().position(|n| n.proxy.addr().port() == p)) {
                return Some(i);
            }
        }
        None
    }

    /// `SENTINEL FAILOVER`, then waits until the other node is master and the old one follows it.
    pub(super) async fn failover(&self) -> anyhow::Result<()> {
        let before = self.master().ok_or_else(|| anyhow::anyhow!("no master known to the Sentinels"))?;
        let answer = cli(self.sentinels[0].port, &["SENTINEL", "FAILOVER", "mymaster"]);
        anyhow::ensure!(answer.starts_with("OK"), "SENTINEL FAILOVER answered {answer}");
        self.settled(Some(before)).await
    }

    /// Waits until the Sentinels name a master other than `not` (any, when `None`) that says it
    /// is one, and the other node replicates from it.
    pub(super) async fn settled(&self, not: Option<usize>) -> anyhow::Result<()> {
        wait_for(Duration::from_secs(60), "the failover completes", || {
            let Some(m) = self.master() else { return false };
            Some(m) != not
                && self.nodes[m].role() == "master"
                && self.nodes.iter().enumerate().filter(|(i, n)| *i != m && n.is_running()).all(|(_, n)| {
                    n.role() == "slave" && n.cli(&["INFO", "replication"]).contains("master_link_status:up")
                })
        })
        .await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// `redis-cli -p <port> args…`; what it printed. The harness talks to servers and Sentinels
/// directly, never through a proxy, so a fault never blocks it.
pub(super) fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Polls `check` every 100 ms until it holds; an error naming `what` after `within`.
pub(super) async fn wait_for(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !check() {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
