# The worker event loop's run-time switch (ext/thread.pxi, worker_wait):
# `-o busy_poll_us=N` makes an idle worker poll its epoll set for up to N
# microseconds before it sleeps.
#
#  * it is parsed, bounded and reported in `stats settings` (only when set, so
#    the default listing stays byte for byte memcached's);
#  * it really keeps the worker awake: over requests sent a few milliseconds
#    apart, a daemon polling for a second makes almost no voluntary context
#    switches, one that sleeps at once makes at least one per request (counts
#    from /proc, no timing assertion: the gap only has to be shorter than the
#    poll budget and longer than zero);
#  * every classic-protocol transcript of test_text_diff gives memcached's bytes
#    with the switch on (the transcripts that list `stats settings` excepted:
#    there the switch adds its own line).
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import require_memcached, require_memcachepy
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY
from support.normalise import diff, normalise
from support.rawclient import Raw, run_transcript

import test_text_diff

pytestmark = pytest.mark.timeout(60)

SPIN = ("-o", "busy_poll_us=1000000")


def voluntary_switches(pid: int) -> int:
    """The worker threads' (the acceptor wakes on the LRU maintainer's schedule)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() != "mc-worker":
                continue
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except OSError:
            pass          # a thread that ended meanwhile
    return total


def switches_over_requests(d, n: int) -> int:
    s = d.connect()
    try:
        s.sendall(b"set k 0 0 1\r\nx\r\n")
        assert s.recv(100) == b"STORED\r\n"
        before = voluntary_switches(d.pid)
        for _ in range(n):
            time.sleep(0.005)
            s.sendall(b"get k\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(100)
                assert chunk
                buf += chunk
            assert buf == b"VALUE k 0 1\r\nx\r\nEND\r\n"
        return voluntary_switches(d.pid) - before
    finally:
        s.close()


def test_busy_poll_keeps_the_worker_awake(start_daemon) -> None:
    require_memcachepy()
    n = 40
    sleeping = start_daemon(KIND_MEMCACHEPY, "-t", "1")
    polling = start_daemon(KIND_MEMCACHEPY, "-t", "1", *SPIN)
    slept = switches_over_requests(sleeping, n)
    polled = switches_over_requests(polling, n)
    # without polling the worker sleeps after every answer (39-41 seen: whether the sleep
    # after the set falls before or after the first reading is a race, so allow slack)
    assert slept >= n * 3 // 4, slept
    # polling for a second across 5 ms gaps: the worker never goes to sleep (0 seen)
    assert polled <= n // 4, (polled, slept)


def test_busy_poll_setting_reported(start_daemon) -> None:
    require_memcachepy()
    d = start_daemon(KIND_MEMCACHEPY, "-o", "busy_poll_us=50")
    assert d.stats(b"settings").get("busy_poll_us") == "50"
    plain = start_daemon(KIND_MEMCACHEPY)
    assert "busy_poll_us" not in plain.stats(b"settings")


@pytest.mark.parametrize("value, ok", [("0", True), ("1000000", True), ("1000001", False),
                                       ("x", False), ("-1", False)])
def test_busy_poll_values(value: str, ok: bool) -> None:
    from memcachepy import cli
    from memcachepy.settings import SettingsError
    try:
        s = cli.settings_from_args(cli.parse_args(["-o", f"busy_poll_us={value}"]))
    except (SettingsError, SystemExit):
        assert not ok
        return
    assert ok
    assert s.to_core()["busy_poll_us"] == int(value)


def lists_settings(tr) -> bool:
    return any(re.search(rb"stats +settings", st if isinstance(st, bytes) else st.data)
               for st in tr.steps if isinstance(st, (bytes, Raw)))


SPIN_TRANSCRIPTS = [t for t in test_text_diff.TRANSCRIPTS
                    if not lists_settings(t) and not t.exits]


def test_spin_transcripts_cover_the_text_protocol() -> None:
    assert len(SPIN_TRANSCRIPTS) >= 100


@pytest.mark.parametrize("tr", SPIN_TRANSCRIPTS,
                         ids=[f"memcachepy-{x.name}" for x in SPIN_TRANSCRIPTS])
def test_text_transcript_with_busy_poll(tr, start_many) -> None:
    require_memcached()
    require_memcachepy()
    ds = start_many([(KIND_MEMCACHED, tr.flags),
                     (KIND_MEMCACHEPY, (*tr.flags, "-o", "busy_poll_us=200"))])
    with ThreadPoolExecutor(len(ds)) as pool:
        futs = [pool.submit(run_transcript, d.addr, tr.steps, tr.mode) for d in ds]
        want, got = (normalise(f.result()) for f in futs)
    if tr.name in test_text_diff.DESIGN_DIFFERENCES:
        test_text_diff.DESIGN_DIFFERENCES[tr.name](got)
    else:
        assert got == want, f"{tr.name} {tr.flags}:\n" + diff(want, got, "memcached", "memcachepy")
