//! The enumerations a configuration chooses from, shared by the config
//! schema and the components it sets up.

use serde::{Deserialize, Serialize};

/// What to do with the kubelet's own accesses to volume files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeletWrites {
    /// Emit them with `event_type: kubelet_write`.
    Report,
    /// Count and drop them.
    Drop,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318); `/v1/metrics` and `/v1/logs` are appended.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(format!("must be grpc or http/protobuf, got {other:?}")),
        }
    }
}

/// Labels that may be put on the per-access counter (`kernel_monitor_access`).
/// Bounded by design: no pid, path or key labels exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLabel {
    /// Namespace of the volume's pod.
    Namespace,
    /// Pod name (one series per pod: mind the cardinality).
    Pod,
    /// Container name of the reader.
    Container,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, ...
    WorkloadKind,
    /// Name of the owning workload.
    Workload,
    /// `secret`, `configmap`, `projected`, `downward-api`.
    VolumeType,
    /// `ok` or the errno name (`EACCES` for denied opens).
    Result,
    /// `read`, `write`, `read_write`.
    Access,
    /// The event type (`secret_access`, ..., `kubelet_write`).
    EventType,
}

impl AccessLabel {
    /// The label's name on the metric.
    pub fn key(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Pod => "pod",
            Self::Container => "container",
            Self::WorkloadKind => "workload_kind",
            Self::Workload => "workload",
            Self::VolumeType => "volume_type",
            Self::Result => "result",
            Self::Access => "access",
            Self::EventType => "event_type",
        }
    }
}
