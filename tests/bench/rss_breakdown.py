"""rss_breakdown.py PID BINARY

What a process's resident memory is made of, from /proc/PID/smaps, one
line per part: "<part> <rss_kib> <anon_kib> <what>", the parts in this
order, then "total <rss_kib> <anon_kib>" (the sum, which is VmRSS):

  text      the binary's executable pages (file-backed, shared, clean)
  rodata    its read-only pages: ELF headers, constants, strings
  data      its writable file pages (.data; private once written)
  bss       the anonymous mapping right after the binary (.bss)
  heap      [heap]: brk memory (musl's allocator at start-up)
  stack     [stack]
  mmap      other private anonymous mappings: the pools (pool.c), the
            queue's tables, TLS sessions
  files     other files mapped (the time zone)
  kernel    [vdso], [vvar]

Used by tests/bench/bench.sh for the idle daemon's breakdown rows.
"""

import os
import re
import sys

ORDER = ["text", "rodata", "data", "bss", "heap", "stack", "mmap", "files", "kernel"]


def mappings(pid):
    """[(start, end, perms, path, {field: kib})] from /proc/PID/smaps."""
    out = []
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = head.match(line)
            if m:
                out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3),
                            m.group(4).strip(), {}))
                continue
            key, sep, value = line.partition(":")
            if sep and out and value.strip().endswith("kB"):
                out[-1][4][key] = int(value.split()[0])
    return out


def main():
    pid, binary = int(sys.argv[1]), os.path.realpath(sys.argv[2])
    parts = {p: [0, 0] for p in ORDER}
    binary_end = None
    for start, end, perms, path, f in mappings(pid):
        if path == binary or path.startswith(binary + " "):
            part = "text" if "x" in perms else "data" if "w" in perms else "rodata"
            binary_end = end
        elif path == "" and start == binary_end and "w" in perms:
            part = "bss"
        elif path == "[heap]":
            part = "heap"
        elif path == "[stack]":
            part = "stack"
        elif path in ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"):
            part = "kernel"
        elif path == "":
            part = "mmap"
        else:
            part = "files"
        parts[part][0] += f.get("Rss", 0)
        parts[part][1] += f.get("Anonymous", 0)
    for p in ORDER:
        print("%s %d %d" % (p, parts[p][0], parts[p][1]))
    print("total %d %d" % (sum(v[0] for v in parts.values()), sum(v[1] for v in parts.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
