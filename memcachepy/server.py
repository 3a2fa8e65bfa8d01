# memcachepy.server — start-up, threads, signals and shutdown.
#
# Owns the process around the compiled core: binding the listening sockets
# (Python does this once, so addresses, IPv6 and unix sockets are easy to get
# right), reporting the ports, daemonizing and dropping privileges, starting
# one acceptor thread and -t worker threads (each enters the core once and runs
# there with the GIL released until shutdown), and turning SIGTERM / SIGINT /
# SIGUSR1 into a prompt, clean stop. No Python runs per request.
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import stat
import sys
import threading
from typing import List, Optional, Tuple

from .settings import Settings

log = logging.getLogger("memcachepy")

LISTEN_TCP = 0
LISTEN_UNIX = 1


def _split_host_port(addr: str, default_port: int) -> Tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or 'v6' -> (host, port)."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host, int(port)
    return addr, default_port


class ListenError(Exception):
    pass


class MemcacheServer:
    """One daemon: its settings, sockets, core and threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sockets: List[Tuple[socket.socket, int]] = []
        self.bound: List[Tuple[str, str, int]] = []   # (family, host, port)
        self.core = None
        self.threads: List[threading.Thread] = []
        self._stop = threading.Event()
        self.exit_code = 0

    # ------------------------------------------------------------ sockets
    def bind(self, inherited_fds: Optional[List[int]] = None) -> None:
        s = self.settings
        if inherited_fds:
            for fd in inherited_fds:
                sock = socket.socket(fileno=fd)
                kind = LISTEN_UNIX if sock.family == socket.AF_UNIX else LISTEN_TCP
                sock.setblocking(False)
                self.sockets.append((sock, kind))
                self._record(sock, kind)
            return
        if s.domain_socket:
            self._bind_unix(s.domain_socket, s.unix_mask)
            return
        addrs = s.listen or [""]
        for addr in addrs:
            host, port = _split_host_port(addr, s.port)
            self._bind_tcp(host, port)

    def _bind_tcp(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                       0, socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ListenError(f"getaddrinfo(): {e.strerror}") from None
        if not host:
            # INADDR_ANY: one IPv4 socket is what memcached users expect by default.
            infos = [i for i in infos if i[0] == socket.AF_INET] or infos
        bound_any = False
        for family, stype, proto, _, sockaddr in infos:
            sock = socket.socket(family, stype, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                sock.close()
                if e.errno == errno.EADDRINUSE:
                    raise ListenError(f"failed to listen on TCP port {port}: Address already in use") from None
                raise ListenError(f"bind(): {e.strerror}") from None
            sock.listen(self.settings.backlog)
            sock.setblocking(False)
            self.sockets.append((sock, LISTEN_TCP))
            self._record(sock, LISTEN_TCP)
            bound_any = True
        if not bound_any:
            raise ListenError(f"failed to listen on {host}:{port}")

    def _bind_unix(self, path: str, mask: int) -> None:
        try:
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(~mask & 0o777)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise ListenError(f"bind(): {e.strerror}: {path}") from None
        finally:
            os.umask(old)
        sock.listen(self.settings.backlog)
        sock.setblocking(False)
        self.sockets.append((sock, LISTEN_UNIX))
        self._record(sock, LISTEN_UNIX)

    def _record(self, sock: socket.socket, kind: int) -> None:
        if kind == LISTEN_UNIX:
            self.bound.append(("UNIX", str(sock.getsockname()), 0))
        else:
            host, port = sock.getsockname()[:2]
            fam = "INET6" if sock.family == socket.AF_INET6 else "INET"
            self.bound.append((fam, host, port))

    @property
    def port(self) -> int:
        for fam, _, port in self.bound:
            if fam != "UNIX":
                return port
        return 0

    def write_port_file(self) -> None:
        """memcached's MEMCACHED_PORT_FILENAME convention: tests learn -p 0 ports here."""
        path = os.environ.get("MEMCACHED_PORT_FILENAME")
        if not path:
            return
        tmp = path + ".lck"
        with open(tmp, "w") as f:
            for fam, _, port in self.bound:
                if fam != "UNIX":
                    f.write(f"TCP {fam}: {port}\n")
        os.rename(tmp, path)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from . import _core
        self.core = _core.Server(self.settings.to_core())
        for sock, kind in self.sockets:
            self.core.add_listener(sock.fileno(), kind)
        for i in range(self.settings.num_threads):
            t = threading.Thread(target=self.core.run_worker, args=(i,), name=f"worker-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self.core.run_acceptor, name="acceptor", daemon=True)
        t.start()
        self.threads.append(t)
        for fam, host, port in self.bound:
            log.info("listening on %s %s%s", fam.lower(), host, f":{port}" if fam != "UNIX" else "")

    def request_stop(self, code: int = 0) -> None:
        self.exit_code = code
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        if self.core is None:
            return
        self.core.stop()
        for t in self.threads:
            t.join(timeout=10)
        for sock, kind in self.sockets:
            try:
                if kind == LISTEN_UNIX:
                    os.unlink(sock.getsockname())
            except OSError:
                pass
            sock.close()
        self.core.close()
        self.core = None


def _daemonize() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _drop_privileges(user: str) -> None:
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ListenError(f"can't find the user {user} to switch to") from None
    if os.geteuid() != 0 or pw.pw_uid == 0:
        return
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def run(settings: Settings) -> int:
    logging.basicConfig(
        level=logging.DEBUG if settings.verbose > 1 else logging.INFO if settings.verbose else logging.WARNING,
        format="%(message)s", stream=sys.stderr)
    from . import systemd
    notifier = systemd.Notifier()
    notifier.status("binding listeners")
    server = MemcacheServer(settings)
    try:
        server.bind(systemd.listen_fds() or None)
        if settings.user:
            _drop_privileges(settings.user)
    except ListenError as e:
        sys.stderr.write(f"{e}\n")
        return 71   # EX_OSERR, as memcached
    if settings.daemonize:
        _daemonize()
    if settings.pidfile:
        try:
            with open(settings.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as e:
            sys.stderr.write(f"Could not open the pid file {settings.pidfile} for writing: {e.strerror}\n")
    def on_signal(signum, frame):  # noqa: ARG001
        log.info("Signal handled: %s.", signal.Signals(signum).name)
        notifier.stopping()
        server.request_stop(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        server.start()
    except (OSError, ValueError, MemoryError) as e:
        sys.stderr.write(f"failed to start: {e}\n")
        return 1
    if settings.verbose > 1:
        from . import _core
        for cls, size, perslab in _core.slab_classes():
            sys.stderr.write(f"slab class {cls:3d}: chunk size {size:9d} perslab {perslab:7d}\n")
    # The probe target for the watchdog and the metrics scraper: the first
    # TCP listener (over loopback when bound to a wildcard), else the unix socket.
    tcp = [(h, p) for fam, h, p in server.bound if fam != "UNIX"]
    unix = [h for fam, h, _ in server.bound if fam == "UNIX"]
    t_host, t_port = (systemd.connectable_host(tcp[0][0]), tcp[0][1]) if tcp else ("", 0)
    t_unix = None if tcp else (unix[0] if unix else None)
    exporter = None
    if settings.metrics_listen:
        from . import metrics
        m_host, m_port = metrics.parse_listen(settings.metrics_listen)
        try:
            exporter = metrics.start_exporter(m_host, m_port, t_host, t_port, target_unix=t_unix)
        except OSError as e:
            sys.stderr.write(f"failed to listen on metrics address {settings.metrics_listen}: "
                             f"{e.strerror}\n")
            server.stop()
            return 71
    server.write_port_file()
    where = ", ".join(h if fam == "UNIX" else f"{h}:{p}" for fam, h, p in server.bound)
    notifier.ready(f"accepting connections on {where}; {settings.num_threads} threads")
    notifier.start_watchdog(systemd.version_probe(t_host, t_port, unix_path=t_unix))
    try:
        server.wait()
    finally:
        notifier.stop_watchdog()
        if exporter is not None:
            exporter.stop()
        server.stop()
        if settings.pidfile:
            try:
                os.unlink(settings.pidfile)
            except OSError:
                pass
    return server.exit_code
