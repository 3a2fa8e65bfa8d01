# SASL (-S) against memcached 1.6.18 (issue 12).
#
# Debian's memcached authenticates through Cyrus SASL: it is started with SASL_CONF_PATH
# naming a directory whose memcached.conf says `mech_list: plain` and points at a sasldb
# made with `saslpasswd2 -a memcached` (packages sasl2-bin, libsasl2-modules).  memcachepy
# reads memcached's plain password database instead (MEMCACHED_SASL_PWDB, `user:password`
# lines).  Both hold the same users, so the same packets give the same replies: mechanism
# list, PLAIN in one step or with an empty start and a step, wrong passwords, a foreign
# authzid, steps without a start, unknown mechanisms, every command refused (and the
# connection closed) before authentication, and the auth_cmds/auth_errors counters.
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from support.binproto import OP, normalise, parse, pkt, run_steps, store_ext
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, run_cli

USERS = {"alice": "secret", "bob": "pw2"}


@pytest.fixture
def sasl_env(tmp_path, monkeypatch):
    saslpasswd = shutil.which("saslpasswd2")
    if not saslpasswd or not os.path.exists("/usr/lib/x86_64-linux-gnu/sasl2/libplain.so.2"):
        msg = "Cyrus SASL tools missing (apt-get install sasl2-bin libsasl2-modules)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    db = tmp_path / "sasldb2"
    for user, pw in USERS.items():
        subprocess.run([saslpasswd, "-p", "-a", "memcached", "-c", "-f", str(db), user],
                       input=pw.encode(), check=True, timeout=10)
    (tmp_path / "memcached.conf").write_text(f"mech_list: plain\nsasldb_path: {db}\n")
    pwdb = tmp_path / "pwdb"
    pwdb.write_text("alice:secret\nbob:pw2:extra-token\nalice:other\n")
    monkeypatch.setenv("SASL_CONF_PATH", str(tmp_path))
    monkeypatch.setenv("MEMCACHED_SASL_PWDB", str(pwdb))
    return pwdb


def plain(user: str, pw: str, authzid: str = "") -> bytes:
    return f"{authzid}\0{user}\0{pw}".encode()


AUTH = pkt("sasl_auth", b"PLAIN", b"", plain("alice", "secret"))

TRANSCRIPTS = {
    "before-auth": [pkt("version") + pkt("sasl_list") + pkt("get", b"k")],
    "before-auth-quiet": [pkt("setq", b"k", store_ext(), b"v")],
    "before-auth-stat": [pkt("stat")],
    "wrong-password": [pkt("sasl_auth", b"PLAIN", b"", plain("alice", "nope")), pkt("noop")],
    "unknown-user": [pkt("sasl_auth", b"PLAIN", b"", plain("carol", "secret")) + pkt("get", b"k")],
    "one-step": [AUTH + pkt("set", b"k", store_ext(3), b"v") + pkt("getk", b"k") + pkt("version")],
    "extra-token-user": [pkt("sasl_auth", b"PLAIN", b"", plain("bob", "pw2")) + pkt("get", b"k")],
    "first-line-wins": [pkt("sasl_auth", b"PLAIN", b"", plain("alice", "other")) + pkt("get", b"k")],
    "start-then-step": [pkt("sasl_auth", b"PLAIN", b"", b""),
                        pkt("sasl_step", b"PLAIN", b"", plain("alice", "secret")) + pkt("get", b"k")],
    "step-without-start": [pkt("sasl_step", b"PLAIN", b"", plain("alice", "secret")), pkt("get", b"k")],
    "unknown-mech": [pkt("sasl_auth", b"CRAM-MD5", b"", b"") + pkt("get", b"k")],
    "long-mech": [pkt("sasl_auth", b"M" * 33, b"", b"abcd") + pkt("noop")],
    "authzid-self": [pkt("sasl_auth", b"PLAIN", b"", plain("alice", "secret", "alice")) + pkt("get", b"k")],
    "authzid-other": [pkt("sasl_auth", b"PLAIN", b"", plain("alice", "secret", "bob")) + pkt("get", b"k")],
    "no-nul": [pkt("sasl_auth", b"PLAIN", b"", b"alice") + pkt("get", b"k")],
    "reauth-wrong": [AUTH + pkt("get", b"k"),
                     pkt("sasl_auth", b"PLAIN", b"", plain("alice", "bad")) + pkt("get", b"k")],
    "text-refused": [b"version\r\n"],
    "stats-after": [pkt("sasl_auth", b"PLAIN", b"", plain("alice", "bad")),
                    AUTH + pkt("sasl_auth", b"PLAIN", b"", plain("bob", "x")) + pkt("stat", b"settings")],
}


def _settle(data: bytes) -> list:
    """Normalised packets; STAT replies reduced to the SASL-relevant settings."""
    keep = {b"auth_enabled_sasl", b"binding_protocol", b"auth_enabled_ascii"}
    out = []
    for p in normalise(data):
        if p[0] == OP["stat"] and p[8] and p[8] not in keep:
            continue
        out.append(p)
    return out


@pytest.mark.timeout(120)
def test_sasl_transcripts(sasl_env, daemon_pair) -> None:
    ref, sut = daemon_pair(KIND_MEMCACHEPY, ("-S",))
    for name, steps in TRANSCRIPTS.items():
        want = run_steps(ref.addr, steps)
        got = run_steps(sut.addr, steps)
        assert _settle(got) == _settle(want), (name, want, got)
        assert got.endswith(b"<EOF>") == want.endswith(b"<EOF>"), name


@pytest.mark.timeout(60)
def test_sasl_counters(sasl_env, daemon_pair) -> None:
    ref, sut = daemon_pair(KIND_MEMCACHEPY, ("-S",))
    stats = {}
    for d in (ref, sut):
        for steps in TRANSCRIPTS.values():
            run_steps(d.addr, steps)
        pk = parse(run_steps(d.addr, [AUTH + pkt("stat")]))[0]
        stats[d.kind] = {p["key"]: p["value"] for p in pk if p["op"] == OP["stat"]}
    for name in (b"auth_cmds", b"auth_errors", b"cmd_get", b"get_misses", b"cmd_set"):
        assert stats[KIND_MEMCACHEPY][name] == stats[KIND_MEMCACHED][name], name
    assert int(stats[KIND_MEMCACHEPY][b"auth_errors"]) > 3


@pytest.mark.parametrize("flags", [("-S", "-B", "ascii"), ("-S", "-B", "auto")])
def test_sasl_needs_binary(flags, sasl_env) -> None:
    want = run_cli(KIND_MEMCACHED, ["-u", "root", "-l", "127.0.0.1", "-p", "0", *flags])
    got = run_cli(KIND_MEMCACHEPY, ["-u", "root", "-l", "127.0.0.1", "-p", "0", *flags])
    assert got.returncode == want.returncode == 64
    assert got.stderr == want.stderr == b"ERROR: You cannot allow the ASCII protocol while using SASL.\n"


@pytest.mark.timeout(60)
def test_sasl_pwdb_option(tmp_path, start_daemon, monkeypatch) -> None:
    """--sasl-pwdb (or `sasl-pwdb` in a config file) names the file instead of the env."""
    monkeypatch.delenv("MEMCACHED_SASL_PWDB", raising=False)
    db = tmp_path / "db"
    db.write_text("zed:pass\n")
    d = start_daemon(KIND_MEMCACHEPY, "-S", f"--sasl-pwdb={db}")
    out = parse(run_steps(d.addr, [pkt("sasl_auth", b"PLAIN", b"", plain("zed", "pass"))
                                   + pkt("get", b"k")]))[0]
    assert [(p["op"], p["status"]) for p in out][:2] == [(OP["sasl_auth"], 0), (OP["get"], 1)]
    d2 = start_daemon(KIND_MEMCACHEPY, "-S")      # no database: nobody gets in
    out = parse(run_steps(d2.addr, [pkt("sasl_auth", b"PLAIN", b"", plain("zed", "pass"))]))[0]
    assert out[0]["status"] == 0x20


@pytest.mark.timeout(60)
def test_bmemcached_sasl(sasl_env, kind, start_daemon) -> None:
    """python-binary-memcached, the client hosted services hand out: every public method."""
    bmemcached = pytest.importorskip("bmemcached")
    d = start_daemon(kind, "-S")
    c = bmemcached.Client([d.server_string], "alice", "secret")
    try:
        assert c.set("k", "v", time=100)
        ok, cas0 = c.set("k", "v", get_cas=True)
        assert ok and cas0
        assert c.get("k") == "v"
        assert c.get("k", get_cas=True) == ("v", cas0)
        assert c.get("missing", default="dflt") == "dflt"
        val, cas = c.gets("k")
        assert val == "v" and cas == cas0
        assert c.cas("k", "v2", cas)
        assert not c.cas("k", "v3", cas)
        ok, cas2 = c.cas("k", "v4", c.gets("k")[1], get_cas=True)
        assert ok and cas2 not in (0, cas)
        assert c.get("k") == "v4"
        assert c.add("new", 1) and not c.add("new", 2)
        assert c.add("new2", 1, get_cas=True)[0]
        assert c.replace("new", 3) and not c.replace("missing", 3)
        assert c.replace("new", 4, get_cas=True)[0]
        assert c.get("new") == 4
        assert c.set_multi({"a": b"1", "b": {"x": 1}}) == []
        assert c.get_multi(["a", "b", "zz"]) == {"a": b"1", "b": {"x": 1}}
        multi = c.get_multi(["a", "b"], get_cas=True)
        assert set(multi) == {"a", "b"} and all(v[1] for v in multi.values())
        cas_map = c.set_multi_cas({"c1": "x", "c2": "y"})
        assert set(cas_map) == {"c1", "c2"} and all(cas_map.values())
        assert c.incr("n", 1) == 0              # missing: created with the default
        assert c.incr("n", 5) == 5 and c.decr("n", 20) == 0
        assert c.incr("n2", 1, default=40) == 40 and c.decr("n2", 1) == 39
        assert c.delete("a") and c.delete("a")  # bmemcached treats "not found" as done
        assert not c.delete("b", cas=1)         # wrong CAS: EEXISTS
        assert c.delete_multi(["b", "new"])
        assert c.get("b") is None and c.get("new") is None
        st = c.stats()
        one = list(st.values())[0]
        assert int(one["auth_cmds"]) >= 1 and one["version"] == b"1.6.18"
        items = list(c.stats("items").values())[0]
        assert any(k.startswith("items:") for k in items)
        settings_ = list(c.stats("settings").values())[0]
        assert settings_["auth_enabled_sasl"] == b"yes"
        assert c.flush_all()
        assert c.get("k") is None
    finally:
        c.disconnect_all()
    bad = bmemcached.Client([d.server_string], "alice", "wrong")
    with pytest.raises(Exception):
        bad.set("k", "v")
    bad.disconnect_all()


def test_sasl_refuses_udp(sasl_env) -> None:
    args = ["-u", "root", "-l", "127.0.0.1", "-p", "-1", "-S", "-U", "-1"]
    want = run_cli(KIND_MEMCACHED, args)
    got = run_cli(KIND_MEMCACHEPY, args)
    assert got.returncode == want.returncode == 64
    assert got.stderr == want.stderr == \
        b"ERROR: Cannot enable UDP while using binary SASL authentication.\n"
