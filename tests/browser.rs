//! A real browser (Debian's Chromium, driven by playwright-core from npm: tests/browser/) against
//! herald in front of the demo API: the page survives herald being killed and restarted, and
//! opens eight streams at once over HTTP/2. `.ci/run` installs both; where they are missing
//! the test says so and passes.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use herald_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Why the browser test cannot run here, if it cannot.
fn missing(dir: &Path) -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is not installed (Debian package chromium)"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some(format!("playwright-core is not installed (npm ci --prefix {})", dir.display()));
    }
    std::process::Command::new("node").arg("--version").output().err().map(|e| format!("node: {e}"))
}

/// A browser script (node, playwright-core) that prints what it wants of the test, one word a
/// line, reads the test's replies on its stdin, and prints OK last when everything held.
struct Script {
    node: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    said: Vec<String>,
}

impl Script {
    fn start(script: &Path, env: &[(&str, String)]) -> Script {
        let mut node = tokio::process::Command::new("node")
            .arg(script)
            .env("CHROMIUM", CHROMIUM)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let stdin = node.stdin.take().unwrap();
        let out = BufReader::new(node.stdout.take().unwrap()).lines();
        Script { node, stdin, out, said: Vec::new() }
    }

    /// The script's next line; `None` once it has exited.
    async fn line(&mut self) -> Option<String> {
        let line = self.out.next_line().await.unwrap()?;
        eprintln!("browser script: {line}");
        self.said.push(line.clone());
        Some(line)
    }

    async fn reply(&mut self, word: &str) {
        self.stdin.write_all(format!("{word}\n").as_bytes()).await.unwrap();
    }

    /// Asserts that it exited 0 with OK as its last word.
    async fn succeeded(mut self) {
        let status = self.node.wait().await.unwrap();
        let said = &self.said;
        assert!(status.success() && said.last().map(String::as_str) == Some("OK"), "the browser script said {said:?}");
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_survives_a_restart_and_opens_eight_streams_over_http2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if let Some(why) = missing(&dir) {
        eprintln!("browser test skipped: {why}");
        return;
    }
    let (api, upstream) = start_api().await;
    api.mutate_every(Duration::from_millis(700));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let (public, admin) = (free_port(), free_port());
    let yaml = config(
        upstream,
        "sse:\n  retry: 300ms\nroutes:\n  \
             - name: tasks\n    path: /tasks\n    access: public\n    poll: { interval: 100ms, min_interval: 100ms, adaptive: false }\n    \
             events: { format: collection, type: task, collection: { items: '', id: /id } }\n  \
             - name: board\n    path: /board\n    access: public\n    poll: { interval: 100ms, min_interval: 100ms }\n    \
             events: { format: json-patch, array_id: /id }\n",
    )
    .replace("  listen: 127.0.0.1:0\n", &format!("  listen: {public}\n"))
    .replace("  admin_listen: 127.0.0.1:0\n", &format!("  admin_listen: {admin}\n"))
    .replacen(
        "server:\n",
        &format!(
            "server:\n  tls: {{ cert: {}, key: {} }}\n",
            fixtures.join("tls-a.pem").display(),
            fixtures.join("tls-a.key").display()
        ),
        1,
    );
    let mut gw = Gateway::start(&yaml).await;

    let screenshot = std::env::temp_dir().join("herald-demo-page.png");
    let mut script = Script::start(
        &dir.join("demo.mjs"),
        &[
            ("HERALD_URL", format!("https://{public}")),
            ("API_URL", format!("http://{upstream}")),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    );
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = script.line().await {
            if line == "KILL" {
                gw.signal("KILL");
                gw.wait(SOON).await.expect("herald exits on SIGKILL");
                gw = Gateway::start(&yaml).await;
                script.reply("RESTARTED").await;
            }
        }
    })
    .await
    .expect("the browser script finishes");
    script.succeeded().await;
    eprintln!("screenshot of the demo page: {}", screenshot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_subscribers_live_and_shows_no_credential() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if let Some(why) = missing(&dir) {
        eprintln!("browser test skipped: {why}");
        return;
    }
    const TOKEN: &str = "status-page-token-0123456789";
    let (api, upstream) = start_api().await;
    api.add_user("alice");
    api.mutate_every(Duration::from_millis(500));
    let yaml = config(
        upstream,
        "routes:\n  \
         - name: tasks\n    path: /tasks\n    access: public\n    poll: { interval: 200ms, min_interval: 200ms }\n    \
         events: { format: collection, type: task, collection: { id: /id } }\n  \
         - name: board\n    path: /board\n    access: public\n    poll: { interval: 200ms, min_interval: 200ms }\n    \
         events: { format: json-patch, array_id: /id }\n  \
         - name: my-tasks\n    path: /me/tasks\n    access: per-subscriber\n    vary: [authorization]\n    \
         poll: { interval: 200ms, min_interval: 200ms }\n",
    )
    .replacen("server:\n", &format!("server:\n  admin_token: {TOKEN}\n"), 1);
    let gw = Gateway::start(&yaml).await;
    let mut streams = vec![
        gw.subscribe("/tasks/event-stream", &[]).await,
        gw.subscribe("/board/event-stream", &[]).await,
        gw.subscribe("/me/tasks/event-stream", &[("authorization", "Bearer alice")]).await,
    ];
    for s in &mut streams {
        assert_eq!(s.next_within(SOON).await.expect("a snapshot").event, "snapshot");
    }
    // What must never be on the page: the subscriber's credential, the scope hash that stands
    // for it in /admin/watches, and the admin token.
    let watches: serde_json::Value = serde_json::from_str(
        &reqwest::Client::new()
            .get(format!("http://{}/admin/watches", gw.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let scope = watches["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["route"] == "my-tasks")
        .and_then(|w| w["scope"].as_str())
        .expect("the per-subscriber watch's scope")
        .to_string();

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut script = Script::start(
        &dir.join("status.mjs"),
        &[
            ("ADMIN_URL", format!("http://{}", gw.admin)),
            ("TOKEN", TOKEN.to_string()),
            ("SECRETS", format!("alice,{scope},{TOKEN}")),
            ("SCREENSHOT_DESKTOP", shots.join("status-page.png").display().to_string()),
            ("SCREENSHOT_PHONE", shots.join("status-page-phone.png").display().to_string()),
        ],
    );
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = script.line().await {
            if line == "MORE" {
                for _ in 0..2 {
                    let mut s = gw.subscribe("/tasks/event-stream", &[]).await;
                    assert_eq!(s.next_within(SOON).await.expect("a snapshot").event, "snapshot");
                    streams.push(s);
                }
                script.reply("SUBSCRIBED").await;
            }
        }
    })
    .await
    .expect("the browser script finishes");
    script.succeeded().await;
    eprintln!("screenshots of the status page: {}", shots.display());
}
