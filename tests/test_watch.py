# `watch`: memcached's live log stream, compared with real memcached.
#
# The same traffic goes to both daemons while a watcher connection listens;
# the watcher's lines must have the same shape and content once the fields
# that legitimately differ (timestamps, global ids, fds, ephemeral ports,
# slab class numbers) are masked.
from __future__ import annotations

import re
import time

import pytest
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(60)

MASKS = [
    (re.compile(rb"ts=\d+\.\d+"), b"ts=<ts>"),
    (re.compile(rb"gid=\d+"), b"gid=<gid>"),
    (re.compile(rb"cfd=\d+"), b"cfd=<fd>"),
    (re.compile(rb"rport=\d+"), b"rport=<port>"),
    (re.compile(rb"clsid=\d+"), b"clsid=<cls>"),
    (re.compile(rb"la=\d+"), b"la=<la>"),
]


def mask(data: bytes) -> list:
    for rx, rep in MASKS:
        data = rx.sub(rep, data)
    return data.splitlines()


def session(daemon, watch_cmd: bytes, traffic: list) -> bytes:
    w = Conn(daemon.addr)
    w.send(watch_cmd)
    first = w.read_idle(idle=0.3, total=5.0)
    client = Conn(daemon.addr)
    for req in traffic:
        client.send(req)
        time.sleep(0.02)
    client.read_idle(idle=0.3, total=5.0)
    client.close()
    rest = w.read_idle(idle=0.6, total=5.0)
    w.close()
    return first + rest


TRAFFIC = [b"set foo 0 0 3\r\nbar\r\n", b"get foo nope\r\n", b"add foo 0 0 1\r\nx\r\n",
           b"set %e2 5 100 2\r\nhi\r\n", b"quit\r\n"]


@pytest.mark.parametrize("cmd", [
    b"watch fetchers mutations\r\n",
    b"watch connevents\r\n",
    b"watch\r\n",
])
def test_watch_stream_matches_memcached(daemon_pair, cmd):
    ref, sut = daemon_pair("memcachepy", [])
    want = mask(session(ref, cmd, TRAFFIC))
    got = mask(session(sut, cmd, TRAFFIC))
    assert want and want[0] == b"OK"
    assert got == want


def test_watch_errors_match_memcached(daemon_pair):
    ref, sut = daemon_pair("memcachepy", [])
    for d in (ref, sut):
        s = Conn(d.addr)
        s.send(b"watch bogus\r\n")
        d.reply = s.read_idle(idle=0.3, total=5.0)
        s.close()
    assert sut.reply == ref.reply == b"ERROR\r\n"


def test_watch_disabled_with_W(daemon_pair):
    ref, sut = daemon_pair("memcachepy", ["-W"])
    replies = []
    for d in (ref, sut):
        s = Conn(d.addr)
        s.send(b"watch\r\n")
        replies.append(s.read_idle(idle=0.3, total=5.0))
        s.close()
    assert replies[0] == replies[1] == b"CLIENT_ERROR watch commands not allowed\r\n"


def test_evictions_are_streamed(start_daemon):
    d = start_daemon("memcachepy", "-m", "2", "-I", "512k", "-o", "shards=1")
    w = Conn(d.addr)
    w.send(b"watch evictions\r\n")
    assert w.read_idle(idle=0.3, total=5.0) == b"OK\r\n"
    c = Conn(d.addr)
    value = b"x" * 4000
    for i in range(1200):
        c.send(b"set k%d 0 0 %d noreply\r\n%s\r\n" % (i, len(value), value))
    c.send(b"version\r\n")
    c.read_idle(idle=0.5, total=5.0)
    lines = w.read_idle(idle=0.6, total=5.0).splitlines()
    assert lines, "no eviction was streamed"
    assert all(re.match(rb"ts=\d+\.\d+ gid=\d+ type=eviction key=k\d+ fetch=no ttl=-1 la=\d+ clsid=\d+ size=4000$",
                        ln) or ln.startswith(b"skipped=") for ln in lines), lines[:3]
    c.send(b"stats\r\n")
    stats = c.read_idle(idle=0.6, total=5.0)
    evictions = int(re.search(rb"STAT evictions (\d+)", stats).group(1))
    streamed = sum(1 for ln in lines if b"type=eviction" in ln)
    assert 0 < streamed <= evictions
