# The proxy recipe (issue 9): Debian's nutcracker (twemproxy) with the shipped
# memcachepy/data/nutcracker.yml in front of three memcachepy nodes.  The classic commands
# work through it; a node killed is ejected and the keys on the other nodes are still
# served; the commands nutcracker cannot forward (written down in the recipe) are checked
# here, so the list stays true.
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from conftest import require_memcachepy
from support.daemons import KIND_MEMCACHEPY
from support.rawclient import Conn

pytest.importorskip("pymemcache")
from pymemcache.client.base import Client  # noqa: E402

NUTCRACKER = shutil.which("nutcracker") or "/usr/sbin/nutcracker"


def require_nutcracker() -> None:
    if os.access(NUTCRACKER, os.X_OK):
        return
    msg = "nutcracker is not installed; apt-get install nutcracker"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set: .ci/run installs it)")
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    def __init__(self, workdir: str, nodes, retry_ms: int = 0) -> None:
        from memcachepy.discovery import Node
        from memcachepy.localcluster import nutcracker_config
        for _ in range(5):          # a port picked free may be taken meanwhile: try another
            self.port = free_port()
            conf = os.path.join(workdir, "nutcracker.yml")
            text = nutcracker_config(f"127.0.0.1:{self.port}",
                                     [Node("localhost", "127.0.0.1", d.port) for d in nodes])
            if retry_ms:
                text = re.sub(r"(?m)^  server_retry_timeout: .*$",
                              f"  server_retry_timeout: {retry_ms}", text)
            with open(conf, "w") as f:
                f.write(text)
            self.proc = subprocess.Popen(
                [NUTCRACKER, "-c", conf, "-a", "127.0.0.1", "-s", str(free_port()),
                 "-o", os.path.join(workdir, "nutcracker.log")], stdin=subprocess.DEVNULL)
            end = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < end:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise AssertionError("nutcracker did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def pool(start_many, tmp_path, request):
    require_memcachepy()
    require_nutcracker()
    nodes = start_many([(KIND_MEMCACHEPY, ("-t", "2"))] * 3)
    proxy = Proxy(str(tmp_path), nodes, getattr(request, "param", 0))
    yield nodes, proxy
    proxy.stop()


def one_reply(port: int, data: bytes) -> bytes:
    """The first reply line (b"" if the proxy closed the connection first)."""
    with Conn(port) as c:
        c.send(data)
        return c.read_until(b"\r\n", eof_ok=True)


def exchange(port: int, data: bytes, idle: float = 0.5) -> bytes:
    """Send, then read until the proxy closes or stays quiet for `idle` s; '<EOF>' marks a close."""
    with Conn(port) as c:
        c.send(data)
        out = c.read_idle(idle=idle, total=30.0)
        return out + (b"<EOF>" if c.closed_by_peer else b"")


def owner(nodes, key: str) -> int:
    held = [i for i, d in enumerate(nodes) if Client(("127.0.0.1", d.port)).get(key) is not None]
    assert len(held) == 1, (key, held)
    return held[0]


def test_commands_through_the_proxy(pool):
    nodes, proxy = pool
    c = Client(("127.0.0.1", proxy.port), timeout=5)
    assert c.set("a", b"1", noreply=False)
    assert c.get("a") == b"1"
    assert c.incr("a", 41) == 42 and c.decr("a", 2) == 40
    value, cas = c.gets("a")
    assert value == b"40"
    assert c.cas("a", b"new", cas) is True
    assert c.cas("a", b"newer", cas) is False             # EXISTS: the token is stale
    assert c.get("a") == b"new"
    assert c.add("b", b"x", noreply=False) and not c.add("b", b"y", noreply=False)
    assert c.append("b", b"z", noreply=False) and c.prepend("b", b"w", noreply=False)
    assert c.touch("b", 100, noreply=False)
    keys = [f"m{i}" for i in range(60)]
    c.set_many({k: k.encode() for k in keys}, noreply=False)
    assert c.get_many(keys + ["b"]) == {**{k: k.encode() for k in keys}, "b": b"wxz"}
    assert c.delete("a", noreply=False) and c.get("a") is None
    assert c.version().startswith(b"1.6")
    # the keys really are spread over the three nodes
    assert sorted({owner(nodes, k) for k in keys}) == [0, 1, 2]


# The recipe retries an ejected node after 2 s (and fails two requests for its keys
# each time it is still down); here it stays out for the whole test, so every request
# after the ejection has one right answer.
@pytest.mark.parametrize("pool", [60000], indirect=True)
def test_killed_node_ejected_others_served(pool):
    nodes, proxy = pool
    c = Client(("127.0.0.1", proxy.port), timeout=5)
    keys = [f"key:{i}" for i in range(300)]
    c.set_many({k: k.encode() for k in keys}, noreply=False)
    where = {k: owner(nodes, k) for k in keys}
    victim = nodes[1]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    lost = [k for k in keys if where[k] == 1]
    kept = [k for k in keys if where[k] != 1]
    assert lost and kept
    # the proxy answers errors for the dead node's keys until server_failure_limit,
    # then ejects it: its keys go to the other nodes (misses, then stores succeed)
    end = time.monotonic() + 20
    errors = 0
    while True:
        reply = one_reply(proxy.port, b"set %s 0 0 5\r\nlater\r\n" % lost[0].encode())
        if reply == b"STORED\r\n":
            break
        assert reply.startswith(b"SERVER_ERROR") or reply == b"", reply
        errors += 1
        assert time.monotonic() < end, "the dead node was never ejected"
        time.sleep(0.05)
    assert errors <= 2              # server_failure_limit
    c2 = Client(("127.0.0.1", proxy.port), timeout=5)
    assert c2.get(lost[0]) == b"later"
    assert c2.get_many(kept) == {k: k.encode() for k in kept}
    assert c2.get_many(lost[1:]) == {}                 # rehashed to the others: misses
    c2.set_many({k: b"again" for k in lost}, noreply=False)
    assert c2.get_many(lost) == {k: b"again" for k in lost}
    assert c2.get_many(kept) == {k: k.encode() for k in kept}


# Verified with nutcracker 0.5.0: the connection is closed, no reply (recipe's list).
NOT_FORWARDED = [
    b"mg a v\r\n", b"ms a 1\r\nx\r\n", b"md a\r\n", b"ma a\r\n", b"mn\r\n", b"me a\r\n",
    b"gat 10 a\r\n", b"gats 10 a\r\n", b"stats\r\n", b"flush_all\r\n", b"verbosity 1\r\n",
    b"config get cluster\r\n", b"watch\r\n", b"lru_crawler metadump all\r\n",
    b"slabs automove 1\r\n", b"cache_memlimit 100\r\n", b"shutdown\r\n",
]


def test_what_nutcracker_cannot_forward(pool):
    nodes, proxy = pool
    for req in NOT_FORWARDED:
        assert exchange(proxy.port, req) == b"<EOF>", req
    # the legacy discovery key is an ordinary key to the proxy: one node answers it
    # (these nodes have no cluster file: a miss)
    assert exchange(proxy.port, b"get AmazonElastiCache:cluster\r\n") == b"END\r\n"
    assert exchange(proxy.port, b"set a 0 0 1\r\n1\r\nget a\r\n") == b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
