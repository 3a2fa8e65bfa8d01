# Fuzz-style tests of the request path without sockets (issue 5, item 2).
#
# Everything here drives the real parser and handlers through memcachepy._core.feed()
# (ext/testing.pxi) in this process, with the oracle of tests/fuzz/harness.py (complete
# replies only, bounded output queue, consistent store):
#  * the committed corpus (tests/fuzz/corpus, grown by the atheris fuzzer, see
#    tests/fuzz/run.sh) is replayed whole, byte by byte and in random pieces;
#  * hypothesis generates request streams from the text protocol's grammar and checks that
#    the replies do not depend on how TCP splits the stream (a fresh store per run, so CAS
#    values and evictions repeat exactly) and that no hit returns a value never stored;
#  * the backpressure bound: a client pipelining thousands of large gets never makes the
#    conn queue more than WBUF_HIGH plus one item, and the paused gets still answer in full.
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))
import harness  # noqa: E402

try:
    from memcachepy import _core
    HAVE_FEED = hasattr(_core, "feed")
except ImportError:  # pragma: no cover
    HAVE_FEED = False

pytestmark = pytest.mark.skipif(not HAVE_FEED, reason="memcachepy._core without test hooks")

CORPUS = Path(__file__).parent / "fuzz" / "corpus"
CRLF = b"\r\n"


@pytest.fixture(autouse=True)
def _store():
    harness.fresh_core(["-m", "1", "-I", "2k", "-o", "slab_chunk_max=1024", "-n", "16"])
    yield
    _core.check_invariants()
    harness.close_core()


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_file())


@pytest.mark.timeout(120)
def test_corpus_replay() -> None:
    files = corpus_files()
    assert len(files) >= 20
    rng = random.Random(5)
    for p in files:
        data = p.read_bytes()
        stream, cuts = harness.split_input(data)
        harness.run_one(stream, cuts, check=False)
        harness.run_one(stream, None, check=False)
        harness.run_one(stream, sorted(rng.sample(range(1, len(stream) + 1),
                                                  min(len(stream), 12))), check=False)
        if len(stream) <= 600:
            harness.run_one(stream, list(range(1, len(stream))), check=False)
    _core.check_invariants()


# ---------------------------------------------------------------- generated streams
KEYS = [b"k%d" % i for i in range(6)] + [b"L" * 250]
SIZES = st.sampled_from([0, 1, 2, 10, 100, 900, 1024 - 64, 1024 - 63, 1800, 1960, 1961, 3000])


@st.composite
def value(draw) -> bytes:
    n = draw(SIZES)
    seed = draw(st.integers(0, 2**32))
    body = random.Random(seed).randbytes(n)
    return body


@st.composite
def command(draw) -> tuple[bytes, bytes, bytes | None]:
    """(request bytes, key, value stored by it or None)."""
    key = draw(st.sampled_from(KEYS))
    kind = draw(st.sampled_from(["set", "add", "replace", "append", "prepend", "cas", "get",
                                 "gets", "mget", "incr", "decr", "delete", "touch", "gat",
                                 "badlen", "noreply_set"]))
    flags = draw(st.sampled_from([0, 1, 4294967295]))
    exp = draw(st.sampled_from([0, 0, 0, 100, -1]))
    if kind in ("set", "add", "replace", "append", "prepend", "cas", "noreply_set"):
        v = draw(value())
        verb = "set" if kind == "noreply_set" else kind
        cas = b" %d" % draw(st.sampled_from([0, 1, 2**63])) if kind == "cas" else b""
        nr = b" noreply" if kind == "noreply_set" else b""
        req = b"%s %s %d %d %d%s%s\r\n" % (verb.encode(), key, flags, exp, len(v), cas, nr) + v + CRLF
        return req, key, v if kind in ("set", "add", "replace", "cas", "noreply_set") else None
    if kind == "mget":
        ks = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=6))
        return b"get " + b" ".join(ks) + CRLF, key, None
    if kind in ("get", "gets"):
        return b"%s %s\r\n" % (kind.encode(), key), key, None
    if kind in ("incr", "decr"):
        return b"%s %s %d\r\n" % (kind.encode(), key, draw(st.sampled_from([1, 2**64 - 1]))), key, None
    if kind == "delete":
        return b"delete " + key + CRLF, key, None
    if kind == "touch":
        return b"touch %s %d\r\n" % (key, exp), key, None
    if kind == "gat":
        return b"gat %d %s\r\n" % (exp, key), key, None
    # a data block whose length does not match its header (an empty value would make
    # the header right: `set k 0 0 0` + CRLF is a valid store)
    v = draw(value().filter(len))
    return b"set %s 0 0 %d\r\n" % (key, max(0, len(v) - 1)) + v + CRLF, key, None


def parse_hits(out: bytes) -> list[tuple[bytes, bytes]]:
    hits = []
    pos = 0
    while pos < len(out):
        end = out.index(CRLF, pos)
        line = out[pos:end]
        pos = end + 2
        if line.startswith(b"VALUE "):
            parts = line.split(b" ")
            n = int(parts[3])
            hits.append((parts[1], out[pos:pos + n]))
            pos += n + 2
    return hits


@pytest.mark.timeout(180)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(cmds=st.lists(command(), min_size=1, max_size=40), seed=st.integers(0, 2**32))
def test_replies_do_not_depend_on_segmentation(cmds, seed) -> None:
    stream = b"".join(c[0] for c in cmds)
    rng = random.Random(seed)
    ncuts = rng.choice([1, 3, 10, 50, len(stream)])
    cuts = sorted(rng.sample(range(1, len(stream) + 1), min(ncuts, len(stream))))
    harness.fresh_core()
    whole = harness.run_one(stream, None, check=True)
    harness.fresh_core()
    pieces = harness.run_one(stream, cuts, check=True)
    assert pieces == whole
    # no hit ever returns bytes that were not stored under that key (keys that were only
    # ever set/added/replaced/cas'ed: append, prepend and incr build new values)
    stored: dict[bytes, set[bytes]] = {}
    derived = {c[1] for c in cmds if c[0].split(b" ")[0] in (b"append", b"prepend", b"incr", b"decr")}
    for req, key, v in cmds:
        if v is not None:
            stored.setdefault(key, set()).add(v)
    for key, data in parse_hits(whole):
        if key not in derived:
            assert data in stored.get(key, set()), (key, data[:40])


# ---------------------------------------------------------------- binary protocol
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support.binproto import incr_ext, pkt, store_ext  # noqa: E402

BIN_KEYS = st.sampled_from([b"a", b"b", b"k" * 250, b"k" * 251, b""])


@st.composite
def bin_packet(draw) -> bytes:
    op = draw(st.sampled_from(list(range(0x00, 0x25)) + [0x30, 0xFF]))
    ext = draw(st.sampled_from([b"", store_ext(1, 0), incr_ext(1, 5, 0), b"\0" * 4, b"\0" * 20]))
    val = draw(st.sampled_from([b"", b"1", b"x" * 100, b"y" * 3000, b"\0PLAIN\0"]))
    body = None
    if draw(st.integers(0, 7)) == 0:     # a body length that lies
        body = draw(st.integers(0, 5000))
    if op in (0x07, 0x17):                # quit would end the stream early
        op = 0x0A
    key = draw(BIN_KEYS)
    if op == 0x10 and key == b"":         # plain STAT reports rusage and times, which differ
        key = b"settings"                 # between the two runs compared; settings do not
    return pkt(op, key, ext, val, cas=draw(st.sampled_from([0, 1, 2 ** 64 - 1])),
               bodylen=body, opaque=draw(st.integers(0, 2 ** 32 - 1)))


@pytest.mark.timeout(180)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(pkts=st.lists(bin_packet(), min_size=1, max_size=30), seed=st.integers(0, 2**32))
def test_binary_replies_do_not_depend_on_segmentation(pkts, seed) -> None:
    """Binary packets (valid, quiet, malformed, lying lengths, unknown opcodes) through the
    real parser: whole packets out, store consistent, same replies however TCP splits."""
    stream = pkt("noop") + b"".join(pkts)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream) + 1), min(rng.choice([1, 5, 40]), len(stream))))
    harness.fresh_core()
    whole = harness.run_one(stream, None, check=True)
    harness.fresh_core()
    pieces = harness.run_one(stream, cuts, check=True)
    # A bad magic closes the conn and drops the replies memcached still held (get hits,
    # stores); replies of an earlier piece had already left, so pieces may keep more.
    assert pieces.startswith(whole)
    if pieces != whole:
        assert _core.feed(stream, None)[1], "replies differ though the conn was not closed"
    assert whole.startswith(b"\x81\x0a")


# ---------------------------------------------------------------- backpressure
@pytest.mark.timeout(60)
def test_pipelined_large_gets_bounded_queue() -> None:
    big = random.Random(1).randbytes(1900)
    out, closed, _, _ = _core.feed(b"set big 0 0 1900\r\n" + big + CRLF)
    assert out == b"STORED\r\n"
    reply = b"VALUE big 0 1900\r\n" + big + b"\r\nEND\r\n"
    for stream in (b"get big\r\n" * 5000, b"get " + b"big " * 300 + CRLF):
        out, closed, max_pending, max_rbuf = _core.feed(stream)
        assert not closed
        assert max_pending <= harness.WBUF_HIGH + 2048 + 64, max_pending
        if stream.startswith(b"get big\r\n"):
            assert out == reply * 5000
        else:
            assert out == (b"VALUE big 0 1900\r\n" + big + CRLF) * 300 + b"END\r\n"


@pytest.mark.timeout(60)
def test_multiget_pause_then_bad_key_only_error() -> None:
    """A multiget long enough to pause between keys that ends in a 251-byte key answers
    only the error, as memcached does, though hits were already queued."""
    big = random.Random(2).randbytes(1900)
    _core.feed(b"set big 0 0 1900\r\n" + big + CRLF)
    out, closed, max_pending, _ = _core.feed(b"get " + b"big " * 300 + b"x" * 251 + CRLF + b"get nope\r\n")
    assert out == b"CLIENT_ERROR bad command line format\r\nEND\r\n"
    assert not closed


@pytest.mark.timeout(60)
def test_verbose_paths_survive_hostile_lines(capfd) -> None:
    """With verbosity 2 every request line is echoed to stderr; lines with NULs, high bytes
    and lengths near the limits must print without crashing."""
    stream = (b"verbosity 2\r\n" + b"get \x00\xff" + b"a" * 2000 + CRLF +
              b"set k 0 0 1\r\nx\r\n" + b"\xff" * 100 + CRLF + b"verbosity 0\r\n")
    out, closed, _, _ = _core.feed(stream, list(range(1, len(stream), 97)))
    assert out.startswith(b"OK\r\n") and b"STORED\r\n" in out
    capfd.readouterr()


# ---------------------------------------------------------------- large values in pieces
# Values above SPOOL_MIN (64 KB) are received straight into their item's chain of chunks
# (slab_chunk_max 16 KB here, so a value spans 4-20 chunks and the last one comes from a
# smaller class); the cuts put the network's boundaries anywhere, chunk boundaries
# included. Whole and cut streams must give the same replies, every hit must be a value
# stored under that key (or its append/prepend), and the chains must stay consistent.
LARGE_ARGS = ["-m", "16", "-I", "1m", "-o", "slab_chunk_max=16384"]


@st.composite
def large_command(draw) -> tuple[bytes, bytes, bytes | None]:
    key = draw(st.sampled_from([b"a", b"b", b"c"]))
    kind = draw(st.sampled_from(["set", "set", "ms", "append", "prepend", "get", "mg", "bad"]))
    n = draw(st.integers(60_000, 330_000))
    v = bytes([draw(st.integers(0x21, 0x7e))]) * n
    if kind == "set":
        return b"set %s 0 0 %d\r\n" % (key, n) + v + CRLF, key, v
    if kind == "ms":
        return b"ms %s %d T0\r\n" % (key, n) + v + CRLF, key, v
    if kind in ("append", "prepend"):
        small = draw(st.sampled_from([b"xy", b"z" * 20_000]))
        return b"%s %s 0 0 %d\r\n" % (kind.encode(), key, len(small)) + small + CRLF, key, None
    if kind == "get":
        return b"get a b c\r\n", key, None
    if kind == "mg":
        return b"mg %s v\r\n" % key, key, None
    return b"set %s 0 0 %d\r\n" % (key, n) + v + b"XY", key, None     # bad data chunk


@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(cmds=st.lists(large_command(), min_size=1, max_size=12), seed=st.integers(0, 2**32))
def test_large_values_in_pieces(cmds, seed) -> None:
    stream = b"".join(c[0] for c in cmds)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), min(rng.choice([3, 20, 200]), len(stream) - 1)))
    saved = list(harness.STORE_ARGS)
    saved_max = harness.ITEM_MAX
    harness.ITEM_MAX = 1 << 20      # the backpressure bound is WBUF_HIGH plus one item of -I
    try:
        harness.fresh_core(LARGE_ARGS)
        whole = harness.run_one(stream, None, check=True)
        harness.fresh_core(LARGE_ARGS)
        pieces = harness.run_one(stream, cuts, check=True)
    finally:
        harness.ITEM_MAX = saved_max
        harness.fresh_core(saved)
    assert pieces == whole
    stored = {c[1]: set() for c in cmds}
    for req, key, v in cmds:
        if v is not None:
            stored[key].add(v)
    derived = {c[1] for c in cmds if c[0].startswith((b"append", b"prepend"))}
    for key, data in parse_hits(whole):
        if key not in derived:
            assert data in stored[key], (key, data[:20])
        else:
            core = data.strip(b"xyz")   # one stored value with appends/prepends around it
            assert core == core[:1] * len(core), key
