/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * svc_endpoints.bpf.h - the one definition of the map `svc_endpoints`:
 * (IP, port, protocol) -> Service port and pod, for other collectors' BPF
 * programs.  collector.bpf.c creates it (user space writes it, no program
 * there reads it); floor.bpf.c's lookup program is given the collector's
 * map before load.  Not preallocated; user space sets max_entries to its
 * own map's bound.  Include after bpf_helpers.h and cac_abi.h.
 */
#ifndef CAC_SVC_ENDPOINTS_BPF_H
#define CAC_SVC_ENDPOINTS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct cac_endpoint_key);
	__type(value, struct cac_service_endpoint);
} svc_endpoints SEC(".maps");

#endif /* CAC_SVC_ENDPOINTS_BPF_H */
