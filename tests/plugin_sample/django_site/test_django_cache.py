# Django's cache API on the plugin's server.
from django.core.cache import cache


def test_set_get_and_get_or_set():
    cache.set("greeting", {"text": "hello"}, timeout=30)
    assert cache.get("greeting") == {"text": "hello"}
    calls = []
    assert cache.get_or_set("computed", lambda: calls.append(1) or 5, timeout=30) == 5
    assert cache.get_or_set("computed", lambda: calls.append(1) or 6, timeout=30) == 5
    assert calls == [1]


def test_incr_and_many():
    cache.set("hits", 1)
    assert cache.incr("hits", 4) == 5
    cache.set_many({"a": 1, "b": 2})
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
    cache.delete_many(["a", "b"])
    assert cache.get("a") is None


def test_timeout_and_touch(memcached_server):
    cache.set("session", "s1", timeout=120)
    memcached_server.advance_clock(100)
    assert cache.touch("session", timeout=120)
    memcached_server.advance_clock(100)
    assert cache.get("session") == "s1"
    memcached_server.advance_clock(21)
    assert cache.get("session") is None


def test_starts_empty():
    assert cache.get("greeting") is None and cache.get("hits") is None
