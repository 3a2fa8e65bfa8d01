# Which items survive eviction: the same sequence of stores and gets goes to memcached and
# to memcachepy with the same small memory limit, and afterwards both must hold exactly the
# same keys. memcached evicts the least recently used item of the slab *class* (one LRU per
# class); memcachepy keeps its LRU lists per shard and evicts from the shard whose HOT/COLD
# tail is the class's oldest (ext/lru.pxi), so the survivors must be memcached's.
#
# The sequences are deterministic for memcached too: where its LRU maintainer thread would
# move items in the background (HOT aging into COLD, a COLD item read twice moving to WARM),
# the story waits for things to settle before the next phase, as tests/test_lru_segments.py
# does; within a phase only forced pulls (memcached's do_item_alloc_pull) decide.
# With -o temporary_ttl the TEMP LRU's items and counters are compared too.
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence, Union

import pytest

from support.daemons import Daemon
from support.rawclient import Conn

VALUE = 100 * 1024            # the README's example: -m 2, values of 100 KB, 20 fit
SETTLE = 3.5                  # HOT ages into COLD (tests/test_lru_segments.py)
BUMP_SETTLE = 1.5             # memcached moves a COLD hit to WARM from its maintainer thread

Op = tuple[str, Union[bytes, float]]


def sets(prefix: bytes, idx: range) -> list[Op]:
    return [("set", b"%s%02d" % (prefix, i)) for i in idx]


def gets(keys: Sequence[bytes], times: int = 1) -> list[Op]:
    return [("get", k) for k in keys for _ in range(times)]


def run(d: Daemon, seq: Sequence[Op]) -> tuple[list[bytes], dict[str, int], list[str]]:
    """Play `seq`; return the keys still held (in store order), eviction counters and the
    names of the `stats items` fields."""
    with Conn(d.addr) as c:
        for op, arg in seq:
            if op in ("set", "tset"):
                ttl = 30 if op == "tset" else 0
                assert c.request(b"set %s 0 %d %d\r\n%s\r\n" % (arg, ttl, VALUE, b"v" * VALUE)) \
                    .startswith(b"STORED\r\nVERSION")
            elif op == "get":
                assert c.request(b"get %s\r\n" % arg).startswith((b"VALUE", b"END"))
            else:
                time.sleep(float(arg))
        keys = list(dict.fromkeys(arg for op, arg in seq if op in ("set", "tset")))
        # mg without flags neither bumps nor counts as a fetch for the LRU
        alive = [k for k in keys if c.request(b"mg %s\r\n" % k).startswith(b"HD\r\n")]
        st = c.stats()
        counters = {name: int(st[name]) for name in ("evictions", "curr_items")}
        items = c.stats(b"items")
        for name, value in items.items():
            if name.endswith((":number_temp", ":hits_to_temp")):
                counters[name] = int(value)
    return alive, counters, sorted(items)       # and `stats items` prints the same fields


README = sets(b"k", range(40))
# Items read twice while in COLD move to WARM and outlive older and newer COLD items; one
# read (FETCHED only) does not protect.
COLD_BUMPS = (sets(b"k", range(15)) + [("sleep", SETTLE)] + gets([b"k02", b"k05"], 2)
              + gets([b"k07"]) + [("sleep", BUMP_SETTLE)] + sets(b"n", range(15)))
# Items read twice while still in HOT are ACTIVE: the pull that would evict them from HOT's
# tail sends them to WARM instead.
HOT_BUMPS = sets(b"k", range(10)) + gets([b"k00", b"k03"], 2) + sets(b"n", range(25))
# Three phases: bumps in COLD, new items, bumps of an old and of a new item, more new items.
PHASES = (sets(b"k", range(18)) + [("sleep", SETTLE)] + gets([b"k01", b"k04", b"k09"], 2)
          + [("sleep", BUMP_SETTLE)] + sets(b"n", range(8)) + gets([b"k10", b"n01"], 2)
          + [("sleep", BUMP_SETTLE)] + sets(b"p", range(12)))
# The flat LRU (no maintainer): one list per class, a hit does not move an item.
FLAT = sets(b"k", range(12)) + gets([b"k00", b"k01"], 2) + sets(b"n", range(20))

# -o temporary_ttl: items with a TTL up to 61 s live in the TEMP LRU, never evicted and never
# bumped, however old and however much else is stored (memcached's t/lru-maintainer.t).
TEMP = ([("tset", b"t00"), ("tset", b"t01")] + sets(b"k", range(10)) + gets([b"t01"], 3)
        + sets(b"n", range(30)))

CASES = {
    "readme": ((), README),
    "cold-bumps": ((), COLD_BUMPS),
    "hot-bumps": ((), HOT_BUMPS),
    "phases": ((), PHASES),
    "flat": (("-o", "no_lru_maintainer"), FLAT),
    "threads-4": (("-t", "4"), PHASES),
    "temp-lru": (("-o", "temporary_ttl=61"), TEMP),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(CASES))
def test_same_items_survive_as_memcached(daemon_pair, case: str) -> None:
    flags, seq = CASES[case]
    ref, sut = daemon_pair("memcachepy", ("-m", "2") + tuple(flags))
    with ThreadPoolExecutor(2) as pool:           # the same story, told to both at once
        want_f, got_f = pool.submit(run, ref, seq), pool.submit(run, sut, seq)
        want, got = want_f.result(), got_f.result()
    alive, counters, _ = want
    assert counters["evictions"] > 0 and len(alive) < len(set(a for _, a in seq)), want
    if case == "temp-lru":
        assert alive[:2] == [b"t00", b"t01"], want
        assert [v for k, v in counters.items() if k.endswith(":number_temp")] == [2], want
    assert got == want


@pytest.mark.timeout(120)
def test_concurrent_evictions_keep_values_whole(start_daemon) -> None:
    # four workers evicting at once, mostly from shards other than their own (the class's
    # oldest tail), while others read: every hit still carries its own key's bytes
    d = start_daemon("memcachepy", "-t", "4", "-m", "8")
    errors: list[str] = []

    def client(idx: int) -> None:
        with Conn(d.addr) as c:
            for i in range(1500):
                key = b"w%d-%05d" % (idx, i)
                val = (key + b"|") * (4000 // (len(key) + 1))
                c.send(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, len(val), val))
                if i % 10 == 9:
                    old = b"w%d-%05d" % ((idx + 1) % 4, i - 5)
                    reply = c.request(b"get %s\r\n" % old)
                    if reply.startswith(b"VALUE"):
                        body = reply.split(b"\r\n")[1]
                        if body != (old + b"|") * (4000 // (len(old) + 1)):
                            errors.append(f"{old!r}: {body[:40]!r}")
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    with Conn(d.addr) as c:
        st = c.stats()
    assert int(st["evictions"]) > 1000 and int(st["curr_items"]) > 500, st
