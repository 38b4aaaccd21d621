//! config-access-collector: which pod, container and process read which Secret or ConfigMap.
//!
//! See `docs/architecture.md` for how the parts fit together.

pub mod abi {
    //! The generated libbpf-rs skeleton; its `types` module holds the ABI structs of `bpf/cac_abi.h`.
    #![allow(
        clippy::all,
        missing_docs,
        non_camel_case_types,
        non_upper_case_globals
    )]
    include!(concat!(env!("OUT_DIR"), "/collector.skel.rs"));
}
pub mod api;
pub mod cgroup;
pub mod clock;
pub mod collector;
pub mod config;
pub mod container;
pub mod correlation;
pub mod decode;
pub mod demo;
pub mod denied;
pub mod event;
pub mod event_logs;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod pods;
pub mod probe;
pub mod sandbox;
pub mod telemetry;
pub mod volumes;
pub mod watcher;

/// Errors of the crate, one variant per module that can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error("demo sandbox")]
    Demo(#[source] std::io::Error),
    #[error("starting a thread")]
    Thread(#[source] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
