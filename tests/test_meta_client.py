# A real meta-protocol client (PyPI `meta-memcache`) against both daemons.
#
# Owns: end-to-end use of the meta commands the way an application drives
# them: typed get/set (serialised, compressed values), CAS round trips,
# add/replace/append modes, touch, delete vs invalidate, counters with
# initial values, miss leases (mg N -> W/Z), stale-on-delete (md I) and
# stale-on-CAS-mismatch (ms I), recache (mg R), multi-get, binary and long
# keys (the client base64-encodes them and sends `b`).  Every expectation was
# first checked against real memcached 1.6.18; the same test body runs against
# memcachepy when its core is built.
from __future__ import annotations

import threading

import pytest

from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, Daemon
from support.rawclient import Conn

pytest.importorskip("meta_memcache")
from meta_memcache import (  # noqa: E402
    CacheClient, Key, LeasePolicy, RecachePolicy, ServerAddress, SetMode, StalePolicy,
    connection_pool_factory_builder,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", params=[KIND_MEMCACHED, KIND_MEMCACHEPY])
def server(request: pytest.FixtureRequest, module_daemons) -> Daemon:
    return module_daemons(request.param)


@pytest.fixture
def client(server: Daemon):
    with Conn(server.port) as c:
        c.send(b"flush_all\r\n")
        assert c.read_until(b"\r\n") == b"OK\r\n"
    return CacheClient.cache_client_from_servers(
        servers=[ServerAddress("127.0.0.1", server.port)],
        connection_pool_factory_fn=connection_pool_factory_builder(
            recv_timeout=5, connection_timeout=5),
    )


def raw(server: Daemon, req: bytes) -> bytes:
    with Conn(server.port) as c:
        return c.call(req)


def test_set_get_types(client) -> None:
    values = {"s": "text", "i": 42, "d": {"a": [1, 2, 3]}, "b": b"\x00\xffbytes",
              "big": b"z" * 300_000, "empty": b""}
    for k, v in values.items():
        assert client.set(k, v, ttl=60)
    for k, v in values.items():
        assert client.get(k) == v
    assert client.get("missing") is None
    got = client.multi_get(["s", "i", "missing"])
    assert {k.key: v for k, v in got.items()} == {"s": "text", "i": 42, "missing": None}


def test_cas_round_trip(client, server: Daemon) -> None:
    cas = client.set_cas("c", "v1", ttl=0)
    assert isinstance(cas, int) and cas > 0
    value, cas2 = client.get_cas("c")
    assert (value, cas2) == ("v1", cas)
    assert client.set("c", "v2", ttl=0, cas_token=cas)
    assert not client.set("c", "v3", ttl=0, cas_token=cas)   # EX: stale token
    assert client.get("c") == "v2"
    assert not client.set("nope", "x", ttl=0, cas_token=cas)  # NF
    _, cas3 = client.get_cas("c")
    assert cas3 != cas
    assert not client.delete("c", cas_token=cas)
    assert client.delete("c", cas_token=cas3)
    assert client.get("c") is None


def test_modes(client) -> None:
    assert client.refill("r", "first", ttl=0)           # add
    assert not client.refill("r", "second", ttl=0)      # add on existing -> NS
    assert client.get("r") == "first"
    assert not client.set("nope", "x", ttl=0, set_mode=SetMode.REPLACE)
    assert client.set("r", "repl", ttl=0, set_mode=SetMode.REPLACE)
    assert client.set("ap", b"mid", ttl=0)
    assert client.set("ap", b"-end", ttl=0, set_mode=SetMode.APPEND)
    assert client.set("ap", b"start-", ttl=0, set_mode=SetMode.PREPEND)
    assert client.get("ap") == b"start-mid-end"


def test_touch_and_ttl(client, server: Daemon) -> None:
    assert client.set("t", "v", ttl=0)
    assert client.touch("t", 100)
    reply = raw(server, b"mg t t\r\n")
    assert reply.startswith(b"HD t") and 98 <= int(reply[4:].split()[0]) <= 100
    assert not client.touch("missing", 100)
    assert client.get("t", touch_ttl=500) == "v"
    assert 498 <= int(raw(server, b"mg t t\r\n")[4:].split()[0]) <= 500


def test_delete_and_invalidate(client) -> None:
    assert client.set("d", 1, ttl=0)
    assert client.delete("d")
    assert not client.delete("d")
    assert client.invalidate("d")        # missing counts as invalidated
    assert client.get("d") is None


def test_counters(client) -> None:
    assert client.delta_and_get("ctr", 1) is None               # NF
    assert client.delta_initialize_and_get("ctr", 5, initial_value=10,
                                           initial_ttl=60) == 10  # created, no delta
    assert client.delta_and_get("ctr", 5) == 15
    assert client.delta_and_get("ctr", -20) == 0                # decr clamps at 0
    assert client.delta("ctr", 7)
    assert client.delta_and_get("ctr", 0) == 7


def test_miss_lease_single_winner(client, server: Daemon) -> None:
    policy = LeasePolicy(ttl=30, miss_retries=1, miss_retry_wait=0.01)
    value, cas = client.get_or_lease_cas("lease", policy)
    assert value is None and cas            # we won the lease: empty item, W
    # a second client does not win: it sees the placeholder with Z
    assert raw(server, b"mg lease v\r\n") == b"VA 0 Z\r\n\r\n"
    assert client.set("lease", "filled", ttl=60, cas_token=cas)
    assert client.get_or_lease("lease", policy) == "filled"


def test_miss_lease_many_clients(server: Daemon) -> None:
    policy = LeasePolicy(ttl=30, miss_retries=50, miss_retry_wait=0.02,
                         miss_max_retry_wait=0.05)
    n = 8
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    winners: list[int] = []

    def worker(i: int) -> None:
        c = CacheClient.cache_client_from_servers(
            servers=[ServerAddress("127.0.0.1", server.port)],
            connection_pool_factory_fn=connection_pool_factory_builder(
                recv_timeout=5, connection_timeout=5))
        barrier.wait(10)
        value, cas = c.get_or_lease_cas("herd", policy)
        if value is None:
            winners.append(i)
            assert c.set("herd", "computed", ttl=60, cas_token=cas)
            value = "computed"
        results[i] = value

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1
    assert results == ["computed"] * n


def test_stale_on_delete(client, server: Daemon) -> None:
    sp = StalePolicy(mark_stale_on_deletion_ttl=30, mark_stale_on_cas_mismatch=True)
    assert client.set("s", "old", ttl=100)
    assert client.delete("s", stale_policy=sp)      # md s I T30
    # first reader wins the recache (sees a miss), later readers get the
    # stale value until the winner writes
    assert client.get_cas("s")[0] is None
    value, cas = client.get_cas("s")
    assert value == "old"
    flags = raw(server, b"mg s\r\n")
    assert flags == b"HD Z X\r\n"
    assert client.set("s", "new", ttl=100, cas_token=cas)
    assert client.get("s") == "new"
    assert raw(server, b"mg s\r\n") == b"HD\r\n"


def test_stale_on_cas_mismatch(client, server: Daemon) -> None:
    sp = StalePolicy(mark_stale_on_cas_mismatch=True)
    assert client.set("m", "v1", ttl=0)
    _, old_cas = client.get_cas("m")
    assert client.set("m", "v2", ttl=0)             # somebody else wrote
    # our late write with the older CAS is kept, but marked stale (ms I C<old>)
    assert client.set("m", "late", ttl=0, cas_token=old_cas, stale_policy=sp)
    assert raw(server, b"mg m\r\n") == b"HD X W\r\n"
    assert client.get("m") == "late"


def test_recache_policy(client, server: Daemon) -> None:
    assert client.set("rc", "v", ttl=20)
    # remaining TTL 20 < 30: the first reader is told to recompute (a miss)
    assert client.get("rc", recache_policy=RecachePolicy(ttl=30)) is None
    assert client.get("rc", recache_policy=RecachePolicy(ttl=30)) == "v"
    assert raw(server, b"mg rc\r\n") == b"HD Z\r\n"


def test_binary_and_long_keys(client, server: Daemon) -> None:
    keys = [Key("k\xe9y \u00fcnicode"), Key("spaces in key"), Key("x" * 300)]
    for i, k in enumerate(keys):
        assert client.set(k, i, ttl=0)
    for i, k in enumerate(keys):
        assert client.get(k) == i
    # the unicode key went over the wire base64-encoded with `b`
    enc = "k\xe9y \u00fcnicode".encode()
    import base64
    b64 = base64.b64encode(enc)
    reply = raw(server, b"mg " + b64 + b" b k\r\n")
    assert reply == b"HD k" + b64 + b" b\r\n"
