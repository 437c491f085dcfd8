/* fsyncs.c - several fdatasyncs at once, through io_uring when the kernel
 * has it.
 *
 * A group commit has to make N files durable.  One fdatasync after the
 * other costs N device cache flushes, each waiting for the one before;
 * issued together, the kernel runs them side by side and the block layer
 * merges the flushes that wait at the same time into one, and a
 * journalling file system commits them in one transaction.  syncfs()
 * would get the single flush too, but it writes and waits for every other
 * program's dirty data on the volume.
 *
 * The ring also keeps the loop free while the disk works: the syncs are
 * submitted and the call returns; the ring's descriptor turns readable
 * when completions wait, and the loop serves the other sessions (and
 * gathers the next batch) meanwhile.
 *
 * io_uring is used for nothing else: a ring of FSYNCS_RING entries set up
 * at the first batch, used only by the one thread of the daemon, and
 * restricted to the FSYNC operation.  Where the kernel lacks it (before
 * 5.1, CONFIG_IO_URING off, kernel.io_uring_disabled, a seccomp filter)
 * the syncs run one after the other, blocking the loop, as correct and
 * only slower.
 *
 * The ring's layout is the kernel's ABI (include/uapi/linux/io_uring.h);
 * the few structures needed are declared here because the musl
 * toolchains ship no kernel headers.
 */
#include "fsyncs.h"
#include "io.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(SYS_io_uring_setup) && defined(SYS_io_uring_enter) && defined(SYS_io_uring_register)

#define OP_FSYNC            3          /* IORING_OP_FSYNC */
#define FSYNC_DATASYNC      1u         /* IORING_FSYNC_DATASYNC */
#define ENTER_GETEVENTS     1u         /* IORING_ENTER_GETEVENTS */
#define SETUP_R_DISABLED    (1u << 6)  /* IORING_SETUP_R_DISABLED (5.10) */
#define REG_RESTRICTIONS    11         /* IORING_REGISTER_RESTRICTIONS */
#define REG_ENABLE_RINGS    12         /* IORING_REGISTER_ENABLE_RINGS */
#define RESTRICT_REGISTER   0          /* IORING_RESTRICTION_REGISTER_OP */
#define RESTRICT_SQE_OP     1          /* IORING_RESTRICTION_SQE_OP */
#define OFF_SQ_RING         0ull       /* IORING_OFF_SQ_RING */
#define OFF_CQ_RING         0x8000000ull
#define OFF_SQES            0x10000000ull

struct sq_offsets { uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
                    uint64_t resv2; };
struct cq_offsets { uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
                    uint64_t resv2; };
struct params {
	uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
	uint32_t resv[3];
	struct sq_offsets sq_off;
	struct cq_offsets cq_off;
};
struct sqe {             /* 64 bytes */
	uint8_t opcode, flags;
	uint16_t ioprio;
	int32_t fd;
	uint64_t off, addr;
	uint32_t len, fsync_flags;
	uint64_t user_data;
	uint64_t pad[3];
};
struct cqe { uint64_t user_data; int32_t res; uint32_t flags; };
struct restriction { uint16_t opcode; uint8_t op; uint8_t resv; uint32_t resv2[3]; };

static struct {
	int state;           /* 0 not tried, 1 ready, -1 unavailable */
	int fd;
	unsigned entries;
	uint32_t *sq_head, *sq_tail, *sq_mask, *sq_array;
	uint32_t *cq_head, *cq_tail, *cq_mask;
	struct sqe *sqes;
	struct cqe *cqes;
} ring = { 0, -1, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL };

static void *map(size_t len, uint64_t off)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd,
	               (off_t)off);

	return p == MAP_FAILED ? NULL : p;
}

/* The ring may only ever run FSYNC and may not be reconfigured: a bug
 * elsewhere cannot turn it into a way around the io_ seam. */
static int restrict_ring(void)
{
	struct restriction r;

	memset(&r, 0, sizeof r);
	r.opcode = RESTRICT_SQE_OP;
	r.op = OP_FSYNC;
	if (io_uring(SYS_io_uring_register, ring.fd, REG_RESTRICTIONS, (long)&r, 1) < 0) {
		return -1;
	}
	return io_uring(SYS_io_uring_register, ring.fd, REG_ENABLE_RINGS, 0, 0) < 0 ? -1 : 0;
}

static int ring_setup(void)
{
	struct params p;
	unsigned char *sq, *cq;

	memset(&p, 0, sizeof p);
	p.flags = SETUP_R_DISABLED;
	ring.fd = (int)io_uring(SYS_io_uring_setup, FSYNCS_RING, (long)&p, 0, 0);
	if (ring.fd < 0) {
		return -1;
	}
	/* (The kernel opens the ring O_CLOEXEC.) */
	if (restrict_ring() < 0) {
		return -1;
	}
	sq = map(p.sq_off.array + p.sq_entries * sizeof(uint32_t), OFF_SQ_RING);
	cq = map(p.cq_off.cqes + p.cq_entries * sizeof(struct cqe), OFF_CQ_RING);
	ring.sqes = map(p.sq_entries * sizeof(struct sqe), OFF_SQES);
	if (sq == NULL || cq == NULL || ring.sqes == NULL) {
		return -1;
	}
	ring.entries = p.sq_entries;
	ring.sq_head = (uint32_t *)(sq + p.sq_off.head);
	ring.sq_tail = (uint32_t *)(sq + p.sq_off.tail);
	ring.sq_mask = (uint32_t *)(sq + p.sq_off.ring_mask);
	ring.sq_array = (uint32_t *)(sq + p.sq_off.array);
	ring.cq_head = (uint32_t *)(cq + p.cq_off.head);
	ring.cq_tail = (uint32_t *)(cq + p.cq_off.tail);
	ring.cq_mask = (uint32_t *)(cq + p.cq_off.ring_mask);
	ring.cqes = (struct cqe *)(cq + p.cq_off.cqes);
	return 0;
}

static void ring_off(void)
{
	ring.state = -1;
	if (ring.fd >= 0) {
		close(ring.fd);
		ring.fd = -1;
	}
}

static int ring_ready(void)
{
	if (ring.state == 0) {
		ring.state = 1;
		if (ring_setup() < 0) {
			ring_off();   /* mappings made stay unused: set-up runs once */
		}
	}
	return ring.state > 0;
}

/* Puts fd[0..n-1] (n <= ring.entries) on the ring and returns without
 * waiting; 0, or -1 when the ring failed (given up for good, nothing of
 * it counted on). */
static int ring_submit(const int *fd, unsigned n, int data)
{
	uint32_t tail = *ring.sq_tail, i;
	unsigned submitted = 0;
	long r;

	for (i = 0; i < n; i++) {
		uint32_t k = (tail + i) & *ring.sq_mask;
		struct sqe *s = &ring.sqes[k];

		memset(s, 0, sizeof *s);
		s->opcode = OP_FSYNC;
		s->fd = fd[i];
		s->fsync_flags = data ? FSYNC_DATASYNC : 0;
		s->user_data = i;
		ring.sq_array[k] = k;
	}
	__atomic_store_n(ring.sq_tail, tail + n, __ATOMIC_RELEASE);
	while (submitted < n) {
		r = io_uring(SYS_io_uring_enter, ring.fd, n - submitted, 0, 0);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r <= 0) {
			ring_off();
			return -1;
		}
		submitted += (unsigned)r;
	}
	return 0;
}

/* Takes the completions that arrived, setting err[i] (left -1 while
 * pending); with wait, blocks until *left is 0.  -1 when the ring failed
 * (given up: the entries still -1 are the caller's to sync). */
static int ring_reap(int *err, unsigned n, unsigned *left, int wait)
{
	uint32_t head;
	long r;

	for (;;) {
		head = *ring.cq_head;
		while (head != __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE)) {
			const struct cqe *c = &ring.cqes[head & *ring.cq_mask];

			if (c->user_data < n && err[c->user_data] < 0) {
				err[c->user_data] = c->res < 0 ? -c->res : 0;
				(*left)--;
			}
			head++;
		}
		__atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
		if (*left == 0 || !wait) {
			return 0;
		}
		r = io_uring(SYS_io_uring_enter, ring.fd, 0, *left, ENTER_GETEVENTS);
		if (r < 0 && errno != EINTR) {
			ring_off();
			return -1;
		}
	}
}

int fsyncs_fd(void)
{
	return ring.state > 0 ? ring.fd : -1;
}

const char *fsyncs_method(void)
{
	return ring.state == 0 ? "untried" : ring.state > 0 ? "io_uring" : "serial";
}

#else
const char *fsyncs_method(void)
{
	return "serial";
}

static int ring_ready(void)
{
	return 0;
}

static int ring_submit(const int *fd, unsigned n, int data)
{
	(void)fd;
	(void)n;
	(void)data;
	return -1;
}

static int ring_reap(int *err, unsigned n, unsigned *left, int wait)
{
	(void)err;
	(void)n;
	(void)left;
	(void)wait;
	return -1;
}

int fsyncs_fd(void)
{
	return -1;
}
#endif

/* The group in flight: one at a time. */
static struct {
	int fd[FSYNCS_RING];
	int err[FSYNCS_RING];   /* -1 while not done */
	unsigned n, left;
	int data, on_ring;
} group;

static int sync_one(int fd, int data)
{
	int r;

	do {
		r = data ? fdatasync(fd) : fsync(fd);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? (errno ? errno : EIO) : 0;
}

int fsyncs_start(const int *fd, unsigned n, int data, int block)
{
	if (n > FSYNCS_RING) {
		n = FSYNCS_RING;   /* the header's contract; never more */
	}
	memcpy(group.fd, fd, n * sizeof *fd);
	memset(group.err, 0xff, n * sizeof *group.err);   /* -1: not done */
	group.n = group.left = n;
	group.data = data;
	group.on_ring = n > (block ? 1u : 0u) && ring_ready() && ring_submit(fd, n, data) == 0;
	return group.on_ring;
}

int fsyncs_collect(int *err, int wait)
{
	unsigned i;

	if (group.on_ring && group.left > 0 &&
	    ring_reap(group.err, group.n, &group.left, wait) < 0) {
		group.on_ring = 0;   /* the rest one by one, below */
	}
	if (group.on_ring && group.left > 0) {
		return 0;
	}
	for (i = 0; i < group.n; i++) {
		if (group.err[i] < 0) {
			group.err[i] = sync_one(group.fd[i], group.data);
		}
	}
	group.on_ring = 0;
	group.left = 0;
	memcpy(err, group.err, group.n * sizeof *err);
	return 1;
}
