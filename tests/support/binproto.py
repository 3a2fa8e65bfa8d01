# Raw binary-protocol packets for differential tests (memcached's protocol_binary.h layout).
#
# pkt() builds a request with any header field overridable, so malformed packets (bad magic,
# body lengths that lie, wrong extras) are as easy to write as good ones.  run_steps() sends
# steps over one connection; after each step it sends a NOOP with a sentinel opaque (NOOP
# flushes memcached's pipeline) and reads until that NOOP's reply, EOF, or an idle timeout,
# so transcripts need no sleeps.  normalise() splits replies into packets and renames CAS
# values by order of first appearance (the two daemons number CAS differently).
from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Union

REQ = 0x80
RES = 0x81
HDR = struct.Struct(">BBHBBHIIQ")

OP = dict(get=0x00, set=0x01, add=0x02, replace=0x03, delete=0x04, incr=0x05, decr=0x06,
          quit=0x07, flush=0x08, getq=0x09, noop=0x0A, version=0x0B, getk=0x0C, getkq=0x0D,
          append=0x0E, prepend=0x0F, stat=0x10, setq=0x11, addq=0x12, replaceq=0x13,
          deleteq=0x14, incrq=0x15, decrq=0x16, quitq=0x17, flushq=0x18, appendq=0x19,
          prependq=0x1A, verbosity=0x1B, touch=0x1C, gat=0x1D, gatq=0x1E, sasl_list=0x20,
          sasl_auth=0x21, sasl_step=0x22, gatk=0x23, gatkq=0x24)

SENTINEL = 0x5E5E5E5E


def pkt(op: Union[str, int], key: bytes = b"", ext: bytes = b"", val: bytes = b"", *,
        opaque: int = 0x01020304, cas: int = 0, magic: int = REQ, bodylen: int | None = None,
        keylen: int | None = None, extlen: int | None = None, datatype: int = 0,
        vbucket: int = 0) -> bytes:
    code = OP[op] if isinstance(op, str) else op
    bl = len(key) + len(ext) + len(val) if bodylen is None else bodylen
    kl = len(key) if keylen is None else keylen
    el = len(ext) if extlen is None else extlen
    return HDR.pack(magic, code, kl, el, datatype, vbucket, bl, opaque, cas) + ext + key + val


def store_ext(flags: int = 0, exptime: int = 0) -> bytes:
    return struct.pack(">II", flags, exptime)


def incr_ext(delta: int, initial: int = 0, exptime: int = 0) -> bytes:
    return struct.pack(">QQI", delta, initial, exptime)


def exp_ext(exptime: int) -> bytes:
    return struct.pack(">I", exptime)


def parse(data: bytes) -> tuple[list[dict], bytes]:
    """Split replies into packets; returns (packets, trailing bytes that are not one)."""
    out = []
    i = 0
    while i + 24 <= len(data) and data[i] == RES:
        magic, op, kl, el, dt, status, bl, opaque, cas = HDR.unpack_from(data, i)
        if i + 24 + bl > len(data):
            break
        body = data[i + 24:i + 24 + bl]
        out.append(dict(op=op, status=status, extlen=el, keylen=kl, datatype=dt,
                        opaque=opaque, cas=cas, ext=body[:el], key=body[el:el + kl],
                        value=body[el + kl:], raw=data[i:i + 24 + bl]))
        i += 24 + bl
    return out, data[i:]


def normalise(data: bytes) -> list:
    """Packets as comparable tuples, CAS values renamed by first appearance."""
    pkts, rest = parse(data)
    names: dict[int, int] = {}
    res = []
    for p in pkts:
        cas = p["cas"]
        if cas:
            cas = names.setdefault(cas, len(names) + 1)
        res.append((p["op"], p["status"], p["extlen"], p["keylen"], p["datatype"],
                    p["opaque"], cas, p["ext"], p["key"], p["value"]))
    if rest:
        res.append(("trailing", rest))
    return res


Step = Union[bytes, Callable[[list], bytes]]


def _read_until(sock: socket.socket, buf: bytearray, done: Callable[[bytes], bool],
                idle: float, total: float) -> bool:
    """Read into buf until done(buf), EOF (returns False) or an idle/total timeout."""
    deadline = time.monotonic() + total
    while not done(bytes(buf)):
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        sock.settimeout(min(idle, left))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        buf += chunk
    return True


def _has_sentinel(data: bytes) -> bool:
    pkts, _ = parse(data)
    return any(p["op"] == OP["noop"] and p["opaque"] == SENTINEL for p in pkts)


def run_steps(addr: tuple[str, int], steps: Sequence[Step], *, sentinel: bool = True,
              idle: float = 1.0, total: float = 10.0) -> bytes:
    """Send each step (bytes, or a function of the packets replied so far) and collect every
    reply byte, plus b"<EOF>" if the daemon closed the connection."""
    sock = socket.create_connection(addr, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = bytearray()
    try:
        for step in steps:
            data = step(parse(bytes(out))[0]) if callable(step) else step
            start = len(out)
            if sentinel:
                data += pkt("noop", opaque=SENTINEL)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                out += b"<EOF>"
                return bytes(out)
            buf = bytearray()
            if sentinel:
                alive = _read_until(sock, buf, _has_sentinel, idle, total)
            else:
                alive = _read_until(sock, buf, lambda b: False, 0.3, total)
            out[start:] = buf
            if not alive:
                out += b"<EOF>"
                return bytes(out)
        return bytes(out)
    finally:
        sock.close()


def request(addr_or_sock, data: bytes) -> list[dict]:
    """One exchange on a fresh connection, ending at the sentinel NOOP's reply."""
    return parse(run_steps(addr_or_sock, [data]))[0]
