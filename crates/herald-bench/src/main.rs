//! `herald-bench`: runs herald (the release binary) against the testkit's legacy API and webhook
//! receiver on loopback, and measures it. Prints a table and one JSON line for docs/benchmarks.md.
#![forbid(unsafe_code)]

mod fanout;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The herald binary to measure.
    #[arg(long, default_value = "target/release/herald", global = true)]
    herald: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Sustained webhook deliveries to a local receiver with the embedded store.
    Webhooks(webhooks::Args),
    /// N SSE subscribers on one stream, K changes: spread, latency, deliveries/s, CPU, memory.
    Fanout(fanout::Args),
    /// The minimal broadcast server `fanout --target floor` measures (started by it).
    #[command(hide = true)]
    FloorServer,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.herald.exists(),
        "{} not found: build it with `cargo build --release` or pass --herald",
        cli.herald.display()
    );
    // The end-to-end harness starts the binary HERALD_BIN names.
    std::env::set_var("HERALD_BIN", &cli.herald);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.scenario {
        Scenario::Webhooks(args) => runtime.block_on(webhooks::run(args)),
        Scenario::Fanout(args) => {
            let result = runtime.block_on(fanout::fanout(args))?;
            print_fanout(&result);
            Ok(())
        }
        Scenario::FloorServer => runtime.block_on(fanout::floor_server()),
    }
}

fn print_fanout(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!(
        "fanout {}: {} subscribers × {} changes, {} of {} delivered",
        r["target"].as_str().unwrap_or("?"),
        r["subscribers"],
        r["changes"],
        r["delivered"],
        r["expected"]
    );
    println!(
        "  spread first→last     p50 {:.1} ms   p99 {:.1} ms",
        f(&r["spread_ms"]["p50"]),
        f(&r["spread_ms"]["p99"])
    );
    println!(
        "  change → receipt      p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"])
    );
    println!("  deliveries/s          {:.0}", f(&r["deliveries_per_second"]));
    println!(
        "  CPU per change        {:.1} ms;  RSS {:.0} MiB, {:.0} bytes per subscriber",
        f(&r["cpu_seconds_per_change"]) * 1000.0,
        f(&r["rss_mib"]),
        f(&r["rss_per_subscriber_bytes"])
    );
    println!("{r}");
}

/// CPU time (user + system) and resident memory of a process, from /proc.
pub(crate) struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

pub(crate) fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) are space-separated.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; 100 ticks a second.
    let cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Usage { cpu_seconds, rss_bytes: rss_kib * 1024 }
}

/// The `p`-th percentile (0-100) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
