# Per-worker response memory (-o read_buf_mem_limit), compared with memcached.
#
# memcached gives each worker read_buf_mem_limit / threads of 16 KB buffers
# for read buffers and response objects (13 per buffer). With 1 MB over 32
# threads that is 2 buffers: the read buffer of the conn being served and one
# bundle, so a multiget may hold 13 response objects (the command's and one per
# further key). Beyond that memcached answers only SERVER_ERROR and counts
# response_obj_oom; pipelined commands that run out close the connection
# without writing what was queued. Same bytes to both daemons, same replies.
from __future__ import annotations

import re
import socket

import pytest

pytestmark = pytest.mark.timeout(60)

FLAGS = ["-o", "read_buf_mem_limit=1", "-t", "32", "-R", "500"]


def recv_until(s: socket.socket, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
    return buf


def recv_all(s: socket.socket) -> bytes:
    buf = b""
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            return buf
        buf += chunk


def stat(s: socket.socket, name: str) -> int:
    s.sendall(b"stats\r\n")
    out = recv_until(s, b"END\r\n")
    return int(re.search(rb"STAT " + name.encode() + rb" (\d+)\r\n", out).group(1))


def multigets(d) -> list[bytes]:
    s = d.connect()
    s.sendall(b"set hit 0 0 3\r\nabc\r\n")
    assert recv_until(s, b"\r\n") == b"STORED\r\n"
    got = []
    for nkeys in (12, 13, 14, 500):
        keys = b" ".join(b"hit" if i % 3 == 0 else b"miss%d" % i for i in range(nkeys))
        s.sendall(b"get " + keys + b"\r\n")
        got.append(recv_until(s, b"END\r\n" if nkeys <= 13 else b"response\r\n"))
    # the connection stays usable; the counter says how often it ran out
    got.append(b"oom=%d" % stat(s, "response_obj_oom"))
    s.sendall(b"get hit\r\n")
    got.append(recv_until(s, b"END\r\n"))
    return got


def pipelined(d, n: int) -> bytes:
    s = d.connect()
    s.sendall(b"mg foo v\r\n" * n)
    s.shutdown(socket.SHUT_WR)
    return recv_all(s)


def test_multiget_out_of_response_objects(daemon_pair):
    ref, sut = daemon_pair("memcachepy", FLAGS)
    want = multigets(ref)
    assert want[2].startswith(b"SERVER_ERROR out of memory writing get response")
    assert multigets(sut) == want


def test_pipelined_commands_out_of_response_objects_close(daemon_pair):
    ref, sut = daemon_pair("memcachepy", FLAGS)
    for n in (13, 14, 500):
        want = pipelined(ref, n)
        assert pipelined(sut, n) == want, n
    assert want == b""          # 14 and more: closed, nothing written
    for d in (ref, sut):
        assert stat(d.connect(), "response_obj_oom") >= 1


def test_no_limit_by_default(daemon_pair):
    ref, sut = daemon_pair("memcachepy", ["-t", "32"])
    keys = b" ".join(b"k%d" % i for i in range(500))
    for d in (ref, sut):
        s = d.connect()
        s.sendall(b"get " + keys + b"\r\n")
        assert recv_until(s, b"END\r\n") == b"END\r\n"
        assert stat(s, "response_obj_oom") == 0
        assert stat(s, "response_obj_count") == 1     # the stats command's own
