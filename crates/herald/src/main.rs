//! The herald binary: command line, configuration loading, wiring of the components, signals.

#![forbid(unsafe_code)]

mod gateway;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: parsing and diffing large representations allocate a lot, and glibc's allocator
/// made them about twice as slow here (docs/benchmarks.md). The `system-allocator` feature keeps
/// glibc's, for heap profilers that see `malloc` only (heaptrack; docs/benchmarks.md).
#[cfg(not(feature = "system-allocator"))]
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
    /// Print the AsyncAPI 3.0 (streams and webhooks) or OpenAPI 3.1 (endpoints, subscription
    /// API, deliveries) document of the configuration.
    Describe {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = DocFormat::Asyncapi)]
        format: DocFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DocFormat {
    Asyncapi,
    Openapi,
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
            let checked = load(&arg.config).and_then(|config| {
                let (config, _tls, mut problems) = prepare(config, &arg.config);
                problems.extend(check_store(&config).err());
                report(problems)
            });
            return match checked {
                Ok(()) => {
                    println!("{}: ok", arg.config.display());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            };
        }
        Command::Describe { config, format } => {
            let config = match load(&config.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let doc = match format {
                DocFormat::Asyncapi => herald_http::describe::asyncapi(&config),
                DocFormat::Openapi => herald_http::describe::openapi(&config),
            };
            println!("{}", serde_json::to_string_pretty(&doc).expect("a JSON value serializes"));
            return ExitCode::SUCCESS;
        }
        Command::Run(arg) => (arg, false),
        Command::Demo(arg) => (arg, true),
    };
    let (config, tls) = match load(&arg.config).and_then(|config| {
        let (config, tls, problems) = prepare(config, &arg.config);
        report(problems).map(|()| (config, tls))
    }) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    gateway::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gateway::run(config, arg.config.clone(), tls, demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `herald run` checks after reading the configuration and before binding: the files it
/// names (upstream.ca_file, upstream.client_cert/client_key, server.tls, and with Redis
/// storage.ca_file, storage.client_cert/client_key) can be read and hold what they should.
/// Relative paths are resolved against the configuration file's folder.
fn prepare(
    mut config: herald_config::Config,
    file: &std::path::Path,
) -> (herald_config::Config, Option<std::sync::Arc<herald_http::Tls>>, Vec<herald_config::Problem>) {
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let mut problems = Vec::new();
    let u = &mut config.upstream;
    for file in [&mut u.ca_file, &mut u.client_cert, &mut u.client_key].into_iter().flatten() {
        *file = dir.join(&*file).display().to_string();
    }
    // Building the upstream client reads and parses ca_file, client_cert and client_key.
    if let Err(herald_poll::PollError::Setup(e)) = herald_poll::UpstreamClient::new(&config.upstream) {
        let key = ["upstream.ca_file", "upstream.client_cert", "upstream.client_key"]
            .into_iter()
            .find(|key| e.starts_with(&format!("{key} ")))
            .unwrap_or("upstream");
        let e = e.strip_prefix(&format!("{key} ")).unwrap_or(&e);
        problems.push(config.positions.problem(key, format!("cannot use {e}")));
    }
    config.storage.path = dir.join(&config.storage.path).display().to_string();
    let s = &mut config.storage;
    for file in [&mut s.ca_file, &mut s.client_cert, &mut s.client_key].into_iter().flatten() {
        *file = dir.join(&*file).display().to_string();
    }
    if config.storage.kind == herald_config::StorageKind::Redis {
        if let Err(e) = gateway::redis_tls(&config.storage) {
            problems.push(config.positions.problem(e.key, e.message));
        }
    }
    let tls = match &config.server.tls {
        None => None,
        Some(files) => match herald_http::Tls::load(dir.join(&files.cert), dir.join(&files.key)) {
            Ok(tls) => Some(tls),
            Err(e) => {
                problems.push(config.positions.problem("server.tls", e.to_string()));
                None
            }
        },
    };
    (config, tls, problems)
}

/// `herald check`: the embedded store can be opened (created if new) with the configured key.
/// One held by a running herald is fine: that herald opened it.
fn check_store(config: &herald_config::Config) -> Result<(), herald_config::Problem> {
    use herald_store::StoreError;
    let storage = &config.storage;
    if storage.kind != herald_config::StorageKind::Embedded {
        return Ok(());
    }
    match herald_store::RedbStore::open(std::path::Path::new(&storage.path), storage.encryption_key.as_ref()) {
        Ok(_) | Err(StoreError::InUse(_)) => Ok(()),
        Err(e @ (StoreError::WrongKey | StoreError::KeyNeeded)) => {
            Err(config.positions.problem("storage.encryption_key", e.to_string()))
        }
        Err(e) => {
            Err(config.positions.problem("storage.path", format!("cannot open the store in {}: {e}", storage.path)))
        }
    }
}

/// The configuration file read again and checked as `herald run` checks it (SIGHUP): the
/// configuration, or every problem as `herald check` words it.
pub(crate) fn reread(file: &std::path::Path) -> Result<herald_config::Config, Vec<String>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![format!("{}: cannot read the configuration: {e}", file.display())])?;
    let config = herald_config::load(&file.display().to_string(), &text, &|name| std::env::var(name).ok())
        .map_err(|problems| problems.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let (config, _tls, problems) = prepare(config, file);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems.iter().map(ToString::to_string).collect())
    }
}

/// Prints every problem; the configuration exit code when there was one.
fn report(problems: Vec<herald_config::Problem>) -> Result<(), ExitCode> {
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!("herald: {} configuration problem(s)", problems.len());
    Err(ExitCode::from(EXIT_CONFIG))
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
    herald_config::load(&path.display().to_string(), &text, &|name| std::env::var(name).ok())
        .map_err(|problems| report(problems.0).expect_err("an error has problems"))
}
