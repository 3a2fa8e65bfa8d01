# Correctness tests for the compiled load generator (memcachepy._loadgen, bench/_loadgen.pyx)
# and its console entry (memcachepy/bench.py).
#
# A benchmark that miscounts is worse than none, so these check what the load generator
# *reports* against what the server *saw*: request counts against `stats` deltas of real
# memcached (cmd_get counts keys, cmd_set counts sets, get_hits counts hits), the hit ratio
# after a prefill, a fixed rate being honoured, and sane latency percentiles. No timing
# enters pass/fail beyond sanity bounds. When memcachepy._core is built, the counting test
# also runs against memcachepy. The whole file runs in well under a minute.
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.daemons import (
    KIND_MEMCACHED, KIND_MEMCACHEPY, MEMCACHED_BIN as MEMCACHED, REPO_ROOT, Daemon,
)

pytestmark = pytest.mark.timeout(60)


# a missing build must fail loudly, not skip: `pip install -e .` builds bench/_loadgen.pyx
from memcachepy import _loadgen as lg


@pytest.fixture
def memcached(start_daemon) -> Daemon:
    return start_daemon(KIND_MEMCACHED, "-t", "1", "-m", "64")


@pytest.fixture(params=[KIND_MEMCACHED, KIND_MEMCACHEPY])
def any_server(request: pytest.FixtureRequest, start_daemon) -> Daemon:
    return start_daemon(request.param, "-t", "1", "-m", "64")


def stats(d: Daemon) -> dict[str, int]:
    return {k: int(v) for k, v in d.stats().items() if v.isdigit()}


def test_counts_match_server_stats(any_server: Daemon) -> None:
    before = stats(any_server)
    r = lg.run(port=any_server.port, connections=7, threads=2, depth=4, keyspace=3000,
               value_size=100, get_ratio=3, set_ratio=1, multiget=3, requests=12001,
               prefill=True)
    after = stats(any_server)
    t = r["totals"]
    # request-count mode measures every request and issues exactly the number asked for
    assert r["requests"] == 12001 == t["gets"] + t["sets"]
    assert r["gets"] == t["gets"] and r["sets"] == t["sets"]
    assert t["get_keys"] == 3 * t["gets"]
    assert t["prefill_sets"] == 3000
    assert t["errors"] == 0 and t["not_stored"] == 0
    assert t["bad_values"] == 0          # every hit came back with the bytes we stored
    # a fixed 3:1 cycle per thread keeps the mix within one cycle per thread of exact
    assert abs(t["gets"] - 3 * t["sets"]) <= 2 * 4
    assert after["cmd_get"] - before["cmd_get"] == t["get_keys"]
    assert after["cmd_set"] - before["cmd_set"] == t["sets"] + t["prefill_sets"]
    assert after["get_hits"] - before["get_hits"] == t["hits"]
    assert after["get_misses"] - before["get_misses"] == t["get_keys"] - t["hits"]


def test_hit_ratio_after_prefill_is_one(memcached: Daemon) -> None:
    r = lg.run(port=memcached.port, connections=4, depth=8, keyspace=5000, value_size=64,
               get_ratio=1, set_ratio=0, requests=20000, prefill=True)
    assert r["hit_ratio"] == 1.0
    assert r["hits"] == r["get_keys"] == 20000
    assert stats(memcached)["curr_items"] == 5000


def test_hit_ratio_without_prefill_is_zero(memcached: Daemon) -> None:
    r = lg.run(port=memcached.port, connections=4, keyspace=1000, get_ratio=1, set_ratio=0,
               multiget=5, requests=2000, key_prefix="never-stored:")
    assert r["hit_ratio"] == 0.0
    assert r["misses"] == r["get_keys"] == 10000


def test_set_on_miss_stores_each_missed_key(memcached: Daemon) -> None:
    # every key misses once, is then set, and hits from then on: with 1,000 keys and
    # 20,000 gets, exactly 1,000 misses and 1,000 sets (one conn, one request in flight:
    # the set lands before the next get; with more, two gets of a key can both miss)
    before = stats(memcached)
    r = lg.run(port=memcached.port, connections=1, depth=1, keyspace=1000, get_ratio=1,
               set_ratio=0, requests=20000, set_on_miss=True, key_prefix="som:")
    after = stats(memcached)
    t = r["totals"]
    assert t["gets"] == 20000 and t["errors"] == 0 and t["not_stored"] == 0
    assert t["sets"] == t["get_keys"] - t["hits"] == 1000
    assert after["cmd_set"] - before["cmd_set"] == 1000
    assert after["curr_items"] == 1000
    assert t["bad_values"] == 0


def test_scans_ask_for_fresh_keys(memcached: Daemon) -> None:
    # of every 100 requests the first 10 are gets of keys never asked for: with set on miss
    # each is stored once and never hit, so misses = key space + scan keys
    r = lg.run(port=memcached.port, connections=1, depth=1, keyspace=200, get_ratio=1,
               set_ratio=0, requests=10000, set_on_miss=True, scan_every=100, scan_length=10,
               key_prefix="scan:")
    t = r["totals"]
    assert t["gets"] == 10000
    misses = t["get_keys"] - t["hits"]
    assert misses == t["sets"] == 1000 + 200
    assert stats(memcached)["curr_items"] == 1200


def test_sequential_keys_visit_whole_key_space(memcached: Daemon) -> None:
    lg.run(port=memcached.port, connections=1, keyspace=500, get_ratio=0, set_ratio=1,
           requests=500, key_pattern="sequential", key_prefix="seq:")
    assert stats(memcached)["curr_items"] == 500


def test_large_values_split_across_reads(memcached: Daemon) -> None:
    # 300 KB values never fit one recv, so the reply parser must skip data across reads
    r = lg.run(port=memcached.port, connections=3, depth=3, keyspace=20, value_size=300_000,
               get_ratio=2, set_ratio=1, multiget=2, requests=300, prefill=True)
    assert r["errors"] == 0
    assert r["hit_ratio"] == 1.0
    assert r["totals"]["sets"] == 100
    assert r["totals"]["bad_values"] == 0


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_fixed_rate_is_honoured(memcached: Daemon, lazy: bool) -> None:
    r = lg.run(port=memcached.port, connections=10, keyspace=1000, rate=4000.0, duration=1.5,
               warmup=0.3, prefill=True, server_pid=memcached.pid, lazy=lazy)
    assert r["elapsed_s"] == pytest.approx(1.5)
    # 4000/s is a few percent of what memcached serves here, so it must be met closely
    assert r["rps"] == pytest.approx(4000, rel=0.08)
    assert r["errors"] == 0
    cpu = r["server_cpu"]
    assert cpu is not None and cpu["us_per_request"] > 0
    assert 0 < cpu["utilisation"] < 0.9
    # replies are timed by kernel receive stamps (lazy) or on wake-up (eager): either way a
    # loopback round trip is positive and far below the 100 ms a broken clock mapping gives
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] < 100_000


def test_fixed_rate_with_request_count(memcached: Daemon) -> None:
    start = time.monotonic()
    r = lg.run(port=memcached.port, connections=5, keyspace=100, rate=2000.0, requests=1000)
    took = time.monotonic() - start
    assert r["requests"] == 1000
    assert 0.45 < took < 3.0           # 1000 requests at 2000/s is half a second
    assert r["elapsed_s"] == pytest.approx(0.5, rel=0.2)


def test_latency_percentiles_ordered(memcached: Daemon) -> None:
    r = lg.run(port=memcached.port, connections=20, depth=2, keyspace=2000, duration=1.0,
               warmup=0.2, prefill=True, server_pid=memcached.pid)
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"]
    # percentiles are bucket midpoints (< 1.6 % wide), so allow that slack against the max
    assert lat["p99.9"] <= lat["max"] * 1.02
    assert 0 < lat["mean"] <= lat["max"]
    assert lat["max"] < 1e7              # a broken clock, not a slow machine, fails this
    # the duration window counts only what completed inside it
    t = r["totals"]
    assert 0 < r["requests"] < t["gets"] + t["sets"]
    assert r["elapsed_s"] == pytest.approx(1.0)
    assert r["server_cpu"]["utilisation"] <= 1.1   # memcached -t 1: one worker busy at most
    assert r["client_cpu"]["us_per_request"] > 0


def test_prefill_only(memcached: Daemon) -> None:
    r = lg.run(port=memcached.port, connections=4, keyspace=2000, value_size=10,
               duration=0.0, prefill=True)
    assert r["requests"] == 0
    assert r["totals"]["prefill_sets"] == 2000
    assert stats(memcached)["curr_items"] == 2000


def test_refused_connection_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]     # bound, never listening: connect is refused
        with pytest.raises(RuntimeError, match="connect"):
            lg.run(port=port, connections=2, requests=10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        lg.run(port=1, connections=0, requests=1)
    with pytest.raises(ValueError):
        lg.run(port=1, get_ratio=0, set_ratio=0, requests=1)
    with pytest.raises(ValueError):
        lg.run(port=1, host="localhost", requests=1)
    with pytest.raises(ValueError):
        lg.run(port=1, multiget=2, set_on_miss=True, requests=1)
    with pytest.raises(ValueError):
        lg.run(port=1, scan_every=10, scan_length=11, requests=1)


def test_cli_json(memcached: Daemon) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memcachepy.bench", "-p", str(memcached.port), "-n", "3000",
         "-c", "5", "-d", "2", "--ratio", "1:1", "--prefill", "-k", "500", "--json",
         "--server-pid", str(memcached.pid)],
        capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["requests"] == 3000
    assert r["gets"] == r["sets"] == 1500
    assert r["config"]["ratio"] == "1:1"
    # 3000 requests may take less than one clock tick of server CPU: only check the shape
    assert r["server_cpu"]["us_per_request"] >= 0


def test_cli_text_report(memcached: Daemon) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memcachepy.bench", "-p", str(memcached.port), "-n", "500",
         "-c", "2", "-g", "10", "-r", "1:0"],
        capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "500 requests (500 gets for 5,000 keys, 0 sets)" in proc.stdout
    assert "p99.9" in proc.stdout


def test_compare_script_smoke(tmp_path: Path) -> None:
    # bench/compare end to end in its A/A mode (memcached in both slots), on the two cheapest
    # workloads: daemons start and stop, the report is written, identical daemons come out equal
    if not os.access(MEMCACHED, os.X_OK) or shutil.which("taskset") is None:
        pytest.skip("needs memcached and taskset")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "compare"), "--quick", "--aa",
         "--workloads", "agx", "--duration", "0.5", "--warmup", "0.1", "--out", str(tmp_path),
         "--server-cpu", "0", "--client-cpu", str(1 % (os.cpu_count() or 1))],
        capture_output=True, text=True, timeout=50, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| (a) get-heavy" in report and "RSS after fill" in report
    rows = {(r["workload"], r["metric"]): r for r in
            json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert rows[("a", "rps")]["memcached"] > 0
    # the same daemon storing the same 200k items uses the same memory
    assert rows[("g", "rss_mb")]["ratio"] == pytest.approx(1.0, rel=0.1)
    # the tail workload reports the worst gap and the repetition-by-repetition verdicts
    assert rows[("x", "worst_gap")]["memcached"] > 0
    assert "memcachepy p99.9 <= memcached's in " in report and " of 1 repetitions" in report


class SlowServer:
    """Answers every `get` with a miss after a fixed delay: a known latency to measure.
    With `stall` > 0 it also stalls once: the reply to the `stall_at`-th get (counted over
    all conns) waits `stall` seconds more, a known worst gap to report.

    close() wakes and joins every thread before it closes a descriptor: a thread still
    blocked in accept() on a closed fd number can pick up the next socket that reuses the
    number (a later test's HTTP listener once lost a request to this server that way)."""

    def __init__(self, delay: float, stall: float = 0.0, stall_at: int = 0) -> None:
        import threading
        self.delay = delay
        self.stall = stall
        self.stall_at = stall_at
        self.gets = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.served_us: list[float] = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.stopping:
                c.close()
                return
            self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c: socket.socket) -> None:
        buf = b""
        try:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    assert line.startswith(b"get ")
                    began = time.monotonic()
                    with self.lock:
                        self.gets += 1
                        stall = self.stall if self.gets == self.stall_at else 0.0
                    if self.delay or stall:
                        time.sleep(self.delay + stall)
                    c.sendall(b"END\r\n")
                    # what this server really took (a loaded machine oversleeps)
                    self.served_us.append((time.monotonic() - began) * 1e6)
        except OSError:
            return

    def close(self) -> None:
        self.stopping = True
        # shutdown() wakes a blocked accept()/recv() on Linux; only then are the fds closed
        for s in [self.sock, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)
        assert not self.acceptor.is_alive()
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("mode", ["closed", "rate-lazy", "rate-eager"])
def test_latency_matches_a_known_delay(mode: str) -> None:
    # every reply takes 20 ms: the reported latency must be that, not the time the client
    # happened to look (lazy mode reads replies only on ticks and relies on kernel stamps)
    srv = SlowServer(0.020)
    try:
        kw = dict(rate=16.0, tick_us=80000.0, lazy=mode == "rate-lazy") if mode != "closed" else {}
        r = lg.run(port=srv.port, connections=4, get_ratio=1, set_ratio=0, requests=16, **kw)
    finally:
        srv.close()
    lat = r["latency_us"]
    assert r["requests"] == 16 and r["hit_ratio"] == 0.0
    assert r["totals"]["unstamped_reads"] == 0
    # lazy mode reads replies only on 80 ms ticks: timed at the read instead of by the kernel
    # stamp, p50 would sit near 20 + 40 ms. The bound is relative to what the server really
    # took per reply (a loaded machine oversleeps the 20 ms; once p50 was above a fixed 40 ms
    # in eager mode), plus 15 ms, well under half a tick, for the client's own wake-ups.
    served = sorted(srv.served_us)
    assert len(served) == 16
    assert 19_500 <= lat["p50"] <= served[len(served) // 2] + 15_000, (lat, served)
    assert lat["p50"] <= lat["max"] < 200_000, lat


def test_values_not_as_stored_are_counted(memcached: Daemon) -> None:
    # the generator compares every hit with the value it stores: a wrong length or a wrong
    # byte (here written behind its back) is counted, not silently taken as a hit
    lg.run(port=memcached.port, connections=2, keyspace=50, value_size=100, duration=0.0,
           prefill=True, key_prefix="v:")
    with socket.create_connection(("127.0.0.1", memcached.port), timeout=5) as s:
        s.sendall(b"set v:7 0 0 100\r\n" + b"Z" * 100 + b"\r\nset v:8 0 0 3\r\nabc\r\n")
        got = b""
        while got.count(b"STORED") < 2:
            got += s.recv(100)
    r = lg.run(port=memcached.port, connections=1, keyspace=50, value_size=100, get_ratio=1,
               set_ratio=0, key_pattern="sequential", requests=50, key_prefix="v:")
    assert r["hits"] == 50
    assert r["totals"]["bad_values"] == 2


def gap_replies(r: dict) -> int:
    return sum(n for _, n in r["gaps"]["histogram"])


@pytest.mark.parametrize("mode", ["closed", "pipelined", "rate-lazy", "rate-eager"])
def test_one_stall_is_the_worst_gap(mode: str) -> None:
    # the server answers at once except for one reply held 51 ms: whatever the percentiles
    # say, the worst gap (a conn waiting with a request outstanding and no reply) and the
    # worst wait must report at least the 50 ms, and the histogram must hold that reply
    srv = SlowServer(0.0, stall=0.051, stall_at=300)
    try:
        kw: dict = dict(connections=4, requests=1200)
        if mode == "pipelined":
            kw["depth"] = 4
        elif mode.startswith("rate"):
            kw.update(rate=4000.0, lazy=mode == "rate-lazy")
        r = lg.run(port=srv.port, get_ratio=1, set_ratio=0, **kw)
    finally:
        srv.close()
    g = r["gaps"]
    assert r["requests"] == 1200 and srv.gets == 1200
    assert g["worst_gap_us"] >= 50_000, g
    assert g["worst_wait_us"] >= g["worst_gap_us"] * 0.999, g   # a wait spans its gap
    assert r["latency_us"]["max"] >= 50_000
    # one gap per reply; the stalled one sits in a bucket whose range starts at >= 50 ms
    assert gap_replies(r) == 1200
    hist = g["histogram"]
    lower = [0] + [edge for edge, _ in hist[:-1]]
    assert sum(n for lo, (_, n) in zip(lower, hist) if lo >= 50_000) >= 1, hist
    # and it happened inside the run, which is all measured in request-count mode
    assert 0 <= g["worst_gap_at_s"] <= r["elapsed_s"]


def test_fixed_rate_wait_counts_from_the_due_time() -> None:
    # one conn, depth 1, 1000 requests/s, every reply 5 ms late: the server keeps up with
    # only 200/s, so request j (due at j ms) is sent only when its predecessor's reply is in,
    # at >= 5 j ms. Each gap is one 5 ms reply; the wait of the 60th request, counted from
    # its slot as a client at that rate sees it, is >= 5 * 60 - 59 = 241 ms
    srv = SlowServer(0.005)
    try:
        r = lg.run(port=srv.port, connections=1, get_ratio=1, set_ratio=0, rate=1000.0,
                   requests=60, lazy=False)
    finally:
        srv.close()
    g = r["gaps"]
    assert g["worst_wait_us"] >= 241_000, g
    assert g["worst_gap_us"] >= 5_000
    assert r["late"] >= 50                       # sends held up behind slow replies
    assert gap_replies(r) == 60


def test_gap_histogram_counts_every_measured_reply(memcached: Daemon) -> None:
    r = lg.run(port=memcached.port, connections=8, depth=2, keyspace=500, duration=0.5,
               warmup=0.1, prefill=True)
    assert gap_replies(r) == r["requests"] > 0
    g = r["gaps"]
    # a gap ends at a reply and starts no earlier than that request's send
    assert 0 < g["worst_gap_us"] <= g["worst_wait_us"] * 1.0001
    assert g["worst_wait_us"] <= r["latency_us"]["max"] * 1.0001


def test_cli_text_report_shows_gaps() -> None:
    srv = SlowServer(0.0, stall=0.051, stall_at=50)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "memcachepy.bench", "-p", str(srv.port), "-n", "200",
             "-c", "2", "-r", "1:0"],
            capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    finally:
        srv.close()
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("worst gap"))
    assert float(line.split()[2]) >= 50.0, line
    hist = next(ln for ln in proc.stdout.splitlines() if ln.startswith("gaps "))
    assert "50 ms-100 ms 1" in hist or ">= " in hist or "100 ms-" in hist, hist


def load_compare():
    import importlib.machinery
    import importlib.util
    path = str(REPO_ROOT / "bench" / "compare")
    loader = importlib.machinery.SourceFileLoader("bench_compare", path)
    spec = importlib.util.spec_from_loader("bench_compare", loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = mod      # dataclasses look their module up by name
    loader.exec_module(mod)
    return mod


def test_scaling_plan_keeps_daemon_and_loadgen_apart() -> None:
    cmp = load_compare()
    # 2 CPUs: reduced mode, the daemon on one CPU for -t 1 and -t 2
    full, pts = cmp.scaling_plan([0, 1])
    assert not full
    assert [(p.threads, p.daemon_cpus, p.loadgen_cpus) for p in pts] == [(1, [0], [1]), (2, [0], [1])]
    # 4 CPUs: -t 1 and -t 2, the generator never on a daemon CPU and never with fewer CPUs
    full, pts = cmp.scaling_plan([3, 2, 1, 0])
    assert full and [p.threads for p in pts] == [1, 2]
    # 64 CPUs (an affinity mask with holes): up to -t 32, every CPU set disjoint
    cpus = [c for c in range(70) if c not in (5, 6, 7, 8, 9, 10)]
    full, pts = cmp.scaling_plan(cpus)
    assert full and [p.threads for p in pts] == [1, 2, 4, 8, 16, 32]
    for p in pts:
        assert len(p.daemon_cpus) == p.threads <= len(p.loadgen_cpus)
        assert not set(p.daemon_cpus) & set(p.loadgen_cpus)
        assert set(p.daemon_cpus) | set(p.loadgen_cpus) == set(cpus)
    full, pts = cmp.scaling_plan(cpus, max_threads=4)
    assert [p.threads for p in pts] == [1, 2, 4]
    with pytest.raises(ValueError):
        cmp.scaling_plan([0])


def test_scaling_section_replaces_only_itself() -> None:
    cmp = load_compare()
    main = "# memcachepy beside memcached\n\n| table |\n"
    one = cmp.replace_section(main, f"{cmp.SCALING_BEGIN}\nfirst\n{cmp.SCALING_END}")
    two = cmp.replace_section(one, f"{cmp.SCALING_BEGIN}\nsecond\n{cmp.SCALING_END}")
    assert two.startswith(main.rstrip("\n")) and "second" in two and "first" not in two
    assert two.count(cmp.SCALING_BEGIN) == 1


def test_compare_scaling_smoke(tmp_path: Path) -> None:
    # --scaling end to end: both daemons at every -t of the plan, the section written into
    # an existing RESULTS.md without erasing it, per-thread efficiency 1.00 at -t 1
    if not os.access(MEMCACHED, os.X_OK) or shutil.which("taskset") is None:
        pytest.skip("needs memcached and taskset")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    (tmp_path / "RESULTS.md").write_text("# memcachepy beside memcached\n\nmain table\n")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "compare"), "--scaling", "--quick",
         "--scaling-max", "2", "--duration", "0.5", "--warmup", "0.1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=50, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (tmp_path / "RESULTS.md").read_text()
    assert "main table" in report and "## Scaling" in report
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert {(r["daemon"], r["threads"]) for r in rows} == {
        (d, t) for d in ("memcached", "memcachepy") for t in (1, 2)}
    for r in rows:
        assert r["rps"] > 0 and r["cpu_us"] > 0
        if r["threads"] == 1:
            assert r["efficiency"] == pytest.approx(1.0)
    if len(os.sched_getaffinity(0)) < 4:
        assert "Reduced mode" in report and "REDUCED MODE" in proc.stderr
