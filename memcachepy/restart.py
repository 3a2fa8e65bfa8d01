# memcachepy.restart — the restartable cache (-e <memory file>), process side.
#
# Owns: the memory file (created, sized, mapped MAP_SHARED, emptied on a cold
# start), the metadata file `<memory file>.meta` written at a graceful stop
# and read, checked and removed at the next start, and the decision between a
# warm and a cold start.  The core (ext/restart.pxi) carves slab pages out of
# the mapping and rebuilds the hash tables and LRUs from it.
#
# As memcached 1.5.18+: the metadata lives beside the memory file and is
# removed as soon as it is read, so a process killed without a graceful stop
# (kill -9, a crash, power loss) leaves none and the next start is cold.  A
# restart in the same second as the stop is refused (memcached's clock sanity
# check).  Beyond memcached: every metadata line is covered by a CRC-32, each
# page's bytes by their own CRC-32 (so a memory file changed while stopped is
# caught before a single value is served), and SIGTERM/SIGINT/`shutdown` save
# the metadata as SIGUSR1 does (memcached saves only on SIGUSR1).
#
# Metadata format, one "name value" line each (text, so an operator can read
# it): "memcachepy-restart 1" first, then the settings that must match and
# the carried state, then "page <slot> <class> <length> <crc32>" per page,
# "pages <n>", and last "crc32 <hex>" over every byte before that line.
from __future__ import annotations

import errno
import fcntl
import logging
import mmap
from concurrent.futures import ThreadPoolExecutor
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .settings import Settings

log = logging.getLogger("memcachepy")

__all__ = ["RestartFile", "META_VERSION", "SLAB_PAGE_SIZE", "region_geometry"]

META_VERSION = 1
META_MAGIC = "memcachepy-restart"
SLAB_PAGE_SIZE = 1024 * 1024
MAX_CLASSES = 64
# Bumped whenever item_t or the chunk layout changes: an old memory file is
# then refused (cold start) instead of being read with the wrong layout.
ITEM_LAYOUT_VERSION = 2     # 2: items above slab_chunk_max are chains of chunks


def region_geometry(s: Settings) -> Tuple[int, int]:
    """(slot size, number of slots) of the memory file for these settings.

    A slot holds one page (1 MiB: items above slab_chunk_max are chains of
    chunks from the ordinary classes).  Enough slots for the memory limit,
    plus the first page every class may take beyond the limit.
    """
    slot = SLAB_PAGE_SIZE
    nslots = s.maxbytes // SLAB_PAGE_SIZE + MAX_CLASSES + 2
    return slot, nslots


def _setting_values(s: Settings, slot: int, nslots: int, header: int) -> Dict[str, str]:
    """Everything that must be equal for the old pages to mean the same."""
    return {
        "maxbytes": str(s.maxbytes),
        "slab_config": repr(float(s.factor)),
        "chunk_size": str(s.chunk_size),
        "item_size_max": str(s.item_size_max),
        "slab_chunk_size_max": str(s.slab_chunk_size_max),
        "slab_page_size": str(SLAB_PAGE_SIZE),
        "use_cas": "true" if s.use_cas else "false",
        "item_layout": f"{ITEM_LAYOUT_VERSION}/{header}",
        "slot_size": str(slot),
        "slots": str(nslots),
    }


class MetaError(Exception):
    """Why the saved state cannot be used (the cold-start reason)."""


@dataclass
class Meta:
    values: Dict[str, str] = field(default_factory=dict)
    pages: List[Tuple[int, int, int, int]] = field(default_factory=list)


def parse_meta(data: bytes) -> Meta:
    end = data.rfind(b"crc32 ")
    if end < 0 or (end > 0 and data[end - 1:end] != b"\n") or not data.endswith(b"\n"):
        raise MetaError("metadata file has no checksum line (truncated?)")
    try:
        want = int(data[end + 6:-1].decode("ascii"), 16)
    except ValueError:
        raise MetaError("metadata checksum line is damaged") from None
    got = zlib.crc32(data[:end])
    if got != want:
        raise MetaError(f"metadata checksum mismatch (file says {want:08x}, "
                        f"contents give {got:08x})")
    lines = data[:end].decode("utf-8", "replace").splitlines()
    if not lines or lines[0] != f"{META_MAGIC} {META_VERSION}":
        raise MetaError(f"metadata format not understood ({lines[0] if lines else 'empty'!r})")
    m = Meta()
    for ln in lines[1:]:
        name, _, value = ln.partition(" ")
        if name == "page":
            try:
                slot, cls, length, crc = value.split(" ")
                m.pages.append((int(slot), int(cls), int(length), int(crc, 16)))
            except ValueError:
                raise MetaError(f"bad page line {ln!r}") from None
        else:
            m.values[name] = value
    if str(len(m.pages)) != m.values.get("pages"):
        raise MetaError("page table incomplete")
    return m


class RestartFile:
    """The memory file of one process: mapping, warm/cold decision, metadata."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.memory_file or ""
        self.meta_path = self.path + ".meta"
        self.slot_size, self.nslots = region_geometry(settings)
        self.size = self.slot_size * self.nslots
        self.fd = -1
        self.mm: Optional[mmap.mmap] = None
        self.warm: Optional[Meta] = None
        self.cold_reason = ""
        self.stats: Dict[str, int] = {}
        self.check_seconds = 0.0

    # ------------------------------------------------------------ start
    def open(self, item_header: int) -> None:
        """Map the file; decide warm or cold (log says which and why)."""
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                # two daemons on one memory file would corrupt each other's items
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self.fd)
                self.fd = -1
                raise OSError(errno.EBUSY, "in use by another process") from None
        except OSError as e:
            raise OSError(f"cannot open memory file {self.path}: {e.strerror}") from None
        meta = self._load_meta(item_header)
        try:
            size = os.fstat(self.fd).st_size
            if meta is not None and size != self.size:
                self.cold_reason = (f"memory file is {size} bytes, {self.size} expected "
                                    "(truncated or replaced)")
                meta = None
            if meta is None:
                # every slot must read as zero: a page's never-carved chunks
                # would otherwise hold headers from an earlier life
                os.ftruncate(self.fd, 0)
            os.ftruncate(self.fd, self.size)
            self.mm = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise OSError(f"cannot map memory file {self.path}: {e.strerror}") from None
        if meta is not None:
            t0 = time.monotonic()
            bad = self._check_pages(meta)
            self.check_seconds = time.monotonic() - t0
            if bad:
                self.cold_reason = bad
                meta = None
                self._empty()
        self.warm = meta
        if meta is None:
            log.warning("[restart] %s: starting with a clean cache", self.cold_reason)
        self._check_room()

    def _check_room(self) -> None:
        """Warn when the file system cannot hold the whole file: on tmpfs a page
        the kernel cannot back kills the process (SIGBUS) when first touched."""
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            used = os.fstat(self.fd).st_blocks * 512
        except OSError:
            return
        room = st.f_bavail * st.f_frsize + used
        if room < self.size:
            log.warning("[restart] %s has room for %d MB, the memory file can grow to %d MB: "
                        "make the file system larger or -m smaller", os.path.dirname(
                            os.path.abspath(self.path)), room >> 20, self.size >> 20)

    def _empty(self) -> None:
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)

    def _load_meta(self, item_header: int) -> Optional[Meta]:
        try:
            with open(self.meta_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.cold_reason = "no metadata save file"
            return None
        except OSError as e:
            self.cold_reason = f"cannot read {self.meta_path}: {e.strerror}"
            return None
        # As memcached: read once, then gone, so a crash after this start
        # cannot reuse memory this process has since changed.
        try:
            os.unlink(self.meta_path)
        except OSError as e:
            log.warning("[restart] cannot remove %s: %s", self.meta_path, e.strerror)
        try:
            meta = parse_meta(data)
            want = _setting_values(self.settings, self.slot_size, self.nslots, item_header)
            for name, value in want.items():
                old = meta.values.get(name)
                if old != value:
                    raise MetaError(f"restart incompatible due to setting for [{name}] "
                                    f"[old value: {old}] [new value: {value}]")
            for name in ("process_started", "current_time", "stop_time", "current_cas",
                         "oldest_cas", "oldest_live"):
                if not meta.values.get(name, "").isdigit():
                    raise MetaError(f"metadata line {name} missing or damaged")
            stop = int(meta.values["stop_time"])
            now = int(time.time())
            if now <= stop:
                # memcached's sanity check: the clock must have moved on
                raise MetaError(f"clock did not advance since the stop (stopped at {stop}, "
                                f"now {now})")
        except MetaError as e:
            self.cold_reason = str(e)
            return None
        return meta

    def _page_crcs(self, pages: List[Tuple[int, int]]) -> List[int]:
        """CRC-32 of each (slot, length), on a few threads (zlib drops the GIL)."""
        assert self.mm is not None
        view = memoryview(self.mm)
        try:
            def crc(p: Tuple[int, int]) -> int:
                off = p[0] * self.slot_size
                return zlib.crc32(view[off:off + p[1]])
            if len(pages) < 16:
                return [crc(p) for p in pages]
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:
                return list(ex.map(crc, pages, chunksize=16))
        finally:
            view.release()

    def _check_pages(self, meta: Meta) -> str:
        seen = set()
        for slot, cls, length, crc in meta.pages:
            if slot < 0 or slot >= self.nslots or length <= 0 or length > self.slot_size \
                    or not 0 < cls < MAX_CLASSES or slot in seen:
                return f"page table entry out of range or repeated (slot {slot})"
            seen.add(slot)
        got = self._page_crcs([(slot, length) for slot, _, length, _ in meta.pages])
        for (slot, _, _, want), have in zip(meta.pages, got):
            if have != want:
                return f"memory file changed while stopped (page in slot {slot} fails its CRC)"
        return ""

    def rebuild(self, core_module) -> Dict[str, int]:
        """Relink the saved items into the freshly initialised core."""
        assert self.warm is not None
        m = self.warm
        t0 = time.monotonic()
        log.info("[restart] recovery start: %d pages", len(m.pages))
        try:
            hp: Optional[List[int]] = [max(0, min(int(x), 30)) for x in
                                       m.values.get("hashpower", "").split(",")]
        except ValueError:
            hp = None
        try:
            counts = core_module.restart_rebuild(
                [(slot, cls, length) for slot, cls, length, _ in m.pages],
                int(m.values["process_started"]), int(m.values["current_cas"]),
                int(m.values["oldest_cas"]), int(m.values["oldest_live"]),
                hp, int(m.values["region_base"]) if "region_base" in m.values else None)
        except ValueError as e:
            # the page table is checked as a whole before any item is linked,
            # so the core is still empty: a cold start is all that is left
            self.warm = None
            self.cold_reason = str(e)
            self._empty()
            log.warning("[restart] %s: starting with a clean cache", e)
            return {}
        dt = time.monotonic() - t0
        counts["seconds_us"] = int(dt * 1e6)
        self.stats = counts
        log.warning("[restart] warm restart from %s: %d items restored (and %d that "
                    "expired meanwhile, left to the crawler), %d flushed, %d invalid, "
                    "%d duplicate dropped in %.3fs (stopped %ds ago; "
                    "%d pages checked in %.3fs)",
                    self.path, counts["restored"], counts["expired"], counts["flushed"],
                    counts["invalid"], counts["duplicate"], dt,
                    int(time.time()) - int(m.values["stop_time"]), len(m.pages),
                    self.check_seconds)
        self.warm = None
        return counts

    # ------------------------------------------------------------ stop
    def save(self, core_module) -> None:
        """Write the metadata for the next start (workers already stopped)."""
        assert self.mm is not None
        t0 = time.monotonic()
        state = core_module.restart_state()
        pages = core_module.restart_pages()
        values = _setting_values(self.settings, self.slot_size, self.nslots,
                                 state["item_header"])
        values.update({
            "process_started": str(state["process_started"]),
            "current_time": str(state["current_time"]),
            "stop_time": str(int(time.time())),
            "current_cas": str(state["current_cas"]),
            "oldest_cas": str(state["oldest_cas"]),
            "oldest_live": str(state["oldest_live"]),
            "hashpower": ",".join(str(h) for h in state["hashpower"]),
            "region_base": str(state["region_base"]),     # chains of chunked items point into it
        })
        out = [f"{META_MAGIC} {META_VERSION}"]
        out += [f"{k} {v}" for k, v in values.items()]
        crcs = self._page_crcs([(slot, length) for slot, _, length in pages])
        for (slot, cls, length), crc in zip(pages, crcs):
            out.append(f"page {slot} {cls} {length} {crc:08x}")
        out.append(f"pages {len(pages)}")
        body = ("\n".join(out) + "\n").encode()
        body += b"crc32 %08x\n" % zlib.crc32(body)
        tmp = self.meta_path + ".tmp"
        # no msync: the next process maps the same page cache (tmpfs, DAX), and
        # -o drop_privileges' seccomp list (ext/linux_priv.h) has no msync
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.meta_path)
        log.warning("[restart] metadata saved to %s: %d pages, in %.3fs", self.meta_path,
                    len(pages), time.monotonic() - t0)

    def close(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass     # still exported by the core: the process is exiting anyway
            self.mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
