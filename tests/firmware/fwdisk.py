"""fwdisk.py - the guests' flash partitions as image files on the host."""

import subprocess


def make_ext4(path, size_mb=32):
    """An empty ext4 file system of SIZE_MB, as a board's data partition:
    4 KiB blocks, a journal, the defaults of Debian's mke2fs otherwise."""
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "data", "-E", "nodiscard", path], check=True)
    return path
