# memcachepy.tool — `memcachepy-tool`, an operator's view of a running cache.
#
# Owns: a tiny blocking admin client for the text protocol's stats family
# (AdminClient), and the sub-commands built on it, in the spirit of
# memcached's memcached-tool:
#   display   slab classes (stats slabs + stats items), the default
#   stats     general-purpose counters         settings   stats settings
#   sizes     stats sizes                      keys       key metadata
#   dump      every item as `add` commands that restore it (via
#             `lru_crawler metadump all`, falling back to `stats cachedump`)
#   top       a live view: request rates, hit ratio, memory, evictions;
#             `top --keys`: the hottest keys (memcachepy's `stats hotkeys`),
#             one node or several merged (ADDRESS,ADDRESS,... or --cluster,
#             the nodes a discovery endpoint names)
# and, verb first, the portable snapshots of memcachepy.snapshot:
#   snapshot HOST FILE / restore FILE HOST / verify FILE
#
# Apart from `top --keys`, only protocol commands real memcached has are used,
# so the tool works against either daemon; it never touches memcachepy
# internals.  Also the stats client for memcachepy.metrics.
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import base64
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Sequence, TextIO
from urllib.parse import unquote_to_bytes

__all__ = ["AdminClient", "ToolError", "parse_address", "slab_table", "top_sample",
           "top_rates", "main"]

DEFAULT_PORT = 11211


class ToolError(RuntimeError):
    """Something the operator needs to read; printed without a traceback."""


def parse_address(addr: str) -> tuple[str, "str | tuple[str, int]"]:
    """'host', 'host:port', '[v6]:port', '/path/to.sock' -> (family, sockaddr)."""
    if "/" in addr:
        return "unix", addr
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
        return "inet6", (host, port)
    if addr.count(":") == 1:
        host, port_s = addr.split(":")
        return "inet", (host or "127.0.0.1", int(port_s))
    if addr.count(":") > 1:  # bare IPv6 address
        return "inet6", (addr, DEFAULT_PORT)
    return "inet", (addr, DEFAULT_PORT)


class AdminClient:
    """One blocking connection speaking just enough text protocol for admin work."""

    def __init__(self, addr: str, timeout: float = 5.0) -> None:
        self.addr = addr
        self.timeout = timeout
        family, sockaddr = parse_address(addr)
        try:
            if isinstance(sockaddr, str):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(sockaddr)
            else:
                self.sock = socket.create_connection(sockaddr, timeout=timeout)
                # pipelined batches end in a short segment: no Nagle delay on it
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            raise ToolError(f"cannot connect to {addr}: {e.strerror or e}") from None
        self._buf = b""
        self._off = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- framing

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ToolError(f"{self.addr}: send failed: {e}") from None

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            raise ToolError(f"{self.addr}: no reply within {self.timeout:g}s") from None
        except OSError as e:
            raise ToolError(f"{self.addr}: receive failed: {e}") from None
        if not chunk:
            raise ToolError(f"{self.addr}: connection closed by server")
        # consumed bytes are dropped only here, so a reply of many lines costs
        # one copy per recv instead of one per line
        self._buf = self._buf[self._off:] + chunk
        self._off = 0

    def readline(self) -> bytes:
        """One line without its terminator; accepts both \\r\\n and bare \\n
        (memcached ends metadump lines with \\n only)."""
        while True:
            i = self._buf.find(b"\n", self._off)
            if i >= 0:
                line = self._buf[self._off:i]
                self._off = i + 1
                return line[:-1] if line.endswith(b"\r") else line
            self._fill()

    def readexact(self, n: int) -> bytes:
        while len(self._buf) - self._off < n:
            self._fill()
        data = self._buf[self._off:self._off + n]
        self._off += n
        return data

    # -- commands

    def stats(self, group: Optional[str] = None) -> dict[str, str]:
        """`stats [group]` as an ordered name -> value dict."""
        cmd = b"stats\r\n" if not group else f"stats {group}\r\n".encode()
        self.send(cmd)
        out: dict[str, str] = {}
        while True:
            line = self.readline()
            if line == b"END":
                return out
            if line.startswith(b"STAT "):
                _, name, value = (line.decode("utf-8", "replace").split(" ", 2) + [""])[:3]
                out[name] = value
                continue
            raise ToolError(f"{self.addr}: `{cmd.decode().strip()}` failed: "
                            f"{line.decode('utf-8', 'replace')}")

    def hotkeys(self, top: int = 10) -> "HotKeys":
        """`stats hotkeys TOP` (memcachepy's own); ToolError from other servers."""
        self.send(b"stats hotkeys %d\r\n" % top)
        hk = HotKeys()
        while True:
            line = self.readline()
            if line == b"END":
                return hk
            text = line.decode("utf-8", "replace")
            if line.startswith(b"STAT "):
                _, name, value = (text.split(" ", 2) + [""])[:3]
                if name == "hotkeys_sample":
                    hk.sample = int(value)
                elif name == "hotkeys_window":
                    hk.window_s = int(value)
                elif name == "hotkeys_sampled":
                    hk.sampled = int(value)
            elif line.startswith(b"HOTKEY "):
                hk.keys.append(HotKey.parse(line))
            else:
                raise ToolError(f"{self.addr}: no hot-key sampling here "
                                f"(`stats hotkeys` answered {text!r})")

    def per_class(self, group: str) -> tuple[dict[int, dict[str, str]], dict[str, str]]:
        """`stats slabs` / `stats items` split into {class: {field: value}} and globals."""
        classes: dict[int, dict[str, str]] = {}
        totals: dict[str, str] = {}
        for name, value in self.stats(group).items():
            parts = name.split(":")
            if group == "items" and len(parts) == 3 and parts[0] == "items":
                parts = parts[1:]
            if len(parts) == 2 and parts[0].isdigit():
                classes.setdefault(int(parts[0]), {})[parts[1]] = value
            else:
                totals[name] = value
        return classes, totals

    def version(self) -> str:
        self.send(b"version\r\n")
        line = self.readline().decode("utf-8", "replace")
        if not line.startswith("VERSION "):
            raise ToolError(f"{self.addr}: unexpected reply to version: {line}")
        return line[8:]

    def metadump(self) -> Iterator[dict[str, object]]:
        """Items from `lru_crawler metadump all`, one dict per item, key as bytes.

        Raises ToolError when the server refuses (dumping disabled with -X,
        crawler disabled, older server).  The crawler may be busy with
        another request; that is retried for a few seconds.
        """
        for _attempt in range(50):
            self.send(b"lru_crawler metadump all\r\n")
            first = self.readline()
            if first.startswith(b"BUSY"):
                time.sleep(0.1)
                continue
            break
        else:
            raise ToolError(f"{self.addr}: LRU crawler stayed busy")
        line = first
        while True:
            if line == b"END":
                return
            if not line.startswith(b"key="):
                raise ToolError(f"{self.addr}: metadump refused: "
                                f"{line.decode('utf-8', 'replace')}")
            item: dict[str, object] = {}
            for field in line.decode("ascii", "replace").split(" "):
                name, _, value = field.partition("=")
                item[name] = value
            item["key"] = unquote_to_bytes(str(item["key"]))
            yield item
            line = self.readline()

    def cachedump(self, slab_class: int, limit: int = 0) -> list[tuple[bytes, int, int]]:
        """`stats cachedump CLASS LIMIT` -> [(key, bytes, exptime)] (exptime 0 = never)."""
        self.send(f"stats cachedump {slab_class} {limit}\r\n".encode())
        out: list[tuple[bytes, int, int]] = []
        while True:
            line = self.readline()
            if line == b"END":
                return out
            if not line.startswith(b"ITEM "):
                raise ToolError(f"{self.addr}: cachedump refused: "
                                f"{line.decode('utf-8', 'replace')}")
            # ITEM <key> [<n> b; <exptime> s]
            body, _, meta = line[5:].rpartition(b" [")
            size_s, _, rest = meta.partition(b" b; ")
            exp_s = rest.split(b" ", 1)[0]
            out.append((body, int(size_s), int(exp_s)))

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        """`get k1 k2 ...` -> {key: (flags, value)} for the keys that hit."""
        if not keys:
            return {}
        self.send(b"get " + b" ".join(keys) + b"\r\n")
        out: dict[bytes, tuple[int, bytes]] = {}
        while True:
            line = self.readline()
            if line == b"END":
                return out
            if not line.startswith(b"VALUE "):
                raise ToolError(f"{self.addr}: get failed: {line.decode('utf-8', 'replace')}")
            parts = line.split(b" ")
            key, flags, size = parts[1], int(parts[2]), int(parts[3])
            value = self.readexact(size + 2)[:-2]
            out[key] = (flags, value)


# --------------------------------------------------------------------------
# display


@dataclass
class HotKey:
    """One line of `stats hotkeys`: estimates in requests since the window began."""
    key: bytes
    est: int
    err: int
    rate: float
    get: int = 0
    hit: int = 0
    set: int = 0
    other: int = 0

    @classmethod
    def parse(cls, line: bytes) -> "HotKey":
        # HOTKEY <key> est N err N rate R get N hit N set N other N[ b]
        parts = line.split()
        key = parts[1]
        if parts[-1] == b"b":            # a binary key, base64 (as meta replies flag them)
            key = base64.b64decode(key)
            parts = parts[:-1]
        f = {parts[i].decode(): parts[i + 1].decode() for i in range(2, len(parts) - 1, 2)}
        return cls(key, int(f.get("est", 0)), int(f.get("err", 0)), float(f.get("rate", 0)),
                   int(f.get("get", 0)), int(f.get("hit", 0)), int(f.get("set", 0)),
                   int(f.get("other", 0)))

    @property
    def label(self) -> str:
        """The key as text: printable keys as they are, others as b64:<base64>."""
        if all(33 <= b < 127 for b in self.key):
            return self.key.decode()
        return "b64:" + base64.b64encode(self.key).decode()


@dataclass
class HotKeys:
    sample: int = 0           # 1 request in `sample` is sampled; 0: sampling is off
    window_s: int = 0         # seconds the estimates cover
    sampled: int = 0
    keys: list = field(default_factory=list)


def _num(d: dict[str, str], name: str, default: float = 0) -> float:
    try:
        return float(d.get(name, default))
    except ValueError:
        return default


def human_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


@dataclass
class SlabRow:
    cls: int
    chunk_size: int
    max_age: int
    pages: int
    count: int
    full: bool
    evicted: int
    evict_time: int
    oom: int
    used_chunks: int
    total_chunks: int
    mem_requested: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def slab_table(client: AdminClient) -> list[SlabRow]:
    """One row per slab class that owns at least one page."""
    items, _ = client.per_class("items")
    slabs, _ = client.per_class("slabs")
    rows = []
    for cls in sorted(slabs):
        s = slabs[cls]
        it = items.get(cls, {})
        pages = int(_num(s, "total_pages"))
        if pages == 0:
            continue
        used = int(_num(s, "used_chunks"))
        total = int(_num(s, "total_chunks"))
        rows.append(SlabRow(
            cls=cls, chunk_size=int(_num(s, "chunk_size")), max_age=int(_num(it, "age")),
            pages=pages, count=int(_num(it, "number")), full=total > 0 and used >= total,
            evicted=int(_num(it, "evicted")), evict_time=int(_num(it, "evicted_time")),
            oom=int(_num(it, "outofmemory")), used_chunks=used, total_chunks=total,
            mem_requested=int(_num(it, "mem_requested"))))
    return rows


def format_slab_table(rows: Iterable[SlabRow]) -> str:
    lines = ["  #  Item_Size  Max_age   Pages   Count   Full?  Evicted Evict_Time OOM"]
    for r in rows:
        size = f"{r.chunk_size}B" if r.chunk_size < 1024 else f"{r.chunk_size / 1024:.1f}K"
        lines.append(f"{r.cls:3d} {size:>8s} {r.max_age:9d}s {r.pages:7d} {r.count:7d} "
                     f"{'yes' if r.full else 'no':>7s} {r.evicted:8d} {r.evict_time:8d} "
                     f"{r.oom:4d}")
    return "\n".join(lines) + "\n"


def format_pairs(addr: str, pairs: dict[str, str]) -> str:
    width = max([len(k) for k in pairs] + [5])
    lines = [f"#{addr}", f"{'Field':>{width}s}  Value"]
    for name in sorted(pairs):
        lines.append(f"{name:>{width}s}  {pairs[name]}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# keys / dump


def _stderr_warning(msg: str) -> None:
    print(f"memcachepy-tool: warning: {msg}", file=sys.stderr)


def iter_key_meta(client: AdminClient, limit: int = 0,
                  warn=_stderr_warning) -> Iterator[tuple[bytes, int]]:
    """(key, absolute exptime or 0) for every item; metadump, else cachedump.

    The cachedump fallback is partial by nature: memcached walks only each
    class's COLD LRU and stops at 2 MB of reply, so `warn` is told.
    """
    n = 0
    try:
        for item in client.metadump():
            if limit and n >= limit:
                # Keep reading to END: the connection must be clean for the
                # gets that follow (the dump cannot be cut short mid-stream).
                continue
            exp = int(str(item.get("exp", "-1")))
            n += 1
            yield item["key"], (0 if exp < 0 else exp)  # type: ignore[misc]
        return
    except ToolError as first_error:
        if n:
            raise
        reason = first_error
    # Fallback: per class cachedump (older servers, crawler disabled).
    items, _ = client.per_class("items")
    if warn is not None:
        warn(f"{reason}; falling back to `stats cachedump`, which sees only the COLD "
             "LRU of each slab class: the listing may be incomplete")
    try:
        for cls in sorted(items):
            for key, _size, exp in client.cachedump(cls, 0):
                yield key, exp
                n += 1
                if limit and n >= limit:
                    return
    except ToolError as e:
        raise ToolError(f"cannot list keys: {reason}; {e}") from None


def dump(client: AdminClient, out, limit: int = 0, batch: int = 100,
         warn=_stderr_warning) -> int:
    """Write `add <key> <flags> <exptime> <bytes>\\r\\n<value>\\r\\n` for every item.

    The output replays into any memcached-protocol server (nc host port < dump).
    Items that expire or are evicted between listing and fetching are skipped.
    Returns the number of items written.
    """
    # List first, fetch afterwards: the metadump stream must end before the
    # same connection can run gets.
    metas = list(iter_key_meta(client, limit, warn))
    written = 0
    for i in range(0, len(metas), batch):
        chunk = metas[i:i + batch]
        got = client.get_many([k for k, _ in chunk])
        for key, exp in chunk:
            if key not in got:
                continue
            flags, value = got[key]
            out.write(b"add %s %d %d %d\r\n%s\r\n" % (key, flags, exp, len(value), value))
            written += 1
    return written


# --------------------------------------------------------------------------
# top


TOP_COUNTERS = ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush", "get_hits", "get_misses",
                "delete_hits", "delete_misses", "incr_hits", "incr_misses", "decr_hits",
                "decr_misses", "cas_hits", "cas_misses", "cas_badval", "touch_hits",
                "touch_misses", "evictions", "expired_unfetched", "evicted_unfetched",
                "reclaimed", "bytes_read", "bytes_written", "total_connections",
                "total_items", "rejected_connections", "listen_disabled_num")


def top_sample(client: AdminClient) -> dict[str, object]:
    st = client.stats()
    st["_mono"] = str(time.monotonic())
    return st  # type: ignore[return-value]


def _ratio(hits: float, total: float) -> Optional[float]:
    return None if total <= 0 else hits / total


def top_rates(prev: Optional[dict], cur: dict) -> dict[str, object]:
    """Rates over the interval prev -> cur (or over the uptime when prev is None).

    A counter that went backwards (server restarted, `stats reset`) yields
    rates from the new values over the new uptime, never negative numbers.
    """
    if prev is not None:
        dt = float(cur["_mono"]) - float(prev["_mono"])
        restarted = _num(cur, "uptime") < _num(prev, "uptime") or any(
            _num(cur, k) < _num(prev, k) for k in TOP_COUNTERS if k in cur)
    else:
        restarted, dt = True, 0.0
    if restarted:
        dt = max(_num(cur, "uptime"), 1.0)
        base = {k: 0.0 for k in TOP_COUNTERS}
    else:
        base = {k: _num(prev, k) for k in TOP_COUNTERS}  # type: ignore[arg-type]
    dt = max(dt, 1e-6)
    delta = {k: _num(cur, k) - base[k] for k in TOP_COUNTERS}
    rate = {k: delta[k] / dt for k in TOP_COUNTERS}
    limit = _num(cur, "limit_maxbytes")
    used = _num(cur, "bytes")
    return {
        "interval_s": round(dt, 3),
        "since_start": restarted,
        "version": cur.get("version", "?"),
        "uptime_s": int(_num(cur, "uptime")),
        "threads": int(_num(cur, "threads")),
        "curr_connections": int(_num(cur, "curr_connections")),
        "curr_items": int(_num(cur, "curr_items")),
        "bytes": int(used),
        "limit_maxbytes": int(limit),
        "memory_used_pct": (100.0 * used / limit) if limit else None,
        "get_per_s": rate["cmd_get"],
        "set_per_s": rate["cmd_set"],
        "delete_per_s": rate["delete_hits"] + rate["delete_misses"],
        "incr_decr_per_s": (rate["incr_hits"] + rate["incr_misses"] + rate["decr_hits"]
                            + rate["decr_misses"]),
        "touch_per_s": rate["cmd_touch"],
        "hits_per_s": rate["get_hits"],
        "misses_per_s": rate["get_misses"],
        "hit_ratio": _ratio(delta["get_hits"], delta["get_hits"] + delta["get_misses"]),
        "hit_ratio_lifetime": _ratio(_num(cur, "get_hits"),
                                     _num(cur, "get_hits") + _num(cur, "get_misses")),
        "evictions_per_s": rate["evictions"],
        "evictions_total": int(_num(cur, "evictions")),
        "read_bytes_per_s": rate["bytes_read"],
        "written_bytes_per_s": rate["bytes_written"],
        "connections_per_s": rate["total_connections"],
    }


def _pct(x: Optional[float]) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def _uptime(s: int) -> str:
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h:02d}:{m:02d}:{s:02d}"


def format_top(addr: str, r: dict) -> str:
    span = "since start" if r["since_start"] else f"last {r['interval_s']:.1f}s"
    lines = [
        f"memcachepy-tool top - {addr}  version {r['version']}  up {_uptime(r['uptime_s'])}"
        f"  threads {r['threads']}   ({span})",
        f"conns {r['curr_connections']:<8d} new/s {r['connections_per_s']:<9.1f} "
        f"items {r['curr_items']}",
        f"memory {human_bytes(r['bytes'])} / {human_bytes(r['limit_maxbytes'])}"
        f" ({(r['memory_used_pct'] or 0):.1f}%)   evictions/s {r['evictions_per_s']:.1f}"
        f" (total {r['evictions_total']})",
        f"req/s  get {r['get_per_s']:<10.1f} set {r['set_per_s']:<10.1f} "
        f"delete {r['delete_per_s']:<8.1f} incr/decr {r['incr_decr_per_s']:<8.1f} "
        f"touch {r['touch_per_s']:.1f}",
        f"hit ratio {_pct(r['hit_ratio'])} (interval)  {_pct(r['hit_ratio_lifetime'])} "
        f"(lifetime)   hits/s {r['hits_per_s']:.1f}  misses/s {r['misses_per_s']:.1f}",
        f"net    in {human_bytes(r['read_bytes_per_s'])}/s   "
        f"out {human_bytes(r['written_bytes_per_s'])}/s",
    ]
    return "\n".join(lines) + "\n"


def run_top(addr: str, interval: float, iterations: int, as_json: bool, out: TextIO,
            timeout: float, clear: bool) -> int:
    with AdminClient(addr, timeout) as c:
        prev = top_sample(c)
        n = 0
        while iterations <= 0 or n < iterations:
            time.sleep(interval)
            cur = top_sample(c)
            rates = top_rates(prev, cur)
            prev = cur
            n += 1
            if as_json:
                out.write(json.dumps(rates) + "\n")
            else:
                if clear:
                    out.write("\x1b[H\x1b[2J")
                elif n > 1:
                    out.write("\n")
                out.write(format_top(addr, rates))
            out.flush()
    return 0


# --------------------------------------------------------------------------
# top --keys

_KEY_REQS = ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses", "incr_hits",
             "incr_misses", "decr_hits", "decr_misses")


@dataclass
class _KeysSample:
    mono: float
    stats: dict
    hot: HotKeys


def keys_sample(client: AdminClient, top: int) -> _KeysSample:
    hot = client.hotkeys(max(top * 4, 40))    # a deeper list: its tail may climb by next time
    return _KeysSample(time.monotonic(), client.stats(), hot)


def key_rates(prev: Optional[list], cur: list, top: int) -> dict[str, object]:
    """Hot keys over the interval prev -> cur, one _KeysSample per node, nodes
    merged by key. A key's rate is the growth of its estimate over the
    interval; a key new to the list (or one whose estimate restarted) gets its
    average over the server's window instead and is marked `approximate`."""
    keys: dict[str, dict] = {}
    total = 0.0
    dt = 0.0
    sample = 0
    for i, c in enumerate(cur):
        p = prev[i] if prev else None
        sample = max(sample, c.hot.sample)
        window = max(c.hot.window_s, 1)
        if p is not None:
            dt = max(c.mono - p.mono, 1e-6)
            node_total = sum(_num(c.stats, k) - _num(p.stats, k) for k in _KEY_REQS) / dt
        else:
            node_total = sum(_num(c.stats, k) for k in _KEY_REQS) / max(_num(c.stats, "uptime"), 1)
        total += max(node_total, 0.0)
        before = {h.key: h for h in p.hot.keys} if p is not None else {}
        for h in c.hot.keys:
            old = before.get(h.key)
            if old is not None and h.est >= old.est and p is not None and \
                    c.hot.window_s >= p.hot.window_s:
                span, base, approx = dt, old, False
            else:
                span, base, approx = float(window), HotKey(h.key, 0, 0, 0.0), True
            k = keys.setdefault(h.label, {"key": h.label, "per_s": 0.0, "get_per_s": 0.0,
                                          "set_per_s": 0.0, "hits": 0.0, "gets": 0.0,
                                          "err_per_s": 0.0, "approximate": False})
            k["per_s"] += (h.est - base.est) / span
            k["get_per_s"] += (h.get - base.get) / span
            k["set_per_s"] += (h.set - base.set) / span
            k["hits"] += h.hit - base.hit
            k["gets"] += h.get - base.get
            k["err_per_s"] += h.err / window
            k["approximate"] = k["approximate"] or approx
    rows = sorted(keys.values(), key=lambda r: (-r["per_s"], r["key"]))[:top]
    for r in rows:
        r["share"] = r["per_s"] / total if total > 0 else None
        r["hit_ratio"] = r["hits"] / r["gets"] if r["gets"] > 0 else None
        del r["hits"], r["gets"]
    return {"interval_s": round(dt, 3) if prev else None, "nodes": len(cur), "sample": sample,
            "key_requests_per_s": total, "keys": rows}


def format_top_keys(addr: str, r: dict) -> str:
    span = f"last {r['interval_s']:.1f}s" if r["interval_s"] else "server window"
    head = (f"memcachepy-tool top --keys - {addr}  "
            + (f"sampling 1/{r['sample']}" if r["sample"] else "sampling OFF (-o hotkeys_sample=N)")
            + f"  ({span})  {r['key_requests_per_s']:,.1f} key requests/s")
    lines = [head, f"{'rank':>4} {'req/s':>11} {'share':>6} {'get/s':>10} {'set/s':>10} "
                   f"{'hit%':>6} {'±err/s':>9}  key"]
    for i, k in enumerate(r["keys"], 1):
        lines.append(f"{i:>4} {k['per_s']:>11,.1f} {_pct(k['share'])} {k['get_per_s']:>10,.1f} "
                     f"{k['set_per_s']:>10,.1f} {_pct(k['hit_ratio'])} {k['err_per_s']:>9,.1f}  "
                     f"{k['key']}{' ~' if k['approximate'] else ''}")
    return "\n".join(lines) + "\n"


def cluster_nodes(endpoint: str, timeout: float) -> list[str]:
    """The `ip:port` (or `hostname:port`) of every node a discovery endpoint names."""
    from .cluster import DiscoveryError, fetch_config
    family, sockaddr = parse_address(endpoint)
    if isinstance(sockaddr, str):
        raise ToolError("--cluster needs a host:port discovery endpoint")
    try:
        _, nodes = fetch_config(sockaddr, timeout)
    except (DiscoveryError, OSError, ValueError) as e:
        raise ToolError(f"{endpoint}: cluster discovery failed: {e}") from None
    out = []
    for n in nodes:
        host = n.ip or n.hostname
        out.append(f"[{host}]:{n.port}" if ":" in host else f"{host}:{n.port}")
    return out


def run_top_keys(addrs: Sequence[str], interval: float, iterations: int, as_json: bool,
                 out: TextIO, timeout: float, clear: bool, top: int) -> int:
    clients = [AdminClient(a, timeout) for a in addrs]
    try:
        prev = [keys_sample(c, top) for c in clients]
        n = 0
        while iterations <= 0 or n < iterations:
            time.sleep(interval)
            cur = [keys_sample(c, top) for c in clients]
            rates = key_rates(prev, cur, top)
            prev = cur
            n += 1
            if as_json:
                out.write(json.dumps(rates) + "\n")
            else:
                if clear:
                    out.write("\x1b[H\x1b[2J")
                elif n > 1:
                    out.write("\n")
                out.write(format_top_keys(",".join(addrs), rates))
            out.flush()
    finally:
        for c in clients:
            c.close()
    return 0


# --------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memcachepy-tool",
        description="Inspect a memcached-protocol server (memcachepy or memcached).",
        epilog="ADDRESS is host, host:port, [ipv6]:port or /path/to/unix.sock "
               "(port defaults to 11211). Snapshots: `memcachepy-tool snapshot ADDRESS "
               "FILE`, `memcachepy-tool restore FILE ADDRESS`, `memcachepy-tool verify FILE` "
               "(each with -h).")
    p.add_argument("address")
    p.add_argument("mode", nargs="?", default="display",
                   choices=["display", "stats", "settings", "sizes", "keys", "dump", "top"])
    p.add_argument("limit", nargs="?", type=int, default=0,
                   help="keys/dump: stop after this many items")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=5.0, help="socket timeout in seconds")
    p.add_argument("--interval", type=float, default=2.0, help="top: seconds between samples")
    p.add_argument("--iterations", "-n", type=int, default=0,
                   help="top: stop after N samples (0 = until interrupted); "
                        "with N set or stdout not a terminal the screen is not cleared")
    p.add_argument("--keys", action="store_true",
                   help="top: the hottest keys (memcachepy's `stats hotkeys`); ADDRESS may "
                        "list several nodes, comma-separated, to merge a pool")
    p.add_argument("--top", type=int, default=10, help="top --keys: how many keys (default 10)")
    p.add_argument("--cluster", action="store_true",
                   help="top --keys: ADDRESS is a discovery endpoint (`config get cluster`); "
                        "merge the nodes it names")
    return p


SNAPSHOT_COMMANDS = ("snapshot", "restore", "verify")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SNAPSHOT_COMMANDS:
        # `snapshot HOST FILE`, `restore FILE HOST`, `verify FILE`: verb first
        from .snapshot import snapshot_main
        return snapshot_main(argv)
    args = build_parser().parse_args(argv)
    out = sys.stdout
    if args.limit < 0:
        print("memcachepy-tool: limit must be a positive number", file=sys.stderr)
        return 2
    try:
        if args.mode == "top" and args.keys:
            clear = out.isatty() and args.iterations == 0 and not args.json
            addrs = [a for a in args.address.split(",") if a]
            if args.cluster:
                addrs = cluster_nodes(args.address, args.timeout)
            return run_top_keys(addrs, args.interval, args.iterations, args.json, out,
                                args.timeout, clear, max(args.top, 1))
        if args.mode == "top":
            clear = out.isatty() and args.iterations == 0 and not args.json
            return run_top(args.address, args.interval, args.iterations, args.json, out,
                           args.timeout, clear)
        with AdminClient(args.address, args.timeout) as c:
            if args.mode == "display":
                rows = slab_table(c)
                if args.json:
                    out.write(json.dumps([r.as_dict() for r in rows], indent=1) + "\n")
                else:
                    out.write(format_slab_table(rows))
            elif args.mode in ("stats", "settings", "sizes"):
                group = {"stats": None, "settings": "settings", "sizes": "sizes"}[args.mode]
                pairs = c.stats(group)
                out.write(json.dumps(pairs, indent=1) + "\n" if args.json
                          else format_pairs(args.address, pairs))
            elif args.mode == "keys":
                for key, exp in iter_key_meta(c, args.limit):
                    k = key.decode("utf-8", "backslashreplace")
                    out.write(json.dumps({"key": k, "exp": exp}) + "\n" if args.json
                              else f"key={k} exp={exp}\n")
            elif args.mode == "dump":
                out.flush()
                n = dump(c, out.buffer if hasattr(out, "buffer") else out, args.limit)
                print(f"dumped {n} items from {args.address}", file=sys.stderr)
    except ToolError as e:
        print(f"memcachepy-tool: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `memcachepy-tool HOST dump | head`: not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
