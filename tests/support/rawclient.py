# The raw client connection and the transcript runner of every protocol test.
#
# Conn is the one raw-socket client: line/value readers (line, exact, read_until), the
# sentinel readers below, `stats`.  A transcript (text or meta) is a list of steps sent over
# ONE fresh connection:
#   bytes        send, then send the sentinel `version\r\n` and read until its reply arrived
#                (so later steps may use values seen in earlier replies, e.g. `{cas:key}`)
#   Raw(bytes)   send without a sentinel (the daemon may be mid-data-block or about to close)
#   float        sleep that many seconds (expiry, delayed flush_all)
# and then, by mode: "sync" (every reply is sentinel-terminated), "eof" (read until the daemon
# closes), "idle" (read until nothing arrives for a short while).
#
# The sentinel is `version` (reply `VERSION ...`) for text transcripts and `mn` (reply `MN`)
# for meta ones (META); meta transcripts refer to earlier CAS values as `{c0}`, `{c1}`...
# (resolved through the normaliser's CasMapper).
#
# Why a sentinel: waiting for a fixed idle time per transcript would dominate run time.  The
# sentinel's reply (a `VERSION ...` line) is recognised by counting VERSION lines: we expect
# one per `version` request line in the step plus the sentinel's.  If bytes were swallowed as
# data the count is never reached and the short idle fallback ends the read: slower, still
# correct, because both daemons get identical treatment.
from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from support.normalise import CasMapper, normalise

SENTINEL = b"version\r\n"
HOST = "127.0.0.1"
IDLE_TIMEOUT = 1.0  # generous: a loaded CI machine can stall a daemon for a while
TOTAL_TIMEOUT = 8.0


@dataclass(frozen=True)
class Raw:
    """Bytes sent as they are, no sentinel. Their reply comes with the next step, unless
    `lines` says how many reply lines to wait for first: then the next step leaves only
    after them, so the daemon cannot read both in one batch (memcached answers a batch of
    unauthenticated commands with the last reply only, so timing would change the bytes)."""
    data: bytes
    lines: int = 0


Step = Union[bytes, Raw, float, int]

_VERSION_REQ = re.compile(rb"(?m)^ *version(?: [^\r\n]*)?\r?$")
_MN_REQ = re.compile(rb"(?m)^mn(?: [^\r\n]*)?\r?$")
_CAS_REF = re.compile(rb"\{cas:([^}]*)\}")
_VALUE_LINE = re.compile(rb"VALUE ([^ ]+) (\d+) (\d+)(?: (\d+))?")


def cmd(sock: socket.socket, data: bytes, end: bytes = b"END\r\n") -> bytes:
    """Send `data` and read until the reply ends with `end`."""
    sock.sendall(data)
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed"
        buf += chunk
    return buf


def count_version_lines(buf: bytes, mark: bytes = b"VERSION ") -> int:
    """How many reply lines start with `mark` (the sentinel's reply)."""
    n = buf.count(b"\n" + mark)
    if buf.startswith(mark):
        n += 1
    return n


def expected_versions(request: bytes) -> int:
    return len(_VERSION_REQ.findall(request))


def expected_mns(request: bytes) -> int:
    return len(_MN_REQ.findall(request))


def last_cas_by_key(replies: bytes) -> dict[bytes, bytes]:
    """Map key -> CAS from every `VALUE key flags bytes cas` header in a reply stream."""
    seen: dict[bytes, bytes] = {}
    pos = 0
    while True:
        end = replies.find(b"\r\n", pos)
        if end < 0:
            return seen
        line = replies[pos:end]
        m = _VALUE_LINE.fullmatch(line)
        if m:
            if m.group(4) is not None:
                seen[m.group(1)] = m.group(4)
            pos = end + 2 + int(m.group(3)) + 2
        else:
            pos = end + 2


def fill_cas(step: bytes, replies: bytes) -> bytes:
    if b"{cas:" not in step:
        return step
    seen = last_cas_by_key(replies)
    return _CAS_REF.sub(lambda m: seen.get(m.group(1), b"0"), step)


class Conn:
    """One client connection with helpers to read until a reply is complete.  `addr` is
    (host, port), a loopback port number or a unix socket path."""

    def __init__(self, addr: tuple[str, int] | int | str, timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(addr)
        else:
            if isinstance(addr, int):
                addr = (HOST, addr)
            self.sock = socket.create_connection(addr, timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:     # the same transcripts over TLS (test_tls.py)
                self.sock = ssl_context.wrap_socket(self.sock, server_hostname=addr[0])
        self.timeout = timeout
        self.closed_by_peer = False
        self.buf = bytearray()  # read but not consumed by line()/exact()/read_until()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed_by_peer = True

    def _recv(self, timeout: float) -> bytes | None:
        """b'' on EOF, None on timeout.  Buffered bytes come first."""
        if self.buf:
            out = bytes(self.buf)
            self.buf.clear()
            return out
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return None
        except (ConnectionResetError, ssl.SSLError):   # TLS: an alert or EOF without close_notify
            chunk = b""
        if not chunk:
            self.closed_by_peer = True
        return chunk

    def _more(self) -> None:
        """Blocking read into the buffer (the connection's timeout); EOF is an error."""
        self.sock.settimeout(self.timeout)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            self.closed_by_peer = True
            raise ConnectionError(f"closed by the daemon; have {bytes(self.buf[-200:])!r}")
        self.buf += chunk

    def read_until(self, suffix: bytes, eof_ok: bool = False) -> bytes:
        """Everything up to and including the first `suffix`; with eof_ok, what came before
        the daemon closed the connection instead of ConnectionError."""
        start = 0
        while (i := self.buf.find(suffix, start)) < 0:
            start = max(0, len(self.buf) - len(suffix) + 1)
            try:
                self._more()
            except ConnectionError:
                if not eof_ok:
                    raise
                return self.exact(len(self.buf))
        return self.exact(i + len(suffix))

    def line(self) -> bytes:
        """One reply line without its CRLF."""
        return self.read_until(b"\r\n")[:-2]

    def exact(self, n: int) -> bytes:
        """Exactly n bytes (a value block)."""
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_versions(self, want: int, idle: float = IDLE_TIMEOUT,
                      total: float = TOTAL_TIMEOUT, mark: bytes = b"VERSION ") -> bytes:
        """Read until `want` lines starting with `mark` have arrived (and the buffer ends on
        a line boundary), EOF, or `idle` seconds of silence."""
        buf = b""
        deadline = time.monotonic() + total
        while not self.closed_by_peer:
            if buf.endswith(b"\r\n") and count_version_lines(buf, mark) >= want:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = self._recv(min(idle, remaining))
            if chunk is None:
                break
            buf += chunk
        return buf

    def read_until_eof(self, total: float = TOTAL_TIMEOUT) -> bytes:
        return self.read_idle(idle=total, total=total)

    def read_idle(self, idle: float = IDLE_TIMEOUT, total: float = TOTAL_TIMEOUT) -> bytes:
        """Read until EOF, `idle` seconds of silence or `total` seconds."""
        return self.read_versions(1 << 30, idle, total)

    def request(self, data: bytes) -> bytes:
        """Send `data` + sentinel and return everything up to and including the sentinel's
        reply."""
        self.send(data + SENTINEL)
        return self.read_versions(expected_versions(data) + 1)

    def call(self, data: bytes, idle: float = IDLE_TIMEOUT,
             total: float = TOTAL_TIMEOUT) -> bytes:
        """Meta: send `data` + `mn`, return the replies before the sentinel's MN (`mn`
        flushes, so a request holding `mn` lines gets as many MN lines first)."""
        self.send(data + b"mn\r\n")
        out = self.read_versions(expected_mns(data) + 1, idle, total, mark=b"MN\r\n")
        return out[:-4] if out.endswith(b"MN\r\n") else out

    def stats(self, sub: bytes = b"") -> dict[str, bytes]:
        """`stats [sub]` on this conn, as {name: value}."""
        self.send(b"stats" + (b" " + sub if sub else b"") + b"\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = self._recv(5.0)
            if not chunk:
                raise AssertionError(f"stats reply cut short: {buf[-200:]!r}")
            buf += chunk
        out = {}
        for line in buf.split(b"\r\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT":
                out[parts[1].decode()] = parts[2]
        return out

    def is_open(self, wait: float = 0.2) -> bool:
        """True if the peer has not closed the connection (probes with the sentinel)."""
        if self.closed_by_peer:
            return False
        self.send(SENTINEL)
        got = self.read_versions(1, idle=wait)
        return got.startswith(b"VERSION ") and not self.closed_by_peer


def connect_when_up(addr: tuple[str, int] | int | str, within: float = 10.0,
                    timeout: float = 10.0) -> Conn:
    """A Conn once the listener accepts (a socket-activated daemon binds late)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return Conn(addr, timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stats(addr: tuple[str, int] | int | str, sub: bytes = b"") -> dict[str, str]:
    """`stats [sub]` on a fresh connection, as {name: value}."""
    with Conn(addr) as c:
        return {k: v.decode() for k, v in c.stats(sub).items()}


def run_steps(addr: tuple[str, int] | int, steps: Sequence[Step], mode: str = "sync",
              meta: CasMapper | None = None,
              ssl_context: ssl.SSLContext | None = None) -> list[bytes]:
    """Run a transcript on a fresh connection; return the bytes that arrived for each step
    (a Raw or sleep step's reply arrives with the next step), then one last element: what
    `mode` read after the steps, plus `<EOF>` when the daemon closed the connection.

    Text transcripts (meta None) use the `version` sentinel and `{cas:key}` references;
    meta ones (meta = the CasMapper of this daemon's run) the `mn` sentinel and `{cN}`
    references, and their replies come back normalised by that mapper.  With
    ssl_context, the connection speaks TLS (test_tls.py)."""
    out: list[bytes] = []
    seen = b""
    with Conn(addr, ssl_context=ssl_context) as conn:
        for step in steps:
            if conn.closed_by_peer:
                out.append(b"")
                continue
            if isinstance(step, (int, float)):
                time.sleep(step)
                got = b""
            elif isinstance(step, Raw):
                conn.send(step.data)
                if step.lines:
                    got = b"".join(conn.read_until(b"\r\n", eof_ok=True)
                                   for _ in range(step.lines))
                else:
                    time.sleep(0.02)  # let it arrive as its own segment
                    got = b""
            elif meta is not None:
                got = normalise(conn.call(meta.request(step)), meta)
            else:
                got = conn.request(fill_cas(step, seen))
                seen += got
            out.append(got)
        if mode == "eof":
            tail = conn.read_until_eof(total=3.0)
        elif mode == "idle":
            tail = conn.read_idle()
        elif mode == "sync":
            tail = b""
        else:
            raise ValueError(mode)
        if meta is not None:
            tail = normalise(tail, meta)
        if not conn.closed_by_peer and mode != "sync":
            # a short probe distinguishes "closed" from "still open but silent"
            conn.sock.settimeout(0.05)
            try:
                if conn.sock.recv(1) == b"":
                    conn.closed_by_peer = True
            except (socket.timeout, BlockingIOError):
                pass
            except ConnectionResetError:
                conn.closed_by_peer = True
        out.append(tail + (b"<EOF>" if conn.closed_by_peer else b""))
    return out


def run_transcript(addr: tuple[str, int] | int, steps: Sequence[Step], mode: str = "sync",
                   ssl_context: ssl.SSLContext | None = None) -> bytes:
    """Every byte a text transcript got back, plus `<EOF>` when the daemon closed."""
    return b"".join(run_steps(addr, steps, mode, ssl_context=ssl_context))
