/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cac_abi.h - the one definition of the kernel/user ABI of config-access-collector.
 *
 * Everything that crosses between the BPF programs and user space is declared
 * here: ring-buffer records, map keys and values, counters and constants.
 * The header depends on nothing but the compiler.  Rust never re-declares
 * these types: it takes them from the BTF of the compiled object, through the
 * skeleton that libbpf-cargo generates (module `types`).
 */
#ifndef CAC_ABI_H
#define CAC_ABI_H

typedef unsigned char cac_u8;
typedef unsigned short cac_u16;
typedef unsigned int cac_u32;
typedef int cac_s32;
typedef unsigned long long cac_u64;

/* Sizes of fixed buffers and bounds of kernel loops. */
enum cac_limits {
	/* Bytes of the path argument copied into an event (with the NUL). */
	CAC_PATH_LEN = 256,
	/* Bytes of the opened file's own name copied into an event (with the NUL). */
	CAC_NAME_LEN = 256,
	/* Longest cgroup directory name kept: a runtime's scope ("cri-containerd-<64 hex>.scope") fits. */
	CAC_CGROUP_NAME_LEN = 128,
	/* Bytes of the task command name (TASK_COMM_LEN). */
	CAC_COMM_LEN = 16,
	/* Ancestors of an opened file checked against the watched volume directories. */
	CAC_MAX_WALK = 8,
	/* Parents of an opening process walked to decide its enum cac_session. */
	CAC_MAX_SESSION_WALK = 16,
	/* Deepest pid namespace level whose sessions are decided (a container in a container: 2). */
	CAC_MAX_PID_LEVEL = 3,
	/* Length of the marker "/volumes/kubernetes.io" that precedes '~' in kubelet volume paths. */
	CAC_MARKER_LEN = 22,
	/* Highest cgroup v1 subsystem index the fallback extraction accepts (exclusive). */
	CAC_MAX_SUBSYS = 16,
	/* Value of cac_event.dirfd for syscalls that take no directory fd (open, creat). */
	CAC_NO_DIRFD = -1000,
	/* Bytes of a pod UID field (36 characters and the NUL, padded). */
	CAC_POD_UID_LEN = 40,
	/* Bytes of a namespace field (a DNS label: 63 characters and the NUL). */
	CAC_NAMESPACE_LEN = 64,
	/* Bytes of a pod name field (truncated to 127 characters). */
	CAC_POD_NAME_LEN = 128,
	/* Bytes of a container id field (64 hex digits and the NUL, padded). */
	CAC_CONTAINER_ID_LEN = 72,
	/* Bytes of a Service name field (a DNS-1035 label: 63 characters and the NUL). */
	CAC_SERVICE_NAME_LEN = 64,
	/* Bytes of a port name field (an IANA service name: 15 characters and the NUL). */
	CAC_PORT_NAME_LEN = 16,
	/* Bytes of an address in `svc_endpoints` keys (IPv6; IPv4 as ::ffff:a.b.c.d). */
	CAC_ADDR_LEN = 16,
	/*
	 * Bits of each of the two open-path filters, `dev_filter` and
	 * `dir_filter` (arrays of CAC_FILTER_BITS / 64 u64 words; bit b is bit
	 * b % 64 of word b / 64).  A set bit means "maybe watched", a clear bit
	 * "certainly not".  The bit of a device (kernel encoding) is
	 *     (dev ^ dev >> 20) % CAC_FILTER_BITS,
	 * the bit of a directory (inode ino on device dev) is
	 *     (ino ^ ino >> 32 ^ dev) % CAC_FILTER_BITS.
	 */
	CAC_FILTER_BITS = 65536,
};

/* Why an event was emitted. */
enum cac_event_kind {
	/* A regular file opened successfully lies inside a watched volume directory. */
	CAC_KIND_VOLUME_OPEN = 1,
	/* An open failed and its path names the kubelet volume tree (".../volumes/kubernetes.io~..."). */
	CAC_KIND_VOLUME_PATH_FAILED = 2,
	/* An open failed with EACCES or EPERM; user space decides whether it named a volume file. */
	CAC_KIND_DENIED = 3,
};

/* Where the opening process stands in its container's process tree. */
enum cac_session {
	/* Not decided: a process of the initial pid namespace (a host process), a pid namespace
	 * deeper than CAC_MAX_PID_LEVEL, or a parent chain longer than CAC_MAX_SESSION_WALK. */
	CAC_SESSION_UNKNOWN = 0,
	/* The init process of its pid namespace (the container's first process) or a descendant. */
	CAC_SESSION_INIT = 1,
	/* A process that entered the pid namespace from outside (setns and fork, as `runc exec`,
	 * `kubectl exec`, `nsenter` do), or a descendant of one: an exec session. */
	CAC_SESSION_EXEC = 2,
};

/* The open-family syscall that produced an event. */
enum cac_syscall {
	CAC_SYS_OPENAT = 1,
	CAC_SYS_OPENAT2 = 2,
	CAC_SYS_OPEN = 3,
	CAC_SYS_CREAT = 4,
	CAC_SYS_OPEN_BY_HANDLE_AT = 5,
	/* IORING_OP_OPENAT or IORING_OP_OPENAT2, at its completion. */
	CAC_SYS_IO_URING = 6,
};

/* Indexes of the per-CPU counters in the `stats` map. */
enum cac_stat {
	/* Events the kernel decided to emit (delivered + dropped). */
	CAC_STAT_MATCHED = 0,
	/* Events written into the ring buffer. */
	CAC_STAT_DELIVERED = 1,
	/* Events lost because the ring buffer was full. */
	CAC_STAT_DROPPED_RINGBUF = 2,
	/* Syscalls recorded by the sampler into `pid_samples`. */
	CAC_STAT_SAMPLED = 3,
	/* Successful opens on a filesystem that holds a watched volume (examined further). */
	CAC_STAT_OPENS_SEEN = 4,
	/* Events of the collector's own process, dropped before the ring buffer. */
	CAC_STAT_OWN = 5,
	/* Opens counted in `repeats` (a repeat within the window) instead of emitted. */
	CAC_STAT_REPEATED = 6,
	/* Emitted opens whose repeats could not be tracked: `repeats` was full. */
	CAC_STAT_REPEAT_FULL = 7,
	/* Process records the kernel could not write: `pid_samples` was full. */
	CAC_STAT_RECORDS_FULL = 8,
	/*
	 * io_uring opens submitted with IOSQE_CQE_SKIP_SUCCESS: a success posts
	 * no completion, so which file they opened is not seen.
	 */
	CAC_STAT_URING_UNOBSERVED = 9,
	CAC_STAT_MAX = 10,
};

/* Kubelet volume plugin of a watched directory. */
enum cac_volume_type {
	CAC_VOL_SECRET = 1,
	CAC_VOL_CONFIGMAP = 2,
	CAC_VOL_PROJECTED = 3,
	CAC_VOL_DOWNWARD_API = 4,
};

/* Key of `watched_dirs`: the identity of a volume directory. */
struct cac_dir_key {
	/// Inode number of the volume directory (1 when it is the root of its own tmpfs).
	cac_u64 ino;
	/// Device of the directory's superblock in the kernel's encoding: major << 20 | minor.
	cac_u32 dev;
	/// Always zero.
	cac_u32 _pad;
};

/* Value of `watched_dirs`. */
struct cac_dir_info {
	/// Id that user space gave this volume; it names the volume in events.
	cac_u32 volume_id;
	/// enum cac_volume_type.
	cac_u32 volume_type;
};

/* What wrote a `pid_samples` record. */
enum cac_sample_source {
	/* The optional syscall sampler (1 in cfg_sample_every syscalls). */
	CAC_SAMPLE_SYSCALL = 1,
	/* A process forked in a cgroup that `cgroup_classes` does not hold yet. */
	CAC_SAMPLE_FORK = 2,
	/* A process moved (a write to cgroup.procs) to a cgroup `cgroup_classes` does not hold yet. */
	CAC_SAMPLE_MOVE = 3,
};

/*
 * Value of `pid_samples` (LRU, key: tgid as cac_u32): a process whose cgroup
 * user space has to classify.  User space takes each record out of the map
 * when it has applied it.
 */
struct cac_sample {
	/// cgroup v2 id of the process.
	cac_u64 cgroup_id;
	/// cgroup v1 id of the process in the configured hierarchy; 0 when none.
	cac_u64 cgroup_v1_id;
	/// CLOCK_MONOTONIC time of the record, nanoseconds.
	cac_u64 ts_ns;
	/// Thread id of the task the record was taken from.
	cac_u32 tid;
	/// enum cac_sample_source.
	cac_u32 source;
};

/* Value of `pod_info` (key: cgroup v2 id as cac_u64): the pod a cgroup belongs to. */
struct cac_pod_info {
	/// Pod UID, NUL-terminated.
	char pod_uid[CAC_POD_UID_LEN];
	/// Pod namespace, NUL-terminated; empty until pod metadata is known.
	char namespace[CAC_NAMESPACE_LEN];
	/// Pod name, NUL-terminated; empty until pod metadata is known.
	char pod_name[CAC_POD_NAME_LEN];
	/// Time the entry was written, Unix seconds.
	cac_u64 created_at;
};

/* Value of `container_pids` (LRU, key: tgid as cac_u32): the container of a process. */
struct cac_container_pid {
	/// cgroup v2 id of the process's container.
	cac_u64 cgroup_id;
	/// Runtime container id (64 hex digits), NUL-terminated; empty when unknown.
	char container_id[CAC_CONTAINER_ID_LEN];
};

/* Key of `cgroup_classes`: a process's cgroups as the programs see them. */
struct cac_cgroup_key {
	/// cgroup v2 id (1: the root).
	cac_u64 cgroup_id;
	/// cgroup v1 id in the configured hierarchy; 0 when none is configured.
	cac_u64 cgroup_v1_id;
};

/* Value of `cgroup_classes` (LRU, written by user space): what a cgroup is. */
struct cac_cgroup_class {
	/// Non-zero: a pod's container, whose processes get `container`; zero: outside every pod.
	cac_u32 in_pod;
	/// Always zero.
	cac_u32 _pad;
	/// The `container_pids` value of the cgroup's processes (when in_pod).
	struct cac_container_pid container;
};

/*
 * Key of `repeats`: one file as opened by one program of one process.  The
 * process is told apart from a later one with the same pid by its start
 * time, and from the program it runs after an execve by its exec count.
 */
struct cac_repeat_key {
	/// Inode of the opened file.
	cac_u64 ino;
	/// Start time of the process (its thread-group leader), CLOCK_MONOTONIC nanoseconds.
	cac_u64 start_ns;
	/// Process id (thread-group id) in the initial pid namespace.
	cac_u32 tgid;
	/// Device of the opened file (kernel encoding major << 20 | minor).
	cac_u32 dev;
	/// The process's exec count (low 32 bits of task_struct.self_exec_id).
	cac_u32 exec_id;
	/// FMODE_READ | FMODE_WRITE bits of the open: a write is never a repeat of a read.
	cac_u32 mode;
};

/*
 * Value of `repeats`: the opens of one key that were counted instead of
 * emitted, and what user space needs to report them (the fields of the
 * key's first emitted open; the path argument is not kept: repeats of one
 * file may use different paths).
 */
struct cac_repeat {
	/// CLOCK_MONOTONIC time of the key's first emitted open (the entry's creation), nanoseconds.
	cac_u64 first_ns;
	/// CLOCK_MONOTONIC time of the emitted open that began the current window, nanoseconds.
	cac_u64 window_ns;
	/// CLOCK_MONOTONIC time of the latest counted open, nanoseconds; 0 before the first.
	cac_u64 last_ns;
	/// Opens counted since the entry was made (never reset; user space reports differences).
	cac_u64 count;
	/// cgroup v2 id of the process at its first emitted open.
	cac_u64 cgroup_id;
	/// cgroup v1 id of the process at its first emitted open; 0 when none.
	cac_u64 cgroup_v1_id;
	/// Inode of the matched volume directory.
	cac_u64 vol_ino;
	/// Id of the matched volume (cac_dir_info.volume_id).
	cac_u32 volume_id;
	/// Thread id of the first emitted open.
	cac_u32 tid;
	/// Real user id (initial user namespace).
	cac_u32 uid;
	/// Real group id (initial user namespace).
	cac_u32 gid;
	/// Inode number of the process's mount namespace.
	cac_u32 mnt_ns;
	/// FMODE_* bits of the first emitted open.
	cac_u32 fmode;
	/// Open flags of the first emitted open.
	cac_u32 open_flags;
	/// enum cac_syscall of the first emitted open.
	cac_u8 syscall;
	/// Levels between the file and the matched volume directory.
	cac_u8 depth;
	/// enum cac_session of the process at its first emitted open.
	cac_u8 session;
	/// Always zero.
	cac_u8 _pad;
	/// Task command name, NUL-padded.
	char comm[CAC_COMM_LEN];
};

/*
 * Key of `failed_repeats`: one failed open (a denied one, or one whose path
 * names the kubelet volume tree) as made by one program of one process.  A
 * failed open has no file: it is told apart by its path argument, its
 * directory fd and its error.
 */
struct cac_failed_key {
	/// Hash of the path argument's bytes (FNV-1a over 8-byte words, the NUL included).
	cac_u64 path_hash;
	/// Start time of the process (its thread-group leader), CLOCK_MONOTONIC nanoseconds.
	cac_u64 start_ns;
	/// Process id (thread-group id) in the initial pid namespace.
	cac_u32 tgid;
	/// The process's exec count (low 32 bits of task_struct.self_exec_id).
	cac_u32 exec_id;
	/// Directory fd argument, as in cac_event.dirfd.
	cac_s32 dirfd;
	/// The open's result: -errno.
	cac_s32 ret;
};

/*
 * Value of `failed_repeats`: the counts and first-open fields of a
 * cac_repeat (vol_ino, volume_id, fmode and depth are 0), and what a
 * failed open needs besides, its path argument above all: user space
 * resolves a summary's path as it resolves the first event's.
 */
struct cac_failed_repeat {
	/// Counts, times and the first emitted open's fields.
	struct cac_repeat head;
	/// The open's result: -errno.
	cac_s32 ret;
	/// Directory fd argument, as in cac_event.dirfd.
	cac_s32 dirfd;
	/// enum cac_event_kind of the first emitted open.
	cac_u8 kind;
	/// Always zero.
	cac_u8 _pad;
	/// Bytes of `path` with its NUL; 0 when it was not read.
	cac_u16 path_len;
	/// Always zero.
	cac_u32 _reserved;
	/// The path argument of the first emitted open (path_len bytes).
	char path[CAC_PATH_LEN];
};

/*
 * One record of the `events` ring buffer.  Records are variable-length: a
 * record ends right after its strings, so it is
 * offsetof(struct cac_event, strings) + path_len + name_len + cgroup_name_len
 * bytes long.
 */
struct cac_event {
	/// CLOCK_MONOTONIC time at syscall exit, nanoseconds.
	cac_u64 ts_ns;
	/// cgroup v2 id of the task (the inode of its cgroup2 directory; 1 is the root).
	cac_u64 cgroup_id;
	/// Kernfs id of the task's cgroup in the configured cgroup v1 hierarchy; 0 when none.
	cac_u64 cgroup_v1_id;
	/// cgroup v2 id of the parent of the task's cgroup; 0 for the root.
	cac_u64 cgroup_parent_id;
	/// Inode of the opened file; 0 when the open failed.
	cac_u64 file_ino;
	/// Inode of the matched volume directory; 0 unless kind is CAC_KIND_VOLUME_OPEN.
	cac_u64 vol_ino;
	/// Device of the opened file (kernel encoding major << 20 | minor); 0 when the open failed.
	cac_u32 file_dev;
	/// Id of the matched volume (cac_dir_info.volume_id); 0 unless kind is CAC_KIND_VOLUME_OPEN.
	cac_u32 volume_id;
	/// Process id (thread-group id) in the initial pid namespace.
	cac_u32 tgid;
	/// Thread id in the initial pid namespace.
	cac_u32 tid;
	/// Real user id in the initial user namespace.
	cac_u32 uid;
	/// Real group id in the initial user namespace.
	cac_u32 gid;
	/// Inode number of the task's mount namespace.
	cac_u32 mnt_ns;
	/// Syscall result: the new fd on success, -errno on failure.
	cac_s32 ret;
	/// Directory fd argument (AT_FDCWD is -100); CAC_NO_DIRFD when the syscall has none.
	cac_s32 dirfd;
	/// Open flags as passed (O_*; lower 32 bits of open_how.flags for openat2).
	cac_u32 open_flags;
	/// FMODE_* bits of the opened file; 0 when the open failed.
	cac_u32 fmode;
	/// Bytes of the path argument in `strings`, with the NUL; 0 when it was not read.
	cac_u16 path_len;
	/// Bytes of the file name in `strings` after the path, with the NUL; 0 when not read.
	cac_u16 name_len;
	/// enum cac_event_kind.
	cac_u8 kind;
	/// enum cac_syscall.
	cac_u8 syscall;
	/// Levels between the file and the matched volume directory (1: directly inside).
	cac_u8 depth;
	/// enum cac_session of the opening process.
	cac_u8 session;
	/// Bytes of the task's cgroup v2 directory name in `strings` after the file name, with the
	/// NUL; 0 when not read.
	cac_u16 cgroup_name_len;
	/// Always zero.
	cac_u16 _reserved;
	/// Task command name, NUL-padded.
	char comm[CAC_COMM_LEN];
	/// The path argument as the process passed it (path_len bytes with its NUL, at most
	/// CAC_PATH_LEN), then the name of the opened file's dentry, the last path component inside
	/// the volume (name_len bytes with its NUL, at most CAC_NAME_LEN), then the name of the
	/// task's cgroup v2 directory (cgroup_name_len bytes with its NUL, at most
	/// CAC_CGROUP_NAME_LEN).
	char strings[CAC_PATH_LEN + CAC_NAME_LEN + CAC_CGROUP_NAME_LEN];
};

/* What an address of `svc_endpoints` is of its Service. */
enum cac_endpoint_role {
	/* One of the Service's cluster IPs, with a Service port. */
	CAC_ENDPOINT_CLUSTER_IP = 1,
	/* An endpoint of the Service (usually a pod IP), with a target port. */
	CAC_ENDPOINT_BACKEND = 2,
};

/*
 * Key of `svc_endpoints` (hash, written by user space, read by anyone): an
 * address of the cluster as a socket carries it.  Other collectors' BPF
 * programs build it from a socket or a sockaddr and look it up.  Zero the
 * whole key first: `_pad` is part of it.
 */
struct cac_endpoint_key {
	/// IPv6 address in network byte order; an IPv4 address as its IPv4-mapped form
	/// ::ffff:a.b.c.d (ten zero bytes, two 0xff bytes, then the four IPv4 bytes).
	cac_u8 addr[CAC_ADDR_LEN];
	/// Port in network byte order (as sin_port, sin6_port and skc_dport hold it).
	cac_u16 port;
	/// IANA protocol number: 6 TCP, 17 UDP, 132 SCTP.
	cac_u8 protocol;
	/// Always zero.
	cac_u8 _pad;
};

/*
 * Value of `svc_endpoints`: the Service port an address belongs to, and for
 * an endpoint the pod behind it.  When Services share an address and port
 * (rare: one pod behind two Services), the map holds one of them, the first
 * by role (cluster IP first), namespace, name and port name; the correlation
 * API lists them all.
 */
struct cac_service_endpoint {
	/// The Service's namespace, NUL-terminated.
	char namespace[CAC_NAMESPACE_LEN];
	/// The Service's name, NUL-terminated.
	char service[CAC_SERVICE_NAME_LEN];
	/// The port's name, NUL-terminated; empty for a Service's only, unnamed port.
	char port_name[CAC_PORT_NAME_LEN];
	/// UID of the pod behind an endpoint, NUL-terminated; empty for a cluster IP and for
	/// an endpoint that names no pod.
	char pod_uid[CAC_POD_UID_LEN];
	/// enum cac_endpoint_role.
	cac_u8 role;
	/// Always zero.
	cac_u8 _pad[7];
};

_Static_assert(sizeof(struct cac_dir_key) == 16, "cac_dir_key layout");
_Static_assert(sizeof(struct cac_dir_info) == 8, "cac_dir_info layout");
_Static_assert(sizeof(struct cac_sample) == 32, "cac_sample layout");
_Static_assert(sizeof(struct cac_pod_info) == 240, "cac_pod_info layout");
_Static_assert(sizeof(struct cac_container_pid) == 80, "cac_container_pid layout");
_Static_assert(sizeof(struct cac_cgroup_key) == 16, "cac_cgroup_key layout");
_Static_assert(sizeof(struct cac_cgroup_class) == 88, "cac_cgroup_class layout");
_Static_assert(sizeof(struct cac_repeat_key) == 32, "cac_repeat_key layout");
_Static_assert(sizeof(struct cac_repeat) == 104, "cac_repeat layout");
_Static_assert(sizeof(struct cac_failed_key) == 32, "cac_failed_key layout");
_Static_assert(sizeof(struct cac_failed_repeat) == 104 + 16 + CAC_PATH_LEN, "cac_failed_repeat layout");
_Static_assert(sizeof(struct cac_endpoint_key) == 20, "cac_endpoint_key layout");
_Static_assert(sizeof(struct cac_service_endpoint) == 192, "cac_service_endpoint layout");
_Static_assert(sizeof(struct cac_event) ==
		   104 + CAC_COMM_LEN + CAC_PATH_LEN + CAC_NAME_LEN + CAC_CGROUP_NAME_LEN,
	       "cac_event layout");

#endif /* CAC_ABI_H */
