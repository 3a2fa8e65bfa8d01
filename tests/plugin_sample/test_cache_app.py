"""The application's tests: they only ask for the plugin's fixtures."""
import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from cache_app import allow, cached_user, update


def test_cache_aside_loads_once(memcached_client):
    loads = []
    load = lambda uid: loads.append(uid) or {"id": uid, "name": "ada"}   # noqa: E731
    assert cached_user(memcached_client, 7, load) == {"id": 7, "name": "ada"}
    assert cached_user(memcached_client, 7, load) == {"id": 7, "name": "ada"}
    assert loads == [7]


def test_cache_aside_reloads_after_ttl(memcached_client, memcached_server):
    loads = []
    load = lambda uid: loads.append(uid) or {"id": uid}   # noqa: E731
    cached_user(memcached_client, 1, load, ttl=300)
    memcached_server.advance_clock(299)
    cached_user(memcached_client, 1, load, ttl=300)
    memcached_server.advance_clock(2)
    cached_user(memcached_client, 1, load, ttl=300)
    assert loads == [1, 1]


def test_rate_limit_window(memcached_client, memcached_server):
    assert [allow(memcached_client, "bob", 3) for _ in range(5)] == [True, True, True, False, False]
    memcached_server.advance_clock(61)
    assert allow(memcached_client, "bob", 3)


def test_cas_update_survives_a_concurrent_writer(memcached_client, memcached_server):
    other = Client(memcached_server.address, default_noreply=False)
    memcached_client.set("counter", b"0")
    raced = []

    def change(value: bytes) -> bytes:
        if not raced:            # another client writes between our gets and our cas
            raced.append(True)
            other.set("counter", b"10")
        return str(int(value) + 1).encode()

    assert update(memcached_client, "counter", change) == b"11"
    assert memcached_client.get("counter") == b"11"
    other.close()


def test_isolation_1_writes(memcached_client):
    memcached_client.set("leftover", b"from an earlier test")
    assert memcached_client.get("leftover") is not None


def test_isolation_2_starts_empty(memcached_client):
    assert memcached_client.get("leftover") is None


def test_too_large_value_is_refused(memcached_client):
    with pytest.raises(MemcacheServerError, match="object too large"):
        memcached_client.set("big", b"x" * (3 * 1024 * 1024))


def test_stats_reflect_the_test(memcached_client, memcached_server):
    before = int(memcached_server.stats()["cmd_set"])
    memcached_client.set_many({"a": b"1", "b": b"2"})
    assert int(memcached_server.stats()["cmd_set"]) == before + 2


def test_cache_aside(memcached_client, memcached_server):
    memcached_client.set("user:1", b"ada", expire=300)
    memcached_server.advance_clock(301)
    assert memcached_client.get("user:1") is None
