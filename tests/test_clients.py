# Real client libraries against memcachepy, checked against real memcached.
#
# Each scenario drives one client library through its public API and records every return
# value (exceptions as their class and message, CAS tokens only through their use).  The same
# scenario runs against a fresh memcached and a fresh daemon under test; the records must be
# equal, and the memcached record is also checked against hand-written expectations so that a
# scenario that silently tests nothing cannot pass.
#
# Covers pymemcache's Client (every public method), PooledClient, HashClient over three
# daemons, and python-memcached (`memcache` module).
from __future__ import annotations

from typing import Any, Callable

import memcache  # python-memcached
import pytest
from pymemcache import serde
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from support.daemons import KIND_MEMCACHED, Daemon

pytestmark = pytest.mark.timeout(60)

Record = list[tuple[str, Any]]


class Recorder:
    def __init__(self) -> None:
        self.rec: Record = []

    def __call__(self, label: str, fn: Callable[[], Any], keep: bool = True) -> Any:
        """Run fn, record its result under label (keep=False: only whether it raised, for
        results that legitimately differ such as raw stats or CAS tokens)."""
        try:
            val = fn()
        except Exception as exc:  # the exception itself is the observable result
            val = ("raised", type(exc).__name__, str(exc))
            self.rec.append((label, val))
            return val
        self.rec.append((label, val if keep else "ok"))
        return val


STATS_KEYS = [b"cmd_get", b"cmd_set", b"get_hits", b"get_misses", b"curr_items",
              b"total_items", b"delete_hits", b"delete_misses", b"incr_hits", b"incr_misses",
              b"decr_hits", b"decr_misses", b"cas_hits", b"cas_misses", b"cas_badval",
              b"touch_hits", b"touch_misses", b"cmd_touch", b"cmd_flush", b"threads",
              b"limit_maxbytes"]


def pymemcache_scenario(c: Any, r: Recorder, full: bool) -> None:
    """Every public method of pymemcache's Client (`full`: also the ones PooledClient or
    HashClient lack)."""
    if full:
        r("version", lambda: c.version()[:4])  # "1.6." for both
    r("flush_all", lambda: c.flush_all(noreply=False))
    r("set", lambda: c.set(b"k", b"v", noreply=False))
    r("set_flags", lambda: c.set(b"f", b"fv", flags=123, noreply=False))
    r("set_str_key", lambda: c.set("sk", "text", noreply=False))
    r("set_empty", lambda: c.set(b"e", b"", noreply=False))
    r("set_big", lambda: c.set(b"big", b"x" * 300000, noreply=False))
    r("set_noreply", lambda: c.set(b"nr", b"1"))
    r("get", lambda: c.get(b"k"))
    r("get_str", lambda: c.get("sk"))
    r("get_empty", lambda: c.get(b"e"))
    r("get_big_len", lambda: len(c.get(b"big")))
    r("get_nr", lambda: c.get(b"nr"))
    r("get_missing", lambda: c.get(b"missing"))
    r("get_default", lambda: c.get(b"missing", default=b"dflt"))
    r("set_many", lambda: c.set_many({b"m1": b"1", b"m2": b"2", b"m3": b"3"}, noreply=False))
    r("set_multi", lambda: c.set_multi({b"m4": b"4"}, noreply=False))
    r("get_many", lambda: sorted(c.get_many([b"m1", b"m2", b"m3", b"m4", b"zz"]).items()))
    r("get_multi", lambda: sorted(c.get_multi([b"m1", b"zz"]).items()))
    r("get_many_empty", lambda: c.get_many([]))
    v, cas = r("gets", lambda: c.gets(b"k"), keep=False)
    r("gets_value", lambda: v)
    r("cas_ok", lambda: c.cas(b"k", b"v2", cas, noreply=False))
    r("cas_stale", lambda: c.cas(b"k", b"v3", cas, noreply=False))
    r("cas_missing", lambda: c.cas(b"nothere", b"v", b"1", noreply=False))
    r("get_after_cas", lambda: c.get(b"k"))
    r("gets_missing", lambda: c.gets(b"missing"))
    many = r("gets_many", lambda: c.gets_many([b"m1", b"m2", b"zz"]), keep=False)
    r("gets_many_keys", lambda: sorted(many))
    r("gets_many_values", lambda: sorted(v for v, _ in many.values()))
    if full:  # over several daemons CAS counters are per daemon and may coincide
        r("gets_many_cas_distinct", lambda: len({cs for _, cs in many.values()}))
    r("add_existing", lambda: c.add(b"k", b"x", noreply=False))
    r("add_new", lambda: c.add(b"a", b"x", noreply=False))
    r("replace_missing", lambda: c.replace(b"r", b"x", noreply=False))
    r("replace_existing", lambda: c.replace(b"a", b"y", noreply=False))
    r("append", lambda: c.append(b"a", b"_end", noreply=False))
    r("prepend", lambda: c.prepend(b"a", b"start_", noreply=False))
    r("append_missing", lambda: c.append(b"zz", b"x", noreply=False))
    r("prepend_missing", lambda: c.prepend(b"zz", b"x", noreply=False))
    r("get_a", lambda: c.get(b"a"))
    r("flags_kept", lambda: c.get(b"f"))
    r("set_num", lambda: c.set(b"n", b"10", noreply=False))
    r("incr", lambda: c.incr(b"n", 5, noreply=False))
    r("decr", lambda: c.decr(b"n", 3, noreply=False))
    r("decr_clamp", lambda: c.decr(b"n", 100, noreply=False))
    r("incr_missing", lambda: c.incr(b"zz", 1, noreply=False))
    r("decr_missing", lambda: c.decr(b"zz", 1, noreply=False))
    r("incr_wrap", lambda: (c.set(b"w", b"18446744073709551615", noreply=False),
                            c.incr(b"w", 1, noreply=False)))
    r("incr_non_numeric", lambda: c.incr(b"k", 1, noreply=False))
    r("incr_noreply", lambda: c.incr(b"n", 1))
    # int(): memcached pads in-place decrements with spaces, but only when it wins a
    # refcount race with its LRU maintainer, so the raw bytes are not deterministic
    r("get_n", lambda: int(c.get(b"n")))
    r("touch", lambda: c.touch(b"k", 100, noreply=False))
    r("touch_missing", lambda: c.touch(b"zz", 100, noreply=False))
    r("touch_expire", lambda: c.touch(b"m4", -1, noreply=False))
    r("get_touched_away", lambda: c.get(b"m4"))
    r("delete", lambda: c.delete(b"m1", noreply=False))
    r("delete_missing", lambda: c.delete(b"m1", noreply=False))
    r("delete_many", lambda: c.delete_many([b"m2", b"m3", b"zz"], noreply=False))
    r("delete_multi", lambda: c.delete_multi([b"a"], noreply=False))
    r("get_deleted", lambda: sorted(c.get_many([b"m1", b"m2", b"m3", b"a"]).items()))
    r("set_expired", lambda: c.set(b"x", b"1", expire=-1, noreply=False))
    r("get_expired", lambda: c.get(b"x"))
    r("key_with_space", lambda: c.set(b"bad key", b"v", noreply=False))
    r("key_too_long", lambda: c.get(b"k" * 251))
    if hasattr(c, "check_key"):
        r("check_key", lambda: c.check_key(b"ok_key"))
    if full:
        st = r("stats", lambda: c.stats(), keep=False)
        r("stats_values", lambda: [(k, st.get(k)) for k in STATS_KEYS])
        r("stats_names", lambda: sorted(st))
        settings = r("stats_settings", lambda: c.stats("settings"), keep=False)
        r("settings_values", lambda: [(k, settings.get(k)) for k in
                                      (b"maxbytes", b"maxconns", b"cas_enabled",
                                       b"item_size_max", b"evictions", b"num_threads")])
        r("raw_command_get", lambda: c.raw_command(b"get k", b"END\r\n"))
        r("raw_command_bogus", lambda: c.raw_command(b"bogus", b"\r\n"))
        r("cache_memlimit", lambda: c.cache_memlimit(100))
        r("stats_after_memlimit", lambda: c.stats()[b"limit_maxbytes"])
        r("shutdown_not_enabled", lambda: c.shutdown())
    r("quit", lambda: c.quit())
    r("after_quit_reconnects", lambda: c.get(b"k"))
    r("flush_all_delay0", lambda: c.flush_all(delay=0, noreply=False))
    r("after_flush", lambda: c.get(b"k"))
    r("disconnect_all", lambda: c.disconnect_all())
    r("after_disconnect_all", lambda: c.get(b"k"))
    r("close", lambda: c.close())
    r("after_close_reconnects", lambda: c.set(b"k", b"again", noreply=False) and c.get(b"k"))


EXPECTED = {  # memcached's results for the labels whose value is obvious
    "set": True, "get": b"v", "get_str": b"text", "get_empty": b"", "get_big_len": 300000,
    "get_nr": b"1", "get_missing": None, "get_default": b"dflt", "set_many": [],
    "get_many": [(b"m1", b"1"), (b"m2", b"2"), (b"m3", b"3"), (b"m4", b"4")],
    "gets_value": b"v", "cas_ok": True, "cas_stale": False, "cas_missing": None,
    "get_after_cas": b"v2", "gets_missing": (None, None), "gets_many_keys": [b"m1", b"m2"],
    "gets_many_cas_distinct": 2, "add_existing": False, "add_new": True,
    "replace_missing": False, "replace_existing": True, "append": True, "prepend": True,
    "append_missing": False, "prepend_missing": False, "get_a": b"start_y_end",
    "flags_kept": b"fv", "incr": 15, "decr": 12, "decr_clamp": 0, "incr_missing": None,
    "decr_missing": None, "incr_wrap": (True, 0), "get_n": 1, "touch": True,
    "touch_missing": False, "get_touched_away": None, "delete": True,
    "delete_missing": False, "delete_many": True, "get_deleted": [], "get_expired": None,
    "after_quit_reconnects": b"v2", "after_flush": None, "after_close_reconnects": b"again",
}


def check_expected(rec: Record) -> None:
    got = dict(rec)
    for label, want in EXPECTED.items():
        if label in got:
            assert got[label] == want, (label, got[label], want)


def compare(ref: Record, sut: Record) -> None:
    assert [label for label, _ in sut] == [label for label, _ in ref]
    diffs = [(label, want, got) for (label, want), (_, got) in zip(ref, sut) if want != got]
    assert not diffs, "\n".join(f"{lb}: memcached={w!r} sut={g!r}" for lb, w, g in diffs)


def make_client(kind: str, d: Daemon) -> Any:
    if kind == "client":
        return Client(d.addr, connect_timeout=5, timeout=5)
    return PooledClient(d.addr, connect_timeout=5, timeout=5, max_pool_size=4)


@pytest.mark.parametrize("client_kind", ["client", "pooled"])
def test_pymemcache(client_kind: str, sut_kind: str, daemon_pair) -> None:
    ref, sut = daemon_pair(sut_kind, ())
    records = []
    for d in (ref, sut):
        r = Recorder()
        pymemcache_scenario(make_client(client_kind, d), r, full=True)
        records.append(r.rec)
    check_expected(records[0])
    compare(records[0], records[1])


def test_pymemcache_serde(sut_kind: str, daemon_pair) -> None:
    """Non-bytes values go through client flags (pickle_serde): flags must round-trip."""
    ref, sut = daemon_pair(sut_kind, ())
    records = []
    for d in (ref, sut):
        c = Client(d.addr, serde=serde.pickle_serde, timeout=5)
        r = Recorder()
        for i, val in enumerate([1, 2**70, 1.5, "unicode é", {"a": [1, 2]}, b"raw", None]):
            r(f"set{i}", lambda: c.set(f"s{i}", val, noreply=False))
            r(f"get{i}", lambda: c.get(f"s{i}"))
        r("incr_serialized_int", lambda: c.incr("s0", 1, noreply=False))
        records.append(r.rec)
        c.close()
    assert dict(records[0])["get4"] == {"a": [1, 2]}
    compare(records[0], records[1])


def test_pymemcache_too_large(sut_kind: str, daemon_pair) -> None:
    ref, sut = daemon_pair(sut_kind, ("-I", "1k", "-o", "slab_chunk_max=1024"))
    records = []
    for d in (ref, sut):
        c = Client(d.addr, timeout=5)
        r = Recorder()
        r("set_old", lambda: c.set(b"k", b"old", noreply=False))
        r("set_too_large", lambda: c.set(b"k", b"x" * 5000, noreply=False))
        r("get_after", lambda: c.get(b"k"))
        r("still_usable", lambda: c.set(b"j", b"y", noreply=False) and c.get(b"j"))
        records.append(r.rec)
        c.close()
    assert dict(records[0])["set_too_large"][0] == "raised"
    compare(records[0], records[1])


def test_pymemcache_shutdown_enabled(kind: str, start_daemon) -> None:
    d = start_daemon(kind, "-A")
    c = Client(d.addr, timeout=5)
    c.set(b"k", b"v", noreply=False)
    try:
        c.shutdown()
    except Exception:
        pass  # the connection may be torn down before anything is read back
    d.proc.wait(timeout=10)


def test_hash_client_three_daemons(sut_kind: str, start_daemon) -> None:
    """HashClient spreads keys over three daemons; results must match a memcached trio, and
    every daemon of the trio must actually hold some of the keys."""
    records = []
    for kind in (KIND_MEMCACHED, sut_kind):
        ds = [start_daemon(kind) for _ in range(3)]
        hc = HashClient([d.addr for d in ds], connect_timeout=5, timeout=5, use_pooling=True)
        r = Recorder()
        pymemcache_scenario(hc, r, full=False)
        keys = [f"hk{i}".encode() for i in range(60)]
        r("set_many_60", lambda: hc.set_many({k: k * 2 for k in keys}, noreply=False))
        r("get_many_60", lambda: sorted(hc.get_many(keys).items()))
        r("gets_many_60", lambda: sorted(v for v, _ in hc.gets_many(keys).values()))
        per = []
        for d in ds:
            direct = Client(d.addr, timeout=5)
            per.append(len(direct.get_many(keys)))
            direct.close()
        assert sum(per) == 60 and all(n > 0 for n in per), per
        # (remove_server is pymemcache's internal dead-server hook, not exercised here)
        r("delete_many_60", lambda: hc.delete_many(keys, noreply=False))
        r("get_many_after_delete", lambda: hc.get_many(keys))
        hc.close()
        records.append(r.rec)
    check_expected(records[0])
    compare(records[0], records[1])


def python_memcached_scenario(mc: memcache.Client, r: Recorder) -> None:
    r("flush_all", lambda: mc.flush_all())
    r("set", lambda: mc.set("k", "v"))
    r("get", lambda: mc.get("k"))
    r("set_int", lambda: mc.set("i", 42))
    r("get_int", lambda: mc.get("i"))
    r("set_obj", lambda: mc.set("o", {"x": (1, 2)}))
    r("get_obj", lambda: mc.get("o"))
    r("set_bytes", lambda: mc.set("b", b"\x00\xff" * 100))
    r("get_bytes", lambda: mc.get("b"))
    r("set_big", lambda: mc.set("big", "y" * 200000))
    r("get_big_len", lambda: len(mc.get("big")))
    r("get_missing", lambda: mc.get("missing"))
    r("add_existing", lambda: mc.add("k", "x"))
    r("add_new", lambda: mc.add("a", "x"))
    r("replace_missing", lambda: mc.replace("r", "x"))
    r("replace", lambda: mc.replace("a", "y"))
    r("append", lambda: mc.append("a", "_e"))
    r("prepend", lambda: mc.prepend("a", "s_"))
    r("append_missing", lambda: mc.append("zz", "x"))
    r("get_a", lambda: mc.get("a"))
    r("set_multi", lambda: mc.set_multi({"m1": "1", "m2": 2, "m3": "3"}))
    r("get_multi", lambda: sorted(mc.get_multi(["m1", "m2", "m3", "zz"]).items()))
    r("set_multi_prefix", lambda: mc.set_multi({"1": "p1", "2": "p2"}, key_prefix="pre_"))
    r("get_multi_prefix", lambda: sorted(mc.get_multi(["1", "2"], key_prefix="pre_").items()))
    r("delete_multi", lambda: mc.delete_multi(["m1", "m2"]))
    r("get_multi_after", lambda: sorted(mc.get_multi(["m1", "m2", "m3"]).items()))
    r("set_num", lambda: mc.set("n", "10"))
    r("incr", lambda: mc.incr("n", 5))
    r("decr", lambda: mc.decr("n", 20))
    r("incr_missing", lambda: mc.incr("zz"))
    r("gets", lambda: mc.gets("k"))  # python-memcached returns the value, keeps CAS inside
    r("cas_ok", lambda: mc.cas("k", "v2"))
    r("gets_again", lambda: mc.gets("k"))
    r("set_other", lambda: mc.set("k", "v3"))
    r("cas_stale", lambda: mc.cas("k", "v4"))
    r("get_after_cas", lambda: mc.get("k"))
    r("touch", lambda: mc.touch("k", 100))
    r("touch_missing", lambda: mc.touch("zz", 100))
    r("delete", lambda: mc.delete("k"))
    r("delete_missing", lambda: mc.delete("k"))
    r("set_expired", lambda: mc.set("x", "1", time=-1))
    r("get_expired", lambda: mc.get("x"))
    stats = r("get_stats", lambda: mc.get_stats(), keep=False)
    r("stats_values", lambda: [(k, stats[0][1].get(k)) for k in
                               ("cmd_get", "cmd_set", "get_hits", "get_misses", "curr_items",
                                "cas_hits", "cas_badval", "touch_hits", "delete_hits")])
    r("stats_items_nonempty", lambda: bool(mc.get_stats("items")[0][1]))
    r("get_slabs_classes", lambda: len(mc.get_slabs()[0][1]) > 0)
    r("get_slab_stats_nonempty", lambda: bool(mc.get_slab_stats()))
    r("disconnect_all", lambda: mc.disconnect_all())
    r("after_disconnect", lambda: mc.get("a"))


def test_python_memcached(sut_kind: str, daemon_pair) -> None:
    ref, sut = daemon_pair(sut_kind, ())
    records = []
    for d in (ref, sut):
        mc = memcache.Client([d.server_string], cache_cas=True, socket_timeout=5)
        r = Recorder()
        python_memcached_scenario(mc, r)
        mc.disconnect_all()
        records.append(r.rec)
    got = dict(records[0])
    assert got["get"] == "v" and got["get_obj"] == {"x": (1, 2)} and got["get_a"] == "s_y_e"
    assert got["cas_ok"] is True and got["cas_stale"] is False and got["incr"] == 15
    assert got["decr"] == 0 and got["get_expired"] is None and got["get_slabs_classes"]
    compare(records[0], records[1])
