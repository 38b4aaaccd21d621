//! From a Service or an EndpointSlice as the API server sends it to the
//! entries it contributes to the map; everything else in the object is
//! dropped here. The objects are untrusted: a field that does not parse
//! (an address, a port out of range, an unknown protocol) leaves out what it
//! would have keyed, never the whole map.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{EndpointKey, PodRef, Protocol, Role, ServicePort, SkippedObject, Target};
use crate::enrich::pods::Interner;
use crate::model::pod::Name;

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which watcher an object comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Service,
    EndpointSlice,
}

/// An object of the map: its kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub kind: ObjectKind,
    pub namespace: Name,
    pub name: Name,
}

/// What one object contributes: at most the `limit` given, and the count
/// of entries left out beyond it.
#[derive(Debug, Clone)]
pub struct Contribution {
    pub id: ObjectId,
    /// Every Service port the entries point to, made for this object alone.
    pub ports: Vec<Arc<ServicePort>>,
    pub entries: Vec<(EndpointKey, Target)>,
    pub dropped: u64,
}

impl Contribution {
    fn new(id: ObjectId) -> Self {
        Self {
            id,
            ports: Vec::new(),
            entries: Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, limit: usize, key: EndpointKey, target: Target) {
        if self.entries.len() < limit {
            self.entries.push((key, target));
        } else {
            self.dropped += 1;
        }
    }
}

/// The object's id, when it has a namespace and a name.
pub fn object_id(
    kind: ObjectKind,
    meta: &ObjectMeta,
    names: &Interner,
) -> Result<ObjectId, SkippedObject> {
    match (meta.namespace.as_deref(), meta.name.as_deref()) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Ok(ObjectId {
            kind,
            namespace: names.get(ns),
            name: Arc::from(name),
        }),
        _ => Err(SkippedObject::Unnamed),
    }
}

/// A port number of the API (i32), when it is one (1 ... 65535).
fn port_number(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// The protocol of a port (TCP when unset); `None` for one we do not know.
fn protocol(p: Option<&str>) -> Option<Protocol> {
    p.map_or(Some(Protocol::Tcp), Protocol::parse)
}

/// An optional port name: `""` is no name.
fn port_name(name: Option<&str>, names: &Interner) -> Option<Name> {
    name.filter(|n| !n.is_empty()).map(|n| names.get(n))
}

/// A Service's entries: each cluster IP (`clusterIPs`, else `clusterIP`;
/// not `None` of a headless Service) with each of its ports.
pub fn service_entries(
    svc: &Service,
    names: &Interner,
    limit: usize,
) -> Result<Contribution, SkippedObject> {
    let id = object_id(ObjectKind::Service, &svc.metadata, names)?;
    let mut out = Contribution::new(id);
    let Some(spec) = &svc.spec else {
        return Ok(out);
    };
    let ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
    };
    for port in spec.ports.iter().flatten() {
        let (Some(number), Some(proto)) =
            (port_number(port.port), protocol(port.protocol.as_deref()))
        else {
            continue;
        };
        let service = Arc::new(ServicePort {
            namespace: Arc::clone(&out.id.namespace),
            name: names.get(&out.id.name),
            port_name: port_name(port.name.as_deref(), names),
            role: Role::ClusterIp,
        });
        out.ports.push(Arc::clone(&service));
        for ip in &ips {
            let target = Target {
                service: Arc::clone(&service),
                pod: None,
            };
            out.push(limit, EndpointKey::new(*ip, number, proto), target);
        }
    }
    Ok(out)
}

/// The pod an endpoint names, if it names one.
fn pod_of(target: Option<&ObjectReference>, namespace: &Name) -> Option<Arc<PodRef>> {
    let t = target.filter(|t| t.kind.as_deref() == Some("Pod"))?;
    let (uid, name) = (t.uid.as_deref()?, t.name.as_deref()?);
    let namespace = match t.namespace.as_deref() {
        Some(ns) if ns != &**namespace && !ns.is_empty() => Arc::from(ns),
        _ => Arc::clone(namespace),
    };
    Some(Arc::new(PodRef {
        uid: Arc::from(uid),
        namespace,
        name: Box::from(name),
    }))
}

/// An endpoint's address: the first of its `addresses` (they are
/// interchangeable; kube-proxy uses the first too).
fn address_of(endpoint: &Endpoint) -> Option<IpAddr> {
    endpoint.addresses.first()?.parse().ok()
}

/// An EndpointSlice's entries: each endpoint's address with each of the
/// slice's ports, to the Service port of that name and the endpoint's pod.
pub fn slice_entries(
    slice: &EndpointSlice,
    names: &Interner,
    limit: usize,
) -> Result<Contribution, SkippedObject> {
    let id = object_id(ObjectKind::EndpointSlice, &slice.metadata, names)?;
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Err(SkippedObject::AddressType(slice.address_type.clone()));
    }
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .ok_or(SkippedObject::NoServiceLabel)?;
    let service = names.get(service);
    let ports: Vec<(u16, Protocol, Arc<ServicePort>)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let number = port_number(p.port?)?;
            let service = Arc::new(ServicePort {
                namespace: Arc::clone(&id.namespace),
                name: Arc::clone(&service),
                port_name: port_name(p.name.as_deref(), names),
                role: Role::Endpoint,
            });
            Some((number, protocol(p.protocol.as_deref())?, service))
        })
        .collect();
    let mut out = Contribution::new(id);
    out.ports = ports.iter().map(|(_, _, s)| Arc::clone(s)).collect();
    for endpoint in &slice.endpoints {
        let Some(ip) = address_of(endpoint) else {
            continue;
        };
        let pod = pod_of(endpoint.target_ref.as_ref(), &out.id.namespace);
        for (number, proto, service) in &ports {
            let target = Target {
                service: Arc::clone(service),
                pod: pod.clone(),
            };
            out.push(limit, EndpointKey::new(ip, *number, *proto), target);
        }
    }
    Ok(out)
}
