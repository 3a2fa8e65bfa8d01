# Shutdown under load (issue 5, item 7): SIGTERM (and SIGINT) while clients are busy.
#
# Eight soak clients (tests/soak.py: checksummed values, pipelined batches) plus the awkward
# ones: a client that pipelines large gets and never reads, clients parked in the middle of
# a data block, idle clients. After a couple of seconds of load the daemon gets the signal.
# It must exit with status 0 within a few seconds, and no client may see a reply that looks
# complete but is not: every data block that arrives whole must carry its own key and a
# valid checksum; a reply cut short must be cut by the connection closing (EOF), never
# followed by anything else. Real memcached is held to the same standard.
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

import soak


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_under_load_exits_cleanly(kind: str, start_daemon, signum: int) -> None:
    d = start_daemon(kind, "-m", "32", "-t", "4")
    stop = threading.Event()
    totals = soak.Totals()
    clients = [threading.Thread(target=soak.client, args=(d, i, stop, totals, 1 << 20), daemon=True)
               for i in range(8)]
    for t in clients:
        t.start()
    extra: list[socket.socket] = []
    big = b"x" * 400_000
    s = socket.create_connection(d.addr, timeout=10)
    s.sendall(b"set big 0 0 %d\r\n" % len(big) + big + b"\r\n")
    s.recv(64)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.sendall(b"get big\r\n" * 500)           # never read
    extra.append(s)
    for i in range(10):
        s = socket.create_connection(d.addr, timeout=10)
        s.sendall(b"set parked%d 0 0 1000\r\n" % i + b"p" * 300)
        extra.append(s)
        extra.append(socket.create_connection(d.addr, timeout=10))   # idle
    time.sleep(2.0)
    assert d.alive()
    stop.set()
    t0 = time.monotonic()
    d.proc.send_signal(signum)
    rc = d.proc.wait(timeout=15)
    took = time.monotonic() - t0
    for t in clients:
        t.join(timeout=30)
    for s in extra:
        s.close()
    print(f"{kind}: exit {rc} {took:.2f}s after signal; {totals.requests} requests answered, "
          f"{totals.hits} verified hits, {totals.corrupted} corrupted")
    assert rc == 0
    assert took < 5.0
    assert totals.corrupted == 0, totals.errors
    assert not [e for e in totals.errors if "desync" in e or "checksum" in e or "returned for" in e]
    assert totals.requests > 50 and totals.hits > 0
