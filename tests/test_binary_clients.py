# Binary-protocol clients end to end (issue 12): pylibmc with binary=True (libmemcached),
# Django's cache API on PyLibMCCache with OPTIONS binary=True, and python-binary-memcached
# without SASL (test_sasl.py has it with SASL).  Every public data method; pylibmc and Django
# run the same session against memcached and memcachepy and must get the same results.
# pylibmc with username/password is not tested: in this environment libmemcached's client
# SASL gives up after the mechanism list against Debian's memcached too.
from __future__ import annotations

import pytest


def _pylibmc_session(pylibmc, server: str) -> list:
    """Every public data method of pylibmc.Client; returns what each call gave (or the
    exception class it raised), CAS values replaced by their order of appearance."""
    c = pylibmc.Client([server], binary=True, behaviors={"cas": True, "tcp_nodelay": True})
    out: list = []
    cas_names: dict = {}

    def call(name, *args, **kw):
        try:
            r = getattr(c, name)(*args, **kw)
        except pylibmc.Error as e:
            r = type(e).__name__
        if name == "gets" and isinstance(r, tuple) and r[1]:
            r = (r[0], "cas%d" % cas_names.setdefault(r[1], len(cas_names)))
        out.append((name, args[:2] if name == "cas" else args, r))

        return r

    call("set", "k", "v", time=100)
    call("get", "k")
    call("get", "missing")
    call("add", "k", "x")
    call("add", "a", "1")
    call("replace", "a", "2")
    call("replace", "nope", "2")
    call("append", "a", "3")
    call("prepend", "a", "1")
    call("append", "nope", "3")
    call("get", "a")
    _, cas = c.gets("k")
    call("gets", "k")
    call("cas", "k", "v2", cas)
    call("cas", "k", "v3", cas)
    call("cas", "absent", "v3", cas)
    call("get", "k")
    call("set", "n", 10)
    call("incr", "n", 5)
    call("decr", "n", 20)
    call("incr", "nonexistent")
    call("set", "m", 1)
    call("incr_multi", ["n", "m"], delta=2)
    call("get_multi", ["n", "m"])
    call("set_multi", {"x": 1, "y": [1, 2], "z": b"\0bin"})
    call("get_multi", ["x", "y", "z", "w"])
    call("get_multi", ["x"], key_prefix="")
    call("set_multi", {"1": "p"}, key_prefix="pre:")
    call("get", "pre:1")
    call("add_multi", {"x": 5, "new": 6})
    call("touch", "x", 100)               # libmemcached waits ~2 s here, with memcached too
    call("delete", "x")
    call("delete", "x")
    call("delete_multi", ["y", "z"])
    call("get_multi", ["y", "z"])
    big = "x" * 500000
    call("set", "big", big)
    got_big = call("get", "big")
    out[-1] = ("big", got_big == big)
    stats = c.get_stats()[0][1]
    out.append(("stats", stats["version"], stats["cmd_get"], stats["get_hits"],
                stats["cmd_set"]))
    out.append(("settings", sorted(c.get_stats("settings")[0][1])))
    out.append(("items", sorted(c.get_stats("items")[0][1])[:3]))
    c2 = c.clone()
    out.append(("clone", c2.get("a")))
    c.disconnect_all()
    call("get", "a")                      # reconnects
    call("flush_all")
    call("get", "a")
    call("set", "txt", "abc")
    call("incr", "txt")                   # last: libmemcached then gives up on the server
    return out


@pytest.mark.timeout(60)
def test_pylibmc_binary(daemon_pair) -> None:
    pylibmc = pytest.importorskip("pylibmc")
    ref, sut = daemon_pair("memcachepy", ())
    want = _pylibmc_session(pylibmc, ref.server_string)
    got = _pylibmc_session(pylibmc, sut.server_string)
    assert got == want
    assert ("get", ("a",), "123") in got and ("big", True) in got


@pytest.mark.timeout(60)
def test_bmemcached_binary(kind: str, start_daemon) -> None:
    bmemcached = pytest.importorskip("bmemcached")
    d = start_daemon(kind, "-B", "binary")
    c = bmemcached.Client([d.server_string])
    try:
        assert c.set("k", {"a": 1}) and c.get("k") == {"a": 1}
        assert c.add("k", 1) is False and c.replace("k", 2) and c.get("k") == 2
        val, cas = c.gets("k")
        assert c.cas("k", 3, cas) and not c.cas("k", 4, cas)
        assert c.incr("c", 1, default=7) == 7 and c.incr("c", 1) == 8 and c.decr("c", 100) == 0
        assert c.set_multi({"m1": "a", "m2": "b"}) == []
        assert c.get_multi(["m1", "m2", "m3"]) == {"m1": "a", "m2": "b"}
        assert c.delete_multi(["m1", "m2"]) and c.get_multi(["m1", "m2"]) == {}
        assert b"pid" in list(c.stats().values())[0] or "pid" in list(c.stats().values())[0]
        assert c.flush_all() and c.get("k") is None
    finally:
        c.disconnect_all()


def _django_session(server: str) -> list:
    """Django's cache API on PyLibMCCache with OPTIONS binary=True, as Django documents it."""
    django = pytest.importorskip("django")
    from django.conf import settings
    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.memcached import PyLibMCCache
    c = PyLibMCCache(server, {"OPTIONS": {"binary": True, "behaviors": {"tcp_nodelay": True}},
                              "TIMEOUT": 300})
    out = [django.VERSION[:1]]
    out.append(c.set("a", {"x": 1}))
    out.append(c.get("a"))
    out.append(c.get("missing", "dflt"))
    out.append(c.add("a", 2))
    out.append(c.add("b", 2))
    out.append(c.has_key("b"))
    out.append(c.incr("b", 5))
    out.append(c.decr("b", 3))
    with pytest.raises(ValueError):
        c.incr("nope")
    out.append(c.set_many({"m1": "x", "m2": [1, 2]}))
    out.append(c.get_many(["m1", "m2", "m3"]))
    out.append(c.touch("m1", 100))
    out.append(c.get_or_set("gos", "computed"))
    out.append(c.get_or_set("gos", "again"))
    out.append(c.incr_version("a"))
    out.append(c.get("a", version=2))
    out.append(c.decr_version("a", version=2))
    out.append(c.delete("m1"))
    out.append(c.delete("m1"))
    c.delete_many(["m2", "b"])
    out.append(c.get_many(["m2", "b"]))
    c.set("t", "v", timeout=0)            # Django: 0 means expire now
    out.append(c.get("t"))
    c.clear()
    out.append(c.get("a"))
    c.close()
    return out


@pytest.mark.timeout(60)
def test_django_pylibmc_binary(daemon_pair) -> None:
    pytest.importorskip("pylibmc")
    pytest.importorskip("django")
    ref, sut = daemon_pair("memcachepy", ())
    want = _django_session(ref.server_string)
    got = _django_session(sut.server_string)
    assert got == want
    assert {"x": 1} in got and "computed" in got
