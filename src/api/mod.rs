//! HTTP servers: health probes on their own port, and the versioned
//! correlation API for sibling collectors.
//!
//! The correlation API listens on a Unix socket (writes allowed: the socket's
//! file mode is the access control) and optionally on TCP, where reads are
//! open and writes need `Authorization: Bearer <token>` with the token read
//! from a file (no token file: no writes over TCP). Every error is a JSON
//! body `{"error": "..."}` with a 4xx status; bodies are capped at
//! [`MAX_BODY`], write bodies are validated field by field (lengths,
//! characters, unknown fields) and the mounts they add are bounded
//! (`api_max_mounts`). The OpenAPI document is generated from the handlers
//! (utoipa), describes exactly what the server accepts, and is served at
//! `/v1/openapi.json`. Connection limits and timeouts are in [`listen`].

pub mod client;
mod listen;
mod services;

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::Error as _;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::enrich::cgroup::CgroupResolver;
use crate::enrich::correlation::{
    ContainerPid, CorrelationError, CorrelationMaps, CorrelationOp, MountInfo, PodInfo,
    RemovedMount,
};
use crate::enrich::pods::{MetadataStatus, PodMetadata};
use crate::enrich::services::{Protocol, Role, ServiceMap};
use crate::kernel::maps::StatsReader;
use crate::kernel::probe::Attachment;
pub use crate::model::health::Heartbeat;
use crate::model::health::{self, Condition, HealthBoard, Severity};
use crate::model::pod::SourceKind;
pub use crate::model::stats::{ListenerCounters, ListenerKind, ListenerStats};
use crate::model::stats::{OutputStats, UserStats};
use crate::usage::answers::{Evidence, EvidenceStatus, UnreadKey, UnreadMount, UnreadReport};
use crate::usage::baseline::{BaselineEntry, WorkloadBaseline, WorkloadBaselineDetail, WorkloadId};
use crate::usage::ledger::{FileKey, KeyUsage, Reader, Rotation};
use crate::usage::objects::{BlastRadius, ObjectMount, ObjectUsage};
use crate::usage::rotation::{RotatedReader, RotatedVolume, RotationReport};
use crate::usage::startup::{StartupOnlyRead, StartupOnlyReport};
use crate::usage::{KeyReport, Usage, UsageReport};

pub use services::{
    router as services_router, BackingPod, PodEndpoint, PodServices, ServiceEndpoint, ServiceTarget,
};

pub use listen::{raise_fd_limit, Limits, SocketFileError, LINGER_BYTES, LINGER_TIME, MAX_HEAD};

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the API token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the API runtime")]
    Runtime(#[source] std::io::Error),
    #[error("starting the api-server thread")]
    Thread(#[source] std::io::Error),
    #[error("the API token file {path} is empty (every TCP write would be refused)")]
    EmptyToken { path: PathBuf },
    #[error(transparent)]
    SocketFile(#[from] SocketFileError),
}

/// What the handlers read.
#[derive(Debug)]
pub struct ApiState {
    pub kernel_stats: StatsReader,
    pub user_stats: Arc<UserStats>,
    /// Whether the BPF programs are still attached.
    pub attachment: Attachment,
    pub heartbeat: Arc<Heartbeat>,
    /// The reader is stalled when its heartbeat is older than this.
    pub stall_after: Duration,
    /// Pod metadata (none in standalone mode).
    pub pods: Arc<dyn PodMetadata>,
    pub correlation: Arc<CorrelationMaps>,
    pub cgroups: Arc<CgroupResolver>,
    /// Metrics served at `/metrics` (Prometheus text format), when enabled.
    pub registry: Option<prometheus::Registry>,
    /// Conditions raised by the collector's components.
    pub health: Arc<HealthBoard>,
    /// The outputs' counters.
    pub outputs: Vec<Arc<OutputStats>>,
    /// The usage ledger and its answers.
    pub usage: Arc<Usage>,
    /// The Service endpoint map (`None`: off; `/v1/services/*` answer 404 saying so).
    pub services: Option<Arc<ServiceMap>>,
}

/// Who may write through a listener.
#[derive(Debug, Clone)]
enum Writes {
    Allowed,
    Token(Arc<str>),
    Denied,
}

#[derive(Clone)]
struct Ctx {
    state: Arc<ApiState>,
    writes: Writes,
    /// Most mounts posted through the API.
    max_mounts: usize,
}

/// Error body of every 4xx/5xx answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

/// A refused request: its status and reason (sent as [`ErrorBody`]).
struct Reject(StatusCode, String);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn not_found(what: impl std::fmt::Display) -> Response {
    error(StatusCode::NOT_FOUND, format!("{what} not found"))
}

fn path_error(r: PathRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("bad path parameter: {}", r.body_text()),
    )
}

fn json_error(r: JsonRejection) -> Reject {
    let status = match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    Reject(status, format!("bad request body: {}", r.body_text()))
}

/// The body of a write request, once access is granted and the JSON parses.
fn accept_write<T>(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: Result<Json<T>, JsonRejection>,
) -> Result<T, Reject> {
    if let Some(refusal) = refuse_write(ctx, headers) {
        return Err(refusal);
    }
    body.map(|Json(b)| b).map_err(json_error)
}

/// Checks write access; `Some(response)` refuses.
fn refuse_write(ctx: &Ctx, headers: &HeaderMap) -> Option<Reject> {
    match &ctx.writes {
        Writes::Allowed => None,
        Writes::Denied => Some(Reject(
            StatusCode::FORBIDDEN,
            "writes are only accepted on the Unix socket (no token configured)".into(),
        )),
        Writes::Token(token) => {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
                Some(_) => Some(Reject(StatusCode::FORBIDDEN, "wrong bearer token".into())),
                None => Some(Reject(
                    StatusCode::UNAUTHORIZED,
                    "writes need Authorization: Bearer <token>".into(),
                )),
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `/healthz` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` (answered with 200: part of what should be seen
    /// or delivered is lost, see `conditions`) or `unhealthy` (503).
    pub status: String,
    pub ebpf_loaded: bool,
    /// Always `config_access`.
    pub focus: String,
    pub ring_buffer_active: bool,
    /// Events emitted so far.
    pub events_processed: u64,
    /// Events lost in the kernel (ring buffer full).
    pub events_dropped_kernel: u64,
    /// Events an output lost (its queue was full, or it failed).
    pub events_shed: u64,
    /// Every condition, joined: `component: reason; ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong, one entry per affected component.
    pub conditions: Vec<Condition>,
}

/// `/readyz` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    /// Every condition, joined: `component: reason; ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub conditions: Vec<Condition>,
}

/// The probe and reader conditions, then those of the health board.
fn conditions(s: &ApiState) -> Vec<Condition> {
    let mut all = Vec::new();
    if !s.attachment.is_attached() {
        all.push(Condition::now(
            "ebpf",
            Severity::Unhealthy,
            "a BPF program is no longer loaded",
        ));
    }
    if s.heartbeat.age() > s.stall_after {
        all.push(Condition::now(
            "ring_buffer_reader",
            Severity::Unhealthy,
            format!(
                "the ring-buffer reader has not run for {:?}",
                s.heartbeat.age()
            ),
        ));
    }
    all.extend(s.health.conditions());
    all
}

async fn healthz(State(ctx): State<Ctx>) -> Response {
    let s = &ctx.state;
    let kernel = s.kernel_stats.read().unwrap_or_default();
    let user = s.user_stats.snapshot();
    let conditions = conditions(s);
    let worst = health::worst(&conditions);
    let body = Health {
        status: match worst {
            None => "healthy",
            Some(Severity::Degraded) => "degraded",
            Some(Severity::Unhealthy) => "unhealthy",
        }
        .into(),
        ebpf_loaded: s.attachment.is_attached(),
        focus: "config_access".into(),
        ring_buffer_active: s.heartbeat.age() <= s.stall_after,
        events_processed: user.emitted,
        events_dropped_kernel: kernel.dropped_ringbuf,
        events_shed: s.outputs.iter().map(|o| o.lost()).sum(),
        reason: health::summary(&conditions),
        conditions,
    };
    let status = if worst == Some(Severity::Unhealthy) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(body)).into_response()
}

async fn readyz(State(ctx): State<Ctx>) -> Response {
    let mut conditions = conditions(&ctx.state);
    if ctx.state.pods.status() == MetadataStatus::Waiting {
        conditions.push(Condition::now(
            "kube",
            Severity::Degraded,
            "waiting for the first pod list",
        ));
    }
    let body = Ready {
        ready: conditions.is_empty(),
        reason: health::summary(&conditions),
        conditions,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A pod as the API returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PodView {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
    pub service_account: Option<String>,
    pub containers: Vec<ContainerView>,
}

/// A container of a pod.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub id: Option<String>,
}

/// A mount with its path hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MountEntry {
    /// blake3 of `mount.mount_path`, hex.
    pub path_hash: String,
    pub mount: MountInfo,
}

/// Printable ASCII: the strings stored in the kernel's fixed-size slots.
const ASCII: &str = "^[ -~]*$";
/// No control characters.
const TEXT: &str = "^[^\\u0000-\\u001f\\u007f]*$";
/// An absolute path without control characters.
const ABSOLUTE: &str = "^/[^\\u0000-\\u001f\\u007f]*$";

/// A whole number that fits `T`: JSON integers, and numbers with a zero
/// fraction such as `2368.0` (JSON Schema's `integer` allows them).
fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    let n = serde_json::Number::deserialize(d)?;
    whole_number(&n).ok_or_else(|| {
        D::Error::custom(format_args!(
            "{n} is not a whole number in range ({} bytes)",
            std::mem::size_of::<T>()
        ))
    })
}

/// `n` as a `T` when it is a whole number in `T`'s range.
fn whole_number<T: TryFrom<i128>>(n: &serde_json::Number) -> Option<T> {
    let wide = if let Some(u) = n.as_u64() {
        Some(i128::from(u))
    } else if let Some(i) = n.as_i64() {
        Some(i128::from(i))
    } else {
        n.as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e20)
            .map(|f| f as i128)
    };
    wide.and_then(|w| T::try_from(w).ok())
}

/// Body of `POST /v1/container-pids`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContainerPid {
    /// Process id in the host pid namespace.
    #[serde(deserialize_with = "whole")]
    #[schema(format = "uint32", minimum = 0, maximum = 4294967295_u64)]
    pub pid: u32,
}

/// Body of `POST /v1/pod-info`. The strings are printable ASCII and fit
/// the kernel map's slots.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPodInfo {
    /// cgroup v2 id.
    #[serde(deserialize_with = "whole")]
    #[schema(format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)]
    pub cgroup_id: u64,
    #[schema(max_length = 36, pattern = "^[ -~]*$")]
    pub pod_uid: String,
    #[schema(max_length = 63, pattern = "^[ -~]*$")]
    pub namespace: String,
    #[schema(max_length = 127, pattern = "^[ -~]*$")]
    pub pod_name: String,
    /// Unix seconds.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    pub created_at: i64,
}

/// Kubelet volume plugin of a posted mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeKind {
    Secret,
    Configmap,
    Projected,
    DownwardApi,
}

impl VolumeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Configmap => "configmap",
            Self::Projected => "projected",
            Self::DownwardApi => "downward-api",
        }
    }
}

/// Body of `POST /v1/mounts`: a `MountInfo`, validated. Strings hold no
/// control characters; lengths count characters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMount {
    /// Object name when known, else the pod's volume name.
    #[schema(max_length = 253, pattern = "^[^\\u0000-\\u001f\\u007f]*$")]
    pub name: String,
    /// Pod namespace; `null` when unknown.
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^[^\\u0000-\\u001f\\u007f]*$")]
    pub namespace: Option<String>,
    /// Host path of the volume directory (absolute).
    #[schema(max_length = 4096, pattern = "^/[^\\u0000-\\u001f\\u007f]*$")]
    pub mount_path: String,
    /// Whether the volume is a Secret volume.
    pub is_secret: bool,
    pub volume_type: VolumeKind,
    /// UID of the pod that mounts the volume.
    #[schema(max_length = 36, pattern = "^[^\\u0000-\\u001f\\u007f]*$")]
    pub pod_uid: String,
}

/// Refuses `value` unless it has at most `max` characters and matches
/// `pattern` (one of [`ASCII`], [`TEXT`], [`ABSOLUTE`]).
fn check_field(field: &str, value: &str, max: usize, pattern: &str) -> Result<(), Reject> {
    let bad = |why: String| Err(Reject(StatusCode::BAD_REQUEST, format!("{field} {why}")));
    let count = value.chars().count();
    if count > max {
        return bad(format!("is longer than {max} characters ({count})"));
    }
    let ok = match pattern {
        ASCII => value.bytes().all(|b| (b' '..=b'~').contains(&b)),
        ABSOLUTE if !value.starts_with('/') => return bad("must be an absolute path".into()),
        _ => !value.chars().any(|c| c.is_ascii_control()),
    };
    if !ok {
        let what = if pattern == ASCII {
            "printable ASCII characters"
        } else {
            "no control characters"
        };
        return bad(format!("must hold {what}"));
    }
    Ok(())
}

/// Answer of `POST /v1/mounts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PathHash {
    pub path_hash: String,
}

fn parse_id<T: TryFrom<i128>>(
    raw: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<T, Reject> {
    let Path(raw) = raw.map_err(|r| {
        Reject(
            StatusCode::BAD_REQUEST,
            format!("bad path parameter: {}", r.body_text()),
        )
    })?;
    serde_json::from_str::<serde_json::Number>(&raw)
        .ok()
        .and_then(|n| whole_number(&n))
        .ok_or_else(|| {
            Reject(
                StatusCode::BAD_REQUEST,
                format!("{what} must be a non-negative integer in range, got {raw:?}"),
            )
        })
}

#[utoipa::path(get, path = "/v1/pods/by-cgroup/{cgroup_id}",
    params(("cgroup_id" = u64, Path, description = "cgroup v2 id", format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)),
    responses((status = 200, body = PodInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pod_by_cgroup(
    State(ctx): State<Ctx>,
    raw: Result<Path<String>, PathRejection>,
) -> Response {
    ctx.state.correlation.ops.bump(CorrelationOp::PodByCgroup);
    let id: u64 = match parse_id(raw, "cgroup_id") {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match ctx.state.correlation.pod_by_cgroup(id) {
        Some(p) => Json(p).into_response(),
        None => not_found(format_args!("cgroup {id}")),
    }
}

/// The container of `pid`: the kernel map, else its cgroup.
fn container_of(ctx: &Ctx, pid: u32) -> Option<ContainerPid> {
    let s = &ctx.state;
    s.correlation.container_of_pid(pid).or_else(|| {
        let (cgroup_id, info) = s.cgroups.cgroup_of_pid(pid)?;
        Some(ContainerPid {
            cgroup_id,
            container_id: info.container_id.unwrap_or_default(),
        })
    })
}

#[utoipa::path(get, path = "/v1/pods/by-pid/{pid}",
    params(("pid" = u32, Path, description = "process id in the host pid namespace", format = "uint32", minimum = 0, maximum = 4294967295_u64)),
    responses((status = 200, body = PodInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pod_by_pid(State(ctx): State<Ctx>, raw: Result<Path<String>, PathRejection>) -> Response {
    ctx.state.correlation.ops.bump(CorrelationOp::PodByPid);
    let pid: u32 = match parse_id(raw, "pid") {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let s = &ctx.state;
    let found = container_of(&ctx, pid).and_then(|c| {
        s.correlation.pod_by_cgroup(c.cgroup_id).or_else(|| {
            let (_, info) = s.cgroups.cgroup_of_pid(pid)?;
            Some(crate::enrich::correlation::pod_info_for(
                &info.pod_uid?,
                &*s.pods,
                0,
            ))
        })
    });
    match found {
        Some(p) => Json(p).into_response(),
        None => not_found(format_args!("pod of pid {pid}")),
    }
}

#[utoipa::path(get, path = "/v1/pods/{uid}",
    params(("uid" = String, Path, description = "pod UID")),
    responses((status = 200, body = PodView), (status = 404, body = ErrorBody)))]
async fn pod_by_uid(State(ctx): State<Ctx>, raw: Result<Path<String>, PathRejection>) -> Response {
    ctx.state.correlation.ops.bump(CorrelationOp::PodByUid);
    let uid = match raw {
        Ok(Path(u)) => u,
        Err(r) => return path_error(r),
    };
    let Some(p) = ctx.state.pods.pod(&uid) else {
        return not_found(format_args!("pod {uid}"));
    };
    Json(PodView {
        uid: p.uid.to_string(),
        name: p.name.to_string(),
        namespace: p.namespace.to_string(),
        labels: p
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        workload_kind: p.workload.as_ref().map(|w| w.kind.to_string()),
        workload_name: p.workload.as_ref().map(|w| w.name.to_string()),
        service_account: p.service_account.as_deref().map(str::to_string),
        containers: p
            .containers
            .iter()
            .map(|c| ContainerView {
                name: c.name.to_string(),
                image: c.image.to_string(),
                id: c.id.as_deref().map(str::to_string),
            })
            .collect(),
    })
    .into_response()
}

#[utoipa::path(get, path = "/v1/containers/by-pid/{pid}",
    params(("pid" = u32, Path, description = "process id in the host pid namespace", format = "uint32", minimum = 0, maximum = 4294967295_u64)),
    responses((status = 200, body = ContainerPid), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn container_by_pid(
    State(ctx): State<Ctx>,
    raw: Result<Path<String>, PathRejection>,
) -> Response {
    ctx.state
        .correlation
        .ops
        .bump(CorrelationOp::ContainerByPid);
    let pid: u32 = match parse_id(raw, "pid") {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match container_of(&ctx, pid) {
        Some(c) => Json(c).into_response(),
        None => not_found(format_args!("process {pid}")),
    }
}

#[utoipa::path(get, path = "/v1/usage/unread", responses((status = 200, body = UnreadReport)))]
async fn usage_unread(State(ctx): State<Ctx>) -> Response {
    Json(ctx.state.usage.unread()).into_response()
}

#[utoipa::path(get, path = "/v1/usage/rotations", responses((status = 200, body = RotationReport)))]
async fn usage_rotations(State(ctx): State<Ctx>) -> Response {
    Json(ctx.state.usage.rotations()).into_response()
}

#[utoipa::path(get, path = "/v1/usage/startup-only", responses((status = 200, body = StartupOnlyReport)))]
async fn usage_startup_only(State(ctx): State<Ctx>) -> Response {
    Json(ctx.state.usage.startup_only()).into_response()
}

#[utoipa::path(get, path = "/v1/usage/report", responses((status = 200, body = UsageReport)))]
async fn usage_report(State(ctx): State<Ctx>) -> Response {
    Json(ctx.state.usage.report()).into_response()
}

#[utoipa::path(get, path = "/v1/usage/objects", responses((status = 200, body = [ObjectUsage])))]
async fn usage_objects(State(ctx): State<Ctx>) -> Response {
    Json(ctx.state.usage.objects()).into_response()
}

/// The kinds of objects `GET /v1/usage/objects/{namespace}/{kind}/{name}` answers for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
enum ObjectKind {
    Secret,
    ConfigMap,
}

#[utoipa::path(get, path = "/v1/usage/objects/{namespace}/{kind}/{name}",
    params(
        ("namespace" = String, Path, description = "the object's namespace"),
        ("kind" = ObjectKind, Path, description = "`Secret` or `ConfigMap` (any case)"),
        ("name" = String, Path, description = "the object's name")),
    responses((status = 200, body = BlastRadius), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn usage_of_object(
    State(ctx): State<Ctx>,
    raw: Result<Path<(String, String, String)>, PathRejection>,
) -> Response {
    let (namespace, kind, name) = match raw {
        Ok(Path(p)) => p,
        Err(r) => return path_error(r),
    };
    let kind = match kind.to_ascii_lowercase().as_str() {
        "secret" | "secrets" => SourceKind::Secret,
        "configmap" | "configmaps" => SourceKind::ConfigMap,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("kind must be Secret or ConfigMap, got {kind:?}"),
            )
        }
    };
    ctx.state
        .usage
        .blast_radii()
        .into_iter()
        .find(|b| b.usage.namespace == namespace && b.usage.kind == kind && b.usage.name == name)
        .map_or_else(
            || {
                not_found(format_args!(
                    "{kind:?} {namespace}/{name} mounted on this node"
                ))
            },
            |b| Json(b).into_response(),
        )
}

#[utoipa::path(get, path = "/v1/baseline", responses((status = 200, body = [WorkloadBaseline])))]
async fn baselines(State(ctx): State<Ctx>) -> Response {
    Json(ctx.state.usage.baseline().list()).into_response()
}

/// The workload a baseline path names.
fn workload_id(
    raw: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<WorkloadId, PathRejection> {
    let Path((namespace, kind, name)) = raw?;
    Ok(WorkloadId {
        namespace,
        kind,
        name,
    })
}

#[utoipa::path(get, path = "/v1/baseline/{namespace}/{kind}/{name}",
    params(
        ("namespace" = String, Path, description = "the workload's namespace"),
        ("kind" = String, Path, description = "its owner kind (`Deployment`, ...; `Pod` for a bare pod)"),
        ("name" = String, Path, description = "its name")),
    responses((status = 200, body = WorkloadBaselineDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn baseline_of(
    State(ctx): State<Ctx>,
    raw: Result<Path<(String, String, String)>, PathRejection>,
) -> Response {
    let id = match workload_id(raw) {
        Ok(id) => id,
        Err(r) => return path_error(r),
    };
    match ctx.state.usage.baseline().get(&id) {
        Some(b) => Json(b).into_response(),
        None => not_found(format_args!(
            "baseline of {}/{} {}",
            id.namespace, id.kind, id.name
        )),
    }
}

#[utoipa::path(delete, path = "/v1/baseline/{namespace}/{kind}/{name}",
    params(
        ("namespace" = String, Path, description = "the workload's namespace"),
        ("kind" = String, Path, description = "its owner kind"),
        ("name" = String, Path, description = "its name")),
    security(("bearer" = [])),
    responses((status = 204, description = "forgotten: its next access starts a new learning window"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reset_baseline(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    raw: Result<Path<(String, String, String)>, PathRejection>,
) -> Response {
    if let Some(reject) = refuse_write(&ctx, &headers) {
        return reject.into_response();
    }
    let id = match workload_id(raw) {
        Ok(id) => id,
        Err(r) => return path_error(r),
    };
    if ctx.state.usage.baseline().reset(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(format_args!(
            "baseline of {}/{} {}",
            id.namespace, id.kind, id.name
        ))
    }
}

#[utoipa::path(get, path = "/v1/usage/pods/{uid}",
    params(("uid" = String, Path, description = "pod UID")),
    responses((status = 200, body = [KeyReport]), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn usage_of_pod(
    State(ctx): State<Ctx>,
    raw: Result<Path<String>, PathRejection>,
) -> Response {
    let uid = match raw {
        Ok(Path(u)) => u,
        Err(r) => return path_error(r),
    };
    let keys = ctx.state.usage.pod(&uid);
    if keys.is_empty() && !ctx.state.usage.watches_pod(&uid) {
        return not_found(format_args!("watched volumes of pod {uid}"));
    }
    Json(keys).into_response()
}

#[utoipa::path(get, path = "/v1/mounts", responses((status = 200, body = [MountEntry])))]
async fn mounts(State(ctx): State<Ctx>) -> Response {
    let all: Vec<MountEntry> = ctx
        .state
        .correlation
        .mounts()
        .into_iter()
        .map(|(path_hash, mount)| MountEntry { path_hash, mount })
        .collect();
    Json(all).into_response()
}

#[utoipa::path(get, path = "/v1/mounts/{path_hash}",
    params(("path_hash" = String, Path, description = "blake3 of the mount path, hex")),
    responses((status = 200, body = MountInfo), (status = 404, body = ErrorBody)))]
async fn mount_by_hash(
    State(ctx): State<Ctx>,
    raw: Result<Path<String>, PathRejection>,
) -> Response {
    ctx.state.correlation.ops.bump(CorrelationOp::MountLookup);
    let hash = match raw {
        Ok(Path(h)) => h,
        Err(r) => return path_error(r),
    };
    match ctx.state.correlation.mount_info(&hash) {
        Some(m) => Json(m).into_response(),
        None => not_found(format_args!("mount {hash}")),
    }
}

#[utoipa::path(post, path = "/v1/container-pids", request_body = AddContainerPid,
    security(("bearer" = [])),
    responses((status = 201, body = ContainerPid), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn add_container_pid(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Result<Json<AddContainerPid>, JsonRejection>,
) -> Response {
    let req = match accept_write(&ctx, &headers, body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    ctx.state
        .correlation
        .ops
        .bump(CorrelationOp::AddContainerPid);
    match ctx
        .state
        .correlation
        .add_container_pid(req.pid, &ctx.state.cgroups)
    {
        Ok(c) => (StatusCode::CREATED, Json(c)).into_response(),
        Err(CorrelationError::NoProcess(p)) => not_found(format_args!("process {p}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::logging::chain(&e)),
    }
}

#[utoipa::path(post, path = "/v1/pod-info", request_body = AddPodInfo,
    security(("bearer" = [])),
    responses((status = 201, body = PodInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "the kernel's pod_info_map table is full"),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn add_pod_info(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Result<Json<AddPodInfo>, JsonRejection>,
) -> Response {
    let req = match accept_write(&ctx, &headers, body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    ctx.state.correlation.ops.bump(CorrelationOp::AddPodInfo);
    let checks = check_field("pod_uid", &req.pod_uid, 36, ASCII)
        .and_then(|()| check_field("namespace", &req.namespace, 63, ASCII))
        .and_then(|()| check_field("pod_name", &req.pod_name, 127, ASCII));
    if let Err(r) = checks {
        return r.into_response();
    }
    if req.created_at < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "created_at must be a Unix time in seconds, not negative",
        );
    }
    let info = PodInfo {
        pod_uid: req.pod_uid,
        namespace: req.namespace,
        pod_name: req.pod_name,
        created_at: req.created_at,
    };
    match ctx
        .state
        .correlation
        .add_pod_info(req.cgroup_id, info.clone())
    {
        Ok(()) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e @ CorrelationError::Full { .. }) => error(
            StatusCode::CONFLICT,
            format!("{e}; entries leave when their cgroup is gone"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::logging::chain(&e)),
    }
}

#[utoipa::path(post, path = "/v1/mounts", request_body = AddMount,
    security(("bearer" = [])),
    responses((status = 201, body = PathHash), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "api_max_mounts mounts were posted already"),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn add_mount(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Result<Json<AddMount>, JsonRejection>,
) -> Response {
    let m = match accept_write(&ctx, &headers, body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    ctx.state.correlation.ops.bump(CorrelationOp::AddMountInfo);
    let checks = check_field("mount_path", &m.mount_path, 4096, ABSOLUTE)
        .and_then(|()| check_field("name", &m.name, 253, TEXT))
        .and_then(|()| match &m.namespace {
            Some(ns) => check_field("namespace", ns, 63, TEXT),
            None => Ok(()),
        })
        .and_then(|()| check_field("pod_uid", &m.pod_uid, 36, TEXT));
    if let Err(r) = checks {
        return r.into_response();
    }
    let hash = crate::model::volume::path_hash(FsPath::new(&m.mount_path));
    let info = MountInfo {
        name: m.name,
        namespace: m.namespace,
        mount_path: m.mount_path,
        is_secret: m.is_secret,
        volume_type: m.volume_type.as_str().to_string(),
        pod_uid: m.pod_uid,
    };
    match ctx
        .state
        .correlation
        .post_mount_info(&hash, info, ctx.max_mounts)
    {
        Ok(()) => (StatusCode::CREATED, Json(PathHash { path_hash: hash })).into_response(),
        Err(full) => error(
            StatusCode::CONFLICT,
            format!("{full}; DELETE /v1/mounts/{{path_hash}} frees an entry"),
        ),
    }
}

#[utoipa::path(delete, path = "/v1/mounts/{path_hash}",
    params(("path_hash" = String, Path, description = "blake3 of the mount path, hex")),
    security(("bearer" = [])),
    responses((status = 204, description = "the posted mount is gone"), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the mount is a watched volume's, not a posted one")))]
async fn delete_mount(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    raw: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(refusal) = refuse_write(&ctx, &headers) {
        return refusal.into_response();
    }
    let hash = match raw {
        Ok(Path(h)) => h,
        Err(r) => return path_error(r),
    };
    match ctx.state.correlation.remove_posted_mount(&hash) {
        RemovedMount::Removed(_) => StatusCode::NO_CONTENT.into_response(),
        RemovedMount::Watched => error(
            StatusCode::CONFLICT,
            "this mount is a watched volume's; it leaves when the volume does",
        ),
        RemovedMount::Missing => not_found(format_args!("mount {hash}")),
    }
}

/// The bearer token of TCP writes.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The token of api_token_file, needed for writes on the TCP listener (api_listen). \
                 The Unix socket takes writes without it: its file mode is the access control.",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The correlation API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "config-access-collector correlation API",
        version = "1",
        description = "Pod and container attribution, and the Service endpoint map, for sibling collectors. Writes are accepted on the Unix socket, and on TCP with a bearer token."
    ),
    paths(
        pod_by_cgroup,
        pod_by_pid,
        pod_by_uid,
        container_by_pid,
        mounts,
        mount_by_hash,
        add_container_pid,
        add_pod_info,
        add_mount,
        delete_mount,
        usage_unread,
        usage_of_pod,
        usage_rotations,
        usage_startup_only,
        usage_report,
        usage_objects,
        usage_of_object,
        baselines,
        baseline_of,
        reset_baseline,
        services::by_endpoint,
        services::by_pod
    ),
    modifiers(&BearerAuth),
    components(schemas(
        ErrorBody,
        PodInfo,
        ContainerPid,
        MountInfo,
        PodView,
        ContainerView,
        MountEntry,
        AddContainerPid,
        AddPodInfo,
        AddMount,
        VolumeKind,
        PathHash,
        UnreadReport,
        UnreadMount,
        UnreadKey,
        Evidence,
        EvidenceStatus,
        KeyReport,
        FileKey,
        KeyUsage,
        Reader,
        RotationReport,
        RotatedVolume,
        RotatedReader,
        Rotation,
        StartupOnlyReport,
        StartupOnlyRead,
        UsageReport,
        ObjectUsage,
        BlastRadius,
        ObjectMount,
        ObjectKind,
        WorkloadBaseline,
        WorkloadBaselineDetail,
        WorkloadId,
        BaselineEntry,
        ServiceEndpoint,
        ServiceTarget,
        BackingPod,
        PodServices,
        PodEndpoint,
        Protocol,
        Role
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
        .into_response()
}

async fn fallback_404() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn fallback_405() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

fn api_router(ctx: Ctx) -> Router {
    let services = services::router(ctx.state.services.clone());
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/pods/by-cgroup/{cgroup_id}", get(pod_by_cgroup))
        .route("/v1/pods/by-pid/{pid}", get(pod_by_pid))
        .route("/v1/pods/{uid}", get(pod_by_uid))
        .route("/v1/containers/by-pid/{pid}", get(container_by_pid))
        .route("/v1/mounts", get(mounts).post(add_mount))
        .route(
            "/v1/mounts/{path_hash}",
            get(mount_by_hash).delete(delete_mount),
        )
        .route("/v1/container-pids", post(add_container_pid))
        .route("/v1/pod-info", post(add_pod_info))
        .route("/v1/usage/unread", get(usage_unread))
        .route("/v1/usage/pods/{uid}", get(usage_of_pod))
        .route("/v1/usage/rotations", get(usage_rotations))
        .route("/v1/usage/startup-only", get(usage_startup_only))
        .route("/v1/usage/report", get(usage_report))
        .route("/v1/usage/objects", get(usage_objects))
        .route(
            "/v1/usage/objects/{namespace}/{kind}/{name}",
            get(usage_of_object),
        )
        .route("/v1/baseline", get(baselines))
        .route(
            "/v1/baseline/{namespace}/{kind}/{name}",
            get(baseline_of).delete(reset_baseline),
        )
        .fallback(fallback_404)
        .method_not_allowed_fallback(fallback_405)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
        .merge(services)
}

/// `GET /metrics`: every metric in the Prometheus text format.
async fn prometheus_metrics(State(ctx): State<Ctx>) -> Response {
    use prometheus::Encoder as _;
    let Some(registry) = &ctx.state.registry else {
        return not_found("metrics");
    };
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            [(axum::http::header::CONTENT_TYPE, encoder.format_type())],
            body,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn metrics_router(ctx: Ctx) -> Router {
    Router::new()
        .route("/metrics", get(prometheus_metrics))
        .fallback(fallback_404)
        .method_not_allowed_fallback(fallback_405)
        .with_state(ctx)
}

fn health_router(ctx: Ctx) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(fallback_404)
        .method_not_allowed_fallback(fallback_405)
        .with_state(ctx)
}

/// Where the servers listen.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// Health probes (`None`: off).
    pub health: Option<SocketAddr>,
    /// Correlation API on a Unix socket, with the socket file's mode.
    pub socket: Option<(PathBuf, u32)>,
    /// Correlation API on TCP, and the file holding the write token.
    pub tcp: Option<(SocketAddr, Option<PathBuf>)>,
    /// Prometheus `/metrics` (`None`: off).
    pub metrics: Option<SocketAddr>,
    /// Connection budgets, timeouts and the mount bound.
    pub limits: Limits,
}

/// The running servers.
#[derive(Debug)]
pub struct ApiServer {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    /// Bound health address (useful with port 0).
    pub health_addr: Option<SocketAddr>,
    /// Bound TCP API address.
    pub tcp_addr: Option<SocketAddr>,
    /// Bound `/metrics` address.
    pub metrics_addr: Option<SocketAddr>,
    socket: Option<listen::OwnedSocket>,
    stats: Arc<ListenerStats>,
}

fn listen_err(addr: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ApiError {
    move |source| ApiError::Listen {
        addr: addr.to_string(),
        source,
    }
}

/// Binds a TCP listener; returns it with the address it got.
async fn bind_tcp(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, Option<SocketAddr>), ApiError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen_err(addr))?;
    let local = l.local_addr().ok();
    Ok((l, local))
}

/// The write token of the TCP listener, read from its file.
fn read_token(listeners: &Listeners) -> Result<Option<Arc<str>>, ApiError> {
    let Some((_, Some(path))) = &listeners.tcp else {
        return Ok(None);
    };
    let t = std::fs::read_to_string(path).map_err(|source| ApiError::Token {
        path: path.clone(),
        source,
    })?;
    if t.trim().is_empty() {
        return Err(ApiError::EmptyToken { path: path.clone() });
    }
    Ok(Some(Arc::<str>::from(t.trim())))
}

/// What every listener's accept loop shares.
struct Binder {
    state: Arc<ApiState>,
    limits: Limits,
    stats: Arc<ListenerStats>,
    stop: tokio::sync::watch::Receiver<bool>,
}

type Accepting = tokio::task::JoinHandle<()>;

impl Binder {
    fn ctx(&self, writes: Writes) -> Ctx {
        Ctx {
            state: Arc::clone(&self.state),
            writes,
            max_mounts: self.limits.api_max_mounts,
        }
    }

    fn serve<L: listen::Accept>(
        &self,
        listener: L,
        kind: ListenerKind,
        app: Router,
        budget: usize,
    ) -> Accepting {
        tokio::spawn(listen::accept_loop(
            listener,
            listen::Serving {
                kind,
                app,
                budget,
                timeout: self.limits.http_timeout,
                stats: Arc::clone(&self.stats),
                stop: self.stop.clone(),
            },
        ))
    }

    /// Binds every configured listener (so errors surface before serving)
    /// and starts their accept loops.
    async fn bind_all(
        &self,
        server: &mut ApiServer,
        listeners: &Listeners,
        token: Option<Arc<str>>,
    ) -> Result<Vec<Accepting>, ApiError> {
        let (health, api) = (
            self.limits.health_max_connections,
            self.limits.api_max_connections,
        );
        let mut tasks = Vec::new();
        if let Some(addr) = listeners.health {
            let (l, local) = bind_tcp(addr).await?;
            server.health_addr = local;
            let app = health_router(self.ctx(Writes::Denied));
            tasks.push(self.serve(l, ListenerKind::Health, app, health));
        }
        if let Some(addr) = listeners.metrics {
            let (l, local) = bind_tcp(addr).await?;
            server.metrics_addr = local;
            let app = metrics_router(self.ctx(Writes::Denied));
            tasks.push(self.serve(l, ListenerKind::Metrics, app, health));
        }
        if let Some((path, mode)) = &listeners.socket {
            let (l, owned) = listen::OwnedSocket::bind(path, *mode)?;
            server.socket = Some(owned);
            let app = api_router(self.ctx(Writes::Allowed));
            tasks.push(self.serve(l, ListenerKind::ApiSocket, app, api));
        }
        if let Some((addr, _)) = &listeners.tcp {
            let (l, local) = bind_tcp(*addr).await?;
            server.tcp_addr = local;
            let writes = token.map(Writes::Token).unwrap_or(Writes::Denied);
            let app = api_router(self.ctx(writes));
            tasks.push(self.serve(l, ListenerKind::ApiTcp, app, api));
        }
        Ok(tasks)
    }
}

impl ApiServer {
    /// Binds every listener (so errors surface here), then serves on a thread.
    pub fn start(listeners: &Listeners, state: Arc<ApiState>) -> Result<Self, ApiError> {
        Self::start_with_stats(listeners, state, Arc::default())
    }

    /// [`start`](Self::start), counting connections in `stats` (the metrics
    /// read them).
    pub fn start_with_stats(
        listeners: &Listeners,
        state: Arc<ApiState>,
        stats: Arc<ListenerStats>,
    ) -> Result<Self, ApiError> {
        let token = read_token(listeners)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("api-server")
            .enable_all()
            .build()
            .map_err(ApiError::Runtime)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut server = Self {
            stop: Some(stop_tx),
            thread: None,
            health_addr: None,
            tcp_addr: None,
            metrics_addr: None,
            socket: None,
            stats: Arc::clone(&stats),
        };
        let binder = Binder {
            state,
            limits: listeners.limits,
            stats,
            stop: stop_rx,
        };
        let tasks = runtime.block_on(binder.bind_all(&mut server, listeners, token))?;
        server.thread = Some(
            std::thread::Builder::new()
                .name("api-server".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        for t in tasks {
                            let _ = t.await;
                        }
                    });
                })
                .map_err(ApiError::Thread)?,
        );
        Ok(server)
    }

    /// Connection counters of the listeners.
    pub fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.stats)
    }

    /// Stops accepting, gives open requests a moment to finish, closes the
    /// connections, and removes the socket file if it is still ours.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.socket.take();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
