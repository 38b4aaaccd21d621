//! config-access-collector: command-line entry point.

use std::process::ExitCode;

mod cli;

use anyhow::Context;
use clap::ArgMatches;
use cli::{override_source, parse_args, Command, RunArgs};
use config_access_collector::collector::Collector;
use config_access_collector::config::Config;
use config_access_collector::{demo, logging, output};

/// The reader thread allocates what the writer threads free; mimalloc's
/// per-thread free lists keep that producer/consumer pattern cheap. The
/// `system-allocator` feature builds with glibc's malloc instead.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(args: &RunArgs, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let config =
        Config::resolve(&args.overrides).map_err(|e| match override_source(&e, matches) {
            Some(source) => anyhow::Error::new(e).context(source),
            None => e.into(),
        })?;
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
    // Take SIGTERM and SIGINT over before starting: one that arrives while
    // the collector starts is then a clean shutdown right after, not a kill.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _rt = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let (sinks, writers) =
        output::spawn_json_outputs(&config.outputs()).context("opening the outputs")?;
    let collector = Collector::start(&config, sinks).context("starting the collector")?;
    runtime.block_on(async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    });
    tracing::info!("shutting down");
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(config.shutdown_timeout_ms);
    let outputs = collector.outputs().to_vec();
    let stats = collector.stop();
    // A writer blocked in a write is left behind: the process exits anyway.
    for late in writers.join(deadline) {
        tracing::warn!(
            output = late.name,
            "output did not finish writing by the shutdown deadline"
        );
    }
    for o in &outputs {
        let lost = o.lost();
        if lost > 0 || o.failed() {
            tracing::warn!(
                output = o.name,
                lost,
                failed = o.failed(),
                "output lost events"
            );
        }
    }
    tracing::info!(?stats, "stopped");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let (cli, matches) = match parse_args() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => run(&args, matches.subcommand_matches("run").unwrap_or(&matches)),
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
        // Each cause once; names and paths in it are escaped like the logs.
        let chain = logging::chain(e.as_ref());
        eprintln!(
            "config-access-collector: error: {}",
            logging::escape(&chain)
        );
        ExitCode::FAILURE
    })
}
