# memcachepy.snapshot — portable cache snapshots: `memcachepy-tool snapshot`
# and `memcachepy-tool restore`.
#
# Owns: the snapshot file format (writer, reader, validation), taking a
# snapshot from a running memcached-protocol server and loading one into
# another.  Nothing here touches memcachepy internals, so a snapshot taken
# from memcached restores into memcachepy and the other way round.
#
# How items are read (server side): `lru_crawler metadump all` on one
# connection lists every live key (memcached and memcachepy both stream it
# while serving), and a second connection fetches the values with pipelined
# meta gets, `mg <key> v f t c k`, a few hundred per round trip.  mg answers
# with the flags, the *remaining* TTL (t) and the CAS, and a miss (EN) for an
# item deleted or evicted since it was listed, which is then skipped.  No new
# server command is needed: the same two commands exist in memcached 1.6.18,
# and a dedicated "stream values" command would save only the second
# connection's round trips (measured throughput is bounded by the Python
# side's parsing, not by the server).
#
# File format, version 1 (all integers little endian):
#   header   magic b"MCPYSNAP", u16 version, u16 header flags (bit 0: records
#            carry CAS), u64 unix time the snapshot started, u16 length +
#            UTF-8 source address
#   records  u8 key length (1..250), u8 record flags (bit 0: CAS follows),
#            u32 client flags, i32 remaining TTL in seconds at the snapshot
#            time (-1: never expires), u32 value length, [u64 CAS], key, value
#   trailer  u8 0 (a zero key length ends the records), magic b"MCPYEND!",
#            u64 record count, u64 value bytes, u32 CRC-32 of every byte from
#            the header's first to the trailer's count/bytes fields included
# The reader checks the whole file (magic, version, every record's bounds,
# count and CRC) before the first item is restored, so a truncated or damaged
# snapshot is refused with a message and nothing is written to the target.
from __future__ import annotations

import os
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

from .tool import AdminClient, ToolError

__all__ = ["SnapshotError", "Record", "SnapshotWriter", "read_snapshot", "verify_snapshot",
           "take_snapshot", "restore_snapshot", "MAGIC", "END_MAGIC", "VERSION"]

MAGIC = b"MCPYSNAP"
END_MAGIC = b"MCPYEND!"
VERSION = 1
HDR_CAS = 1
REC_CAS = 1
_HEAD = struct.Struct("<8sHHQH")
_REC = struct.Struct("<BBIiI")
_CAS = struct.Struct("<Q")
_TRAIL = struct.Struct("<8sQQ")
_CRC = struct.Struct("<I")
MAX_KEY = 250
RELATIVE_TTL_MAX = 60 * 60 * 24 * 30   # larger exptimes are absolute unix times (memcached)


class SnapshotError(ToolError):
    """A snapshot file that cannot be trusted, or a transfer that failed."""


@dataclass
class Record:
    key: bytes
    flags: int
    ttl: int            # remaining seconds at snapshot time, -1 = never expires
    value: bytes
    cas: Optional[int] = None


class SnapshotWriter:
    """Streams records into a file and closes it with the trailer."""

    def __init__(self, f: BinaryIO, source: str, with_cas: bool,
                 created: Optional[int] = None) -> None:
        self.f = f
        self.crc = 0
        self.count = 0
        self.value_bytes = 0
        self.with_cas = with_cas
        src = source.encode("utf-8")[:65535]
        self.created = int(time.time()) if created is None else created
        self._write(_HEAD.pack(MAGIC, VERSION, HDR_CAS if with_cas else 0, self.created,
                               len(src)) + src)
        self._pending: list[bytes] = []
        self._pending_len = 0

    def _write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.f.write(data)

    def add(self, key: bytes, flags: int, ttl: int, value: bytes,
            cas: Optional[int] = None) -> None:
        if not 0 < len(key) <= MAX_KEY:
            raise SnapshotError(f"key of {len(key)} bytes cannot be stored")
        has_cas = self.with_cas and cas is not None
        rec = _REC.pack(len(key), REC_CAS if has_cas else 0, flags, ttl, len(value))
        if has_cas:
            rec += _CAS.pack(cas)
        self._pending.append(rec + key)
        self._pending.append(value)
        self._pending_len += len(rec) + len(key) + len(value)
        self.count += 1
        self.value_bytes += len(value)
        if self._pending_len >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._write(b"".join(self._pending))
            self._pending.clear()
            self._pending_len = 0

    def close(self) -> None:
        self.flush()
        self._write(b"\0" + _TRAIL.pack(END_MAGIC, self.count, self.value_bytes))
        self.f.write(_CRC.pack(self.crc))
        self.f.flush()


@dataclass
class SnapshotInfo:
    version: int
    created: int
    source: str
    with_cas: bool
    count: int
    value_bytes: int
    size: int


class _Reader:
    """Bounded reads from a file with a running CRC and clear errors."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self.f = f
        self.name = name
        self.crc = 0
        self.pos = 0
        self.buf = b""
        self.off = 0

    def take(self, n: int, what: str) -> bytes:
        if len(self.buf) - self.off < n:
            rest = self.buf[self.off:]
            more = self.f.read(max(n - len(rest), 1 << 20))
            self.buf = rest + more
            self.off = 0
            if len(self.buf) < n:
                raise SnapshotError(f"{self.name}: truncated snapshot (file ends inside "
                                    f"{what} at byte {self.pos + len(self.buf)})")
        data = self.buf[self.off:self.off + n]
        self.off += n
        self.pos += n
        return data

    def at_eof(self) -> bool:
        if self.off < len(self.buf):
            return False
        self.buf = self.f.read(1 << 20)
        self.off = 0
        return not self.buf


def _iter_file(f: BinaryIO, name: str,
               on_record: Optional[Callable[[Record], None]]) -> SnapshotInfo:
    r = _Reader(f, name)
    crc = 0
    head = r.take(_HEAD.size, "the header")
    magic, version, hflags, created, srclen = _HEAD.unpack(head)
    if magic != MAGIC:
        raise SnapshotError(f"{name}: not a memcachepy snapshot (bad magic)")
    if version != VERSION:
        raise SnapshotError(f"{name}: snapshot format version {version} is not supported "
                            f"(this memcachepy-tool reads version {VERSION})")
    src = r.take(srclen, "the header")
    crc = zlib.crc32(src, zlib.crc32(head))
    count = 0
    vbytes = 0
    while True:
        first = r.take(1, f"record {count + 1}")
        if first == b"\0":
            trail = r.take(_TRAIL.size, "the trailer")
            crc = zlib.crc32(trail, zlib.crc32(first, crc))
            emagic, tcount, tbytes = _TRAIL.unpack(trail)
            (want,) = _CRC.unpack(r.take(_CRC.size, "the checksum"))
            if emagic != END_MAGIC:
                raise SnapshotError(f"{name}: damaged snapshot (bad trailer magic)")
            if want != crc:
                raise SnapshotError(f"{name}: damaged snapshot (CRC-32 {crc:08x}, "
                                    f"trailer says {want:08x})")
            if tcount != count or tbytes != vbytes:
                raise SnapshotError(f"{name}: damaged snapshot (trailer counts {tcount} "
                                    f"items, file holds {count})")
            if not r.at_eof():
                raise SnapshotError(f"{name}: damaged snapshot (bytes after the trailer)")
            return SnapshotInfo(version, created, src.decode("utf-8", "replace"),
                                bool(hflags & HDR_CAS), count, vbytes, r.pos)
        rest = r.take(_REC.size - 1, f"record {count + 1}")
        hdr = first + rest
        nkey, rflags, flags, ttl, nval = _REC.unpack(hdr)
        if nkey > MAX_KEY or rflags & ~REC_CAS or ttl < -1:
            raise SnapshotError(f"{name}: damaged snapshot (record {count + 1} at byte "
                                f"{r.pos - _REC.size} is malformed)")
        cas = None
        casb = b""
        if rflags & REC_CAS:
            casb = r.take(_CAS.size, f"record {count + 1}")
            (cas,) = _CAS.unpack(casb)
        key = r.take(nkey, f"record {count + 1}")
        value = r.take(nval, f"record {count + 1}")
        crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(casb, zlib.crc32(hdr, crc))))
        count += 1
        vbytes += nval
        if on_record is not None:
            on_record(Record(key, flags, ttl, value, cas))


def verify_snapshot(path: str) -> SnapshotInfo:
    """Check a whole snapshot file; SnapshotError says what is wrong."""
    try:
        with open(path, "rb") as f:
            return _iter_file(f, path, None)
    except OSError as e:
        raise SnapshotError(f"{path}: {e.strerror or e}") from None


def read_snapshot(path: str) -> tuple[SnapshotInfo, list[Record]]:
    """Every record of a verified snapshot (for tests and small files)."""
    out: list[Record] = []
    with open(path, "rb") as f:
        info = _iter_file(f, path, out.append)
    return info, out


# --------------------------------------------------------------------------
# progress and rate


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, total: Optional[int], enabled: Optional[bool] = None,
                 stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total = total
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, nbytes: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        dt = max(now - self.start, 1e-6)
        rate = f"{done / dt:,.0f} items/s {nbytes / dt / 1e6:,.1f} MB/s"
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"{self.label} [{bar:<30s}] {done:,}/{self.total:,} {rate}"
        else:
            line = f"{self.label} {done:,} items {rate}"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def finish(self, done: int, nbytes: int) -> None:
        if self.enabled:
            self.update(done, nbytes, force=True)
            self.stream.write("\n")
            self.stream.flush()


class RateLimit:
    """At most `rate` items per second (0: unlimited), in whole batches."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def wait(self, n: int) -> None:
        if self.rate <= 0:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


# --------------------------------------------------------------------------
# snapshot


@dataclass
class TransferStats:
    items: int = 0
    value_bytes: int = 0
    skipped: int = 0          # gone between listing and fetching / expired before restore
    seconds: float = 0.0

    def summary(self, verb: str) -> str:
        dt = max(self.seconds, 1e-6)
        return (f"{verb} {self.items:,} items ({self.value_bytes / 1e6:,.1f} MB of values) "
                f"in {self.seconds:.2f}s: {self.items / dt:,.0f} items/s, "
                f"{self.value_bytes / dt / 1e6:,.1f} MB/s; {self.skipped:,} skipped")


def _metadump_keys(client: AdminClient, out: list, done: threading.Event,
                   errors: list, lock: threading.Condition) -> None:
    try:
        for item in client.metadump():
            with lock:
                out.append(item["key"])
                if len(out) >= 256:
                    lock.notify()
    except BaseException as e:   # handed to the fetching thread
        errors.append(e)
    finally:
        with lock:
            done.set()
            lock.notify()


def _parse_mg_replies(client: AdminClient, n: int, writer: SnapshotWriter) -> tuple[int, int, int]:
    """Read `n` replies to `mg <key> v f t c k` (then MN); returns (items, bytes, misses)."""
    items = nbytes = misses = 0
    while True:
        line = client.readline()
        if line.startswith(b"VA "):
            parts = line.split(b" ")
            size = int(parts[1])
            flags = ttl = 0
            cas = None
            key = b""
            for p in parts[2:]:
                c = p[:1]
                if c == b"f":
                    flags = int(p[1:])
                elif c == b"t":
                    ttl = int(p[1:])
                elif c == b"c":
                    cas = int(p[1:])
                elif c == b"k":
                    key = p[1:]
            value = client.readexact(size + 2)[:-2]
            if ttl < -1:
                ttl = -1
            if ttl == 0:          # expires within the second: nothing worth keeping
                misses += 1
                continue
            writer.add(key, flags, ttl, value, cas)
            items += 1
            nbytes += size
        elif line.startswith(b"EN"):
            misses += 1
        elif line == b"MN":
            return items, nbytes, misses
        else:
            raise SnapshotError(f"{client.addr}: mg failed: {line.decode('utf-8', 'replace')}")


def take_snapshot(addr: str, path: str, with_cas: bool = True, batch: int = 500,
                  timeout: float = 30.0, progress: Optional[Progress] = None) -> TransferStats:
    """Stream every live item of the server at `addr` into a snapshot file.

    The file is written to `path`.tmp and renamed when complete, so a failed
    snapshot never leaves a file that looks whole.
    """
    st = TransferStats()
    t0 = time.monotonic()
    tmp = path + ".tmp"
    lister = AdminClient(addr, timeout)
    fetcher = AdminClient(addr, timeout)
    keys: list[bytes] = []
    done = threading.Event()
    errors: list[BaseException] = []
    cond = threading.Condition()
    th = threading.Thread(target=_metadump_keys, args=(lister, keys, done, errors, cond),
                          daemon=True)
    try:
        with open(tmp, "wb") as f:
            w = SnapshotWriter(f, addr, with_cas)
            th.start()
            while True:
                with cond:
                    while len(keys) < batch and not done.is_set():
                        cond.wait(0.5)
                    take = keys[:batch]
                    del keys[:batch]
                    finished = done.is_set() and not keys
                if errors:
                    raise errors[0]
                if take:
                    # keys of the text protocol never hold spaces or control bytes
                    req = b"".join(b"mg %s v f t c k\r\n" % k for k in take) + b"mn\r\n"
                    fetcher.send(req)
                    n, b, miss = _parse_mg_replies(fetcher, len(take), w)
                    st.items += n
                    st.value_bytes += b
                    st.skipped += miss
                    if progress:
                        progress.update(st.items, st.value_bytes)
                if finished and not take:
                    break
            w.close()
            os.fsync(f.fileno())
        th.join(timeout)
        if errors:
            raise errors[0]
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        lister.close()
        fetcher.close()
    st.seconds = time.monotonic() - t0
    if progress:
        progress.finish(st.items, st.value_bytes)
    return st


# --------------------------------------------------------------------------
# restore


def _supports_meta(client: AdminClient) -> bool:
    client.send(b"mn\r\n")
    line = client.readline()
    if line == b"MN":
        return True
    if line == b"ERROR":
        return False
    raise SnapshotError(f"{client.addr}: unexpected reply to mn: {line.decode('utf-8', 'replace')}")


def _supports_cas_set(client: AdminClient) -> bool:
    """Whether `ms ... E<cas>` (client-chosen CAS) is understood (memcachepy,
    memcached >= 1.6.21); memcached 1.6.18 answers CLIENT_ERROR."""
    key = b"__memcachepy_restore_probe__"
    client.send(b"ms %s 1 T1 E1\r\nx\r\n" % key)
    line = client.readline()
    ok = line == b"HD"
    client.send(b"md %s q\r\nmn\r\n" % key)
    while client.readline() != b"MN":
        pass
    return ok


def _drain_quiet(client: AdminClient, errors: list[str]) -> None:
    """Read to MN, collecting the replies quiet mode let through (failures only)."""
    while True:
        line = client.readline()
        if line == b"MN":
            return
        errors.append(line.decode("utf-8", "replace"))


def _drain_noreply_set(client: AdminClient) -> None:
    client.send(b"version\r\n")
    while True:
        line = client.readline()
        if line.startswith(b"VERSION"):
            return
        raise SnapshotError(f"{client.addr}: set failed: {line.decode('utf-8', 'replace')}")


def restore_snapshot(path: str, addr: str, rate: float = 0.0, batch: int = 500,
                     keep_cas: bool = False, mode: str = "auto", timeout: float = 30.0,
                     progress: Optional[Progress] = None,
                     now: Optional[Callable[[], float]] = None) -> TransferStats:
    """Load a verified snapshot into the server at `addr`.

    Each item gets the TTL it had left at snapshot time minus the time since;
    items whose TTL ran out are skipped.  `mode` "meta" uses pipelined `ms`
    (quiet), "text" uses `set ... noreply`, "auto" picks meta when the server
    answers `mn`.  `keep_cas` sets each item's CAS with `ms E<cas>` and fails
    when the target cannot.
    """
    clock = now or time.time
    info = verify_snapshot(path)       # nothing is written unless the whole file checks
    st = TransferStats()
    t0 = time.monotonic()
    limiter = RateLimit(rate)
    if progress is not None:
        progress.total = info.count
    with AdminClient(addr, timeout) as c:
        use_meta = mode == "meta" or (mode == "auto" and _supports_meta(c))
        if keep_cas:
            if not use_meta or not _supports_cas_set(c):
                raise SnapshotError(f"{addr}: the server cannot set a chosen CAS "
                                    "(`ms ... E<cas>`); restore without --keep-cas")
            if not info.with_cas:
                raise SnapshotError(f"{path}: the snapshot holds no CAS values")
        parts: list[bytes] = []
        pending = 0
        errors: list[str] = []

        def flush_batch() -> None:
            nonlocal pending
            if not pending:
                return
            limiter.wait(pending)
            if use_meta:
                parts.append(b"mn\r\n")
                c.send(b"".join(parts))
                _drain_quiet(c, errors)
            else:
                c.send(b"".join(parts))
                _drain_noreply_set(c)
            if errors:
                raise SnapshotError(f"{addr}: restore failed: {errors[0]}"
                                    + (f" (and {len(errors) - 1} more)" if len(errors) > 1
                                       else ""))
            parts.clear()
            pending = 0
            if progress:
                progress.update(st.items, st.value_bytes)

        def on_record(rec: Record) -> None:
            nonlocal pending
            if rec.ttl < 0:
                exp = 0
            else:
                left = rec.ttl - int(clock() - info.created)
                if left <= 0:
                    st.skipped += 1
                    return
                # past 30 days memcached reads an exptime as a unix time
                exp = left if left <= RELATIVE_TTL_MAX else int(clock()) + left
            if use_meta:
                extra = b" E%d" % rec.cas if keep_cas and rec.cas is not None else b""
                parts.append(b"ms %s %d F%d T%d%s q\r\n" % (rec.key, len(rec.value), rec.flags,
                                                            exp, extra))
            else:
                parts.append(b"set %s %d %d %d noreply\r\n" % (rec.key, rec.flags, exp,
                                                               len(rec.value)))
            parts.append(rec.value)
            parts.append(b"\r\n")
            pending += 1
            st.items += 1
            st.value_bytes += len(rec.value)
            if pending >= batch:
                flush_batch()

        with open(path, "rb") as f:
            _iter_file(f, path, on_record)
        flush_batch()
    st.seconds = time.monotonic() - t0
    if progress:
        progress.finish(st.items, st.value_bytes)
    return st


def snapshot_main(argv: list[str]) -> int:
    """`memcachepy-tool snapshot HOST FILE` / `memcachepy-tool restore FILE HOST`."""
    import argparse
    cmd = argv[0]
    p = argparse.ArgumentParser(prog=f"memcachepy-tool {cmd}")
    if cmd == "snapshot":
        p.description = ("Write every live item of a running memcached-protocol server "
                         "(memcachepy or memcached) to a checksummed snapshot file, while "
                         "it keeps serving (lru_crawler metadump + pipelined mg).")
        p.add_argument("address")
        p.add_argument("file")
        p.add_argument("--no-cas", action="store_true", help="do not record CAS values")
    elif cmd == "restore":
        p.description = ("Load a snapshot into a memcached-protocol server, skipping items "
                         "whose TTL ran out. The whole file is verified first.")
        p.add_argument("file")
        p.add_argument("address")
        p.add_argument("--rate", type=float, default=0.0,
                       help="at most this many items per second (default: unlimited)")
        p.add_argument("--keep-cas", action="store_true",
                       help="give each item its recorded CAS (needs `ms E<cas>`: memcachepy)")
        p.add_argument("--protocol", choices=["auto", "meta", "text"], default="auto",
                       help="ms (meta) or set (text); auto: meta when the server has it")
    else:   # "verify"
        p.description = "Check a snapshot file and print what it holds."
        p.add_argument("file")
    p.add_argument("--batch", type=int, default=500, help="items per pipelined round trip")
    p.add_argument("--timeout", type=float, default=30.0, help="socket timeout in seconds")
    p.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    args = p.parse_args(argv[1:])
    enabled = {"auto": None, "always": True, "never": False}[args.progress]
    try:
        if cmd == "snapshot":
            st = take_snapshot(args.address, args.file, with_cas=not args.no_cas,
                               batch=max(args.batch, 1), timeout=args.timeout,
                               progress=Progress("snapshot", None, enabled))
            print(f"memcachepy-tool: {st.summary('snapshot of ' + args.address + ':')}",
                  file=sys.stderr)
        elif cmd == "restore":
            st = restore_snapshot(args.file, args.address, rate=args.rate,
                                  batch=max(args.batch, 1), keep_cas=args.keep_cas,
                                  mode=args.protocol, timeout=args.timeout,
                                  progress=Progress("restore", None, enabled))
            print(f"memcachepy-tool: {st.summary('restored into ' + args.address + ':')}",
                  file=sys.stderr)
        else:
            info = verify_snapshot(args.file)
            print(f"{args.file}: snapshot version {info.version} of {info.source}, taken "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(info.created))}: "
                  f"{info.count:,} items, {info.value_bytes:,} value bytes, "
                  f"CAS {'recorded' if info.with_cas else 'not recorded'}; checksum OK")
    except ToolError as e:
        print(f"memcachepy-tool: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

