# Workers' chunk stashes (ext/slabs.pxi, issue 14): each worker keeps a few
# free chunks per slab class so a store does not take the global slab lock.
# What a client can see must not change: chunks in a stash count as free in
# `stats slabs`/`stats items` exactly as memcached's free list does, a class
# gets a new page only when no chunk is free anywhere (stashes included), a
# store evicts only when no chunk is free anywhere, and the page mover can
# empty a page whose free chunks sit in stashes.
#
# Differential where memcached has the behaviour (both daemons -t 4, the same
# load, stats compared); the page move uses an embedded server so the test can
# see that the stashes really hold chunks when the move starts.
from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from support.rawclient import cmd

pytestmark = pytest.mark.timeout(180)

THREADS = 4


def stats(sock: socket.socket, group: bytes = b"") -> dict:
    out = cmd(sock, b"stats" + (b" " + group if group else b"") + b"\r\n")
    return {k.decode(): v.decode() for k, v in re.findall(rb"STAT (\S+) (\S+)\r\n", out)}


def sync(sock: socket.socket) -> None:
    assert cmd(sock, b"mn\r\n", b"MN\r\n") == b"MN\r\n"


def value(t: int, i: int, rnd: int) -> bytes:
    return (b"%d.%d.%d." % (t, i, rnd)).ljust(100 + (i % 3) * 40, b"x")


def conn_load(sock: socket.socket, t: int, n: int) -> None:
    """One conn's share: n new keys, every other one overwritten, every third
    deleted, pipelined in batches (noreply) and synced."""
    for rnd, keys in ((0, range(n)), (1, range(0, n, 2))):
        for start in range(0, len(keys), 100):
            sock.sendall(b"".join(b"set t%dk%d 0 0 %d noreply\r\n%s\r\n"
                                  % (t, i, len(value(t, i, rnd)), value(t, i, rnd))
                                  for i in keys[start:start + 100]))
            sync(sock)
    keys = range(0, n, 3)
    for start in range(0, len(keys), 100):
        sock.sendall(b"".join(b"delete t%dk%d noreply\r\n" % (t, i) for i in keys[start:start + 100]))
        sync(sock)


def expected(t: int, i: int) -> bytes | None:
    if i % 3 == 0:
        return None
    return value(t, i, 1 if i % 2 == 0 else 0)


SLAB_FIELDS = ("chunk_size", "total_pages", "total_chunks", "used_chunks", "free_chunks")


def slab_numbers(sock: socket.socket) -> dict:
    st = stats(sock, b"slabs")
    out = {k: v for k, v in st.items() if k.split(":")[-1] in SLAB_FIELDS or k == "total_malloced"}
    items = stats(sock, b"items")
    out.update({k: v for k, v in items.items() if k.endswith((":number", ":mem_requested", ":evicted"))})
    general = stats(sock)
    out.update({k: general[k] for k in ("curr_items", "total_items", "evictions", "bytes")})
    return out


def test_concurrent_sets_on_every_worker_count_as_memcached(daemon_pair) -> None:
    # 8 conns (two per worker) store, overwrite and delete at once in the same
    # classes; afterwards both daemons count the same chunks, pages and bytes
    per_conn = 1500
    results = {}
    for d in daemon_pair("memcachepy", ["-t", str(THREADS), "-m", "64"]):
        socks = [d.connect() for _ in range(2 * THREADS)]
        errors: list[BaseException] = []

        def run(t: int) -> None:
            try:
                conn_load(socks[t], t, per_conn)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(len(socks))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, (d.kind, errors)
        s = socks[0]
        for t in range(len(socks)):
            keys = [b"t%dk%d" % (t, i) for i in range(per_conn)]
            out = cmd(s, b"get " + b" ".join(keys) + b"\r\n")
            want = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(expected(t, i)), expected(t, i))
                            for i, k in enumerate(keys) if expected(t, i) is not None) + b"END\r\n"
            assert out == want, (d.kind, t)
        results[d.kind] = slab_numbers(s)
        for x in socks:
            x.close()
    ref, sut = results.values()
    live = sum(1 for t in range(2 * THREADS) for i in range(per_conn) if expected(t, i) is not None)
    assert int(sut["curr_items"]) == live
    assert sut == ref


def test_no_eviction_while_another_worker_stashes_free_chunks(daemon_pair) -> None:
    # memory full: a worker that needs a chunk takes a free one out of another
    # worker's stash instead of evicting (memcached's free list holds both)
    results = {}
    for d in daemon_pair("memcachepy", ["-t", str(THREADS), "-m", "8", "-o", "slab_reassign,slab_automove=0"]):
        socks = [d.connect() for _ in range(THREADS)]   # one per worker, round robin
        big = b"v" * 1000

        def fill(s: socket.socket, prefix: bytes, n: int) -> None:
            for start in range(0, n, 200):
                s.sendall(b"".join(b"set %s%d 0 0 1000 noreply\r\n%s\r\n" % (prefix, i, big)
                                   for i in range(start, min(n, start + 200))))
                sync(s)

        fill(socks[0], b"a", 9000)          # past the limit: evictions
        ev0 = int(stats(socks[0])["evictions"])
        assert ev0 > 0, d.kind
        # another worker frees a few chunks (they stay in its stash), a third
        # one stores as many new keys: no eviction on either daemon
        live = [i for i in range(9000) if cmd(socks[0], b"mg a%d\r\n" % i, b"\r\n").startswith(b"HD")]
        for i in live[-12:]:
            assert cmd(socks[1], b"delete a%d\r\n" % i, b"\r\n") == b"DELETED\r\n"
        fill(socks[2], b"b", 12)
        assert int(stats(socks[0])["evictions"]) == ev0, d.kind
        fill(socks[3], b"c", 500)           # and on from there, evicting again
        results[d.kind] = slab_numbers(socks[0])
        for s in socks:
            s.close()
    ref, sut = results.values()
    assert sut == ref


def wait_for(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_page_move_takes_chunks_back_from_the_stashes() -> None:
    import memcachepy

    per_conn = 4000            # 4 x 4,000 items of the 192-byte class: 3 pages
    with memcachepy.Server(memory_mb=64, threads=THREADS,
                           args=["-o", "slab_reassign,slab_automove=0"]) as srv:
        core = srv._module
        socks = [socket.create_connection(srv.address, timeout=60) for _ in range(THREADS)]
        for t, s in enumerate(socks):
            for start in range(0, per_conn, 200):
                s.sendall(b"".join(b"set t%dk%d 0 0 %d noreply\r\n%s\r\n"
                                   % (t, i, len(value(t, i, 0)[:100]), value(t, i, 0)[:100])
                                   for i in range(start, start + 200)))
                sync(s)
        st = stats(socks[0], b"slabs")
        cls = max((int(k.split(":")[0]) for k in st if k.endswith(":total_pages")),
                  key=lambda c: int(st["%d:total_pages" % c]))
        pages = int(st["%d:total_pages" % cls])
        assert pages >= 3
        # every worker deletes every other key, its oldest last: the first
        # page (the one a move empties) ends with free chunks in the stashes
        deleted = set()
        for t, s in enumerate(socks):
            keys = [i for i in range(per_conn) if i % 2 == 0][::-1]
            for start in range(0, len(keys), 100):
                s.sendall(b"".join(b"delete t%dk%d noreply\r\n" % (t, i) for i in keys[start:start + 100]))
                sync(s)
            deleted.update((t, i) for i in keys)
        stashed = [w.get(cls, 0) for w in core.slabs_stash_counts()]
        assert sum(1 for n in stashed if n) >= 2, stashed
        live = THREADS * per_conn - len(deleted)
        st = stats(socks[0], b"slabs")
        assert int(st["%d:used_chunks" % cls]) == live      # stashed chunks count as free
        assert int(st["%d:free_chunks" % cls]) == pages * int(st["%d:chunks_per_page" % cls]) - live
        assert core.check_invariants() == live
        assert cmd(socks[0], b"slabs reassign %d 0\r\n" % cls, b"\r\n") == b"OK\r\n"
        assert wait_for(lambda: stats(socks[0])["slabs_moved"] == "1"), stats(socks[0])
        assert wait_for(lambda: stats(socks[0])["slab_reassign_running"] == "0")
        general = stats(socks[0])
        assert general["slab_reassign_evictions_nomem"] == "0"
        assert int(general["slab_reassign_rescues"]) > 0
        st = stats(socks[0], b"slabs")
        assert int(st["%d:total_pages" % cls]) == pages - 1
        assert int(st["%d:used_chunks" % cls]) == live
        assert core.check_invariants() == live
        # every item intact, and the class keeps storing (no chunk of the moved
        # page is handed out again: values would be overwritten)
        for t, s in enumerate(socks):
            for i in range(per_conn):
                want = None if (t, i) in deleted else value(t, i, 0)[:100]
                out = cmd(s, b"get t%dk%d\r\n" % (t, i))
                assert out == (b"END\r\n" if want is None else
                               b"VALUE t%dk%d 0 100\r\n%s\r\nEND\r\n" % (t, i, want)), (t, i)
            for i in range(0, per_conn, 2):
                s.sendall(b"set t%dk%d 0 0 100 noreply\r\n%s\r\n" % (t, i, value(t, i, 5)[:100]))
            sync(s)
        for t, s in enumerate(socks):
            for i in range(0, per_conn, 2):
                assert cmd(s, b"get t%dk%d\r\n" % (t, i)) == \
                    b"VALUE t%dk%d 0 100\r\n%s\r\nEND\r\n" % (t, i, value(t, i, 5)[:100])
        assert core.check_invariants() == THREADS * per_conn
        for s in socks:
            s.close()
