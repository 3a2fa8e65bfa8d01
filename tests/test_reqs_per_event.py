# -R (reqs_per_event): a connection that pipelines many requests yields to the others
# after R of them, and `stats` conn_yields counts those yields exactly as memcached 1.6.18
# counts them (its budget accounting is in ext/conn.pxi, above conn_drive_start).
#
#  * differential: the same pipelined batch (one send, smaller than either daemon's read
#    buffer, so both see it in one read) goes to memcached and memcachepy started with the
#    same -R; the replies must match byte for byte and conn_yields must move by the same
#    amount. Batches mix gets (which memcached writes out at once), storage, meta and
#    noreply commands, errors, and end on a complete or a partial line.
#  * a yield never loses, reorders or duplicates a reply, and a conn that keeps a worker
#    busy with a long pipeline does not keep a second conn on the same worker waiting for
#    the whole pipeline (-t 1 -R 1).
from __future__ import annotations

import socket
import threading
import time

import pytest

from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, Daemon
from support.normalise import normalise
from support.rawclient import Conn

def conn_yields(watcher: Conn) -> int:
    return int(watcher.stats()["conn_yields"])


def run_batch(d: Daemon, batch: bytes, marker: bytes, count: int) -> tuple[bytes, int]:
    """Send `batch` in one write on a fresh conn, read until `marker` has been seen `count`
    times; return the replies and the conn_yields the batch caused (the watcher's own stats
    commands cost the same on both daemons)."""
    with Conn(d.addr) as watcher, Conn(d.addr) as c:
        before = conn_yields(watcher)
        c.send(batch)
        buf = b""
        deadline = time.monotonic() + 10
        while buf.count(marker) < count and time.monotonic() < deadline:
            chunk = c._recv(2.0)
            if not chunk:
                break
            buf += chunk
        time.sleep(0.05)      # a yield after the last reply is counted after it is sent
        return buf, conn_yields(watcher) - before


def ending(batch: bytes, marker: bytes = b"MN\r\n") -> tuple[bytes, bytes, int]:
    """The batch closed by an `mn`, whose MN marks the end of the replies."""
    batch += b"mn\r\n"
    return batch, marker, batch.count(b"mn\r\n")


BATCHES: dict[str, tuple[bytes, bytes, int]] = {
    "gets-1": ending(b"get k\r\n"),
    "gets-5": ending(b"get k\r\n" * 4),
    "gets-6": ending(b"get k\r\n" * 5),
    "gets-21": ending(b"get k\r\n" * 20),
    "gets-22": ending(b"get k\r\n" * 21),
    "gets-101": ending(b"get k\r\n" * 100),
    "sets-7": (b"".join(b"set k%d 0 0 1\r\nx\r\n" % i for i in range(7)), b"STORED\r\n", 7),
    "sets-noreply-then-get": (
        b"".join(b"set k%d 0 0 2 noreply\r\nab\r\n" % i for i in range(20)) + b"get k19\r\n",
        b"END\r\n", 1),
    "mixed": ending(b"".join(b"set m%d 0 0 1\r\n%d\r\nget m%d\r\nincr m%d 5\r\ndelete nope\r\n"
                             % (i, i, i, i) for i in range(8)) + b"version\r\n"),
    "meta": ending(b"".join(b"ms q%d 2 T0\r\nhi\r\nmg q%d v f\r\nma q%d\r\nmn\r\n" % (i, i, i)
                            for i in range(9))),
    "meta-quiet": ending(b"".join(b"mg miss%d v q\r\nmd miss%d q\r\n" % (i, i)
                                  for i in range(30))),
    "errors": ending(b"bogus\r\nget\r\nincr x y\r\n" * 10),
    "noreply-errors": (b"incr x y noreply\r\n" * 9 + b"touch a 0\r\n", b"NOT_FOUND\r\n", 1),
    "ends-mid-line": (b"touch t 0\r\n" * 12 + b"get partial", b"NOT_FOUND\r\n", 12),
}


@pytest.mark.parametrize("reqs", ["1", "2", "5", "20"])
def test_conn_yields_match_memcached(daemon_pair, sut_kind: str, reqs: str) -> None:
    ref, sut = daemon_pair(sut_kind, ("-t", "1", "-R", reqs))
    diffs = []
    for name, (batch, marker, count) in BATCHES.items():
        want_reply, want_yields = run_batch(ref, batch, marker, count)
        got_reply, got_yields = run_batch(sut, batch, marker, count)
        assert want_reply.count(marker) == count, (name, want_reply[-200:])
        if (normalise(want_reply), want_yields) != (normalise(got_reply), got_yields):
            diffs.append((name, want_yields, got_yields,
                          normalise(want_reply) == normalise(got_reply)))
    assert not diffs, f"-R {reqs}: (batch, memcached yields, ours, replies equal): {diffs}"


def test_memcachepy_yields_keep_every_reply_in_order(start_daemon) -> None:
    """A 20,000-request pipeline of mixed commands under -R 1 (a yield after every
    command or two) gets every reply, in order, each exactly once."""
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-R", "1")
    parts = []
    want = []
    for i in range(5000):
        v = b"v%d" % i
        parts.append(b"set y%d 0 0 %d\r\n%s\r\nget y%d\r\nmn\r\nincr nope 1\r\n"
                     % (i, len(v), v, i))
        want.append(b"STORED\r\nVALUE y%d 0 %d\r\n%s\r\nEND\r\nMN\r\nNOT_FOUND\r\n"
                    % (i, len(v), v))
    expected = b"".join(want)
    s = socket.create_connection(d.addr)
    try:
        sender = threading.Thread(target=s.sendall, args=(b"".join(parts),))
        sender.start()
        got = b""
        s.settimeout(10)
        while len(got) < len(expected):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        sender.join()
    finally:
        s.close()
    assert got == expected
    with Conn(d.addr) as w:
        assert conn_yields(w) >= 5000


def test_memcachepy_long_pipeline_does_not_starve_another_conn(start_daemon) -> None:
    """One worker, -R 1: while a conn's 200k-request pipeline is being worked through,
    a second conn on the same worker is answered before the pipeline is done (a turn is
    bounded both by one read of at most a buffer and by -R)."""
    d = start_daemon(KIND_MEMCACHEPY, "-t", "1", "-R", "1")
    n = 200_000
    hog = socket.create_connection(d.addr)
    hog.sendall(b"set h 0 0 1\r\nx\r\n")
    assert hog.recv(100) == b"STORED\r\n"
    batch = b"get h\r\n" * n
    per_reply = len(b"VALUE h 0 1\r\nx\r\nEND\r\n")
    hog_done = threading.Event()
    received = [0]

    def drain() -> None:
        hog.settimeout(30)
        while received[0] < n * per_reply:
            chunk = hog.recv(1 << 20)
            if not chunk:
                break
            received[0] += len(chunk)
        hog_done.set()

    reader = threading.Thread(target=drain)
    reader.start()
    hog.sendall(batch)
    with Conn(d.addr) as other:
        reply = other.request(b"get h\r\n")
        seen_by_then = received[0]
    reader.join()
    hog.close()
    assert reply.startswith(b"VALUE h 0 1\r\nx\r\nEND\r\n")
    assert hog_done.is_set() and received[0] == n * per_reply
    # the other conn's reply did not wait for the end of the hog's pipeline
    assert seen_by_then < n * per_reply, seen_by_then
