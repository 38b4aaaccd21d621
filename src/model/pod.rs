//! Pod-side names an access event carries: the owning workload and the
//! object a volume file comes from.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A shared, immutable string: names repeated across pods (namespaces,
/// images, object and volume names, label keys and values) are stored once.
pub type Name = Arc<str>;

/// The workload that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `ReplicaSet`, ...
    #[schema(value_type = String)]
    pub kind: Name,
    #[schema(value_type = String)]
    pub name: Name,
}

/// Kind of object a file of a volume comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum SourceKind {
    Secret,
    ConfigMap,
    ServiceAccountToken,
    #[serde(rename = "DownwardAPI")]
    DownwardApi,
    ClusterTrustBundle,
}

impl SourceKind {
    /// The kind as the API spells it (`DownwardAPI`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::ServiceAccountToken => "ServiceAccountToken",
            SourceKind::DownwardApi => "DownwardAPI",
            SourceKind::ClusterTrustBundle => "ClusterTrustBundle",
        }
    }
}

/// Where a volume file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileSource {
    pub kind: SourceKind,
    /// Object name, when the source is an object.
    #[schema(value_type = Option<String>)]
    pub name: Option<Name>,
    /// Key inside the object (differs from the file name when `items[].path` remaps it).
    #[schema(value_type = Option<String>)]
    pub key: Option<Name>,
}
