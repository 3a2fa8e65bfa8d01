# Chunked large items (issue 13, part 1): an item above slab_chunk_max is a
# header chunk plus a chain of chunks from the ordinary classes, as in
# memcached. The same bytes go to memcached and memcachepy (-I 8m): large
# values, appends and prepends across chunk boundaries, a client reading a
# 5 MB reply a few KB at a time, then `stats slabs`/`items`/`sizes`. The
# core's invariant checker walks every chain; the page mover and warm
# restart keep chunked items intact; feed() sends large values in pieces.
from __future__ import annotations

import os
import random
import re
import socket
import tempfile
import time

import pytest
from support.daemons import KIND_MEMCACHED

from memcachepy.settings import Settings

core = pytest.importorskip("memcachepy._core")

SIZES = [100_000, 524_000, 524_288, 600_000, 1_000_000, 1_500_000, 3_333_333, 5_000_000]


def value(n: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    block = bytes(rnd.getrandbits(8) for _ in range(4096)).replace(b"\r", b"r")
    return (block * (n // 4096 + 1))[:n]


def recv_until(s: socket.socket, end: bytes, bufsize: int = 1 << 20) -> bytes:
    buf = bytearray()
    while not buf.endswith(end):
        d = s.recv(bufsize)
        if not d:
            break
        buf += d
    return bytes(buf)


def transcript(d) -> list:
    """Replies to a fixed session of large-item commands."""
    out: list = []
    s = d.connect(timeout=30)
    for i, n in enumerate(SIZES):
        v = value(n, i)
        s.sendall(b"set big%d %d 0 %d\r\n" % (i, i, n) + v + b"\r\n")
        out.append(recv_until(s, b"\r\n"))
        s.sendall(b"get big%d\r\n" % i)
        r = recv_until(s, b"END\r\n")
        out.append(("get", i, r == b"VALUE big%d %d %d\r\n" % (i, i, n) + v + b"\r\nEND\r\n"))
    # appends and prepends crossing chunk boundaries (524,240 value bytes a chunk)
    tail = value(700_000, 99)
    s.sendall(b"append big3 0 0 %d\r\n" % len(tail) + tail + b"\r\n")
    out.append(recv_until(s, b"\r\n"))
    s.sendall(b"prepend big3 0 0 5\r\nhello\r\n")
    out.append(recv_until(s, b"\r\n"))
    s.sendall(b"append big0 0 0 3\r\nabc\r\n")       # 100 KB -> still one chunk
    out.append(recv_until(s, b"\r\n"))
    s.sendall(b"gets big3 big0\r\n")
    r = recv_until(s, b"END\r\n")
    want3 = b"hello" + value(600_000, 3) + tail
    out.append(("appended", re.sub(rb" \d+\r\n", b" CAS\r\n", r[:60], count=1)[:40],
                len(r),
                want3 in r, (value(100_000, 0) + b"abc") in r))
    # too large for -I 8m, and exactly memcached's limit message
    s.sendall(b"set huge 0 0 9000000\r\n" + b"x" * 9_000_000 + b"\r\n")
    out.append(recv_until(s, b"\r\n"))
    # meta get / set of a chunked value
    v = value(2_000_000, 7)
    s.sendall(b"ms metabig 2000000 T0 F5\r\n" + v + b"\r\n")
    out.append(recv_until(s, b"\r\n"))
    s.sendall(b"mg metabig v f s\r\n")
    r = recv_until(s, b"\r\n", 1 << 16)
    while len(r) < len(b"VA 2000000 f5 s2000000\r\n") + 2_000_002:
        r += s.recv(1 << 20)
    out.append((r[:30], r.endswith(v + b"\r\n")))
    s.sendall(b"incr big0 1\r\ndelete big7\r\nget big7\r\n")
    out.append(recv_until(s, b"END\r\n"))
    # a slow client: a 5 MB reply read 4 KB at a time
    slow = d.connect(timeout=30)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    slow.sendall(b"get big6\r\n")
    got = bytearray()
    want = b"VALUE big6 6 3333333\r\n" + value(3_333_333, 6) + b"\r\nEND\r\n"
    while len(got) < len(want):
        chunk = slow.recv(4096)
        if not chunk:
            break
        got += chunk
    out.append(("slow", bytes(got) == want))
    slow.close()
    for sub in (b"slabs", b"items", b"sizes"):
        s.sendall(b"stats " + sub + b"\r\n")
        out.append(normalise_stats(recv_until(s, b"END\r\n")))
    s.close()
    return out


# What legitimately differs: memcached's LRU maintainer thread moves items
# between HOT/WARM/COLD on its own schedule (only their sum is compared), ages
# are clock reads, free_chunks_end is a dead stat memcached prints as 0, the
# crawler checks items on its own schedule, and lrutail_reflocked counts LRU
# tail items a reader held a reference to at that moment (the slow client's
# item, in both daemons: a count of LRU passes, which run on their own clocks).
SEG_STATS = re.compile(rb"STAT items:(\d+):(number_hot|number_warm|number_cold|age_hot|age_warm|age|evicted_time|crawler_items_checked|lrutail_reflocked|"
                       rb"moves_to_cold|moves_to_warm|moves_within_lru|direct_reclaims|"
                       rb"hits_to_hot|hits_to_warm|hits_to_cold) \d+\r\n")


def normalise_stats(raw: bytes) -> bytes:
    raw = re.sub(rb"STAT (\d+):free_chunks_end \d+\r\n", b"", raw)
    raw = SEG_STATS.sub(b"", raw)
    return raw


@pytest.mark.timeout(180)
def test_large_items_match_memcached(daemon_pair, sut_kind):
    ref, sut = daemon_pair(sut_kind, ["-m", "64", "-I", "8m"])
    a = transcript(ref)
    b = transcript(sut)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == y


def make_store(**kw):
    s = Settings()
    for k, v in kw.items():
        setattr(s, k, v)
    return core.Store(s.to_core())


def test_chains_hold_the_value_and_free_as_a_unit():
    st = make_store(maxbytes=64 << 20, item_size_max=8 << 20)
    try:
        for i, n in enumerate(SIZES):
            assert st.set(b"k%d" % i, value(n, i)) == "STORED"
        core.check_invariants()
        for i, n in enumerate(SIZES):
            assert st.get(b"k%d" % i)[0] == value(n, i)
        before = st.mem_malloced()
        for i in range(len(SIZES)):
            assert st.delete(b"k%d" % i)
        core.check_invariants()
        # the freed chunks serve the same values again: no page more
        for i, n in enumerate(SIZES):
            assert st.set(b"k%d" % i, value(n, i + 50)) == "STORED"
        assert st.mem_malloced() == before
        for i, n in enumerate(SIZES):
            assert st.get(b"k%d" % i)[0] == value(n, i + 50)
        core.check_invariants()
    finally:
        st.close()


def test_chunked_items_evict_as_a_unit():
    # 8 MB of memory, 1 MB values: stores keep succeeding by evicting whole chains
    st = make_store(maxbytes=8 << 20, item_size_max=2 << 20)
    try:
        for i in range(40):
            assert st.set(b"k%d" % i, value(1_000_000, i)) == "STORED"
            core.check_invariants()
        assert st.get(b"k39")[0] == value(1_000_000, 39)
        assert st.get(b"k0") is None
    finally:
        st.close()


@pytest.mark.timeout(120)
def test_large_values_arriving_in_pieces():
    # feed() receives a spooled value chunk span by chunk span, as the daemon
    # does; the cuts put recv() boundaries anywhere, chunk boundaries included
    st = make_store(maxbytes=64 << 20, item_size_max=8 << 20)
    try:
        rnd = random.Random(5)
        for trial in range(12):
            n = rnd.choice([70_000, 524_200, 524_300, 1_048_600, 2_500_000])
            v = value(n, trial)
            req = (b"set p%d 0 0 %d\r\n" % (trial, n) + v + b"\r\n" +
                   b"append p%d 0 0 4\r\nwxyz\r\nget p%d\r\n" % (trial, trial) +
                   b"ms q%d %d\r\n" % (trial, n) + v + b"\r\nmg q%d v\r\n" % trial)
            cuts = sorted(rnd.sample(range(1, len(req)), 40))
            out, closed, _, _ = core.feed(req, cuts)
            assert not closed
            want = (b"STORED\r\nSTORED\r\n" +
                    b"VALUE p%d 0 %d\r\n" % (trial, n + 4) + v + b"wxyz\r\nEND\r\n" +
                    b"HD\r\n" + b"VA %d\r\n" % n + v + b"\r\n")
            assert len(out) == len(want)
            assert out == want
            core.check_invariants()
        # a spooled chunked value without its CRLF is refused and leaves nothing behind
        out, closed, _, _ = core.feed(b"set bad 0 0 600000\r\n" + b"x" * 600000 + b"XY" + b"get bad\r\n",
                                      [1000, 300000, 600010])
        assert out.startswith(b"CLIENT_ERROR bad data chunk\r\n")
        core.check_invariants()
    finally:
        st.close()


def stat(s: socket.socket, name: str, sub: bytes = b"") -> int:
    s.sendall(b"stats " + sub + b"\r\n")
    raw = recv_until(s, b"END\r\n").decode()
    m = re.search(r"STAT %s (\d+)" % re.escape(name), raw)
    return int(m.group(1)) if m else -1


@pytest.mark.timeout(120)
def test_page_mover_rescues_chunks(start_daemon):
    d = start_daemon("memcachepy", "-m", "64", "-I", "4m", "-o", "slab_reassign")
    s = d.connect(timeout=30)
    vals = {}
    for i in range(12):
        v = value(1_500_000, i)
        vals[i] = v
        s.sendall(b"set c%d 0 0 %d\r\n" % (i, len(v)) + v + b"\r\n")
        assert recv_until(s, b"\r\n") == b"STORED\r\n"
    for i in range(0, 12, 2):           # free chunks elsewhere in the class
        s.sendall(b"delete c%d\r\n" % i)
        assert recv_until(s, b"\r\n") == b"DELETED\r\n"
    largest = max(int(m) for m in re.findall(rb"STAT (\d+):chunk_size 524288", b"".join(
        [s.sendall(b"stats slabs\r\n") or recv_until(s, b"END\r\n")])) or [0])
    assert largest
    moved = 0
    for _ in range(3):
        deadline = time.time() + 20
        while True:
            s.sendall(b"slabs reassign %d 0\r\n" % largest)
            r = recv_until(s, b"\r\n")
            if r == b"OK\r\n" or time.time() > deadline:
                break
            time.sleep(0.05)        # BUSY: the previous move is still running
        assert r == b"OK\r\n"
        moved += 1
    deadline = time.time() + 20
    while stat(s, "slabs_moved") < moved and time.time() < deadline:
        time.sleep(0.05)
    assert stat(s, "slabs_moved") == moved
    assert stat(s, "slab_reassign_chunk_rescues") > 0
    for i in range(1, 12, 2):
        s.sendall(b"get c%d\r\n" % i)
        r = recv_until(s, b"END\r\n")
        if r != b"END\r\n":             # evicted when no chunk was free, never corrupted
            assert r == b"VALUE c%d 0 %d\r\n" % (i, len(vals[i])) + vals[i] + b"\r\nEND\r\n"
    assert stat(s, "curr_items") + stat(s, "slab_reassign_evictions_nomem") == 6
    s.close()


@pytest.mark.timeout(120)
def test_warm_restart_keeps_chunked_items(start_daemon):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base, prefix="mcpy-chunked-") as tmp:
        path = os.path.join(tmp, "mem")
        d = start_daemon("memcachepy", "-m", "64", "-I", "4m", "-e", path)
        s = d.connect(timeout=30)
        for i, n in enumerate([600_000, 2_000_000, 3_900_000]):
            s.sendall(b"set w%d 0 0 %d\r\n" % (i, n) + value(n, i) + b"\r\n")
            assert recv_until(s, b"\r\n") == b"STORED\r\n"
        s.sendall(b"delete w1\r\n")
        assert recv_until(s, b"\r\n") == b"DELETED\r\n"
        s.close()
        before = d.stats(b"slabs")
        d.proc.send_signal(10)          # SIGUSR1: graceful stop, memory file kept
        d.proc.wait(timeout=30)
        time.sleep(1.1)                 # a restart within the stop's second starts cold
        d2 = start_daemon("memcachepy", "-m", "64", "-I", "4m", "-e", path)
        assert "warm restart" in d2.stderr_text()
        s = d2.connect(timeout=30)
        for i, n in enumerate([600_000, 2_000_000, 3_900_000]):
            s.sendall(b"get w%d\r\n" % i)
            r = recv_until(s, b"END\r\n")
            if i == 1:
                assert r == b"END\r\n"
            else:
                assert r == b"VALUE w%d 0 %d\r\n" % (i, n) + value(n, i) + b"\r\nEND\r\n"
        after = d2.stats(b"slabs")
        used = {k: v for k, v in before.items() if k.endswith("used_chunks")}
        assert used == {k: v for k, v in after.items() if k.endswith("used_chunks")}
        s.close()


# incr/decr at the chunking threshold (issue 13, counters task 1). memcached's
# do_add_delta answers "non-numeric" for any item it chunked (ntotal above
# slab_chunk_max), before the CAS check and whatever the value holds; an item
# just under the threshold is an ordinary number, padded with blanks in place.
# With -C memcachepy's header is 8 bytes larger than memcached's, so the last
# few sizes under the threshold are chunked here and one chunk there: they must
# still count as numbers. Sizes straddle both thresholds (with and without
# CAS) for a 1-byte key; text incr/decr, meta ma, binary incr/decr.
DELTA_VALUES = [b"5", b" \t42", b"18446744073709551615", b"7x", b"-3",
                b"123456789012345678901234", b"0009"]


def delta_transcript(d, sizes) -> list:
    import hashlib

    from support import binproto as bp
    out: list = []
    s = d.connect(timeout=30)
    for n in sizes:
        for j, head in enumerate(DELTA_VALUES):
            key = b"d%d_%d" % (n - 524000, j)
            v = head + b" " * (n - len(head))
            s.sendall(b"set %s 0 0 %d\r\n" % (key, n) + v + b"\r\n")
            out.append(recv_until(s, b"\r\n"))
            s.sendall(b"incr %s 3\r\n" % key)
            out.append(recv_until(s, b"\r\n"))
            s.sendall(b"decr %s 1\r\n" % key)
            out.append(recv_until(s, b"\r\n"))
            s.sendall(b"ma %s D7 v\r\nmn\r\n" % key)
            out.append(recv_until(s, b"MN\r\n"))
            s.sendall(b"ma %s MD C1 q\r\nmn\r\n" % key)      # CAS mismatch vs non-numeric
            out.append(recv_until(s, b"MN\r\n"))
            s.sendall(b"get %s\r\n" % key)
            r = recv_until(s, b"END\r\n")
            out.append((key, r[:40], len(r), hashlib.sha1(r).hexdigest()))
            reply = bp.run_steps(d.addr, [
                bp.pkt("incr", key, bp.incr_ext(10, 0, 0xFFFFFFFF)),
                bp.pkt("decr", key, bp.incr_ext(2, 0, 0xFFFFFFFF))])
            out.append(bp.normalise(reply))
    s.close()
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("flags", [[], ["-C"]], ids=["cas", "no-cas"])
def test_delta_at_chunk_threshold_matches_memcached(daemon_pair, sut_kind, flags):
    ref, sut = daemon_pair(sut_kind, ["-m", "128", *flags])
    # 4-byte keys: memcached chunks from value length 524226 (CAS) / 524234 (-C)
    sizes = list(range(524220, 524238))
    a = delta_transcript(ref, sizes)
    b = delta_transcript(sut, sizes)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == y
    # the transcript covers both answers
    flat = repr(a)
    assert "non-numeric" in flat and "VA " in flat
