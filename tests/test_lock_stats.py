# `stats locks` (ext/lock_stats.pxi): how long background work held the locks a worker
# waits on, and the bounds that keep those holds short (issue 14, "no stalls").
#
# What is checked is counted, not timed: which kinds of hold were recorded and how many,
# never how long they took (no timing assertions), except that a total is at least its
# longest hold. The hash-table tests also check the items themselves, since an incremental
# table doubling that lost an item would be far worse than a stall.
from __future__ import annotations

import socket
import time

import pytest
from support.daemons import KIND_MEMCACHEPY, Daemon

from memcachepy import _loadgen as lg

pytestmark = pytest.mark.timeout(90)

KINDS = ("maintainer", "crawler", "hash_expand", "page_move", "conn_handoff", "stats", "dump")


def locks(d: Daemon) -> dict[str, int]:
    return {k: int(v) for k, v in d.stats(b"locks").items()}


def wait_for(pred, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_stats_locks_lists_every_kind(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "2")
    st = locks(d)
    assert list(st) == [f"{k}:{f}" for k in KINDS for f in ("holds", "total_us", "max_us")]
    for k in KINDS:
        assert st[f"{k}:total_us"] >= st[f"{k}:max_us"] >= 0
    # the conn asking was handed to a worker by the acceptor; the crawler's first pass over
    # every LRU of every shard ran at start
    assert st["conn_handoff:holds"] >= 1
    assert st["crawler:holds"] >= 64 * 3
    # the LRU maintainer runs a few times a second, one timed hold per shard and step
    assert wait_for(lambda: locks(d)["maintainer:holds"] > st["maintainer:holds"])
    # `stats items` takes each shard lock once to sum the LRU counters
    before = locks(d)["stats:holds"]
    d.stats(b"items")
    assert locks(d)["stats:holds"] >= before + 64


def test_stats_locks_counts_hash_expansion_and_dumps(start_daemon) -> None:
    # 64 shards start at 1024 buckets each and double past 1536 items: 120k items make
    # every shard double at least once
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-m", "256")
    assert locks(d)["hash_expand:holds"] == 0
    lg.run(port=d.port, connections=4, keyspace=120_000, value_size=10, duration=0.0,
           prefill=True)
    st = locks(d)
    assert st["hash_expand:holds"] >= 64
    assert st["hash_expand:total_us"] >= st["hash_expand:max_us"]
    with socket.create_connection(d.addr, timeout=10) as s:
        s.sendall(b"stats cachedump 1 10\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += s.recv(65536)
    assert locks(d)["dump:holds"] >= 1
