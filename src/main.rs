//! config-access-collector: command-line entry point.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config_access_collector::collector::Collector;
use config_access_collector::config::{Config, Overrides};
use config_access_collector::container::ExecArgs;
use config_access_collector::{demo, logging, output};

/// The reader thread allocates what the writer threads free; mimalloc's
/// per-thread free lists keep that producer/consumer pattern cheap.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reports which pod, container and process opened which Secret or ConfigMap file.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch this node's kubelet volumes and print one JSON event per access (the default).
    Run(RunArgs),
    /// Run the pipeline on a built-in kubelet-like sandbox and check the events.
    Demo {
        /// Log filter.
        #[arg(long, env = "CAC_LOG_LEVEL", default_value = "info")]
        log_level: String,
    },
    /// Print the correlation API's OpenAPI document (also served at /v1/openapi.json).
    Openapi,
    /// Internal: the sandboxed "container" process used by demo and tests.
    #[command(hide = true)]
    SandboxExec(ExecArgs),
}

#[derive(Debug, Default, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    overrides: Overrides,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(&args.overrides)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    logging::init(&config.log_level);
    // Every HTTP connection holds a descriptor: use what the hard limit allows.
    match config_access_collector::api::raise_fd_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    if !config.kubelet_root.join("pods").is_dir() {
        tracing::warn!(path = %config.kubelet_root.join("pods").display(), "no kubelet pods directory yet; watching for it");
    }
    let (collector, events) = Collector::start(&config).context("starting the collector")?;
    let writer = output::spawn_writer(events, &config.outputs())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    tracing::info!("shutting down");
    let stats = collector.stop();
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("stdout writer panicked"))??;
    tracing::info!(?stats, written, "stopped");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run(&args),
        Command::Demo { log_level } => {
            logging::init(&log_level);
            std::env::current_exe()
                .context("locating this executable")
                .and_then(|exe| Ok(demo::run(&exe)?))
                .map(|code| ExitCode::from(code as u8))
        }
        Command::Openapi => {
            println!("{}", config_access_collector::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::SandboxExec(args) => Ok(ExitCode::from(config_access_collector::container::run(
            &args,
        ) as u8)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("config-access-collector: error: {e:#}");
        ExitCode::FAILURE
    })
}
