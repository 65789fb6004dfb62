//! deploy/: every metric the Grafana dashboard and the alert rules name is one a live herald
//! serves, and that /metrics passes `promtool check metrics`. (The files themselves are checked
//! by their ecosystems' tools in deploy/check.sh.)

use std::collections::BTreeSet;
use std::path::Path;

use herald_tests::*;

/// The `herald_*` metric names a file mentions, histogram series reduced to their family.
fn named_metrics(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("herald_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_alerts_name_only_metrics_herald_serves() {
    // Cluster mode, so that the cluster and Redis families are there too.
    let Some(redis) = RedisServer::start().await else { return };
    let (_api, upstream) = start_api().await;
    let yaml = config(
        upstream,
        &format!(
            "storage:\n  kind: redis\n  url: {}\n  prefix: deploy-test\n\
             routes:\n  - name: tasks\n    path: /tasks\n    access: public\n",
            redis.url()
        ),
    );
    let gw = Gateway::start(&yaml).await;
    let metrics = gw.admin_get("/metrics").await;
    let served: BTreeSet<&str> =
        metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();

    for file in ["deploy/grafana/herald.json", "deploy/prometheus/alerts.yml"] {
        let named = named_metrics(file);
        assert!(named.len() >= 5, "{file} names too few metrics: {named:?}");
        let missing: Vec<_> = named.iter().filter(|n| !served.contains(n.as_str())).collect();
        assert!(missing.is_empty(), "{file} names metrics herald does not serve: {missing:?}\n{metrics}");
    }

    // The text format itself, as Prometheus's own linter reads it (.ci/run installs promtool).
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(_) => eprintln!("promtool check metrics skipped: promtool is not installed (apt-get install prometheus)"),
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
        }
    }
}
