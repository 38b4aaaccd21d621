//! Logging setup: `tracing` to stderr, with libbpf's own messages routed into it.

use std::sync::Once;

use libbpf_rs::PrintLevel;

/// Installs the stderr subscriber (filter from `level`, overridden by `RUST_LOG`).
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn libbpf_print(level: PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
        PrintLevel::Info => tracing::info!(target: "libbpf", "{msg}"),
        PrintLevel::Debug => tracing::debug!(target: "libbpf", "{msg}"),
    }
}

/// Sends libbpf's output to `tracing` (idempotent).
pub fn route_libbpf_output() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, libbpf_print)));
    });
}
