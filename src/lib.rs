//! config-access-collector: which pod, container and process read which Secret or ConfigMap.
//!
//! Data flows one way, and the folders show it (see `docs/architecture.md`):
//! [`model`] (plain data) <- [`config`] <- [`kernel`] <- [`enrich`] <-
//! [`usage`] <- [`output`], [`api`] <- [`agent`] <- the binary; [`demo`] drives the
//! agent on a built-in sandbox. No module imports a layer above its own
//! (`tests/layers.rs` checks it). [`logging`] is a bottom utility.

pub mod agent;
pub mod api;
pub mod config;
pub mod demo;
pub mod enrich;
pub mod kernel;
pub mod logging;
pub mod model;
pub mod output;
pub mod usage;

/// Errors of the crate, one variant per layer that can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Probe(#[from] kernel::probe::ProbeError),
    #[error(transparent)]
    Volume(#[from] enrich::volumes::VolumeError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Telemetry(#[from] output::telemetry::TelemetryError),
    #[error("demo sandbox")]
    Demo(#[source] std::io::Error),
    #[error("the ring-buffer reader ended before the BPF programs were loaded")]
    ReaderGone,
    #[error(transparent)]
    Map(#[from] kernel::maps::MapError),
    #[error("starting thread {name}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use crate::logging::chain;
    use std::io;

    #[test]
    fn no_error_of_the_crate_prints_its_source_twice() {
        let io = || io::Error::from_raw_os_error(libc::ENOENT);
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(crate::config::ConfigError::Read {
                path: "/c.yaml".into(),
                source: io(),
            }),
            Box::new(crate::enrich::volumes::VolumeError::Watch {
                path: "/v".into(),
                source: io(),
            }),
            Box::new(crate::kernel::maps::MapError {
                map: "m",
                source: io().into(),
            }),
            Box::new(crate::api::ApiError::Listen {
                addr: "a".into(),
                source: io(),
            }),
            Box::new(crate::api::ApiError::Token {
                path: "/t".into(),
                source: io(),
            }),
            Box::new(crate::kernel::probe::ProbeError::Open(io().into())),
            Box::new(crate::kernel::probe::ProbeError::Load(io().into())),
            Box::new(crate::kernel::probe::ProbeError::Attach(io().into())),
            Box::new(crate::kernel::probe::ProbeError::Resize {
                map: "m",
                source: io().into(),
            }),
            Box::new(crate::output::telemetry::TelemetryError::Runtime(io())),
            Box::new(crate::Error::Demo(io())),
            Box::new(crate::Error::Thread {
                name: "t",
                source: io(),
            }),
        ];
        for e in errors {
            assert!(
                !e.to_string().contains("No such file"),
                "{e:?} prints its source in its own message: {e}"
            );
            let text = chain(&*e);
            assert_eq!(text.matches("No such file").count(), 1, "{text}");
        }
    }
}
