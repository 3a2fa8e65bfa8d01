# `memcachepy cluster N` (issue 9): N local nodes sharing a cluster file, the endpoint printed,
# SIGHUP forwarded, every node stopped on SIGTERM / SIGINT.
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import require_memcachepy
from support.daemons import REPO_ROOT
from support.pool import config_get

pytest.importorskip("pymemcache")


def start(*args: str) -> tuple[subprocess.Popen, dict[str, str]]:
    require_memcachepy()
    user = ["--", "-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([sys.executable, "-m", "memcachepy", "cluster", *args, *user],
                            cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    info: dict[str, str] = {}
    while "python" not in info:
        line = proc.stdout.readline()
        if not line:
            proc.wait(10)
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()}")
        key, _, value = line.rstrip("\n").partition(": ")
        info[key] = value
    return proc, info


def ports_of(info: dict[str, str]) -> list[int]:
    return [int(e.rsplit("|", 1)[1]) for e in info["nodes"].split()]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cluster_command(stop_signal):
    from memcachepy import cluster
    proc, info = start("3", "-p", "0")
    try:
        ports = ports_of(info)
        assert len(set(ports)) == 3
        host, port = info["configuration endpoint"].rsplit(":", 1)
        assert (host, int(port)) == ("127.0.0.1", ports[0])
        for p in ports:
            assert config_get(p)[1] == [b"localhost|127.0.0.1|%d" % q for q in ports]
        with cluster.client(info["configuration endpoint"], refresh_interval=0) as c:
            assert c.nodes == sorted(f"127.0.0.1:{p}" for p in ports)
            c.set("a", b"1", noreply=False)
            assert c.get("a") == b"1"
        # SIGHUP to the command reaches every node: an edited file is loaded everywhere
        path = info["cluster file"].split(" ")[0]
        with open(path, "a") as f:
            f.write("extra|127.0.0.1|1\n")
        v0 = config_get(ports[0])[0]
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 15
        while not all(config_get(p)[0] == v0 + 1 for p in ports) and time.monotonic() < end:
            time.sleep(0.02)
        assert [len(config_get(p)[1]) for p in ports] == [4, 4, 4]
        proc.send_signal(stop_signal)
        assert proc.wait(20) == 0
        assert all(refused(p) for p in ports)
        assert not os.path.exists(path)            # its temporary directory is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_command_refuses_bad_n():
    require_memcachepy()
    r = subprocess.run([sys.executable, "-m", "memcachepy", "cluster", "0"], cwd=str(REPO_ROOT),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "N must be between 1 and 64" in r.stderr
