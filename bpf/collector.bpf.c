// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * collector.bpf.c - kernel side of config-access-collector.
 *
 * Design overview
 * ---------------
 * Goal: report every open of a file that lives in a kubelet Secret, ConfigMap,
 * projected or downward-API volume, whatever path the process used.
 *
 * 1. Open detection runs at syscall *exit* (tracepoints
 *    syscalls/sys_exit_{openat,openat2,open,creat,open_by_handle_at}).  At exit
 *    the new fd exists, so the opened `struct file` is taken from the task's fd
 *    table and identified by kernel objects, not by the path string:
 *    - only regular files count (no O_PATH, no directories);
 *    - a first filter drops files whose superblock holds no watched volume
 *      (`dev_filter`, a bitmap in an array map: the verifier inlines the
 *      lookup, so the check makes no helper call);
 *    - then the dentry's ancestors are walked through d_parent (at most
 *      CAC_MAX_WALK levels).  d_parent never crosses a mount, and a bind mount
 *      or another mount namespace shares the same dentries, so the walk meets
 *      the volume directory whether the process used the kubelet path, a
 *      container path, a path relative to its cwd or a dirfd, or an AtomicWriter
 *      symlink (`key -> ..data/key -> ..<ts>/key`).  Each ancestor's
 *      (device, inode) is checked in the bitmap `dir_filter` and, only when
 *      its bit is set, looked up in `watched_dirs`; user space fills both.
 *      So an open on the node's disk, which also holds disk-backed ConfigMap
 *      volumes, walks its few ancestors without a hash lookup.
 *    Reading only from the task (bpf_get_current_task_btf) with direct loads
 *    and bpf_core_cast keeps the cost of an unmatched open small; the path
 *    argument and the file name are copied only on a match.
 * 2. Failed opens have no file.  EACCES/EPERM are always sent to user space,
 *    which resolves the path through /proc/<pid>/{root,cwd,fd} and decides.
 *    Other failures are sent only when the path argument names the kubelet
 *    volume tree (".../volumes/kubernetes.io~..."), the in-kernel path filter.
 *    The path is read at exit, from the syscall's saved registers: at entry the
 *    user page may not be faulted in yet.
 * 3. Correlation maps for sibling programs: `pod_info` (cgroup id -> pod) and
 *    `container_pids` (tgid -> container).  No program runs on every syscall
 *    for them: the process lifecycle keeps them exact.  User space classifies
 *    cgroups into `cgroup_classes` ((v2 id, v1 id) -> a pod's container, or
 *    outside every pod).  A fork copies the parent's entry to the child when
 *    both share their cgroups, and otherwise places the child by its
 *    cgroups' class (tp_btf/sched_process_fork); a move to other cgroups
 *    (tp_btf/cgroup_attach_task: how runtimes put a container's first
 *    process, or an exec session's, into place) does the same for the moved
 *    process.  A process whose cgroups have no class yet is recorded in
 *    `pid_samples` for user space, which classifies the cgroups and writes
 *    the process's entry: so a fork or move is never missed, whichever side
 *    runs first.  Should `pid_samples` be full, the record is counted
 *    (CAC_STAT_RECORDS_FULL) and user space rescans /proc.  The exit of a
 *    thread-group leader removes its entries (tp_btf/sched_process_exit);
 *    processes older than the collector come from a /proc scan at start.
 *    The optional sampler (tp_btf/sys_enter, 1 in cfg_sample_every
 *    syscalls) records processes the same way; it is not loaded when
 *    sampling is off.
 * 4. Delivery: events are built in a per-CPU scratch record and copied into
 *    the `events` ring buffer only as far as their strings go: records are
 *    variable-length, ~220 bytes for a usual path and a container's cgroup
 *    name instead of 760.  The task
 *    fields are direct loads (no helper call but the clock).  Wakeups are
 *    adaptive: a record wakes the reader when no record did in the last
 *    cfg_wakeup_gap_ns (so the first event after a quiet spell is
 *    delivered at once), when it makes the
 *    backlog cross cfg_wakeup_bytes, and always for denied opens, whose
 *    process user space must inspect while it lives.  Other records go
 *    without a wakeup: under load at most one wakeup per gap, instead of an
 *    irq_work per event.  The reader looks again 1 ms after a batch (for
 *    the tail of a burst) and otherwise only on a safety-net timer.
 *    Per-CPU counters in `stats` make matched == delivered + dropped.
 * 5. The collector's own opens (its volume scans, its ENOENT probes of
 *    missing plugin directories) are dropped once matched and only
 *    counted (CAC_STAT_OWN).  Its thread group is identified by its id in
 *    the initial pid namespace, which `learn_self` (a syscall program that
 *    user space runs once, in its own context) stores in `self_tgid`; so
 *    this holds whichever pid namespace the collector runs in, and the check
 *    is one comparison, made on emitted opens only (after the repeat check:
 *    the collector never starts a window, so its opens are never counted
 *    as repeats).
 * 6. Repeats (cfg_repeat_window_ns > 0): a process that opens the same file
 *    again and again must not flood the ring and hide other pods' events.
 *    An emitted open of a volume file starts a window for its key in
 *    `repeats` (process by tgid, start time and exec count; file; read or
 *    write); further opens of that key within the window are only counted
 *    in the entry (an atomic add, no record) and the first open after it
 *    is emitted again and starts the next window.  User space reads the
 *    counts every window and reports them as summary events with the exact
 *    number, so every open is either emitted or counted, never lost; it
 *    deletes entries idle for two windows.  The map is a plain hash: a full
 *    map makes opens go out one by one (CAC_STAT_REPEAT_FULL), it never
 *    evicts unread counts.  Reported failed opens (denied ones above all,
 *    which every process on the node can make as fast as it likes) are
 *    aggregated the same way in `failed_repeats`, keyed by the process, a
 *    hash of the path argument, the dirfd and the error; the entry keeps
 *    the first one's path, which user space resolves for the summaries.
 * 7. Exec sessions: every emitted record says where its process stands in
 *    its container (`session`, enum cac_session).  The parents of its
 *    thread-group leader are walked while they live in the same pid
 *    namespace (same pid level; at most CAC_MAX_SESSION_WALK): the topmost
 *    is pid 1 of the namespace for the container's own processes, and a
 *    process whose parent lives outside (setns + fork, as `runc exec`
 *    enters a container) for an exec session and its descendants.  Direct
 *    loads only, and only on emitted records: an unmatched open never pays
 *    for it.  Host processes (the initial pid namespace) are left undecided.
 * 8. io_uring opens (IORING_OP_OPENAT/OPENAT2) make no open syscall.  The
 *    submission (tp_btf/io_uring_submit_req) keeps the request's path,
 *    dirfd and flags in `uring_opens`, keyed by the request's address: the
 *    kernel frees its copy of the path before the completion.  The
 *    completion (tp_btf/io_uring_complete) takes the file from the fd
 *    table, or from the ring's fixed-file table, and goes on as for an
 *    open syscall's exit, with CAC_SYS_IO_URING.  A request that asks for
 *    no completion on success (REQ_F_CQE_SKIP) cannot be seen: it is
 *    counted (CAC_STAT_URING_UNOBSERVED).  Both run only for io_uring
 *    requests: no other syscall pays for them.
 * 9. Service endpoints for sibling programs: `svc_endpoints` maps an address
 *    of the cluster ((IP, port, protocol) as a socket holds them) to its
 *    Service port and, for an endpoint, its pod.  User space mirrors its
 *    Service endpoint map into it (and may pin it); no program here reads
 *    it.  It is not preallocated: an empty map costs nothing, and a full
 *    one its entries only.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "cac_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EPERM 1
#define EACCES 13
#define EEXIST 17
#define S_IFMT 00170000
#define S_IFREG 0100000
#define FMODE_PATH 0x4000
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000

/* Settings written by user space before load. */
/* Record one syscall in this many into pid_samples; 0 disables the sampler. */
const volatile __u32 cfg_sample_every = 0;
/* Pending ring-buffer bytes above which an event forces a wakeup. */
const volatile __u64 cfg_wakeup_bytes = 256 * 1024;
/* Shortest time between two wakeups that records force, nanoseconds. */
const volatile __u64 cfg_wakeup_gap_ns = 200 * 1000;

/* CLOCK_MONOTONIC time of the last wakeup a record forced (any CPU). */
__u64 last_wakeup_ns = 0;
/* Non-zero: report failed opens whose path names the kubelet volume tree. */
const volatile __u32 cfg_report_failed = 1;
/* cgroup v1 subsystem index used for the fallback cgroup id; negative: none. */
const volatile __s32 cfg_v1_subsys = -1;
/* The collector's tgid in the initial pid namespace (set by learn_self); 0: do not filter its events. */
__u32 self_tgid = 0;
/* Window of repeat aggregation, nanoseconds; 0: every open is emitted. */
const volatile __u64 cfg_repeat_window_ns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* bytes; user space resizes */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cac_dir_key);
	__type(value, struct cac_dir_info);
} watched_dirs SEC(".maps");

/*
 * Filters in front of the hash lookups (see CAC_FILTER_BITS): devices that
 * hold a watched directory, and the watched directories themselves.  Array
 * lookups are inlined by the verifier, so a check costs a few instructions
 * and no helper call.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CAC_FILTER_BITS / 64);
	__type(key, __u32);
	__type(value, __u64);
} dev_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CAC_FILTER_BITS / 64);
	__type(key, __u32);
	__type(value, __u64);
} dir_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CAC_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/*
 * tgid -> a process whose cgroups have no class yet, for user space.  A
 * plain hash, not an LRU: a record is never evicted unseen; when the map is
 * full the record is counted (CAC_STAT_RECORDS_FULL) and user space rescans
 * /proc, so the process is still placed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct cac_sample);
} pid_samples SEC(".maps");

/* cgroup v2 id -> the pod it belongs to (written by user space). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct cac_pod_info);
} pod_info_map SEC(".maps");

/* (IP, port, protocol) -> Service port and pod, for other collectors' programs. */
#include "svc_endpoints.bpf.h"

/* tgid -> container of the process (user space, and fork inheritance here). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct cac_container_pid);
} container_pids SEC(".maps");

/* A process's cgroups (v2 id, v1 id) -> what they are (written by user space). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cac_cgroup_key);
	__type(value, struct cac_cgroup_class);
} cgroup_classes SEC(".maps");

/*
 * Repeated opens: (process, program, file, mode) -> opens counted instead of
 * emitted.  A plain hash, not an LRU: an entry is never evicted with counts
 * user space has not read; when the map is full, opens are emitted one by
 * one (CAC_STAT_REPEAT_FULL).  User space deletes idle entries.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cac_repeat_key);
	__type(value, struct cac_repeat);
} repeats SEC(".maps");

/*
 * Repeated failed opens: (process, program, path, dirfd, error) -> failed
 * opens counted instead of emitted, with the first one's path.  A plain
 * hash, for the reasons of `repeats`.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct cac_failed_key);
	__type(value, struct cac_failed_repeat);
} failed_repeats SEC(".maps");

/* Per-CPU scratch value of `failed_repeats` (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cac_failed_repeat);
} failed_scratch SEC(".maps");

/* Per-CPU countdown of the sampler. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sample_tick SEC(".maps");

/* Per-CPU scratch record: events are built here, then copied to the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cac_event);
} scratch SEC(".maps");

/*
 * An io_uring open in flight, from its submission to its completion: the
 * kernel frees the request's copy of the path before it posts the
 * completion, so the submission keeps what the event needs.
 */
struct uring_open {
	__s32 dirfd;
	__u32 open_flags;
	char path[CAC_PATH_LEN];
};

/*
 * io_kiocb address -> its open's arguments, from submission to completion.
 * An LRU: an entry whose completion never comes (a torn-down ring) ages out;
 * an open whose entry is gone is reported without its path.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct uring_open);
} uring_opens SEC(".maps");

/* Per-CPU scratch value of `uring_opens` (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct uring_open);
} uring_scratch SEC(".maps");

/* Keep the ABI enums in BTF so the Rust skeleton gets them. */
enum cac_limits cac_btf_limits __attribute__((unused));
enum cac_event_kind cac_btf_kind __attribute__((unused));
enum cac_syscall cac_btf_syscall __attribute__((unused));
enum cac_stat cac_btf_stat __attribute__((unused));
enum cac_volume_type cac_btf_volume_type __attribute__((unused));
enum cac_sample_source cac_btf_sample_source __attribute__((unused));
enum cac_session cac_btf_session __attribute__((unused));
enum cac_endpoint_role cac_btf_endpoint_role __attribute__((unused));

/* Is bit `bit` of filter `filter` set? */
static __always_inline bool filter_has(void *filter, __u32 bit)
{
	__u32 word = (bit % CAC_FILTER_BITS) / 64;
	__u64 *w = bpf_map_lookup_elem(filter, &word);

	return w && (*w >> (bit % 64)) & 1;
}

static __always_inline bool maybe_watched_dev(__u32 dev)
{
	return filter_has(&dev_filter, dev ^ dev >> 20);
}

static __always_inline bool maybe_watched_dir(__u64 ino, __u32 dev)
{
	return filter_has(&dir_filter, (__u32)(ino ^ ino >> 32) ^ dev);
}

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* Kernfs id of the task's cgroup in the configured v1 hierarchy, or 0. */
static __always_inline __u64 cgroup_v1_id(struct task_struct *task)
{
	struct cgroup_subsys_state *css;
	__s32 idx = cfg_v1_subsys;

	/* A load-time constant: the verifier sees a fixed array offset. */
	if (idx < 0 || idx >= CAC_MAX_SUBSYS)
		return 0;
	css = task->cgroups->subsys[idx];
	if (!css)
		return 0;
	return css->cgroup->kn->id;
}

/*
 * Where `task` stands in its container's process tree (enum cac_session).
 * Walks the parents of its thread-group leader while they live in the same
 * pid namespace (their pid has the same level): the topmost one is the
 * namespace's init (pid 1 there) for the container's own processes, and a
 * process that entered from outside (setns and fork: `runc exec`) for an exec
 * session and its descendants, since its parent lives outside. Direct loads
 * only; the array index is constant per level.
 */
static __always_inline __u8 session_of(struct task_struct *task)
{
	struct task_struct *p = task->group_leader;
	unsigned int level = p->thread_pid->level;
	struct pid *pid;
	__u32 i;
	int nr;

	if (level == 0 || level > CAC_MAX_PID_LEVEL)
		return CAC_SESSION_UNKNOWN;
	for (i = 0; i < CAC_MAX_SESSION_WALK; i++) {
		struct task_struct *parent = p->real_parent;

		if (!parent || parent == p || parent->thread_pid->level < level)
			break;
		p = parent;
	}
	if (i == CAC_MAX_SESSION_WALK)
		return CAC_SESSION_UNKNOWN;
	pid = p->thread_pid;
	if (level == 1)
		nr = pid->numbers[1].nr;
	else if (level == 2)
		nr = pid->numbers[2].nr;
	else
		nr = pid->numbers[3].nr;
	return nr == 1 ? CAC_SESSION_INIT : CAC_SESSION_EXEC;
}

/* Fill the fields every event carries, by direct loads from the task. */
static __always_inline void fill_task(struct cac_event *ev, struct task_struct *task, __u64 now, long ret,
				      enum cac_syscall sc, enum cac_event_kind kind)
{
	const struct cred *cred = task->cred;
	struct nsproxy *ns = task->nsproxy;

	ev->ts_ns = now;
	ev->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	ev->cgroup_v1_id = cgroup_v1_id(task);
	ev->tgid = task->tgid;
	ev->tid = task->pid;
	/* The ids as the initial user namespace sees them (kuid_t values). */
	ev->uid = cred->uid.val;
	ev->gid = cred->gid.val;
	ev->mnt_ns = ns ? ns->mnt_ns->ns.inum : 0;
	ev->ret = (__s32)ret;
	ev->kind = kind;
	ev->syscall = sc;
	ev->session = session_of(task);
	/* An io_uring worker ("iou-wrk-<pid>") opens for its process: name that. */
	if (sc == CAC_SYS_IO_URING && (task->flags & PF_IO_WORKER))
		__builtin_memcpy(ev->comm, task->group_leader->comm, sizeof(ev->comm));
	else
		__builtin_memcpy(ev->comm, task->comm, sizeof(ev->comm));
}

/*
 * Copy the path argument and the open flags from the syscall's saved user
 * registers.  PT_REGS_PARMn_SYSCALL (bpf_tracing.h) names each argument's
 * register for the target architecture; each is a direct load with a CO-RE
 * relocation, no helper call.  At exit the first argument's register may
 * hold the return value (arm64's x0): the macro reads where it was saved.
 */
static __always_inline void fill_args(struct cac_event *ev, struct task_struct *task, enum cac_syscall sc,
				      const struct uring_open *uring)
{
	struct pt_regs *regs;
	const char *path = NULL;
	long n;

	ev->dirfd = CAC_NO_DIRFD;
	ev->open_flags = 0;
	ev->path_len = 0;
	ev->strings[0] = '\0';
	if (sc == CAC_SYS_IO_URING) {
		/* From the submission (uring_opens), when its entry was there. */
		if (uring) {
			ev->dirfd = uring->dirfd;
			ev->open_flags = uring->open_flags;
			n = bpf_probe_read_kernel_str(ev->strings, CAC_PATH_LEN, uring->path);
			ev->path_len = n > 0 ? n : 0;
		}
		return;
	}
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	switch (sc) {
	case CAC_SYS_OPENAT:
		ev->dirfd = (__s32)PT_REGS_PARM1_SYSCALL(regs);
		path = (const char *)PT_REGS_PARM2_SYSCALL(regs);
		ev->open_flags = (__u32)PT_REGS_PARM3_SYSCALL(regs);
		break;
	case CAC_SYS_OPENAT2: {
		__u64 flags = 0;

		ev->dirfd = (__s32)PT_REGS_PARM1_SYSCALL(regs);
		path = (const char *)PT_REGS_PARM2_SYSCALL(regs);
		/* struct open_how starts with __u64 flags. */
		bpf_probe_read_user(&flags, sizeof(flags), (const void *)PT_REGS_PARM3_SYSCALL(regs));
		ev->open_flags = (__u32)flags;
		break;
	}
	case CAC_SYS_OPEN:
		path = (const char *)PT_REGS_PARM1_SYSCALL(regs);
		ev->open_flags = (__u32)PT_REGS_PARM2_SYSCALL(regs);
		break;
	case CAC_SYS_CREAT:
		path = (const char *)PT_REGS_PARM1_SYSCALL(regs);
		ev->open_flags = O_CREAT | O_WRONLY | O_TRUNC;
		break;
	case CAC_SYS_OPEN_BY_HANDLE_AT:
		ev->dirfd = (__s32)PT_REGS_PARM1_SYSCALL(regs);
		ev->open_flags = (__u32)PT_REGS_PARM3_SYSCALL(regs);
		break;
	case CAC_SYS_IO_URING: /* above */
		break;
	}
	if (path) {
		n = bpf_probe_read_user_str(ev->strings, CAC_PATH_LEN, path);
		ev->path_len = n > 0 ? n : 0;
	}
}

/* Id of a cgroup's parent (its kernfs node's); 0 for the root. */
static __always_inline __u64 kernfs_parent_id(struct kernfs_node *kn)
{
	struct kernfs_node *parent;

	if (bpf_core_field_exists(kn->__parent))
		parent = kn->__parent;
	else
		parent = ((struct kernfs_node___pre_6_15 *)kn)->parent;
	return parent ? parent->id : 0;
}

/*
 * The emitting task's cgroup v2 parent and directory name, after the other
 * strings: user space places a cgroup deleted before it looked it up (a
 * container whose only process exited at once) by its parent's path and
 * this name.  Events are emitted in their task's context.
 */
static __always_inline void fill_cgroup_name(struct cac_event *ev)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kernfs_node *kn = task->cgroups->dfl_cgrp->kn;
	__u32 off = ev->path_len, name = ev->name_len;
	long n;

	ev->cgroup_parent_id = kernfs_parent_id(kn);
	if (off > CAC_PATH_LEN)
		off = CAC_PATH_LEN;
	if (name > CAC_NAME_LEN)
		name = CAC_NAME_LEN;
	n = bpf_probe_read_kernel_str(&ev->strings[off + name], CAC_CGROUP_NAME_LEN, kn->name);
	ev->cgroup_name_len = n > 0 ? n : 0;
}

/* Copy the event into the ring buffer and count the outcome. */
static __always_inline void emit(struct cac_event *ev, bool urgent)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 pending, size;

	fill_cgroup_name(ev);
	/*
	 * Wake the reader for the first record after a quiet spell, when the
	 * backlog crosses the threshold, and for urgent records; waking on
	 * every record would cost an irq_work per event.  Two CPUs may both
	 * see an old last_wakeup_ns: that costs one extra wakeup, nothing else.
	 */
	/* Only the strings' used bytes travel: most records are ~220 bytes. */
	size =
	    __builtin_offsetof(struct cac_event, strings) + ev->path_len + ev->name_len + ev->cgroup_name_len;
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	/* The backlog is queried only when no other reason wakes the reader. */
	if (urgent || ev->ts_ns - last_wakeup_ns >= cfg_wakeup_gap_ns) {
		flags = BPF_RB_FORCE_WAKEUP;
	} else {
		pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		if (pending < cfg_wakeup_bytes && pending + size >= cfg_wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
	}
	if (flags == BPF_RB_FORCE_WAKEUP)
		last_wakeup_ns = ev->ts_ns;
	stat_inc(CAC_STAT_MATCHED);
	if (bpf_ringbuf_output(&events, ev, size, flags))
		stat_inc(CAC_STAT_DROPPED_RINGBUF);
	else
		stat_inc(CAC_STAT_DELIVERED);
}

/* True (and counted) when `task` is a thread of the collector itself: its accesses are dropped. */
static __always_inline bool own_access(struct task_struct *task)
{
	if (!self_tgid || task->tgid != self_tgid)
		return false;
	stat_inc(CAC_STAT_OWN);
	return true;
}

/* The `repeats` key of an open of `file` by `task`. */
static __always_inline void repeat_key(struct cac_repeat_key *key, struct task_struct *task,
				       struct file *file, struct inode *inode, __u32 dev)
{
	key->ino = inode->i_ino;
	key->start_ns = task->group_leader->start_time;
	key->tgid = task->tgid;
	key->dev = dev;
	key->exec_id = (__u32)task->self_exec_id;
	key->mode = file->f_mode & 3;
}

/*
 * Hash of the path argument in `ev` (FNV-1a over 8-byte words, the NUL
 * included, the bytes after it masked off).
 */
static __always_inline __u64 path_hash(const struct cac_event *ev)
{
	__u64 h = 0xcbf29ce484222325ULL, w;
	__u32 i, left;

	for (i = 0; i < CAC_PATH_LEN / 8; i++) {
		if (i * 8 >= ev->path_len)
			break;
		__builtin_memcpy(&w, &ev->strings[i * 8], sizeof(w));
		left = ev->path_len - i * 8;
		if (left < 8)
			w &= (1ULL << (left * 8)) - 1;
		h = (h ^ w) * 0x100000001b3ULL;
	}
	return h;
}

/* The `failed_repeats` key of the failed open in `ev` (task fields filled) by `task`. */
static __always_inline void failed_key(struct cac_failed_key *key, struct task_struct *task,
				       const struct cac_event *ev)
{
	key->path_hash = path_hash(ev);
	key->start_ns = task->group_leader->start_time;
	key->tgid = task->tgid;
	key->exec_id = (__u32)task->self_exec_id;
	key->dirfd = ev->dirfd;
	key->ret = ev->ret;
}

/*
 * Counts the open as a repeat when the process made the same open (key
 * `key` of `map`: `repeats` or `failed_repeats`, whose values begin with a
 * struct cac_repeat) within the window; returns the entry (or NULL) so the
 * caller can start a window.
 */
static __always_inline bool counted_repeat(void *map, void *key, __u64 now, struct cac_repeat **entry)
{
	struct cac_repeat *r = bpf_map_lookup_elem(map, key);

	*entry = r;
	if (!r || now - r->window_ns >= cfg_repeat_window_ns)
		return false;
	__sync_fetch_and_add(&r->count, 1);
	r->last_ns = now;
	stat_inc(CAC_STAT_REPEATED);
	return true;
}

/* A new entry's counts and first-open fields, from the emitted open in `ev`. */
static __always_inline void fill_repeat(struct cac_repeat *r, const struct cac_event *ev)
{
	r->first_ns = ev->ts_ns;
	r->window_ns = ev->ts_ns;
	r->last_ns = 0;
	r->count = 0;
	r->cgroup_id = ev->cgroup_id;
	r->cgroup_v1_id = ev->cgroup_v1_id;
	r->vol_ino = ev->vol_ino;
	r->volume_id = ev->volume_id;
	r->tid = ev->tid;
	r->uid = ev->uid;
	r->gid = ev->gid;
	r->mnt_ns = ev->mnt_ns;
	r->fmode = ev->fmode;
	r->open_flags = ev->open_flags;
	r->syscall = ev->syscall;
	r->depth = ev->depth;
	r->session = ev->session;
	r->_pad = 0;
	__builtin_memcpy(r->comm, ev->comm, sizeof(r->comm));
}

/* Inserts a new entry (a full map is counted). */
static __always_inline void insert_repeat(void *map, void *key, void *value)
{
	long err = bpf_map_update_elem(map, key, value, BPF_NOEXIST);

	/* -EEXIST: another thread of the process made it first. */
	if (err && err != -EEXIST)
		stat_inc(CAC_STAT_REPEAT_FULL);
}

/*
 * The open in `ev` is emitted and begins a window: roll the entry over, or
 * make one from the event's fields.
 */
static __always_inline void start_window(struct cac_repeat_key *key, struct cac_repeat *r,
					 const struct cac_event *ev)
{
	struct cac_repeat fresh;

	if (r) {
		r->window_ns = ev->ts_ns;
		return;
	}
	fill_repeat(&fresh, ev);
	insert_repeat(&repeats, key, &fresh);
}

/* start_window for a failed open: the entry keeps its path too. */
static __always_inline void start_failed_window(struct cac_failed_key *key, struct cac_repeat *r,
						const struct cac_event *ev)
{
	struct cac_failed_repeat *fresh;
	__u32 zero = 0;

	if (r) {
		r->window_ns = ev->ts_ns;
		return;
	}
	fresh = bpf_map_lookup_elem(&failed_scratch, &zero);
	if (!fresh)
		return;
	fill_repeat(&fresh->head, ev);
	fresh->ret = ev->ret;
	fresh->dirfd = ev->dirfd;
	fresh->kind = ev->kind;
	fresh->_pad = 0;
	fresh->path_len = ev->path_len;
	fresh->_reserved = 0;
	__builtin_memcpy(fresh->path, ev->strings, sizeof(fresh->path));
	insert_repeat(&failed_repeats, key, fresh);
}

static __always_inline struct cac_event *scratch_event(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

/* The file at `fd` in the task's table, or NULL. */
static __always_inline struct file *file_of_fd(struct task_struct *task, long fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file **slot;
	struct file *raw = NULL;

	if (fd >= fdt->max_fds)
		return NULL;
	slot = fdt->fd;
	if (bpf_probe_read_kernel(&raw, sizeof(raw), &slot[fd]))
		return NULL;
	return raw;
}

/*
 * `raw`, just opened by `task` (ret: the new fd, or what the io_uring open
 * returned), if it is a file of a watched volume.
 */
static __always_inline int on_file_opened(struct task_struct *task, struct file *raw, long ret,
					  enum cac_syscall sc, const struct uring_open *uring)
{
	/* Set field by field once needed: no stores on the reject path. */
	struct cac_dir_key key;
	struct cac_repeat_key rkey;
	struct cac_repeat *rep = NULL;
	struct cac_dir_info *info = NULL;
	struct dentry *cur, *parent;
	struct cac_event *ev;
	struct file *file;
	struct inode *inode;
	__u32 dev, depth;
	__u64 now;

	if (!raw)
		return 0;
	file = bpf_core_cast(raw, struct file);
	/* Most opens are on filesystems without volumes: that test first. */
	inode = file->f_inode;
	dev = inode->i_sb->s_dev;
	if (!maybe_watched_dev(dev))
		return 0;
	stat_inc(CAC_STAT_OPENS_SEEN);
	if (file->f_mode & FMODE_PATH)
		return 0;
	if ((inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	cur = file->f_path.dentry;

	key.dev = dev;
	key._pad = 0;
	for (depth = 1; depth <= CAC_MAX_WALK; depth++) {
		parent = cur->d_parent;
		if (!parent || parent == cur)
			return 0;
		key.ino = parent->d_inode->i_ino;
		if (maybe_watched_dir(key.ino, dev)) {
			info = bpf_map_lookup_elem(&watched_dirs, &key);
			if (info)
				break;
		}
		cur = parent;
	}
	if (!info)
		return 0;
	now = bpf_ktime_get_ns();
	/*
	 * Repeats first: the collector's own opens never start a window (they
	 * stop below), so they are never counted as repeats.
	 */
	if (cfg_repeat_window_ns) {
		repeat_key(&rkey, task, file, inode, dev);
		if (counted_repeat(&repeats, &rkey, now, &rep))
			return 0;
	}
	if (own_access(task))
		return 0;

	ev = scratch_event();
	if (!ev)
		return 0;
	fill_task(ev, task, now, ret, sc, CAC_KIND_VOLUME_OPEN);
	fill_args(ev, task, sc, uring);
	ev->file_ino = inode->i_ino;
	ev->file_dev = dev;
	ev->vol_ino = key.ino;
	ev->volume_id = info->volume_id;
	ev->fmode = file->f_mode;
	ev->depth = depth;
	ev->name_len = 0;
	{
		__u32 off = ev->path_len;
		long n;

		if (off > CAC_PATH_LEN)
			off = CAC_PATH_LEN;
		n = bpf_probe_read_kernel_str(&ev->strings[off], CAC_NAME_LEN,
					      file->f_path.dentry->d_name.name);
		ev->name_len = n > 0 ? n : 0;
	}
	if (cfg_repeat_window_ns)
		start_window(&rkey, rep, ev);
	emit(ev, false);
	return 0;
}

/* Does the path contain "/volumes/kubernetes.io~"? */
static __always_inline bool names_volume_tree(const char *path)
{
	static const char marker[CAC_MARKER_LEN] = "/volumes/kubernetes.io";
	__u32 i, j;

	for (i = CAC_MARKER_LEN; i < CAC_PATH_LEN; i++) {
		char c = path[i];

		if (c == '\0')
			return false;
		if (c != '~')
			continue;
		for (j = 0; j < CAC_MARKER_LEN; j++) {
			if (path[(i - CAC_MARKER_LEN + j) & (CAC_PATH_LEN - 1)] != marker[j])
				break;
		}
		if (j == CAC_MARKER_LEN)
			return true;
	}
	return false;
}

static __always_inline int on_open_failed(struct task_struct *task, long ret, enum cac_syscall sc,
					  const struct uring_open *uring)
{
	bool denied = ret == -EACCES || ret == -EPERM;
	struct cac_repeat *rep = NULL;
	struct cac_failed_key fkey;
	struct cac_event *ev;

	if (!denied && !cfg_report_failed)
		return 0;
	ev = scratch_event();
	if (!ev)
		return 0;
	fill_args(ev, task, sc, uring);
	if (!denied && !names_volume_tree(ev->strings))
		return 0;
	if (own_access(task))
		return 0;
	fill_task(ev, task, bpf_ktime_get_ns(), ret, sc,
		  denied ? CAC_KIND_DENIED : CAC_KIND_VOLUME_PATH_FAILED);
	if (cfg_repeat_window_ns) {
		failed_key(&fkey, task, ev);
		if (counted_repeat(&failed_repeats, &fkey, ev->ts_ns, &rep))
			return 0;
	}
	ev->file_ino = 0;
	ev->file_dev = 0;
	ev->vol_ino = 0;
	ev->volume_id = 0;
	ev->fmode = 0;
	ev->depth = 0;
	ev->name_len = 0;
	if (cfg_repeat_window_ns)
		start_failed_window(&fkey, rep, ev);
	emit(ev, denied);
	return 0;
}

static __always_inline int on_exit(struct trace_event_raw_sys_exit *ctx, enum cac_syscall sc)
{
	struct task_struct *task = bpf_get_current_task_btf();
	long ret = ctx->ret;

	if (ret >= 0)
		return on_file_opened(task, file_of_fd(task, ret), ret, sc, NULL);
	return on_open_failed(task, ret, sc, NULL);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int trace_config_access_openat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, CAC_SYS_OPENAT);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int trace_config_access_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, CAC_SYS_OPENAT2);
}

SEC("tracepoint/syscalls/sys_exit_open")
int trace_config_access_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, CAC_SYS_OPEN);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int trace_config_access_creat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, CAC_SYS_CREAT);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int trace_config_access_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, CAC_SYS_OPEN_BY_HANDLE_AT);
}

/*
 * io_uring opens (IORING_OP_OPENAT, IORING_OP_OPENAT2) make no open
 * syscall: the request is issued by the submitting thread or one of its
 * io_uring workers, and its result posted as a completion.  The submission
 * keeps the path and flags (uring_opens); the completion looks at the file
 * exactly as an open syscall's exit does: from the fd table, or from the
 * ring's fixed-file table for an open into a fixed slot.  Both programs run
 * only for io_uring requests, never on other syscalls.
 */
static __always_inline struct io_open *uring_open_of(struct io_kiocb *req)
{
	__u8 op = req->opcode;

	if (op != IORING_OP_OPENAT && op != IORING_OP_OPENAT2)
		return NULL;
	return bpf_core_cast(&req->cmd, struct io_open);
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(trace_config_access_io_uring_submit, struct io_kiocb *req)
{
	struct io_open *open = uring_open_of(req);
	__u64 key = (__u64)(unsigned long)req;
	struct uring_open *u;
	__u32 zero = 0;

	if (!open)
		return 0;
	if (req->flags & REQ_F_CQE_SKIP) {
		stat_inc(CAC_STAT_URING_UNOBSERVED);
		return 0;
	}
	u = bpf_map_lookup_elem(&uring_scratch, &zero);
	if (!u)
		return 0;
	u->dirfd = open->dfd;
	u->open_flags = (__u32)open->how.flags;
	u->path[0] = '\0';
	bpf_probe_read_kernel_str(u->path, sizeof(u->path), open->filename->name);
	bpf_map_update_elem(&uring_opens, &key, u, BPF_ANY);
	return 0;
}

/* The file an io_uring open put into a fixed slot (res: 0, or the slot it chose). */
static __always_inline struct file *uring_fixed_file(struct io_kiocb *req, struct io_open *open, long res)
{
	__u32 slot = open->file_slot == IORING_FILE_INDEX_ALLOC ? (__u32)res : open->file_slot - 1;
	struct io_rsrc_data *table = &req->ctx->file_table.data;
	struct io_rsrc_node *node = NULL;

	if (slot >= table->nr)
		return NULL;
	if (bpf_probe_read_kernel(&node, sizeof(node), &table->nodes[slot]) || !node)
		return NULL;
	node = bpf_core_cast(node, struct io_rsrc_node);
	/* The low bits of file_ptr are flags (FFS_NOWAIT, FFS_ISREG). */
	return (struct file *)(node->file_ptr & ~3UL);
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(trace_config_access_io_uring, struct io_ring_ctx *ring, void *req_ptr, struct io_uring_cqe *cqe)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 key = (__u64)(unsigned long)req_ptr;
	struct uring_open *u;
	struct io_kiocb *req;
	struct io_open *open;
	struct file *file;
	long res;

	if (!req_ptr || !cqe)
		return 0;
	req = bpf_core_cast(req_ptr, struct io_kiocb);
	open = uring_open_of(req);
	if (!open)
		return 0;
	res = cqe->res;
	u = bpf_map_lookup_elem(&uring_opens, &key);
	if (res < 0)
		on_open_failed(task, res, CAC_SYS_IO_URING, u);
	else {
		if (open->file_slot)
			file = uring_fixed_file(req, open, res);
		else
			file = file_of_fd(task, res);
		on_file_opened(task, file, res, CAC_SYS_IO_URING, u);
	}
	if (u)
		bpf_map_delete_elem(&uring_opens, &key);
	return 0;
}

/* The cgroups of `task`, as `cgroup_classes` keys them. */
static __always_inline void task_cgroups(struct task_struct *task, struct cac_cgroup_key *key)
{
	key->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	key->cgroup_v1_id = cgroup_v1_id(task);
}

/* Record process `tgid` (seen in `task`) in pid_samples for user space. */
static __always_inline void record_process(struct task_struct *task, __u32 tgid, struct cac_cgroup_key *key,
					   enum cac_sample_source source)
{
	struct cac_sample sample = {};

	sample.cgroup_id = key->cgroup_id;
	sample.cgroup_v1_id = key->cgroup_v1_id;
	sample.ts_ns = bpf_ktime_get_ns();
	sample.tid = task->pid;
	sample.source = source;
	if (bpf_map_update_elem(&pid_samples, &tgid, &sample, BPF_ANY))
		stat_inc(CAC_STAT_RECORDS_FULL);
}

/*
 * Give process `tgid` the container entry of its cgroups' class; a process
 * whose cgroups have no class yet is recorded for user space.  `fresh`: a
 * new process, which has no stale entry to remove.
 */
static __always_inline void place_process(struct task_struct *task, __u32 tgid, enum cac_sample_source source,
					  bool fresh)
{
	struct cac_cgroup_key key = {};
	struct cac_cgroup_class *class;

	task_cgroups(task, &key);
	class = bpf_map_lookup_elem(&cgroup_classes, &key);
	if (class && class->in_pod) {
		bpf_map_update_elem(&container_pids, &tgid, &class->container, BPF_ANY);
		return;
	}
	if (!fresh)
		bpf_map_delete_elem(&container_pids, &tgid);
	if (!class)
		record_process(task, tgid, &key, source);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(inherit_container, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid, child_tgid = child->tgid;
	struct cac_container_pid *entry;

	/* A new thread shares its process's entry; only new processes get one. */
	if (child_tgid == parent_tgid)
		return 0;
	/* Same cgroups as the parent (not CLONE_INTO_CGROUP): copy its entry. */
	if (child->cgroups == parent->cgroups) {
		entry = bpf_map_lookup_elem(&container_pids, &parent_tgid);
		if (entry) {
			bpf_map_update_elem(&container_pids, &child_tgid, entry, BPF_ANY);
			return 0;
		}
	}
	place_process(child, child_tgid, CAC_SAMPLE_FORK, true);
	return 0;
}

SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(note_cgroup_move, struct cgroup *dst, const char *path, struct task_struct *task,
	     bool threadgroup)
{
	/* Fired after the move: the task's css_set is the new one. */
	place_process(task, task->tgid, CAC_SAMPLE_MOVE, false);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(forget_process, struct task_struct *task)
{
	__u32 tgid = task->tgid;

	/* Only the thread-group leader's exit ends the process. */
	if (task->pid != task->tgid)
		return 0;
	bpf_map_delete_elem(&container_pids, &tgid);
	bpf_map_delete_elem(&pid_samples, &tgid);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(trace_pod_syscalls, struct pt_regs *regs, long id)
{
	struct cac_cgroup_key key = {};
	struct task_struct *task;
	__u32 zero = 0, tgid;
	__u32 *tick;

	tick = bpf_map_lookup_elem(&sample_tick, &zero);
	if (!tick)
		return 0;
	if (++*tick < cfg_sample_every)
		return 0;
	*tick = 0;

	task = bpf_get_current_task_btf();
	tgid = task->tgid;
	if (!tgid)
		return 0;
	task_cgroups(task, &key);
	record_process(task, tgid, &key, CAC_SAMPLE_SYSCALL);
	stat_inc(CAC_STAT_SAMPLED);
	return 0;
}

/*
 * Run once by user space (BPF_PROG_TEST_RUN) in its own context: records the
 * collector's thread-group id as the initial pid namespace numbers it.
 */
SEC("syscall")
int learn_self(void *ctx)
{
	self_tgid = bpf_get_current_pid_tgid() >> 32;
	return 0;
}
