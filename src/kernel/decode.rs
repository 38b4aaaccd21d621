//! Event decoding: the one place where raw bytes from the kernel become typed values.
//!
//! Ring-buffer records are copied at once into owned [`KernelEvent`]s; map keys
//! and values are turned into bytes here too. The ABI structs come from the
//! skeleton's BTF ([`super::abi`]), never from hand-written Rust declarations;
//! their `Pod` impls (the one `unsafe` of the decoding) live there too.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::abi::types::{
    cac_cgroup_class, cac_cgroup_key, cac_container_pid, cac_dir_key, cac_endpoint_key,
    cac_endpoint_role, cac_event, cac_event_kind, cac_failed_key, cac_failed_repeat, cac_limits,
    cac_pod_info, cac_repeat, cac_repeat_key, cac_sample, cac_service_endpoint, cac_session,
    cac_syscall,
};
use crate::model::correlation::{ContainerPid, PodInfo};
use crate::model::volume::FileId;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The record's length does not match its header (or is out of bounds).
    #[error("ring-buffer record of {got} bytes, expected {want}")]
    Size { got: usize, want: usize },
    /// A field holds a value the ABI does not define.
    #[error("unknown {field} value {value}")]
    Unknown { field: &'static str, value: u32 },
}

/// Why the kernel emitted an event (`enum cac_event_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A regular file inside a watched volume directory was opened.
    VolumeOpen,
    /// An open failed on a path naming the kubelet volume tree.
    VolumePathFailed,
    /// An open failed with EACCES or EPERM; user space resolves the path.
    Denied,
}

/// Where the opening process stands in its container's process tree (`enum cac_session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Session {
    /// Not decided (a host process, a deep pid namespace, a long parent chain).
    #[default]
    Unknown,
    /// The container's init process or a descendant of it.
    Init,
    /// A process that entered the container from outside (`runc exec`), or its descendant.
    Exec,
}

/// The session of an ABI value; an unknown value is not decided.
fn session_of(value: u8) -> Session {
    match u32::from(value) {
        v if v == cac_session::CAC_SESSION_INIT.0 => Session::Init,
        v if v == cac_session::CAC_SESSION_EXEC.0 => Session::Exec,
        _ => Session::Unknown,
    }
}

/// The open-family syscall of an event (`enum cac_syscall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    Openat,
    Openat2,
    Open,
    Creat,
    OpenByHandleAt,
    /// IORING_OP_OPENAT or IORING_OP_OPENAT2, at its completion.
    IoUring,
}

impl Syscall {
    /// The syscall's name.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Openat => "openat",
            Syscall::Openat2 => "openat2",
            Syscall::Open => "open",
            Syscall::Creat => "creat",
            Syscall::OpenByHandleAt => "open_by_handle_at",
            Syscall::IoUring => "io_uring",
        }
    }
}

/// Opens of one file by one process that the kernel counted instead of
/// emitting (`repeats`): a summary event stands for `count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    /// Opens this summary stands for (none of them reported before).
    pub count: u64,
    /// CLOCK_MONOTONIC nanoseconds after which they happened: the open that
    /// began their window, or the previous summary of the same key.
    pub since_ns: u64,
}

/// A decoded, owned ring-buffer record, or a summary of repeated opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    pub kind: EventKind,
    pub syscall: Syscall,
    /// CLOCK_MONOTONIC nanoseconds at syscall exit.
    pub ts_ns: u64,
    pub cgroup_id: u64,
    /// 0 when no cgroup v1 hierarchy is used.
    pub cgroup_v1_id: u64,
    /// cgroup v2 id of the parent of the task's cgroup (0: none, or a summary).
    pub cgroup_parent_id: u64,
    /// Name of the task's cgroup v2 directory (`None` on summaries): with
    /// the parent, it places a cgroup deleted before user space looked.
    pub cgroup_name: Option<String>,
    /// The opened file; `None` for failed opens.
    pub file: Option<FileId>,
    /// The matched volume (id given by user space, directory identity).
    pub volume: Option<(u32, FileId)>,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mnt_ns: u32,
    /// The fd on success, `-errno` on failure.
    pub ret: i32,
    /// Directory fd argument; `None` for syscalls without one.
    pub dirfd: Option<i32>,
    pub open_flags: u32,
    /// `FMODE_*` bits of the opened file (0 on failure).
    pub fmode: u32,
    /// Levels between the file and its volume directory.
    pub depth: u8,
    /// The opening process in its container's process tree.
    pub session: Session,
    pub comm: String,
    /// Path argument as passed (`None` when the syscall has none or it could not be read).
    pub path: Option<PathBuf>,
    /// Name of the opened file's dentry.
    pub name: Option<String>,
    /// Set on a summary of repeated opens (then `ts_ns` is the latest of them).
    pub repeats: Option<Repeats>,
}

/// The syscall of an ABI value (`enum cac_syscall`).
fn syscall_of(value: u32) -> Result<Syscall, DecodeError> {
    Ok(match value {
        s if s == cac_syscall::CAC_SYS_OPENAT.0 => Syscall::Openat,
        s if s == cac_syscall::CAC_SYS_OPENAT2.0 => Syscall::Openat2,
        s if s == cac_syscall::CAC_SYS_OPEN.0 => Syscall::Open,
        s if s == cac_syscall::CAC_SYS_CREAT.0 => Syscall::Creat,
        s if s == cac_syscall::CAC_SYS_OPEN_BY_HANDLE_AT.0 => Syscall::OpenByHandleAt,
        s if s == cac_syscall::CAC_SYS_IO_URING.0 => Syscall::IoUring,
        value => {
            return Err(DecodeError::Unknown {
                field: "syscall",
                value,
            })
        }
    })
}

/// Bytes up to the first NUL (or all of them), bounded by `len` when non-zero.
fn c_bytes(raw: &[i8], len: u16) -> &[u8] {
    let bytes: &[u8] = bytemuck::cast_slice(raw);
    let bytes = if len > 0 {
        &bytes[..usize::from(len).min(bytes.len())]
    } else {
        bytes
    };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Bytes of a record before its strings: the shortest record.
const EVENT_HEADER: usize = std::mem::offset_of!(cac_event, strings);

/// Decodes one ring-buffer record (variable-length: the header, then the
/// path and name bytes it counts).
pub fn decode_event(record: &[u8]) -> Result<KernelEvent, DecodeError> {
    let full = std::mem::size_of::<cac_event>();
    if record.len() < EVENT_HEADER || record.len() > full {
        return Err(DecodeError::Size {
            got: record.len(),
            want: EVENT_HEADER,
        });
    }
    let mut raw: cac_event = bytemuck::Zeroable::zeroed();
    bytemuck::bytes_of_mut(&mut raw)[..record.len()].copy_from_slice(record);
    let (path_len, name_len) = (usize::from(raw.path_len), usize::from(raw.name_len));
    let cgroup_name_len = usize::from(raw.cgroup_name_len);
    for (field, len, max) in [
        ("path_len", raw.path_len, cac_limits::CAC_PATH_LEN.0),
        ("name_len", raw.name_len, cac_limits::CAC_NAME_LEN.0),
        (
            "cgroup_name_len",
            raw.cgroup_name_len,
            cac_limits::CAC_CGROUP_NAME_LEN.0,
        ),
    ] {
        if i32::from(len) > max {
            return Err(DecodeError::Unknown {
                field,
                value: u32::from(len),
            });
        }
    }
    let want = EVENT_HEADER + path_len + name_len + cgroup_name_len;
    if want != record.len() {
        return Err(DecodeError::Size {
            got: record.len(),
            want,
        });
    }
    let kind = kind_of(u32::from(raw.kind))?;
    let syscall = syscall_of(u32::from(raw.syscall))?;
    let (path_bytes, rest) = raw.strings.split_at(path_len);
    let (name_bytes, cgroup_bytes) = rest.split_at(name_len);
    let path = path_of(path_bytes, raw.path_len);
    let text = |bytes: &[i8], len: u16| {
        (len > 0).then(|| String::from_utf8_lossy(c_bytes(bytes, len)).into_owned())
    };
    let name = text(name_bytes, raw.name_len);
    let cgroup_name = text(cgroup_bytes, raw.cgroup_name_len).filter(|n| !n.is_empty());
    let opened = kind == EventKind::VolumeOpen;
    Ok(KernelEvent {
        kind,
        syscall,
        ts_ns: raw.ts_ns,
        cgroup_id: raw.cgroup_id,
        cgroup_v1_id: raw.cgroup_v1_id,
        cgroup_parent_id: raw.cgroup_parent_id,
        cgroup_name,
        file: opened.then_some(FileId {
            dev: raw.file_dev,
            ino: raw.file_ino,
        }),
        volume: opened.then_some((
            raw.volume_id,
            FileId {
                dev: raw.file_dev,
                ino: raw.vol_ino,
            },
        )),
        tgid: raw.tgid,
        tid: raw.tid,
        uid: raw.uid,
        gid: raw.gid,
        mnt_ns: raw.mnt_ns,
        ret: raw.ret,
        dirfd: dirfd_of(raw.dirfd),
        open_flags: raw.open_flags,
        fmode: raw.fmode,
        depth: raw.depth,
        session: session_of(raw.session),
        comm: String::from_utf8_lossy(c_bytes(&raw.comm, 0)).into_owned(),
        path,
        name,
        repeats: None,
    })
}

/// The event kind of an ABI value.
fn kind_of(value: u32) -> Result<EventKind, DecodeError> {
    match value {
        k if k == cac_event_kind::CAC_KIND_VOLUME_OPEN.0 => Ok(EventKind::VolumeOpen),
        k if k == cac_event_kind::CAC_KIND_VOLUME_PATH_FAILED.0 => Ok(EventKind::VolumePathFailed),
        k if k == cac_event_kind::CAC_KIND_DENIED.0 => Ok(EventKind::Denied),
        value => Err(DecodeError::Unknown {
            field: "kind",
            value,
        }),
    }
}

/// The path argument in `bytes` (`len` bytes with the NUL; 0: not read).
fn path_of(bytes: &[i8], len: u16) -> Option<PathBuf> {
    (len > 0).then(|| PathBuf::from(OsStr::from_bytes(c_bytes(bytes, len))))
}

/// A dirfd argument, unless the syscall had none.
fn dirfd_of(raw: i32) -> Option<i32> {
    (raw != cac_limits::CAC_NO_DIRFD.0).then_some(raw)
}

/// Decodes a `failed_repeats` entry (key and value) into a summary of
/// `repeats` failed opens like the key's first emitted one: its kind,
/// error, dirfd and path argument, which user space resolves as it did the
/// first one's.
pub fn decode_failed_repeat(key: &[u8], value: &[u8], repeats: Repeats) -> Option<KernelEvent> {
    let k: cac_failed_key = bytemuck::try_pod_read_unaligned(key).ok()?;
    let v: cac_failed_repeat = bytemuck::try_pod_read_unaligned(value).ok()?;
    let head = v.head;
    Some(KernelEvent {
        kind: kind_of(u32::from(v.kind)).ok()?,
        syscall: syscall_of(u32::from(head.syscall)).ok()?,
        ts_ns: head.last_ns.max(repeats.since_ns),
        cgroup_id: head.cgroup_id,
        cgroup_v1_id: head.cgroup_v1_id,
        cgroup_parent_id: 0,
        cgroup_name: None,
        file: None,
        volume: None,
        tgid: k.tgid,
        tid: head.tid,
        uid: head.uid,
        gid: head.gid,
        mnt_ns: head.mnt_ns,
        ret: v.ret,
        dirfd: dirfd_of(v.dirfd),
        open_flags: head.open_flags,
        fmode: 0,
        depth: 0,
        session: session_of(head.session),
        comm: String::from_utf8_lossy(c_bytes(&head.comm, 0)).into_owned(),
        path: path_of(&v.path, v.path_len),
        name: None,
        repeats: Some(repeats),
    })
}

/// Decodes a `repeats` entry (key and value) into a summary of `repeats`
/// opens of its file, the latest at `last_ns`. The summary has the fields
/// of the key's first emitted open but no path argument (repeats of one
/// file may use different paths) and no fd.
pub fn decode_repeat(key: &[u8], value: &[u8], repeats: Repeats) -> Option<KernelEvent> {
    let k: cac_repeat_key = bytemuck::try_pod_read_unaligned(key).ok()?;
    let v: cac_repeat = bytemuck::try_pod_read_unaligned(value).ok()?;
    let syscall = syscall_of(u32::from(v.syscall)).ok()?;
    Some(KernelEvent {
        kind: EventKind::VolumeOpen,
        syscall,
        ts_ns: v.last_ns.max(repeats.since_ns),
        cgroup_id: v.cgroup_id,
        cgroup_v1_id: v.cgroup_v1_id,
        cgroup_parent_id: 0,
        cgroup_name: None,
        file: Some(FileId {
            dev: k.dev,
            ino: k.ino,
        }),
        volume: Some((
            v.volume_id,
            FileId {
                dev: k.dev,
                ino: v.vol_ino,
            },
        )),
        tgid: k.tgid,
        tid: v.tid,
        uid: v.uid,
        gid: v.gid,
        mnt_ns: v.mnt_ns,
        ret: 0,
        dirfd: None,
        open_flags: v.open_flags,
        fmode: v.fmode,
        depth: v.depth,
        session: session_of(v.session),
        comm: get_c_str(&v.comm),
        path: None,
        name: None,
        repeats: Some(repeats),
    })
}

/// The times and count of a `repeats` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatCounts {
    /// CLOCK_MONOTONIC ns of the key's first emitted open.
    pub first_ns: u64,
    /// CLOCK_MONOTONIC ns of the latest open: emitted or counted.
    pub latest_ns: u64,
    /// Opens counted (never reset).
    pub count: u64,
}

/// Decodes the times and count of a `repeats` value (a `failed_repeats`
/// value begins with one, so its counts decode too).
pub fn repeat_counts(value: &[u8]) -> Option<RepeatCounts> {
    let head = value.get(..std::mem::size_of::<cac_repeat>())?;
    let v: cac_repeat = bytemuck::try_pod_read_unaligned(head).ok()?;
    Some(RepeatCounts {
        first_ns: v.first_ns,
        latest_ns: v.window_ns.max(v.last_ns),
        count: v.count,
    })
}

/// Key bytes of `watched_dirs` for a directory.
pub fn dir_key(dir: FileId) -> cac_dir_key {
    cac_dir_key {
        ino: dir.ino,
        dev: dir.dev,
        _pad: 0,
    }
}

/// Bytes of a plain ABI value, for map updates.
pub fn bytes_of<T: bytemuck::Pod>(value: &T) -> &[u8] {
    bytemuck::bytes_of(value)
}

/// Decodes a `pid_samples` value.
pub fn decode_sample(bytes: &[u8]) -> Option<cac_sample> {
    bytemuck::try_pod_read_unaligned(bytes).ok()
}

/// Copies `s` into a fixed C string field, truncated to leave the NUL.
fn put_c_str(dst: &mut [i8], s: &str) {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
    bytes.fill(0);
    let n = s.len().min(bytes.len().saturating_sub(1));
    bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_c_str(src: &[i8]) -> String {
    String::from_utf8_lossy(c_bytes(src, 0)).into_owned()
}

/// Encodes a `pod_info` value.
pub fn encode_pod_info(info: &PodInfo) -> cac_pod_info {
    let mut raw: cac_pod_info = bytemuck::Zeroable::zeroed();
    put_c_str(&mut raw.pod_uid, &info.pod_uid);
    put_c_str(&mut raw.namespace, &info.namespace);
    put_c_str(&mut raw.pod_name, &info.pod_name);
    raw.created_at = u64::try_from(info.created_at).unwrap_or(0);
    raw
}

/// Decodes a `pod_info` value.
pub fn decode_pod_info(bytes: &[u8]) -> Option<PodInfo> {
    let raw: cac_pod_info = bytemuck::try_pod_read_unaligned(bytes).ok()?;
    Some(PodInfo {
        pod_uid: get_c_str(&raw.pod_uid),
        namespace: get_c_str(&raw.namespace),
        pod_name: get_c_str(&raw.pod_name),
        created_at: i64::try_from(raw.created_at).unwrap_or(i64::MAX),
    })
}

/// Encodes a `container_pids` value.
pub fn encode_container_pid(c: &ContainerPid) -> cac_container_pid {
    let mut raw: cac_container_pid = bytemuck::Zeroable::zeroed();
    raw.cgroup_id = c.cgroup_id;
    put_c_str(&mut raw.container_id, &c.container_id);
    raw
}

/// An address of the cluster as `svc_endpoints` keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointAddr {
    /// An IPv4 address is keyed as its IPv4-mapped IPv6 form.
    pub ip: std::net::IpAddr,
    pub port: u16,
    /// IANA protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
}

/// What `svc_endpoints` holds for an address (strings longer than their
/// fields, which Kubernetes names never are, are truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceEndpoint<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    /// Empty for a Service's only, unnamed port.
    pub port_name: &'a str,
    /// Empty for a cluster IP, or an endpoint that names no pod.
    pub pod_uid: &'a str,
    /// An endpoint (a backend), not a cluster IP.
    pub backend: bool,
}

/// Encodes a `svc_endpoints` key: the address in network byte order, IPv4
/// as `::ffff:a.b.c.d`, and the port in network byte order.
pub fn endpoint_key(addr: EndpointAddr) -> cac_endpoint_key {
    let v6 = match addr.ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    cac_endpoint_key {
        addr: v6.octets(),
        port: u16::from_ne_bytes(addr.port.to_be_bytes()),
        protocol: addr.protocol,
        _pad: 0,
    }
}

/// Decodes a `svc_endpoints` key (an IPv4-mapped address as IPv4).
pub fn decode_endpoint_key(bytes: &[u8]) -> Option<EndpointAddr> {
    let raw: cac_endpoint_key = bytemuck::try_pod_read_unaligned(bytes).ok()?;
    Some(EndpointAddr {
        ip: std::net::Ipv6Addr::from(raw.addr).to_canonical(),
        port: u16::from_be_bytes(raw.port.to_ne_bytes()),
        protocol: raw.protocol,
    })
}

/// Encodes a `svc_endpoints` value.
pub fn encode_service_endpoint(e: &ServiceEndpoint<'_>) -> cac_service_endpoint {
    let mut raw: cac_service_endpoint = bytemuck::Zeroable::zeroed();
    put_c_str(&mut raw.namespace, e.namespace);
    put_c_str(&mut raw.service, e.service);
    put_c_str(&mut raw.port_name, e.port_name);
    put_c_str(&mut raw.pod_uid, e.pod_uid);
    let role = match e.backend {
        true => cac_endpoint_role::CAC_ENDPOINT_BACKEND,
        false => cac_endpoint_role::CAC_ENDPOINT_CLUSTER_IP,
    };
    raw.role = u8::try_from(role.0).unwrap_or(0);
    raw
}

/// Words of each open-path filter (`CAC_FILTER_BITS / 64`).
pub const FILTER_WORDS: usize = FILTER_BITS as usize / 64;
const FILTER_BITS: u32 = cac_limits::CAC_FILTER_BITS.0 as u32;

/// The `dev_filter` bit of a device (kernel encoding), as the header defines it.
pub fn dev_bit(dev: u32) -> u32 {
    (dev ^ (dev >> 20)) % FILTER_BITS
}

/// The `dir_filter` bit of a directory, as the header defines it.
pub fn dir_bit(dir: FileId) -> u32 {
    ((dir.ino ^ (dir.ino >> 32)) as u32 ^ dir.dev) % FILTER_BITS
}

/// The `cgroup_classes` key of a process's cgroup ids.
pub fn cgroup_key(cgroup_id: u64, cgroup_v1_id: u64) -> cac_cgroup_key {
    cac_cgroup_key {
        cgroup_id,
        cgroup_v1_id,
    }
}

/// Decodes a `cgroup_classes` key into (v2 id, v1 id).
pub fn decode_cgroup_key(bytes: &[u8]) -> Option<(u64, u64)> {
    let raw: cac_cgroup_key = bytemuck::try_pod_read_unaligned(bytes).ok()?;
    Some((raw.cgroup_id, raw.cgroup_v1_id))
}

/// Encodes a `cgroup_classes` value: `Some` container for a pod's
/// container cgroup, `None` for a cgroup outside every pod.
pub fn encode_cgroup_class(container: Option<&ContainerPid>) -> cac_cgroup_class {
    let mut raw: cac_cgroup_class = bytemuck::Zeroable::zeroed();
    if let Some(c) = container {
        raw.in_pod = 1;
        raw.container = encode_container_pid(c);
    }
    raw
}

/// Decodes a `container_pids` value.
pub fn decode_container_pid(bytes: &[u8]) -> Option<ContainerPid> {
    let raw: cac_container_pid = bytemuck::try_pod_read_unaligned(bytes).ok()?;
    Some(ContainerPid {
        cgroup_id: raw.cgroup_id,
        container_id: get_c_str(&raw.container_id),
    })
}

/// Decodes a per-CPU `u64` counter value.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the kernel sends it: cut after its strings.
    fn record(edit: impl FnOnce(&mut cac_event)) -> Vec<u8> {
        let mut ev: cac_event = bytemuck::Zeroable::zeroed();
        ev.kind = 1;
        ev.syscall = 1;
        edit(&mut ev);
        let len = EVENT_HEADER
            + usize::from(ev.path_len)
            + usize::from(ev.name_len)
            + usize::from(ev.cgroup_name_len);
        bytemuck::bytes_of(&ev)[..len].to_vec()
    }

    fn put(dst: &mut [i8], s: &[u8]) {
        for (d, s) in dst.iter_mut().zip(s) {
            *d = *s as i8;
        }
    }

    #[test]
    fn endpoint_keys_are_in_network_byte_order_and_ipv4_is_mapped() {
        let v4 = EndpointAddr {
            ip: "10.96.0.10".parse().unwrap(),
            port: 443,
            protocol: 6,
        };
        let bytes = bytes_of(&endpoint_key(v4)).to_vec();
        let mut want = vec![0u8; 10];
        want.extend([0xff, 0xff, 10, 96, 0, 10, 0x01, 0xbb, 6, 0]);
        assert_eq!(bytes, want);
        assert_eq!(decode_endpoint_key(&bytes), Some(v4));

        let v6 = EndpointAddr {
            ip: "fd00::1:2".parse().unwrap(),
            port: 53,
            protocol: 17,
        };
        let bytes = bytes_of(&endpoint_key(v6)).to_vec();
        assert_eq!(&bytes[..2], &[0xfd, 0]);
        assert_eq!(&bytes[14..], &[0, 2, 0, 53, 17, 0]);
        assert_eq!(decode_endpoint_key(&bytes), Some(v6));
        assert_eq!(decode_endpoint_key(&bytes[1..]), None);
    }

    #[test]
    fn service_endpoint_values_are_nul_terminated_and_carry_the_role() {
        let raw = encode_service_endpoint(&ServiceEndpoint {
            namespace: "kube-system",
            service: "kube-dns",
            port_name: "dns-tcp",
            pod_uid: "",
            backend: false,
        });
        assert_eq!(c_bytes(&raw.namespace, 0), b"kube-system");
        assert_eq!(c_bytes(&raw.service, 0), b"kube-dns");
        assert_eq!(c_bytes(&raw.port_name, 0), b"dns-tcp");
        assert_eq!(c_bytes(&raw.pod_uid, 0), b"");
        assert_eq!(
            u32::from(raw.role),
            cac_endpoint_role::CAC_ENDPOINT_CLUSTER_IP.0
        );
        // A name longer than its field keeps its NUL.
        let long = "p".repeat(40);
        let raw = encode_service_endpoint(&ServiceEndpoint {
            namespace: "a",
            service: "b",
            port_name: &long,
            pod_uid: "0f9a",
            backend: true,
        });
        assert_eq!(c_bytes(&raw.port_name, 0).len(), 15);
        assert_eq!(raw.port_name[15], 0);
        assert_eq!(
            u32::from(raw.role),
            cac_endpoint_role::CAC_ENDPOINT_BACKEND.0
        );
    }

    #[test]
    fn decodes_strings_and_ids() {
        let bytes = record(|ev| {
            ev.file_dev = 0x0fe0_0001;
            ev.file_ino = 42;
            ev.vol_ino = 7;
            ev.volume_id = 3;
            ev.dirfd = -100;
            for (d, s) in ev.comm.iter_mut().zip(b"cat\0") {
                *d = *s as i8;
            }
            put(&mut ev.strings, b"/etc/db/password\0password\0c0ffee\0");
            ev.path_len = 17;
            ev.name_len = 9;
            ev.cgroup_name_len = 7;
            ev.cgroup_parent_id = 99;
        });
        assert_eq!(bytes.len(), EVENT_HEADER + 33, "a short record");
        let ev = decode_event(&bytes).unwrap();
        assert_eq!(ev.cgroup_name.as_deref(), Some("c0ffee"));
        assert_eq!(ev.cgroup_parent_id, 99);
        assert_eq!(ev.kind, EventKind::VolumeOpen);
        assert_eq!(ev.syscall, Syscall::Openat);
        assert_eq!(ev.comm, "cat");
        assert_eq!(
            ev.path.as_deref(),
            Some(std::path::Path::new("/etc/db/password"))
        );
        assert_eq!(ev.name.as_deref(), Some("password"));
        assert_eq!(ev.dirfd, Some(-100));
        assert_eq!(
            ev.volume,
            Some((
                3,
                FileId {
                    dev: 0x0fe0_0001,
                    ino: 7
                }
            ))
        );
        assert_eq!(
            ev.file,
            Some(FileId {
                dev: 0x0fe0_0001,
                ino: 42
            })
        );
    }

    #[test]
    fn failed_repeats_decode_to_summaries_with_the_first_opens_path() {
        let mut key: cac_failed_key = bytemuck::Zeroable::zeroed();
        key.tgid = 42;
        key.path_hash = 0xfeed;
        key.dirfd = -100;
        key.ret = -13;
        let mut v: cac_failed_repeat = bytemuck::Zeroable::zeroed();
        v.head.first_ns = 100;
        v.head.last_ns = 180;
        v.head.count = 7;
        v.head.uid = 65534;
        v.head.syscall = cac_syscall::CAC_SYS_OPENAT.0 as u8;
        v.ret = -13;
        v.dirfd = -100;
        v.kind = cac_event_kind::CAC_KIND_DENIED.0 as u8;
        put(&mut v.path, b"/etc/db/api-key\0stale bytes");
        v.path_len = 16;
        let (key, value) = (bytes_of(&key), bytes_of(&v));
        let repeats = Repeats {
            count: 7,
            since_ns: 100,
        };
        let ev = decode_failed_repeat(key, value, repeats).expect("decodes");
        assert_eq!(
            (ev.kind, ev.ret, ev.dirfd),
            (EventKind::Denied, -13, Some(-100))
        );
        assert_eq!(
            ev.path.as_deref(),
            Some(std::path::Path::new("/etc/db/api-key"))
        );
        assert_eq!((ev.tgid, ev.uid, ev.ts_ns), (42, 65534, 180));
        assert_eq!(
            (ev.file, ev.volume, ev.repeats),
            (None, None, Some(repeats))
        );
        let counts = repeat_counts(value).expect("the head's counts");
        assert_eq!((counts.first_ns, counts.count), (100, 7));
        assert!(decode_failed_repeat(key, &value[1..], repeats).is_none());
    }

    #[test]
    fn record_lengths_must_match_their_header() {
        // A failed open without a path: the header alone.
        let header = record(|ev| ev.kind = 3);
        assert_eq!(header.len(), EVENT_HEADER);
        let ev = decode_event(&header).unwrap();
        assert_eq!((ev.path, ev.name), (None, None));
        // Lengths that promise more (or fewer) bytes than the record has.
        let mut raw: cac_event = bytemuck::Zeroable::zeroed();
        (raw.kind, raw.syscall, raw.path_len) = (1, 1, 200);
        let short = &bytemuck::bytes_of(&raw)[..EVENT_HEADER + 3];
        assert!(
            matches!(decode_event(short), Err(DecodeError::Size { got, want })
            if got == EVENT_HEADER + 3 && want == EVENT_HEADER + 200)
        );
        assert!(decode_event(&header[..EVENT_HEADER - 1]).is_err());
        assert!(decode_event(&vec![0u8; std::mem::size_of::<cac_event>() + 1]).is_err());
        // No input length or content panics.
        for len in 0..=std::mem::size_of::<cac_event>() + 8 {
            let _ = decode_event(&vec![0xa5u8; len]);
        }
    }

    #[test]
    fn correlation_values_round_trip_and_truncate() {
        let info = PodInfo {
            pod_uid: "u".repeat(36),
            namespace: "ns".into(),
            pod_name: "p".repeat(300),
            created_at: 17,
        };
        let back = decode_pod_info(bytes_of(&encode_pod_info(&info))).unwrap();
        assert_eq!(back.pod_uid, info.pod_uid);
        assert_eq!(back.pod_name.len(), 127, "truncated, NUL kept");
        assert_eq!((back.namespace.as_str(), back.created_at), ("ns", 17));
        let c = ContainerPid {
            cgroup_id: 9,
            container_id: "a".repeat(64),
        };
        assert_eq!(
            decode_container_pid(bytes_of(&encode_container_pid(&c))),
            Some(c)
        );
        assert_eq!(decode_pod_info(&[1, 2, 3]), None);
    }

    #[test]
    fn rejects_bad_records() {
        assert!(matches!(
            decode_event(&[0u8; 10]),
            Err(DecodeError::Size { .. })
        ));
        let bad_kind = record(|ev| ev.kind = 99);
        assert!(matches!(
            decode_event(&bad_kind),
            Err(DecodeError::Unknown {
                field: "kind",
                value: 99
            })
        ));
        let no_dirfd = record(|ev| ev.dirfd = -1000);
        assert_eq!(decode_event(&no_dirfd).unwrap().dirfd, None);
    }

    #[test]
    fn unterminated_strings_stay_in_bounds() {
        let bytes = record(|ev| {
            put(&mut ev.strings, &[b'a'; 256]);
            ev.path_len = 256;
            ev.comm = [b'b' as i8; 16];
        });
        let ev = decode_event(&bytes).unwrap();
        assert_eq!(ev.path.unwrap().as_os_str().len(), 256);
        assert_eq!(ev.comm.len(), 16);
        // A path longer than the kernel ever writes is refused, not read.
        let too_long = record(|ev| ev.path_len = 300);
        assert!(matches!(
            decode_event(&too_long),
            Err(DecodeError::Unknown {
                field: "path_len",
                value: 300
            })
        ));
    }
}
