# memcachepy.systemd — talking to systemd without libsystemd.
#
# Owns: the sd_notify datagram protocol ($NOTIFY_SOCKET, path or abstract),
# the watchdog pinger thread (WATCHDOG_USEC / WATCHDOG_PID), socket
# activation (LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES), and the unit files
# shipped in memcachepy/data/ (print them, or install them with the ExecStart
# path of this installation filled in).
#
# Why not python-systemd: it is a compiled dependency for four tiny wire
# formats.  Everything here is a no-op when the daemon is not run by systemd
# (no NOTIFY_SOCKET, no LISTEN_FDS), so the server may call it
# unconditionally.  Nothing here is on a request path.
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
from importlib import resources
from typing import Callable, Iterable, MutableMapping, Optional

__all__ = [
    "notify",
    "Notifier",
    "listen_fds",
    "listen_fds_with_names",
    "listen_sockets",
    "watchdog_interval",
    "version_probe",
    "connectable_host",
    "UNIT_FILES",
    "unit_text",
    "install_units",
    "main",
]

SD_LISTEN_FDS_START = 3

# Unit files shipped in memcachepy/data/.  The socket unit is optional
# (socket activation); the templated service runs one daemon per port.
UNIT_FILES = (
    "memcachepy.service",
    "memcachepy.socket",
    "memcachepy@.service",
)
# The ExecStart line in the shipped units names this path; `install` and
# `print-unit --exec` replace it with the real console script.
DEFAULT_EXEC = "/usr/local/bin/memcachepy"


def _socket_address(path: str) -> str | bytes:
    # A leading "@" names a Linux abstract socket: the kernel address starts
    # with a NUL byte instead.
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def notify(state: str, *, unset_environment: bool = False,
           notify_socket: Optional[str] = None) -> bool:
    """Send one sd_notify message (e.g. "READY=1\\nSTATUS=...").

    Returns True if a datagram was sent, False when there is no
    NOTIFY_SOCKET (not started by systemd, or Type= is not notify).
    Send errors are swallowed: a lost status line must never take the
    daemon down.
    """
    path = notify_socket if notify_socket is not None else os.environ.get("NOTIFY_SOCKET")
    if unset_environment:
        os.environ.pop("NOTIFY_SOCKET", None)
    if not path or path[0] not in "/@":
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(_socket_address(path))
            s.sendall(state.encode("utf-8", "replace"))
        return True
    except OSError:
        return False


def watchdog_interval(environ: Optional[MutableMapping[str, str]] = None) -> Optional[float]:
    """Seconds between watchdog pings, or None when the watchdog is off.

    systemd sets WATCHDOG_USEC (and WATCHDOG_PID, meant for exactly one
    process); pinging at half the timeout is what sd_watchdog_enabled(3)
    recommends so one late ping does not kill a healthy daemon.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


class Notifier:
    """The daemon's single handle on systemd's notification socket.

    Typical life: ``n = Notifier(); n.status("binding listeners");``
    bind everything; ``n.ready("accepting connections on ...")``;
    ``n.start_watchdog(health_check)``; on SIGTERM ``n.stopping()``;
    after the workers stopped ``n.stop_watchdog()``.
    """

    def __init__(self, notify_socket: Optional[str] = None,
                 environ: Optional[MutableMapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path: Optional[str] = (
            notify_socket if notify_socket is not None else env.get("NOTIFY_SOCKET"))
        self.watchdog_seconds: Optional[float] = watchdog_interval(env)
        self._wd_thread: Optional[threading.Thread] = None
        self._wd_stop = threading.Event()
        self.watchdog_failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    def send(self, *fields: str) -> bool:
        if not self.socket_path:
            return False
        return notify("\n".join(fields), notify_socket=self.socket_path)

    @staticmethod
    def _status_field(text: str) -> str:
        # STATUS= is one line; a newline would start a new (bogus) field.
        return "STATUS=" + " ".join(str(text).split("\n"))

    def ready(self, status: Optional[str] = None) -> bool:
        """Tell systemd start-up is complete; call after every listener is bound."""
        fields = ["READY=1"]
        if status:
            fields.append(self._status_field(status))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(self._status_field(text))

    def stopping(self, status: Optional[str] = "shutting down") -> bool:
        fields = ["STOPPING=1"]
        if status:
            fields.append(self._status_field(status))
        return self.send(*fields)

    def reloading(self, status: Optional[str] = None) -> bool:
        fields = ["RELOADING=1"]
        if status:
            fields.append(self._status_field(status))
        return self.send(*fields)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        # Asks systemd to act as if the watchdog timed out (restart policy).
        return self.send("WATCHDOG=trigger")

    def errno(self, err: int) -> bool:
        return self.send(f"ERRNO={int(err)}")

    def start_watchdog(self, health_check: Optional[Callable[[], bool]] = None,
                       interval: Optional[float] = None) -> bool:
        """Start a daemon thread that sends WATCHDOG=1 every interval.

        ``health_check`` runs before each ping; a ping is skipped while it
        returns False or raises, so a wedged server stops pinging and
        systemd restarts it (WatchdogSec= elapses).  Returns False when
        the watchdog is not enabled for this process.
        """
        period = interval if interval is not None else self.watchdog_seconds
        if not period or not self.socket_path:
            return False
        if self._wd_thread is not None and self._wd_thread.is_alive():
            return True
        self._wd_stop.clear()

        def run() -> None:
            while True:
                healthy = True
                if health_check is not None:
                    try:
                        healthy = bool(health_check())
                    except Exception:
                        healthy = False
                if healthy:
                    self.watchdog()
                else:
                    self.watchdog_failures += 1
                if self._wd_stop.wait(period):
                    return

        self._wd_thread = threading.Thread(target=run, name="memcachepy-watchdog",
                                           daemon=True)
        self._wd_thread.start()
        return True

    def stop_watchdog(self, timeout: float = 5.0) -> None:
        self._wd_stop.set()
        t = self._wd_thread
        if t is not None:
            t.join(timeout)
        self._wd_thread = None


def connectable_host(host: str) -> str:
    """The address to reach a listener bound to host from this machine.

    A wildcard bind ("", 0.0.0.0, ::) is reached over loopback.
    """
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.strip("[]")


def version_probe(host: str, port: int, timeout: float = 2.0,
                  unix_path: Optional[str] = None) -> Callable[[], bool]:
    """A watchdog health check: the daemon answers `version` on its own port.

    Goes through accept, a worker and the parser, so a hung event loop
    fails it.  Connection refused / timeout / wrong reply => unhealthy.
    With unix_path the check goes through that unix socket instead.
    """
    host = connectable_host(host)
    family = socket.AF_UNIX if unix_path else (
        socket.AF_INET6 if ":" in host else socket.AF_INET)
    address = unix_path if unix_path else (host, port)

    def check() -> bool:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(address)
                s.sendall(b"version\r\n")
                buf = b""
                while not buf.endswith(b"\r\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        return False
                    buf += chunk
                return buf.startswith(b"VERSION ")
        except OSError:
            return False

    return check


def listen_fds_with_names(unset_environment: bool = True,
                          environ: Optional[MutableMapping[str, str]] = None) -> list[tuple[int, str]]:
    """Sockets passed by systemd socket activation, as (fd, name) pairs.

    Only honoured when LISTEN_PID is this process (the variables leak into
    children otherwise).  The fds are marked close-on-exec, as
    sd_listen_fds(3) does.  Empty list when not socket-activated.
    """
    env = os.environ if environ is None else environ
    try:
        pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        pid, count = -1, 0
    names_raw = env.get("LISTEN_FDNAMES")
    if unset_environment:
        for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(k, None)
    if pid != os.getpid() or count <= 0:
        return []
    names = names_raw.split(":") if names_raw else []
    out: list[tuple[int, str]] = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue
        out.append((fd, names[i] if i < len(names) else "unknown"))
    return out


def listen_fds(unset_environment: bool = True,
               environ: Optional[MutableMapping[str, str]] = None) -> list[int]:
    """File descriptors passed by socket activation (see listen_fds_with_names)."""
    return [fd for fd, _ in listen_fds_with_names(unset_environment, environ)]


def listen_sockets(unset_environment: bool = True,
                   environ: Optional[MutableMapping[str, str]] = None) -> list[socket.socket]:
    """Like listen_fds() but wrapped as socket objects (family/type autodetected).

    The socket objects own the fds: closing one closes the fd.  Call
    ``.detach()`` before handing the raw fd to the compiled core.
    """
    return [socket.socket(fileno=fd) for fd in listen_fds(unset_environment, environ)]


# ---------------------------------------------------------------------------
# Unit files


def unit_text(name: str, exec_path: Optional[str] = None) -> str:
    """The text of a shipped unit file, ExecStart rewritten to exec_path if given."""
    if name not in UNIT_FILES:
        raise KeyError(f"unknown unit file {name!r}; shipped: {', '.join(UNIT_FILES)}")
    text = resources.files("memcachepy").joinpath("data").joinpath(name).read_text()
    if exec_path:
        text = text.replace(DEFAULT_EXEC, exec_path)
    return text


def default_exec_path() -> str:
    """Where the `memcachepy` console script of this installation lives."""
    found = shutil.which("memcachepy")
    if found:
        return os.path.abspath(found)
    cand = os.path.join(os.path.dirname(sys.executable), "memcachepy")
    if os.access(cand, os.X_OK):
        return cand
    return DEFAULT_EXEC


def install_units(dest_dir: str = "/etc/systemd/system",
                  names: Iterable[str] = UNIT_FILES,
                  exec_path: Optional[str] = None,
                  config_example_to: Optional[str] = "/etc/memcachepy.conf") -> list[str]:
    """Write the unit files (and, if absent, the example config); return paths written."""
    exe = exec_path or default_exec_path()
    os.makedirs(dest_dir, exist_ok=True)
    written = []
    for name in names:
        path = os.path.join(dest_dir, name)
        with open(path, "w") as f:
            f.write(unit_text(name, exe))
        os.chmod(path, 0o644)
        written.append(path)
    if config_example_to and not os.path.exists(config_example_to):
        text = resources.files("memcachepy").joinpath("data").joinpath("memcachepy.conf").read_text()
        os.makedirs(os.path.dirname(config_example_to) or ".", exist_ok=True)
        with open(config_example_to, "w") as f:
            f.write(text)
        os.chmod(config_example_to, 0o644)
        written.append(config_example_to)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    """`memcachepy-systemd` / `python -m memcachepy.systemd`:

    print-unit [NAME] [--exec PATH]   print a unit file (default memcachepy.service)
    install [--dest DIR] [--exec PATH] [--no-config]
                                      write all unit files, then run
                                      `systemctl daemon-reload` yourself
    """
    p = argparse.ArgumentParser(prog="memcachepy-systemd",
                                description="print or install memcachepy's systemd units")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("print-unit", help="print a unit file to stdout")
    pp.add_argument("name", nargs="?", default="memcachepy.service", choices=UNIT_FILES)
    pp.add_argument("--exec", dest="exec_path", default=None,
                    help="path of the memcachepy executable for ExecStart= "
                         "(default: the one on PATH)")
    pi = sub.add_parser("install", help="write the unit files into a directory")
    pi.add_argument("--dest", default="/etc/systemd/system")
    pi.add_argument("--exec", dest="exec_path", default=None)
    pi.add_argument("--no-config", action="store_true",
                    help="do not create /etc/memcachepy.conf from the example")
    pi.add_argument("--config-path", default="/etc/memcachepy.conf")
    args = p.parse_args(argv)
    if args.cmd == "print-unit":
        sys.stdout.write(unit_text(args.name, args.exec_path or default_exec_path()))
        return 0
    written = install_units(args.dest, exec_path=args.exec_path,
                            config_example_to=None if args.no_config else args.config_path)
    for path in written:
        print(f"wrote {path}")
    print("now run: systemctl daemon-reload && systemctl enable --now memcachepy.service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
