"""boards.py - the emulated routers of the firmware lab, one per board.

Each entry says which Debian kernel flavour boots it, which qemu-system
machine runs it and with how much memory.  The kernels are Debian 12's
(linux-image-<flavour>:<arch>, the version the metapackage names), as
modules for everything the lab needs; `mtd` says whether the kernel has raw
NAND (nandsim) for the flash tests: Debian's arm64 kernel has the MTD core
and UBI but no NAND driver at all.
"""

BOARDS = {
    "x86_64": {
        "deb_arch": "amd64",
        "flavour": "amd64",
        "qemu": "qemu-system-x86_64",
        "machine": ["-M", "pc", "-cpu", "qemu64"],
        "console": "ttyS0",
        # Debian's amd64 kernel does not get to userspace with 64 MB: the
        # decompressed kernel, its page tables and the initramfs need more.
        "mem": 128,
        "mtd": True,
        "kprobe_regs": True,
    },
    "aarch64": {
        "deb_arch": "arm64",
        "flavour": "arm64",
        "qemu": "qemu-system-aarch64",
        "machine": ["-M", "virt", "-cpu", "cortex-a53"],
        "console": "ttyAMA0",
        "mem": 64,
        "mtd": False,
        "kprobe_regs": True,
    },
    "armv7": {
        "deb_arch": "armhf",
        "flavour": "armmp",
        "qemu": "qemu-system-arm",
        "machine": ["-M", "virt,highmem=off", "-cpu", "cortex-a15"],
        "console": "ttyAMA0",
        "mem": 64,
        "mtd": True,
        "kprobe_regs": False,
    },
    "mipsel": {
        "deb_arch": "mipsel",
        "flavour": "4kc-malta",
        "qemu": "qemu-system-mipsel",
        "machine": ["-M", "malta", "-cpu", "24Kf"],
        "console": "ttyS0",
        "mem": 64,
        "mtd": True,
        "kprobe_regs": False,
    },
}

# Modules the initramfs carries (with what they depend on, from modules.dep),
# and the ones loaded at every boot, in this order.  The initramfs stays in
# RAM, so a board whose kernel has no NAND (mtd False) does without the
# flash ones: 1.9 MB on arm64, whose guest has 10 MB free after boot.
MODULES = [
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
    "crc32c_generic", "ext4",
    "dm-mod", "dm-log-writes",
]
# UBIFS asks for every compressor it was built with when it loads.
FLASH_MODULES = ["nandsim", "ubi", "ubifs", "zstd", "deflate", "lzo"]
BOOT_MODULES = [
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
    "crc32c_generic", "ext4",
]
