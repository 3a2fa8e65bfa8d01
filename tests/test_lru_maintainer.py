# The LRU maintainer on memcached's schedule (ext/lru.pxi lru_maintainer_tick, run by the
# acceptor thread): per class a next juggle and a backoff of 1 ms .. 1 s, longer by an
# eighth after a juggle that moved nothing, halved after one that moved (0 below 1 ms);
# a wake-up juggles only the classes due and the thread sleeps until the earliest one;
# `lru_maintainer_juggles` counts wake-ups (memcached's items.c lru_maintainer_thread).
#
# The rules are checked through the Store test API (the same C function, a hand-driven
# clock, no threads); the daemons are compared under a live load and idle by what they
# count, never by how long anything took.
from __future__ import annotations

import socket
import time

import pytest
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, Daemon, memcached_available

from memcachepy import _loadgen as lg
from memcachepy.settings import Settings

core = pytest.importorskip("memcachepy._core")

MIN_US = 1000
MAX_US = 1_000_000


@pytest.fixture
def store():
    made = []

    def factory(**kw):
        s = Settings()
        for k, v in kw.items():
            setattr(s, k, v)
        st = core.Store(s.to_core())
        made.append(st)
        return st

    yield factory
    for st in made:
        st.close()


def grown(b: int) -> int:
    """memcached's backoff after a juggle that moved nothing."""
    return min(b + b // 8 if b else MIN_US, MAX_US)


def test_backoff_grows_by_an_eighth_up_to_a_second(store) -> None:
    st = store(maxbytes=64 << 20, nshards=4)
    j0 = core.maintainer_juggles()
    # nothing stored: every class is juggled on the first wake-up, moves nothing
    assert core.maintainer_tick(0) == MIN_US
    assert core.maintainer_schedule(1) == (MIN_US, MIN_US)
    assert core.maintainer_tick(MIN_US) == 1125
    assert core.maintainer_schedule(5) == (1125, 1125)
    # woken early: nothing due, the sleep left is the earliest next juggle; a sleep
    # shorter than 1 ms counts as 1 ms (memcached's "minimum of a 1ms wait")
    assert core.maintainer_tick(10) == 125
    assert core.maintainer_schedule(1) == (125, 1125)
    assert core.maintainer_tick(125) == 1265
    b = 1265
    ticks = 4
    while b < MAX_US:
        assert core.maintainer_tick(b) == grown(b)
        b = grown(b)
        ticks += 1
    assert b == MAX_US and core.maintainer_schedule(40) == (MAX_US, MAX_US)
    assert core.maintainer_tick(MAX_US) == MAX_US               # and stays there
    ticks += 1
    # one lru_maintainer_juggles per wake-up, whatever was juggled
    assert core.maintainer_juggles() - j0 == ticks
    del st


def test_a_class_that_moves_items_backs_off_less(store) -> None:
    st = store(maxbytes=64 << 20, nshards=1)
    value = b"v" * 100
    cls = st.clsid_for(len(b"k0000"), len(value))
    other = st.clsid_for(len(b"k0000"), 2000)
    assert other != cls
    for i in range(100):
        st.set(b"k%04d" % i, value)
    st.advance_clock(10)        # HOT's items are now older than its age limit
    # the first wake-up moves them to COLD: a class that moved keeps backoff 0 and asks
    # for the next wake-up at once, as memcached's (the empty classes back off)
    hot_before = len(st.keys_lru_order(cls, "hot"))
    assert hot_before > 0
    assert core.maintainer_tick(0) == 0
    assert st.keys_lru_order(cls, "hot") == []
    assert core.maintainer_schedule(cls) == (0, 0)
    assert core.maintainer_schedule(other) == (MIN_US, MIN_US)
    # nothing more to move: the class backs off like the others
    assert core.maintainer_tick(0) == MIN_US
    assert core.maintainer_schedule(cls) == (MIN_US, MIN_US)
    b = MIN_US
    while b < MAX_US:
        core.maintainer_tick(b)
        b = grown(b)
    assert core.maintainer_schedule(cls) == (MAX_US, MAX_US)
    # new items aged past HOT's limit: the next juggle moves them and halves the backoff
    for i in range(100, 150):
        st.set(b"k%04d" % i, value)
    st.advance_clock(30)
    assert core.maintainer_tick(MAX_US) == MAX_US // 2
    assert core.maintainer_schedule(cls) == (MAX_US // 2, MAX_US // 2)
    assert core.maintainer_schedule(other) == (MAX_US, MAX_US)
    assert st.keys_lru_order(cls, "hot") == []
    # a halving below 1 ms is 0 (as memcached): back to every wake-up
    # (each time new items, aged past HOT's limit: a quarter of COLD's tail age)
    b = MAX_US // 2
    start = st.now() - 50
    n = 0
    while b >= MIN_US:
        for i in range(3):
            st.set(b"n%04d" % n, value)
            n += 1
        st.advance_clock(st.now() - start)
        core.maintainer_tick(b)
        b = b // 2 if b // 2 >= MIN_US else 0
        assert core.maintainer_schedule(cls)[1] == b
    core.check_invariants()


def test_a_juggle_locks_only_shards_holding_items_of_the_class(store) -> None:
    # 64 shards, one item: a juggle of its class takes one shard lock, not 64 (the
    # class-wide sizes come from what the shards publish, read without their locks)
    st = store(maxbytes=64 << 20, nshards=64)
    st.set(b"only", b"v" * 10)
    before = core.lock_stats()["maintainer"][0]
    core.maintainer_tick(0)             # every class due: one holds the item
    assert core.lock_stats()["maintainer"][0] - before == 1
    core.maintainer_run()               # every class, off the schedule: the same
    assert core.lock_stats()["maintainer"][0] - before == 2
    st.delete(b"only")
    core.maintainer_run()
    assert core.lock_stats()["maintainer"][0] - before == 2


def test_a_busy_class_is_juggled_a_few_shards_per_wake_up(store) -> None:
    # a class juggled every few ms takes 8 of its shards per wake-up, the next 8 the next
    # time; once it backs off to 64 ms or more, all of them (ext/lru.pxi)
    st = store(maxbytes=64 << 20, nshards=64)
    value = b"v" * 100
    cls = st.clsid_for(len(b"k0000"), len(value))
    for i in range(3000):
        st.set(b"k%04d" % i, value)
    assert core.maintainer_cursor(cls) == 0
    core.maintainer_tick(0)                 # backoff 0 or 1 ms: 8 shards
    assert core.maintainer_cursor(cls) == 8
    core.maintainer_tick(MAX_US)
    assert core.maintainer_cursor(cls) == 16
    b = core.maintainer_schedule(cls)[1]
    while b < 64_000:
        core.maintainer_tick(MAX_US)
        b = core.maintainer_schedule(cls)[1]
    cur = core.maintainer_cursor(cls)
    holds = core.lock_stats()["maintainer"][0]
    core.maintainer_tick(MAX_US)            # a full sweep: every shard, the cursor stays
    assert core.maintainer_cursor(cls) == cur
    assert core.lock_stats()["maintainer"][0] - holds >= 64
    core.check_invariants()


# ------------------------------------------------------------------------ live daemons

def juggles(d: Daemon) -> int:
    return int(d.stats()["lru_maintainer_juggles"])


def juggle_rate(d: Daemon, seconds: float) -> float:
    j0, t0 = juggles(d), time.monotonic()
    time.sleep(seconds)
    return (juggles(d) - j0) / (time.monotonic() - t0)


def loaded_juggle_rate(d: Daemon) -> float:
    """Juggles per second while a 10:1 get/set load of about 4k req/s runs."""
    lg.run(port=d.port, connections=8, keyspace=5000, value_size=32, duration=0.0, prefill=True)
    j0, t0 = juggles(d), time.monotonic()
    lg.run(port=d.port, connections=8, keyspace=5000, value_size=32, duration=3.0, rate=4000)
    return (juggles(d) - j0) / (time.monotonic() - t0)


def idle_juggle_rate(d: Daemon) -> float:
    """The rate over 2 s windows once it stops falling (backoffs reach 1 s in ~10 s)."""
    deadline = time.monotonic() + 40
    rate = juggle_rate(d, 2.0)
    while rate > 4 and time.monotonic() < deadline:
        rate = juggle_rate(d, 2.0)
    return rate


@pytest.mark.timeout(120)
def test_juggles_follow_the_load_as_memcacheds(start_daemon) -> None:
    if not memcached_available():
        pytest.skip("memcached not installed")
    rates = {}
    for kind in (KIND_MEMCACHED, KIND_MEMCACHEPY):
        d = start_daemon(kind, "-t", "1")
        rates[kind] = (loaded_juggle_rate(d), idle_juggle_rate(d))
    (mc_load, mc_idle), (mp_load, mp_idle) = rates[KIND_MEMCACHED], rates[KIND_MEMCACHEPY]
    # under load both wake hundreds of times a second (memcached: about 1,000 at 10k
    # req/s), the same order of magnitude; idle, both back off to about once a second
    # per class with items (each class keeps its own phase)
    assert mc_load >= 100, rates
    assert mp_load >= 100, rates
    assert mc_load / 10 <= mp_load <= mc_load * 10, rates
    assert 0 < mc_idle <= 4, rates
    assert 0 < mp_idle <= 4, rates


@pytest.mark.timeout(60)
def test_no_lru_maintainer_runs_no_juggle(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-o", "no_lru_maintainer")
    assert "lru_maintainer_juggles" not in d.stats()          # as memcached
    with socket.create_connection(d.addr, timeout=10) as c:
        for i in range(50):
            c.sendall(b"set k%d 0 0 1\r\nv\r\n" % i)
            assert c.recv(64) == b"STORED\r\n"
    time.sleep(1.5)
    assert int(d.stats(b"locks")["maintainer:holds"]) == 0
