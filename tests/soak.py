# Soak run (issue 5, item 6): many clients, mixed sizes and TTLs, eviction pressure, and a
# checksum on every value verified on every hit.
#
#   python -m tests.soak --minutes 10            # the long run, on demand
#   python -m tests.soak --seconds 30 --kind memcached   # same load against real memcached
#
# Each client thread owns one connection and pipelines batches of requests (set/add/
# append-free so every stored value is whole: set, gets/get multi, delete, touch, incr on
# its own counters, and occasionally a value too large to store). Every value is
#   <key>|<len>|<crc32 of payload>|<payload>
# so a hit that returns another key's value, a truncated or torn value, or flipped bytes is
# caught on the spot. Counters are checked to be exact (each thread owns its counters).
# The daemon's RSS is sampled every second; the run fails on any corrupted value, protocol
# error, dead daemon, or RSS still growing in the last two thirds of the run.
# Loopback only; the daemon is started and stopped by this script.
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support.daemons import KIND_MEMCACHEPY, Daemon, start_daemon  # noqa: E402
from support.rawclient import Conn  # noqa: E402

CRLF = b"\r\n"


def make_value(key: bytes, payload: bytes) -> bytes:
    return b"%s|%d|%08x|" % (key, len(payload), zlib.crc32(payload)) + payload


def check_value(key: bytes, value: bytes) -> str | None:
    try:
        k, n, crc, payload = value.split(b"|", 3)
    except ValueError:
        return "no header"
    if k != key:
        return f"value of {k!r} returned for {key!r}"
    if int(n) != len(payload):
        return f"length {len(payload)} != {int(n)}"
    if int(crc, 16) != zlib.crc32(payload):
        return "checksum mismatch"
    return None


@dataclass
class Totals:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    sets: int = 0
    too_large: int = 0
    corrupted: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, other: "Totals") -> None:
        with self.lock:
            self.requests += other.requests
            self.hits += other.hits
            self.misses += other.misses
            self.sets += other.sets
            self.too_large += other.too_large
            self.corrupted += other.corrupted
            self.errors.extend(other.errors[:20])


def client(d: Daemon, tid: int, stop: threading.Event, totals: Totals, item_max: int) -> None:
    rng = random.Random(tid * 7919 + 1)
    local = Totals()
    try:
        r = Conn(d.addr, timeout=60)
        sock = r.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keys = [b"t%d:k%d" % (tid, i) for i in range(400)]
        counters = [b"t%d:ctr%d" % (tid, i) for i in range(4)]
        counts = [0] * 4
        for c in counters:
            sock.sendall(b"set %s 0 0 1\r\n0\r\n" % c)
            if r.line() != b"STORED":
                local.errors.append("counter set failed")
        while not stop.is_set():
            batch: list[tuple] = []
            out = []
            for _ in range(rng.randint(1, 24)):
                op = rng.random()
                key = rng.choice(keys)
                if op < 0.35:
                    if rng.random() < 0.01:
                        n = item_max + rng.randint(1, 1000)     # refused, data swallowed
                    else:
                        n = min(int(10 ** rng.uniform(0.5, 5.7)), item_max - 1000)
                    payload = rng.randbytes(n)
                    value = make_value(key, payload)
                    ttl = rng.choice([0, 0, 0, 1, 2, 5, 30])
                    out.append(b"set %s %d %d %d\r\n" % (key, rng.randint(0, 65535), ttl, len(value))
                               + value + CRLF)
                    batch.append(("set", key, len(value) > item_max - 300))
                elif op < 0.75:
                    ks = [rng.choice(keys) for _ in range(rng.randint(1, 8))]
                    out.append(b"%s %s\r\n" % (rng.choice([b"get", b"gets"]), b" ".join(ks)))
                    batch.append(("get", ks))
                elif op < 0.83:
                    out.append(b"delete %s\r\n" % key)
                    batch.append(("delete", key))
                elif op < 0.88:
                    out.append(b"touch %s %d\r\n" % (key, rng.choice([0, 1, 10])))
                    batch.append(("touch", key))
                else:
                    i = rng.randrange(4)
                    out.append(b"incr %s 1\r\n" % counters[i])
                    batch.append(("incr", i))
            sock.sendall(b"".join(out))
            for item in batch:
                local.requests += 1
                kind = item[0]
                if kind == "set":
                    line = r.line()
                    local.sets += 1
                    if line == b"SERVER_ERROR object too large for cache":
                        local.too_large += 1
                    elif line != b"STORED" and not line.startswith(b"SERVER_ERROR out of memory"):
                        local.errors.append(f"set: {line[:80]!r}")
                elif kind == "get":
                    while True:
                        line = r.line()
                        if line == b"END":
                            break
                        parts = line.split(b" ")
                        if parts[0] != b"VALUE" or len(parts) not in (4, 5):
                            local.errors.append(f"get: {line[:80]!r}")
                            raise ConnectionError("protocol desync")
                        data = r.exact(int(parts[3]) + 2)
                        if data[-2:] != CRLF:
                            local.corrupted += 1
                            local.errors.append(f"{parts[1]!r}: data block not CRLF-terminated")
                            continue
                        if parts[1].startswith(b"t%d:ctr" % tid):
                            continue
                        why = check_value(parts[1], data[:-2])
                        local.hits += 1
                        if why:
                            local.corrupted += 1
                            local.errors.append(f"{parts[1]!r}: {why}")
                    local.misses += len(item[1])
                elif kind in ("delete", "touch"):
                    line = r.line()
                    if line not in (b"DELETED", b"NOT_FOUND", b"TOUCHED"):
                        local.errors.append(f"{kind}: {line[:80]!r}")
                else:
                    line = r.line()
                    i = item[1]
                    if line == b"NOT_FOUND":          # evicted: start over
                        sock.sendall(b"add %s 0 0 1\r\n0\r\n" % counters[i])
                        r.line()
                        counts[i] = 0
                        continue
                    counts[i] += 1
                    if line != str(counts[i]).encode():
                        local.errors.append(f"incr: {line[:80]!r}, expected {counts[i]}")
                        counts[i] = int(line) if line.isdigit() else counts[i]
        local.misses -= local.hits
        sock.close()
    except (OSError, ConnectionError) as e:
        if not stop.is_set():
            local.errors.append(f"thread {tid}: {e!r}")
    totals.add(local)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(seconds: float, threads: int = 8, kind: str = KIND_MEMCACHEPY, mem_mb: int = 32,
        workers: int = 4, item_max: int = 1 << 20, verbose: bool = True) -> dict:
    d = start_daemon(kind, ["-m", str(mem_mb), "-t", str(workers)])
    stop = threading.Event()
    totals = Totals()
    ts = [threading.Thread(target=client, args=(d, i, stop, totals, item_max), daemon=True)
          for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    samples: list[float] = []
    while time.monotonic() - t0 < seconds and d.alive():
        time.sleep(1.0)
        samples.append(rss_mb(d.proc.pid))
        if verbose and len(samples) % 30 == 0:
            print(f"  {len(samples)} s: RSS {samples[-1]:.0f} MB", flush=True)
    stop.set()
    for t in ts:
        t.join(timeout=60)
    elapsed = time.monotonic() - t0
    alive = d.alive()
    stats = {}
    if alive:
        stats = d.stats()
    rc = d.stop()
    third = samples[len(samples) // 3] if samples else 0.0
    result = {
        "kind": kind, "seconds": round(elapsed, 1), "threads": threads, "-m": mem_mb,
        "requests": totals.requests, "sets": totals.sets, "hits": totals.hits,
        "too_large": totals.too_large, "corrupted": totals.corrupted,
        "errors": totals.errors[:20], "alive_at_end": alive, "exit_code": rc,
        "evictions": int(stats.get("evictions", 0)), "reclaimed": int(stats.get("reclaimed", 0)),
        "cmd_get": int(stats.get("cmd_get", 0)), "cmd_set": int(stats.get("cmd_set", 0)),
        "rss_mb_first": round(samples[0], 1) if samples else 0,
        "rss_mb_at_third": round(third, 1),
        "rss_mb_max_after_third": round(max(samples[len(samples) // 3:] or [0]), 1),
        "rss_mb_last": round(samples[-1], 1) if samples else 0,
    }
    return result


def ok(result: dict, rss_slack_mb: float = 4.0) -> bool:
    return (result["corrupted"] == 0 and not result["errors"] and result["alive_at_end"]
            and result["exit_code"] == 0
            and result["rss_mb_max_after_third"] - result["rss_mb_at_third"] <= rss_slack_mb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--kind", default=KIND_MEMCACHEPY)
    ap.add_argument("-m", type=int, default=32, dest="mem")
    ap.add_argument("-t", type=int, default=4, dest="workers")
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes else args.seconds
    res = run(seconds, args.threads, args.kind, args.mem, args.workers)
    print(json.dumps(res, indent=2))
    return 0 if ok(res) else 1


if __name__ == "__main__":
    sys.exit(main())
