//! The listeners' accept loops, with the limits that keep a flood of slow
//! or idle peers from taking the collector down:
//!
//! * a connection budget per listener (a semaphore): a connection over it is
//!   closed at once and counted, so the health listener, with a budget of its
//!   own, answers while the API is flooded;
//! * one HTTP timeout for reading a request's headers (hyper's header read
//!   timer, which also runs while a keep-alive connection sits idle), for a
//!   read or a write that makes no progress (a stalled body or a peer that
//!   does not read its answer), and for a whole request (408);
//! * request heads of at most [`MAX_HEAD`] bytes (431 beyond);
//! * a lingering close: when a request ends with its body unread (a 413),
//!   the answer is sent, our side is shut down for writing, and what the
//!   client still sends is read and discarded (at most [`LINGER_BYTES`] or
//!   [`LINGER_TIME`]) before the socket closes, so a client that writes its
//!   whole body before reading (Python's `http.client`) gets the answer
//!   instead of a reset;
//! * the Unix socket file: a stale socket is replaced, any other file is
//!   refused, and at stop the socket is removed only while it is the one this
//!   process created.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::model::stats::{ListenerKind, ListenerStats};

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most bytes read and discarded after an answer that left a body unread.
pub const LINGER_BYTES: usize = 8 << 20;
/// Longest time spent discarding a body after its answer.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How long a stop waits for open requests to finish before closing them.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two warnings of one listener about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Limits of the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connection budget of each correlation API listener.
    pub api_max_connections: usize,
    /// Connection budget of the health listener, and of the metrics listener.
    pub health_max_connections: usize,
    /// Header read, idle, stalled read or write, and whole-request timeout.
    pub http_timeout: Duration,
    /// Most mounts posted through the API.
    pub api_max_mounts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            api_max_connections: 256,
            health_max_connections: 32,
            http_timeout: Duration::from_secs(10),
            api_max_mounts: 4096,
        }
    }
}

/// Errors about the Unix socket file.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("api_socket {path} exists and is {kind}, not a socket; refusing to replace it (remove it or set api_socket to another path)")]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("api_socket {path} is served by another running process")]
    InUse { path: PathBuf },
    #[error("api_socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a socket"
    }
}

/// The Unix socket file this process created (device and inode), removed at
/// drop only while it is still that file.
#[derive(Debug)]
pub struct OwnedSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedSocket {
    /// Binds `path` with file mode `mode`, replacing a stale socket; refuses
    /// any other kind of file and a socket another process answers on.
    pub fn bind(
        path: &Path,
        mode: u32,
    ) -> Result<(tokio::net::UnixListener, Self), SocketFileError> {
        let io_err = |source| SocketFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(SocketFileError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                tracing::info!(path = %path.display(), "replacing a stale API socket");
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Ok(m) => {
                return Err(SocketFileError::NotASocket {
                    path: path.to_path_buf(),
                    kind: kind_of(m.file_type()),
                })
            }
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        let owned = Self {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
        Ok((listener, owned))
    }
}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "removing the API socket");
                }
            }
            Ok(_) => tracing::warn!(
                path = %self.path.display(),
                "the API socket was replaced by another file; leaving it"
            ),
            Err(_) => {}
        }
    }
}

/// Raises the soft limit of open files to the hard limit (each connection
/// holds a descriptor); returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur)
}

/// A listener that yields streams.
pub(crate) trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        let (s, _) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_io(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// A stream whose reads and writes fail with `TimedOut` once they have
/// waited `timeout` without progress.
struct TimedIo<S> {
    inner: S,
    timeout: Duration,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl<S> TimedIo<S> {
    /// `Ready(TimedOut)` once the wait in `slot` is over; starts it if needed.
    fn expired(
        slot: &mut Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        flag: &AtomicBool,
        cx: &mut Context<'_>,
        what: &str,
    ) -> Poll<io::Error> {
        let wait = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                flag.store(true, Ordering::Relaxed);
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} made no progress for {timeout:?}"),
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read_wait = None;
                Poll::Ready(r)
            }
            Poll::Pending => Self::expired(
                &mut this.read_wait,
                this.timeout,
                &this.timed_out,
                cx,
                "reading",
            )
            .map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> TimedIo<S> {
    fn after_write(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(r) => {
                self.write_wait = None;
                // An answer going out is progress: the idle wait for the next
                // request starts after it.
                self.read_wait = None;
                Poll::Ready(r)
            }
            Poll::Pending => Self::expired(
                &mut self.write_wait,
                self.timeout,
                &self.timed_out,
                cx,
                "writing",
            )
            .map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What every connection of a listener shares.
#[derive(Clone)]
pub(crate) struct Serving {
    pub kind: ListenerKind,
    pub app: Router,
    pub budget: usize,
    pub timeout: Duration,
    pub stats: Arc<ListenerStats>,
    pub stop: watch::Receiver<bool>,
}

/// Counts the connection open while it lives.
struct OpenGuard(Arc<ListenerStats>, ListenerKind);

impl OpenGuard {
    fn new(stats: &Arc<ListenerStats>, kind: ListenerKind) -> Self {
        stats.get(kind).open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats), kind)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.get(self.1).open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request that takes longer than the timeout, body read included, is
/// answered 408.
async fn request_deadline(
    timeout: Duration,
    stats: Arc<ListenerStats>,
    kind: ListenerKind,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            stats.get(kind).timeouts.fetch_add(1, Ordering::Relaxed);
            let body = super::ErrorBody {
                error: format!("the request took longer than http_timeout_ms ({timeout:?})"),
            };
            (
                StatusCode::REQUEST_TIMEOUT,
                [(axum::http::header::CONNECTION, "close")],
                axum::Json(body),
            )
                .into_response()
        }
    }
}

/// Accepts connections until the stop signal, within the budget; then waits
/// a moment for open requests and closes what is left.
pub(crate) async fn accept_loop<L: Accept>(listener: L, s: Serving) {
    let counters = s.stats.get(s.kind);
    counters.enabled.store(true, Ordering::Relaxed);
    let budget = Arc::new(Semaphore::new(s.budget));
    let app = {
        let (timeout, stats, kind) = (s.timeout, Arc::clone(&s.stats), s.kind);
        s.app
            .clone()
            .layer(axum::middleware::from_fn(move |req, next| {
                request_deadline(timeout, Arc::clone(&stats), kind, req, next)
            }))
    };
    let mut conns = JoinSet::new();
    let mut stop = s.stop.clone();
    let mut last_warn: Option<Instant> = None;
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept_io() => a,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) => {
                // Out of descriptors (EMFILE) or an aborted handshake: pause
                // so a full table does not spin the loop.
                tracing::debug!(listener = s.kind.name(), error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&budget).try_acquire_owned() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(io);
            if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                last_warn = Some(Instant::now());
                tracing::warn!(
                    listener = s.kind.name(),
                    budget = s.budget,
                    "connection budget used up; closing new connections (kernel_monitor_api_connections_refused_total counts them)"
                );
            }
            continue;
        };
        let conn = serve_connection(io, app.clone(), s.clone());
        conns.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.shutdown().await;
}

/// Serves one connection, then closes it (lingering when a body was left unread).
async fn serve_connection<S>(io: S, app: Router, s: Serving)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = OpenGuard::new(&s.stats, s.kind);
    let timed_out = Arc::new(AtomicBool::new(false));
    let io = TimedIo {
        inner: io,
        timeout: s.timeout,
        read_wait: None,
        write_wait: None,
        timed_out: Arc::clone(&timed_out),
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(s.timeout)
        .max_buf_size(MAX_HEAD.max(8192))
        .max_header_size(MAX_HEAD)
        .keep_alive(true);
    let mut conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut stop = s.stop.clone();
    let mut stop = Box::pin(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let mut stopping = false;
    let result = std::future::poll_fn(|cx| {
        if !stopping && stop.as_mut().poll(cx).is_ready() {
            stopping = true;
            Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    let counters = s.stats.get(s.kind);
    // A read that timed out can also end the connection "cleanly" (hyper
    // treats a failed read between requests as the peer going away).
    let timed_out = timed_out.load(Ordering::Relaxed);
    match result {
        Err(e) if e.is_timeout() => {
            counters.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = s.kind.name(), error = %e, "connection timed out");
        }
        _ if timed_out => {
            counters.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = s.kind.name(), "connection timed out");
        }
        Err(e) => tracing::debug!(listener = s.kind.name(), error = %e, "connection failed"),
        Ok(()) if stopping => {}
        Ok(()) => {
            let mut io = conn.into_parts().io.into_inner().inner;
            linger(&mut io).await;
        }
    }
}

/// Shuts our side down and discards what the peer still sends (bounded), so
/// that closing does not reset the connection before the peer read our answer.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
