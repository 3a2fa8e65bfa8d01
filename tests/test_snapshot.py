# `memcachepy-tool snapshot` / `restore` / `verify` (memcachepy.snapshot): a
# snapshot of memcachepy taken while a writer keeps storing restores into real
# memcached and into memcachepy with every value intact (values carry their
# own SHA-256, so a torn or mixed-up value is caught); damaged files are
# refused before anything is written; TTLs keep counting from the snapshot
# time; CAS values travel with --keep-cas where the target can set them.
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from memcachepy import snapshot as snap
from memcachepy.tool import AdminClient
from support.daemons import REPO_ROOT

pytestmark = pytest.mark.timeout(120)

N = 20000


def value_for(key: bytes, gen: int) -> bytes:
    """Self-checking value: '<gen>:<sha256(key, gen)>:' + filler of a size set by the key."""
    digest = hashlib.sha256(b"%s/%d" % (key, gen)).hexdigest().encode()
    fill = (digest * 40)[: (int(digest[:4], 16) % 3000)]
    return b"%d:%s:%s" % (gen, digest, fill)


def check_value(key: bytes, value: bytes) -> int:
    gen_s, digest, _ = value.split(b":", 2)
    assert value == value_for(key, int(gen_s)), key
    return int(gen_s)


def flags_for(i: int) -> int:
    return (i * 2654435761) % (1 << 32) if i % 5 else 0


def fill(client: AdminClient, n: int) -> None:
    for start in range(0, n, 1000):
        parts = []
        for i in range(start, min(n, start + 1000)):
            k = b"key:%d" % i
            v = value_for(k, 0)
            ttl = 0 if i % 4 else 3600 + i
            parts.append(b"set %s %d %d %d noreply\r\n%s\r\n" % (k, flags_for(i), ttl, len(v), v))
        client.send(b"".join(parts))
    client.version()


def meta_get_all(client: AdminClient, keys: list[bytes]) -> dict[bytes, tuple[int, int, int, bytes]]:
    """{key: (flags, ttl, cas, value)} through pipelined mg."""
    out = {}
    for i in range(0, len(keys), 500):
        client.send(b"".join(b"mg %s v f t c k\r\n" % k for k in keys[i:i + 500]) + b"mn\r\n")
        while True:
            line = client.readline()
            if line == b"MN":
                break
            if line.startswith(b"EN"):
                continue
            parts = line.split(b" ")
            assert parts[0] == b"VA", line
            f = dict((p[:1], p[1:]) for p in parts[2:])
            value = client.readexact(int(parts[1]) + 2)[:-2]
            out[f[b"k"]] = (int(f[b"f"]), int(f[b"t"]), int(f[b"c"]), value)
    return out


def tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memcachepy.tool", *args], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=timeout)


class Writer(threading.Thread):
    """Keeps overwriting key:0..N-1 with newer generations and adding load:* keys."""

    def __init__(self, addr: str) -> None:
        super().__init__(daemon=True)
        self.addr = addr
        self.stop_ev = threading.Event()
        self.batches = 0

    def run(self) -> None:
        with AdminClient(self.addr) as c:
            gen = 1
            while not self.stop_ev.is_set():
                parts = []
                for j in range(200):
                    i = (gen * 200 + j) * 7919 % N
                    k = b"key:%d" % i
                    v = value_for(k, gen)
                    parts.append(b"set %s %d 0 %d noreply\r\n%s\r\n" % (k, flags_for(i), len(v), v))
                    lk = b"load:%d:%d" % (gen, j)
                    lv = value_for(lk, gen)
                    parts.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (lk, len(lv), lv))
                c.send(b"".join(parts))
                c.version()
                gen += 1
                self.batches += 1


@pytest.mark.parametrize("target_kind", ["memcached", "memcachepy"])
def test_snapshot_under_load_restores(start_daemon, tmp_path, target_kind: str) -> None:
    src = start_daemon("memcachepy", "-m", "256")
    dst = start_daemon(target_kind, "-m", "256")
    with AdminClient(src.server_string) as c:
        fill(c, N)
    w = Writer(src.server_string)
    w.start()
    path = str(tmp_path / "cache.snap")
    try:
        # wait until the writer is running for real, then snapshot beside it
        deadline = time.monotonic() + 10
        while w.batches < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = tool("snapshot", src.server_string, path)
        assert r.returncode == 0, r.stderr
        during = w.batches
    finally:
        w.stop_ev.set()
        w.join(10)
    assert during >= 3, "the writer did not run during the snapshot"
    assert "snapshot of" in r.stderr and "items/s" in r.stderr
    info, records = snap.read_snapshot(path)
    assert info.count == len(records) >= N
    assert not os.path.exists(path + ".tmp")
    recorded = {rec.key: rec for rec in records}
    assert len(recorded) == len(records)           # no key twice
    for i in range(N):
        assert b"key:%d" % i in recorded           # nothing was deleted: all are there

    r = tool("restore", path, dst.server_string)
    assert r.returncode == 0, r.stderr
    assert f"restored into {dst.server_string}: {len(records):,} items" in r.stderr
    with AdminClient(dst.server_string) as c:
        got = meta_get_all(c, list(recorded))
        assert int(c.stats()["curr_items"]) == len(records)
    assert set(got) == set(recorded)
    for k, rec in recorded.items():
        flags, ttl, _cas, value = got[k]
        check_value(k, value)                      # every value whole and its own
        assert value == rec.value and flags == rec.flags
        if k.startswith(b"key:"):
            assert flags == flags_for(int(k[4:]))
        if rec.ttl == -1:
            assert ttl == -1
        else:
            assert rec.ttl - 30 <= ttl <= rec.ttl  # the TTL left, minus the time since


def test_restore_keeps_cas_into_memcachepy(start_daemon, tmp_path) -> None:
    src = start_daemon("memcachepy")
    dst = start_daemon("memcachepy")
    with AdminClient(src.server_string) as c:
        fill(c, 2000)
        c.send(b"ms key:5 2 E123456789 T0\r\nhi\r\n")
        assert c.readline() == b"HD"
        before = meta_get_all(c, [b"key:%d" % i for i in range(2000)])
    path = str(tmp_path / "s")
    assert tool("snapshot", src.server_string, path).returncode == 0
    r = tool("restore", path, dst.server_string, "--keep-cas")
    assert r.returncode == 0, r.stderr
    with AdminClient(dst.server_string) as c:
        after = meta_get_all(c, list(before))
    assert {k: (v[0], v[2], v[3]) for k, v in after.items()} == \
           {k: (v[0], v[2], v[3]) for k, v in before.items()}
    assert after[b"key:5"][2] == 123456789


def test_keep_cas_refused_by_memcached(start_daemon, tmp_path) -> None:
    src = start_daemon("memcachepy")
    dst = start_daemon("memcached")
    with AdminClient(src.server_string) as c:
        fill(c, 10)
    path = str(tmp_path / "s")
    assert tool("snapshot", src.server_string, path).returncode == 0
    r = tool("restore", path, dst.server_string, "--keep-cas")
    assert r.returncode == 1
    assert "cannot set a chosen CAS" in r.stderr
    with AdminClient(dst.server_string) as c:
        assert c.stats()["curr_items"] == "0"


def test_snapshot_of_memcached_and_text_protocol_restore(start_daemon, tmp_path) -> None:
    """The tool works against memcached as the source, and with `set` as the writer."""
    src = start_daemon("memcached")
    dst = start_daemon("memcachepy")
    with AdminClient(src.server_string) as c:
        fill(c, 3000)
    path = str(tmp_path / "s")
    assert tool("snapshot", src.server_string, path).returncode == 0
    r = tool("restore", path, dst.server_string, "--protocol", "text")
    assert r.returncode == 0, r.stderr
    with AdminClient(dst.server_string) as c:
        got = meta_get_all(c, [b"key:%d" % i for i in range(3000)])
    assert len(got) == 3000
    for k, (flags, ttl, _cas, value) in got.items():
        assert check_value(k, value) == 0 and flags == flags_for(int(k[4:]))
        assert (ttl == -1) == (int(k[4:]) % 4 != 0)


def write_sample(path: str, created: int) -> None:
    with open(path, "wb") as f:
        w = snap.SnapshotWriter(f, "test", True, created=created)
        w.add(b"forever", 1, -1, b"a" * 100, 7)
        w.add(b"short", 2, 5, b"b" * 100, 8)
        w.add(b"long", 3, 100000, b"c" * 100, 9)
        w.add(b"huge_ttl", 4, 40 * 86400, b"d", None)
        w.close()


def test_expired_items_are_skipped(start_daemon, tmp_path) -> None:
    d = start_daemon("memcachepy")
    path = str(tmp_path / "s")
    created = int(time.time())
    write_sample(path, created)
    # restore as if 10 s had passed since the snapshot: "short" (5 s) is gone
    st = snap.restore_snapshot(path, d.server_string, now=lambda: time.time() + 10)
    assert (st.items, st.skipped) == (3, 1)
    with AdminClient(d.server_string) as c:
        got = meta_get_all(c, [b"forever", b"short", b"long", b"huge_ttl"])
    assert set(got) == {b"forever", b"long", b"huge_ttl"}
    assert got[b"forever"][:2] == (1, -1)
    assert 100000 - 10 - 30 <= got[b"long"][1] <= 100000 - 10
    # past 30 days the exptime is sent as a unix time (the fake clock's now + TTL left,
    # which is the real now + 40 days); the TTL still comes out right
    assert 40 * 86400 - 30 <= got[b"huge_ttl"][1] <= 40 * 86400


def test_damaged_snapshots_are_refused(start_daemon, tmp_path) -> None:
    d = start_daemon("memcachepy")
    good = str(tmp_path / "good")
    write_sample(good, int(time.time()))
    data = open(good, "rb").read()
    assert tool("verify", good).returncode == 0
    cases = {
        "truncated": (data[:-30], "truncated snapshot"),
        "cut-in-trailer": (data[:-3], "truncated snapshot"),
        "flipped": (data[:60] + bytes([data[60] ^ 0x01]) + data[61:], "damaged snapshot"),
        "flipped-crc": (data[:-1] + bytes([data[-1] ^ 0x80]), "damaged snapshot (CRC-32"),
        "bad-magic": (b"XXXXSNAP" + data[8:], "not a memcachepy snapshot"),
        "version": (data[:8] + b"\x09\x00" + data[10:], "format version 9 is not supported"),
        "trailing": (data + b"x", "bytes after the trailer"),
        "empty": (b"", "truncated snapshot"),
    }
    for name, (blob, message) in cases.items():
        p = str(tmp_path / name)
        with open(p, "wb") as f:
            f.write(blob)
        r = tool("restore", p, d.server_string)
        assert r.returncode == 1, name
        assert message in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr
        v = tool("verify", p)
        assert v.returncode == 1 and message in v.stderr, name
    with AdminClient(d.server_string) as c:
        assert c.stats()["curr_items"] == "0"      # nothing written from a bad file


def test_progress_bar_and_rate(start_daemon, tmp_path, monkeypatch) -> None:
    d = start_daemon("memcachepy")
    path = str(tmp_path / "s")
    write_sample(path, int(time.time()))
    r = tool("restore", path, d.server_string, "--progress", "always", "--batch", "1")
    assert r.returncode == 0
    assert "restore [" in r.stderr and "4/4" in r.stderr and "\x1b[K" in r.stderr
    r = tool("restore", path, d.server_string)     # not a terminal: no bar
    assert "restore [" not in r.stderr and "\x1b[K" not in r.stderr
    # the limiter sleeps just enough for `rate` items per second
    slept: list[float] = []
    clock = [100.0]
    monkeypatch.setattr(snap.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(snap.time, "sleep", slept.append)
    lim = snap.RateLimit(1000)
    lim.wait(500)
    lim.wait(500)
    assert slept == [pytest.approx(0.5), pytest.approx(1.0)]
    snap.RateLimit(0).wait(10**6)
    assert len(slept) == 2


def test_failed_snapshot_leaves_no_file(tmp_path) -> None:
    path = str(tmp_path / "s")
    r = tool("snapshot", "127.0.0.1:1", path, "--timeout", "2")
    assert r.returncode == 1 and "cannot connect" in r.stderr
    assert not os.path.exists(path) and not os.path.exists(path + ".tmp")
