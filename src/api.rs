//! HTTP servers: health probes on their own port, and the versioned
//! correlation API for sibling collectors.
//!
//! The correlation API listens on a Unix socket (writes allowed: the socket's
//! file mode is the access control) and optionally on TCP, where reads are
//! open and writes need `Authorization: Bearer <token>` with the token read
//! from a file (no token file: no writes over TCP). Every error is a JSON
//! body `{"error": "..."}` with a 4xx status; bodies are capped at
//! [`MAX_BODY`]. The OpenAPI document is generated from the handlers
//! (utoipa) and served at `/v1/openapi.json`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::cgroup::CgroupResolver;
use crate::correlation::{ContainerPid, CorrelationMaps, CorrelationOp, MountInfo, PodInfo};
use crate::pipeline::UserStats;
use crate::pods::PodStore;
use crate::probe::{Attachment, StatsReader};

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
    #[error("the API token file {path} is empty (every TCP write would be refused)")]
    EmptyToken { path: PathBuf },
}

/// The reader thread's liveness, in milliseconds since the collector started.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// Records that the reader is alive.
    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
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
    pub pods: Option<Arc<PodStore>>,
    pub correlation: Arc<CorrelationMaps>,
    pub cgroups: Arc<CgroupResolver>,
    /// Metrics served at `/metrics` (Prometheus text format), when enabled.
    pub registry: Option<prometheus::Registry>,
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
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub ebpf_loaded: bool,
    /// Always `config_access`.
    pub focus: String,
    pub ring_buffer_active: bool,
    /// Events emitted so far.
    pub events_processed: u64,
    /// Events lost in the kernel (ring buffer full).
    pub events_dropped_kernel: u64,
    /// Events shed because the output queue was full.
    pub events_shed: u64,
    /// Why the collector is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

async fn healthz(State(ctx): State<Ctx>) -> Response {
    let s = &ctx.state;
    let kernel = s.kernel_stats.read().unwrap_or_default();
    let user = s.user_stats.snapshot();
    let loaded = s.attachment.is_attached();
    let reader_ok = s.heartbeat.age() <= s.stall_after;
    let reason = match (loaded, reader_ok) {
        (false, _) => Some("a BPF program is no longer loaded".to_string()),
        (true, false) => Some(format!(
            "the ring-buffer reader has not run for {:?}",
            s.heartbeat.age()
        )),
        _ => None,
    };
    let body = Health {
        status: if reason.is_none() {
            "healthy"
        } else {
            "unhealthy"
        }
        .into(),
        ebpf_loaded: loaded,
        focus: "config_access".into(),
        ring_buffer_active: reader_ok,
        events_processed: user.emitted,
        events_dropped_kernel: kernel.dropped_ringbuf,
        events_shed: user.shed,
        reason,
    };
    let status = if body.reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn readyz(State(ctx): State<Ctx>) -> Response {
    let waiting = match &ctx.state.pods {
        Some(p) if !p.synced() && !p.standalone() => Some("waiting for the first pod list"),
        _ => None,
    };
    match waiting {
        None => (StatusCode::OK, Json(serde_json::json!({"ready": true}))).into_response(),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": r})),
        )
            .into_response(),
    }
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

/// Body of `POST /v1/container-pids`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContainerPid {
    pub pid: u32,
}

/// Body of `POST /v1/pod-info`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPodInfo {
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub info: PodInfo,
}

/// Answer of `POST /v1/mounts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PathHash {
    pub path_hash: String,
}

fn parse_id<T: std::str::FromStr>(
    raw: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<T, Reject> {
    let Path(raw) = raw.map_err(|r| {
        Reject(
            StatusCode::BAD_REQUEST,
            format!("bad path parameter: {}", r.body_text()),
        )
    })?;
    raw.parse().map_err(|_| {
        Reject(
            StatusCode::BAD_REQUEST,
            format!("{what} must be a non-negative integer, got {raw:?}"),
        )
    })
}

#[utoipa::path(get, path = "/v1/pods/by-cgroup/{cgroup_id}",
    params(("cgroup_id" = u64, Path, description = "cgroup v2 id")),
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
    params(("pid" = u32, Path, description = "process id in the host pid namespace")),
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
            Some(crate::correlation::pod_info_for(
                &info.pod_uid?,
                s.pods.as_deref(),
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
    let Some(p) = ctx.state.pods.as_ref().and_then(|s| s.get(&uid)) else {
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
    params(("pid" = u32, Path, description = "process id in the host pid namespace")),
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
    responses((status = 201, body = ContainerPid), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
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
        Err(crate::correlation::CorrelationError::NoProcess(p)) => {
            not_found(format_args!("process {p}"))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::logging::chain(&e)),
    }
}

/// Checks a field's length against its kernel-map slot.
fn check_len(field: &str, value: &str, max: usize) -> Result<(), Reject> {
    if value.len() > max {
        return Err(Reject(
            StatusCode::BAD_REQUEST,
            format!("{field} is longer than {max} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(Reject(
            StatusCode::BAD_REQUEST,
            format!("{field} contains a NUL byte"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/pod-info", request_body = AddPodInfo,
    responses((status = 201, body = PodInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
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
    let i = &req.info;
    let checks = check_len("pod_uid", &i.pod_uid, 36)
        .and_then(|()| check_len("namespace", &i.namespace, 63))
        .and_then(|()| check_len("pod_name", &i.pod_name, 127));
    if let Err(r) = checks {
        return r.into_response();
    }
    if i.created_at < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "created_at must be a Unix time in seconds, not negative",
        );
    }
    match ctx
        .state
        .correlation
        .add_pod_info(req.cgroup_id, req.info.clone())
    {
        Ok(()) => (StatusCode::CREATED, Json(req.info)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::logging::chain(&e)),
    }
}

#[utoipa::path(post, path = "/v1/mounts", request_body = MountInfo,
    responses((status = 201, body = PathHash), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn add_mount(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Result<Json<MountInfo>, JsonRejection>,
) -> Response {
    let m = match accept_write(&ctx, &headers, body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    ctx.state.correlation.ops.bump(CorrelationOp::AddMountInfo);
    if !m.mount_path.starts_with('/') {
        return error(
            StatusCode::BAD_REQUEST,
            "mount_path must be an absolute path",
        );
    }
    let hash = crate::volumes::path_hash(FsPath::new(&m.mount_path));
    ctx.state.correlation.add_mount_info(&hash, m);
    (StatusCode::CREATED, Json(PathHash { path_hash: hash })).into_response()
}

/// The correlation API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "config-access-collector correlation API",
        version = "1",
        description = "Pod and container attribution for sibling collectors. Writes are accepted on the Unix socket, and on TCP with a bearer token."
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
        add_mount
    ),
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
        PathHash
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
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/pods/by-cgroup/{cgroup_id}", get(pod_by_cgroup))
        .route("/v1/pods/by-pid/{pid}", get(pod_by_pid))
        .route("/v1/pods/{uid}", get(pod_by_uid))
        .route("/v1/containers/by-pid/{pid}", get(container_by_pid))
        .route("/v1/mounts", get(mounts).post(add_mount))
        .route("/v1/mounts/{path_hash}", get(mount_by_hash))
        .route("/v1/container-pids", post(add_container_pid))
        .route("/v1/pod-info", post(add_pod_info))
        .fallback(fallback_404)
        .method_not_allowed_fallback(fallback_405)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
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
    socket: Option<PathBuf>,
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

impl ApiServer {
    /// Binds every listener (so errors surface here), then serves on a thread.
    pub fn start(listeners: &Listeners, state: Arc<ApiState>) -> Result<Self, ApiError> {
        let token = match &listeners.tcp {
            Some((_, Some(path))) => {
                let t = std::fs::read_to_string(path).map_err(|source| ApiError::Token {
                    path: path.clone(),
                    source,
                })?;
                if t.trim().is_empty() {
                    return Err(ApiError::EmptyToken { path: path.clone() });
                }
                Some(Arc::<str>::from(t.trim()))
            }
            _ => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("api-server")
            .enable_all()
            .build()
            .map_err(listen_err("runtime"))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shutdown = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut server = Self {
            stop: Some(stop_tx),
            thread: None,
            health_addr: None,
            tcp_addr: None,
            metrics_addr: None,
            socket: None,
        };
        let mut tasks = Vec::new();
        let ctx = |writes| Ctx {
            state: Arc::clone(&state),
            writes,
        };
        let serve_tcp = |l: tokio::net::TcpListener, app: Router| {
            tokio::spawn(
                axum::serve(l, app)
                    .with_graceful_shutdown(shutdown())
                    .into_future(),
            )
        };
        runtime.block_on(async {
            if let Some(addr) = listeners.health {
                let (l, local) = bind_tcp(addr).await?;
                server.health_addr = local;
                tasks.push(serve_tcp(l, health_router(ctx(Writes::Denied))));
            }
            if let Some(addr) = listeners.metrics {
                let (l, local) = bind_tcp(addr).await?;
                server.metrics_addr = local;
                tasks.push(serve_tcp(l, metrics_router(ctx(Writes::Denied))));
            }
            if let Some((path, mode)) = &listeners.socket {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(listen_err(path.display()))?;
                }
                let _ = std::fs::remove_file(path);
                let l = tokio::net::UnixListener::bind(path).map_err(listen_err(path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                    .map_err(listen_err(path.display()))?;
                server.socket = Some(path.clone());
                let app = api_router(ctx(Writes::Allowed));
                tasks.push(tokio::spawn(
                    axum::serve(l, app)
                        .with_graceful_shutdown(shutdown())
                        .into_future(),
                ));
            }
            if let Some((addr, _)) = &listeners.tcp {
                let (l, local) = bind_tcp(*addr).await?;
                server.tcp_addr = local;
                let writes = token.clone().map(Writes::Token).unwrap_or(Writes::Denied);
                tasks.push(serve_tcp(l, api_router(ctx(writes))));
            }
            Ok::<(), ApiError>(())
        })?;
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
                .map_err(listen_err("api-server thread"))?,
        );
        Ok(server)
    }

    /// Stops accepting, finishes open requests, and removes the socket file.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
