# Process behaviour of the daemon: -d (daemonize with a readiness handshake), -P (pid file),
# -u (privilege drop when root), signals (SIGTERM / SIGINT / SIGUSR1 stop, SIGHUP reopens
# --log-file), exit statuses, the log on stderr with levels and -v / -vv, and the systemd
# unit commands of the main CLI.
#
# Where memcached 1.6.18 has the same behaviour (exit statuses, messages, "Gracefully
# stopping", the stale pid warning, -vv command lines) the test runs against both daemons;
# -d is memcachepy-only because memcached's parent exits before it listens.
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support.daemons import (
    KIND_MEMCACHED,
    KIND_MEMCACHEPY,
    MEMCACHED_BIN,
    REPO_ROOT,
    Proc,
    command_line,
    memcachepy_status,
)
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(60)

IS_ROOT = os.geteuid() == 0
need_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (privilege drop)")


@pytest.fixture
def mcpy() -> None:
    ok, reason = memcachepy_status()
    if not ok:
        pytest.skip(reason)


@pytest.fixture
def world_dir():
    """A directory under /tmp that a daemon running as nobody can write (pytest's tmp_path
    sits below a root-only 0700 directory)."""
    d = tempfile.mkdtemp(prefix="mcpy-proc-")
    os.chmod(d, 0o777)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def argv_for(kind: str, flags: list[str], user: bool = True) -> list[str]:
    return command_line(kind, flags, user)


@pytest.fixture
def spawn(tmp_path):
    procs: list[Proc] = []

    def start(argv: list[str], env: dict | None = None, workdir: Path | None = None) -> Proc:
        p = Proc(argv, workdir or tmp_path, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


def request(addr, data: bytes, until: bytes = b"\r\n") -> bytes:
    """Send on a fresh connection; the reply up to `until` (or what came before EOF)."""
    with Conn(addr) as c:
        c.send(data)
        return c.read_until(until, eof_ok=True)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def wait_gone(pid: int, timeout: float = 10) -> None:
    """Wait for a process that is not our child (a daemon) to end; a zombie counts as gone
    (whoever adopted it may not reap promptly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc_status(pid)["State"].startswith("Z"):
                return
        except OSError:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still running")


def wait_for(pred, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


# ------------------------------------------------------------------ -d and -P


def run_daemonized(flags: list[str], workdir: Path, timeout: float = 15):
    env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(workdir / "port"))
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run(argv_for(KIND_MEMCACHEPY, ["-d", *flags]), cwd=str(REPO_ROOT),
                          env=env, capture_output=True, timeout=timeout)


def test_daemonize_returns_once_listening(mcpy, tmp_path):
    pidfile, logfile = tmp_path / "mc.pid", tmp_path / "mc.log"
    r = run_daemonized(["-v", "-P", str(pidfile), "--log-file", str(logfile)], tmp_path)
    assert r.returncode == 0, r.stderr
    # The parent waited: the daemon listens and the pid file is there at this instant.
    port = int(re.search(r"TCP INET: (\d+)", (tmp_path / "port").read_text()).group(1))
    pid = int(pidfile.read_text())
    try:
        assert request(("127.0.0.1", port), b"version\r\n").startswith(b"VERSION ")
        st = proc_status(pid)
        assert "python" in Path(f"/proc/{pid}/cmdline").read_text()
        # Double fork: not a session leader (cannot reacquire a terminal), not our child.
        assert os.getsid(pid) != pid and os.getsid(pid) != os.getsid(0)
        assert int(st["PPid"]) != os.getpid()
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/2") == str(logfile)
        # Start-up lines went to the terminal that started it; the log file starts at readiness.
        assert "listening on inet 127.0.0.1:" in r.stderr.decode()
        assert wait_for(lambda: f"daemon started: pid {pid}" in logfile.read_text())
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    assert not pidfile.exists()
    log = logfile.read_text()
    assert re.search(r"^\S+ INFO Signal handled: SIGTERM\.$", log, re.M), log
    assert log.rstrip().endswith("INFO stopped"), log


def test_daemonize_failure_after_fork_is_reported_by_the_parent(mcpy, tmp_path):
    """A failure in the daemon after the fork (here: the metrics port is taken) reaches the
    shell as the exit status and message of the command, and leaves no pid file behind."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        mport = busy.getsockname()[1]
        pidfile = tmp_path / "mc.pid"
        r = run_daemonized(["-P", str(pidfile), "--metrics-listen", f"127.0.0.1:{mport}"], tmp_path)
    assert r.returncode == 71, r.stderr
    assert b"failed to listen on metrics address" in r.stderr
    assert not pidfile.exists()
    assert not (tmp_path / "port").exists()


def test_daemonize_bind_failure_exit_71(mcpy, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "memcachepy", *(["-u", "root"] if IS_ROOT else []),
                            "-d", "-U", "0", "-l", "127.0.0.1", "-p", str(port)],
                           cwd=str(REPO_ROOT), capture_output=True, timeout=15)
    assert r.returncode == 71
    assert f"failed to listen on TCP port {port}: Address already in use".encode() in r.stderr


def test_daemonize_unwritable_log_file_refused(mcpy, tmp_path):
    r = run_daemonized(["--log-file", str(tmp_path / "no" / "such" / "dir.log")], tmp_path)
    assert r.returncode == 71
    assert b"cannot open log file" in r.stderr and b"No such file or directory" in r.stderr


def test_pidfile_in_foreground_and_stale_pid_warning(kind, spawn, tmp_path):
    """memcached writes -P in the foreground too and warns when the file names a live
    process; memcachepy does the same with the same words."""
    pidfile = tmp_path / "mc.pid"
    pidfile.write_text(f"{os.getpid()}\n")       # a running pid that is not the daemon
    p = spawn(argv_for(kind, ["-P", str(pidfile)]))
    p.wait_port()
    assert wait_for(lambda: pidfile.read_text() == f"{p.proc.pid}\n")
    assert (f"WARNING: The pid file contained the following (running) pid: {os.getpid()}"
            in p.stderr())
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    if kind == KIND_MEMCACHEPY:
        # memcached leaves it when not daemonized; memcachepy removes its own file always.
        assert not pidfile.exists()


# ----------------------------------------------------------------------- -u


@pytest.mark.parametrize("k", [KIND_MEMCACHED, KIND_MEMCACHEPY])
def test_root_without_u_is_refused(k, mcpy):
    if not IS_ROOT:
        pytest.skip("only root is refused")
    if k == KIND_MEMCACHED and not os.access(MEMCACHED_BIN, os.X_OK):
        pytest.skip("memcached not installed")
    r = subprocess.run(argv_for(k, [], user=False), cwd=str(REPO_ROOT), capture_output=True,
                       timeout=10)
    assert r.returncode == 64
    assert r.stderr == b"can't run as root without the -u switch\n"


def test_unknown_user_exit_67(kind):
    if not IS_ROOT:
        pytest.skip("-u is only looked at when root")
    r = subprocess.run(argv_for(kind, ["-u", "no-such-user-here"]), cwd=str(REPO_ROOT),
                       capture_output=True, timeout=10)
    assert r.returncode == 67
    assert b"can't find the user no-such-user-here to switch to\n" in r.stderr


@need_root
def test_drop_to_nobody_after_binding(mcpy, spawn, world_dir):
    """Binding happens as root (a port below 1024 would work), then the daemon runs as
    nobody with no supplementary groups; the unix socket made before the switch is handed
    to nobody (as memcached, which creates it after the switch), keeps serving, and is
    removed at exit."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    sock = world_dir / "mc.sock"
    argv = [sys.executable, "-m", "memcachepy", "-u", "nobody", "-s", str(sock), "-a", "0700", "-v"]
    p = spawn(argv, workdir=world_dir)
    assert wait_for(lambda: sock.exists(), 15), p.stderr()
    assert wait_for(lambda: "running as user nobody" in p.stderr(), 5), p.stderr()
    st = proc_status(p.proc.pid)
    assert st["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert st["Gid"].split() == [str(nobody.pw_gid)] * 4
    assert st["Groups"] == ""
    sst = os.stat(sock)
    assert (sst.st_uid, sst.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert sst.st_mode & 0o777 == 0o700
    assert request(str(sock), b"set k 0 0 2\r\nhi\r\n") == b"STORED\r\n"
    assert request(str(sock), b"get k\r\n", until=b"END\r\n") == b"VALUE k 0 2\r\nhi\r\nEND\r\n"
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0, p.stderr()
    assert not sock.exists()


@need_root
def test_daemonized_drop_to_nobody(mcpy, world_dir):
    pidfile, logfile = world_dir / "mc.pid", world_dir / "mc.log"
    r = run_daemonized(["-v", "-u", "nobody", "-P", str(pidfile), "--log-file", str(logfile)],
                       world_dir)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        st = proc_status(pid)
        assert st["Uid"].split()[0] == str(os.stat(pidfile).st_uid) != "0"
        # A log file the daemon created as root is handed over, so SIGHUP can reopen it later.
        assert os.stat(logfile).st_uid == int(st["Uid"].split()[0])
        logfile.rename(world_dir / "mc.log.1")
        os.kill(pid, signal.SIGHUP)
        assert wait_for(lambda: logfile.exists() and "reopened log file" in logfile.read_text())
        assert os.stat(logfile).st_uid == int(st["Uid"].split()[0])
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    assert not pidfile.exists()


@need_root
def test_low_port_bound_before_the_switch(mcpy, spawn, world_dir):
    """Listeners are bound as root, then the daemon becomes nobody: a port below 1024
    works (memcached binds after its switch, so it cannot)."""
    low = None
    for port in range(700, 1000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            low = port
            break
    if low is None:
        pytest.skip("no free port below 1024")
    p = spawn([sys.executable, "-m", "memcachepy", "-u", "nobody", "-U", "0", "-l", "127.0.0.1",
               "-p", str(low)], workdir=world_dir)
    assert p.wait_port() == low
    assert request(("127.0.0.1", low), b"version\r\n").startswith(b"VERSION ")
    assert proc_status(p.proc.pid)["Uid"].split()[0] != "0"


def test_daemonize_with_v_keeps_stderr(mcpy, tmp_path):
    """memcached -d -v keeps its stdio; so does memcachepy when there is no --log-file."""
    err = tmp_path / "err"
    env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(tmp_path / "port"))
    pidfile = tmp_path / "pid"
    with open(err, "wb") as fh:
        r = subprocess.run(argv_for(KIND_MEMCACHEPY, ["-d", "-v", "-P", str(pidfile)]),
                           cwd=str(REPO_ROOT), env=env, stdout=subprocess.DEVNULL, stderr=fh,
                           timeout=15)
    assert r.returncode == 0, err.read_text()
    pid = int(pidfile.read_text())
    try:
        assert os.readlink(f"/proc/{pid}/fd/2") == str(err)
        assert wait_for(lambda: "daemon started" in err.read_text())
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    assert "INFO stopped" in err.read_text()


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_0(kind, spawn, sig):
    p = spawn(argv_for(kind, []))
    p.wait_port()
    p.proc.send_signal(sig)
    assert p.wait() == 0
    assert p.stderr() == ""        # nothing to say about a normal stop without -v


def test_sigusr1_graceful_stop(kind, spawn):
    p = spawn(argv_for(kind, []))
    port = p.wait_port()
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        p.proc.send_signal(signal.SIGUSR1)
        assert p.wait() == 0
    finally:
        c.close()
    # memcached says this whatever -v is.
    assert "Gracefully stopping" in p.stderr()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_sighup_without_log_file_keeps_running(kind, spawn):
    p = spawn(argv_for(kind, []))
    port = p.wait_port()
    p.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert p.proc.poll() is None
    assert request(("127.0.0.1", port), b"version\r\n").startswith(b"VERSION ")


def test_signal_storm_then_sigterm_stops_promptly(kind, spawn):
    # A signal can land while the main thread is inside the lock its own handler would
    # take; memcachepy's handler once called threading.Event.set() and a SIGTERM then
    # left the daemon deadlocked (seen once in CI). Thousands of SIGHUPs make that window
    # likely; the daemon must still serve, and stop at once on SIGTERM.
    p = spawn(argv_for(kind, []))
    port = p.wait_port()
    for _ in range(3000):
        p.proc.send_signal(signal.SIGHUP)
    assert request(("127.0.0.1", port), b"version\r\n").startswith(b"VERSION ")
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    assert time.monotonic() - t0 < 5


def test_sighup_reopens_log_file_from_config_logfile(mcpy, spawn, tmp_path):
    """`logfile PATH` (Debian's memcached.conf) is --log-file: the log, including the
    core's -vv traffic lines, goes to fd 2 = that file; after a logrotate-style rename,
    SIGHUP makes a new file and later lines land there."""
    logfile = tmp_path / "mc.log"
    conf = tmp_path / "mc.conf"
    conf.write_text(f"logfile {logfile}\n-vv\n")
    p = spawn(argv_for(KIND_MEMCACHEPY, ["--config", str(conf)]))
    port = p.wait_port()
    assert request(("127.0.0.1", port), b"get before\r\n") == b"END\r\n"
    assert wait_for(lambda: "get before" in logfile.read_text())
    logfile.rename(tmp_path / "mc.log.1")
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: logfile.exists() and "reopened log file" in logfile.read_text())
    assert request(("127.0.0.1", port), b"get after\r\n") == b"END\r\n"
    assert wait_for(lambda: "get after" in logfile.read_text())
    old = (tmp_path / "mc.log.1").read_text()
    assert "get before" in old and "get after" not in old
    assert "slab class   1:" in old
    assert p.stderr() == ""
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0


def test_unwritable_log_file_in_foreground_falls_back_to_stderr(mcpy, spawn, tmp_path):
    p = spawn(argv_for(KIND_MEMCACHEPY, ["--log-file", str(tmp_path / "nodir" / "x.log")]))
    port = p.wait_port()
    assert request(("127.0.0.1", port), b"version\r\n").startswith(b"VERSION ")
    assert re.search(r"^ERROR cannot open log file .*nodir/x\.log: No such file or directory; "
                     r"logging to stderr$", p.stderr(), re.M), p.stderr()


# --------------------------------------------------------------------- logs


def test_verbose_lifecycle_lines(mcpy, spawn):
    p = spawn(argv_for(KIND_MEMCACHEPY, ["-v"]))
    port = p.wait_port()
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    lines = p.stderr().splitlines()
    assert lines[0].startswith("INFO memcachepy ") and "starting: pid" in lines[0]
    assert f"INFO listening on inet 127.0.0.1:{port}" in lines
    tail = lines[lines.index("INFO Signal handled: SIGTERM."):]
    assert tail == ["INFO Signal handled: SIGTERM.", "INFO Exiting normally",
                    "INFO stopping: closing listeners and connections", "INFO stopped"]


def test_quiet_by_default(mcpy, spawn):
    p = spawn(argv_for(KIND_MEMCACHEPY, []))
    p.wait_port()
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    assert p.stderr() == ""


def test_journal_priority_prefixes(mcpy, spawn, tmp_path):
    """Under systemd ($JOURNAL_STREAM names fd 2) lines carry sd-daemon "<N>" priorities,
    so the journal stores real levels; elsewhere the level is a word."""
    # Learn the device:inode the stderr file will have: Proc creates it, so pre-create.
    err = tmp_path / "stderr"
    err.write_bytes(b"")
    st = os.stat(err)
    p = spawn(argv_for(KIND_MEMCACHEPY, ["-v", "--log-file", str(tmp_path / "x" / "y")]),
              env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    p.wait_port()
    p.proc.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    text = p.stderr()
    assert re.search(r"^<3>cannot open log file .*; logging to stderr$", text, re.M), text
    assert re.search(r"^<6>listening on inet 127\.0\.0\.1:\d+$", text, re.M), text
    assert "<6>stopped\n" in text


def vv_traffic(kind: str, spawn, workdir: Path) -> list[str]:
    p = spawn(argv_for(kind, ["-vv"]), workdir=workdir)
    port = p.wait_port()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"set a 0 0 1\r\nx\r\nget a b\r\ndelete zz\r\n")
        buf = b""
        while not buf.endswith(b"NOT_FOUND\r\n"):
            buf += s.recv(4096)
    time.sleep(0.2)
    p.proc.send_signal(signal.SIGTERM)
    p.wait()
    # fd numbers differ between the daemons
    return [re.sub(r"^([<>])\d+ ", r"\1N ", line) for line in p.stderr().splitlines()
            if re.match(r"^[<>]\d+ ", line)]


def test_vv_command_lines_match_memcached(mcpy, spawn, tmp_path):
    if not os.access(MEMCACHED_BIN, os.X_OK):
        pytest.skip("memcached not installed")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    want = vv_traffic(KIND_MEMCACHED, spawn, tmp_path / "a")
    got = vv_traffic(KIND_MEMCACHEPY, spawn, tmp_path / "b")
    # memcached also announces each listener ("<N server listening ...").
    want = [line for line in want if "server listening" not in line]
    assert want == ["<N new auto-negotiating client connection", "<N set a 0 0 1", ">N STORED",
                    "<N get a b", ">N sending key a", ">N END", "<N delete zz", ">N NOT_FOUND",
                    "<N connection closed."]
    assert got == want


# ------------------------------------------------------------ systemd units


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memcachepy", *args], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=30)


def test_print_unit_from_main_cli():
    r = cli("--print-unit")
    assert r.returncode == 0, r.stderr
    assert "[Service]" in r.stdout and "Type=notify" in r.stdout
    r = cli("--print-unit", "memcachepy.socket")
    assert r.returncode == 0 and "[Socket]" in r.stdout
    r = cli("--print-unit=memcachepy@.service", "--exec", "/opt/mc/bin/memcachepy")
    assert r.returncode == 0
    assert re.search(r"^ExecStart=/opt/mc/bin/memcachepy ", r.stdout, re.M), r.stdout
    r = cli("--print-unit", "nope.service")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_install_systemd_from_main_cli(tmp_path):
    r = cli("install-systemd", "--dest", str(tmp_path), "--exec", "/usr/bin/memcachepy",
            "--no-config")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["memcachepy.service", "memcachepy.socket",
                                            "memcachepy@.service"]
    assert "ExecStart=/usr/bin/memcachepy " in (tmp_path / "memcachepy.service").read_text()
    r = cli("install-systemd", "--dest", "/proc/no/such", "--no-config")
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_descriptor_limit_follows_conn_limit(start_daemon) -> None:
    """memcached sets its open-files limit from -c at start-up; memcachepy raises its
    soft limit to fit -c (plus a margin) the same way."""
    d = start_daemon("memcachepy", "-c", "5000")
    with open(f"/proc/{d.proc.pid}/limits") as f:
        line = next(ln for ln in f if ln.startswith("Max open files"))
    soft = int(line.split()[3])
    assert soft >= 5000, line
