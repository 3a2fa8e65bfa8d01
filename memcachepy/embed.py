# memcachepy.embed — a memcachepy server inside the current Python process.
#
#     with memcachepy.Server(memory_mb=64, threads=2) as srv:
#         Client(srv.address)
#
# Owns: the embedded Server object (settings from the daemon's own command-line
# parser, listeners, worker threads and shutdown all come from memcachepy.cli
# and memcachepy.server, unchanged), its test helpers (stats, flush, clock
# control) and the pool of private copies of the compiled core.
#
# Why copies: the core keeps its state in C globals (one store, one clock, one
# set of workers per loaded module), as memcached does per process. Two servers
# at once therefore need two loaded copies of the extension. Python caches an
# extension by its file, and the dynamic linker hands out one handle per file,
# so each copy is the same .so copied to a private temporary file (unlinked as
# soon as it is loaded; an in-memory memfd when the temporary directory does not
# allow executable mappings) and loaded with ExtensionFileLoader without going
# into sys.modules: a separate dlopen handle, hence separate C globals. Cython
# 3's module-init guards are per copy too (checked by the tests). A loaded
# library is never unloaded, so copies are pooled: a stopped server hands its
# copy back (its core destroyed, every counter zeroed by _core_init on the next
# start), and 200 start/stop cycles load one copy. The process-wide
# memcachepy._core (the daemon's, the test Store API's) is never used here, so an
# embedded server and those never disturb each other.
#
# Locks: _CorePool.lock guards the pool's list; a Server is driven by one thread
# at a time (start/close), while its helpers may be called from any thread.
from __future__ import annotations

import atexit
import importlib.machinery
import importlib.util
import itertools
import math
import os
import shutil
import socket
import tempfile
import threading
import weakref
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .server import ListenError, MemcacheServer
from .settings import Settings, SettingsError

Address = Union[Tuple[str, int], str]


class _CorePool:
    """Private copies of memcachepy._core, each one able to run one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: List[ModuleType] = []
        self.loaded = 0

    def take(self) -> ModuleType:
        with self.lock:
            if self.free:
                return self.free.pop()
        mod = self._load()
        with self.lock:
            self.loaded += 1
        return mod

    def give_back(self, mod: ModuleType) -> None:
        with self.lock:
            self.free.append(mod)

    @staticmethod
    def _origin() -> str:
        # The real module is imported first, and so sits in sys.modules: a
        # Cython module's init puts itself there when its name is missing, and
        # a copy must never become the process's memcachepy._core.
        try:
            from . import _core
        except ImportError:
            raise ImportError("memcachepy._core is not built: run "
                              "`python3 setup.py build_ext --inplace` or `pip install .`") from None
        return _core.__file__

    @staticmethod
    def _exec(path: str) -> ModuleType:
        import sys
        real = sys.modules.get("memcachepy._core")
        loader = importlib.machinery.ExtensionFileLoader("memcachepy._core", path)
        spec = importlib.util.spec_from_file_location("memcachepy._core", path, loader=loader)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        try:
            loader.exec_module(mod)
        finally:
            if real is not None:
                sys.modules["memcachepy._core"] = real
        return mod

    def _load(self) -> ModuleType:
        origin = self._origin()
        fd, path = tempfile.mkstemp(prefix="memcachepy_core-", suffix=".so")
        try:
            with os.fdopen(fd, "wb") as dst, open(origin, "rb") as src:
                shutil.copyfileobj(src, dst)
            try:
                return self._exec(path)
            except ImportError:
                if not hasattr(os, "memfd_create"):
                    raise
        finally:
            # Kept on request so that sanitizer reports can be symbolized.
            if not os.environ.get("MEMCACHEPY_KEEP_CORE_COPIES"):
                os.unlink(path)
        # A noexec temporary directory: load from an anonymous in-memory file.
        mfd = os.memfd_create("memcachepy_core", 0)
        try:
            with open(origin, "rb") as src:
                os.write(mfd, src.read())
            return self._exec(f"/proc/self/fd/{mfd}")
        finally:
            os.close(mfd)


_POOL = _CorePool()
_RUNNING: "weakref.WeakSet[Server]" = weakref.WeakSet()
_SEQ = itertools.count(1)

# Options that belong to a process of its own, not to a server inside the caller's.
_REFUSED = {"daemonize": "-d", "user": "-u", "pidfile": "-P", "log_file": "--log-file",
            "metrics_listen": "--metrics-listen"}


def _settings(memory_mb: int, threads: int, host: str, port: int,
              unix_socket: Optional[str], args: Sequence[str]) -> Settings:
    from . import cli
    argv = ["-m", str(memory_mb), "-t", str(threads), "-U", "0"]
    # port 0 here means "a free port", which the daemon spells -p -1 (its -p 0: no TCP)
    argv += ["-s", unix_socket] if unix_socket else ["-l", host, "-p", str(port or -1)]
    argv += list(args)
    try:
        ns = cli.parse_args(argv)
    except cli._ArgError as e:
        raise ValueError(str(e)) from None
    try:
        s = cli.settings_from_args(ns)
    except SettingsError as e:
        raise ValueError(str(e)) from None
    for attr, flag in _REFUSED.items():
        if getattr(s, attr):
            raise ValueError(f"{flag} is not available to an embedded server")
    return s


class Server:
    """A memcachepy server running in this process: the same compiled workers
    as the daemon, on an ephemeral loopback port (or a unix socket).

    memory_mb, threads: -m and -t.  host, port: where to listen (default
    127.0.0.1 and a free port).  unix_socket: a path to listen on instead.
    args: any further daemon flags, e.g. ["-o", "hotkeys_sample=1", "-I", "2m"].
    """

    embedded = True     # (the pytest plugin's external-server stand-in says False)

    def __init__(self, memory_mb: int = 64, threads: int = 2, *, host: str = "127.0.0.1",
                 port: int = 0, unix_socket: Optional[str] = None,
                 args: Sequence[str] = ()) -> None:
        self.settings = _settings(memory_mb, threads, host, port, unix_socket, args)
        self._lock = threading.Lock()
        self._srv: Optional[MemcacheServer] = None
        self._module: Optional[ModuleType] = None
        self._address: Optional[Address] = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "Server":
        """Bind, start the workers; returns self. Raises OSError if it cannot listen."""
        with self._lock:
            if self._srv is not None:
                raise RuntimeError("server already started")
            module = _POOL.take()
            srv = MemcacheServer(self.settings, core_module=module,
                                 thread_prefix=f"memcachepy-embedded-{next(_SEQ)}-")
            try:
                srv.bind()
            except ListenError as e:
                _POOL.give_back(module)
                raise OSError(str(e)) from None
            try:
                srv.start()
            except BaseException:
                srv.stop()
                srv.close_listeners()
                _POOL.give_back(module)
                raise
            self._srv, self._module = srv, module
            fam, host, port = srv.bound[0]
            self._address = host if fam == "UNIX" else (host, port)
            _RUNNING.add(self)
        return self

    def close(self) -> None:
        """Stop the workers, close every connection and listener, free the
        store. Safe to call twice."""
        with self._lock:
            srv, module = self._srv, self._module
            if srv is None:
                return
            self._srv = self._module = None
            _RUNNING.discard(self)
            srv.stop()
            if srv.stuck_threads:
                # Its core is still in use by a thread: never hand it out again.
                raise RuntimeError(f"embedded server threads did not stop: {srv.stuck_threads}")
            _POOL.give_back(module)

    stop = close

    def __enter__(self) -> "Server":
        return self.start() if self._srv is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._srv is not None

    # ------------------------------------------------------------ addresses
    @property
    def address(self) -> Address:
        """(host, port) of the TCP listener, or the unix socket's path: what
        pymemcache's Client (and most clients) take as the server."""
        if self._address is None:
            raise RuntimeError("server not started")
        return self._address

    @property
    def host(self) -> str:
        addr = self.address
        return addr[0] if isinstance(addr, tuple) else addr

    @property
    def port(self) -> int:
        addr = self.address
        return addr[1] if isinstance(addr, tuple) else 0

    @property
    def server_string(self) -> str:
        """"host:port" (or "unix:/path"), the spelling Django's and Flask-Caching's
        LOCATION/CACHE_MEMCACHED_SERVERS settings take."""
        addr = self.address
        return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else f"unix:{addr}"

    # ------------------------------------------------------------ helpers
    def _core(self):
        srv = self._srv
        if srv is None or srv.core is None:
            raise RuntimeError("server not started")
        return srv.core

    def stats(self, *args: str) -> Dict[str, str]:
        """`stats [args]` over the wire, as {name: value} (strings)."""
        self._core()
        cmd = " ".join(("stats",) + args).encode() + b"\r\n"
        family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
        if family == socket.AF_INET and ":" in self.host:
            family = socket.AF_INET6
        out: Dict[str, str] = {}
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.address)
            sock.sendall(cmd)
            buf = b""
            while not (buf.endswith(b"END\r\n") or buf.startswith((b"ERROR", b"CLIENT_ERROR"))):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        for line in buf.decode("utf-8", "replace").split("\r\n"):
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
            elif line.startswith(("ERROR", "CLIENT_ERROR")):
                raise ValueError(f"stats {' '.join(args)}: {line}")
        return out

    def flush(self) -> None:
        """Invalidate every item now (`flush_all`, also under -F)."""
        self._core().flush_all()

    def advance_clock(self, seconds: float) -> None:
        """Move the server's clock forward: items whose TTL ends within
        `seconds` are then expired, without sleeping. The clock has one-second
        resolution, as memcached's; a fraction rounds up."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._core().advance_clock(int(math.ceil(seconds)))

    def clock(self) -> int:
        """The server's clock: seconds since it started (advance_clock included)."""
        return self._core().now()

    def __repr__(self) -> str:
        state = f"address={self._address!r}" if self._srv is not None else "stopped"
        return f"<memcachepy.Server {state}>"


@atexit.register
def _close_running() -> None:
    # Servers left running at exit: stop their threads before the interpreter
    # goes away under them.
    for srv in list(_RUNNING):
        try:
            srv.close()
        except Exception:     # noqa: BLE001 - best effort at exit
            pass
