# Store tests through memcachepy._core.Store: the same C functions the daemon
# runs (slab allocator, item allocation, LRU, eviction, expiry, flush, incr),
# driven directly, without sockets and with a hand-controlled clock.
#
# Slab class sizes are checked against what real memcached prints with -vv.
from __future__ import annotations

import re

import pytest
from support.daemons import KIND_MEMCACHED, Proc, command_line, memcached_available

from memcachepy.settings import Settings

core = pytest.importorskip("memcachepy._core")



def make_store(**kw):
    s = Settings()
    for k, v in kw.items():
        setattr(s, k, v)
    return core.Store(s.to_core())


@pytest.fixture
def store_factory():
    made = []

    def factory(**kw):
        st = make_store(**kw)
        made.append(st)
        return st

    yield factory
    for st in made:
        st.close()


def memcached_slab_classes(args):
    """Class table printed by `memcached -vv` at start-up, before it listens."""
    with Proc(command_line(KIND_MEMCACHED, ["-vv", *args])) as p:
        p.wait_port()
        err = p.stderr()
    return [tuple(int(x) for x in m.groups()) for m in re.finditer(
        r"slab class\s+(\d+): chunk size\s+(\d+) perslab\s+(\d+)", err)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args,kw", [
    ([], {}),
    (["-n", "100"], {"chunk_size": 100}),
    (["-f", "2"], {"factor": 2.0}),
    (["-f", "1.05", "-n", "16"], {"factor": 1.05, "chunk_size": 16}),
])
def test_slab_classes_match_memcached(store_factory, args, kw):
    if not memcached_available():
        pytest.skip("memcached not installed")
    want = memcached_slab_classes(args)
    assert want, "memcached printed no slab classes"
    st = store_factory(**kw)
    got = st.slab_classes()
    assert got[:len(want)] == want


def test_memory_limit_is_honoured_and_lru_evicts(store_factory):
    st = store_factory(maxbytes=4 * 1024 * 1024, item_size_max=512 * 1024, nshards=4)
    value = b"x" * 1000
    for i in range(20000):          # ~20 MB of values into a 4 MB cache
        assert st.set(b"key:%d" % i, value) == "STORED"
    assert st.mem_malloced() <= st.mem_limit()
    c = st.counters()
    assert c["evictions"] > 0
    assert c["curr_items"] + c["evictions"] == 20000
    assert c["bytes"] <= st.mem_limit()
    # the newest items are the ones still there
    assert st.get(b"key:19999") is not None
    assert st.get(b"key:0") is None


def test_eviction_order_is_lru_with_second_chance(store_factory):
    # one shard: one HOT/WARM/COLD set per class, so the order is exact
    st = store_factory(maxbytes=2 * 1024 * 1024, item_size_max=512 * 1024, nshards=1)
    value = b"v" * 900
    cls = st.clsid_for(len(b"k00000"), len(value))
    n = 0
    while st.counters()["evictions"] == 0:
        assert st.set(b"k%05d" % n, value) == "STORED"
        n += 1
    # k00000 went first; then the tail moves on in insertion order
    assert st.get(b"k00000", bump=False) is None
    survivor = b"k%05d" % 5
    assert st.get(survivor) is not None      # first hit: FETCHED
    assert st.get(survivor) is not None      # second hit: ACTIVE (protected once)
    for i in range(n, n + 20):
        st.set(b"k%05d" % i, value)
    order = st.keys_lru_order(cls)
    assert survivor in order, "an active item must get its second chance"
    for i in range(1, 5):
        assert st.get(b"k%05d" % i, bump=False) is None, "older untouched items go first"


@pytest.mark.parametrize("segmented", [True, False])
def test_eviction_order_is_the_class_lru_over_all_shards(store_factory, segmented):
    # many shards: untouched items still leave in store order, as from memcached's one
    # LRU per class, whichever shard holds them; items read twice survive
    st = store_factory(maxbytes=2 * 1024 * 1024, item_size_max=512 * 1024, nshards=16,
                       extended={} if segmented else {"no_lru_segmented": ""})
    value = b"v" * 900
    n = 0
    while st.counters()["evictions"] == 0:
        assert st.set(b"k%05d" % n, value) == "STORED"
        n += 1
    protected = [b"k%05d" % i for i in range(40, 60, 5)] if segmented else []
    for k in protected:
        assert st.get(k) is not None and st.get(k) is not None
    for i in range(n, n + n // 2):
        assert st.set(b"k%05d" % i, value) == "STORED"
    evicted = st.counters()["evictions"]
    gone = [i for i in range(n + n // 2) if st.get(b"k%05d" % i, bump=False) is None]
    assert len(gone) == evicted
    assert gone == [i for i in range(len(gone) + len(protected))
                    if b"k%05d" % i not in protected]
    core.check_invariants()


def test_disable_evictions_gives_no_memory(store_factory):
    st = store_factory(maxbytes=2 * 1024 * 1024, item_size_max=512 * 1024, evict_to_free=False)
    results = [st.set(b"k%d" % i, b"z" * 4000) for i in range(2000)]
    assert "NO_MEMORY" in results
    assert st.counters()["evictions"] == 0
    first = results.index("NO_MEMORY")
    assert all(r == "STORED" for r in results[:first])


def test_too_large(store_factory):
    st = store_factory(item_size_max=1024 * 1024)
    assert st.set(b"big", b"x" * (1024 * 1024)) == "TOO_LARGE"
    assert st.set(b"fits", b"x" * (1024 * 1024 - 200)) == "STORED"


def test_expiry_relative_absolute_negative(store_factory):
    st = store_factory()
    assert st.set(b"ttl10", b"a", exptime=10) == "STORED"
    assert st.set(b"never", b"b", exptime=0) == "STORED"
    assert st.set(b"neg", b"c", exptime=-1) == "STORED"
    assert st.get(b"neg") is None                     # negative: already expired
    st.advance_clock(9)
    assert st.get(b"ttl10") is not None
    st.advance_clock(2)
    assert st.get(b"ttl10") is None
    assert st.get(b"never") is not None
    assert st.counters()["get_expired"] >= 2
    # beyond 30 days is an absolute unix time
    import time
    assert st.set(b"abs", b"d", exptime=int(time.time()) + 100) == "STORED"
    st.advance_clock(50)
    assert st.get(b"abs") is not None
    st.advance_clock(60)
    assert st.get(b"abs") is None
    assert st.set(b"past", b"e", exptime=2592001) == "STORED"   # absolute, long past
    assert st.get(b"past") is None


def test_flush_all_hides_older_items_only(store_factory):
    st = store_factory()
    st.set(b"old", b"1")
    st.advance_clock(1)
    st.flush_all()
    assert st.get(b"old") is None
    assert st.counters()["get_flushed"] == 1
    st.advance_clock(1)
    st.set(b"new", b"2")
    assert st.get(b"new")[0] == b"2"


def test_store_modes_and_cas(store_factory):
    st = store_factory()
    assert st.set(b"k", b"v1", mode=1) == "STORED"          # add
    assert st.set(b"k", b"v2", mode=1) == "NOT_STORED"      # add existing
    assert st.set(b"m", b"x", mode=3) == "NOT_STORED"       # replace missing
    assert st.set(b"k", b"+", mode=4) == "STORED"           # append
    assert st.set(b"k", b"<", mode=5) == "STORED"           # prepend
    value, flags, cas = st.get(b"k")
    assert value == b"<v1+"
    assert st.set(b"k", b"new", mode=6, cas=cas + 100) == "EXISTS"
    assert st.set(b"k", b"new", mode=6, cas=cas) == "STORED"
    assert st.set(b"gone", b"new", mode=6, cas=1) == "NOT_FOUND"
    assert st.get(b"k")[2] > cas                              # every store takes a new CAS


def test_incr_decr_in_place_padding_and_wrap(store_factory):
    st = store_factory()
    st.set(b"n", b"100")
    assert st.incr(b"n", 1, False) == 99
    assert st.get(b"n")[0] == b"99 "                           # memcached pads in place
    st.set(b"w", b"18446744073709551615")
    assert st.incr(b"w", 1) == 0                               # 64-bit wrap
    st.set(b"z", b"5")
    assert st.incr(b"z", 10, False) == 0                       # decr clamps at 0
    st.set(b"s", b"abc")
    assert st.incr(b"s", 1) == "NON_NUMERIC"
    assert st.incr(b"missing", 1) == "NOT_FOUND"
    st.set(b"grow", b"9")
    assert st.incr(b"grow", 1) == 10
    assert st.get(b"grow")[0] == b"10"


def test_hash_tables_grow(store_factory):
    st = store_factory(maxbytes=256 * 1024 * 1024, nshards=2)
    before = st.counters()["hash_buckets"]
    for i in range(200000):
        st.set(b"g%d" % i, b"v")
    c = st.counters()
    assert c["curr_items"] == 200000
    assert c["hash_buckets"] > before
    assert all(st.get(b"g%d" % i) is not None for i in range(0, 200000, 997))


# ---------------------------------------------------------------- segmented LRU
# memcached's HOT/WARM/COLD flow (lru.pxi): new items enter HOT, which keeps to
# hot_lru_pct of the class's bytes; inactive items flow to COLD, where eviction
# happens; an item hit twice while in COLD moves to WARM and is out of the
# eviction path until it goes cold again.

def item_counts(st, cls):
    return {seg: len(st.keys_lru_order(cls, seg)) for seg in ("hot", "warm", "cold")}


def test_new_items_enter_hot_and_flow_to_cold(store_factory):
    st = store_factory(maxbytes=64 * 1024 * 1024, nshards=1)
    value = b"v" * 100
    cls = st.clsid_for(len(b"k0000"), len(value))
    st.set(b"k0000", value)
    assert st.keys_lru_order(cls, "hot") == [b"k0000"]
    st.advance_clock(2)
    st.set(b"k0001", value)        # older than HOT's age limit (COLD is empty: 0 s)
    assert st.keys_lru_order(cls, "hot") == [b"k0001"]
    assert st.keys_lru_order(cls, "cold") == [b"k0000"]
    for i in range(2, 1000):
        st.set(b"k%04d" % i, value)
    n = item_counts(st, cls)
    assert sum(n.values()) == 1000
    assert 150 <= n["hot"] <= 200, n                 # HOT holds its 20 %, no more
    assert n["warm"] == 0, n                         # nothing was read
    assert st.keys_lru_order(cls, "hot")[0] == b"k0999"   # newest at HOT's head
    assert st.keys_lru_order(cls, "cold")[-1] == b"k0000"  # oldest at COLD's tail
    core.check_invariants()


def test_hot_items_age_out_of_hot(store_factory):
    st = store_factory(maxbytes=64 * 1024 * 1024, nshards=1)
    value = b"v" * 100
    cls = st.clsid_for(len(b"a0000"), len(value))
    for i in range(100):
        st.set(b"a%04d" % i, value)
    st.advance_clock(10)
    st.set(b"b0000", value)                          # the next link juggles
    hot = st.keys_lru_order(cls, "hot")
    # older than hot_max_factor x the age of COLD's tail: moved, a few per link
    assert len(hot) < 20 and hot[0] == b"b0000", hot


def test_active_cold_item_moves_to_warm_and_survives_a_scan(store_factory):
    st = store_factory(maxbytes=2 * 1024 * 1024, item_size_max=512 * 1024, nshards=1)
    value = b"v" * 900
    cls = st.clsid_for(len(b"k00000"), len(value))
    n = 0
    while st.counters()["evictions"] == 0:           # fill to the first eviction
        st.set(b"k%05d" % n, value)
        n += 1
    cold = st.keys_lru_order(cls, "cold")
    keep = cold[len(cold) // 4::40]                  # some COLD items, not at the tail
    assert len(keep) >= 10
    before = st.counters()
    for k in keep:
        assert st.get(k) is not None                 # FETCHED
        assert st.get(k) is not None                 # ACTIVE: COLD -> WARM
    assert sorted(st.keys_lru_order(cls, "warm")) == sorted(keep)
    # a scan of new keys twice the cache size: everything unread is evicted
    for i in range(n, n + 2 * n):
        st.set(b"k%05d" % i, value)
    after = st.counters()
    assert after["evictions"] - before["evictions"] > n
    for k in keep:
        assert st.get(k, bump=False) is not None, k
    assert [k for k in cold if k not in keep and st.get(k, bump=False) is not None] == []
    core.check_invariants()


def test_flat_lru_without_segments(store_factory):
    st = store_factory(maxbytes=64 * 1024 * 1024, nshards=1, extended={"no_lru_segmented": ""})
    value = b"v" * 100
    cls = st.clsid_for(len(b"k0000"), len(value))
    for i in range(100):
        st.set(b"k%04d" % i, value)
        st.get(b"k%04d" % i)
        st.get(b"k%04d" % i)
    n = item_counts(st, cls)
    assert n == {"hot": 0, "warm": 0, "cold": 100}, n


# ---------------------------------------------------------------- bucket filters
# Each hash-table link carries a 16-bit filter of the chain behind it
# (assoc.pxi): a lookup of an absent key usually stops at the bucket without
# reading an item. assoc_touches counts the items lookups read.

def test_bucket_filters_spare_the_items_of_a_miss(store_factory):
    st = store_factory(maxbytes=256 * 1024 * 1024, nshards=1)
    for i in range(90000):            # 2^16 buckets: 1.37 items per bucket
        assert st.set(b"k%d" % i, b"v") == "STORED"
    assert st.counters()["hash_buckets"] == 1 << 16
    found, touched = core.assoc_touches([b"absent%d" % i for i in range(20000)])
    assert found == 0
    # without filters a miss reads every item of its chain (1.37 on average);
    # with them only chains holding an item with the key's filter bit
    assert touched / 20000 < 0.2, touched
    found, touched = core.assoc_touches([b"k%d" % i for i in range(0, 90000, 9)])
    assert found == 10000
    # a hit still reads the items before it in the chain (and itself)
    assert 1.0 <= touched / 10000 < 1.8, touched
    core.check_invariants()


def test_bucket_filters_stay_correct_through_deletes_and_growth(store_factory):
    import random
    s = Settings()
    s.maxbytes = 64 * 1024 * 1024
    s.nshards = 1
    cfg = s.to_core()
    cfg["shard_hashpower"] = 4                    # 16 buckets to start with
    st = core.Store(cfg)
    try:
        # 60 keys of one bucket whatever the table's size here: a chain longer
        # than the 16 links a delete recomputes, moved as the table doubles
        same = []
        i = 0
        while len(same) < 60:
            k = b"c%d" % i
            if core.key_hv(k) & 1023 == 3:     # one bucket up to 1,024 buckets
                same.append(k)
            i += 1
        others = [b"o%d" % j for j in range(200)]
        for k in same + others:
            assert st.set(k, k) == "STORED"
        core.check_invariants()
        rnd = random.Random(5)
        live = set(same + others)
        order = same + others
        rnd.shuffle(order)
        for n, k in enumerate(order[:200]):
            assert st.delete(k)
            live.discard(k)
            if n % 10 == 0:
                core.check_invariants()
                found, _ = core.assoc_touches(sorted(live))
                assert found == len(live)
                found, _ = core.assoc_touches([k] + [b"x%d" % j for j in range(50)])
                assert found == 0
            if n % 25 == 0:                        # and new keys meanwhile
                extra = b"n%d" % n
                assert st.set(extra, b"v") == "STORED"
                live.add(extra)
        core.check_invariants()
        assert all(st.get(k) is not None for k in live)
        assert core.assoc_touches(sorted(live))[0] == len(live)
    finally:
        st.close()
