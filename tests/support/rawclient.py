# Raw-socket transcript runner for the classic text protocol.
#
# A transcript is a list of steps sent over ONE fresh connection:
#   bytes        send, then send the sentinel `version\r\n` and read until its reply arrived
#                (so later steps may use values seen in earlier replies, e.g. `{cas:key}`)
#   Raw(bytes)   send without a sentinel (the daemon may be mid-data-block or about to close)
#   float        sleep that many seconds (expiry, delayed flush_all)
# and then, by mode: "sync" (every reply is sentinel-terminated), "eof" (read until the daemon
# closes), "idle" (read until nothing arrives for a short while).
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

SENTINEL = b"version\r\n"
IDLE_TIMEOUT = 1.0  # generous: a loaded CI machine can stall a daemon for a while
TOTAL_TIMEOUT = 8.0


@dataclass(frozen=True)
class Raw:
    data: bytes


Step = Union[bytes, Raw, float, int]

_VERSION_REQ = re.compile(rb"(?m)^ *version(?: [^\r\n]*)?\r?$")
_CAS_REF = re.compile(rb"\{cas:([^}]*)\}")
_VALUE_LINE = re.compile(rb"VALUE ([^ ]+) (\d+) (\d+)(?: (\d+))?")


def count_version_lines(buf: bytes) -> int:
    n = buf.count(b"\nVERSION ")
    if buf.startswith(b"VERSION "):
        n += 1
    return n


def expected_versions(request: bytes) -> int:
    return len(_VERSION_REQ.findall(request))


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
    """One client connection with helpers to read until a reply is complete."""

    def __init__(self, addr: tuple[str, int], timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:     # the same transcripts over TLS (test_tls.py)
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=addr[0])
        self.closed_by_peer = False

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
        """b'' on EOF, None on timeout."""
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

    def read_versions(self, want: int, idle: float = IDLE_TIMEOUT,
                      total: float = TOTAL_TIMEOUT) -> bytes:
        """Read until `want` VERSION lines have arrived (and the buffer ends on a line
        boundary), EOF, or `idle` seconds of silence."""
        buf = b""
        deadline = time.monotonic() + total
        while not self.closed_by_peer:
            if buf.endswith(b"\r\n") and count_version_lines(buf) >= want:
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
        buf = b""
        deadline = time.monotonic() + total
        while not self.closed_by_peer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = self._recv(remaining)
            if chunk is None:
                break
            buf += chunk
        return buf

    def read_idle(self, idle: float = IDLE_TIMEOUT, total: float = TOTAL_TIMEOUT) -> bytes:
        buf = b""
        deadline = time.monotonic() + total
        while not self.closed_by_peer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            chunk = self._recv(min(idle, remaining))
            if chunk is None:
                break
            buf += chunk
        return buf

    def request(self, data: bytes) -> bytes:
        """Send `data` + sentinel and return everything up to and including the sentinel's
        reply."""
        self.send(data + SENTINEL)
        return self.read_versions(expected_versions(data) + 1)

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


def run_transcript(addr: tuple[str, int], steps: Sequence[Step], mode: str = "sync",
                   ssl_context: ssl.SSLContext | None = None) -> bytes:
    """Run a transcript on a fresh connection; return every byte the daemon sent, plus a
    trailing marker `<EOF>` when the daemon closed the connection."""
    out = b""
    with Conn(addr, ssl_context=ssl_context) as conn:
        for step in steps:
            if conn.closed_by_peer:
                break
            if isinstance(step, (int, float)):
                time.sleep(step)
            elif isinstance(step, Raw):
                conn.send(step.data)
                time.sleep(0.02)  # let it arrive as its own segment
            else:
                data = fill_cas(step, out)
                out += conn.request(data)
        if mode == "eof":
            out += conn.read_until_eof(total=3.0)
        elif mode == "idle":
            out += conn.read_idle()
        elif mode != "sync":
            raise ValueError(mode)
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
        if conn.closed_by_peer:
            out += b"<EOF>"
    return out
