# memcachepy.pytest_plugin — pytest fixtures backed by a memcachepy server in
# the test process (entry point `pytest11`, loaded when memcachepy is installed).
#
# Fixtures:
#   memcached_server   session-scoped: an embedded memcachepy.Server on a free
#                      loopback port (or, with --memcached-address HOST:PORT, an
#                      external memcached), with .address, .server_string,
#                      .stats(), .flush(), .advance_clock(seconds).
#   memcached_client   function-scoped: a pymemcache Client on that server,
#                      flushed first, so every test starts from an empty cache.
#                      Tests that reach the server through their own client
#                      (Django, Flask) call memcached_server.flush() instead.
# Options:
#   --memcached-address HOST:PORT (or a unix socket path): run the same tests
#                      against that server; advance_clock() then skips the test.
#   ini `memcachepy_args`: daemon flags for the embedded server, e.g. "-m 16 -I 2m".
#
# Nothing is imported or started until a test asks for a fixture.
from __future__ import annotations

import shlex
import socket
from typing import Dict, Iterator, Tuple, Union

import pytest

Address = Union[Tuple[str, int], str]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memcachepy", "memcached fixtures (memcachepy)")
    group.addoption("--memcached-address", metavar="HOST:PORT", default=None,
                    help="run the memcached_server / memcached_client fixtures against this "
                         "memcached (HOST:PORT or a unix socket path) instead of an embedded "
                         "memcachepy server")
    parser.addini("memcachepy_args", "daemon flags for the embedded memcachepy server "
                  "(default: -m 64 -t 2)", default="")


def parse_address(text: str) -> Address:
    """'host:port', '[v6]:port' or '/path/to.sock' (also 'unix:/path')."""
    if text.startswith("unix:"):
        text = text[5:]
    if text.startswith("/"):
        return text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise pytest.UsageError(f"--memcached-address wants HOST:PORT, got {text!r}")
    try:
        return host, int(port)
    except ValueError:
        raise pytest.UsageError(f"--memcached-address: bad port in {text!r}") from None


class ExternalServer:
    """The fixtures' view of a memcached the tests did not start."""

    embedded = False

    def __init__(self, address: Address) -> None:
        self.address = address

    @property
    def server_string(self) -> str:
        a = self.address
        if isinstance(a, str):
            return f"unix:{a}"
        return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"

    def _request(self, line: bytes, done: Tuple[bytes, ...]) -> bytes:
        a = self.address
        family = socket.AF_UNIX if isinstance(a, str) else (
            socket.AF_INET6 if ":" in a[0] else socket.AF_INET)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(a)
            s.sendall(line)
            buf = b""
            while not buf.endswith(done) and b"ERROR" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return buf

    def stats(self, *args: str) -> Dict[str, str]:
        buf = self._request(" ".join(("stats",) + args).encode() + b"\r\n", (b"END\r\n",))
        out = {}
        for line in buf.decode("utf-8", "replace").split("\r\n"):
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out

    def flush(self) -> None:
        reply = self._request(b"flush_all\r\n", (b"OK\r\n",))
        if reply != b"OK\r\n":
            raise RuntimeError(f"flush_all on {self.server_string}: {reply!r}")

    def advance_clock(self, seconds: float) -> None:
        pytest.skip("advance_clock needs the embedded memcachepy server "
                    "(not available with --memcached-address)")

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def memcached_server(pytestconfig: pytest.Config) -> Iterator[object]:
    """One memcached for the whole session: an embedded memcachepy server, or
    the one --memcached-address names."""
    addr = pytestconfig.getoption("memcached_address")
    if addr:
        srv = ExternalServer(parse_address(addr))
        try:
            srv.stats()
        except OSError as e:
            raise pytest.UsageError(f"--memcached-address {addr}: {e}") from None
        yield srv
        return
    from .embed import Server
    args = shlex.split(pytestconfig.getini("memcachepy_args") or "")
    srv = Server(memory_mb=64, threads=2, args=args)
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def memcached_client(memcached_server: object) -> Iterator[object]:
    """A pymemcache Client (replies awaited: default_noreply=False) on a
    freshly flushed memcached_server."""
    from pymemcache.client.base import Client
    memcached_server.flush()
    client = Client(memcached_server.address, default_noreply=False,
                    connect_timeout=10, timeout=10)
    try:
        yield client
    finally:
        try:
            client.version()     # a round trip: commands sent with noreply are done
        except Exception:        # noqa: BLE001 - the test may have broken the connection
            pass
        client.close()
