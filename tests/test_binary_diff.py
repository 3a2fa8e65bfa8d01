# Differential transcripts for the binary protocol (issue 12).
#
# Raw binary packets go to a real memcached 1.6.18 and to memcachepy started with the same
# flags; every reply packet is compared field by field (opaque echoed, CAS renamed by first
# appearance, see support/binproto.py), and whether the daemon closed the connection too.
# The "sanity-memcached" parametrisation runs memcached against memcached, proving each
# transcript is deterministic.  Transcripts cover every opcode memcached 1.6.18 serves,
# their quiet forms, CAS, error statuses and messages, and malformed packets (bad magic,
# lying lengths, key/extras mismatches, truncated headers, unknown opcodes that swallow).
# Daemons are shared per flag set; each transcript starts after a flush.
from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from conftest import require_memcached
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.binproto import (OP, Step, exp_ext, incr_ext, normalise, parse, pkt, run_steps,
                              store_ext)
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, memcachepy_status, start_daemons


def _cas_of(op: str, nth: int = -1):
    """A step's helper: the CAS of the nth reply with this opcode so far."""
    def get(pk: list) -> int:
        return [p["cas"] for p in pk if p["op"] == OP[op]][nth]
    return get


def with_cas(op: str, key: bytes, ext: bytes = b"", val: bytes = b"", *, src: str = "get",
             delta: int = 0, opaque: int = 0x01020304) -> Step:
    def step(pk: list) -> bytes:
        return pkt(op, key, ext, val, cas=_cas_of(src)(pk) + delta, opaque=opaque)
    return step


@dataclass(frozen=True)
class T:
    name: str
    steps: tuple
    flags: tuple[str, ...] = ()


FUTURE = int(time.time()) + 3600
K250 = b"k" * 250
K251 = b"k" * 251
SE = store_ext

TRANSCRIPTS = [
    T("get-family", (
        pkt("set", b"a", SE(5, 0), b"hello") + pkt("get", b"a") + pkt("getk", b"a")
        + pkt("getq", b"a") + pkt("getkq", b"a"),
        pkt("get", b"nope") + pkt("getk", b"nope") + pkt("getq", b"nope") + pkt("getkq", b"nope"),
        pkt("set", b"empty", SE(0xFFFFFFFF, 0), b"") + pkt("get", b"empty"),
        pkt("set", K250, SE(1, 0), b"v") + pkt("getk", K250),
    )),
    T("set-add-replace", (
        pkt("add", b"a", SE(1, 0), b"one") + pkt("add", b"a", SE(2, 0), b"two") + pkt("get", b"a"),
        pkt("addq", b"b", SE(), b"x") + pkt("addq", b"b", SE(), b"y") + pkt("get", b"b"),
        pkt("replace", b"zz", SE(), b"x") + pkt("replaceq", b"zz", SE(), b"x"),
        pkt("replace", b"a", SE(3, 0), b"three") + pkt("replaceq", b"a", SE(4, 0), b"four")
        + pkt("getk", b"a"),
        pkt("setq", b"q1", SE(), b"1") + pkt("setq", b"q2", SE(), b"2") + pkt("get", b"q1")
        + pkt("getq", b"q2"),
        pkt("set", b"far", SE(0, 0xFFFFFFFF), b"v") + pkt("get", b"far"),
        pkt("set", b"past", SE(0, 2592001), b"v") + pkt("get", b"past"),
        pkt("set", b"fut", SE(0, FUTURE), b"v") + pkt("get", b"fut"),
    )),
    T("cas", (
        pkt("set", b"c", SE(), b"v1") + pkt("get", b"c"),
        with_cas("set", b"c", SE(), b"v2"),
        with_cas("set", b"c", SE(), b"v3", delta=1000),
        pkt("get", b"c"),
        with_cas("replace", b"c", SE(), b"v4"),
        pkt("get", b"c"),
        with_cas("add", b"c", SE(), b"v5"),
        pkt("set", b"nocas", SE(), b"x", cas=12345) + pkt("add", b"nocas2", SE(), b"x", cas=7)
        + pkt("setq", b"nocas", SE(), b"x", cas=12345),
        pkt("get", b"c"),
        with_cas("append", b"c", b"", b"+a"),
        with_cas("append", b"c", b"", b"+b", delta=9),
        pkt("get", b"c"),
        with_cas("delete", b"c", delta=5),
        with_cas("delete", b"c"),
        pkt("get", b"c"),
    )),
    T("delete", (
        pkt("set", b"d", SE(), b"v") + pkt("delete", b"d") + pkt("delete", b"d"),
        pkt("set", b"d", SE(), b"v") + pkt("deleteq", b"d") + pkt("deleteq", b"d") + pkt("get", b"d"),
    )),
    T("incr-decr", (
        pkt("incr", b"n", incr_ext(1, 10, 0)) + pkt("incr", b"n", incr_ext(5, 10, 0))
        + pkt("decr", b"n", incr_ext(100, 0, 0)) + pkt("get", b"n"),
        pkt("incr", b"miss", incr_ext(1, 0, 0xFFFFFFFF)) + pkt("decr", b"miss", incr_ext(1, 0, 0xFFFFFFFF)),
        pkt("incrq", b"m2", incr_ext(2, 40, 0)) + pkt("decrq", b"m2", incr_ext(1, 0, 0))
        + pkt("get", b"m2") + pkt("incrq", b"m3", incr_ext(1, 0, 0xFFFFFFFF)),
        pkt("set", b"t", SE(), b"text") + pkt("incr", b"t", incr_ext(1)),
        pkt("set", b"e", SE(), b"") + pkt("incr", b"e", incr_ext(1)),
        pkt("set", b"w", SE(7, 0), b"18446744073709551615") + pkt("incr", b"w", incr_ext(2))
        + pkt("get", b"w"),
        pkt("set", b"g", SE(), b"99") + pkt("incr", b"g", incr_ext(1)) + pkt("get", b"g"),
        pkt("set", b"s", SE(), b"1000") + pkt("decr", b"s", incr_ext(999)) + pkt("get", b"s"),
        pkt("get", b"g"),
        with_cas("incr", b"g", incr_ext(1)),
        with_cas("incr", b"g", incr_ext(1), delta=3),
        pkt("incr", b"exp", incr_ext(1, 5, FUTURE)) + pkt("get", b"exp"),
        pkt("set", b"neg", SE(), b"-5") + pkt("incr", b"neg", incr_ext(1)),
        pkt("set", b"sp", SE(), b" 12") + pkt("incr", b"sp", incr_ext(1)),
    )),
    T("append-prepend", (
        pkt("append", b"ap", b"", b"x") + pkt("prepend", b"ap", b"", b"x")
        + pkt("appendq", b"ap", b"", b"x") + pkt("prependq", b"ap", b"", b"x"),
        pkt("set", b"ap", SE(9, 0), b"mid") + pkt("append", b"ap", b"", b">") + pkt("prepend", b"ap", b"", b"<")
        + pkt("appendq", b"ap", b"", b"]") + pkt("prependq", b"ap", b"", b"[") + pkt("getk", b"ap"),
        pkt("append", b"ap", b"", b""),
    )),
    T("touch-gat", (
        pkt("set", b"t", SE(3, 0), b"val"),
        pkt("touch", b"t", exp_ext(100)) + pkt("touch", b"none", exp_ext(100)),
        pkt("gat", b"t", exp_ext(0)) + pkt("gatk", b"t", exp_ext(0)) + pkt("gatq", b"t", exp_ext(0))
        + pkt("gatkq", b"t", exp_ext(0)),
        pkt("gat", b"none", exp_ext(0)) + pkt("gatk", b"none", exp_ext(0))
        + pkt("gatq", b"none", exp_ext(0)) + pkt("gatkq", b"none", exp_ext(0)),
        pkt("touch", b"t", exp_ext(2592001)) + pkt("get", b"t"),
        pkt("set", b"t2", SE(), b"v") + pkt("gat", b"t2", exp_ext(FUTURE)) + pkt("get", b"t2"),
        # extras longer than the key leave their tail as the next packet: as memcached
        pkt("touch", b"t2", exp_ext(0), bodylen=4 + 2 + 24) + pkt("noop", opaque=77),
    )),
    T("misc-opcodes", (
        pkt("version", opaque=9) + pkt("noop", opaque=10),
        pkt("verbosity", b"", exp_ext(1), opaque=11) + b"\x00" * 4 + pkt("noop"),
        pkt(0x30, b"k", b"", b"v") + b"\x00" + pkt("noop"),  # RGET: unknown, swallows bodylen
        pkt(0x7F) + pkt("version"),
        pkt("sasl_list") + pkt("sasl_auth", b"PLAIN", b"", b"\0a\0b")
        + pkt("sasl_step", b"PLAIN", b"", b"") + pkt("noop"),
        pkt("set", b"x", SE(), b"v", datatype=5, vbucket=77) + pkt("get", b"x", opaque=0xFFFFFFFF),
    )),
    T("quit", (pkt("set", b"x", SE(), b"v") + pkt("quit") + pkt("get", b"x"),)),
    T("quitq", (pkt("setq", b"x", SE(), b"v") + pkt("quitq") + pkt("get", b"x"),)),
    T("flush", (
        pkt("set", b"f", SE(), b"v") + pkt("flush") + pkt("get", b"f"),
        pkt("set", b"f", SE(), b"v") + pkt("flushq") + pkt("get", b"f"),
        pkt("set", b"f", SE(), b"v") + pkt("flush", b"", exp_ext(0)) + pkt("get", b"f"),
        pkt("set", b"f", SE(), b"v") + pkt("flush", b"", exp_ext(FUTURE)) + pkt("get", b"f"),
    )),
    T("flush-disabled", (pkt("flush") + pkt("flushq") + pkt("noop"),), ("-F",)),
    T("stat-groups", (
        pkt("stat", b"bogus"),
        pkt("stat", b"detail xyz"),
        pkt("stat", b"detail on") + pkt("set", b"p:a", SE(), b"v") + pkt("get", b"p:a")
        + pkt("get", b"p:b") + pkt("delete", b"p:a"),
        pkt("stat", b"detail dump"),
        pkt("stat", b"detail off") + pkt("stat", b"detail dump"),
        pkt("stat", b"reset"),
        pkt("stat", b"resetXYZ"),
        pkt("stat", b"items "),
        pkt("stat", b"sizes"),
    )),
    T("too-large", (
        pkt("set", b"big", SE(), b"v") + pkt("set", b"big", SE(), b"x" * 2000) + pkt("get", b"big"),
        pkt("add", b"big2", SE(), b"x" * 2000) + pkt("append", b"big2", b"", b"x" * 2000)
        + pkt("noop"),
        pkt("set", b"big3", SE(), b"v") + pkt("setq", b"big3", SE(), b"x" * 5000) + pkt("get", b"big3"),
        # a value still arriving in pieces
        pkt("set", b"big4", SE(), b"y" * 3000)[:1000],
        (b"y" * 2024) + pkt("get", b"big4"),
    ), ("-I", "1k", "-o", "slab_chunk_max=1024")),
    T("malformed-bad-magic-first", (pkt("get", b"a", magic=0x81),)),
    T("malformed-bad-magic-later", (pkt("set", b"a", SE(), b"v") + pkt("get", b"a", magic=0x00),)),
    T("malformed-bad-magic-second-step", (pkt("set", b"a", SE(), b"v"), b"\x00" * 24)),
    T("malformed-keylen-gt-body", (pkt("get", b"abc", bodylen=2),)),
    T("malformed-key-ext-gt-body", (pkt("set", b"abc", SE(), b"", bodylen=9),)),
    T("malformed-get-extras", (pkt("set", b"a", SE(), b"v") + pkt("get", b"a", b"EXTR"),)),
    T("malformed-get-long-body", (pkt("get", b"a", bodylen=3) + b"xy",)),
    T("malformed-get-no-key", (pkt("get"),)),
    T("malformed-set-ext4", (pkt("set", b"a", b"\0\0\0\0", b"v"),)),
    T("malformed-set-no-key", (pkt("set", b"", SE(), b"v"),)),
    T("malformed-key-too-long", (pkt("get", K251),)),
    T("malformed-key-too-long-q", (pkt("getq", K251),)),
    T("malformed-delete-ext", (pkt("delete", b"a", b"\0\0\0\0"),)),
    T("malformed-incr-ext", (pkt("incr", b"a", b"\0" * 8),)),
    T("malformed-incr-body", (pkt("incr", b"a", incr_ext(1), bodylen=40) + b"\0" * 7,)),
    T("malformed-append-ext", (pkt("append", b"a", b"\0\0\0\0", b"v"),)),
    T("malformed-stat-ext", (pkt("stat", b"", b"\0\0\0\0"),)),
    T("malformed-touch-ext", (pkt("touch", b"a", b"\0\0"),)),
    T("malformed-gat-nokey", (pkt("gat", b"", exp_ext(0)),)),
    T("malformed-version-body", (pkt("version", b"x"),)),
    T("malformed-noop-ext", (pkt("noop", b"", b"\0\0\0\0"),)),
    T("malformed-quit-key", (pkt("quit", b"k"),)),
    T("malformed-flush-ext8", (pkt("flush", b"", b"\0" * 8),)),
    T("malformed-flush-key", (pkt("flush", b"k"),)),
    T("malformed-flushq-bodylen", (pkt("flushq", b"", exp_ext(0), bodylen=6) + b"zz",)),
    T("malformed-sasl-list-body", (pkt("sasl_list", b"k"),)),
    T("malformed-sasl-auth-nokey", (pkt("sasl_auth", b"", b"", b"data"),)),
    T("malformed-after-quiet", (pkt("setq", b"a", SE(), b"v") + pkt("getq", b"a") + pkt("get", b"", b"x"),)),
    # the error of an opcode that swallows is held, and lost when the swallowed bytes
    # leave a bad magic behind (found by test_generated_sequences)
    T("unknown-swallow-into-bad-magic", (pkt("get", b"a") + pkt(0x30, b"a") + pkt("get", b"a"),)),
    # memcached writes nothing while it swallows a body that is still arriving: the
    # error and the misses before it stay queued (found by test_generated_sequences)
    T("unknown-swallow-held", (pkt("get", b"a") + pkt(0x30, K250),)),
    T("truncated-header", (pkt("get", b"a")[:10],)),
    T("truncated-key", (pkt("get", b"abcdef")[:27],)),
    T("body-length-lie-longer", (pkt("set", b"a", SE(), b"v", bodylen=40),)),
    T("negotiate-text-after-binary", (pkt("noop") + b"get a\r\n",)),
    T("negotiate-binary-after-text", (b"version\r\n" + pkt("noop"),)),
    T("ascii-only", (pkt("noop"),), ("-B", "ascii")),
    T("binary-only-text", (b"version\r\n",), ("-B", "binary")),
    T("binary-only", (pkt("set", b"a", SE(), b"v") + pkt("get", b"a") + pkt("version"),), ("-B", "binary")),
]

_PAIRS: dict = {}


@pytest.fixture(scope="module")
def pairs():
    yield _PAIRS
    for ds in _PAIRS.values():
        for d in ds:
            d.stop(block=False)
    _PAIRS.clear()


def _pair(pairs: dict, sut: str, flags: Sequence[str]):
    key = (sut, tuple(flags))
    if key not in pairs:
        pairs[key] = start_daemons([(KIND_MEMCACHED, flags), (sut, flags)])
    return pairs[key]


def _require(sut: str) -> None:
    require_memcached()
    if sut == KIND_MEMCACHEPY:
        ok, why = memcachepy_status()
        if not ok:
            pytest.skip(why)


def _fresh(d) -> None:
    """Flush before a transcript (not compared); -F daemons are fresh anyway."""
    if "ascii" not in d.flags:
        run_steps(d.addr, [pkt("flush")])


@pytest.mark.parametrize("sut", [KIND_MEMCACHED, KIND_MEMCACHEPY],
                         ids=["sanity-memcached", "memcachepy"])
@pytest.mark.parametrize("t", TRANSCRIPTS, ids=[t.name for t in TRANSCRIPTS])
@pytest.mark.timeout(60)
def test_transcript(t: T, sut: str, pairs) -> None:
    _require(sut)
    ref, other = _pair(pairs, sut, t.flags)
    _fresh(ref)
    _fresh(other)
    want = run_steps(ref.addr, list(t.steps))
    got = run_steps(other.addr, list(t.steps))
    assert normalise(got) == normalise(want), (want, got)
    assert got.endswith(b"<EOF>") == want.endswith(b"<EOF>")
    assert ref.alive() and other.alive()


def _stat_packets(addr, key: bytes) -> list:
    return [p for p in parse(run_steps(addr, [pkt("stat", key)]))[0] if p["op"] == OP["stat"]]


@pytest.mark.parametrize("group", [b"", b"settings", b"items", b"slabs"])
@pytest.mark.timeout(60)
def test_stat_group_names(group: bytes, pairs) -> None:
    """STAT replies: the same stat names in the same order, then the empty terminator."""
    _require(KIND_MEMCACHEPY)
    ref, other = _pair(pairs, KIND_MEMCACHEPY, ())
    for d in (ref, other):
        run_steps(d.addr, [pkt("set", b"stat-a", SE(), b"v" * 10) + pkt("get", b"stat-a")])
    want = _stat_packets(ref.addr, group)
    got = _stat_packets(other.addr, group)
    names = lambda ps: [p["key"] for p in ps]  # noqa: E731
    # memcachepy has no extstore and one LRU-maintainer shape; compare what memcached lists
    # that memcachepy serves in text too (the text differential tests pin the set of names)
    assert names(got)[-1:] == [b""] and names(want)[-1:] == [b""]
    assert all(p["status"] == 0 and p["cas"] == 0 and p["extlen"] == 0 for p in got)
    assert all(p["opaque"] == 0x01020304 for p in got)
    text_names = _text_stat_names(other, group)
    assert names(got)[:-1] == text_names
    if group in (b"", b"settings"):
        common = [n for n in names(want) if n in set(names(got))]
        assert [n for n in names(got) if n in set(names(want))] == common
        assert len(common) >= 0.9 * len(names(want))
    else:
        assert names(got) == names(want)
    vals = {p["key"]: p["value"] for p in got}
    if group == b"":
        assert vals[b"version"] == b"1.6.18" and vals[b"cmd_get"] != b""
    if group == b"settings":
        assert vals[b"binding_protocol"] == b"auto-negotiate"


def _text_stat_names(d, group: bytes) -> list:
    import socket
    s = socket.create_connection(d.addr, timeout=5)
    s.sendall(b"stats " + group + b"\r\n" if group else b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()
    return [ln.split(b" ")[1] for ln in buf.split(b"\r\n") if ln.startswith(b"STAT ")]


COUNTERS = (b"cmd_get", b"cmd_set", b"cmd_touch", b"cmd_flush", b"get_hits", b"get_misses",
            b"get_expired", b"delete_hits", b"delete_misses", b"incr_hits", b"incr_misses",
            b"decr_hits", b"decr_misses", b"cas_hits", b"cas_misses", b"cas_badval",
            b"touch_hits", b"touch_misses", b"auth_cmds", b"auth_errors", b"curr_items",
            b"total_items", b"store_too_large", b"store_no_memory")


@pytest.mark.timeout(60)
def test_counters_match(daemon_pair) -> None:
    """Every transcript above, then the counters memcached's stats report, equal."""
    ref, other = daemon_pair(KIND_MEMCACHEPY, ())
    for t in TRANSCRIPTS:
        if t.flags or t.name.startswith(("malformed", "truncated", "body-length", "negotiate",
                                         "flush", "stat-groups")):
            continue
        for d in (ref, other):
            run_steps(d.addr, list(t.steps))
    want = {p["key"]: p["value"] for p in _stat_packets(ref.addr, b"")}
    got = {p["key"]: p["value"] for p in _stat_packets(other.addr, b"")}
    assert {k: got.get(k) for k in COUNTERS} == {k: want.get(k) for k in COUNTERS}


# ---------------------------------------------------------------- generated sequences

KEYS = st.sampled_from([b"a", b"b", b"c", b"k" * 250, b"k" * 251, b""])
U32 = st.sampled_from([0, 1, 5, 100, 0xFFFFFFFF, 2592001])
VALS = st.sampled_from([b"", b"0", b"12", b"18446744073709551615", b"abc", b"x" * 300])
QUIET_SAFE = [o for o in OP if o not in ("flush", "flushq", "quit", "quitq", "stat",
                                         "verbosity")]


@st.composite
def packets(draw) -> bytes:
    op = draw(st.sampled_from(QUIET_SAFE + [0x30, 0x45]))
    key = draw(KEYS)
    code = OP[op] if isinstance(op, str) else op
    if op in ("set", "setq", "add", "addq", "replace", "replaceq"):
        ext = store_ext(draw(st.integers(0, 0xFFFFFFFF)), draw(U32))
        val = draw(VALS)
    elif op in ("incr", "incrq", "decr", "decrq"):
        ext = incr_ext(draw(st.sampled_from([0, 1, 7, 2 ** 64 - 1])),
                       draw(st.sampled_from([0, 3, 2 ** 64 - 1])), draw(U32))
        val = b""
    elif op in ("touch", "gat", "gatq", "gatk", "gatkq"):
        ext, val = exp_ext(draw(U32)), b""
    elif op in ("append", "appendq", "prepend", "prependq"):
        ext, val = b"", draw(VALS)
    else:
        ext, val = b"", b""
    if draw(st.integers(0, 9)) == 0:   # sometimes break the packet's shape
        ext = draw(st.sampled_from([b"", b"\0" * 4, b"\0" * 8, b"\0" * 20]))
    cas = draw(st.sampled_from([0, 0, 0, 1, 2 ** 63]))
    return pkt(code, key, ext, val, cas=cas, opaque=draw(st.integers(0, 0xFFFFFFFF)))


_SEQ = [0]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(packets(), min_size=1, max_size=6), min_size=1, max_size=4))
@pytest.mark.timeout(300)
def test_generated_sequences(batches, pairs) -> None:
    _require(KIND_MEMCACHEPY)
    ref, other = _pair(pairs, KIND_MEMCACHEPY, ())
    _SEQ[0] += 1
    for d in (ref, other):
        _fresh(d)
    steps = [b"".join(b) for b in batches]
    want = run_steps(ref.addr, steps, idle=0.5)
    got = run_steps(other.addr, steps, idle=0.5)
    assert normalise(got) == normalise(want)
    assert got.endswith(b"<EOF>") == want.endswith(b"<EOF>")
