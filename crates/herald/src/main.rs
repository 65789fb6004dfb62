//! The herald binary: command line, configuration loading, wiring of the components, signals.

#![forbid(unsafe_code)]

mod gateway;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: parsing and diffing large representations allocate a lot, and glibc's allocator
/// made them about twice as slow here (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid configuration (EX_USAGE-like, as the spec says).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Push in front of APIs that can only be polled: SSE for everyone, one poll upstream."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(ConfigArg),
    /// Validate the configuration and exit (64 when it has problems).
    Check(ConfigArg),
    /// Start the built-in demo legacy API at upstream.url and run the gateway in front of it.
    Demo(ConfigArg),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, env = "HERALD_CONFIG", default_value = "gateway.yaml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (arg, demo) = match &cli.command {
        Command::Check(arg) => {
            return match load(&arg.config) {
                Ok(_) => {
                    println!("{}: ok", arg.config.display());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Run(arg) => (arg, false),
        Command::Demo(arg) => (arg, true),
    };
    let mut config = match load(&arg.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Relative paths in the configuration are relative to its file.
    let dir = arg.config.parent().unwrap_or(std::path::Path::new("."));
    if let Some(ca) = &mut config.upstream.ca_file {
        *ca = dir.join(&*ca).display().to_string();
        if let Err(e) = std::fs::read(&*ca) {
            eprintln!("{}: upstream.ca_file: cannot read {ca}: {e}", arg.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    config.storage.path = dir.join(&config.storage.path).display().to_string();
    let tls = match &config.server.tls {
        None => None,
        Some(files) => match herald_http::Tls::load(dir.join(&files.cert), dir.join(&files.key)) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("{}: server.tls: {e}", arg.config.display());
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    gateway::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(config, tls, demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and validates the configuration; prints every problem and gives the exit code on failure.
fn load(path: &std::path::Path) -> Result<herald_config::Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: cannot read the configuration: {e}", path.display());
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    herald_config::load(&path.display().to_string(), &text, &|name| std::env::var(name).ok()).map_err(|problems| {
        for p in &problems.0 {
            eprintln!("{p}");
        }
        eprintln!("herald: {} configuration problem(s)", problems.0.len());
        ExitCode::from(EXIT_CONFIG)
    })
}
