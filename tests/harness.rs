//! Runs the real `herald` binary for end-to-end tests: writes a configuration, starts the
//! process on ports chosen by the OS, reads its JSON logs to learn them, and stops it.
//!
//! The binary is the one `cargo test --workspace` builds (`target/<profile>/herald`, next to the
//! test executables' `deps/` folder); set `HERALD_BIN` to test another.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use herald_testkit::{Fault, LegacyApi, Requested, SseClient, SseEvent};

/// Generous bound for anything that should happen "soon"; tests never assert on speed.
pub const SOON: Duration = Duration::from_secs(15);

pub fn herald_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HERALD_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = dir.join("herald");
    assert!(bin.exists(), "{} is missing: run `cargo test --workspace` (it builds the binary)", bin.display());
    bin
}

/// Reads until herald closes the connection (within [`SOON`]); what it sent, as text.
pub async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(SOON, stream.read_to_end(&mut out)).await.expect("herald closes the connection").ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the legacy API on a free loopback port.
pub async fn start_api() -> (LegacyApi, SocketAddr) {
    let api = LegacyApi::new();
    let addr = api.serve("127.0.0.1:0".parse().unwrap()).await.expect("bind the fake upstream");
    (api, addr)
}

/// A configuration with OS-chosen ports, JSON logs and `body` (routes and more) appended.
pub fn config(upstream: SocketAddr, body: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\n  admin_listen: 127.0.0.1:0\n  shutdown_grace: 3s\n\
         upstream:\n  url: http://{upstream}\n  timeout: 2s\n\
         log:\n  format: json\n  level: debug\n{body}"
    )
}

pub struct Gateway {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Runs `herald run -c <file with yaml>` and waits until it is ready.
    pub async fn start(yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(herald_bin())
            .arg("run")
            .arg("-c")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let (mut public, mut admin) = (None, None);
        let started = tokio::time::timeout(SOON, async {
            while let Some(line) = rx.recv().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                // The structured fields herald logs for tools, not its messages' words.
                let fields = &v["fields"];
                let addr = || fields["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
                match fields["listener"].as_str() {
                    Some("public") => public = addr(),
                    Some("admin") => admin = addr(),
                    _ if fields["ready"] == true => return true,
                    _ => {}
                }
            }
            false
        })
        .await;
        assert!(matches!(started, Ok(true)), "herald did not start:\n{}", logs.lock().unwrap());
        Gateway { child, public: public.unwrap(), admin: admin.unwrap(), logs, _dir: dir }
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.public)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub async fn subscribe(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        SseClient::connect(&self.url(path), headers).await
    }

    pub async fn admin_get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.admin)).await.unwrap().text().await.unwrap()
    }

    /// The value of one metric sample, e.g. `herald_upstream_polls_total{outcome="error",route="tasks"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.admin_get("/metrics").await;
        text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }

    /// Waits (at most [`SOON`]) until `sample`'s value satisfies `check`; the value.
    pub async fn metric_until(&self, sample: &str, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let value = self.metric(sample).await;
            if check(value) {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "{sample} stayed at {value}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The configuration file it runs with (rewrite it, then `signal("HUP")` to reload).
    pub fn config_file(&self) -> PathBuf {
        self._dir.path().join("gateway.yaml")
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let ok = std::process::Command::new("kill").arg(format!("-{name}")).arg(&pid).status().unwrap().success();
        assert!(ok, "kill -{name} {pid}");
    }

    pub async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait()).await.ok().map(|r| r.unwrap())
    }

    /// Peak resident memory of the herald process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Waits until `check` holds, polling every 20 ms, at most [`SOON`].
/// A port free now on 127.0.0.1. A Redis Cluster node (`cluster_bus`) also listens 10,000 ports
/// higher, so its port must be at most 55535 with that one free too (the kernel hands out ports
/// up to 60999).
fn free_port(cluster_bus: bool) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !cluster_bus || (port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()) {
            return port;
        }
    }
}

pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The numeric sequence of an event id (`<epoch>-<seq>`), for ordering checks.
pub fn seq(ev: &SseEvent) -> u64 {
    ev.id.as_deref().and_then(|id| id.rsplit_once('-')).and_then(|(_, s)| s.parse().ok()).expect("event has an id")
}

/// A `redis-server` of the test's own on a free loopback port (no persistence), so that a test
/// can kill and restart it; killed when dropped.
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    args: Vec<String>,
    /// A configuration file named before the arguments (a Sentinel's).
    config: Option<String>,
    /// Only TLS on `port`, with the fixtures' certificates (see [`RedisServer::tls`]).
    tls: Option<RedisTls>,
    _config_dir: Option<tempfile::TempDir>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// `None` (and a note on stderr) where `redis-server` is not installed, so that `cargo test`
    /// passes on a machine with only Rust; `.ci/run` installs it, so CI runs every cluster test.
    pub async fn start() -> Option<RedisServer> {
        RedisServer::with_args(&[]).await
    }

    /// With extra `redis-server` arguments (e.g. `--cluster-enabled yes`).
    pub async fn with_args(args: &[&str]) -> Option<RedisServer> {
        RedisServer::launch(args, None).await
    }

    /// A server that speaks only TLS on its port, with tests/fixtures/redis-server.pem (signed by
    /// the private CA redis-ca.pem); `tls-auth-clients` is `auth_clients` (`yes`: it asks for a
    /// certificate that CA signed, e.g. redis-client.pem). Extra `args` as in [`RedisServer::with_args`].
    pub async fn tls(auth_clients: bool, args: &[&str]) -> Option<RedisServer> {
        RedisServer::launch_tls(args, None, Some(RedisTls { auth_clients })).await
    }

    /// A Sentinel watching `master` under the name `mymaster` (the only one: quorum 1).
    pub async fn sentinel(master: &RedisServer) -> Option<RedisServer> {
        RedisServer::sentinel_of(master, 1).await
    }

    /// One of several Sentinels watching `master` as `mymaster`, which agree that it is down
    /// when `quorum` of them do: 1 s without an answer; a failover may then take 5 s before it
    /// is tried again. Over TLS (with the same certificates) when `master` is.
    pub async fn sentinel_of(master: &RedisServer, quorum: usize) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "sentinel monitor mymaster 127.0.0.1 {} {quorum}\nsentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n",
            master.port
        );
        std::fs::write(&conf, text).unwrap();
        // A Sentinel needs its configuration as a file (it writes its state there), named first.
        let config = Some((conf.to_str().unwrap().to_string(), dir));
        RedisServer::launch_tls(&["--sentinel"], config, master.tls.clone()).await
    }

    async fn launch(args: &[&str], config: Option<(String, tempfile::TempDir)>) -> Option<RedisServer> {
        RedisServer::launch_tls(args, config, None).await
    }

    async fn launch_tls(
        args: &[&str],
        config: Option<(String, tempfile::TempDir)>,
        tls: Option<RedisTls>,
    ) -> Option<RedisServer> {
        for tool in ["redis-server", "redis-cli"] {
            if std::process::Command::new(tool).arg("--version").output().is_err() {
                eprintln!("cluster test skipped: {tool} is not installed (apt-get install redis-server redis-tools)");
                return None;
            }
        }
        let port = free_port(args.contains(&"--cluster-enabled"));
        let (config, config_dir) = config.unzip();
        let mut server = RedisServer {
            child: None,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            config,
            tls,
            _config_dir: config_dir,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://127.0.0.1:<port>`, `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, empty) on its port, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let listen = match &self.tls {
            None => vec!["--port".to_string(), port],
            Some(tls) => tls.server_args(&port),
        };
        let child = std::process::Command::new("redis-server")
            .args(self.config.iter())
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + SOON;
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(tokio::time::Instant::now() < deadline, "redis-server on {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli -p <port> args…`; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let tls = self.tls.iter().flat_map(|_| RedisTls::cli_args());
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(tls)
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// How a [`RedisServer`] speaks TLS: the fixtures' certificates.
#[derive(Clone)]
struct RedisTls {
    auth_clients: bool,
}

impl RedisTls {
    /// Only TLS on `port`; replicas and Sentinels talk TLS to it as well.
    fn server_args(&self, port: &str) -> Vec<String> {
        let auth = if self.auth_clients { "yes" } else { "no" };
        let mut args: Vec<String> =
            ["--port", "0", "--tls-port", port, "--tls-replication", "yes", "--tls-auth-clients", auth]
                .map(String::from)
                .to_vec();
        for (flag, file) in [
            ("--tls-cert-file", "redis-server.pem"),
            ("--tls-key-file", "redis-server.key"),
            ("--tls-ca-cert-file", "redis-ca.pem"),
        ] {
            args.push(flag.into());
            args.push(fixture(file));
        }
        args
    }

    /// What `redis-cli` needs to reach it (the client certificate, in case it asks for one).
    fn cli_args() -> Vec<String> {
        let mut args = vec!["--tls".to_string()];
        for (flag, file) in
            [("--cacert", "redis-ca.pem"), ("--cert", "redis-client.pem"), ("--key", "redis-client.key")]
        {
            args.push(flag.into());
            args.push(fixture(file));
        }
        args
    }
}

/// The path of tests/fixtures/`name`.
pub fn fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name).display().to_string()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
