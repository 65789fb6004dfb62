//! `herald-bench`: runs one benchmark scenario and prints its table and JSON line.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use herald_bench::{
    chaos, cluster, delta, fanout, freshness, handshakes, quota, savings, subscribers, token, webhooks,
};

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
    /// Replicas on Redis against one process, same run; takeover time after `kill -9`.
    Cluster(cluster::Args),
    /// Replicas on Redis with Sentinel under injected faults (kills, pauses, restarts,
    /// failovers, a bad Redis link): checks that no subscriber's copy goes wrong, no change is
    /// skipped and no webhook is lost.
    Chaos(chaos::Args),
    /// Upstream requests with herald in front, against the same clients polling directly.
    Savings(savings::Args),
    /// Write → event latency through herald with write-through refresh, and without it.
    Freshness(freshness::Args),
    /// An upstream announcing a quota well under what the intervals would spend: 429s and
    /// change → event delays.
    Quota(quota::Args),
    /// A big collection with a few changes per poll: upstream bytes and CPU per poll, full
    /// polling against delta polling.
    Delta(delta::Args),
    /// A stream whose upstream wants a short-lived OAuth 2.0 token: token requests against
    /// lifetime − margin, polls answered 401, and whether any reached a subscriber as an error.
    Token(token::Args),
    /// Memory per idle subscriber at several sizes.
    Idle(fanout::IdleArgs),
    /// Full TLS handshakes per second (each with one small request), herald or `--addr`.
    Handshakes(handshakes::Args),
    /// The minimal broadcast server `fanout --target floor` measures (started by it).
    #[command(hide = true)]
    FloorServer,
    /// Subscribers in a child process, when `fanout` splits its load (started by it).
    #[command(hide = true)]
    Subscribers(subscribers::ChildArgs),
    /// A GRIP origin for measuring Pushpin (benches/peers.sh starts it).
    #[command(hide = true)]
    GripOrigin {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let helper = matches!(cli.scenario, Scenario::FloorServer | Scenario::Subscribers(_) | Scenario::GripOrigin { .. });
    if !helper {
        anyhow::ensure!(
            cli.herald.exists(),
            "{} not found: build it with `cargo build --release` or pass --herald",
            cli.herald.display()
        );
        // The end-to-end harness starts the binary HERALD_BIN names.
        std::env::set_var("HERALD_BIN", &cli.herald);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.scenario {
        Scenario::Webhooks(args) => {
            let result = runtime.block_on(webhooks::run(args))?;
            webhooks::print(&result);
            webhooks::check(&result)
        }
        Scenario::Fanout(args) => {
            let result = runtime.block_on(fanout::fanout(args))?;
            fanout::print(&result);
            Ok(())
        }
        Scenario::Cluster(args) => {
            cluster::print(&runtime.block_on(cluster::run(args))?);
            Ok(())
        }
        Scenario::Chaos(args) => {
            let result = runtime.block_on(chaos::run(args, cli.herald.clone()))?;
            chaos::print(&result);
            chaos::verdict(&result)
        }
        Scenario::Savings(args) => {
            savings::print(&runtime.block_on(savings::run(args))?);
            Ok(())
        }
        Scenario::Freshness(args) => {
            freshness::print(&runtime.block_on(freshness::run(args))?);
            Ok(())
        }
        Scenario::Quota(args) => {
            quota::print(&runtime.block_on(quota::run(args))?);
            Ok(())
        }
        Scenario::Delta(args) => {
            delta::print(&runtime.block_on(delta::run(args))?);
            Ok(())
        }
        Scenario::Token(args) => {
            token::print(&runtime.block_on(token::run(args))?);
            Ok(())
        }
        Scenario::Idle(args) => {
            fanout::print_idle(&runtime.block_on(fanout::idle(args))?);
            Ok(())
        }
        Scenario::Handshakes(args) => {
            println!("{}", runtime.block_on(handshakes::run(args))?);
            Ok(())
        }
        Scenario::FloorServer => runtime.block_on(fanout::floor_server()),
        Scenario::Subscribers(args) => runtime.block_on(subscribers::run_child(args)),
        Scenario::GripOrigin { listen } => runtime.block_on(fanout::grip_origin(listen)),
    }
}
