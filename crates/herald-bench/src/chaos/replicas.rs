//! herald replicas as child processes that can be killed, paused, stopped and started again on
//! the same ports (the balancer's backend list is fixed, as an orchestrator's service is). Unlike
//! `herald_tests::Gateway`, whose ports the OS picks at each start, a replica keeps its ports
//! across restarts; its log (JSON, appended across restarts) is a file in the run's directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub(super) struct Replica {
    pub(super) index: usize,
    pub(super) public: SocketAddr,
    pub(super) admin: SocketAddr,
    config: PathBuf,
    pub(super) log: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
    /// Starts so far; with `index`, names the process whose counters are being read.
    pub(super) incarnation: u32,
}

impl Replica {
    /// Writes the replica's configuration (`yaml` with `{listen}` and `{admin}` filled in).
    pub(super) fn new(index: usize, dir: &Path, bin: &Path, yaml: &str) -> anyhow::Result<Replica> {
        let (public, admin) = (free_addr()?, free_addr()?);
        let config = dir.join(format!("herald-{index}.yaml"));
        std::fs::write(&config, yaml.replace("{listen}", &public.to_string()).replace("{admin}", &admin.to_string()))?;
        Ok(Replica {
            index,
            public,
            admin,
            config,
            log: dir.join(format!("herald-{index}.log")),
            bin: bin.to_path_buf(),
            child: None,
            incarnation: 0,
        })
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the process and waits until `/readyz` answers 200. A replica that exits at start
    /// (it does when Redis cannot be reached) is started again, as an orchestrator would, until
    /// `within` has passed.
    pub(super) async fn start(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
            let child = Command::new(&self.bin)
                .arg("run")
                .arg("-c")
                .arg(&self.config)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
            self.child = Some(child);
            self.incarnation += 1;
            loop {
                if self.ready().await {
                    return Ok(());
                }
                if let Some(status) = self.exited() {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "replica {} exited at start ({status}); see {}",
                        self.index,
                        self.log.display()
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "replica {} not ready within {within:?}; see {}",
                    self.index,
                    self.log.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// `/readyz` answers 200.
    pub(super) async fn ready(&self) -> bool {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("a client");
        client.get(format!("http://{}/readyz", self.admin)).send().await.is_ok_and(|r| r.status() == 200)
    }

    /// Its exit status, once it has exited (the process is then forgotten).
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`).
    pub(super) fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
        }
    }

    /// `kill -9`, and reaps it.
    pub(super) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Waits at most `within` for it to exit; its status, `None` when it is still running.
    pub(super) async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(within, child.wait()).await.ok()?.ok()?;
        self.child = None;
        Some(status)
    }

    /// The sum of the samples of each family named, from `/metrics` (`None` if it does not
    /// answer within a second: stopped, or gone).
    pub(super) async fn metrics(&self, families: &[&str]) -> Option<HashMap<String, f64>> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().ok()?;
        let text = client.get(format!("http://{}/metrics", self.admin)).send().await.ok()?.text().await.ok()?;
        let mut out = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((sample, value)) = line.rsplit_once(' ') else { continue };
            let name = sample.split('{').next().unwrap_or(sample);
            if families.contains(&name) {
                *out.entry(sample.to_string()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        Some(out)
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
