//! cgroup resolution: cgroup id -> cgroup path -> pod UID, QoS class and container.
//!
//! cgroup2 ids are the inodes of the cgroup directories, so an id is resolved
//! by walking the cgroup2 mount once and remembering every directory's inode
//! (a bounded cache, rebuilt on a miss at most every [`REWALK_INTERVAL`], which
//! also forgets deleted cgroups). The path is then parsed for the kubelet's
//! naming schemes: the systemd driver
//! (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`)
//! and the cgroupfs driver (`kubepods/burstable/pod<uid>/<id>`), with
//! containerd, CRI-O and Docker container scopes.
//!
//! On nodes whose containers live only in cgroup v1 hierarchies the cgroup2
//! id is the root; events also carry the kernfs id of the task's cgroup in one
//! v1 hierarchy, resolved the same way on that hierarchy. The kernel needs
//! that hierarchy's subsystem index, which is its row in `/proc/cgroups`.

use std::collections::HashMap;
use std::os::unix::fs::DirEntryExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Shortest time between two walks of a hierarchy triggered by misses.
pub const REWALK_INTERVAL: Duration = Duration::from_millis(250);
/// Most cgroup directories remembered per hierarchy.
pub const MAX_CGROUPS: usize = 65_536;

/// Kubernetes QoS class of a pod, from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Container runtime named by a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A bare container id (cgroupfs driver): the runtime is not in the path.
    Unknown,
}

/// What a cgroup path says about its processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupInfo {
    /// Path relative to the hierarchy's mount, starting with `/`.
    pub path: String,
    /// UID of the pod; `None` for host processes.
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    /// Full container id (64 hex digits); `None` for the pod's own cgroup or a host process.
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
}

impl CgroupInfo {
    /// A host process (no pod).
    pub fn is_host(&self) -> bool {
        self.pod_uid.is_none()
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID (with dashes) from a path segment holding `pod<uid>`.
fn pod_uid_in(segment: &str) -> Option<String> {
    segment.match_indices("pod").find_map(|(at, _)| {
        let uid: String = segment[at + 3..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-' || *c == '_')
            .collect();
        let dashes = uid.chars().filter(|c| *c == '-' || *c == '_').count();
        (uid.len() == 36 && dashes == 4).then(|| uid.replace('_', "-"))
    })
}

/// Container id and runtime from the last path segment.
fn container_in(segment: &str) -> Option<(String, Runtime)> {
    // systemd driver inside a service, e.g. "kubepods-...slice:cri-containerd:<id>".
    let mut parts = segment.rsplit(':');
    if let (Some(id), Some(prefix)) = (parts.next(), parts.next()) {
        if is_hex64(id) {
            let rt = match prefix {
                "cri-containerd" => Runtime::Containerd,
                "crio" => Runtime::CriO,
                "docker" => Runtime::Docker,
                _ => Runtime::Unknown,
            };
            return Some((id.to_string(), rt));
        }
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    for (prefix, rt) in [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ] {
        if let Some(id) = name.strip_prefix(prefix) {
            return is_hex64(id).then(|| (id.to_string(), rt));
        }
    }
    is_hex64(name).then(|| (name.to_string(), Runtime::Unknown))
}

/// Parses a cgroup path (relative to its hierarchy's mount).
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut info = CgroupInfo {
        path: format!("/{}", segments.join("/")),
        pod_uid: None,
        qos: None,
        container_id: None,
        runtime: None,
    };
    let Some(pod_at) = segments.iter().position(|s| {
        s.contains("pod")
            && pod_uid_in(s).is_some()
            && (s.contains("kubepods") || s.starts_with("pod"))
    }) else {
        return info;
    };
    info.pod_uid = pod_uid_in(segments[pod_at]);
    let qos_words = segments[..=pod_at]
        .iter()
        .flat_map(|s| s.split(['-', '.', ':']));
    info.qos = Some(qos_words.fold(QosClass::Guaranteed, |q, w| match w {
        "burstable" => QosClass::Burstable,
        "besteffort" => QosClass::BestEffort,
        _ => q,
    }));
    let last = segments.last().copied().unwrap_or_default();
    // The container is the segment after the pod's, or (systemd driver nested
    // in a service) the pod segment itself with a ":runtime:id" suffix.
    let container = if segments.len() > pod_at + 1 {
        container_in(last)
    } else {
        container_in(segments[pod_at])
    };
    if let Some((id, rt)) = container {
        info.container_id = Some(id);
        info.runtime = Some(rt);
    }
    info
}

/// The path of the v1 hierarchy that holds `controller`, in `/proc/<pid>/cgroup` text
/// (lines `N:controller,...:/path`).
fn v1_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls.split(',').any(|c| c == controller).then_some(path)
    })
}

/// Where cgroup v2 is mounted on this machine, if anywhere.
pub fn cgroup2_mount() -> Option<PathBuf> {
    mount_of(|fstype, _| fstype == "cgroup2")
}

/// Where the cgroup v1 hierarchy holding `controller` is mounted.
pub fn cgroup_v1_mount(controller: &str) -> Option<PathBuf> {
    mount_of(|fstype, opts| fstype == "cgroup" && opts.split(',').any(|o| o == controller))
}

fn mount_of(pred: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && pred(f[2], f[3])).then(|| PathBuf::from(f[1]))
    })
}

/// Subsystem index of `controller` in `/proc/cgroups` text, if it is mounted
/// as cgroup v1 (hierarchy id non-zero). `"auto"` prefers `memory`, then the
/// first mounted one; `"none"` disables the fallback.
pub fn v1_subsys_index(proc_cgroups: &str, controller: &str) -> Option<(u32, String)> {
    if controller == "none" {
        return None;
    }
    let rows: Vec<(u32, &str, u32)> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .enumerate()
        .filter_map(|(i, l)| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let hierarchy = f.next()?.parse().ok()?;
            Some((u32::try_from(i).ok()?, name, hierarchy))
        })
        .collect();
    let mounted = |name: &str| rows.iter().find(|r| r.1 == name && r.2 != 0);
    let row = match controller {
        "auto" => mounted("memory").or_else(|| rows.iter().find(|r| r.2 != 0)),
        name => mounted(name),
    }?;
    Some((row.0, row.1.to_string()))
}

/// [`v1_subsys_index`] on this machine's `/proc/cgroups`.
pub fn detect_v1_subsys(controller: &str) -> Option<(u32, String)> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    v1_subsys_index(&text, controller)
}

/// `FILEID_KERNFS`: the file-handle type of a kernfs node (a cgroup), whose
/// handle is its 64-bit id.
const FILEID_KERNFS: i32 = 0xfe;

/// The path (from the hierarchy's root, starting with `/`) of the cgroup
/// with id `id`, opened by its kernfs file handle: one syscall instead of a
/// walk of the tree. Needs CAP_DAC_READ_SEARCH; `None` without it, or when
/// the cgroup is gone.
fn path_by_handle(root: &std::path::Path, id: u64) -> Option<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// `struct file_handle` with an 8-byte handle.
    #[repr(C)]
    struct KernfsHandle {
        bytes: u32,
        kind: i32,
        id: u64,
    }
    let dir = std::fs::File::open(root).ok()?;
    let mut handle = KernfsHandle {
        bytes: 8,
        kind: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a `struct file_handle` whose `f_handle` holds the
    // `handle_bytes` (8) bytes the kernel reads; `dir` is an open directory.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            std::ptr::from_mut(&mut handle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let rel = path.strip_prefix(root).ok()?;
    Some(format!("/{}", rel.to_string_lossy()).replace("//", "/"))
}

/// One hierarchy's id -> path cache.
#[derive(Debug)]
struct Hierarchy {
    root: PathBuf,
    by_id: HashMap<u64, Arc<CgroupInfo>>,
    walked: Option<Instant>,
}

impl Hierarchy {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            walked: None,
        }
    }

    /// Rebuilds the cache from the tree (dropping deleted cgroups).
    fn walk(&mut self) {
        let mut by_id = HashMap::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if by_id.len() >= MAX_CGROUPS {
                    break;
                }
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let rel = format!("{rel}/{}", e.file_name().to_string_lossy());
                by_id.insert(e.ino(), Arc::new(parse_cgroup_path(&rel)));
                stack.push((e.path(), rel));
            }
        }
        self.by_id = by_id;
        self.walked = Some(Instant::now());
    }

    /// Walks again unless the last walk was less than [`REWALK_INTERVAL`] ago.
    fn walk_if_due(&mut self) {
        if self.walked.is_none_or(|t| t.elapsed() >= REWALK_INTERVAL) {
            self.walk();
        }
    }

    fn lookup(&mut self, id: u64) -> Option<Arc<CgroupInfo>> {
        if let Some(hit) = self.by_id.get(&id) {
            return Some(Arc::clone(hit));
        }
        self.walk_if_due();
        if let Some(hit) = self.by_id.get(&id) {
            return Some(Arc::clone(hit));
        }
        // Made since the last walk: found by its file handle, at once.
        let info = Arc::new(parse_cgroup_path(&path_by_handle(&self.root, id)?));
        if self.by_id.len() < MAX_CGROUPS {
            self.by_id.insert(id, Arc::clone(&info));
        }
        Some(info)
    }

    /// The one cgroup whose path ends with `tail` (which starts with `/`).
    fn by_suffix(&self, tail: &str) -> Option<(u64, Arc<CgroupInfo>)> {
        let mut hits = self.by_id.iter().filter(|(_, i)| i.path.ends_with(tail));
        let (id, info) = hits.next()?;
        hits.next().is_none().then(|| (*id, Arc::clone(info)))
    }
}

/// How an event's cgroup ids resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A cgroup was found (host processes give an info without pod).
    Found(Arc<CgroupInfo>),
    /// Neither id names a known cgroup (e.g. deleted before it was looked up).
    Unknown,
}

/// Resolves cgroup ids (v2, then the v1 fallback) to parsed cgroup paths.
#[derive(Debug)]
pub struct CgroupResolver {
    v2: Option<Mutex<Hierarchy>>,
    v1: Option<Mutex<Hierarchy>>,
    /// The controller that names the v1 hierarchy in `/proc/<pid>/cgroup`.
    v1_controller: Option<String>,
}

impl CgroupResolver {
    /// A resolver on explicit hierarchy roots.
    pub fn new(v2_root: Option<PathBuf>, v1_root: Option<PathBuf>) -> Self {
        Self {
            v2: v2_root.map(|r| Mutex::new(Hierarchy::new(r))),
            v1: v1_root.map(|r| Mutex::new(Hierarchy::new(r))),
            v1_controller: None,
        }
    }

    /// A resolver on this machine's cgroup2 mount and the v1 hierarchy of `v1_controller`.
    pub fn for_host(v1_controller: Option<&str>) -> Self {
        let mut r = Self::new(cgroup2_mount(), v1_controller.and_then(cgroup_v1_mount));
        r.v1_controller = v1_controller.filter(|_| r.v1.is_some()).map(String::from);
        r
    }

    fn lookup(h: &Option<Mutex<Hierarchy>>, id: u64) -> Option<Arc<CgroupInfo>> {
        h.as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(id)
    }

    /// Resolves an event's ids. The v2 root (id 1) says nothing about pods, so
    /// the v1 id decides then; an unknown v2 id is not overruled by a v1
    /// cgroup outside every pod (that would call a new container's process
    /// a host process).
    pub fn resolve(&self, cgroup_id: u64, cgroup_v1_id: u64) -> Resolution {
        let v2 = (cgroup_id > 1)
            .then(|| Self::lookup(&self.v2, cgroup_id))
            .flatten();
        if let Some(info) = &v2 {
            if !info.is_host() || cgroup_v1_id == 0 {
                return Resolution::Found(Arc::clone(info));
            }
        }
        let v1 = (cgroup_v1_id > 0)
            .then(|| Self::lookup(&self.v1, cgroup_v1_id))
            .flatten();
        match (v1, v2) {
            (Some(info), _) if !info.is_host() => Resolution::Found(info),
            (_, Some(info)) => Resolution::Found(info),
            // A v2 cgroup not known yet says more than a v1 one outside every
            // pod: the process may be in a container created a moment ago.
            (Some(info), None) if cgroup_id <= 1 => Resolution::Found(info),
            (None, None) if cgroup_id <= 1 => Resolution::Found(Arc::new(parse_cgroup_path("/"))),
            (_, None) => Resolution::Unknown,
        }
    }

    /// A v2 cgroup deleted before its event was handled (a container whose
    /// only process exited at once), placed by its parent's path, which
    /// outlives it, and its directory `name` as the kernel read it.
    pub fn resolve_gone(&self, parent_id: u64, name: &str) -> Option<Arc<CgroupInfo>> {
        if parent_id == 0 || name.is_empty() || name.contains('/') || name == ".." {
            return None;
        }
        let parent = if parent_id == 1 {
            "/".to_string()
        } else {
            Self::lookup(&self.v2, parent_id)?.path.clone()
        };
        let path = format!("{}/{name}", parent.trim_end_matches('/'));
        Some(Arc::new(parse_cgroup_path(&path)))
    }

    /// Re-walks both hierarchies now, dropping cgroups that were deleted.
    /// (Ids are not reused soon, so a stale entry costs memory, not accuracy;
    /// the collector calls this periodically.)
    pub fn forget_deleted(&self) {
        for h in [&self.v2, &self.v1].into_iter().flatten() {
            h.lock().unwrap_or_else(|e| e.into_inner()).walk();
        }
    }

    /// cgroup v2 id and parsed path of process `pid`, from `/proc/<pid>/cgroup`.
    pub fn cgroup_of_pid(&self, pid: u32) -> Option<(u64, CgroupInfo)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        self.cgroup_of_path(rel)
    }

    /// Process `pid`'s cgroup ids as the kernel reports them: the v2 id (0
    /// when unknown) and the v1 id in the configured hierarchy (0 when none),
    /// from `/proc/<pid>/cgroup`; `None` when the process is gone.
    pub fn ids_of_pid(&self, pid: u32) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let v2 = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .and_then(|rel| self.cgroup_of_path(rel))
            .map_or(0, |(id, _)| id);
        let v1 = self
            .v1_controller
            .as_deref()
            .and_then(|c| v1_path(&text, c))
            .zip(self.v1_root())
            .and_then(|(rel, root)| std::fs::metadata(root.join(rel.trim_start_matches('/'))).ok())
            .map_or(0, |m| m.ino());
        Some((v2, v1))
    }

    /// cgroup v2 id and parsed path of a cgroup path as `/proc/<pid>/cgroup`
    /// shows it to this process.
    ///
    /// In a private cgroup namespace (the collector's pod, usually) the path
    /// is relative to the namespace's root and starts with `/..` for cgroups
    /// outside it; the rest is then matched as the unique suffix of a cgroup
    /// in the hierarchy (pod and container cgroups are named by unique ids).
    pub fn cgroup_of_path(&self, rel: &str) -> Option<(u64, CgroupInfo)> {
        use std::os::unix::fs::MetadataExt;
        let root = self.v2_root()?;
        if !rel.starts_with("/..") {
            if let Ok(m) = std::fs::metadata(root.join(rel.trim_start_matches('/'))) {
                return Some((m.ino(), parse_cgroup_path(rel)));
            }
        }
        let mut tail = rel;
        while let Some(rest) = tail.strip_prefix("/..") {
            tail = rest;
        }
        if tail.len() < 2 {
            return None;
        }
        let mut h = self.v2.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
        let found = h.by_suffix(tail).or_else(|| {
            h.walk_if_due();
            h.by_suffix(tail)
        })?;
        Some((found.0, (*found.1).clone()))
    }

    fn v1_root(&self) -> Option<PathBuf> {
        self.v1
            .as_ref()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).root.clone())
    }

    /// Root of the cgroup2 hierarchy used.
    pub fn v2_root(&self) -> Option<PathBuf> {
        self.v2
            .as_ref()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).root.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8c6d1e3a-51a5-4c6f-9c1a-2f6f0c9b7d21";
    const ID: &str = "4f2b3a19e5c8d7f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

    fn us(uid: &str) -> String {
        uid.replace('-', "_")
    }

    #[test]
    fn v1_path_finds_the_hierarchy_of_a_controller() {
        let text = "12:cpu,cpuacct:/kubepods/pod1/c1\n4:memory:/kubepods/pod1/c2\n0::/\n";
        assert_eq!(v1_path(text, "cpu"), Some("/kubepods/pod1/c1"));
        assert_eq!(v1_path(text, "cpuacct"), Some("/kubepods/pod1/c1"));
        assert_eq!(v1_path(text, "memory"), Some("/kubepods/pod1/c2"));
        assert_eq!(v1_path(text, "pids"), None);
        assert_eq!(v1_path("garbage", "cpu"), None);
    }

    #[test]
    fn real_world_paths() {
        let u = us(UID);
        let table: Vec<(String, Option<QosClass>, Option<Runtime>, bool)> = vec![
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"), Some(QosClass::Burstable), Some(Runtime::Containerd), true),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"), Some(QosClass::BestEffort), Some(Runtime::CriO), true),
            (format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"), Some(QosClass::Guaranteed), Some(Runtime::Docker), true),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Some(QosClass::Burstable), Some(Runtime::Unknown), true),
            (format!("/kubepods/pod{UID}/{ID}"), Some(QosClass::Guaranteed), Some(Runtime::Unknown), true),
            (format!("/kubepods/besteffort/pod{UID}"), Some(QosClass::BestEffort), None, false),
            (format!("/system.slice/containerd.service/kubepods-burstable-pod{u}.slice:cri-containerd:{ID}"), Some(QosClass::Burstable), Some(Runtime::Containerd), true),
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"), Some(QosClass::BestEffort), Some(Runtime::Containerd), true),
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{ID}.scope"), Some(QosClass::Burstable), None, false),
        ];
        for (path, qos, rt, has_container) in table {
            let info = parse_cgroup_path(&path);
            assert_eq!(info.pod_uid.as_deref(), Some(UID), "{path}");
            assert_eq!(info.qos, qos, "{path}");
            assert_eq!(info.runtime, rt, "{path}");
            assert_eq!(
                info.container_id.as_deref(),
                has_container.then_some(ID),
                "{path}"
            );
            assert!(!info.is_host());
        }
    }

    #[test]
    fn host_paths_have_no_pod() {
        for p in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods.slice",
            "/kubepods/burstable",
            "/podman-123.scope",
            "/system.slice/docker-1234.scope",
        ] {
            let info = parse_cgroup_path(p);
            assert!(info.is_host(), "{p}: {info:?}");
            assert_eq!(info.container_id, None, "{p}");
        }
        assert_eq!(parse_cgroup_path("//a//b/").path, "/a/b");
    }

    #[test]
    fn paths_from_a_private_cgroup_namespace() {
        use std::os::unix::fs::MetadataExt;
        let u = us(UID);
        let root = tempfile::tempdir().unwrap();
        let pod =
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice");
        let container = format!("{pod}/cri-containerd-{ID}.scope");
        for dir in [
            container.as_str(),
            "kubepods.slice/kubepods-besteffort.slice/cri-containerd-other.scope",
            "system.slice/a/same.scope",
            "system.slice/b/same.scope",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let ino = std::fs::metadata(root.path().join(&container))
            .unwrap()
            .ino();
        let r = CgroupResolver::new(Some(root.path().to_path_buf()), None);

        // As the host's namespace shows it.
        let (id, info) = r.cgroup_of_path(&format!("/{container}")).unwrap();
        assert_eq!(id, ino);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        // As a sibling pod's namespace shows it: `/..` up to a common ancestor.
        for rel in [
            format!("/../../kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"),
            format!("/../cri-containerd-{ID}.scope"),
        ] {
            let (id, info) = r.cgroup_of_path(&rel).expect(&rel);
            assert_eq!(id, ino, "{rel}");
            assert_eq!(info.path, format!("/{container}"), "{rel}");
            assert_eq!(info.pod_uid.as_deref(), Some(UID), "{rel}");
            assert_eq!(info.container_id.as_deref(), Some(ID), "{rel}");
        }
        // Ambiguous or unknown tails resolve to nothing rather than to a guess.
        assert_eq!(r.cgroup_of_path("/../same.scope"), None);
        assert_eq!(r.cgroup_of_path("/../../missing.scope"), None);
        assert_eq!(r.cgroup_of_path("/.."), None);
    }

    const HYBRID: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
cpuset\t3\t1\t1\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nblkio\t7\t1\t1\nmemory\t4\t1\t1\n\
devices\t5\t41\t1\nfreezer\t6\t1\t1\npids\t8\t1\t1\n";
    const UNIFIED: &str =
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\nmemory\t0\t1\t1\n";

    #[test]
    fn picks_memory_row() {
        assert_eq!(v1_subsys_index(HYBRID, "auto"), Some((4, "memory".into())));
        assert_eq!(v1_subsys_index(HYBRID, "pids"), Some((7, "pids".into())));
        assert_eq!(v1_subsys_index(HYBRID, "none"), None);
        assert_eq!(v1_subsys_index(UNIFIED, "auto"), None);
        assert_eq!(v1_subsys_index(UNIFIED, "memory"), None);
    }

    #[test]
    fn a_deleted_cgroup_is_placed_by_its_parent_and_name() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join(format!("kubepods/besteffort/pod{UID}"));
        std::fs::create_dir_all(&pod).unwrap();
        let r = CgroupResolver::new(Some(root.path().to_path_buf()), None);
        let parent = std::fs::metadata(&pod).unwrap().ino();
        let info = r.resolve_gone(parent, ID).unwrap();
        assert_eq!(info.path, format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        // Under the root, an unknown parent, or a name that is not one.
        assert_eq!(r.resolve_gone(1, "init.scope").unwrap().path, "/init.scope");
        assert!(r.resolve_gone(parent + 1_000_000, ID).is_none());
        for bad in ["", "..", "a/b"] {
            assert!(r.resolve_gone(parent, bad).is_none(), "{bad}");
        }
    }
}
