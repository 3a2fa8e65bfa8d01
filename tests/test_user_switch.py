# -u USER with the package installed where USER cannot read (the README's
# install command, run as root, makes a venv under /root, mode 0700): whatever
# the daemon imports after switching users must already be loaded, or it dies
# at start (the compiled core) or at the first SIGHUP (cluster reload).
# memcached is one binary, loaded before its switch; so must memcachepy be.
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import memcachepy

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def roundtrip(port: int, data: bytes, end: bytes) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with s:
        s.sendall(data)
        buf = b""
        while not buf.endswith(end):
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        return buf


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_package_unreadable_after_switch(tmp_path: Path) -> None:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    private = tmp_path / "private"          # root-only, like /root
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    shutil.copytree(Path(memcachepy.__file__).parent, private / "memcachepy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # a venv's interpreter, as the README's install makes (the interpreter
    # outside one kept the failure hidden here)
    venv = tmp_path / "venv"
    if subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                      capture_output=True).returncode != 0:
        pytest.skip("python -m venv is not available")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(private))
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "memcachepy", "-u", "nobody",
                             "-l", "127.0.0.1", "-p", str(port), "-U", "0"],
                            cwd=private, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert roundtrip(port, b"set a 0 0 5\r\nhello\r\n", b"\r\n") == b"STORED\r\n"
        proc.send_signal(signal.SIGHUP)       # reloads the cluster list: imports discovery
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert roundtrip(port, b"get a\r\n", b"END\r\n") == b"VALUE a 0 5\r\nhello\r\nEND\r\n"
        proc.terminate()
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
