#!/usr/bin/python3
"""dmlog.py - reads and replays a dm-log-writes log on the host.

The log format is the kernel's (drivers/md/dm-log-writes.c, and
Documentation/admin-guide/device-mapper/log-writes.rst): at byte 0 a super
block {le64 magic 0x6a736677736872, le64 version 1, le64 nr_entries, le32
sectorsize}; from byte `sectorsize` on, nr_entries entries, each one
sector {le64 sector, le64 nr_sectors, le64 flags, le64 data_len} (a mark's
text follows in the same sector), then, for a write, nr_sectors sectors of
the data written.  sector and nr_sectors count `sectorsize` units.  Flags:
FLUSH 1, FUA 2, DISCARD 4, MARK 8, METADATA 16.  The kernel logs a write
only once a flush has covered it (FUA writes at once), so the log is the
order in which data reached the disk's stable storage, and the writes
between two flushes are those a power cut may lose.

    dmlog.py LOG                       a summary: entries, writes, flushes, marks
    dmlog.py LOG BASE OUT --to N       OUT = BASE with the first N entries applied

As a module: read_log(path) -> (sectorsize, [Entry]); Replay(base, out)
.apply(entry) keeps OUT in step entry by entry.
"""

import shutil
import struct
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16


class Entry:
    __slots__ = ("index", "sector", "nr", "flags", "data_off", "mark")

    def __init__(self, index, sector, nr, flags, data_off, mark):
        self.index, self.sector, self.nr, self.flags = index, sector, nr, flags
        self.data_off, self.mark = data_off, mark

    @property
    def is_write(self):
        return self.nr > 0 and not self.flags & (MARK | DISCARD)

    def kind(self):
        if self.flags & MARK:
            return "mark %s" % self.mark
        words = [w for f, w in ((FLUSH, "flush"), (FUA, "fua"), (DISCARD, "discard"), (METADATA, "meta"))
                 if self.flags & f]
        return "%s %d+%d" % ("|".join(words) or "write", self.sector, self.nr)


def read_log(path):
    with open(path, "rb") as f:
        head = f.read(28)
        magic, version, nr_entries, sectorsize = struct.unpack("<QQQI", head)
        if magic != MAGIC:
            raise ValueError("%s: not a dm-log-writes log (magic %#x)" % (path, magic))
        if version != 1:
            raise ValueError("%s: log version %d, this reads 1" % (path, version))
        if sectorsize < 512 or sectorsize & (sectorsize - 1):
            raise ValueError("%s: odd sector size %d" % (path, sectorsize))
        entries = []
        pos = sectorsize
        for i in range(nr_entries):
            f.seek(pos)
            raw = f.read(sectorsize)
            if len(raw) < sectorsize:
                raise ValueError("%s: entry %d of %d cut short at byte %d" % (path, i, nr_entries, pos))
            sector, nr, flags, data_len = struct.unpack("<QQQQ", raw[:32])
            mark = None
            if flags & MARK:
                mark = raw[32:32 + data_len].decode("utf-8", "replace")
            entries.append(Entry(i, sector, nr, flags, pos + sectorsize, mark))
            pos += sectorsize
            if not flags & (DISCARD | MARK):
                pos += nr * sectorsize
    return sectorsize, entries


class Replay:
    """OUT starts as a copy of BASE; apply() writes one entry into it."""

    def __init__(self, log_path, sectorsize, base, out):
        shutil.copyfile(base, out)
        self.log = open(log_path, "rb")
        self.out = open(out, "r+b")
        self.ss = sectorsize

    def apply(self, e):
        if e.flags & MARK or e.nr == 0:
            return
        self.out.seek(e.sector * self.ss)
        if e.flags & DISCARD:
            self.out.write(b"\0" * (e.nr * self.ss))   # a discarded range reads back as zeros
        else:
            self.log.seek(e.data_off)
            self.out.write(self.log.read(e.nr * self.ss))

    def sync(self):
        self.out.flush()

    def close(self):
        self.log.close()
        self.out.close()


def crash_points(entries, every_write=True):
    """The entry counts N at which a power cut is replayed: the disk then
    holds exactly the first N entries.  A flush point is the state before
    each flush (everything logged so far is stable) and after each FUA
    write; every_write adds the state after each write in between."""
    points = []
    for e in entries:
        if e.flags & FLUSH and (not points or points[-1] != e.index):
            points.append(e.index)            # before the flush entry itself
        if e.is_write and (every_write or e.flags & FUA):
            points.append(e.index + 1)
    points.append(len(entries))
    return sorted(set(points))


def main(argv):
    if len(argv) == 1:
        ss, entries = read_log(argv[0])
        writes = sum(1 for e in entries if e.is_write)
        print("sector size %d, %d entries: %d writes (%d KiB), %d flushes, %d FUA, %d discards, %d marks" % (
            ss, len(entries), writes, sum(e.nr for e in entries if e.is_write) * ss // 1024,
            sum(1 for e in entries if e.flags & FLUSH), sum(1 for e in entries if e.flags & FUA),
            sum(1 for e in entries if e.flags & DISCARD), sum(1 for e in entries if e.flags & MARK)))
        return 0
    if len(argv) == 5 and argv[3] == "--to":
        ss, entries = read_log(argv[0])
        r = Replay(argv[0], ss, argv[1], argv[2])
        for e in entries[:int(argv[4])]:
            r.apply(e)
        r.close()
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
