# Shared fuzz oracle for memcachepy's request path (issue 5, item 2).
#
# One fuzz input is a byte stream plus the places where the network splits it; it goes
# through the real parser and handlers via memcachepy._core.feed() (ext/testing.pxi: a
# conn_t with no socket) in a Store opened once per process. Whatever the input, these
# must hold, or the input is a bug:
#   * no crash, and under ASan/UBSan no out-of-bounds access or undefined behaviour;
#   * the output is a sequence of complete replies: every line ends in CRLF and every
#     VALUE header is followed by exactly its <bytes> of data and CRLF (nothing a client
#     could take for a finished reply is ever cut short); a stream starting with 0x80
#     negotiates the binary protocol, whose replies must be whole packets;
#   * the output queued at any moment stays under WBUF_HIGH plus one item (backpressure);
#   * the store's hash tables, LRUs, counters and slab accounting agree and every value
#     still ends in CRLF (check_invariants), checked every CHECK_EVERY inputs.
# Used by the atheris driver (fuzz_core.py), the corpus replay and the hypothesis tests.
from __future__ import annotations

import re
from typing import Optional, Sequence

# Small limits make eviction, "too large" and swallowing reachable by short inputs.
STORE_ARGS = ["-m", "1", "-I", "2k", "-o", "slab_chunk_max=1024", "-n", "16"]
ITEM_MAX = 2048
WBUF_HIGH = 262144
CHECK_EVERY = 64

_store = None
_count = 0
_VALUE = re.compile(rb"(?:VALUE|CONFIG) \S+ \d+ (\d+)(?: \d+)?")
# A cluster is configured, so `config get|set cluster` and the legacy discovery key
# (ext/cluster.pxi) are reachable; CONFIG replies are framed like VALUE ones.
CLUSTER = b"n1|127.0.0.1|11211 n2|::1|11212"


def core():
    """Open the process-wide Store once and return the _core module."""
    global _store
    from memcachepy import _core
    if _store is None:
        from memcachepy.cli import parse_args, settings_from_args
        cfg = settings_from_args(parse_args(STORE_ARGS)).to_core()
        cfg["shutdown_command"] = False      # `shutdown` must never signal the fuzzer
        _store = _core.Store(cfg)
        _core.cluster_set(CLUSTER)
    return _core


def check_framing(out: bytes) -> None:
    pos = 0
    n = len(out)
    while pos < n:
        end = out.find(b"\r\n", pos)
        if end < 0:
            raise AssertionError(f"reply ends mid-line at {pos}: {out[pos:pos + 80]!r}")
        line = out[pos:end]
        pos = end + 2
        m = _VALUE.fullmatch(line)
        if m:
            size = int(m.group(1))
            if pos + size + 2 > n or out[pos + size:pos + size + 2] != b"\r\n":
                raise AssertionError(f"truncated or misframed data block after {line[:80]!r}")
            pos += size + 2


def check_binary_framing(out: bytes) -> None:
    """Binary replies: whole packets, magic 0x81, each body as long as its header says."""
    pos = 0
    while pos < len(out):
        if out[pos] != 0x81 or pos + 24 > len(out):
            raise AssertionError(f"binary reply misframed at {pos}: {out[pos:pos + 24]!r}")
        keylen = int.from_bytes(out[pos + 2:pos + 4], "big")
        extlen = out[pos + 4]
        bodylen = int.from_bytes(out[pos + 8:pos + 12], "big")
        if keylen + extlen > bodylen or pos + 24 + bodylen > len(out):
            raise AssertionError(f"binary reply truncated at {pos}: {out[pos:pos + 24]!r}")
        pos += 24 + bodylen


def run_one(stream: bytes, cuts: Optional[Sequence[int]] = None, check: Optional[bool] = None) -> bytes:
    global _count
    c = core()
    out, closed, max_pending, max_rbuf = c.feed(stream, cuts)
    if stream[:1] == b"\x80":        # the conn negotiated the binary protocol
        check_binary_framing(out)
    else:
        check_framing(out)
    if max_pending > WBUF_HIGH + ITEM_MAX + 4096:
        raise AssertionError(f"{max_pending} bytes of output queued at once")
    # A binary header may announce up to 65,535 key and 255 extras bytes, which
    # are read into the buffer before the request is judged (a power of two:
    # 131,072 for the largest); beyond that the buffer grows only with the input.
    limit = 2 * (len(stream) + 16384) + 65536
    if stream[:1] == b"\x80":
        limit = max(limit, 131072)
    if max_rbuf > limit:
        raise AssertionError(f"read buffer grew to {max_rbuf} for a {len(stream)}-byte input")
    _count += 1
    if check or (check is None and _count % CHECK_EVERY == 0):
        c.check_invariants()
    return out


def split_input(data: bytes) -> tuple[bytes, list[int]]:
    """First byte: number of cuts (low 3 bits); then 2 bytes per cut; the rest is the stream."""
    if not data:
        return b"", []
    ncuts = data[0] & 7
    hdr = 1 + 2 * ncuts
    stream = data[hdr:]
    cuts = [int.from_bytes(data[1 + 2 * i:3 + 2 * i], "little") % (len(stream) + 1)
            for i in range(ncuts)] if len(data) >= hdr else []
    return stream, cuts


def fresh_core(args: Optional[Sequence[str]] = None):
    """Close the process's Store and open a new, empty one (same CAS sequence, clock and
    memory as a freshly started daemon), so two runs of one stream can be compared."""
    global _store, STORE_ARGS
    from memcachepy import _core
    if args is not None:
        STORE_ARGS = list(args)
    if _store is not None:
        _store.close()
        _store = None
    return core()


def close_core() -> None:
    """Close the process's Store (only one may be open per process: other test modules
    open their own)."""
    global _store
    if _store is not None:
        _store.close()
        _store = None
