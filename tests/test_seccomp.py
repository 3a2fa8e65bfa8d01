# -o drop_privileges: the seccomp allowlist over the whole daemon (ext/linux_priv.h), on by
# default as in the issue; -o no_drop_privileges turns it off. The rest of the suite runs
# with the filter on (every daemon it starts), which is what proves the list is wide enough;
# these tests prove the filter is there and that a call outside it is stopped loudly.
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.daemons import KIND_MEMCACHEPY, REPO_ROOT

pytestmark = pytest.mark.timeout(60)


def _supported() -> bool:
    r = subprocess.run([sys.executable, "-c", "import memcachepy._core as c; print(c.seccomp_supported())"],
                       cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    return r.stdout.strip() == "True"


@pytest.fixture(scope="module")
def supported() -> None:
    if not _supported():
        pytest.skip("no seccomp filter in this build (sanitizer) or on this platform")


def seccomp_mode(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Seccomp:"):
            return int(line.split()[1])
    raise AssertionError("no Seccomp line")


def version(d) -> bytes:
    with socket.create_connection(d.addr, timeout=5) as s:
        s.sendall(b"set a 0 0 1\r\nx\r\nget a\r\nstats\r\nversion\r\n")
        buf = b""
        while not buf.endswith(b"VERSION 1.6.18\r\n"):
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        return buf


def test_filter_on_by_default(supported, start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY)
    assert version(d).startswith(b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n")
    assert seccomp_mode(d.proc.pid) == 2           # SECCOMP_MODE_FILTER
    for tid in Path(f"/proc/{d.proc.pid}/task").iterdir():   # every thread (TSYNC)
        assert "Seccomp:\t2" in (tid / "status").read_text()
    d.proc.send_signal(signal.SIGHUP)             # log reopen: allowed
    assert version(d)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0, d.stderr_text()
    assert "Seccomp policy failure" not in d.stderr_text()


def test_no_drop_privileges_turns_it_off(supported, start_daemon) -> None:
    d = start_daemon(KIND_MEMCACHEPY, "-o", "no_drop_privileges")
    assert version(d)
    assert seccomp_mode(d.proc.pid) == 0


def test_forbidden_call_is_blocked_loudly(supported, start_daemon, monkeypatch) -> None:
    """The test hook makes personality(2), outside the list: the daemon must die with
    memcached's message naming the call (135 on x86_64), not carry on or vanish."""
    monkeypatch.setenv("MEMCACHEPY_TEST_SECCOMP_PROBE", "1")
    d = start_daemon(KIND_MEMCACHEPY)
    assert version(d)
    d.proc.send_signal(signal.SIGUSR2)
    assert d.proc.wait(timeout=10) == 1
    msg = d.stderr_text()
    assert "Seccomp policy failure. Caught syscall" in msg
    if sys.platform == "linux" and __import__("platform").machine() == "x86_64":
        assert "Caught syscall 135." in msg


def test_hook_is_harmless_without_filter(supported, start_daemon, monkeypatch) -> None:
    monkeypatch.setenv("MEMCACHEPY_TEST_SECCOMP_PROBE", "1")
    d = start_daemon(KIND_MEMCACHEPY, "-o", "no_drop_privileges")
    d.proc.send_signal(signal.SIGUSR2)
    assert version(d)                              # still serving
