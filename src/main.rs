//! config-access-collector: command-line entry point.

use std::process::ExitCode;

mod cli;

use anyhow::Context;
use clap::ArgMatches;
use cli::{override_source, parse_args, Command, ReportArgs, ReportFormat, RunArgs};
use config_access_collector::config::Config;
use config_access_collector::{agent, demo, logging};

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
    agent::run::run(&config)?;
    Ok(ExitCode::SUCCESS)
}

/// `report`: the running agent's unread volumes, as a table or as JSON.
fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    use config_access_collector::usage::UsageReport;
    let answer: UsageReport =
        config_access_collector::api::client::get_json(&args.socket, "/v1/usage/report")?;
    match args.output {
        ReportFormat::Table => print!(
            "{}",
            config_access_collector::usage::report::render(&answer)
        ),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
    }
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
        Command::Report(args) => report(&args),
        Command::SandboxExec(args) => Ok(ExitCode::from(
            config_access_collector::demo::container::run(&args) as u8,
        )),
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
