// SPDX-License-Identifier: Apache-2.0
/*
 * io_uring_open.c - opens files through io_uring, for tests/container.rs.
 *
 *   io_uring_open [--fixed | --async | --skip] PATH...
 *   io_uring_open --loop N PATH     (N opens and closes; PATH "-": N no-ops)
 *
 * Each PATH is opened read-only with one IORING_OP_OPENAT request, with the
 * raw syscalls (io_uring_setup, mmap of the rings, io_uring_enter; no
 * liburing): into the fd table, or with --fixed into slot 0 of a registered
 * fixed-file table (sqe->file_index = 1), or with --async forced onto an
 * io_uring worker thread (IOSQE_ASYNC), or with --skip asking for no
 * completion on success (IOSQE_CQE_SKIP_SUCCESS; it prints "ok -", as the
 * new fd is then unknown).  Prints "ok RES" or "err ERRNO" per
 * path; --loop (docs/performance.md) prints "ok N" or the first error.  It
 * never reads the files.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ring {
	int fd;
	struct io_uring_sqe *sqes;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
};

static int setup(struct ring *r)
{
	struct io_uring_params p;
	void *sq, *cq;

	memset(&p, 0, sizeof(p));
	r->fd = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (r->fd < 0)
		return -1;
	sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqes == MAP_FAILED)
		return -1;
	r->sq_tail = (unsigned *)((char *)sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)((char *)sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)((char *)sq + p.sq_off.array);
	r->cq_head = (unsigned *)((char *)cq + p.cq_off.head);
	r->cq_tail = (unsigned *)((char *)cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
	return 0;
}

/* One IORING_OP_OPENAT of `path`, submitted and waited for: its result. */
static int open_one(struct ring *r, const char *path, int fixed, int async, int skip)
{
	unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask, head;
	struct io_uring_sqe *sqe = &r->sqes[idx];
	int res;

	memset(sqe, 0, sizeof(*sqe));
	if (strcmp(path, "-") == 0) {
		sqe->opcode = IORING_OP_NOP;
	} else {
		sqe->opcode = IORING_OP_OPENAT;
		sqe->fd = AT_FDCWD;
		sqe->addr = (unsigned long)path;
		sqe->open_flags = O_RDONLY | O_CLOEXEC;
	}
	if (fixed) {
		/* Slot 0; a fixed file has no close-on-exec flag to set. */
		sqe->file_index = 1;
		sqe->open_flags = O_RDONLY;
	}
	if (async)
		sqe->flags = IOSQE_ASYNC;
	if (skip)
		sqe->flags = IOSQE_CQE_SKIP_SUCCESS;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, skip ? 0 : 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -errno;
	if (skip)
		return INT32_MAX;
	head = *r->cq_head;
	if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
		return -EIO;
	res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

/* `n` opens and closes of `path` (no-ops for "-"). */
static int loop(struct ring *r, long n, const char *path)
{
	for (long i = 0; i < n; i++) {
		int res = open_one(r, path, 0, 0, 0);

		if (res < 0) {
			printf("err %d\n", -res);
			return 1;
		}
		if (strcmp(path, "-"))
			close(res);
	}
	printf("ok %ld\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	int fixed = argc > 1 && strcmp(argv[1], "--fixed") == 0;
	int async = argc > 1 && strcmp(argv[1], "--async") == 0;
	int skip = argc > 1 && strcmp(argv[1], "--skip") == 0;
	int table[1] = {-1};
	struct ring r;

	if (setup(&r)) {
		printf("err %d\n", errno);
		return 1;
	}
	if (argc == 4 && strcmp(argv[1], "--loop") == 0)
		return loop(&r, atol(argv[2]), argv[3]);
	if (fixed && syscall(__NR_io_uring_register, r.fd, IORING_REGISTER_FILES, table, 1) < 0) {
		printf("err %d\n", errno);
		return 1;
	}
	for (int i = 1 + fixed + async + skip; i < argc; i++) {
		int res = open_one(&r, argv[i], fixed, async, skip);

		if (res < 0)
			printf("err %d\n", -res);
		else if (res == INT32_MAX)
			printf("ok -\n");
		else
			printf("ok %d\n", res);
		fflush(stdout);
	}
	return 0;
}
