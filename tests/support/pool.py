# A pool of memcachepy nodes on loopback sharing one cluster file (issue 9).
#
# Nodes start with -p 0, so their ports are known only once they listen: the file first
# names a placeholder node, then publish() writes the real list and sends SIGHUP, as an
# operator adding nodes would, and waits until every node serves it.
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence

from support.daemons import KIND_MEMCACHEPY, Daemon
from support.rawclient import Conn

PLACEHOLDER = b"placeholder|127.0.0.1|1\n"


def node_entry(d: Daemon) -> bytes:
    return b"localhost|127.0.0.1|%d" % d.port


def config_get(port: int, timeout: float = 5.0) -> tuple[int, list[bytes]]:
    """(version, entries) from one node, parsed by its byte count."""
    with Conn(port, timeout) as c:
        c.send(b"config get cluster\r\n")
        n = int(c.line().split()[3])
        body = c.exact(n + 2)
        assert c.line() == b"END"
    version, nodes, _ = body[:n].split(b"\n")
    return int(version), nodes.split(b" ")


def start_pool(start_many: Callable, n: int, path: str,
               flags: Sequence[str] = ("-t", "2", "-m", "64")) -> list[Daemon]:
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(PLACEHOLDER)
    daemons = start_many([(KIND_MEMCACHEPY, ("-o", f"cluster_file={path}", *flags))
                          for _ in range(n)])
    return daemons


def start_node(start_many: Callable, path: str, port: int = 0,
               flags: Sequence[str] = ("-t", "2", "-m", "64")) -> Daemon:
    extra = ("-p", str(port)) if port else ()
    return start_many([(KIND_MEMCACHEPY, ("-o", f"cluster_file={path}", *flags, *extra))])[0]


def publish(path: str, members: Sequence[Daemon], signalled: Sequence[Daemon],
            deadline: float = 15.0) -> int:
    """Write the cluster file naming `members`, SIGHUP every node in `signalled`, wait
    until each serves exactly that list; return the version the first one serves."""
    entries = [node_entry(d) for d in members]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"# written by tests/support/pool.py\n" + b"".join(e + b"\n" for e in entries))
    os.replace(tmp, path)
    for d in signalled:
        d.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + deadline
    versions = []
    for d in signalled:
        while True:
            v, nodes = config_get(d.port)
            if nodes == entries:
                versions.append(v)
                break
            if time.monotonic() > end:
                raise AssertionError(f"node {d.port} still serves {nodes}, want {entries}")
            time.sleep(0.02)
    return versions[0]
