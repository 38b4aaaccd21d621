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
 * `floor_sys_enter` (tp_btf/sys_enter, on every syscall) is loaded only for a
 * comparison row: the dispatch cost of the optional syscall sampler.
 * With kernel.bpf_stats_enabled=1 an empty program's run time is the
 * statistics' own cost, which the benchmark subtracts from the collector's.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

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
