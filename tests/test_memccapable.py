# libmemcached's protocol conformance tool against both daemons.
#
# Debian's libmemcached-tools ships memcapable as `memccapable`.  `-a` runs its 27 ASCII
# checks (it flushes the server, so each run gets a fresh daemon).  The tool decides between
# pre-1.6 and 1.6 expectations from the VERSION string, so passing it also proves the version
# string is 1.6-shaped.
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

MEMCCAPABLE = shutil.which("memccapable") or "/usr/bin/memccapable"


def run_memccapable(d, mode: str) -> str:
    """Runs memccapable's checks in `mode` (-a ascii, -b binary) against daemon `d`; all 27
    must pass. Returns its output."""
    if not os.access(MEMCCAPABLE, os.X_OK):
        msg = "memccapable not installed (apt-get install libmemcached-tools)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    proc = subprocess.run([MEMCCAPABLE, "-h", "127.0.0.1", "-p", str(d.port), mode, "-t", "5"],
                          capture_output=True, text=True, timeout=80)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "All tests passed" in out, out
    assert out.count("[pass]") == 27, out
    return out


@pytest.mark.timeout(90)
def test_memccapable_ascii(kind: str, start_daemon) -> None:
    d = start_daemon(kind)
    run_memccapable(d, "-a")
    assert d.alive()


@pytest.mark.timeout(90)
def test_memccapable_binary(kind: str, start_daemon) -> None:
    """`-b`: its 27 binary-protocol checks (every opcode and quiet form, CAS, stat)."""
    d = start_daemon(kind)
    out = run_memccapable(d, "-b")
    assert "ascii" not in out, out
    assert d.alive()
