/*
 * fwtool - the kernel interfaces the firmware lab's guest needs and BusyBox
 * lacks: device-mapper (a dm-log-writes device and its marks, as
 * `dmsetup create/message/remove` would), UBI volume creation (as
 * `ubimkvol` would) and the i8259's trigger modes (as a PC's firmware sets
 * them).  Static, one per board, built with the board's musl compiler by
 * tests/firmware/fwimage.py.
 *
 *   fwtool dm-logwrites NAME DATADEV LOGDEV   create NAME over DATADEV, logging
 *                                            every write to LOGDEV; prints /dev/dm-N
 *   fwtool dm-linear NAME DEV START SECTORS  SECTORS of DEV from START (512-byte
 *                                            sectors) as NAME; prints /dev/dm-N
 *   fwtool dm-message NAME TEXT...           e.g. "mark ack:3" (a mark in the log)
 *   fwtool dm-remove NAME
 *   fwtool ubi-mkvol /dev/ubiN NAME          a dynamic volume of all free space
 *   fwtool elcr IRQ...                       make these i8259 inputs level-triggered
 *
 * The structures are those of the kernel's uapi headers (linux/dm-ioctl.h,
 * mtd/ubi-user.h), written out here because Debian's musl has no kernel
 * headers; both are stable ABI.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* ---- linux/dm-ioctl.h (version 4) */
#define DM_NAME_LEN 128
#define DM_UUID_LEN 129
#define DM_MAX_TYPE_NAME 16
#define DM_IOCTL 0xfd
#define DM_SUSPEND_FLAG (1u << 1)

struct dm_ioctl {
	uint32_t version[3];
	uint32_t data_size;
	uint32_t data_start;
	uint32_t target_count;
	int32_t open_count;
	uint32_t flags;
	uint32_t event_nr;
	uint32_t padding;
	uint64_t dev;
	char name[DM_NAME_LEN];
	char uuid[DM_UUID_LEN];
	char data[7];
};

struct dm_target_spec {
	uint64_t sector_start;
	uint64_t length;
	int32_t status;
	uint32_t next;
	char target_type[DM_MAX_TYPE_NAME];
};

enum {
	DM_VERSION_CMD = 0,
	DM_REMOVE_ALL_CMD,
	DM_LIST_DEVICES_CMD,
	DM_DEV_CREATE_CMD,
	DM_DEV_REMOVE_CMD,
	DM_DEV_RENAME_CMD,
	DM_DEV_SUSPEND_CMD,
	DM_DEV_STATUS_CMD,
	DM_DEV_WAIT_CMD,
	DM_TABLE_LOAD_CMD,
	DM_TABLE_CLEAR_CMD,
	DM_TABLE_DEPS_CMD,
	DM_TABLE_STATUS_CMD,
	DM_LIST_VERSIONS_CMD,
	DM_TARGET_MSG_CMD,
};

/* ---- mtd/ubi-user.h */
#define UBI_IOC_MAGIC 'o'
#define UBI_VOL_NUM_AUTO (-1)
#define UBI_DYNAMIC_VOLUME 3
#define UBI_MAX_VOLUME_NAME 127

struct ubi_mkvol_req {
	int32_t vol_id;
	int32_t alignment;
	int64_t bytes;
	int8_t vol_type;
	uint8_t flags;
	int16_t name_len;
	int8_t padding2[4];
	char name[UBI_MAX_VOLUME_NAME + 1];
} __attribute__((packed));

static const char *me = "fwtool";

static int fail(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", me, what, strerror(errno));
	return 1;
}

/* A dm ioctl buffer: the header, then up to 16 KiB of payload. */
union dm_buf {
	struct dm_ioctl io;
	uint64_t align;
	unsigned char bytes[16384];
};

static int dm_open(void)
{
	int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);

	if (fd < 0 && errno == ENOENT) {
		/* devtmpfs names it mapper/control; make it if absent. */
		mkdir("/dev/mapper", 0755);
		mknod("/dev/mapper/control", S_IFCHR | 0600, makedev(10, 236));
		fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
	}
	return fd;
}

static void dm_init(union dm_buf *b, const char *name)
{
	memset(b, 0, sizeof *b);
	b->io.version[0] = 4;
	b->io.data_size = sizeof *b;
	b->io.data_start = sizeof b->io;
	snprintf(b->io.name, sizeof b->io.name, "%s", name);
}

static int dm_call(int fd, unsigned long req, union dm_buf *b, const char *what)
{
	if (ioctl(fd, req, b) < 0) {
		return fail(what);
	}
	return 0;
}

static long long dev_sectors(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t end;

	if (fd < 0) {
		return -1;
	}
	end = lseek(fd, 0, SEEK_END);
	close(fd);
	return end < 0 ? -1 : (long long)(end / 512);
}

/* A count of 512-byte sectors given in decimal, at least MIN; -1 with
 * errno EINVAL for anything else (empty, trailing text, out of range). */
static long long sectors_arg(const char *s, long long min)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v < min) {
		errno = EINVAL;
		return -1;
	}
	return v;
}

/* Creates the dm device NAME of one target, TYPE over SECTORS with the
 * parameters FMT formats, makes it live and prints its /dev/dm-N. */
static int dm_create(const char *name, const char *type, long long sectors, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int dm_create(const char *name, const char *type, long long sectors, const char *fmt, ...)
{
	union dm_buf b;
	struct dm_target_spec *spec;
	char params[1024];
	va_list ap;
	int n, fd, rc = 1;

	va_start(ap, fmt);
	n = vsnprintf(params, sizeof params, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof params) {
		errno = E2BIG;
		return fail("table");
	}
	fd = dm_open();
	if (fd < 0) {
		return fail("/dev/mapper/control");
	}
	dm_init(&b, name);
	if (dm_call(fd, _IOWR(DM_IOCTL, DM_DEV_CREATE_CMD, struct dm_ioctl), &b, "create")) {
		goto out;
	}
	dm_init(&b, name);
	b.io.target_count = 1;
	spec = (struct dm_target_spec *)(b.bytes + sizeof b.io);
	spec->sector_start = 0;
	spec->length = (uint64_t)sectors;
	snprintf(spec->target_type, sizeof spec->target_type, "%s", type);
	memcpy(spec + 1, params, (size_t)n + 1);
	spec->next = (uint32_t)((sizeof *spec + (size_t)n + 1 + 7) & ~(size_t)7);
	if (dm_call(fd, _IOWR(DM_IOCTL, DM_TABLE_LOAD_CMD, struct dm_ioctl), &b, "table load")) {
		goto out;
	}
	dm_init(&b, name);   /* no DM_SUSPEND_FLAG: resume, making the table live */
	if (dm_call(fd, _IOWR(DM_IOCTL, DM_DEV_SUSPEND_CMD, struct dm_ioctl), &b, "resume")) {
		goto out;
	}
	printf("/dev/dm-%u\n", minor((dev_t)b.io.dev));
	rc = 0;
out:
	close(fd);
	return rc;
}

static int dm_logwrites(const char *name, const char *data, const char *log)
{
	long long sectors = dev_sectors(data);

	if (sectors <= 0) {
		return fail(data);
	}
	return dm_create(name, "log-writes", sectors, "%s %s", data, log);
}

/* SECTORS of DEV from sector START, as a device of its own: two regions of
 * one disk stand for two disks. */
static int dm_linear(const char *name, const char *dev, const char *start, const char *sectors)
{
	long long first, n;

	if ((first = sectors_arg(start, 0)) < 0) {
		return fail(start);
	}
	if ((n = sectors_arg(sectors, 1)) < 0) {
		return fail(sectors);
	}
	return dm_create(name, "linear", n, "%s %lld", dev, first);
}

static int dm_message(const char *name, int argc, char **argv)
{
	union dm_buf b;
	char *msg;
	size_t off = 0;
	int fd = dm_open();
	int i;

	if (fd < 0) {
		return fail("/dev/mapper/control");
	}
	dm_init(&b, name);
	/* struct dm_target_msg: a 64-bit sector, then the text. */
	msg = (char *)(b.bytes + sizeof b.io + 8);
	for (i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]);

		if (off + n + 2 > 4000) {
			errno = E2BIG;
			return fail("message");
		}
		if (i > 0) {
			msg[off++] = ' ';
		}
		memcpy(msg + off, argv[i], n);
		off += n;
	}
	msg[off] = '\0';
	if (dm_call(fd, _IOWR(DM_IOCTL, DM_TARGET_MSG_CMD, struct dm_ioctl), &b, "message")) {
		return 1;
	}
	close(fd);
	return 0;
}

static int dm_remove(const char *name)
{
	union dm_buf b;
	int fd = dm_open();

	if (fd < 0) {
		return fail("/dev/mapper/control");
	}
	dm_init(&b, name);
	if (dm_call(fd, _IOWR(DM_IOCTL, DM_DEV_REMOVE_CMD, struct dm_ioctl), &b, "remove")) {
		return 1;
	}
	close(fd);
	return 0;
}

/* Free space of /dev/ubiN in bytes, from sysfs. */
static long long ubi_free(const char *dev)
{
	const char *n = strrchr(dev, '/');
	char path[256];
	long long blocks = -1, size = -1;
	FILE *f;

	n = n ? n + 1 : dev;
	snprintf(path, sizeof path, "/sys/class/ubi/%s/avail_eraseblocks", n);
	if ((f = fopen(path, "r")) != NULL) {
		if (fscanf(f, "%lld", &blocks) != 1) {
			blocks = -1;
		}
		fclose(f);
	}
	snprintf(path, sizeof path, "/sys/class/ubi/%s/eraseblock_size", n);
	if ((f = fopen(path, "r")) != NULL) {
		if (fscanf(f, "%lld", &size) != 1) {
			size = -1;
		}
		fclose(f);
	}
	return blocks > 0 && size > 0 ? blocks * size : -1;
}

static int ubi_mkvol(const char *dev, const char *name)
{
	struct ubi_mkvol_req r;
	long long bytes = ubi_free(dev);
	int fd;

	if (bytes <= 0) {
		errno = ENOSPC;
		return fail(dev);
	}
	memset(&r, 0, sizeof r);
	r.vol_id = UBI_VOL_NUM_AUTO;
	r.alignment = 1;
	r.bytes = bytes;
	r.vol_type = UBI_DYNAMIC_VOLUME;
	r.name_len = (int16_t)snprintf(r.name, sizeof r.name, "%s", name);
	if ((fd = open(dev, O_RDONLY | O_CLOEXEC)) < 0) {
		return fail(dev);
	}
	if (ioctl(fd, _IOW(UBI_IOC_MAGIC, 0, struct ubi_mkvol_req), &r) < 0) {
		return fail("UBI_IOCMKVOL");
	}
	printf("%s_%d %lld\n", strrchr(dev, '/') ? strrchr(dev, '/') + 1 : dev, r.vol_id, bytes);
	close(fd);
	return 0;
}

/* The i8259's edge/level control registers (ELCR), at I/O ports 0x4d0
 * (IRQ 0-7) and 0x4d1 (IRQ 8-15), one bit an input, 1 for level.
 *
 * PCI interrupts are level-triggered and shared.  A PC's firmware marks
 * their i8259 inputs level in the ELCR; so does YAMON on a MIPS Malta
 * board, but qemu's Malta starts the kernel without YAMON, and Linux
 * leaves the ELCR as it finds it: edge.  Two virtio disks on one
 * edge-triggered input then lose a completion now and then (the second
 * raises its interrupt while the first still holds the line high: no new
 * edge), and every request of both waits for good.  The rcS does here
 * what YAMON does. */
static int elcr(int argc, char **argv)
{
	unsigned char v[2];
	int fd, i;

	fd = open("/dev/port", O_RDWR);
	if (fd < 0) {
		return fail("/dev/port");
	}
	if (pread(fd, v, 2, 0x4d0) != 2) {
		return fail("read ELCR");
	}
	for (i = 0; i < argc; i++) {
		int irq = atoi(argv[i]);

		if (irq < 3 || irq > 15 || irq == 8 || irq == 13) {
			fprintf(stderr, "%s: elcr: IRQ %s cannot be level-triggered\n", me, argv[i]);
			return 2;
		}
		v[irq / 8] |= (unsigned char)(1u << (irq % 8));
	}
	if (pwrite(fd, v, 2, 0x4d0) != 2) {
		return fail("write ELCR");
	}
	close(fd);
	printf("elcr 0x%02x 0x%02x\n", v[0], v[1]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "dm-logwrites") == 0) {
		return dm_logwrites(argv[2], argv[3], argv[4]);
	}
	if (argc == 6 && strcmp(argv[1], "dm-linear") == 0) {
		return dm_linear(argv[2], argv[3], argv[4], argv[5]);
	}
	if (argc >= 4 && strcmp(argv[1], "dm-message") == 0) {
		return dm_message(argv[2], argc - 3, argv + 3);
	}
	if (argc == 3 && strcmp(argv[1], "dm-remove") == 0) {
		return dm_remove(argv[2]);
	}
	if (argc == 4 && strcmp(argv[1], "ubi-mkvol") == 0) {
		return ubi_mkvol(argv[2], argv[3]);
	}
	if (argc >= 3 && strcmp(argv[1], "elcr") == 0) {
		return elcr(argc - 2, argv + 2);
	}
	fprintf(stderr, "usage: %s dm-logwrites NAME DATADEV LOGDEV | dm-linear NAME DEV START SECTORS |\n"
		"       dm-message NAME TEXT... |\n"
		"       dm-remove NAME | ubi-mkvol /dev/ubiN NAME | elcr IRQ...\n", me);
	return 2;
}
