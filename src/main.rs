//! config-access-collector: command-line entry point.

use std::process::ExitCode;

use anyhow::Context;
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use config_access_collector::collector::Collector;
use config_access_collector::config::{Config, ConfigError, Overrides};
use config_access_collector::container::ExecArgs;
use config_access_collector::{demo, logging, output};

/// The reader thread allocates what the writer threads free; mimalloc's
/// per-thread free lists keep that producer/consumer pattern cheap. The
/// `system-allocator` feature builds with glibc's malloc instead.
#[cfg(not(feature = "system-allocator"))]
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

/// Every argument of the command and its subcommands.
fn all_args(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments()
        .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
}

/// The flag or environment variable that set the value `err` is about, when
/// it was one of them (not the config file or a default).
fn override_source(err: &ConfigError, matches: &ArgMatches) -> Option<String> {
    let id = match err {
        ConfigError::Invalid { key, .. } => key.as_str(),
        ConfigError::Read { .. } => "config",
        ConfigError::Syntax { .. } => return None,
    };
    if !matches.ids().any(|i| i.as_str() == id) {
        return None;
    }
    let cmd = Cli::command();
    let arg = all_args(&cmd).find(|a| a.get_id() == id)?;
    match matches.value_source(id)? {
        ValueSource::CommandLine => Some(format!("flag --{}", arg.get_long()?)),
        ValueSource::EnvVariable => Some(format!(
            "environment variable {}",
            arg.get_env()?.to_string_lossy()
        )),
        _ => None,
    }
}

/// The environment variable whose value clap refused in `err`: the
/// argument's variable, when its flag is not on the command line (a flag
/// wins over its variable).
fn refused_env_var(err: &clap::Error, cmd: &clap::Command) -> Option<String> {
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split([' ', '=']).next()?.strip_prefix("--")?;
    let var = all_args(cmd)
        .find(|a| a.get_long() == Some(long))?
        .get_env()?;
    let flag = format!("--{long}");
    let on_command_line = std::env::args_os().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    (!on_command_line && std::env::var_os(var).is_some()).then(|| var.to_string_lossy().into())
}

/// Parses flags and `CAC_*` variables. Help and version exit 0; a bad flag
/// or variable exits 1, like every other configuration error, naming the
/// variable when the bad value came from one.
fn parse_args() -> Result<(Cli, ArgMatches), ExitCode> {
    let mut cmd = Cli::command();
    let parsed = cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    parsed.map_err(|e| {
        let e = e.format(&mut cmd);
        if !e.use_stderr() {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        match refused_env_var(&e, &cmd) {
            Some(var) => {
                let text = e.render().to_string();
                let first = text.split("\n\n").next().unwrap_or_default();
                let first = first.strip_prefix("error: ").unwrap_or(first);
                let words: Vec<&str> = first.lines().map(str::trim).collect();
                eprintln!(
                    "config-access-collector: error: environment variable {var}: {}",
                    logging::escape(&words.join(" "))
                );
            }
            None => {
                let _ = e.print();
            }
        }
        ExitCode::FAILURE
    })
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
