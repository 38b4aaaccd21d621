//! The node agent's life: raise the descriptor limit, take the stop
//! signals over, open the outputs, start the collector, wait for SIGTERM or
//! SIGINT, and stop within `shutdown_timeout_ms`.

use std::time::{Duration, Instant};

use super::{settings, Collector};
use crate::config::Config;
use crate::output::spawn_json_outputs;

/// What kept the agent from running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("installing the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("opening the outputs")]
    Outputs(#[source] std::io::Error),
    #[error("starting the collector")]
    Start(#[source] crate::Error),
}

/// Runs the collector until SIGTERM or SIGINT.
pub fn run(config: &Config) -> Result<(), RunError> {
    // Every HTTP connection holds a descriptor: use what the hard limit allows.
    match crate::api::raise_fd_limit() {
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
        .build()
        .map_err(RunError::Signals)?;
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _rt = runtime.enter();
        (
            signal(SignalKind::terminate()).map_err(RunError::Signals)?,
            signal(SignalKind::interrupt()).map_err(RunError::Signals)?,
        )
    };
    let (sinks, writers) =
        spawn_json_outputs(&settings::outputs(config)).map_err(RunError::Outputs)?;
    let collector = Collector::start(config, sinks).map_err(RunError::Start)?;
    runtime.block_on(async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    });
    tracing::info!("shutting down");
    let deadline = Instant::now() + Duration::from_millis(config.shutdown_timeout_ms);
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
    Ok(())
}
