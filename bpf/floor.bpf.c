// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * floor.bpf.c - empty programs: the floor the benchmarks compare against.
 *
 * Design overview
 * ---------------
 * Not part of the collector: only benches/open_overhead.rs loads this object.
 * Attaching any program to a syscall tracepoint has a price of its own (the
 * tracepoint's dispatch, and every syscall of every task taking the slower
 * syscall path while one is attached), whatever the program does.  To tell
 * that price from the cost of the collector's own code, the benchmark
 * attaches these programs, which return at once, to exactly the hooks the
 * collector needs for open detection:
 * tracepoint syscalls/sys_exit_{openat,openat2,open,creat,open_by_handle_at}.
 * The collector's process-lifecycle programs (tp_btf sched_process_fork,
 * sched_process_exit, cgroup_attach_task) do not run per syscall, so the
 * floor has no counterpart for them.
 *
 * The other programs are loaded only for comparison rows: what each way of
 * running a program for the optional syscall sampler costs, empty.
 * `floor_sys_enter` (tp_btf/sys_enter, the sampler's hook),
 * `floor_raw_sys_enter` (raw_tp/sys_enter) and `floor_tp_sys_enter`
 * (tracepoint/raw_syscalls/sys_enter) run on every syscall;
 * `floor_perf_event` runs on a timer instead (a cpu-clock perf event with a
 * sample period, which the benchmark opens on every CPU).
 *
 * `reject_*` are the reference for the collector's unmatched open: on the
 * same tracepoints, the least an open-exit program can do to tell a file
 * it does not watch, which a real reject path cannot go below: take the
 * task, read the new fd's slot of its fd table, load the file's device and
 * compare it with a small global array of watched devices (one that never
 * matches here).
 * With kernel.bpf_stats_enabled=1 an empty program's run time is the
 * statistics' own cost, which the benchmark subtracts from the collector's.
 *
 * `lookup_svc_endpoints` is what another collector's program pays to look
 * an address up in the collector's `svc_endpoints` (benches/service_map.rs
 * gives this object the collector's map and runs the program with
 * BPF_PROG_TEST_RUN, the key as packet data); `floor_xdp`, empty, is its
 * floor.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cac_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tracepoint/syscalls/sys_exit_openat")
int floor_openat(struct trace_event_raw_sys_exit *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int floor_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int floor_open(struct trace_event_raw_sys_exit *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_creat")
int floor_creat(struct trace_event_raw_sys_exit *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int floor_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_sys_enter, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int floor_raw_sys_enter(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int floor_tp_sys_enter(void *ctx)
{
	return 0;
}

SEC("perf_event")
int floor_perf_event(void *ctx)
{
	return 0;
}

/* Watched devices of the reference reject path (none: every open is rejected). */
__u32 reject_devs[4] = {};

static __always_inline int reject(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	long fd = ctx->ret;
	struct fdtable *fdt;
	struct file *raw = NULL;
	__u32 dev, i;

	if (fd < 0)
		return 0;
	fdt = task->files->fdt;
	if (fd >= fdt->max_fds)
		return 0;
	if (bpf_probe_read_kernel(&raw, sizeof(raw), &fdt->fd[fd]) || !raw)
		return 0;
	dev = bpf_core_cast(raw, struct file)->f_inode->i_sb->s_dev;
	for (i = 0; i < 4; i++)
		if (reject_devs[i] == dev)
			return 1;
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int reject_openat(struct trace_event_raw_sys_exit *ctx)
{
	return reject(ctx);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int reject_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return reject(ctx);
}

SEC("tracepoint/syscalls/sys_exit_open")
int reject_open(struct trace_event_raw_sys_exit *ctx)
{
	return reject(ctx);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int reject_creat(struct trace_event_raw_sys_exit *ctx)
{
	return reject(ctx);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int reject_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	return reject(ctx);
}

/* Replaced by the collector's map (bpf_map__reuse_fd) before load. */
#include "svc_endpoints.bpf.h"

SEC("xdp")
int lookup_svc_endpoints(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct cac_endpoint_key key = {};

	if (data + sizeof(key) > end)
		return XDP_ABORTED;
	__builtin_memcpy(&key, data, sizeof(key));
	return bpf_map_lookup_elem(&svc_endpoints, &key) ? XDP_PASS : XDP_DROP;
}

SEC("xdp")
int floor_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}
