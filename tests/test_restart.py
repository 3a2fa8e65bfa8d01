# Warm restart (-e <memory file>, memcachepy.restart + ext/restart.pxi): after a
# graceful stop (SIGUSR1 as memcached; SIGTERM too) the next start with the same
# file and settings serves every unexpired item byte for byte, with its flags,
# CAS and a TTL that kept counting through the downtime; anything that makes the
# saved state untrustworthy (kill -9, truncated or changed files, other -m/-f/-n/
# -I/-C, a restart in the stop's second) gives a cold start with the reason in
# the log, never a crash or a wrong value.  Differential part: memcached 1.6.18
# with -e on /dev/shm, same sequence, same visible results.
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
import time
from typing import Iterator

import pytest

from memcachepy.tool import AdminClient
from support.daemons import Daemon

pytestmark = pytest.mark.timeout(180)

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture
def memdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="mcpy-restart-", dir=SHM)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def graceful_stop(d: Daemon, sig: int = signal.SIGUSR1) -> None:
    d.proc.send_signal(sig)
    assert d.proc.wait(30) == 0, d.stderr_text()
    d._stopped = True


def hard_kill(d: Daemon) -> None:
    d.proc.kill()
    d.proc.wait(10)
    d._stopped = True


def next_second() -> None:
    """memcached (and memcachepy) refuse a warm start in the stop's own second."""
    t = time.time()
    time.sleep(int(t) + 1.05 - t)


def value_for(i: int) -> bytes:
    # mixed sizes: mostly small, some medium, a few past slab_chunk_max (large class)
    if i % 5000 == 17:
        n = 600_000 + i % 1000
    elif i % 97 == 3:
        n = 20_000 + i % 3000
    else:
        n = 1 + (i * 7919) % 700
    seed = hashlib.sha256(b"%d" % i).digest()
    return (seed * (n // 32 + 1))[:n]


def flags_for(i: int) -> int:
    return (i * 2654435761) % (1 << 32) if i % 3 else 0


def text_value(i: int) -> bytes:
    return (b"v%d." % i) * (1 + i % 40)


def mg_all(c: AdminClient, keys: list[bytes]) -> dict[bytes, tuple[int, int, int, bytes]]:
    out = {}
    for i in range(0, len(keys), 400):
        c.send(b"".join(b"mg %s v f t c k\r\n" % k for k in keys[i:i + 400]) + b"mn\r\n")
        while True:
            line = c.readline()
            if line == b"MN":
                break
            if line.startswith(b"EN"):
                continue
            parts = line.split(b" ")
            assert parts[0] == b"VA", line
            f = {p[:1]: p[1:] for p in parts[2:]}
            value = c.readexact(int(parts[1]) + 2)[:-2]
            out[f[b"k"]] = (int(f[b"f"]), int(f[b"t"]), int(f[b"c"]), value)
    return out


def ms_line(i: int, ttl: int) -> bytes:
    """The quiet `ms` that stores item i (every 7th with a client-chosen CAS)."""
    k, v = b"k:%d" % i, value_for(i)
    cas = b" E%d" % (10_000_000 + i) if i % 7 == 0 else b""
    return b"ms %s %d F%d T%d%s q\r\n%s\r\n" % (k, len(v), flags_for(i), ttl, cas, v)


def fill_mixed(c: AdminClient, n: int) -> tuple[list[bytes], list[bytes]]:
    """n items; returns (keys expected to survive a >3 s stop, keys to expire: stored with an
    hour to live, cut short by expire_soon() just before the stop)."""
    keep, short = [], []
    parts = []
    for i in range(n):
        k = b"k:%d" % i
        if i % 10 == 0:
            ttl = 3600         # until expire_soon(): to expire during the downtime
            short.append(k)
        elif i % 10 == 1:
            ttl = 86400 + i
            keep.append(k)
        elif i % 10 == 2:
            ttl = 25 * 86400
            keep.append(k)
        else:
            ttl = 0
            keep.append(k)
        parts.append(ms_line(i, ttl))
        if len(parts) >= 500:
            c.send(b"".join(parts) + b"mn\r\n")
            assert c.readline() == b"MN"
            parts = []
    c.send(b"".join(parts) + b"mn\r\n")
    assert c.readline() == b"MN"
    return keep, short


def expire_soon(c: AdminClient, keys: list[bytes], ttl: int = 2) -> float:
    """Store `keys` again, unchanged but for `ttl` seconds to live from now (the time
    returned). Done right before a stop rather than at the fill: on a loaded machine,
    filling and reading 100k items took longer than a 3 s TTL, and the crawler reclaimed
    some before the stop (seen in CI). A store, not a touch: a touch would mark them
    fetched, and they must expire unfetched."""
    for i in range(0, len(keys), 500):
        c.send(b"".join(ms_line(int(k[2:]), ttl) for k in keys[i:i + 500]) + b"mn\r\n")
        assert c.readline() == b"MN"
    return time.time()


def test_warm_restart_100k_items(start_daemon, memdir) -> None:
    path = os.path.join(memdir, "mem")
    flags = ("-m", "256", "-e", path)
    d = start_daemon("memcachepy", *flags)
    assert "no metadata save file" in d.stderr_text()
    with AdminClient(d.server_string, 30) as c:
        keep, short = fill_mixed(c, 100_000)
        t_before0 = time.time()
        before = mg_all(c, keep)
        t_before1 = time.time()
        assert len(before) == len(keep)
        st_before = c.stats()
        assert c.stats("settings")["memory_file"] == path
        t_touched = expire_soon(c, short)
    graceful_stop(d)
    assert os.path.exists(path + ".meta")
    # let the short items run out while the daemon is down
    time.sleep(max(0.0, t_touched + 2.6 - time.time()))
    d2 = start_daemon("memcachepy", *flags)
    log = d2.stderr_text()
    assert "[restart] warm restart from" in log, log
    assert not os.path.exists(path + ".meta")         # read once, as memcached
    with AdminClient(d2.server_string, 30) as c:
        # the crawler reclaims the expired items (expired_unfetched); a lookup that
        # got to one first would unlink it uncounted, as memcached's does (seen:
        # 9,996 of 10,000 under load): let the crawl finish before reading them
        deadline = time.monotonic() + 20
        while int(c.stats()["expired_unfetched"]) < len(short) and time.monotonic() < deadline:
            time.sleep(0.05)
        t_after0 = time.time()
        after = mg_all(c, keep)
        t_after1 = time.time()
        assert mg_all(c, short) == {}                 # expired during the downtime
        st = c.stats()
        # a new store gets a CAS above every restored one
        c.send(b"ms fresh 1 c\r\nx\r\n")
        fresh_cas = int(c.readline().split(b" c")[1])
    assert set(after) == set(keep)
    for k in keep:
        f0, t0, c0, v0 = before[k]
        f1, t1, c1, v1 = after[k]
        assert v1 == v0 and f1 == f0 and c1 == c0, k
        if t0 == -1:
            assert t1 == -1
        else:       # the TTL kept counting through the downtime
            # t0 - t1 is the time between the two reads (whole seconds of each
            # daemon's clock, which ticks 4 times a second): all of the downtime
            assert t_after0 - t_before1 - 2 <= t0 - t1 <= t_after1 - t_before0 + 2, \
                (k, t0, t1, t_after0 - t_before1, t_after1 - t_before0)
    # (client-chosen E<cas> values do not move the counter, as in memcached)
    assert fresh_cas > max(v[2] for k, v in after.items() if int(k[2:]) % 7)
    # as memcached: items that expired meanwhile are relinked (total_items counts
    # them) and reclaimed by the first lookup or the crawler, as never fetched
    assert int(st["curr_items"]) == len(keep)
    assert int(st["total_items"]) == len(keep) + len(short)
    assert int(st["expired_unfetched"]) == len(short)
    # memcached's item size: 48-byte header, key + NUL, flags if set, value + CRLF, CAS
    assert int(st["bytes"]) == int(st_before["bytes"]) - sum(
        48 + len(k) + 1 + (4 if flags_for(int(k[2:])) else 0) + len(value_for(int(k[2:])))
        + 2 + 8 for k in short)
    assert st["cmd_set"] == "0" and st["get_hits"] == str(len(keep))   # counters start over
    # the hash tables come back at the size they had grown to (memcached's hashpower)
    assert st["hash_power_level"] == st_before["hash_power_level"]
    assert st["hash_bytes"] == st_before["hash_bytes"]
    assert f"{len(keep)} items restored (and {len(short)} that expired meanwhile" in log


def test_sigterm_also_saves_and_restart_twice(start_daemon, memdir) -> None:
    path = os.path.join(memdir, "mem")
    d = start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:
        c.send(b"set a 1 0 3\r\nabc\r\n")
        assert c.readline() == b"STORED"
    graceful_stop(d, signal.SIGTERM)
    next_second()
    d = start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:
        assert c.get_many([b"a"]) == {b"a": (1, b"abc")}
        c.send(b"set b 2 0 3\r\nxyz\r\ndelete a\r\n")
        assert c.readline() == b"STORED" and c.readline() == b"DELETED"
    graceful_stop(d)
    next_second()
    d = start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:
        assert c.get_many([b"a", b"b"]) == {b"b": (2, b"xyz")}
        assert c.stats()["curr_items"] == "1"


def _cold(d: Daemon, reason: str) -> None:
    log = d.stderr_text()
    assert reason in log, log
    assert "starting with a clean cache" in log
    assert "warm restart from" not in log
    with AdminClient(d.server_string) as c:
        assert c.stats()["curr_items"] == "0"
        c.send(b"set z 0 0 1\r\nz\r\nget z\r\n")
        assert c.readline() == b"STORED"
        assert c.readline() == b"VALUE z 0 1"


def _filled_and_stopped(start_daemon, path: str, *flags: str) -> None:
    d = start_daemon("memcachepy", "-e", path, *flags)
    with AdminClient(d.server_string) as c:
        c.send(b"".join(b"set key%d %d 0 %d noreply\r\n%s\r\n" % (i, i, len(value_for(i)),
                                                                  value_for(i))
                        for i in range(3000)))
        c.version()
    graceful_stop(d)
    next_second()


def test_kill_9_starts_cold(start_daemon, memdir) -> None:
    path = os.path.join(memdir, "mem")
    _filled_and_stopped(start_daemon, path)
    d = start_daemon("memcachepy", "-e", path)     # warm: the .meta is consumed
    assert "warm restart from" in d.stderr_text()
    hard_kill(d)
    next_second()
    _cold(start_daemon("memcachepy", "-e", path), "no metadata save file")


@pytest.mark.parametrize("change,reason", [
    (("-m", "128"), "setting for [maxbytes]"),
    (("-f", "1.5"), "setting for [slab_config]"),
    (("-n", "64"), "setting for [chunk_size]"),
    (("-I", "2m"), "setting for [item_size_max]"),
    (("-C",), "setting for [use_cas]"),
    (("-o", "slab_chunk_max=256"), "setting for [slab_chunk_size_max]"),
])
def test_changed_settings_start_cold(start_daemon, memdir, change, reason) -> None:
    path = os.path.join(memdir, "mem")
    _filled_and_stopped(start_daemon, path)
    _cold(start_daemon("memcachepy", "-e", path, *change), reason)


def _rewrite_meta(path: str, edit) -> None:
    import zlib
    data = open(path + ".meta", "rb").read()
    body = edit(data[:data.rfind(b"crc32 ")])
    open(path + ".meta", "wb").write(body + b"crc32 %08x\n" % zlib.crc32(body))


@pytest.mark.parametrize("damage,reason", [
    ("flip-meta", "metadata checksum mismatch"),
    ("truncate-meta", "no checksum line"),
    ("truncate-memory", "expected (truncated or replaced)"),
    ("flip-memory", "fails its CRC"),
    ("same-second", "clock did not advance"),
    ("bad-page-table", "page table entry out of range"),
    ("repeated-page", "page table entry out of range or repeated"),
    ("no-such-class", "bad page table entry"),
    ("old-layout", "setting for [item_layout]"),
])
def test_damaged_state_starts_cold(start_daemon, memdir, damage, reason) -> None:
    path = os.path.join(memdir, "mem")
    _filled_and_stopped(start_daemon, path)
    meta = path + ".meta"
    if damage == "flip-meta":
        data = bytearray(open(meta, "rb").read())
        i = data.index(b"current_cas ") + 12
        data[i] = ord("9") if data[i] != ord("9") else ord("8")
        open(meta, "wb").write(bytes(data))
    elif damage == "truncate-meta":
        data = open(meta, "rb").read()
        open(meta, "wb").write(data[: len(data) // 2])
    elif damage == "truncate-memory":
        os.truncate(path, os.path.getsize(path) - 4096)
    elif damage == "flip-memory":
        with open(path, "r+b") as f:
            f.seek(1000)          # inside the first page, an item's bytes
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 0x20]))
    elif damage == "same-second":
        _rewrite_meta(path, lambda b: b.replace(
            b"stop_time ", b"stop_time %d\nignored " % (int(time.time()) + 60), 1))
    elif damage == "bad-page-table":
        _rewrite_meta(path, lambda b: b.replace(b"\npage 0 ", b"\npage 99999999 ", 1))
    elif damage == "repeated-page":
        _rewrite_meta(path, lambda b: b.replace(b"\npages ", b"\n" + [
            ln for ln in b.split(b"\n") if ln.startswith(b"page ")][0] + b"\npages ", 1)
            .replace(b"\npages %d" % sum(1 for ln in b.split(b"\n") if ln.startswith(b"page ")),
                     b"\npages %d" % (1 + sum(1 for ln in b.split(b"\n")
                                              if ln.startswith(b"page ")))))
    elif damage == "no-such-class":
        # a class this -f/-n/-I never makes: only the core's own check sees it
        _rewrite_meta(path, lambda b: b.replace(b"\npage 0 1 ", b"\npage 0 60 ", 1))
    elif damage == "old-layout":
        _rewrite_meta(path, lambda b: b.replace(b"item_layout 2/", b"item_layout 1/", 1))
    _cold(start_daemon("memcachepy", "-e", path), reason)


def test_second_daemon_on_the_same_file_is_refused(start_daemon, memdir) -> None:
    path = os.path.join(memdir, "mem")
    d = start_daemon("memcachepy", "-e", path)
    with pytest.raises(Exception, match="failed to start: cannot open memory file .*: "
                                        "in use by another process"):
        start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:        # the first one is unharmed
        c.send(b"set a 0 0 1\r\na\r\n")
        assert c.readline() == b"STORED"


def test_damaged_item_headers_are_dropped_not_served(start_daemon, memdir) -> None:
    """Headers that no longer add up (class, key length, size, CRLF) are skipped even when
    the page checksums were made over them: the rebuild validates every chunk."""
    import zlib
    path = os.path.join(memdir, "mem")
    d = start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:
        c.send(b"".join(b"set key%d 0 0 10 noreply\r\n0123456789\r\n" % i for i in range(50)))
        c.version()
    graceful_stop(d)
    # corrupt chunks 0..3 of the first page and re-sign the page so only the
    # header checks stand between the bytes and a client
    meta = open(path + ".meta", "rb").read().decode()
    line = next(ln for ln in meta.splitlines() if ln.startswith("page "))
    _, slot, cls, length, _crc = line.split(" ")
    slot_size = int(next(ln for ln in meta.splitlines() if ln.startswith("slot_size ")).split()[1])
    off = int(slot) * slot_size
    with open(path, "r+b") as f:
        f.seek(off)
        page = bytearray(f.read(int(length)))
        chunk = 96        # class 1's chunk size with the default -n/-f
        # item_t: 3 pointers, cas, hv, time, exptime, nbytes@44, flags@48,
        # it_flags@52, slabs_clsid@54, nkey@55; key at 56, then the value
        page[0 * chunk + 55] = 200              # nkey of chunk 0: absurd
        page[1 * chunk + 54] = 7                # class of chunk 1: wrong
        page[2 * chunk + 44:2 * chunk + 48] = (10 ** 6).to_bytes(4, "little")  # nbytes: too big
        page[3 * chunk + 56 + 4 + 10] = ord("X")    # CRLF of chunk 3's value ("key3") broken
        f.seek(off)
        f.write(page)
    new_crc = zlib.crc32(bytes(page))
    _rewrite_meta(path, lambda b: b.replace(line.encode(),
                                            f"page {slot} {cls} {length} {new_crc:08x}".encode()))
    next_second()
    d = start_daemon("memcachepy", "-e", path)
    log = d.stderr_text()
    assert "46 items restored" in log and "4 invalid" in log, log
    with AdminClient(d.server_string) as c:
        got = c.get_many([b"key%d" % i for i in range(50)])
        assert len(got) == 46 and all(v == (0, b"0123456789") for v in got.values())
        assert c.stats()["curr_items"] == "46"


def test_flush_all_before_stop_is_kept(start_daemon, memdir) -> None:
    path = os.path.join(memdir, "mem")
    d = start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:
        c.send(b"set old 0 0 1\r\no\r\nflush_all\r\nset new 0 0 1\r\nn\r\nset later 0 0 1\r\nl\r\n")
        assert [c.readline() for _ in range(4)] == [b"STORED", b"OK", b"STORED", b"STORED"]
    graceful_stop(d)
    next_second()
    d = start_daemon("memcachepy", "-e", path)
    with AdminClient(d.server_string) as c:
        # the flush killed "old" (same second as "new": told apart by CAS, as memcached)
        assert c.get_many([b"old", b"new", b"later"]) == {b"new": (0, b"n"), b"later": (0, b"l")}


# ---------------------------------------------------------------- differential

def _normalise(lines: list[bytes]) -> list[bytes]:
    out = []
    for ln in lines:
        parts = ln.split(b" ")
        out.append(b" ".join(p for p in parts if not p.startswith(b"c")
                             or not p[1:].isdigit()))
    return out


def _transcript(d: Daemon, commands: bytes, n_lines: int) -> list[bytes]:
    with AdminClient(d.server_string) as c:
        c.send(commands)
        return [c.readline() for _ in range(n_lines)]


@pytest.mark.skipif(SHM is None, reason="needs /dev/shm")
def test_differential_with_memcached(start_daemon, memdir) -> None:
    results = {}
    for kind in ("memcached", "memcachepy"):
        path = os.path.join(memdir, kind)
        d = start_daemon(kind, "-m", "64", "-e", path)
        setup = b"".join(b"set k%d %d %d %d\r\n%s\r\n" % (
            i, i % 5, 0 if i % 3 else 1000, len(text_value(i)), text_value(i)) for i in range(300))
        setup += b"ms m1 3 F9 T500\r\nabc\r\n"
        _transcript(d, setup, 301)
        t0 = time.time()
        before = _transcript(d, b"mg k3 v f t\r\nmg m1 v f t\r\n", 4)
        # stored last, just before the stop: on a loaded machine a 2 s item stored with the
        # setup once expired and was reclaimed before one daemon's stop, not the other's
        _transcript(d, b"set gone 0 2 1\r\nx\r\n", 1)
        graceful_stop(d)
        time.sleep(3.2)          # "gone" expires while the daemon is down
        d = start_daemon(kind, "-m", "64", "-e", path)
        cmds = (b"mg k3 v f t\r\nmg m1 v f t\r\nmg k2 v f\r\nmg gone v\r\nget k4 k5\r\n"
                b"mn\r\n")
        lines = _transcript(d, cmds, 13)
        with AdminClient(d.server_string) as c:
            st = c.stats()
            items = c.per_class("items")[0]
            settings = c.stats("settings")
        results[kind] = (before, lines, st, items, settings, time.time() - t0)
        graceful_stop(d)
    mc, mp = results["memcached"], results["memcachepy"]
    assert _normalise(mp[1])[4:] == _normalise(mc[1])[4:]
    assert (mp[1][1], mp[1][3]) == (mc[1][1], mc[1][3])
    for kind, r in results.items():
        for i in (0, 2):
            a, b = r[0][i].split(b" "), r[1][i].split(b" ")
            assert a[:3] == b[:3], kind
            # both counted the downtime (the 3.2 s slept between stop and start, read
            # on clocks of whole seconds that may lag the wall clock by up to one:
            # at least 2; seen once at 2 under ASan and load)
            assert 2 <= int(a[3][1:]) - int(b[3][1:]) <= r[5] + 2, (kind, a, b, r[5])
    for i in (0, 2):
        assert mp[1][i].split(b" ")[:3] == mc[1][i].split(b" ")[:3]
    for name in ("curr_items", "total_items", "bytes", "cmd_get", "get_hits", "get_misses",
                 "cmd_set"):
        assert mp[2][name] == mc[2][name], name
    # "gone" is counted once either way: expired_unfetched when the LRU maintainer or the
    # crawler reclaims it first (seen once, memcachepy under ASan: 1 against 0), get_expired
    # when `mg gone` meets it first
    counted = ("expired_unfetched", "get_expired")
    assert sum(int(mp[2][n]) for n in counted) == sum(int(mc[2][n]) for n in counted) == 1
    assert mp[4]["memory_file"].endswith("memcachepy") and mc[4]["memory_file"].endswith("memcached")
    for cls, fields in mc[3].items():
        # (the split over HOT/WARM/COLD follows each maintainer's timing; the
        # per-class counts do not)
        assert mp[3][cls]["number"] == fields["number"], cls


def test_pages_moved_between_classes_restart_warm(start_daemon, memdir) -> None:
    """A page the mover hands to another class, and a slot given back and reused, hold
    no stale headers of their old class: the warm start finds exactly the live items."""
    path = os.path.join(memdir, "mem")
    flags = ("-m", "16", "-o", "slab_automove=0", "-e", path)
    d = start_daemon("memcachepy", *flags)
    with AdminClient(d.server_string) as c:
        c.send(b"".join(b"set a%d 0 0 900 noreply\r\n%s\r\n" % (i, b"v" * 900)
                        for i in range(3000)))
        c.version()
        src = max((int(k.split(":")[0]) for k, v in c.stats("slabs").items()
                   if k.endswith(":total_pages") and int(v) >= 3), default=0)
        assert src
        for dst in (1, 0):
            moved = int(c.stats()["slabs_moved"])
            c.send(b"slabs reassign %d %d\r\n" % (src, dst))
            assert c.readline() == b"OK"
            deadline = time.monotonic() + 20
            while int(c.stats()["slabs_moved"]) == moved and time.monotonic() < deadline:
                time.sleep(0.05)
            assert int(c.stats()["slabs_moved"]) == moved + 1
        # small items into the page class 1 got; big ones into the slot given back
        c.send(b"".join(b"set b%d 0 0 5 noreply\r\nsmall\r\n" % i for i in range(5000)))
        c.send(b"".join(b"set a%d 0 0 900 noreply\r\n%s\r\n" % (i, b"w" * 900)
                        for i in range(3000, 4000)))
        c.version()
        keys = [b"a%d" % i for i in range(4000)] + [b"b%d" % i for i in range(5000)]
        before = {}
        for i in range(0, len(keys), 200):
            before.update(c.get_many(keys[i:i + 200]))
        items_before = c.stats()["curr_items"]
    assert len(before) == int(items_before)
    graceful_stop(d)
    next_second()
    d = start_daemon("memcachepy", *flags)
    assert "warm restart from" in d.stderr_text()
    assert "0 invalid, 0 duplicate" in d.stderr_text()
    with AdminClient(d.server_string) as c:
        after = {}
        for i in range(0, len(keys), 200):
            after.update(c.get_many(keys[i:i + 200]))
        assert c.stats()["curr_items"] == items_before
    assert after == before
