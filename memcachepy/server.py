# memcachepy.server — start-up, threads, signals and shutdown.
#
# Owns the process around the compiled core: binding the listening sockets
# (Python does this once, so addresses, IPv6 and unix sockets are easy to get
# right), reporting the ports, the log (levels, --log-file as fd 2, reopened
# on SIGHUP), -u privilege drop, -d daemonizing with a readiness handshake,
# the -P pid file, starting one acceptor thread and -t worker threads (each
# enters the core once and runs there with the GIL released until shutdown),
# turning SIGTERM / SIGINT / SIGUSR1 into a prompt, clean stop, and SIGHUP
# into a log reopen and a cluster file reload (discovery.py).  No Python
# runs per request.  Exit statuses are memcached's (docs/operations.md).
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import signal
import socket
import stat
import sys
import threading
from typing import List, Optional, Sequence, Tuple

from . import __version__
from .settings import Settings

log = logging.getLogger("memcachepy")

LISTEN_TCP = 0
LISTEN_UNIX = 1
LISTEN_TLS = 4          # or'ed into a TCP listener's kind under -Z (tls.pxi)
LISTEN_UDP = 2          # a UDP socket: each worker reads a dup of it (udp.pxi)


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
    """One daemon: its settings, sockets, core and threads.

    `core_module` is the compiled core to run (default memcachepy._core);
    memcachepy.embed passes a private copy of it, so that several servers can
    live in one process. `thread_prefix` names the threads."""

    def __init__(self, settings: Settings, core_module: object = None,
                 thread_prefix: str = "") -> None:
        self.settings = settings
        self.core_module = core_module
        self.thread_prefix = thread_prefix
        self.sockets: List[Tuple[socket.socket, int]] = []
        self.bound: List[Tuple[str, str, int]] = []   # (family, host, port)
        self.tls_bound: List[bool] = []               # per TCP entry of bound: under -Z
        # Unix sockets this process created (absolute: -d chdirs to /); an
        # inherited (socket-activated) one belongs to systemd and is never unlinked.
        self.unix_paths: List[str] = []
        self.tls_loaded = False
        self.core = None
        self.restart = None          # memcachepy.restart.RestartFile with -e
        self.threads: List[threading.Thread] = []
        self.stuck_threads: List[str] = []    # names of threads stop() could not join
        self._stop = threading.Event()
        self.exit_code = 0

    # ------------------------------------------------------------ sockets
    def bind(self, inherited_fds: Optional[List[int]] = None) -> None:
        s = self.settings
        if inherited_fds:
            for fd in inherited_fds:
                sock = socket.socket(fileno=fd)
                kind = LISTEN_UNIX if sock.family == socket.AF_UNIX else self._tcp_kind(True)
                sock.setblocking(False)
                self.sockets.append((sock, kind))
                self._record(sock, kind)
            return
        if s.domain_socket:
            self._bind_unix(s.domain_socket, s.unix_mask)
            return
        addrs = s.listen or [""]
        # memcached's ports: 0 means no listener of that kind, -1 any free port
        # (an interface's own port, `-l host:port`, wins for both kinds)
        if s.port != 0:
            for addr in addrs:
                tls = True
                if addr.startswith("notls:"):
                    # memcached: a per-listener opt-out, only meaningful under -Z
                    if not s.ssl_enabled:
                        raise ListenError("'notls' option is valid only when SSL is enabled\n"
                                          f"failed to listen on one of interface(s) {addr}: Success")
                    tls = False
                    addr = addr[len("notls:"):]
                host, port = _split_host_port(addr, s.port)
                self._bind_tcp(host, max(port, 0), self._tcp_kind(tls))
        if s.udpport != 0:
            for addr in addrs:
                if addr.startswith("notls:"):
                    addr = addr[len("notls:"):]
                host, port = _split_host_port(addr, s.udpport)
                self._bind_udp(host, max(port, 0))

    def _tcp_kind(self, tls: bool) -> int:
        return LISTEN_TCP | (LISTEN_TLS if tls and self.settings.ssl_enabled else 0)

    @staticmethod
    def _resolve(host: str, port: int, socktype: int) -> list:
        """getaddrinfo for a listener; with no host (INADDR_ANY) one IPv4 socket, as
        memcached users expect by default."""
        try:
            infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socktype,
                                       0, socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ListenError(f"getaddrinfo(): {e.strerror}") from None
        if not host:
            infos = [i for i in infos if i[0] == socket.AF_INET] or infos
        return infos

    @staticmethod
    def _new_socket(family: int, stype: int, proto: int) -> socket.socket:
        sock = socket.socket(family, stype, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return sock

    def _bind_tcp(self, host: str, port: int, kind: int = LISTEN_TCP) -> None:
        infos = self._resolve(host, port, socket.SOCK_STREAM)
        bound_any = False
        for family, stype, proto, _, sockaddr in infos:
            sock = self._new_socket(family, stype, proto)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                sock.close()
                if e.errno == errno.EADDRINUSE:
                    raise ListenError(f"failed to listen on TCP port {port}: Address already in use") from None
                raise ListenError(f"bind(): {e.strerror}") from None
            sock.listen(self.settings.backlog)
            sock.setblocking(False)
            self.sockets.append((sock, kind))
            self._record(sock, kind)
            bound_any = True
        if not bound_any:
            raise ListenError(f"failed to listen on {host}:{port}")

    def _bind_udp(self, host: str, port: int) -> None:
        for family, stype, proto, _, sockaddr in self._resolve(host, port, socket.SOCK_DGRAM):
            sock = self._new_socket(family, stype, proto)
            try:
                sock.bind(sockaddr)
            except OSError as e:
                sock.close()
                raise ListenError(f"failed to listen on UDP port {port}: {e.strerror}") from None
            sock.setblocking(False)
            self.sockets.append((sock, LISTEN_UDP))
            host_, port_ = sock.getsockname()[:2]
            self.bound.append(("UDP " + ("INET6" if family == socket.AF_INET6 else "INET"),
                               host_, port_))

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
        self.unix_paths.append(os.path.abspath(path))
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
            self.tls_bound.append(bool(kind & LISTEN_TLS))

    def exposed_listeners(self) -> List[str]:
        """TCP listeners reachable from beyond this host that neither TLS nor
        -Y authentication protects (the start-up warning names them)."""
        if self.settings.auth_file:
            return []
        out = []
        tcp = [b for b in self.bound if b[0] != "UNIX"]
        for (fam, host, port), tls in zip(tcp, self.tls_bound):
            if tls:
                continue
            try:
                loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                out.append(f"[{host}]:{port}" if fam == "INET6" else f"{host}:{port}")
        return out

    @property
    def port(self) -> int:
        for fam, _, port in self.bound:
            if fam in ("INET", "INET6"):
                return port
        return 0

    def write_port_file(self) -> None:
        """memcached's MEMCACHED_PORT_FILENAME convention: tests learn -p 0 ports here."""
        path = os.environ.get("MEMCACHED_PORT_FILENAME")
        if not path:
            return
        tmp = path + ".lck"
        try:
            with open(tmp, "w") as f:
                for fam, _, port in self.bound:
                    if fam in ("INET", "INET6"):
                        f.write(f"TCP {fam}: {port}\n")
                    elif fam.startswith("UDP "):
                        f.write(f"{fam}: {port}\n")
            os.rename(tmp, path)
        except OSError as e:
            # Advisory, as in memcached (which opens it after the -u switch too).
            log.error('Failed to open "%s": %s', tmp, e.strerror)

    # ------------------------------------------------------------ lifecycle
    def init_tls(self) -> Optional[str]:
        """Under -Z, build the core's SSL context from the ssl_* settings
        (tls.pxi). None, or memcached's error message."""
        # The compiled core is loaded here, before -u switches users: installed
        # where only root can read (a venv under /root), it could not be
        # imported after the switch (memcached is one binary, loaded at exec).
        if self.core_module is None:
            from . import _core
            self.core_module = _core
        if not self.settings.ssl_enabled:
            return None
        err = self.core_module.tls_init(self.settings.tls_config())
        self.tls_loaded = err is None
        return err

    def start(self) -> None:
        core_module = self.core_module
        if core_module is None:
            from . import _core as core_module
        self.core_module = core_module
        if self.settings.ssl_enabled and not self.tls_loaded:
            # embedded servers (memcachepy.embed) come here without init_tls()
            err = self.init_tls()
            if err is not None:
                raise OSError(err.rstrip("\r\n"))
        cfg = self.settings.to_core()
        if self.settings.memory_file:
            from .restart import RestartFile
            self.restart = RestartFile(self.settings)
            self.restart.open(core_module.restart_item_header())
            cfg.update(memory_region=self.restart.mm, region_slot_size=self.restart.slot_size,
                       region_nslots=self.restart.nslots)
        self.core = core_module.Server(cfg)
        if self.restart is not None and self.restart.warm is not None:
            self.restart.rebuild(core_module)
        if self.settings.cluster_file:
            # before any worker runs: the first `config get cluster` finds the list
            version = core_module.cluster_set(self.settings.cluster_nodes)
            log.info("auto discovery: %s, config version %d", self.settings.cluster_file, version)
        for sock, kind in self.sockets:
            if kind == LISTEN_UDP:
                core_module.udp_add_socket(sock.fileno())   # each worker reads a dup of it
            else:
                self.core.add_listener(sock.fileno(), kind)
        pre = self.thread_prefix
        for i in range(self.settings.num_threads):
            t = threading.Thread(target=self.core.run_worker, args=(i,), name=f"{pre}worker-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self.core.run_acceptor, name=f"{pre}acceptor", daemon=True)
        t.start()
        self.threads.append(t)
        for fam, host, port in self.bound:
            log.info("listening on %s %s%s", fam.lower(), host, f":{port}" if fam != "UNIX" else "")
        for where in self.exposed_listeners():
            log.warning("WARNING: listening on %s without TLS (-Z) or authentication (-Y): "
                        "anyone who can reach it can read and change the cache", where)

    def reload_cluster(self) -> None:
        """SIGHUP: re-read the cluster file. A malformed file is reported and
        the list in force stays; a changed list gets the next version."""
        from . import discovery
        path = self.settings.cluster_file
        if not path or self.core is None:
            return
        _core = self.core_module
        try:
            nodes = discovery.load(path)
            before = _core.cluster_get()
            version = _core.cluster_set(discovery.node_list(nodes))
        except (discovery.ClusterFileError, ValueError) as e:
            current = _core.cluster_get()
            log.error("SIGHUP: %s; keeping cluster config version %d", e,
                      current[0] if current else 0)
            return
        if before is not None and before[0] == version:
            log.info("SIGHUP: cluster file %s unchanged (config version %d)", path, version)
        else:
            log.info("SIGHUP: cluster file %s loaded: config version %d, %d nodes",
                     path, version, len(nodes))

    def request_stop(self, code: int = 0) -> None:
        self.exit_code = code
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        if self.core is None:
            return
        log.info("stopping: closing listeners and connections")
        self.core.stop()
        for t in self.threads:
            t.join(timeout=10)
        stuck = [t.name for t in self.threads if t.is_alive()]
        self.threads = []
        self.close_listeners()
        if self.restart is not None:
            if stuck:
                log.error("[restart] threads still running: metadata not saved; the next "
                          "start will be cold")
            else:
                try:
                    self.restart.save(self.core_module)
                except OSError as e:
                    log.error("[restart] cannot save metadata to %s: %s; the next start "
                              "will be cold", self.restart.meta_path, e.strerror or e)
        if stuck:
            # Freeing the store under a running thread would be a use-after-free:
            # leave it allocated (the process is about to exit, or the caller
            # must not reuse this core); with -e the mapping stays too.
            log.error("threads did not stop: %s; core left allocated", ", ".join(stuck))
            self.stuck_threads = stuck
            self.core = None
            return
        self.core.close()
        self.core = None
        if self.restart is not None:
            self.restart.close()
            self.restart = None

    def close_listeners(self) -> None:
        for sock, _ in self.sockets:
            sock.close()
        self.sockets = []
        for path in self.unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.unix_paths = []


# ---------------------------------------------------------------- logging
#
# Levels: ERROR and WARNING always; NOTICE (memcached's unconditional lines,
# such as "Gracefully stopping") always; INFO (lifecycle) with -v; DEBUG with
# -vv.  The compiled core writes its own -vv lines ("<26 get a", ">26 END")
# straight to fd 2 with C stdio, so a log file has to *be* fd 2: it is
# installed with dup2() and reopened the same way on SIGHUP.

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

# syslog priorities for journald's "<N>" line prefix (sd-daemon(3)).
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                    NOTICE: 5, logging.INFO: 6, logging.DEBUG: 7}


def _stderr_is_journal() -> bool:
    """True when fd 2 is the stream systemd connected to the journal
    ($JOURNAL_STREAM names its device:inode; it leaks into children, hence
    the comparison)."""
    val = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = val.partition(":")
    try:
        st = os.fstat(2)
        return bool(val) and st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError):
        return False


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).split("\n"))


def _formatter(to_file: bool) -> logging.Formatter:
    if to_file:
        # A file outlives the process: stamp the lines.
        return logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    if _stderr_is_journal():
        return _JournalFormatter("%(message)s")    # journald stamps and levels it
    return logging.Formatter("%(levelname)s %(message)s")


def _setup_logging(verbose: int) -> logging.Handler:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else NOTICE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(False))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return handler


class LogFile:
    """--log-file: a file installed as fd 2 (for Python and the C core alike)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)   # -d chdirs to /
        self.fd = -1
        self.created = False

    def open(self) -> None:
        """Open (creating if needed, 0640) for appending; OSError on failure."""
        self.created = not os.path.exists(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def install(self) -> None:
        """Make the opened file fd 2."""
        sys.stderr.flush()
        if self.fd != 2:        # started with fd 2 closed: open() already gave 2
            os.dup2(self.fd, 2)
            os.close(self.fd)
        self.fd = -1

    def reopen(self) -> None:
        """SIGHUP, after logrotate moved the file: open the path anew and swap
        it in under fd 2 (one dup2, so no line is lost to a closed fd)."""
        self.open()
        self.install()


# ------------------------------------------------------------- privileges

EX_USAGE = 64
EX_NOUSER = 67
EX_OSERR = 71


class StartError(Exception):
    """A start-up failure: message for stderr, and memcached's exit status."""

    def __init__(self, message: str, exit_code: int = EX_OSERR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _load_modules_before_user_switch() -> None:
    """Import now every module the running daemon may load later (SIGHUP's
    cluster and config reload, warm restart, metrics, the compiled core): after
    -u switches users, a package installed where only root can read (a venv
    under /root, as the README's install command makes for root) cannot be
    imported any more. memcached is one binary, loaded before it switches."""
    import base64  # noqa: F401  (metrics' basic auth)
    from . import _core, config, discovery, metrics, restart, systemd  # noqa: F401


def _drop_privileges(user: str, chown_paths: Sequence[str] = ()) -> Optional[Tuple[int, int]]:
    """memcached's -u: only when running as root, clear the supplementary
    groups, then set gid, then uid.  Files the daemon made as root and must
    still manage as the user (its unix socket, a new log file) are handed to
    the user first, so that the socket ends up owned as memcached's (which
    creates it after the switch).  Returns (uid, gid), or None if nothing was
    done."""
    if os.geteuid() != 0 and os.getuid() != 0:
        return None          # -u is ignored when not root, as memcached does
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise StartError(f"can't find the user {user} to switch to", EX_NOUSER) from None
    if pw.pw_uid != os.getuid() or pw.pw_gid != os.getgid():
        # Only a real switch can lose read access to the package (-u root as
        # root keeps it, and skips the 5 MB these imports cost).
        _load_modules_before_user_switch()
    for path in chown_paths:
        try:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        except OSError as e:
            log.warning("cannot hand %s to user %s: %s", path, user, e.strerror)
    try:
        os.setgroups([])
    except PermissionError as e:
        # Already without the right to change groups: nothing more to drop.
        log.warning("failed to drop supplementary groups: %s", e.strerror)
    except OSError as e:
        raise StartError(f"failed to drop supplementary groups: {e.strerror}") from None
    try:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError:
        raise StartError(f"failed to assume identity of user {user}") from None
    return pw.pw_uid, pw.pw_gid


# --------------------------------------------------------------- pid file

def _write_pidfile(path: str) -> bool:
    """memcached's save_pid(): warn about a live pid already in the file, then
    write through a temporary name and rename, so a reader never sees an empty
    file.  Failure is reported and not fatal (as memcached)."""
    try:
        with open(path) as f:
            old = int(f.readline().strip() or "0")
        if old > 0 and old != os.getpid():
            os.kill(old, 0)
            sys.stderr.write(f"WARNING: The pid file contained the following (running) pid: {old}\n")
    except (OSError, ValueError):
        pass
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(tmp, path)
    except OSError as e:
        log.error("Could not open the pid file %s for writing: %s", tmp, e.strerror)
        return False
    return True


def _remove_pidfile(path: str) -> None:
    # Only our own: a second daemon started on the same file owns it now.
    try:
        with open(path) as f:
            if int(f.readline().strip() or "0") != os.getpid():
                return
        os.unlink(path)
    except (OSError, ValueError) as e:
        log.error("Could not remove the pid file %s: %s", path, getattr(e, "strerror", e))


# ------------------------------------------------------------- daemonize

def _daemonize(keep_stdio: bool) -> int:
    """-d: fork, setsid, fork again (so the daemon can never reacquire a
    terminal), chdir to /.  The original process does not return: it waits
    on a pipe until the daemon says it is listening (exit 0) or tells it the
    exit status of its failed start — the shell sees the same status as
    without -d.  Returns, in the daemon, the write end of that pipe.

    stdio: stdin and stdout go to /dev/null now; stderr is swapped later,
    at readiness (see _Readiness), so start-up errors still reach the
    terminal that ran the command.  keep_stdio leaves stdout alone (memcached
    keeps its stdio with -v)."""
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(wfd)
        os.waitpid(pid, 0)   # the intermediate child, gone at once
        data = b""
        try:
            while True:
                chunk = os.read(rfd, 64)
                if not chunk:
                    break
                data += chunk
        except KeyboardInterrupt:
            os._exit(130)    # the daemon, in its own session, carries on
        try:
            code = int(data.strip().split()[-1])
        except (ValueError, IndexError):
            sys.stderr.write("memcachepy: the daemon exited before it was ready\n")
            code = 1
        os._exit(code)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    if not keep_stdio:
        os.dup2(devnull, 1)
    os.close(devnull)
    os.set_inheritable(wfd, False)
    return wfd


class _Readiness:
    """Tells the waiting parent of a -d start how it went, once, and moves
    the daemon's stderr off the terminal when it is up."""

    def __init__(self, fd: int, log_file: Optional[LogFile], keep_stderr: bool,
                 handler: logging.Handler) -> None:
        self.fd = fd
        self.log_file = log_file
        self.keep_stderr = keep_stderr
        self.handler = handler

    def ready(self) -> None:
        if self.log_file is not None:
            self.log_file.install()
            self.handler.setFormatter(_formatter(True))
        elif not self.keep_stderr:
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        self.report(0)

    def report(self, code: int) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, f"{code}\n".encode())
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


# ------------------------------------------------------------------- run

def run(settings: Settings) -> int:
    """Start the daemon and serve until a signal stops it; the exit status
    (0 after SIGTERM / SIGINT / SIGUSR1 / `shutdown`)."""
    handler = _setup_logging(settings.verbose)
    daemon = _Lifecycle(settings, handler)
    code = 1
    try:
        code = daemon.main()
    except StartError as e:
        log.error("%s", e)
        code = e.exit_code
    except OSError as e:
        log.error("%s", e)
        code = EX_OSERR
    finally:
        if daemon.readiness is not None:
            daemon.readiness.report(code)
    return code


def _raise_fd_limit(maxconns: int) -> None:
    """Make room for -c connections, as memcached sets its descriptor limit from
    -c at start-up (plus a margin for listeners, event loops and Python's own)."""
    import resource
    want = maxconns + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want) if hard != resource.RLIM_INFINITY else hard))
        return
    except (ValueError, OSError):
        pass
    # No privilege to raise the hard limit (e.g. under the sandboxed units): take what it allows.
    if hard != resource.RLIM_INFINITY and hard < maxconns:
        # memcached refuses to start here; memcachepy runs with what it may have and
        # says so: when descriptors run out, new connections wait in the listen
        # backlog (the acceptor backs off and counts listen_disabled_num).
        log.warning("failed to set rlimit for open files to %d (hard limit %d): fewer than -c "
                    "connections will fit. Start as root or request a smaller maxconns value.",
                    want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


class _Lifecycle:
    """One run of the daemon, from binding to the last unlink."""

    def __init__(self, settings: Settings, handler: logging.Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.log_file = LogFile(settings.log_file) if settings.log_file else None
        self.readiness: Optional[_Readiness] = None
        self.pidfile = os.path.abspath(settings.pidfile) if settings.pidfile else None

    def main(self) -> int:
        from . import systemd
        s = self.settings
        notifier = systemd.Notifier()
        notifier.status("binding listeners")
        _raise_fd_limit(s.maxconns)
        server = MemcacheServer(s)
        # memcached loads its certificates here: before binding, and before -u,
        # so a key only root can read still works
        err = server.init_tls()
        if err is not None:
            raise StartError(err.rstrip("\r\n"), EX_USAGE)
        try:
            server.bind(systemd.listen_fds() or None)
        except ListenError as e:
            raise StartError(str(e), EX_OSERR) from None
        # Opened before the switch to -u, as a shell redirection would be.
        if self.log_file is not None:
            try:
                self.log_file.open()
            except OSError as e:
                msg = f"cannot open log file {self.log_file.path}: {e.strerror}"
                if s.daemonize:
                    # A daemon with nowhere to log: refuse, while a terminal listens.
                    server.close_listeners()
                    raise StartError(msg) from None
                # In the foreground stderr is still there (the journal under
                # systemd, whose sandbox may well forbid /var/log): use it.
                log.error("%s; logging to stderr", msg)
                self.log_file = None
        if s.user:
            owned = list(server.unix_paths)
            if self.log_file is not None and self.log_file.created:
                owned.append(self.log_file.path)
            try:
                ids = _drop_privileges(s.user, owned)
            except StartError:
                server.close_listeners()
                raise
            if ids and ids[0] != 0:
                log.info("running as user %s (uid %d, gid %d)", s.user, *ids)
        if s.daemonize:
            wfd = _daemonize(keep_stdio=bool(s.verbose) and self.log_file is None)
            self.readiness = _Readiness(wfd, self.log_file,
                                        keep_stderr=bool(s.verbose), handler=self.handler)
        elif self.log_file is not None:
            self.log_file.install()
            self.handler.setFormatter(_formatter(True))
        if self.pidfile and not _write_pidfile(self.pidfile):
            self.pidfile = None
        log.info("memcachepy %s (memcached %s compatible) starting: pid %d, %d threads, %d MB",
                 __version__, s.memcached_version, os.getpid(), s.num_threads,
                 s.maxbytes // (1024 * 1024))
        try:
            return self._serve(server, notifier, systemd)
        finally:
            if self.pidfile:
                _remove_pidfile(self.pidfile)

    def _serve(self, server: "MemcacheServer", notifier, systemd) -> int:
        s = self.settings
        pending: List[int] = []
        # The handler only queues the signal and takes no lock: it runs in the
        # main thread between two bytecodes, possibly inside the very lock it
        # would take (a threading.Event.set() here once deadlocked the daemon
        # on SIGTERM). The C-level handler writes a byte to `wake_w`
        # (set_wakeup_fd), which is what wakes the main loop's select().
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)

        def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001
            pending.append(signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            server.start()
        except (OSError, ValueError, MemoryError) as e:
            server.close_listeners()
            raise StartError(f"failed to start: {e}", 1) from None
        try:
            if s.verbose > 1:
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
            if s.metrics_listen:
                from . import metrics
                m_host, m_port = metrics.parse_listen(s.metrics_listen)
                try:
                    exporter = metrics.start_exporter(m_host, m_port, t_host, t_port, target_unix=t_unix,
                                                      hotkeys_top=s.metrics_hotkeys,
                                                      hotkeys_hash=s.metrics_hotkeys_hash)
                except OSError as e:
                    raise StartError(f"failed to listen on metrics address {s.metrics_listen}: "
                                     f"{e.strerror}") from None
                log.info("metrics on http://%s:%d/metrics", m_host, m_port)
            server.write_port_file()
            where = ", ".join(h if fam == "UNIX" else f"{h}:{p}" for fam, h, p in server.bound)
            if self.readiness is not None:
                self.readiness.ready()
                log.info("daemon started: pid %d, accepting connections on %s", os.getpid(), where)
                notifier.send("READY=1", f"MAINPID={os.getpid()}",
                              notifier._status_field(f"accepting connections on {where}; "
                                                     f"{s.num_threads} threads"))
            else:
                notifier.ready(f"accepting connections on {where}; {s.num_threads} threads")
            notifier.start_watchdog(systemd.version_probe(t_host, t_port, unix_path=t_unix))
            self._drop_privileges_seccomp()
            if os.environ.get("MEMCACHEPY_TEST_SECCOMP_PROBE") == "1":
                # test hook (tests/test_seccomp.py): SIGUSR2 makes a forbidden call
                signal.signal(signal.SIGUSR2, on_signal)
            try:
                stop_signal = self._wait(pending, wake_r, server)
            finally:
                notifier.stop_watchdog()
                if exporter is not None:
                    exporter.stop()
            notifier.stopping()
            if stop_signal == signal.SIGUSR1:
                # memcached prints this one whatever -v says.  The stop itself
                # is the normal one: the acceptor stops, each worker finishes
                # the batch of events in hand and closes its connections; with
                # -e, server.stop() then saves the restart metadata (it does
                # for SIGTERM and SIGINT too, where memcached does not).
                log.log(NOTICE, "Gracefully stopping")
            else:
                log.info("Exiting normally")
        finally:
            server.stop()
        log.info("stopped")
        return 0

    def _wait(self, pending: List[int], wake: socket.socket, server: "MemcacheServer") -> int:
        """Serve signals until one asks to stop; return that signal."""
        while True:
            select.select([wake], [], [], 0.5)
            try:
                while wake.recv(64):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            while pending:
                signum = pending.pop(0)
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    self._reopen_log()
                    server.reload_cluster()
                    self._reload_certs()
                    continue
                if signum == signal.SIGUSR2:
                    from . import _core
                    _core.seccomp_forbidden_call()
                    continue
                log.info("Signal handled: %s.", name)
                return signum

    def _drop_privileges_seccomp(self) -> None:
        """-o drop_privileges (on unless no_drop_privileges): memcached's seccomp
        allowlist over every thread, now that start-up is done (linux_priv.h)."""
        if "no_drop_privileges" in self.settings.extended:
            return
        from . import _core
        if not _core.seccomp_supported():
            log.info("drop_privileges: no seccomp filter on this platform or build")
            return
        err = _core.seccomp_install()
        if err is not None:
            log.warning("drop_privileges: seccomp filter not installed: %s", err[1])
            return
        log.info("drop_privileges: seccomp filter installed")

    def _reload_certs(self) -> None:
        """SIGHUP under -Z: `refresh_certs` from outside; a bad pair keeps the old one."""
        if not self.settings.ssl_enabled:
            return
        from . import _core
        err = _core.tls_reload()
        if err is None:
            log.info("SIGHUP: reloaded TLS certificate %s", self.settings.ssl_chain_cert)
        else:
            log.error("SIGHUP: TLS certificates not reloaded, the old ones stay in use: %s", err)

    def _reopen_log(self) -> None:
        if self.log_file is None:
            log.info("SIGHUP: no log file to reopen")
            return
        try:
            self.log_file.reopen()
        except OSError as e:
            # Keep writing to the old file rather than lose the log.
            log.error("SIGHUP: cannot reopen log file %s: %s", self.log_file.path, e.strerror)
            return
        log.info("SIGHUP: reopened log file %s", self.log_file.path)
