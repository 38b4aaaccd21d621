/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vmlinux_min.h - the kernel types the BPF programs use, and nothing else.
 *
 * Pinned here instead of generated from the build host's kernel.  Every
 * struct carries preserve_access_index, so each field access is a CO-RE
 * relocation that libbpf resolves against the running kernel's BTF at load
 * time: only field names and kinds matter, not offsets or the other members.
 */
#ifndef __VMLINUX_MIN_H__
#define __VMLINUX_MIN_H__
/* It stands in for vmlinux.h: bpf_tracing.h then names registers as the kernel does. */
#define __VMLINUX_H__

#if !defined(__TARGET_ARCH_x86) && !defined(__TARGET_ARCH_arm64)
#error "vmlinux_min.h pins the saved registers of x86_64 and arm64 only; add the target's first"
#endif

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef _Bool bool;
typedef __u32 dev_t;
typedef __u16 umode_t;
typedef int pid_t;
typedef unsigned int fmode_t;

enum {
	false = 0,
	true = 1,
};

/* bpf_helper_defs.h wants these declared. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

/* The XDP context and verdicts (uapi linux/bpf.h): only the benchmarks'
 * lookup program (floor.bpf.c) uses them, run by BPF_PROG_TEST_RUN. */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP = 1,
	XDP_PASS = 2,
};

/* Map flags (uapi linux/bpf.h). */
enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/*
 * The saved user registers, per architecture: bpf_tracing.h's
 * PT_REGS_PARMn_SYSCALL() read syscall arguments from them (x86_64: di, si,
 * dx, r10; arm64: orig_x0, then regs[1..]).
 */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	long unsigned int r15;
	long unsigned int r14;
	long unsigned int r13;
	long unsigned int r12;
	long unsigned int bp;
	long unsigned int bx;
	long unsigned int r11;
	long unsigned int r10;
	long unsigned int r9;
	long unsigned int r8;
	long unsigned int ax;
	long unsigned int cx;
	long unsigned int dx;
	long unsigned int si;
	long unsigned int di;
	long unsigned int orig_ax;
	long unsigned int ip;
	long unsigned int cs;
	long unsigned int flags;
	long unsigned int sp;
	long unsigned int ss;
} __attribute__((preserve_access_index));
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
} __attribute__((preserve_access_index));

struct pt_regs {
	union {
		struct user_pt_regs user_regs;
		struct {
			__u64 regs[31];
			__u64 sp;
			__u64 pc;
			__u64 pstate;
		};
	};
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));
#endif

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} __attribute__((preserve_access_index));

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long int id;
	long int ret;
	char __data[0];
} __attribute__((preserve_access_index));

struct super_block {
	dev_t s_dev;
} __attribute__((preserve_access_index));

struct inode {
	umode_t i_mode;
	struct super_block *i_sb;
	long unsigned int i_ino;
} __attribute__((preserve_access_index));

struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
	struct super_block *d_sb;
} __attribute__((preserve_access_index));

struct path {
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct file {
	fmode_t f_mode;
	struct inode *f_inode;
	unsigned int f_flags;
	struct path f_path;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct mnt_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));

struct kernfs_node {
	struct kernfs_node *__parent;
	const char *name;
	u64 id;
} __attribute__((preserve_access_index));

/* Before Linux 6.15 the parent was `parent`. */
struct kernfs_node___pre_6_15 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct cgroup_subsys_state {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup_subsys_state *subsys[16];
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

typedef struct {
	__u32 val;
} kuid_t;

typedef struct {
	__u32 val;
} kgid_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
} __attribute__((preserve_access_index));

struct pid_namespace;

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	/* numbers[level + 1] in the kernel: one per pid namespace the pid lives in. */
	struct upid numbers[4];
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct pid *thread_pid;
	char comm[16];
	const struct cred *cred;
	struct files_struct *files;
	struct nsproxy *nsproxy;
	struct css_set *cgroups;
	struct task_struct *group_leader;
	u64 start_time;
	u64 self_exec_id;
} __attribute__((preserve_access_index));

/* task_struct.flags: an io_uring worker or SQ-poll thread. */
#define PF_IO_WORKER 0x00000010

/* io_uring (io_uring/openclose.c, io_uring/rsrc.h). */
struct open_how {
	u64 flags;
	u64 mode;
	u64 resolve;
} __attribute__((preserve_access_index));

struct filename {
	const char *name;
} __attribute__((preserve_access_index));

struct io_cmd_data {
	struct file *file;
	u8 data[56];
} __attribute__((preserve_access_index));

/* The request's command data (io_kiocb.cmd) of an IORING_OP_OPENAT(2). */
struct io_open {
	struct file *file;
	int dfd;
	u32 file_slot;
	struct filename *filename;
	struct open_how how;
} __attribute__((preserve_access_index));

struct io_rsrc_node {
	unsigned long file_ptr;
} __attribute__((preserve_access_index));

struct io_rsrc_data {
	unsigned int nr;
	struct io_rsrc_node **nodes;
} __attribute__((preserve_access_index));

struct io_file_table {
	struct io_rsrc_data data;
} __attribute__((preserve_access_index));

struct io_ring_ctx {
	struct io_file_table file_table;
} __attribute__((preserve_access_index));

struct io_kiocb {
	union {
		struct file *file;
		struct io_cmd_data cmd;
	};
	u8 opcode;
	u64 flags;
	struct io_ring_ctx *ctx;
} __attribute__((preserve_access_index));

/* io_kiocb.flags: no completion is posted for a success (IOSQE_CQE_SKIP_SUCCESS). */
#define REQ_F_CQE_SKIP (1ULL << 6)

struct io_uring_cqe {
	u64 user_data;
	s32 res;
	u32 flags;
} __attribute__((preserve_access_index));

/* UAPI (include/uapi/linux/io_uring.h): stable numbers. */
enum {
	IORING_OP_OPENAT = 18,
	IORING_OP_OPENAT2 = 28,
};
#define IORING_FILE_INDEX_ALLOC (~0U)

#endif /* __VMLINUX_MIN_H__ */
