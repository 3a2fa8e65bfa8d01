# Listening: unix sockets with -s/-a, several -l addresses, IPv6 loopback,
# and the port report for -p 0. Compared with memcached where it has the
# same behaviour.
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from support.daemons import REPO_ROOT

pytestmark = pytest.mark.timeout(60)


def wait_for_path(path: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def roundtrip(sock: socket.socket) -> bytes:
    sock.sendall(b"set k 0 0 2\r\nhi\r\nget k\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        chunk = sock.recv(4096)
        assert chunk
        buf += chunk
    return buf


@pytest.mark.parametrize("binary", ["memcached", "memcachepy"])
def test_unix_socket_with_mask(binary):
    if binary == "memcached" and not os.path.exists("/usr/bin/memcached"):
        pytest.skip("memcached not installed")
    d = tempfile.mkdtemp(prefix="mcpy-unix-")
    path = os.path.join(d, "mc.sock")
    cmd = (["/usr/bin/memcached"] if binary == "memcached" else [sys.executable, "-m", "memcachepy"])
    proc = subprocess.Popen(cmd + ["-u", "root", "-s", path, "-a", "0770"], cwd=REPO_ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        wait_for_path(path, proc)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o770
        s = socket.socket(socket.AF_UNIX)
        for _ in range(100):
            try:
                s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        assert roundtrip(s) == b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"
        s.sendall(b"stats settings\r\n")
        time.sleep(0.3)
        out = s.recv(65536)
        assert b"STAT domain_socket " + path.encode() in out
        s.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    if binary == "memcachepy":
        assert not os.path.exists(path), "the socket file is removed at exit"


def test_several_listen_addresses_and_ipv6(tmp_path):
    port_file = tmp_path / "ports"
    env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(port_file))
    proc = subprocess.Popen([sys.executable, "-m", "memcachepy", "-u", "root", "-p", "-1",
                             "-l", "127.0.0.1,[::1]:0"], cwd=REPO_ROOT, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        wait_for_path(str(port_file), proc)
        lines = port_file.read_text().split("\n")
        ports = {ln.split(":")[0]: int(ln.split(":")[1]) for ln in lines if ln}
        assert set(ports) == {"TCP INET", "TCP INET6"}
        s4 = socket.create_connection(("127.0.0.1", ports["TCP INET"]))
        assert roundtrip(s4).startswith(b"STORED")
        s6 = socket.socket(socket.AF_INET6)
        s6.connect(("::1", ports["TCP INET6"]))
        assert roundtrip(s6).endswith(b"hi\r\nEND\r\n")
        s4.close()
        s6.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
