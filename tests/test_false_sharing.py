# No cache line written by every worker on every request (issue 14, part 3).
#
# CAS ids come from per-thread batches when there are several workers
# (settings.pxi next_cas_above): the counter's line is written once per 64
# stores instead of on every store. The batches must keep what clients rely on,
# checked on both daemons with -t 2 and two conns (one per worker): a key's CAS
# only grows whichever worker stores it, CAS values are unique, and an item
# stored after flush_all by a worker holding an older batch is not taken for
# one stored before the flush (while one stored before it, in the same second,
# is). The last test runs bench/false_sharing, which counts every store the
# core makes per cache line and per worker thread, and checks that no line is
# written by both workers on every get or set (the slab allocator's lock and
# class lines left the set path with the workers' chunk stashes, slabs.pxi).
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.rawclient import Conn

REPO = Path(__file__).resolve().parent.parent


def gets_cas(c: Conn, key: bytes) -> int:
    reply = c.request(b"gets " + key + b"\r\n")
    m = re.match(rb"VALUE \S+ \d+ \d+ (\d+)\r\n", reply)
    assert m, reply
    return int(m.group(1))


def store(c: Conn, key: bytes, value: bytes = b"v") -> None:
    c.send(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
    assert c.line() == b"STORED"


@pytest.mark.timeout(60)
def test_cas_grows_per_key_and_stays_unique_across_workers(kind: str, start_daemon) -> None:
    d = start_daemon(kind, "-t", "2")
    a, b = Conn(d.addr, timeout=20), Conn(d.addr, timeout=20)
    # each conn's worker takes a batch: b's ids are above a's
    for i in range(5):
        store(a, b"a%d" % i)
        store(b, b"b%d" % i)
    seen = []
    for i in range(40):
        store(a if i % 2 else b, b"k", b"%d" % i)
        seen.append(gets_cas(a, b"k"))
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    # incr in place and append also move the CAS forward from either worker
    store(a, b"n", b"10")
    last = gets_cas(a, b"n")
    for i in range(10):
        c = a if i % 2 else b
        c.send(b"incr n 1\r\n" if i % 3 else b"append n 0 0 1\r\n1\r\n")
        c.line()
        now = gets_cas(c, b"n")
        assert now > last, (i, last, now)
        last = now
    cas = [gets_cas(a, k) for k in [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(5)]]
    assert len(set(cas)) == len(cas), cas


@pytest.mark.timeout(60)
def test_flush_all_and_stores_from_another_worker(kind: str, start_daemon) -> None:
    d = start_daemon(kind, "-t", "2")
    a, b = Conn(d.addr, timeout=20), Conn(d.addr, timeout=20)
    for i in range(3):
        store(a, b"a%d" % i)
    store(b, b"before")           # b's worker holds the rest of a batch now
    a.send(b"flush_all\r\n")
    assert a.line() == b"OK"
    # stored before the flush (same second, a CAS from a newer batch than a's):
    # flushed; stored after it from the same batch: alive
    store(b, b"after")
    out = b.request(b"get before after a0\r\n")
    assert b"VALUE before" not in out and b"VALUE a0" not in out, out
    assert b"VALUE after 0 1\r\nv\r\n" in out, out


@pytest.mark.timeout(600)
def test_no_line_written_by_every_worker_on_every_request() -> None:
    if not shutil.which("clang"):
        pytest.skip("bench/false_sharing needs clang (-fsanitize-coverage=trace-stores)")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "false_sharing"), "--json",
                          "--requests", "4000"], cwd=REPO, capture_output=True, text=True, timeout=570)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["get"]["per_request_shared"] == [], res["get"]["per_request_shared"]
    # many lines are written by both workers now and then (shard locks and
    # LRU heads, 1 request in 64 each): the measurement sees them
    assert len(res["get"]["shared"]) > 10
    # sets: each worker's chunk stash (slabs.pxi) took the slab allocator's
    # lock and class lines off the path (they were written 4 and 2-4 times per
    # set by both workers): nothing left that both write per request, and the
    # allocator's lines are written by both at most at a refill or drain
    assert res["set"]["per_request_shared"] == [], res["set"]["per_request_shared"]
    slab_lines = [(rates, name) for _, rates, name in res["set"]["shared"]
                  if "g_slabclass" in name or "g_slabs_lock" in name]
    assert all(min(rates) < 0.05 for rates, _ in slab_lines), slab_lines
