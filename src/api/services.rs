//! `GET /v1/services/by-endpoint` and `GET /v1/services/by-pod/{uid}`: the
//! Service endpoint map, by address and by pod. A router of its own, with
//! the map as its only state, merged into the correlation API's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{error, fallback_405, path_error, ErrorBody, Reject};
use crate::enrich::pods::MetadataStatus;
use crate::enrich::services::{EndpointKey, PodRef, Protocol, Role, ServiceMap, Target};

/// The parameters `by-endpoint` takes.
const PARAMETERS: [&str; 3] = ["ip", "port", "protocol"];

/// The pod behind an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackingPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl From<&PodRef> for BackingPod {
    fn from(p: &PodRef) -> Self {
        Self {
            uid: p.uid.to_string(),
            namespace: p.namespace.to_string(),
            name: p.name.to_string(),
        }
    }
}

/// A Service port an address belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceTarget {
    /// `cluster_ip`: the address is one of the Service's cluster IPs and the
    /// port a Service port; `endpoint`: an endpoint's address and target port.
    pub role: Role,
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Service port's name; `null` for a Service's only, unnamed port.
    pub port_name: Option<String>,
    /// The pod behind an endpoint (its `targetRef`); `null` for a cluster IP
    /// or an endpoint that names no pod.
    pub pod: Option<BackingPod>,
}

impl From<&Target> for ServiceTarget {
    fn from(t: &Target) -> Self {
        Self {
            role: t.service.role,
            namespace: t.service.namespace.to_string(),
            service: t.service.name.to_string(),
            port_name: t.service.port_name.as_deref().map(str::to_string),
            pod: t.pod.as_deref().map(BackingPod::from),
        }
    }
}

/// Answer of `GET /v1/services/by-endpoint`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceEndpoint {
    /// The address asked for (an IPv4-mapped IPv6 address as its IPv4 address).
    pub ip: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Every Service port at this address, the preferred first (usually one).
    pub targets: Vec<ServiceTarget>,
}

/// One address a pod backs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PodEndpoint {
    pub ip: String,
    /// The target port.
    pub port: u16,
    pub protocol: Protocol,
    pub namespace: String,
    pub service: String,
    pub port_name: Option<String>,
}

/// Answer of `GET /v1/services/by-pod/{uid}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PodServices {
    pub pod: BackingPod,
    /// The endpoints the pod backs, by address and port.
    pub endpoints: Vec<PodEndpoint>,
}

/// The map, or a 404 with the reason it is not there: off, or no API server
/// to fill it (a 4xx: the API never answers a 5xx for a setting).
fn ready(map: &Option<Arc<ServiceMap>>) -> Result<Arc<ServiceMap>, Reject> {
    let off = |why: &str| Err(Reject(StatusCode::NOT_FOUND, why.into()));
    let Some(map) = map else {
        return off("the service endpoint map is off (service_endpoints: false, or kube: off)");
    };
    if map.status() == MetadataStatus::Standalone {
        return off("the service endpoint map is off: no Kubernetes API server configuration");
    }
    Ok(Arc::clone(map))
}

/// A miss: 404 once the map is listed; before, 503 with `Retry-After`
/// (the answer may come with the first list, as `/readyz` waits for pods).
fn missing(map: &ServiceMap, what: String) -> Response {
    if map.synced() {
        return error(StatusCode::NOT_FOUND, what);
    }
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} yet: the Services and EndpointSlices are not listed from the API server yet; retry"),
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    r
}

fn bad(msg: String) -> Reject {
    Reject(StatusCode::BAD_REQUEST, msg)
}

/// The key `ip`, `port` and `protocol` name (the protocol TCP by default).
fn parse_key(q: &HashMap<String, String>) -> Result<EndpointKey, Reject> {
    if let Some(unknown) = q.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown query parameter {unknown:?}: expected ip, port and protocol"
        )));
    }
    let ip = q.get("ip").ok_or_else(|| bad("ip is missing".into()))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| bad(format!("ip must be an IPv4 or IPv6 address, got {ip:?}")))?;
    let port = q.get("port").ok_or_else(|| bad("port is missing".into()))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(format!("port must be 1 to 65535, got {port:?}")))?;
    let protocol = match q.get("protocol") {
        None => Protocol::Tcp,
        Some(p) => Protocol::parse(p)
            .ok_or_else(|| bad(format!("protocol must be TCP, UDP or SCTP, got {p:?}")))?,
    };
    Ok(EndpointKey::new(ip, port, protocol))
}

#[utoipa::path(get, path = "/v1/services/by-endpoint",
    params(
        ("ip" = String, Query, description = "IPv4 or IPv6 address (a cluster IP or an endpoint's, usually a pod IP)"),
        ("port" = u16, Query, description = "port: a Service port with a cluster IP, the target port with an endpoint", minimum = 1, maximum = 65535),
        ("protocol" = Option<String>, Query, description = "TCP (default), UDP or SCTP, in any case", pattern = "^([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ss][Cc][Tt][Pp])$")),
    responses((status = 200, body = ServiceEndpoint), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no Service has this address and port, or the service endpoint map is off (the reason says which)"),
        (status = 503, body = ErrorBody, description = "not found, and the map is not listed from the API server yet")))]
pub(super) async fn by_endpoint(
    State(map): State<Option<Arc<ServiceMap>>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let map = match ready(&map) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let key = match query {
        Ok(Query(q)) => match parse_key(&q) {
            Ok(k) => k,
            Err(r) => return r.into_response(),
        },
        Err(r) => return bad(format!("bad query: {}", r.body_text())).into_response(),
    };
    let targets = map.lookup(&key);
    if targets.is_empty() {
        let what = format!(
            "no Service has {} port {} {}",
            key.ip, key.port, key.protocol
        );
        return missing(&map, what);
    }
    Json(ServiceEndpoint {
        ip: key.ip.to_string(),
        port: key.port,
        protocol: key.protocol,
        targets: targets.iter().map(ServiceTarget::from).collect(),
    })
    .into_response()
}

#[utoipa::path(get, path = "/v1/services/by-pod/{uid}",
    params(("uid" = String, Path, description = "pod UID")),
    responses((status = 200, body = PodServices), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "the pod backs no Service endpoint, or the service endpoint map is off (the reason says which)"),
        (status = 503, body = ErrorBody, description = "not found, and the map is not listed from the API server yet")))]
pub(super) async fn by_pod(
    State(map): State<Option<Arc<ServiceMap>>>,
    raw: Result<Path<String>, PathRejection>,
) -> Response {
    let map = match ready(&map) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let uid = match raw {
        Ok(Path(u)) => u,
        Err(r) => return path_error(r),
    };
    let backed = map.by_pod(&uid);
    let Some(pod) = backed.iter().find_map(|(_, t)| t.pod.as_deref()) else {
        return missing(&map, format!("pod {uid} backs no Service endpoint"));
    };
    let pod = BackingPod::from(pod);
    let endpoints = backed
        .iter()
        .map(|(k, t)| PodEndpoint {
            ip: k.ip.to_string(),
            port: k.port,
            protocol: k.protocol,
            namespace: t.service.namespace.to_string(),
            service: t.service.name.to_string(),
            port_name: t.service.port_name.as_deref().map(str::to_string),
        })
        .collect();
    Json(PodServices { pod, endpoints }).into_response()
}

/// The routes of the Service endpoint map over `map` (`None`: the feature
/// is off, and both answer 404 saying so). Merged into the correlation API; public so
/// that tests serve it alone.
pub fn router(map: Option<Arc<ServiceMap>>) -> Router {
    Router::new()
        .route("/v1/services/by-endpoint", get(by_endpoint))
        .route("/v1/services/by-pod/{uid}", get(by_pod))
        .method_not_allowed_fallback(fallback_405)
        .with_state(map)
}
