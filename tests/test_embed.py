# The embeddable server (memcachepy.Server, memcachepy/embed.py): the daemon's
# compiled workers started inside the test process.
#
#  * it answers the same bytes as real memcached (differential transcript);
#  * two servers at once are independent (separate copies of the core), and
#    neither disturbs the process's own memcachepy._core (the test Store API);
#  * the clock helper expires TTLs without sleeping, flush() empties it;
#  * 200 start/stop cycles leave threads, file descriptors and RSS flat and
#    load one copy of the core (run in a child process, so the numbers are its
#    own); a restarted server starts from zeroed counters;
#  * under .ci/sanitize (MEMCACHEPY_LSAN=1) cycles leak nothing from the core.
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from pymemcache.client.base import Client

import memcachepy
from memcachepy import embed
from support.daemons import KIND_MEMCACHED, REPO_ROOT
from support.normalise import diff, normalise
from support.rawclient import Conn, run_transcript

from conftest import require_memcached

pytestmark = pytest.mark.timeout(120)


def client(srv: memcachepy.Server) -> Client:
    return Client(srv.address, default_noreply=False, connect_timeout=5, timeout=5)


def test_server_serves_on_an_ephemeral_loopback_port() -> None:
    # Thread objects, not idents: a thread of an earlier test that ends just after this
    # snapshot frees its ident (the pthread_t address) for one of the server's new threads.
    before = set(threading.enumerate())
    with memcachepy.Server(memory_mb=16, threads=2) as srv:
        host, port = srv.address
        assert host == "127.0.0.1" and port > 0
        assert srv.server_string == f"127.0.0.1:{port}"
        names = sorted(t.name for t in threading.enumerate() if t not in before)
        assert len(names) == 3 and names[-1].endswith("worker-1"), names
        c = client(srv)
        assert c.set("greeting", b"hello", expire=60)
        assert c.get("greeting") == b"hello"
        st = srv.stats()
        assert st["cmd_set"] == "1" and st["get_hits"] == "1" and st["threads"] == "2"
        assert st["limit_maxbytes"] == str(16 * 1024 * 1024)
        assert srv.stats("settings")["num_threads"] == "2"
        c.close()
    assert not srv.running
    assert set(threading.enumerate()) <= before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    srv.close()      # twice is fine


def test_same_bytes_as_memcached(start_daemon) -> None:
    require_memcached()
    steps = [b"set a 5 0 3\r\nabc\r\n", b"get a b\r\n", b"append a 0 0 2\r\nde\r\n",
             b"gets a\r\n", b"incr a 1\r\n", b"set n 0 0 2\r\n10\r\n", b"incr n 5\r\n",
             b"decr n 100\r\n", b"mg a v f t s\r\n", b"ms m 2 T0 F3\r\nxy\r\n",
             b"mg m v f\r\n", b"md m q\r\nmn\r\n", b"delete a\r\n", b"get a\r\n",
             b"bogus\r\n", b"set k 0 0 -1\r\n", b"get " + b"k" * 251 + b"\r\n"]
    mc = start_daemon(KIND_MEMCACHED)
    want = normalise(run_transcript(mc.addr, steps))
    with memcachepy.Server(threads=2) as srv:
        got = normalise(run_transcript(srv.address, steps))
    assert got == want, diff(want, got, "memcached", "embedded")


def test_advance_clock_expires_ttls_without_sleeping() -> None:
    with memcachepy.Server(threads=1) as srv:
        c = client(srv)
        t0 = srv.clock()
        c.set("short", b"1", expire=10)
        c.set("long", b"2", expire=100)
        c.set("forever", b"3")
        srv.advance_clock(9)
        assert srv.clock() >= t0 + 9
        assert c.get_many(["short", "long", "forever"]) == {
            "short": b"1", "long": b"2", "forever": b"3"}
        srv.advance_clock(1.5)               # fractions round up: 11 s in all
        assert c.get("short") is None
        assert c.get("long") == b"2"
        with Conn(srv.address) as conn:     # the remaining TTL the server reports
            ttl = int(conn.request(b"mg long t\r\n").split()[1][1:])
        assert 88 <= ttl <= 89
        assert c.touch("long", 5)
        srv.advance_clock(5)
        assert c.get("long") is None and c.get("forever") == b"3"
        with pytest.raises(ValueError):
            srv.advance_clock(-1)


def test_absolute_exptimes_follow_the_advanced_clock() -> None:
    # Clients that send absolute expiry times (Flask-Caching, Django for long
    # timeouts) take them from the real clock, which advance_clock() did not move.
    import time
    with memcachepy.Server(threads=1) as srv:
        c = client(srv)
        c.set("before", b"1", expire=int(time.time()) + 60)
        srv.advance_clock(61)
        assert c.get("before") is None              # its 60 s have passed
        c.set("after", b"2", expire=int(time.time()) + 60)
        assert c.get("after") == b"2"               # 60 s from now, not already past
        srv.advance_clock(59)
        assert c.get("after") == b"2"
        srv.advance_clock(2)
        assert c.get("after") is None


def test_flush_empties_the_cache_and_new_sets_survive() -> None:
    with memcachepy.Server(threads=1, args=["-F"]) as srv:    # even with flush_all disabled
        c = client(srv)
        c.set_many({f"k{i}": b"v" for i in range(100)})
        srv.flush()
        assert c.get_many([f"k{i}" for i in range(100)]) == {}
        c.set("after", b"x")                  # stored in the flush's own second
        assert c.get("after") == b"x"
        with Conn(srv.address) as conn:
            assert conn.request(b"flush_all\r\n").startswith(b"CLIENT_ERROR flush_all not allowed\r\n")


def test_two_servers_at_once_are_independent() -> None:
    with memcachepy.Server(threads=1, memory_mb=8) as a, \
            memcachepy.Server(threads=2, memory_mb=16) as b:
        assert a.address != b.address
        ca, cb = client(a), client(b)
        ca.set("k", b"from-a")
        cb.set("k", b"from-b")
        cb.set("only-b", b"1")
        assert ca.get("k") == b"from-a" and cb.get("k") == b"from-b"
        assert ca.get("only-b") is None
        assert a.stats()["curr_items"] == "1" and b.stats()["curr_items"] == "2"
        assert a.stats()["limit_maxbytes"] != b.stats()["limit_maxbytes"]
        a.advance_clock(1000)               # each has its own clock
        assert a.clock() >= b.clock() + 1000
        ca.close()
    # b's workers were never touched by a's shutdown
    assert not b.running and not a.running


def test_core_copies_leave_the_process_module_alone() -> None:
    import memcachepy._core as core
    with memcachepy.Server(threads=1) as srv:
        mod = srv._module
        assert mod is not core and mod.Server is not core.Server
        assert sys.modules["memcachepy._core"] is core
        # the process's own core (the test Store API) initialises beside it
        store = core.Store(memcachepy.settings.Settings().to_core())
        try:
            assert store.set(b"x", b"store-side") == "STORED"
            c = client(srv)
            assert c.get("x") is None
            c.set("x", b"server-side")
            assert store.get(b"x")[0] == b"store-side"
        finally:
            store.close()
        assert client(srv).get("x") == b"server-side"


def test_unix_socket() -> None:
    path = f"/tmp/memcachepy-embed-{os.getpid()}.sock"
    with memcachepy.Server(threads=1, unix_socket=path) as srv:
        assert srv.address == path and os.path.exists(path)
        c = Client(path, default_noreply=False)
        c.set("u", b"1")
        assert c.get("u") == b"1"
        assert srv.stats()["curr_items"] == "1"
    assert not os.path.exists(path)


def test_settings_errors_and_refused_flags() -> None:
    with pytest.raises(ValueError, match="threads"):
        memcachepy.Server(threads=0)
    with pytest.raises(ValueError, match="-d"):
        memcachepy.Server(args=["-d"])
    with pytest.raises(ValueError):
        memcachepy.Server(args=["--no-such-flag"])
    srv = memcachepy.Server(threads=1)
    with pytest.raises(RuntimeError):
        srv.address
    with srv:
        with pytest.raises(RuntimeError):
            srv.start()
    with pytest.raises(RuntimeError):
        srv.flush()


def test_port_in_use_is_an_oserror_and_the_copy_is_reusable() -> None:
    with memcachepy.Server(threads=1) as a:
        loaded = embed._POOL.loaded
        with pytest.raises(OSError, match="Address already in use"):
            memcachepy.Server(threads=1, port=a.port).start()
        with memcachepy.Server(threads=1) as b:
            client(b).set("k", b"v")
        assert embed._POOL.loaded <= loaded + 1


_CYCLES = textwrap.dedent("""
    import json, os, sys, threading
    import memcachepy
    from memcachepy import embed
    from pymemcache.client.base import Client

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    marks = {}
    firsts = []
    n = int(sys.argv[1])
    for i in range(n):
        with memcachepy.Server(memory_mb=8, threads=2) as srv:
            c = Client(srv.address, default_noreply=False)
            st = srv.stats()
            firsts.append([st["total_items"], st["cmd_set"], st["total_connections"],
                           st["curr_items"]])
            for k in range(50):
                c.set("k%d" % k, b"x" * (100 + 40 * k), expire=k)
            assert c.get("k7") == b"x" * 380
            srv.advance_clock(30)
            c.close()
        if i in (0, n // 10, n - 1):
            marks[i] = {"rss": rss(), "fds": sorted(os.listdir("/proc/self/fd")),
                        "threads": threading.active_count()}
    print(json.dumps({"marks": marks, "firsts": firsts, "loaded": embed._POOL.loaded}))
""")


def _run_cycles(n: int, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CYCLES, str(n)], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=100, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(os.environ.get("MEMCACHEPY_LSAN") == "1", reason="RSS under ASan is not the build's")
def test_200_start_stop_cycles_leave_threads_fds_and_rss_flat() -> None:
    out = _run_cycles(200)
    marks = out["marks"]
    first, early, last = marks["0"], marks["20"], marks["199"]
    assert first["threads"] == early["threads"] == last["threads"] == 1
    assert first["fds"] == early["fds"] == last["fds"]
    # One cycle allocates slab pages (≥ 1 MiB) and a 512 KiB hash table: a leak of
    # either would grow RSS by 100+ MiB over 180 cycles. Allocator slack stays small.
    grown = last["rss"] - early["rss"]
    assert grown < 4 * 1024 * 1024, f"RSS grew {grown} bytes over 180 cycles"
    assert out["loaded"] == 1, "each cycle should reuse the same copy of the core"
    # every start begins from zeroed counters
    firsts = out["firsts"]
    assert firsts[0][:2] == ["0", "0"] and all(f == firsts[0] for f in firsts), firsts[:3]


@pytest.mark.skipif(os.environ.get("MEMCACHEPY_LSAN") != "1",
                    reason="needs the ASan build (.ci/sanitize sets MEMCACHEPY_LSAN=1)")
def test_cycles_leak_nothing_from_the_core_under_lsan(tmp_path) -> None:
    from test_memory import core_leaks
    import re
    log = tmp_path / "lsan"
    opts = re.sub(r"(detect_leaks|log_path|abort_on_error|exitcode)=[^:]*:?", "",
                  os.environ.get("ASAN_OPTIONS", ""))
    env = dict(os.environ, ASAN_OPTIONS=f"{opts}:detect_leaks=1:exitcode=0:log_path={log}".lstrip(":"),
               MEMCACHEPY_KEEP_CORE_COPIES="1", TMPDIR=str(tmp_path))   # symbolized reports
    _run_cycles(20, env)
    report = "\n".join(p.read_text() for p in tmp_path.glob("lsan*"))
    leaks = core_leaks(report)
    assert not leaks, "\n\n".join(leaks[:5])


def test_a_server_left_running_does_not_hang_exit() -> None:
    code = ("import memcachepy; s = memcachepy.Server(threads=2).start(); "
            "from pymemcache.client.base import Client; Client(s.address).set('k', b'v'); "
            "print('started')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "started", proc.stderr[-2000:]
