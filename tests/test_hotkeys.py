# Hot-key detection (ext/hotkeys.pxi): `-o hotkeys_sample=N`, `stats hotkeys`,
# `watch hotkeys`, the metrics export and `memcachepy-tool top --keys`.
#
#  * sampling every request (N=1), the summary's bounds hold against exact
#    counts from the load generator: est - err <= true <= est for every key;
#  * at the default rate, the top 10 of a Zipf load are found (recall >= 0.9);
#  * off (N=0): no entries, no samples, no watch lines;
#  * per-kind counts (text and meta commands, multigets, binary keys) exact;
#  * the summary's index and heap stay consistent under churn (more keys than
#    counters) and under concurrent clients, readers and resets.
# memcached has no such command: these are memcachepy's own behaviour, checked
# against exact counts instead of against memcached.
from __future__ import annotations

import base64
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import pytest
from pymemcache.client.base import Client

from memcachepy import metrics
from memcachepy.options import SUB
from memcachepy.tool import AdminClient, HotKeys, ToolError
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, REPO_ROOT, run_cli
from support.rawclient import Conn

from conftest import require_memcached

pytestmark = pytest.mark.timeout(180)


def req(c: Conn, data: bytes) -> bytes:
    """The reply to `data` alone (Conn.request appends a `version` sentinel)."""
    out = c.request(data)
    body, sep, _ = out.rpartition(b"VERSION ")
    assert sep, out
    return body


def watch(d) -> Conn:
    w = Conn(d.addr)
    w.send(b"watch hotkeys\r\n")
    w.sock.settimeout(5)
    assert w.sock.recv(4) == b"OK\r\n"
    return w


def hot(d, top: int = 10) -> HotKeys:
    with AdminClient(f"127.0.0.1:{d.port}") as c:
        return c.hotkeys(top)


def bench(port: int, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "memcachepy.bench", "-p", str(port), "--json",
                          *args], cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


ZIPF = ("-c", "16", "-d", "16", "-k", "10000", "-V", "16", "-r", "10:1",
        "--key-pattern", "zipf", "--key-counts", "40")


def test_every_request_sampled_bounds_hold_against_exact_counts(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "2", "-o", "hotkeys_sample=1")
    r = bench(d.port, *ZIPF, "-n", "300000")
    true = dict(r["key_counts"])
    hk = hot(d, 10)
    assert hk.sample == 1
    assert hk.sampled == 300000                     # one sample per key request
    labels = [h.label for h in hk.keys]
    assert set(labels) == {k for k, _ in r["key_counts"][:10]}
    for h in hk.keys:
        assert h.est - h.err <= true[h.label] <= h.est, (h, true[h.label])
        assert h.get + h.set + h.other <= h.est and h.hit <= h.get
        if h.err == 0:
            assert h.get + h.set == h.est
    sets = sum(h.set for h in hk.keys)
    assert 0.05 < sets / sum(h.est for h in hk.keys) < 0.15    # the 10:1 mix


def test_zipf_top10_recall_at_the_default_rate(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "2")
    n = 4_000_000
    r = bench(d.port, *ZIPF, "-n", str(n))
    hk = hot(d, 10)
    HOTKEYS_SAMPLE_DEFAULT = int(SUB["hotkeys_sample"].default)
    assert hk.sample == HOTKEYS_SAMPLE_DEFAULT
    # each worker samples every N-th of its own key requests
    assert n // HOTKEYS_SAMPLE_DEFAULT - 2 <= hk.sampled <= n // HOTKEYS_SAMPLE_DEFAULT
    true_top = [k for k, _ in r["key_counts"][:10]]
    recall = len(set(true_top) & {h.label for h in hk.keys}) / 10
    assert recall >= 0.9, (true_top, [h.label for h in hk.keys])
    # the hottest key's estimate is within sampling noise of the truth
    first = dict(r["key_counts"])[hk.keys[0].label]
    assert abs(hk.keys[0].est - first) < 0.1 * first


def test_off_means_no_samples_and_no_output(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=0")
    with watch(d) as w:
        c = Client(d.addr, default_noreply=False)
        for i in range(500):
            c.set(f"k{i % 5}", b"v")
            c.get(f"k{i % 5}")
        with Conn(d.addr) as c2:
            reply = req(c2, b"stats hotkeys 100\r\n")
        assert re.fullmatch(rb"STAT hotkeys_sample 0\r\nSTAT hotkeys_window \d+\r\n"
                            rb"STAT hotkeys_sampled 0\r\nEND\r\n", reply), reply
        w.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            print(w.sock.recv(4096))


def test_kinds_hits_multigets_and_meta_counted_exactly(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-o", "hotkeys_sample=1")
    with Conn(d.addr) as c:
        for cmd in (b"set a 0 0 1\r\n1\r\n", b"get a\r\n", b"get a nope a\r\n", b"gets a\r\n",
                    b"gat 0 a\r\n", b"touch a 0\r\n", b"incr n 1\r\n", b"add a 0 0 1\r\n2\r\n",
                    b"append a 0 0 1\r\n2\r\n", b"delete a\r\n", b"get a\r\n",
                    b"mg b v\r\n", b"ms b 1\r\nx\r\n", b"mg b v\r\n", b"md b\r\n",
                    b"ma c\r\n", b"mn\r\n", b"set " + b"k" * 250 + b" 0 0 1\r\nx\r\n"):
            c.request(cmd)
    got = {h.label: (h.est, h.err, h.get, h.hit, h.set, h.other) for h in hot(d, 100).keys}
    assert got == {
        # get a, get a (x2 in one multiget), gets, gat, get (miss after delete) = 6 gets, 5 hits;
        # set, add, append = 3 sets; touch, delete = 2 others
        "a": (11, 0, 6, 5, 3, 2),
        "nope": (1, 0, 1, 0, 0, 0),
        "n": (1, 0, 0, 0, 0, 1),
        "b": (4, 0, 2, 1, 1, 1),
        "c": (1, 0, 0, 0, 0, 1),
        "k" * 250: (1, 0, 0, 0, 1, 0),
    }, got
    # most requested first
    assert [h.label for h in hot(d, 2).keys] == ["a", "b"]


def test_binary_keys_are_listed_in_base64(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-o", "hotkeys_sample=1")
    key = b"\x00 bin\xffkey\r\n"
    b64 = base64.b64encode(key)
    with Conn(d.addr) as c:
        assert c.request(b"ms " + b64 + b" 2 b\r\nhi\r\n").startswith(b"HD")
        assert c.request(b"mg " + b64 + b" b v\r\n").startswith(b"VA 2")
        raw = req(c, b"stats hotkeys\r\n")
    assert b"HOTKEY " + b64 + b" est 2 err 0 " in raw and raw.rstrip().split(b"\r\n")[-2].endswith(b" b")
    (h,) = hot(d).keys
    assert h.key == key and h.label == "b64:" + b64.decode()


def test_churn_keeps_the_summary_consistent(start_daemon) -> None:
    # Far more distinct keys than counters: every sample of a new key evicts the
    # smallest counter. One worker, one connection: the stream is exactly known.
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-o", "hotkeys_sample=1")
    rnd = random.Random(7)
    keys = [f"hot{i}" for i in range(5)] * 40 + [f"cold{rnd.randrange(3000)}" for _ in range(4000)]
    rnd.shuffle(keys)
    true = Counter(keys)
    with Conn(d.addr) as c:
        for i in range(0, len(keys), 50):
            c.request(("get " + " ".join(keys[i:i + 50]) + "\r\n").encode())
    hk = hot(d, 1000)
    assert hk.sampled == len(keys)
    assert len(hk.keys) == 128 and len({h.key for h in hk.keys}) == 128
    assert sum(h.est for h in hk.keys) == len(keys)       # Space-Saving keeps the total
    for h in hk.keys:
        assert h.est - h.err <= true[h.label] <= h.est, h
    assert {h.label for h in hk.keys[:5]} == {f"hot{i}" for i in range(5)}


def test_concurrent_clients_readers_and_resets(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-t", "4", "-o", "hotkeys_sample=1")
    per_thread, nthreads = 1500, 6
    stop = threading.Event()
    errors: list[BaseException] = []

    def client(t: int) -> None:
        try:
            c = Client(d.addr, default_noreply=False)
            for i in range(per_thread):
                c.set("shared", b"x") if i % 10 == 0 else c.get("shared")
                c.get(f"t{t}:{i % 300}")
        except BaseException as e:       # noqa: BLE001
            errors.append(e)

    def reader() -> None:
        try:
            with AdminClient(f"127.0.0.1:{d.port}") as a:
                while not stop.is_set():
                    a.hotkeys(200)
        except BaseException as e:       # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    with AdminClient(f"127.0.0.1:{d.port}") as a:     # resets race the samplers too
        a.send(b"stats hotkeys reset\r\n")
        assert a.readline() == b"RESET"
    clients = [threading.Thread(target=client, args=(t,)) for t in range(nthreads)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    stop.set()
    for r in readers:
        r.join()
    assert not errors, errors
    hk = hot(d, 5)
    assert hk.sampled == 2 * per_thread * nthreads
    assert hk.keys[0].label == "shared"
    assert hk.keys[0].est == per_thread * nthreads and hk.keys[0].err == 0
    assert hk.keys[0].set == per_thread * nthreads // 10
    with AdminClient(f"127.0.0.1:{d.port}") as a:
        a.send(b"stats hotkeys reset\r\n")
        assert a.readline() == b"RESET"
    assert hot(d).sampled == 0 and hot(d).keys == []


def test_watch_hotkeys_streams_the_samples(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=2")
    with watch(d) as w:
        c = Client(d.addr, default_noreply=False)
        for _ in range(10):
            c.get("wk")
        buf = b""
        deadline = time.monotonic() + 10
        while buf.count(b"\n") < 5 and time.monotonic() < deadline:
            w.sock.settimeout(1)
            try:
                buf += w.sock.recv(65536)
            except socket.timeout:
                pass
    lines = buf.decode().splitlines()
    assert len(lines) == 5, lines                 # 10 gets, one in 2 sampled
    assert all(re.match(r"ts=\S+ gid=\d+ type=hotkey key=wk op=get hit=no sample=2$", ln)
               for ln in lines), lines


def test_stats_hotkeys_arguments(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=1")
    with Conn(d.addr) as c:
        c.request(b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n1\r\nget b\r\n")
        assert req(c, b"stats hotkeys 1\r\n").count(b"HOTKEY ") == 1
        assert req(c, b"stats hotkeys 0\r\n").count(b"HOTKEY ") == 0
        for bad in (b"stats hotkeys x\r\n", b"stats hotkeys 1 2\r\n", b"stats hotkeys -1\r\n"):
            assert req(c, bad) == b"CLIENT_ERROR bad command line format\r\n", bad
        assert req(c, b"stats hotkeys reset\r\n") == b"RESET\r\n"


def test_sample_option_errors() -> None:
    for value, msg in (("hotkeys_sample", "Missing hotkeys_sample argument"),
                       ("hotkeys_sample=x", "hotkeys_sample takes a numeric 32bit value")):
        r = run_cli(KIND_MEMCACHEPY, ["-o", value])
        assert r.returncode == 1 and msg in r.stderr.decode(), r.stderr


def test_metrics_export_top_n_plain_and_hashed(start_daemon) -> None:
    import hashlib
    d = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=1")
    c = Client(d.addr, default_noreply=False)
    for i in range(1, 6):
        for _ in range(i * 10):
            c.get(f"m{i}")
    snap = metrics.scrape("127.0.0.1", d.port, hotkeys_top=3)
    text = metrics.render(metrics.collect(snap))
    assert re.findall(r'^memcachepy_hotkey_requests\{key="(m\d)"\} (\d+)$', text, re.M) == [
        ("m5", "50"), ("m4", "40"), ("m3", "30")]
    assert 'memcachepy_hotkey_requests_by_op{key="m5",op="get"} 50' in text
    assert "memcachepy_hotkeys_sample 1" in text
    hashed = metrics.render(metrics.collect(snap, hotkeys_hash=True))
    want = "sha256:" + hashlib.sha256(b"m5").hexdigest()[:16]
    assert f'memcachepy_hotkey_requests{{key="{want}"}} 50' in hashed and '"m5"' not in hashed
    # through the HTTP endpoint, as the daemon's --metrics-listen runs it
    h = metrics.start_exporter("127.0.0.1", 0, "127.0.0.1", d.port, hotkeys_top=2)
    try:
        body = urllib.request.urlopen(h.url, timeout=10).read().decode()
    finally:
        h.stop()
    assert len(re.findall(r"^memcachepy_hotkey_requests\{", body, re.M)) == 2


def test_metrics_and_tool_against_memcached(start_daemon) -> None:
    require_memcached()
    d = start_daemon(KIND_MEMCACHED)
    snap = metrics.scrape("127.0.0.1", d.port, hotkeys_top=10)
    assert snap.hotkeys is None
    text = metrics.render(metrics.collect(snap))
    assert "memcached_up 1" in text and "memcachepy_hotkey" not in text
    with pytest.raises(ToolError, match="no hot-key sampling"):
        hot(d)


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memcachepy.tool", *args], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=60)


def test_tool_top_keys_live_and_merged(start_daemon) -> None:
    a = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=1")
    b = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=1")
    stop = threading.Event()

    def load(port: int, key: str) -> None:
        c = Client(("127.0.0.1", port), default_noreply=False)
        while not stop.is_set():
            c.get(key)
            c.get("both")

    threads = [threading.Thread(target=load, args=(a.port, "only-a")),
               threading.Thread(target=load, args=(b.port, "only-b"))]
    for t in threads:
        t.start()
    try:
        one = _tool(f"127.0.0.1:{a.port}", "top", "--keys", "-n", "1", "--interval", "0.5",
                    "--json")
        both = _tool(f"127.0.0.1:{a.port},127.0.0.1:{b.port}", "top", "--keys", "-n", "1",
                     "--interval", "0.5", "--json", "--top", "3")
        text = _tool(f"127.0.0.1:{a.port}", "top", "--keys", "-n", "1", "--interval", "0.3")
    finally:
        stop.set()
        for t in threads:
            t.join()
    r1 = json.loads(one.stdout)
    assert {k["key"] for k in r1["keys"]} == {"only-a", "both"}
    assert all(k["per_s"] > 0 and k["get_per_s"] > 0 for k in r1["keys"])
    assert 0.3 < r1["keys"][0]["share"] <= 1.0
    r2 = json.loads(both.stdout)
    assert r2["nodes"] == 2 and r2["keys"][0]["key"] == "both"   # summed over both nodes
    assert {k["key"] for k in r2["keys"]} == {"both", "only-a", "only-b"}
    assert "sampling 1/1" in text.stdout and re.search(r"^\s+1\s.*\s(only-a|both)( ~)?$", text.stdout, re.M)


def test_loadgen_zipf_and_exact_counts(start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=0")
    r = bench(d.port, "-c", "4", "-d", "4", "-k", "1000", "-r", "1:0", "--key-pattern", "zipf",
              "--zipf-s", "1.0", "--key-counts", "1000", "-n", "100000")
    counts = dict(r["key_counts"])
    assert sum(counts.values()) == 100000
    harmonic = sum(1 / k for k in range(1, 1001))
    assert abs(counts["key:0"] - 100000 / harmonic) < 0.05 * 100000 / harmonic
    assert counts["key:0"] > counts["key:1"] > counts["key:9"]


def test_tool_top_keys_cluster_endpoint(start_daemon, tmp_path) -> None:
    b = start_daemon(KIND_MEMCACHEPY, "-o", "hotkeys_sample=1")
    nodes = tmp_path / "nodes"
    nodes.write_text(f"localhost|127.0.0.1|{b.port}\n")
    a = start_daemon(KIND_MEMCACHEPY, "-o", f"hotkeys_sample=1,cluster_file={nodes}")
    # the endpoint names itself and b
    nodes.write_text(f"localhost|127.0.0.1|{a.port}\nlocalhost|127.0.0.1|{b.port}\n")
    a.proc.send_signal(1)                          # SIGHUP re-reads the file
    deadline = time.monotonic() + 10
    while b"%d" % a.port not in Conn(a.addr).request(b"config get cluster\r\n") \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    for d, key in ((a, "on-a"), (b, "on-b")):
        Client(d.addr, default_noreply=False).get(key)
    r = _tool(f"127.0.0.1:{a.port}", "top", "--keys", "--cluster", "-n", "1", "--interval", "0.2",
              "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["nodes"] == 2 and {k["key"] for k in out["keys"]} == {"on-a", "on-b"}
    bad = _tool(f"127.0.0.1:{b.port}", "top", "--keys", "--cluster", "-n", "1")
    assert bad.returncode == 1 and "cluster discovery failed" in bad.stderr
