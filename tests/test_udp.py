# UDP (-U) against memcached 1.6.18 (issue 12).
#
# The same datagrams go to memcached and memcachepy, both started with `-U -1` (any free
# port, from the port file's `UDP INET:` line); every reply datagram is compared byte for
# byte, in order: the 8-byte frame header (request id echoed, sequence number and datagram
# count per reply object), replies split at 1,392 data bytes, one reply object per get hit
# and one for its END, a stats dump as one multi-datagram reply, binary packets over UDP,
# and garbage (short datagrams, multi-datagram requests) ignored.  `stats conns` lists the
# UDP conns as memcached does.
from __future__ import annotations

import re
import socket
import struct
import time

import pytest
from conftest import require_memcached
from support.binproto import pkt, store_ext
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, Proc, binary


class UdpDaemon:
    """A daemon with TCP and UDP on free loopback ports (tests/support's Proc)."""

    def __init__(self, kind: str, *flags: str) -> None:
        self.p = Proc([*binary(kind), "-u", "root", "-l", "127.0.0.1", "-p", "-1", "-U", "-1",
                       *flags])
        try:
            self.tcp = self.p.wait_port()
            deadline = time.monotonic() + 15
            text = self.p.port_file.read_text()
            while "UDP INET:" not in text:
                assert self.p.proc.poll() is None and time.monotonic() < deadline, \
                    f"{kind}: no UDP port: {self.p.stderr()}"
                time.sleep(0.02)
                text = self.p.port_file.read_text()
        except BaseException:
            self.p.stop()
            raise
        self.udp = int(re.search(r"UDP INET: (\d+)", text).group(1))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def exchange(self, datagram: bytes, idle: float = 0.3) -> list[bytes]:
        """Send one datagram, collect replies until `idle` seconds pass without one."""
        self.sock.sendto(datagram, ("127.0.0.1", self.udp))
        out = []
        self.sock.settimeout(idle)
        try:
            while True:
                out.append(self.sock.recv(65536))
        except socket.timeout:
            pass
        return out

    def tcp_request(self, data: bytes, end: bytes = b"END\r\n") -> bytes:
        with socket.create_connection(("127.0.0.1", self.tcp), timeout=5) as s:
            s.sendall(data)
            buf = b""
            while not buf.endswith(end):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return buf

    def stop(self) -> None:
        self.sock.close()
        self.p.stop()


@pytest.fixture
def udp_pair():
    require_memcached()
    started = []

    def start(*flags: str):
        a = UdpDaemon(KIND_MEMCACHED, *flags)
        b = UdpDaemon(KIND_MEMCACHEPY, *flags)
        started.extend([a, b])
        return a, b

    yield start
    for d in started:
        d.stop()


def frame(payload: bytes, rid: int = 0x1234, seq: int = 0, total: int = 1) -> bytes:
    return struct.pack(">HHHH", rid, seq, total, 0) + payload


def _cas_free(dgrams: list[bytes]) -> list[bytes]:
    """CAS values differ between the daemons: text `gets` values and binary header CAS
    (each binary reply packet travels in its own datagram) are blanked."""
    out = []
    for d in dgrams:
        if d[8:9] == b"\x81" and len(d) >= 32:
            d = d[:24] + (b"CAS" if d[24:32] != bytes(8) else b"0") + d[32:]
        out.append(re.sub(rb"(VALUE \S+ \d+ \d+) \d+", rb"\1 CAS", d))
    return out


EXCHANGES = [
    frame(b"set a 0 0 3000\r\n" + b"x" * 3000 + b"\r\nset b 5 0 1\r\nb\r\n", rid=1),
    frame(b"get a b zz\r\n", rid=2),                 # 3 + 1 datagrams for the hits, 1 for END
    frame(b"gets b\r\n", rid=3),
    frame(b"get zz\r\n", rid=0xFFFF),
    frame(b"get zz a\r\n", rid=20),                # a miss first: a bare header, count 0
    frame(b"get a zz zz\r\n", rid=21),             # misses behind a hit: no datagram
    frame(b"gat 0 zz a zz\r\n", rid=22),
    frame(b"get " + b"k " * 30 + b"a\r\n", rid=23),
    frame(b"version\r\nget zz a\r\nget zz\r\n", rid=24),
    frame(b"get a\r\nget zz b\r\nmg zz v\r\nmg a v q\r\nmg zz v q\r\nmn\r\n", rid=25),
    frame(b"get " + b"k" * 251 + b" a\r\n", rid=26),
    frame(b"version\r\nversion\r\nget", rid=4),       # the partial line is dropped
    frame(b"set big 0 0 60000\r\n" + b"y" * 60000 + b"\r\n", rid=5),
    frame(b"get big\r\n", rid=6),                    # 44 datagrams
    frame(b"delete b\r\nincr n 1\r\nbogus\r\n", rid=7),
    frame(b"mn\r\nms m 2\r\nhi\r\nmg m v\r\n", rid=8),
    frame(b"stats reset\r\nstats detail on\r\nget p:x\r\nstats detail dump\r\nstats detail off\r\n", rid=9),
    frame(pkt("set", b"k", store_ext(1), b"v") + pkt("getk", b"k") + pkt("getq", b"no")
          + pkt("noop"), rid=10),                    # binary over UDP: a packet per reply
    frame(pkt("get", b"a"), rid=11),
    frame(b"version\r\n", total=2),                  # multi-datagram request: dropped
    frame(b"version\r\n", seq=1, total=1, rid=12),   # sequence number is not checked
    b"\x00\x01\x00\x00\x00\x01\x00\x00",             # header only: ignored
    b"\x00\x01",                                     # too short: ignored
    frame(b"\x80\x00\x00"),                          # truncated binary header: no reply
    frame(b"quit\r\nversion\r\n", rid=13),           # quit: an empty reply, the rest dropped
    frame(b"version\r\nquit\r\n", rid=15),
    frame(pkt("quit"), rid=17),
    frame(pkt("version") + pkt("quit"), rid=18),
    frame(pkt("quitq"), rid=19),
    frame(b"version\r\n" + b"x" * 3000 + b"\r\n", rid=27),
    frame(b"shutdown\r\n", rid=28),
    frame(b"version\r\n", rid=14),
]


@pytest.mark.timeout(120)
def test_udp_datagrams_match(udp_pair) -> None:
    ref, sut = udp_pair()
    for dg in EXCHANGES:
        want = _cas_free(ref.exchange(dg))
        got = _cas_free(sut.exchange(dg))
        assert got == want, (dg[:40], want[:3], got[:3])
    # the UDP conns stay up and TCP sees what UDP stored
    assert sut.tcp_request(b"get a\r\n") == ref.tcp_request(b"get a\r\n")


@pytest.mark.timeout(60)
def test_udp_stats_multi_datagram(udp_pair) -> None:
    """`stats` is one reply object split over datagrams of 1,400 bytes, numbered 0..n-1."""
    ref, sut = udp_pair()
    for d in (ref, sut):
        dgs = d.exchange(frame(b"stats\r\n", rid=77))
        total = struct.unpack(">H", dgs[0][4:6])[0]
        assert total == len(dgs) >= 2
        assert [struct.unpack(">HHHH", x[:8]) for x in dgs] == [(77, i, total, 0) for i in range(total)]
        assert all(len(x) == 1400 for x in dgs[:-1])
        body = b"".join(x[8:] for x in dgs)
        assert body.startswith(b"STAT pid ") and body.endswith(b"END\r\n")


@pytest.mark.timeout(60)
def test_udp_stats_conns_and_counters(udp_pair) -> None:
    ref, sut = udp_pair("-t", "2")
    for d in (ref, sut):
        d.exchange(frame(b"set c 0 0 1\r\nc\r\n"))
    shapes = []
    for d in (ref, sut):
        # one TCP conn for all three, so no closing conn races the counters
        with socket.create_connection(("127.0.0.1", d.tcp), timeout=5) as s:
            parts = []
            for req in (b"stats conns\r\n", b"stats\r\n", b"stats settings\r\n"):
                s.sendall(req)
                buf = b""
                while not buf.endswith(b"END\r\n"):
                    buf += s.recv(65536)
                parts.append(buf.decode())
        text, stats, settings_text = parts
        udp = re.findall(r"STAT (\d+):UDP UDP\r\nSTAT \1:addr udp:127\.0\.0\.1:(\d+)\r\n"
                         r"STAT \1:state conn_read\r\n", text)
        assert len(udp) == 2 and {int(p) for _, p in udp} == {d.udp}, text
        vals = dict(re.findall(r"STAT (\w+) (\S+)", stats))
        shapes.append((vals["curr_connections"], vals["total_connections"],
                       vals["connection_structures"], vals["cmd_set"]))
        settings = dict(re.findall(r"STAT (\w+) (\S+)", settings_text))
        shapes.append((settings["udpport"], settings["tcpport"], settings["num_threads_per_udp"]))
    assert shapes[0::2][0] == shapes[0::2][1]
    assert shapes[1] == shapes[3] == ("-1", "-1", "2")


@pytest.mark.timeout(60)
def test_udp_garbage_flood_leaves_daemon_serving(udp_pair) -> None:
    """Random datagrams (any header, any payload) are answered or dropped, never crash."""
    import random
    ref, sut = udp_pair()
    rng = random.Random(12)
    for _ in range(300):
        n = rng.choice([0, 1, 7, 8, 9, 30, 1500])
        dg = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.5 and n >= 8:
            dg = dg[:4] + b"\x00\x01" + dg[6:]
        sut.sock.sendto(dg, ("127.0.0.1", sut.udp))
    sut.exchange(b"\0", idle=1.0)          # drain the replies to the garbage
    assert sut.p.proc.poll() is None
    assert sut.exchange(frame(b"version\r\n", rid=3)) == [frame(b"VERSION 1.6.18\r\n", rid=3)]
