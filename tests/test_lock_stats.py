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
    assert list(st) == [f"{k}:{f}" for k in KINDS for f in ("holds", "total_us", "max_us", "max_cpu_us")]
    for k in KINDS:
        assert st[f"{k}:total_us"] >= st[f"{k}:max_us"] >= 0
    # the conn asking was handed to a worker by the acceptor; the crawler's first pass over
    # every LRU of every shard ran at start
    assert st["conn_handoff:holds"] >= 1
    assert st["crawler:holds"] >= 64 * 3
    # the LRU maintainer juggles a class on memcached's schedule (1 ms .. 1 s), one timed
    # hold per step in each shard holding items of the class; it locks no shard that has
    # none (an empty daemon's maintainer takes no lock at all)
    with d.connect() as c:
        c.sendall(b"set k 0 0 1\r\nv\r\n")
        assert c.recv(64) == b"STORED\r\n"
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


# ---------------------------------------------------------------- incremental hash doubling
# Through the Store test API (the same C functions, no threads): nothing moves buckets
# behind the test's back, so the table can be inspected in the middle of a doubling.

core = pytest.importorskip("memcachepy._core")


@pytest.fixture
def store():
    from memcachepy.settings import Settings
    made = []

    def factory(hashpower: int):
        s = Settings()
        s.nshards = 1
        s.maxbytes = 256 * 1024 * 1024
        cfg = s.to_core()
        cfg["shard_hashpower"] = hashpower
        st = core.Store(cfg)
        made.append(st)
        return st

    yield factory
    for st in made:
        st.close()


def test_items_stay_reachable_through_every_doubling(store) -> None:
    # 16 buckets to start: 3000 keys double the table 7 times, each doubling spread over
    # the inserts that follow it. After every insert the invariants hold (every item in the
    # chain assoc_head names for it, moved old buckets empty) and a sample of keys is found
    st = store(4)
    keys = [b"key:%d" % i for i in range(3000)]
    seen_doubling = 0
    for n, k in enumerate(keys, 1):
        st.set(k, b"v%d" % n)
        hp, doubling, moved, items = core.hash_tables()[0]
        assert items == n
        seen_doubling += doubling
        if n % 97 == 0 or doubling:
            assert core.check_invariants() == n
            for j in range(0, n, max(1, n // 20)):
                assert st.get(keys[j], bump=False)[0] == b"v%d" % (j + 1), (n, j)
    assert hp >= 11 and seen_doubling > 0
    # deletes in the middle of a doubling find the item in whichever table holds it
    st2 = store(10)
    for i in range(1537):                     # 1.5 x 1024 + 1: the doubling starts here
        st2.set(b"k%d" % i, b"x")
    hp, doubling, moved, _ = core.hash_tables()[0]
    assert (hp, doubling) == (11, True) and moved < 1024
    for i in range(0, 1537, 3):
        assert st2.delete(b"k%d" % i)
    core.check_invariants()
    for i in range(1537):
        assert (st2.get(b"k%d" % i, bump=False) is None) == (i % 3 == 0), i


def test_maintainer_finishes_a_doubling_in_short_steps(store) -> None:
    # 2^13 buckets, doubling after 12,289 items: the inserts move 4 old buckets each, the
    # maintainer pass the rest, 1024 per hold of the shard lock: 8192 old buckets take
    # several holds, not one (the whole rehash used to run under one hold)
    st = store(13)
    n = 3 * 8192 // 2 + 1
    for i in range(n):
        st.set(b"k%d" % i, b"x")
    hp, doubling, moved, _ = core.hash_tables()[0]
    assert (hp, doubling) == (14, True) and moved < 8192
    holds_before = core.lock_stats()["hash_expand"][0]
    core.maintainer_run()
    hp, doubling, moved, items = core.hash_tables()[0]
    assert (hp, doubling, items) == (14, False, n)
    steps = core.lock_stats()["hash_expand"][0] - holds_before
    assert steps >= (8192 - 4) // 1024, steps
    assert core.check_invariants() == n
    assert all(st.get(b"k%d" % i, bump=False)[0] == b"x" for i in range(n))


def test_crawl_walks_a_big_shard_in_many_short_holds(start_daemon) -> None:
    # one shard of 2^16 buckets and 60k items: a crawl used to walk each LRU of the shard
    # under one hold (6 ms of CPU with a million keys); now it walks 256 buckets per hold,
    # so one crawl of all classes takes at least 65536 / 256 holds, and still checks every
    # item once
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-m", "256", "-o", "shards=1")
    lg.run(port=d.port, connections=4, keyspace=60_000, value_size=10, duration=0.0,
           prefill=True)
    before = locks(d)
    items_before = {k: int(v) for k, v in d.stats(b"items").items() if k.endswith(":crawler_items_checked")}
    with socket.create_connection(d.addr, timeout=10) as s:
        s.sendall(b"lru_crawler crawl all\r\n")
        assert s.recv(100) == b"OK\r\n"
    # the manual crawl runs at once; wait (bounded) until its holds are counted
    assert wait_for(lambda: locks(d)["crawler:holds"] - before["crawler:holds"] >= 65536 // 256)
    items_after = {k: int(v) for k, v in d.stats(b"items").items() if k.endswith(":crawler_items_checked")}
    assert sum(items_after.values()) - sum(items_before.values()) >= 60_000
