# Large data blocks arrive in slab memory ("spooling", conn.pxi): a value of
# 64 KB or more that is not complete yet is received into slab memory (evicting
# if it must) -- for set/add/replace/append/prepend/cas into the item itself,
# allocated when the line is read, as memcached does -- so values in flight
# count against -m. These tests drive that path over
# real sockets: byte-by-byte and chunked arrival, pipelined commands after it,
# noreply, meta `ms`, out of memory with -M, and a client hanging up mid-value.
from __future__ import annotations

import time

import pytest
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", ["memcached", "memcachepy"])
def test_large_value_in_pieces_then_pipeline(start_daemon, kind):
    d = start_daemon(kind)
    s = Conn(d.addr)
    value = bytes(range(256)) * 1000           # 256,000 bytes
    req = b"set big 7 0 %d\r\n" % len(value) + value + b"\r\nget big\r\nmn\r\n"
    for i in range(0, len(req), 9973):
        s.send(req[i:i + 9973])
        time.sleep(0.001)
    out = s.read_until(b"MN\r\n")
    assert out == (b"STORED\r\nVALUE big 7 %d\r\n" % len(value) + value + b"\r\nEND\r\nMN\r\n")


@pytest.mark.parametrize("kind", ["memcached", "memcachepy"])
def test_large_value_noreply_and_meta(start_daemon, kind):
    d = start_daemon(kind)
    s = Conn(d.addr)
    v = b"z" * 200000
    s.send(b"set a 0 0 %d noreply\r\n" % len(v))
    time.sleep(0.05)
    s.send(v[:50000])
    time.sleep(0.05)
    s.send(v[50000:] + b"\r\nms b %d T0\r\n" % len(v))
    time.sleep(0.05)
    s.send(v + b"\r\nmg a s\r\nmg b s v\r\nmn\r\n")
    out = s.read_until(b"MN\r\n")
    assert out == b"HD\r\nHD s200000\r\nVA 200000 s200000\r\n" + v + b"\r\nMN\r\n"


@pytest.mark.parametrize("kind", ["memcached", "memcachepy"])
def test_bad_chunk_after_spooled_value(start_daemon, kind):
    d = start_daemon(kind)
    s = Conn(d.addr)
    s.send(b"set k 0 0 100000\r\n" + b"q" * 100000 + b"XX" + b"get k\r\n")
    out = s.read_until(b"END\r\n")
    assert out == b"CLIENT_ERROR bad data chunk\r\nEND\r\n"


@pytest.mark.parametrize("kind", ["memcached", "memcachepy"])
def test_every_update_command_in_pieces(start_daemon, kind):
    # add/replace/append/prepend/cas with large values arriving in pieces: the value
    # is received into the item allocated for the line (memcachepy adopts it for every
    # update command), so each command's own rules still decide what is stored
    d = start_daemon(kind)
    s = Conn(d.addr)
    a, b, c = b"a" * 70000, b"b" * 80000, b"c" * 90000

    def send(cmd: bytes, value: bytes, cas: int | None = None) -> None:
        line = cmd + b" %d" % len(value) + (b" %d" % cas if cas is not None else b"")
        req = line + b"\r\n" + value + b"\r\n"
        for i in range(0, len(req), 30011):
            s.send(req[i:i + 30011])
            time.sleep(0.002)

    send(b"replace k 0 0", a)              # NOT_STORED: no k yet
    send(b"add k 3 0", a)                  # STORED
    send(b"add k 4 0", b)                  # NOT_STORED: k exists
    send(b"append k 9 0", b)               # STORED: a + b, flags kept
    send(b"prepend k 9 0", c)              # STORED: c + a + b
    s.send(b"gets k\r\n")
    out = s.read_until(b"END\r\n")
    head, _, rest = out.partition(b"VALUE k ")
    hdr, _, body = rest.partition(b"\r\n")
    flags, length, cas = hdr.split()
    assert head == b"NOT_STORED\r\nSTORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\n"
    assert (flags, int(length)) == (b"3", len(a + b + c))
    assert body == c + a + b + b"\r\nEND\r\n"
    send(b"cas k 5 0", b, int(cas) + 1)    # EXISTS: someone else's CAS
    send(b"cas k 5 0", c, int(cas))        # STORED
    s.send(b"get k\r\n")
    out = s.read_until(b"END\r\n")
    assert out == b"EXISTS\r\nSTORED\r\nVALUE k 5 %d\r\n" % len(c) + c + b"\r\nEND\r\n"


def test_hang_up_mid_value_leaves_nothing(start_daemon):
    d = start_daemon("memcachepy", "-m", "8")
    for i in range(50):                     # 50 × 1 MB would not fit in 8 MB at once
        c = d.connect()
        c.sendall(b"set part%d 0 0 1000000\r\n" % i + b"x" * 600000)
        c.close()
    s = Conn(d.addr)
    s.send(b"set ok 0 0 2\r\nhi\r\nget ok part1\r\n")
    out = s.read_until(b"END\r\n")
    assert out.startswith(b"STORED\r\nVALUE ok 0 2\r\nhi\r\nEND\r\n")
    s.send(b"stats\r\n")
    stats = s.read_until(b"END\r\n")
    assert b"STAT curr_items 1\r\n" in stats


def test_values_in_flight_count_against_memory(start_daemon):
    # -M: once slab memory is taken by blocks in flight, the next big one is refused the
    # way memcached refuses an item it cannot allocate, and its bytes are swallowed
    d = start_daemon("memcachepy", "-m", "8", "-M")
    held = []
    for i in range(12):
        c = d.connect()
        c.sendall(b"set part%d 0 0 1000000\r\n" % i + b"x" * 500000)
        held.append(c)
    time.sleep(0.3)
    s = Conn(d.addr)
    s.send(b"set more 0 0 800000\r\n" + b"y" * 800000 + b"\r\nget more\r\n")
    out = s.read_until(b"END\r\n")
    assert out == b"SERVER_ERROR out of memory storing object\r\nEND\r\n"
    for c in held:
        c.close()
