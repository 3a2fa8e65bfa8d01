# Stale-while-revalidate and recache races over the meta protocol.
#
# Owns: the concurrency story the meta protocol's W/X/Z flags exist for.  Many
# clients (threads, one raw socket each) hit one hot key at the same moment
# after it was invalidated (`md key I`, or `ms key ... I C<older cas>`), after
# its TTL fell under a recache threshold (`mg key R<ttl>`), or while it is
# missing (`mg key N<ttl>`).  Exactly one client must win the right to
# recompute (W); every other client gets the stale value with Z (and X when
# stale); the winner's store clears the state for everybody.  Run against real
# memcached first (the reference) and against memcachepy when it is built;
# the same assertions hold for both since the outcome is not timing-dependent.
from __future__ import annotations

import threading

import pytest

from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, Daemon
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(120)

CLIENTS = 24
ROUNDS = 4


@pytest.fixture(scope="module", params=[KIND_MEMCACHED, KIND_MEMCACHEPY])
def server(request: pytest.FixtureRequest, module_daemons) -> Daemon:
    return module_daemons(request.param)


def parse_mg(reply: bytes) -> tuple[set[str], bytes | None, dict[str, str]]:
    """(return-flag letters W/X/Z, value or None, other flags letter->value)."""
    head, _, rest = reply.partition(b"\r\n")
    toks = head.decode().split(" ")
    value = None
    if toks[0] == "VA":
        n = int(toks[1])
        value = rest[:n]
        assert rest[n:] == b"\r\n", reply
        toks = toks[2:]
    else:
        assert toks[0] == "HD", reply
        toks = toks[1:]
    marks = {t for t in toks if t in ("W", "X", "Z")}
    other = {t[0]: t[1:] for t in toks if t not in ("W", "X", "Z")}
    return marks, value, other


def stampede(port: int, request: bytes, n: int = CLIENTS) -> list[bytes]:
    """Open n connections, release them together, each sends `request` once."""
    conns = [Conn(port) for _ in range(n)]
    barrier = threading.Barrier(n)
    replies: list[bytes | None] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(10)
            replies[i] = conns[i].call(request)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in conns:
        c.close()
    assert not errors, errors
    assert all(r is not None for r in replies)
    return replies  # type: ignore[return-value]


def one(port: int, request: bytes) -> bytes:
    with Conn(port) as c:
        return c.call(request)


def assert_single_winner(replies: list[bytes], value: bytes, stale: bool) -> int:
    winners = []
    for i, r in enumerate(replies):
        marks, got, _ = parse_mg(r)
        assert got == value, r
        if "W" in marks:
            winners.append(i)
            assert "Z" not in marks, r
        else:
            assert "Z" in marks, r
        assert ("X" in marks) == stale, r
    assert len(winners) == 1, replies
    return winners[0]


@pytest.mark.parametrize("invalidate", ["md", "ms_stale_cas"])
def test_invalidated_hot_key_single_winner(server: Daemon, invalidate: str) -> None:
    key = b"hot-" + invalidate.encode()
    for rnd in range(ROUNDS):
        old = b"value-%d" % rnd
        r = one(server.port, b"ms %s %d T0 c\r\n%s\r\n" % (key, len(old), old))
        assert r.startswith(b"HD c"), r
        first_cas = r.split(b" c")[1].strip()
        if invalidate == "md":
            assert one(server.port, b"md %s I\r\n" % key) == b"HD\r\n"
        else:
            # a newer value lands, then a late writer holding the older CAS
            # stores its value as stale instead of being rejected
            assert one(server.port, b"ms %s 3\r\nnew\r\n" % key) == b"HD\r\n"
            r = one(server.port, b"ms %s %d I C%s\r\n%s\r\n"
                    % (key, len(old), first_cas, old))
            assert r == b"HD\r\n", r
        replies = stampede(server.port, b"mg %s v c\r\n" % key)
        winner = assert_single_winner(replies, old, stale=True)
        # all saw the same (stale) CAS; the winner revalidates with it
        cas_seen = {parse_mg(r)[2]["c"] for r in replies}
        assert len(cas_seen) == 1
        # late fetchers still see Z X until the winner stores
        marks, _, _ = parse_mg(one(server.port, b"mg %s v\r\n" % key))
        assert marks == {"Z", "X"}
        fresh = b"fresh-%d" % rnd
        r = one(server.port, b"ms %s %d C%s T0\r\n%s\r\n"
                % (key, len(fresh), cas_seen.pop().encode(), fresh))
        assert r == b"HD\r\n", (winner, r)
        replies = stampede(server.port, b"mg %s v\r\n" % key)
        for r in replies:
            marks, got, _ = parse_mg(r)
            assert got == fresh and marks == set(), r


def test_invalidated_key_plain_set_by_winner(server: Daemon) -> None:
    assert one(server.port, b"ms hk 1\r\na\r\nmd hk I T30\r\n") == b"HD\r\nHD\r\n"
    replies = stampede(server.port, b"mg hk v t\r\n")
    assert_single_winner(replies, b"a", stale=True)
    for r in replies:
        t = int(parse_mg(r)[2]["t"])
        assert 28 <= t <= 30, r
    assert one(server.port, b"ms hk 1\r\nb\r\nmg hk v\r\n") == b"HD\r\nVA 1\r\nb\r\n"


def test_recache_R_single_winner(server: Daemon) -> None:
    # TTL 20 s remaining < R30 threshold: one client refreshes early.
    assert one(server.port, b"ms rk 1 T20\r\nr\r\n") == b"HD\r\n"
    replies = stampede(server.port, b"mg rk v R30 t\r\n")
    assert_single_winner(replies, b"r", stale=False)
    # above the threshold nobody wins, and nobody is told someone did
    assert one(server.port, b"ms rk 1 T100\r\nr\r\n") == b"HD\r\n"
    for r in stampede(server.port, b"mg rk v R30\r\n"):
        assert parse_mg(r)[0] == set(), r


def test_vivify_N_single_creator(server: Daemon) -> None:
    for rnd in range(ROUNDS):
        key = b"viv%d" % rnd
        replies = stampede(server.port, b"mg %s v N30 c\r\n" % key)
        winner = assert_single_winner(replies, b"", stale=False)
        cas = {parse_mg(r)[2]["c"] for r in replies}
        assert len(cas) == 1, replies  # one item was created, not many
        r = one(server.port, b"ms %s 4 C%s T30\r\nfull\r\n" % (key, cas.pop().encode()))
        assert r == b"HD\r\n", (winner, r)
        for r in stampede(server.port, b"mg %s v N30\r\n" % key, n=8):
            assert parse_mg(r)[:2] == (set(), b"full"), r


def test_concurrent_ma_counts_exactly(server: Daemon) -> None:
    # Many clients incrementing one counter (vivified by the first) lose nothing.
    n, per = 16, 50
    req = b"".join(b"ma ctr N0 q\r\n" for _ in range(per))
    stampede(server.port, req, n=n)
    # 1.6.18 replies HD for the one vivifying request even with q, so the
    # replies are not checked; the counter is.
    got = one(server.port, b"ma ctr v D0\r\n")
    assert got == b"VA %d\r\n%d\r\n" % (len(str(n * per - 1)), n * per - 1), got
