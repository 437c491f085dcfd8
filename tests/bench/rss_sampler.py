"""rss_sampler.py PID INTERVAL_MS STOPFILE OUTFILE

Samples VmRSS of PID (from /proc/PID/status) every INTERVAL_MS until
STOPFILE exists, PID is gone, or 300 s pass; then writes one line to
OUTFILE: "<peak_kib> <samples> <min_kib>".  Used by tests/bench/bench.sh
to record the daemon's RSS during a load.
"""

import os
import sys
import time


def vmrss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    pid, interval = int(sys.argv[1]), float(sys.argv[2]) / 1000.0
    stop, out = sys.argv[3], sys.argv[4]
    peak, low, n = 0, None, 0
    end = time.monotonic() + 300.0
    while time.monotonic() < end:
        v = vmrss(pid)
        if v is None:
            break
        n += 1
        peak = max(peak, v)
        low = v if low is None else min(low, v)
        if os.path.exists(stop):
            break
        time.sleep(interval)
    with open(out + ".tmp", "w") as f:
        f.write("%d %d %d\n" % (peak, n, low or 0))
    os.rename(out + ".tmp", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
