//! The Service endpoint map: which Service, and for an endpoint which pod,
//! an `(IP, port, protocol)` of the cluster belongs to. Fed by two kube-rs
//! watchers, on every Service and every EndpointSlice of the cluster.
//!
//! Only what the map needs is kept of each object ([`convert`]): a
//! Service's cluster IPs (both families of a dual-stack one) and ports
//! (number, protocol, name); an EndpointSlice's Service (its
//! `kubernetes.io/service-name` label), ports, and each endpoint's addresses
//! and backing pod (`targetRef` of kind `Pod`: UID, namespace, name).
//! Everything else (selectors, annotations, conditions, topology) is dropped
//! as the object arrives. The map holds at most `max_entries` (key, target)
//! pairs: what does not fit is counted ([`ServiceMap::overflow`]) and raises
//! the `service_map` condition on `/healthz` until the objects left out fit.
//!
//! Consumers: the correlation API (lookups by `IP:port` and by pod), and the
//! kernel map `svc_endpoints` ([`mirror`]), which takes a full snapshot
//! ([`ServiceMap::entries`]) and then the keys changed since
//! ([`ServiceMap::changes_since`]), woken by [`ServiceMap::subscribe`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::pod::Name;

mod convert;
mod mirror;
mod slot;
mod store;
mod watch;

pub use convert::{
    object_id, service_entries, slice_entries, Contribution, ObjectId, ObjectKind,
    SERVICE_NAME_LABEL,
};
/// The kernel's key and value of a map entry (what `svc_endpoints` holds).
pub use mirror::{addr as kernel_addr, value as kernel_value};
pub use mirror::{mirror_to_kernel, KernelMirror, MirrorStats};
pub use store::{Changes, ServiceMap, Snapshot, CHANGE_LOG};
pub use watch::{watch_endpoint_slices, watch_service_map, watch_services};

/// Health component raised while objects are left out of a full map.
pub const HEALTH_COMPONENT: &str = "service_map";

/// Default of `service_endpoints_max_entries`.
pub const DEFAULT_MAX_ENTRIES: usize = 500_000;

/// Why an object from the API server was left out of the map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkippedObject {
    #[error("the object has no namespace or no name")]
    Unnamed,
    #[error("the EndpointSlice has no kubernetes.io/service-name label (not a Service's)")]
    NoServiceLabel,
    #[error("the EndpointSlice's addresses are of type {0} (only IPv4 and IPv6 are mapped)")]
    AddressType(String),
}

/// Transport protocol of a Service or endpoint port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }

    /// The IANA protocol number (the kernel's `IPPROTO_*`).
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// `TCP`, `UDP` or `SCTP`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Tcp, Self::Udp, Self::Sctp]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key of the map: an address of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl EndpointKey {
    /// The key of `ip` (an IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, as
    /// the IPv4 address it maps: the form Kubernetes writes), `port`, `protocol`.
    pub fn new(ip: IpAddr, port: u16, protocol: Protocol) -> Self {
        Self {
            ip: ip.to_canonical(),
            port,
            protocol,
        }
    }
}

/// What the address is of a Service's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One of the Service's cluster IPs, with a Service port.
    ClusterIp,
    /// An endpoint (usually a pod IP) with an EndpointSlice port: the target port.
    Endpoint,
}

/// A port of a Service: the Service, and the port's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub namespace: Name,
    pub name: Name,
    /// `None`: the Service's only port, unnamed.
    pub port_name: Option<Name>,
    pub role: Role,
}

/// The pod behind an endpoint (its `targetRef`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    pub uid: Name,
    pub namespace: Name,
    pub name: Box<str>,
}

/// What a key maps to: a Service port, and for an endpoint its pod (when
/// the endpoint names one). Cheap to clone: two shared pointers.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Arc<ServicePort>,
    pub pod: Option<Arc<PodRef>>,
}

impl Target {
    /// Order of preference when a key has several targets (the kernel map
    /// holds one): by role, namespace, Service, port name, then pod.
    fn rank(&self) -> (&ServicePort, Option<&PodRef>) {
        (&self.service, self.pod.as_deref())
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Target {}

/// Settings of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSettings {
    /// Most (key, target) pairs held.
    pub max_entries: usize,
}

impl Default for MapSettings {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

#[cfg(test)]
mod tests;
