"""fwdisk.py - the guests' flash partitions as image files on the host."""

import subprocess


def make_ext4(path, size_mb=32):
    """An empty ext4 file system of SIZE_MB, as a board's data partition:
    4 KiB blocks, a journal, the defaults of Debian's mke2fs otherwise."""
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "data", "-E", "nodiscard", path], check=True)
    return path


def copy_region(src, offset, size, out):
    """OUT = SIZE bytes of SRC from OFFSET, written sparse: a region that
    is mostly zeros (a dm-log-writes log) costs only what it holds."""
    chunk = 1 << 20
    with open(src, "rb") as f, open(out, "wb") as o:
        f.seek(offset)
        left = size
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                break
            if data.count(0) == len(data):
                o.seek(len(data), 1)
            else:
                o.write(data)
            left -= len(data)
        o.truncate(size)
    return out
