# Replies of chunked items sent from the chain (issue 13, point 1): a get of
# an item above slab_chunk_max takes a reference on the item and sends iovecs
# pointing into its chunks, as memcached does; the memory is freed when the
# last reference drops; the page mover waits for a referenced item, and
# eviction unlinks one but cannot reuse its memory yet. Every scenario runs on memcached and memcachepy with the same
# bytes: slow readers (a small receive window, so a 5 MB reply cannot fit in
# the kernel's buffers: tcp_wmem's maximum is 4 MB, and the daemon has to
# hold the item until the reader is done) while other clients overwrite,
# delete and flush the key and store other large values; many readers of one
# key; clients that vanish mid-reply; the page mover meeting a referenced
# item. `stats slabs`/`items` during and after must be memcached's.
from __future__ import annotations

import difflib
import hashlib
import re
import socket
import struct
import time

import pytest
from test_chunked import normalise_stats, recv_until, value

BIG = 5_000_000
FLAGS = ["-m", "64", "-I", "8m", "-o", "slab_reassign"]


def slow_socket(d, rcvbuf: int = 8192) -> socket.socket:
    """A client with a small receive window (set before connect, so the
    window the daemon sees is small from the start)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)
    s.connect(d.addr)
    return s


def reply_of(key: bytes, v: bytes, flags: int = 0) -> bytes:
    return b"VALUE %s %d %d\r\n" % (key, flags, len(v)) + v + b"\r\nEND\r\n"


def read_exactly(s: socket.socket, n: int, piece: int = 4096) -> bytes:
    got = bytearray()
    while len(got) < n:
        d = s.recv(min(piece, n - len(got)))
        if not d:
            break
        got += d
    return bytes(got)


def cmd(s: socket.socket, line: bytes, end: bytes = b"\r\n") -> bytes:
    s.sendall(line)
    return recv_until(s, end)


def store(s: socket.socket, key: bytes, v: bytes) -> bytes:
    return cmd(s, b"set %s 0 0 %d\r\n" % (key, len(v)) + v + b"\r\n")


# A flushed item is unlinked by the next get or, if memcached's LRU
# maintainer passes its tail first, reclaimed there: which one is a race.
RECLAIM_STATS = re.compile(rb"STAT items:\d+:(reclaimed|expired_unfetched) \d+\r\n")


def stats_snapshot(s: socket.socket, flushed: bool = False) -> list:
    """`stats slabs` (chunks per class, total_malloced) and `stats items`."""
    out = []
    for sub in (b"slabs", b"items"):
        raw = normalise_stats(cmd(s, b"stats " + sub + b"\r\n", b"END\r\n"))
        out.append(RECLAIM_STATS.sub(b"", raw) if flushed else raw)
    return out


def general_stat(s: socket.socket, name: str) -> int:
    raw = cmd(s, b"stats\r\n", b"END\r\n").decode()
    for line in raw.split("\r\n"):
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    raise KeyError(name)


def used_chunks(s: socket.socket) -> int:
    raw = cmd(s, b"stats slabs\r\n", b"END\r\n")
    return sum(int(n) for n in re.findall(rb"STAT \d+:used_chunks (\d+)\r\n", raw))


def wait_conns(s: socket.socket, want: int, used: int | None = None) -> None:
    """Until the closed clients are gone and the references their replies
    held are dropped: memcached may drop them a moment after
    curr_connections falls (seen under load), so also until `used` chunks
    are in use, or (not given) until that number stops changing for half a
    second. A daemon that leaks keeps more in use: the snapshot after
    differs."""
    deadline = time.time() + 20
    while general_stat(s, "curr_connections") != want and time.time() < deadline:
        time.sleep(0.05)
    assert general_stat(s, "curr_connections") == want
    if used is not None:
        while used_chunks(s) != used and time.time() < deadline:
            time.sleep(0.05)
        return
    last, same = used_chunks(s), 0
    while same < 5 and time.time() < deadline:
        time.sleep(0.1)
        now = used_chunks(s)
        same = same + 1 if now == last else 0
        last = now


def assert_same(a: list, b: list) -> None:
    """Transcripts equal, or a readable diff of the first entry that is not."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if x != y:
            xs = repr(x).replace("\\r\\n", "\n").splitlines()
            ys = repr(y).replace("\\r\\n", "\n").splitlines()
            diff = "\n".join(difflib.unified_diff(xs, ys, "memcached", "sut", lineterm="", n=2))
            raise AssertionError("transcripts differ:\n" + diff)


def slow_reader_session(d) -> list:
    out: list = []
    v1, v2, v3 = value(BIG, 1), value(BIG, 2), value(3_000_000, 3)
    c = d.connect(timeout=60)
    base = general_stat(c, "curr_connections")
    out.append(store(c, b"big", v1))
    reader = slow_socket(d)
    reader.sendall(b"get big\r\n")
    want = reply_of(b"big", v1)
    head = read_exactly(reader, 16384)
    out.append(("head", head == want[:16384]))
    # the reply is in flight: overwrite, read back, delete, flush, store more
    out.append(store(c, b"big", v2))
    c.sendall(b"get big\r\n")
    out.append(("new", recv_until(c, b"END\r\n") == reply_of(b"big", v2)))
    out.append(("during", stats_snapshot(c)))
    out.append(cmd(c, b"delete big\r\n"))
    out.append(store(c, b"big", v3))
    out.append(cmd(c, b"flush_all\r\n"))
    out.append(cmd(c, b"get big\r\n", b"END\r\n"))
    out.append(store(c, b"other1", value(4_000_000, 4)))
    out.append(store(c, b"other2", value(2_000_000, 5)))
    out.append(("flushed", stats_snapshot(c, flushed=True)))
    out.append(("flush took big", general_stat(c, "get_flushed") + general_stat(c, "reclaimed")))
    # the old value arrives intact, read a few KB at a time
    rest = read_exactly(reader, len(want) - len(head))
    out.append(("old", hashlib.sha1(head + rest).hexdigest() == hashlib.sha1(want).hexdigest()))
    reader.close()
    wait_conns(c, base)
    out.append(("after", stats_snapshot(c, flushed=True)))
    c.close()
    return out


@pytest.mark.timeout(240)
def test_slow_reader_keeps_the_old_value(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS)
    a = slow_reader_session(ref)
    b = slow_reader_session(sut)
    assert ("old", True) in a
    assert_same(a, b)


def many_readers_session(d, n: int = 20) -> list:
    out: list = []
    v1 = value(BIG, 11)
    want = reply_of(b"hot", v1)
    c = d.connect(timeout=60)
    base = general_stat(c, "curr_connections")
    out.append(store(c, b"hot", v1))
    readers = [slow_socket(d, 16384) for _ in range(n)]
    for r in readers:
        r.sendall(b"get hot\r\n")
    got = [bytearray() for _ in range(n)]
    # everyone has started before the value changes
    for i, r in enumerate(readers):
        got[i] += read_exactly(r, 4096)
    out.append(store(c, b"hot", value(BIG, 12)))
    out.append(cmd(c, b"delete hot\r\n"))
    while any(len(g) < len(want) for g in got):
        for i, r in enumerate(readers):
            if len(got[i]) < len(want):
                got[i] += read_exactly(r, min(65536, len(want) - len(got[i])), 65536)
    out.append(("intact", all(bytes(g) == want for g in got)))
    for r in readers:
        r.close()
    wait_conns(c, base, used=0)
    out.append(("after", stats_snapshot(c)))
    c.close()
    return out


@pytest.mark.timeout(240)
def test_many_readers_of_one_big_key(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS)
    a = many_readers_session(ref)
    b = many_readers_session(sut)
    assert ("intact", True) in a
    assert_same(a, b)


def disconnect_session(d) -> list:
    out: list = []
    c = d.connect(timeout=60)
    base = general_stat(c, "curr_connections")
    out.append(store(c, b"gone", value(BIG, 21)))
    out.append(cmd(c, b"set small 0 0 5\r\nhello\r\n"))
    quitters = [slow_socket(d) for _ in range(8)]
    for i, q in enumerate(quitters):
        # get, meta get and a multiget of the big key, then vanish mid-reply
        q.sendall([b"get gone\r\n", b"mg gone v\r\n", b"gets small gone gone\r\n"][i % 3])
        read_exactly(q, 8192)
    # the item the quitters hold is replaced and deleted while they hold it
    out.append(store(c, b"gone", value(BIG, 22)))
    out.append(cmd(c, b"delete gone\r\n"))
    for q in quitters:
        q.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        q.close()                       # RST: the daemon sees the conn fail mid-send
    wait_conns(c, base, used=1)         # only `small` is left
    out.append(("after", stats_snapshot(c)))
    for name in ("curr_items", "bytes"):
        out.append((name, general_stat(c, name)))
    # the chunks came back: the same large values fit again, and read back
    v = value(BIG, 23)
    out.append(store(c, b"again", v))
    c.sendall(b"get again\r\n")
    out.append(("again", recv_until(c, b"END\r\n") == reply_of(b"again", v)))
    out.append(("final", stats_snapshot(c)))
    c.close()
    return out


@pytest.mark.timeout(240)
def test_clients_that_disconnect_mid_reply(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS)
    a = disconnect_session(ref)
    b = disconnect_session(sut)
    assert ("again", True) in a
    assert_same(a, b)


def mover_session(d) -> list:
    out: list = []
    c = d.connect(timeout=60)
    v = value(BIG, 31)
    out.append(store(c, b"first", v))      # its first chunks are on the class's oldest page
    for i in range(3):
        out.append(store(c, b"more%d" % i, value(1_000_000, 40 + i)))
    slabs = cmd(c, b"stats slabs\r\n", b"END\r\n")
    largest = max(int(line.split(b":")[0].split()[1]) for line in slabs.split(b"\r\n")
                  if line.endswith(b":chunk_size 524288"))
    reader = slow_socket(d)
    reader.sendall(b"get first\r\n")
    want = reply_of(b"first", v)
    head = read_exactly(reader, 16384)
    out.append(cmd(c, b"slabs reassign %d 0\r\n" % largest))
    # the mover meets the referenced item and waits for it
    deadline = time.time() + 30
    while general_stat(c, "slab_reassign_busy_items") == 0 and time.time() < deadline:
        time.sleep(0.05)
    out.append(("busy", general_stat(c, "slab_reassign_busy_items") > 0))
    out.append(("moved while held", general_stat(c, "slabs_moved")))
    rest = read_exactly(reader, len(want) - len(head))
    out.append(("intact", head + rest == want))
    reader.close()
    deadline = time.time() + 30
    while general_stat(c, "slabs_moved") == 0 and time.time() < deadline:
        time.sleep(0.05)
    out.append(("moved after", general_stat(c, "slabs_moved")))
    c.sendall(b"get first\r\n")
    out.append(("rescued", recv_until(c, b"END\r\n") == want))
    out.append(("chunk rescues", general_stat(c, "slab_reassign_chunk_rescues") > 0))
    c.close()
    return out


@pytest.mark.timeout(240)
def test_page_mover_waits_for_a_referenced_item(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS)
    a = mover_session(ref)
    b = mover_session(sut)
    assert ("busy", True) in a and ("intact", True) in a
    assert_same(a, b)


def bin_req(opcode: int, key: bytes = b"", extras: bytes = b"", val: bytes = b"", opaque: int = 0) -> bytes:
    body = extras + key + val
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body),
                       opaque, 0) + body


def bin_replies(s: socket.socket, n: int) -> list:
    """n binary replies, CAS zeroed (the daemons number items differently)."""
    out = []
    buf = b""
    while len(out) < n:
        while len(buf) < 24:
            buf += s.recv(1 << 20)
        blen = struct.unpack(">I", buf[8:12])[0]
        while len(buf) < 24 + blen:
            buf += s.recv(1 << 20)
        out.append(buf[:16] + bytes(8) + buf[24:24 + blen])
        buf = buf[24 + blen:]
    return out


def binary_session(d) -> list:
    s = d.connect(timeout=60)
    v = value(2_000_000, 51)
    s.sendall(bin_req(0x01, b"bkey", struct.pack(">II", 7, 0), v, 1))        # SET
    out = [r[:24] for r in bin_replies(s, 1)]
    # GET, GETK, GETQ, GETKQ (quiet hits still answer), NOOP; a miss in between
    s.sendall(bin_req(0x00, b"bkey", opaque=2) + bin_req(0x0c, b"bkey", opaque=3) +
              bin_req(0x09, b"bkey", opaque=4) + bin_req(0x09, b"nokey", opaque=5) +
              bin_req(0x0d, b"bkey", opaque=6) + bin_req(0x0a, opaque=7))
    replies = bin_replies(s, 5)
    out.append([hashlib.sha1(r).hexdigest() for r in replies])
    out.append(all(r.endswith(v) for r in replies[:4]))
    # a slow binary reader while the key is overwritten
    slow = slow_socket(d)
    slow.sendall(bin_req(0x00, b"bkey", opaque=8))
    head = read_exactly(slow, 8192)
    s.sendall(bin_req(0x01, b"bkey", struct.pack(">II", 0, 0), value(2_500_000, 52), 9))
    out.append(bin_replies(s, 1)[0][:24])
    rest = read_exactly(slow, 24 + 4 + len(v) - len(head))
    out.append((head + rest)[24 + 4:] == v)
    slow.close()
    s.close()
    return out


@pytest.mark.timeout(240)
def test_binary_gets_of_chunked_items(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS)
    a = binary_session(ref)
    b = binary_session(sut)
    assert a[2] is True and a[-1] is True
    assert_same(a, b)


def eviction_session(d) -> list:
    out: list = []
    c = d.connect(timeout=60)
    vals = {i: value(BIG, 60 + i) for i in range(4)}
    out.append(store(c, b"e0", vals[0]))
    reader = slow_socket(d)
    reader.sendall(b"get e0\r\n")
    want = reply_of(b"e0", vals[0])
    head = read_exactly(reader, 16384)
    # more large values than fit: memcached evicts the referenced e0 at the
    # LRU's tail (counted in lrutail_reflocked), but its memory stays with the
    # reader, so e1 goes too
    for i in range(1, 4):
        out.append(store(c, b"e%d" % i, vals[i]))
    out.append(("evicted", general_stat(c, "evictions")))
    out.append(("reflocked", general_stat(c, "lrutail_reflocked") > 0))
    rest = read_exactly(reader, len(want) - len(head))
    out.append(("intact", head + rest == want))
    reader.close()
    for i in range(4):
        c.sendall(b"get e%d\r\n" % i)
        r = recv_until(c, b"END\r\n")
        out.append((i, r == b"END\r\n" or r == reply_of(b"e%d" % i, vals[i]), r == b"END\r\n"))
    out.append(("after", stats_snapshot(c)))
    c.close()
    return out


@pytest.mark.timeout(240)
def test_eviction_of_a_referenced_item(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, ["-m", "20", "-I", "8m"])
    a = eviction_session(ref)
    b = eviction_session(sut)
    assert ("intact", True) in a and ("reflocked", True) in a
    assert_same(a, b)


def pipeline_session(d) -> list:
    """Small and chunked values interleaved in multigets, meta and a pipeline,
    read slowly: segments and buffered bytes must leave in order."""
    out: list = []
    c = d.connect(timeout=60)
    vals = {b"s1": b"tiny", b"b1": value(1_200_000, 71), b"s2": value(300_000, 72),
            b"b2": value(BIG, 73), b"s3": b""}
    for k, v in vals.items():
        out.append(store(c, k, v))
    reader = slow_socket(d)
    reader.sendall(b"get s1 b1 s2 b2 s3 b1\r\nmg b2 v k\r\nget nokey\r\nmg s2 v\r\n"
                   b"gets b1\r\nget b2 b2\r\n")
    want = (reply_of(b"s1", vals[b"s1"])[:-5] + reply_of(b"b1", vals[b"b1"])[:-5] +
            reply_of(b"s2", vals[b"s2"])[:-5] + reply_of(b"b2", vals[b"b2"])[:-5] +
            reply_of(b"s3", b"")[:-5] + reply_of(b"b1", vals[b"b1"]) +
            b"VA %d kb2\r\n" % BIG + vals[b"b2"] + b"\r\n" + b"END\r\n" +
            b"VA 300000\r\n" + vals[b"s2"] + b"\r\n")
    got = read_exactly(reader, len(want), 7000)
    out.append(("in order", got == want))
    # gets carries a CAS: cut it out of the header line before comparing
    line = recv_until(reader, b"\r\n", 1)
    out.append(line.rsplit(b" ", 1)[0])
    rest = reply_of(b"b1", vals[b"b1"])[len(b"VALUE b1 0 1200000\r\n"):]
    rest += reply_of(b"b2", vals[b"b2"])[:-5] + reply_of(b"b2", vals[b"b2"])
    out.append(("tail", read_exactly(reader, len(rest), 7000) == rest))
    reader.close()
    c.close()
    return out


@pytest.mark.timeout(240)
def test_pipelined_small_and_chunked_values_in_order(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS)
    a = pipeline_session(ref)
    b = pipeline_session(sut)
    assert ("in order", True) in a and ("tail", True) in a
    assert_same(a, b)


def budget_session(d) -> list:
    """A multiget of chunked values beyond the response-object budget
    (-o read_buf_mem_limit): memcached's error, and the references it had
    taken are dropped (stats afterwards equal)."""
    out: list = []
    c = d.connect(timeout=60)
    base = general_stat(c, "curr_connections")
    out.append(store(c, b"k", value(2_000_000, 81)))
    in_use = used_chunks(c)
    reader = slow_socket(d)
    reader.sendall(b"get " + b" ".join([b"k"] * 600) + b"\r\n")
    r = recv_until(reader, b"\r\n")
    while not r.endswith((b"END\r\n", b"response\r\n")):
        r += reader.recv(1 << 16)
    out.append((len(r), r[-60:]))
    out.append(("oom", general_stat(c, "response_obj_oom") > 0))
    out.append(store(c, b"k", value(2_000_000, 82)))
    reader.close()
    wait_conns(c, base, used=in_use)    # the new k, as large as the old
    out.append(("after", stats_snapshot(c)))
    c.close()
    return out


@pytest.mark.timeout(240)
def test_multiget_of_chunked_values_over_the_response_budget(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, FLAGS + ["-t", "4", "-o", "read_buf_mem_limit=1"])
    a = budget_session(ref)
    b = budget_session(sut)
    assert ("oom", True) in a
    assert_same(a, b)
