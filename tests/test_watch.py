# `watch`: memcached's live log stream, compared with real memcached.
#
# The same traffic goes to both daemons while a watcher connection listens;
# the watcher's lines must have the same shape and content once the fields
# that legitimately differ (timestamps, global ids, fds, ephemeral ports,
# slab class numbers) are masked.
from __future__ import annotations

import re
import socket
import time

import pytest

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


def read_until_quiet(sock: socket.socket, quiet: float = 0.6, limit: float = 5.0) -> bytes:
    sock.settimeout(quiet)
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
    return out


def session(daemon, watch_cmd: bytes, traffic: list) -> bytes:
    w = daemon.connect()
    w.sendall(watch_cmd)
    first = read_until_quiet(w, quiet=0.3)
    client = daemon.connect()
    for req in traffic:
        client.sendall(req)
        time.sleep(0.02)
    read_until_quiet(client, quiet=0.3)
    client.close()
    rest = read_until_quiet(w)
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
        s = d.connect()
        s.sendall(b"watch bogus\r\n")
        d.reply = read_until_quiet(s, quiet=0.3)
        s.close()
    assert sut.reply == ref.reply == b"ERROR\r\n"


def test_watch_disabled_with_W(daemon_pair):
    ref, sut = daemon_pair("memcachepy", ["-W"])
    replies = []
    for d in (ref, sut):
        s = d.connect()
        s.sendall(b"watch\r\n")
        replies.append(read_until_quiet(s, quiet=0.3))
        s.close()
    assert replies[0] == replies[1] == b"CLIENT_ERROR watch commands not allowed\r\n"


def test_evictions_are_streamed(start_daemon):
    d = start_daemon("memcachepy", "-m", "2", "-I", "512k", "-o", "shards=1")
    w = d.connect()
    w.sendall(b"watch evictions\r\n")
    assert read_until_quiet(w, quiet=0.3) == b"OK\r\n"
    c = d.connect()
    value = b"x" * 4000
    for i in range(1200):
        c.sendall(b"set k%d 0 0 %d noreply\r\n%s\r\n" % (i, len(value), value))
    c.sendall(b"version\r\n")
    read_until_quiet(c, quiet=0.5)
    lines = read_until_quiet(w).splitlines()
    assert lines, "no eviction was streamed"
    assert all(re.match(rb"ts=\d+\.\d+ gid=\d+ type=eviction key=k\d+ fetch=no ttl=-1 la=\d+ clsid=\d+ size=4000$",
                        ln) or ln.startswith(b"skipped=") for ln in lines), lines[:3]
    c.sendall(b"stats\r\n")
    stats = read_until_quiet(c)
    evictions = int(re.search(rb"STAT evictions (\d+)", stats).group(1))
    streamed = sum(1 for ln in lines if b"type=eviction" in ln)
    assert 0 < streamed <= evictions
