# Daemon launcher for socket-level tests: the only place tests start memcached or memcachepy.
#
# start_daemon(s) -> Daemon: a daemon on a loopback ephemeral TCP port (most tests).
# Proc(argv): any other command line (unix sockets, -d, config files, odd flags), with the
# same port file / stderr file / stop discipline; command_line(kind, flags) and binary(kind)
# build the argv.
#
# Starts either the reference daemon (Debian's memcached, /usr/bin/memcached) or memcachepy
# (`python -m memcachepy`) on 127.0.0.1 with an OS-chosen port and learns that port from the
# file named by MEMCACHED_PORT_FILENAME (`TCP INET: <port>`).  Every started process is
# stopped by its owner (SIGTERM, then SIGKILL after a grace period), so tests can run in
# parallel and never leak daemons.
#
# Why the two command lines differ: memcached 1.6.18 treats `-p 0` as "no TCP listener" (it
# only binds when the port is non-zero), so for it the ephemeral port is requested through
# the interface spec `-l 127.0.0.1:0` while `-p` keeps a non-zero dummy.  memcachepy reads
# -p as memcached does and is started with `-l 127.0.0.1 -p -1` (any free port).
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MEMCACHED_BIN = os.environ.get("MEMCACHED_BIN", "/usr/bin/memcached")
START_TIMEOUT = 15.0
STOP_GRACE = 3.0

KIND_MEMCACHED = "memcached"
KIND_MEMCACHEPY = "memcachepy"


_REAPERS: list[threading.Thread] = []


def reap_all() -> None:
    """Wait for every daemon stopped with block=False (call once at session end)."""
    while _REAPERS:
        _REAPERS.pop().join(timeout=2 * STOP_GRACE + 1)


class DaemonStartError(RuntimeError):
    pass


def memcached_available() -> bool:
    return os.path.isfile(MEMCACHED_BIN) and os.access(MEMCACHED_BIN, os.X_OK)


_PROBE = ("import importlib.util, sys, memcachepy._core; "
          "sys.exit(0 if importlib.util.find_spec('memcachepy.__main__') else 3)")


@lru_cache(maxsize=1)
def memcachepy_status() -> tuple[bool, str]:
    """(importable, reason).  Probed in a child process with the same cwd/env the daemon
    gets, because this test process may have imported a different copy of the package."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE],
            cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:  # pragma: no cover
        return False, f"cannot probe memcachepy._core: {exc}"
    if proc.returncode == 0:
        return True, ""
    if proc.returncode == 3:
        return False, "memcachepy._core imports but `python -m memcachepy` has no __main__ yet"
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return False, ("memcachepy._core is not importable yet (build it with "
                   f"`pip install -e . --no-build-isolation`): {tail}")


def _root_flags() -> list[str]:
    # memcached refuses to run as root without -u; memcachepy accepts it for parity.
    return ["-u", "root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def binary(kind: str) -> list[str]:
    """The argv prefix that runs a daemon of this kind."""
    if kind == KIND_MEMCACHED:
        return [MEMCACHED_BIN]
    if kind == KIND_MEMCACHEPY:
        return [sys.executable, "-m", "memcachepy"]
    raise ValueError(f"unknown daemon kind {kind!r}")


def command_line(kind: str, flags: Sequence[str], user: bool = True) -> list[str]:
    """A loopback listener on an ephemeral TCP port, no UDP, then `flags`."""
    root = _root_flags() if user else []
    if kind == KIND_MEMCACHED:
        return [*binary(kind), *root, "-l", "127.0.0.1:0", "-U", "0", "-p", "11211", *flags]
    return [*binary(kind), *root, "-l", "127.0.0.1", "-U", "0", "-p", "-1", *flags]


class Proc:
    """A daemon process from any argv: stdout/stderr in a file, MEMCACHED_PORT_FILENAME set
    to a file in `workdir` (a fresh temporary directory unless given, removed at stop),
    systemd's variables removed from its environment, cwd the repository root."""

    def __init__(self, argv: Sequence[str], workdir: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mcpy-proc-"))
        self.port_file = self.workdir / "port"
        self.err_path = self.workdir / "stderr"
        e = dict(os.environ, MEMCACHED_PORT_FILENAME=str(self.port_file))
        for var in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                    "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            e.pop(var, None)
        e.update(env or {})
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(list(argv), cwd=str(REPO_ROOT), env=e,
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_port(self, timeout: float = START_TIMEOUT) -> int:
        """The TCP port from the port file; DaemonStartError if it exits or times out."""
        return _await_port(self.proc.args[0], self.proc, str(self.port_file),
                           str(self.err_path), time.monotonic() + timeout)

    def wait_path(self, path: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until `path` (a unix socket, a pid file) exists."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            if self.proc.poll() is not None:
                raise DaemonStartError(f"exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise DaemonStartError(f"{path} never appeared: {self.stderr()}")
            time.sleep(0.02)

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGKILL after STOP_GRACE) and reap; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_GRACE)
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_unix(kind: str, path: str, flags: Sequence[str] = (),
               workdir: str | Path | None = None) -> Proc:
    """A daemon listening only on the unix socket `path` (no TCP, no UDP), once the
    socket exists."""
    p = Proc([*binary(kind), *_root_flags(), "-s", path, "-U", "0", *flags], workdir)
    try:
        p.wait_path(path)
    except BaseException:
        p.kill()
        raise
    return p


@dataclass
class Daemon:
    kind: str
    flags: tuple[str, ...]
    proc: subprocess.Popen
    port: int
    workdir: str
    stderr_path: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def server_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self, sub: bytes = b"") -> dict[str, str]:
        """`stats [sub]` on a fresh connection, as {name: value}."""
        from support.rawclient import stats
        return stats(self.addr, sub)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        s = socket.create_connection(self.addr, timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stderr_text(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, block: bool = True) -> int | None:
        """SIGTERM, then SIGKILL after STOP_GRACE.  With block=False the wait happens in a
        reaper thread: memcached needs up to a second to notice SIGTERM (its clock tick),
        and paying that in every test's teardown would dominate the suite's run time."""
        if self._stopped:
            if block:
                self._reap()
            return self.proc.returncode
        self._stopped = True
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if block:
            self._reap()
        else:
            th = threading.Thread(target=self._reap, daemon=True)
            th.start()
            _REAPERS.append(th)
        return self.proc.returncode

    def _reap(self) -> None:
        try:
            self.proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_GRACE)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _launch(kind: str, flags: Sequence[str]) -> tuple[subprocess.Popen, str, str, str]:
    workdir = tempfile.mkdtemp(prefix=f"mcpy-{kind}-")
    port_file = os.path.join(workdir, "port")
    stderr_path = os.path.join(workdir, "stderr")
    env = dict(os.environ, MEMCACHED_PORT_FILENAME=port_file)
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            command_line(kind, flags), cwd=str(REPO_ROOT), env=env,
            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )
    return proc, workdir, port_file, stderr_path


def _await_port(kind: str, proc: subprocess.Popen, port_file: str, stderr_path: str,
                deadline: float) -> int:
    delay = 0.002
    while True:
        try:
            with open(port_file) as fh:
                for line in fh:
                    if line.startswith("TCP INET: "):
                        return int(line.split(":", 1)[1])
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            err = Path(stderr_path).read_text(errors="replace")
            raise DaemonStartError(
                f"{kind} exited with status {proc.returncode} before listening: {err.strip()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise DaemonStartError(f"{kind} did not write its port file within the deadline")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def start_daemons(specs: Sequence[tuple[str, Sequence[str]]],
                  timeout: float = START_TIMEOUT) -> list[Daemon]:
    """Start several daemons concurrently (Python start-up dominates memcachepy's launch
    time, so overlapping the launches halves the cost of a differential pair)."""
    launched = [(kind, tuple(flags), *_launch(kind, flags)) for kind, flags in specs]
    deadline = time.monotonic() + timeout
    daemons: list[Daemon] = []
    try:
        for kind, flags, proc, workdir, port_file, stderr_path in launched:
            port = _await_port(kind, proc, port_file, stderr_path, deadline)
            daemons.append(Daemon(kind, flags, proc, port, workdir, stderr_path))
    except BaseException:
        for d in daemons:
            d.stop()
        for kind, flags, proc, workdir, *_ in launched[len(daemons):]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return daemons


def start_daemon(kind: str, flags: Sequence[str] = (), timeout: float = START_TIMEOUT) -> Daemon:
    return start_daemons([(kind, flags)], timeout)[0]


def run_cli(kind: str, args: Sequence[str], timeout: float = 10.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a daemon binary that is expected to exit by itself (-h, -V, bad options)."""
    return subprocess.run([*binary(kind), *args], cwd=str(REPO_ROOT), capture_output=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ))
