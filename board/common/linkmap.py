"""linkmap.py - what text-order.sh reads in a GNU ld link map (-Wl,-Map):
where each input section went, and where an output section lies."""

import re


def input_sections(path, prefix, outputs=None):
    """[(addr, size, section, file)] of the input sections whose names start
    with prefix (".text", ".bss"), sorted by address, empty ones left out;
    with outputs, only those placed in the output sections named there.
    The map gives " .name  0xADDR  0xSIZE  file", or the name alone on its
    line and the rest on the next when the name is long."""
    head = re.compile(r"^ (%s\S*)\s*$" % re.escape(prefix))
    body = re.compile(r"^ (%s\S*)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)" % re.escape(prefix))
    spans, pending, out_sec, started = [], None, None, False
    with open(path) as f:
        for line in f:
            if line.startswith("Linker script and memory map"):
                started = True
                continue
            if not started:
                continue
            m = re.match(r"^(\.\S+)", line)
            if m:
                out_sec = m.group(1)
                continue
            if outputs is not None and out_sec not in outputs:
                continue
            m = head.match(line)
            if m:
                pending = m.group(1)
                continue
            m = body.match(line)
            if m and (m.group(1) or pending):
                size = int(m.group(3), 16)
                if size:
                    spans.append((int(m.group(2), 16), size, m.group(1) or pending, m.group(4)))
            pending = None
    spans.sort()
    return spans


def output_range(path, names):
    """(start, end) covering the output sections named in names."""
    lo, hi = 1 << 64, 0
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", line)
            if m and m.group(1) in names:
                lo = min(lo, int(m.group(2), 16))
                hi = max(hi, int(m.group(2), 16) + int(m.group(3), 16))
    return lo, hi
