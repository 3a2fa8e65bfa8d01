# The LRU crawler (ext/crawler.pxi): expired items are reclaimed without anyone asking for
# them, on memcached's schedule, and counted as memcached counts them.
#
# memcached 1.6.18 crawls every class when it starts, and then again when its schedule says
# so: 65 s later for a class whose last crawl saw nothing about to expire. So items that
# expire right after start are still counted in curr_items for about a minute, and then go,
# without a single request touching them. Both daemons are told the same story at the same
# time and must reclaim in the same crawl. `lru_crawler crawl` reclaims at once.
from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.daemons import Daemon
from support.rawclient import Conn

CLASS_OF_SMALL = "1"


def ask(c: Conn, data: bytes) -> bytes:
    """The replies to `data`, without the sentinel's VERSION line."""
    reply = c.request(data)
    return reply[:reply.rindex(b"VERSION ")]


def fill(c: Conn, ttl: int) -> None:
    for i in range(50):
        assert ask(c, b"set e%02d 0 %d 10\r\n0123456789\r\n" % (i, ttl)) == b"STORED\r\n"
        assert ask(c, b"set p%02d 0 0 10\r\n0123456789\r\n" % i) == b"STORED\r\n"
    for i in range(20):       # a second class
        assert ask(c, b"set big%02d 0 %d 2000\r\n%s\r\n" % (i, ttl, b"y" * 2000)) == b"STORED\r\n"


def reclaim_counts(c: Conn) -> dict[str, int]:
    st = c.stats()
    return {"curr_items": int(st["curr_items"]),
            "reclaimed_total": int(st["crawler_reclaimed"]) + int(st["reclaimed"]),
            "expired_unfetched": int(st["expired_unfetched"]),
            "get_expired": int(st["get_expired"])}


def crawler_events(w: socket.socket, seconds: float) -> list[bytes]:
    """`type=lru_crawler` lines a `watch sysevents` conn gets within `seconds`."""
    w.settimeout(0.2)
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = w.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            break
        out += chunk
    return [ln for ln in out.splitlines() if b"type=lru_crawler" in ln]


def background_story(d: Daemon) -> tuple[float, dict[str, int], dict[str, bytes], list[bytes], int]:
    """Store 70 items that expire in 2 s and 50 that never do; touch nothing; return when
    curr_items fell to 50 (seconds after the store), the counters then, and the crawler's
    `watch sysevents` lines for the crawl that reclaimed them (it plans the next crawl of
    each LRU a second later, and says so)."""
    w = socket.create_connection(d.addr, timeout=5)
    w.sendall(b"watch sysevents\r\n")
    crawler_events(w, 0.3)        # OK, and the start-up crawl if still to come
    with Conn(d.addr) as c:
        fill(c, 2)
        t0 = time.monotonic()
        deadline = t0 + 110
        while time.monotonic() < deadline:
            counts = reclaim_counts(c)
            if counts["curr_items"] == 50:
                took = time.monotonic() - t0
                events = crawler_events(w, 3.0)
                return took, counts, c.stats(b"items"), events, int(c.stats()["crawler_reclaimed"])
            time.sleep(0.5)
        raise AssertionError(f"{d.name}: expired items still counted after 110 s: {counts}")


@pytest.mark.timeout(180)
def test_expired_items_reclaimed_in_the_background_as_memcached(daemon_pair) -> None:
    ref, sut = daemon_pair("memcachepy", ())
    with ThreadPoolExecutor(2) as pool:
        want_f, got_f = pool.submit(background_story, ref), pool.submit(background_story, sut)
        (t_want, want, want_items, want_ev, want_cr), (t_got, got, got_items, got_ev, got_cr) = \
            want_f.result(), got_f.result()
    print(f"reclaimed after {t_want:.1f} s (memcached) and {t_got:.1f} s (memcachepy)")
    # every expired item reclaimed by the crawler (or the LRU maintainer passing a tail),
    # none by a lookup, none ever fetched
    assert want == {"curr_items": 50, "reclaimed_total": 70, "expired_unfetched": 70,
                    "get_expired": 0}, want
    assert got == want
    # in the same crawl: the one after start, about a minute later (not at once, not never)
    assert abs(t_got - t_want) < 15, (t_want, t_got)
    line = re.compile(rb"ts=\d+\.\d+ gid=\d+ type=lru_crawler crawler=(\d+) lru=(hot|warm|cold|temp) "
                      rb"low_mark=\d+ next_reclaims=\d+ since_run=\d+ next_run=\d+ elapsed=\d+ "
                      rb"examined=\d+ reclaimed=(\d+)$")
    for items, events, crawler_reclaimed in ((want_items, want_ev, want_cr),
                                             (got_items, got_ev, got_cr)):
        assert int(items[f"items:{CLASS_OF_SMALL}:number"]) == 50
        checked = sum(int(v) for k, v in items.items() if k.endswith(":crawler_items_checked"))
        crawled = sum(int(v) for k, v in items.items() if k.endswith(":crawler_reclaimed"))
        assert checked >= crawled > 0, items
        # each LRU's plan is a sysevent in memcached's format; together they account
        # for every item this crawl reclaimed
        assert events and all(line.match(e) for e in events), events[:3]
        # (stats items lists only classes that still hold items: the general counter)
        assert sum(int(line.match(e).group(3)) for e in events) == crawler_reclaimed, events


@pytest.mark.timeout(60)
def test_lru_crawler_crawl_reclaims_now(kind: str, start_daemon) -> None:
    # One shard gives memcachepy memcached's single LRU per class, so the LRU maintainer
    # (which reclaims expired items at the tails, as memcached's) stops at the same live
    # tail item and leaves the rest to the crawl. With 64 shards most shards' tails are
    # expired items and the maintainer alone may reclaim all 70.
    d = start_daemon(kind, *(["-o", "shards=1"] if kind == "memcachepy" else []))
    with Conn(d.addr) as c:
        time.sleep(1.5)               # the crawl at start-up is over
        fill(c, 1)
        assert ask(c, b"get p00\r\n") == b"VALUE p00 0 10\r\n0123456789\r\nEND\r\n"
        time.sleep(2.5)               # the 70 expire; nothing looks at them
        before = reclaim_counts(c)
        # the LRU maintainer may have reclaimed some at the tails it passed
        assert before["curr_items"] + before["reclaimed_total"] == 120, before
        assert before["curr_items"] > 50, before
        assert ask(c, b"lru_crawler crawl all\r\n") == b"OK\r\n"
        deadline = time.monotonic() + 10      # memcached crawls in its own thread
        while reclaim_counts(c)["curr_items"] != 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = reclaim_counts(c)
        assert after == {"curr_items": 50, "reclaimed_total": 70, "expired_unfetched": 70,
                         "get_expired": 0}, after
        st = c.stats()
        assert int(st["lru_crawler_starts"]) >= 2     # the one at start-up and ours
        assert int(st["crawler_items_checked"]) >= int(st["crawler_reclaimed"]) > 0
        # the live items are all still there and intact
        for i in range(50):
            assert ask(c, b"get p%02d\r\n" % i) == b"VALUE p%02d 0 10\r\n0123456789\r\nEND\r\n" % i
        assert ask(c, b"get e00 big00\r\n") == b"END\r\n"
        # stats reset clears the crawler's counters, as memcached's
        assert ask(c, b"stats reset\r\n") == b"RESET\r\n"
        st = c.stats()
        assert (st["crawler_reclaimed"], st["crawler_items_checked"]) == (b"0", b"0")
