#!/usr/bin/python3
"""ack_latency.py HOST PORT SESSIONS [--messages N | --until FILE] [--limit S]
- how long picomail takes to acknowledge a message, for "make bench".

SESSIONS connections, each sending 5 KB messages one after the other on
the same connection (MAIL, RCPT, DATA, the message, the final dot), and
timing each from the moment its final dot is written to the moment the
250 arrives: what a client waits for the message to be made durable.
Runs until N messages were acknowledged in all (--messages), or until FILE
exists (--until, for running beside another load), or --limit seconds.
Prints one JSON object: count, seconds, rate, and the latencies' median,
99th percentile and maximum in milliseconds; a reply other than 250 is
counted in "refused" (and makes the exit status 1).
"""

import argparse
import asyncio
import json
import os
import sys
import time

BODY = b"Subject: latency\r\n\r\n" + (b"x" * 75 + b"\r\n") * (5120 // 77)


async def reply(r):
    """One SMTP reply: (code, last line)."""
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), line


async def session(a, host, port, lat, state):
    r, w = await asyncio.open_connection(host, port)
    try:
        await reply(r)
        w.write(b"EHLO bench.lan\r\n")
        await reply(r)
        while not state["stop"]:
            w.write(b"MAIL FROM:<bench@example.org>\r\n")
            if (await reply(r))[0] != 250:
                state["refused"] += 1
                continue
            w.write(b"RCPT TO:<%s>\r\n" % a.rcpt.encode())
            if (await reply(r))[0] != 250:
                state["refused"] += 1
                w.write(b"RSET\r\n")
                await reply(r)
                continue
            w.write(b"DATA\r\n")
            if (await reply(r))[0] != 354:
                state["refused"] += 1
                continue
            w.write(BODY)
            await w.drain()
            t0 = time.monotonic()
            w.write(b".\r\n")
            code, _ = await reply(r)
            if code == 250:
                lat.append(time.monotonic() - t0)
                if a.messages and len(lat) >= a.messages:
                    state["stop"] = True
            else:
                state["refused"] += 1
        w.write(b"QUIT\r\n")
        await reply(r)
    finally:
        w.close()


async def watch(a, state, t_end):
    while not state["stop"]:
        if (a.until and os.path.exists(a.until)) or time.monotonic() > t_end:
            state["stop"] = True
            break
        await asyncio.sleep(0.02)


async def run(a):
    lat, state = [], {"stop": False, "refused": 0}
    t0 = time.monotonic()
    tasks = [session(a, a.host, a.port, lat, state) for _ in range(a.sessions)]
    tasks.append(watch(a, state, t0 + a.limit))
    await asyncio.gather(*tasks)
    return lat, state["refused"], time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("sessions", type=int)
    ap.add_argument("--messages", type=int, default=0)
    ap.add_argument("--until")
    ap.add_argument("--limit", type=float, default=120)
    ap.add_argument("--rcpt", default="user@lan")
    a = ap.parse_args()
    lat, refused, secs = asyncio.run(run(a))
    lat.sort()
    pick = lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None
    print(json.dumps({"count": len(lat), "refused": refused, "seconds": round(secs, 3),
                      "rate": round(len(lat) / secs, 1) if secs > 0 else 0,
                      "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                      "max_ms": round(1000 * lat[-1], 2) if lat else None}))
    return 0 if refused == 0 and lat else 1


if __name__ == "__main__":
    sys.exit(main())
