//! The command line: subcommands, flags and their parsing. Bad flags and
//! `CAC_*` variables exit 1 naming their source, like every other
//! configuration error.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use config_access_collector::config::{ConfigError, Overrides};
use config_access_collector::demo::container::ExecArgs;
use config_access_collector::logging;

/// Reports which pod, container and process opened which Secret or ConfigMap file.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Ask the running agent, over its API socket, which mounted Secret and
    /// ConfigMap keys were never read (GET /v1/usage/unread).
    Report(ReportArgs),
    /// Internal: the sandboxed "container" process used by demo and tests.
    #[command(hide = true)]
    SandboxExec(ExecArgs),
}

/// How `report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A table for people.
    Table,
    /// The API's JSON answer.
    Json,
}

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The agent's API socket (its `api_socket`).
    #[arg(
        long,
        env = "CAC_API_SOCKET",
        default_value = "/run/config-access-collector/api.sock"
    )]
    pub socket: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
}

/// Flags of `run` (also accepted without the subcommand).
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Every argument of the command and its subcommands.
fn all_args(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments()
        .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
}

/// The flag or environment variable that set the value `err` is about, when
/// it was one of them (not the config file or a default).
pub fn override_source(err: &ConfigError, matches: &ArgMatches) -> Option<String> {
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
pub fn parse_args() -> Result<(Cli, ArgMatches), ExitCode> {
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
