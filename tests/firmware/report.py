#!/usr/bin/python3
"""report.py [BOARD...] - the firmware lab's figures, from
build/firmware/results/<board>.json (written by the tests' `record`)."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "build", "firmware", "results")


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return "-"
        d = d[p]
    return d


def main(boards):
    rows = []
    for b in boards:
        try:
            r = json.load(open(os.path.join(RESULTS, b + ".json")))
        except (OSError, ValueError):
            rows.append((b, None))
            continue
        rows.append((b, r))
    print("\nfirmware lab figures (KiB unless said; build/firmware/results/)")
    fmt = "%-8s %-28s %6s %5s %13s %13s %13s %8s %8s"
    print(fmt % ("board", "kernel", "RAM MB", "boot", "RSS/HWM idle", "RSS/HWM 50c", "HWM load",
                 "MemAvail", "avail@load"))
    for b, r in rows:
        if r is None:
            print("%-8s no results" % b)
            continue
        m = r.get("memory", {})
        print(fmt % (b, get(r, "boot", "kernel"), get(r, "boot", "mem_mb"), "%ss" % get(r, "boot", "wall_s"),
                     "%s/%s" % (get(m, "idle_rss_kib"), get(m, "idle_hwm_kib")),
                     "%s/%s" % (get(m, "conn50_rss_kib"), get(m, "conn50_hwm_kib")),
                     get(m, "load_hwm_kib"), get(m, "idle_memavailable_kib"), get(m, "load_memavailable_min_kib")))
    fmt = "%-8s %-22s %-34s %s"
    print()
    print(fmt % ("board", "power cuts (kill -9)", "crash points replayed", "negative control"))
    for b, r in rows:
        if r is None:
            continue
        p, c = r.get("powercut", {}), r.get("crashpoints", {})
        print(fmt % (b, "%s cuts, %s acked, 0 lost" % (get(p, "trials"), get(p, "acked")) if p else "-",
                     "%s points of %s writes/%s flushes, %s lost" % (
                         get(c, "points"), get(c, "writes"), get(c, "flushes"), get(c, "losses")) if c else "-",
                     "losses seen at %s points" % get(c, "control_points_with_losses") if c else "-"))
    fmt = "%-8s %-20s %-20s %-20s %s"
    print()
    print(fmt % ("board", "delivered pg/er", "relayed pg/er", "POP3-deleted pg/er", "UBIFS cuts"))
    for b, r in rows:
        if r is None:
            continue
        f = r.get("flash")
        u = r.get("ubifs_recovery", {})
        if not f:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from boards import BOARDS
            print(fmt % (b, "-" if BOARDS.get(b, {}).get("mtd") else "no NAND in this kernel", "", "", "-"))
            continue
        cell = [("%s/%s" % (get(f, k, "pages_per_msg"), get(f, k, "erases_per_msg")))
                for k in ("delivered", "relayed", "deleted")]
        print(fmt % (b, cell[0], cell[1], cell[2], "%s, %s acked, 0 lost" % (get(u, "cuts"), get(u, "acked"))))
    print("(pg/er: NAND page programs and erase blocks per 5 KB message; write_bytes per message on ext4: %s)"
          % ", ".join("%s %s" % (b, get(r, "memory", "write_bytes_per_msg")) for b, r in rows if r))

    # lab.py's retries: a boot whose rcS the guest kernel's OOM killer cut
    # before picomail ran, tried once more; a qemu start whose hostfwd port
    # another process on the host took first, tried with other ports.
    for suffix, what in ((".boot-retries", "boot(s) tried again after the OOM killer cut rcS"),
                         (".port-retries", "qemu start(s) tried again with other ports")):
        for b, _ in rows:
            try:
                lines = open(os.path.join(RESULTS, b + suffix)).read().splitlines()
            except OSError:
                continue
            print("%s: %d %s (%s)" % (b, len(lines), what, lines[-1]))

if __name__ == "__main__":
    main(sys.argv[1:] or ["x86_64", "aarch64", "armv7", "mipsel"])
