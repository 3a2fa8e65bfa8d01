# memcachepy.metrics — an optional Prometheus endpoint for the daemon.
#
# Owns: the mapping from memcached's `stats`, `stats settings`, `stats slabs`
# and `stats items` replies onto the metric names of Prometheus'
# memcached_exporter (so existing dashboards and alerts work unchanged), the
# text exposition format, and a small stdlib HTTP server thread.
#
# Why scrape over the protocol instead of reading counters in-process: the
# exporter then never touches the request hot path or the compiled core's
# locks, costs nothing when nobody scrapes, and works against any memcached
# (which is also how it is tested).  Each scrape opens one connection to the
# daemon's own port, so it shows up in curr_connections/total_connections —
# exactly as memcached_exporter does.
#
# Off by default; when enabled it listens on loopback unless told otherwise.
#
# Hot keys (memcachepy's `stats hotkeys`): the top N keys (--metrics-hotkeys,
# default 10, 0 off) as memcachepy_hotkey_* gauges labelled by key, so the
# cardinality is bounded by N; --metrics-hotkeys-hash replaces each key by
# "sha256:" and the first 16 hex digits of its SHA-256, for keys that must not
# leave the host. A server without the command (memcached) just has no such
# metrics.
from __future__ import annotations

import argparse
import hashlib
import math
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Sequence

from memcachepy.tool import AdminClient, HotKeys, ToolError

__all__ = ["collect", "render", "scrape", "start_exporter", "ExporterHandle",
           "DEFAULT_METRICS_PORT", "main"]

# memcached_exporter's registered default port.
DEFAULT_METRICS_PORT = 9150
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NS = "memcached"


@dataclass
class Family:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class _Builder:
    """Collects families in first-seen order; samples of one family stay together."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def add(self, name: str, kind: str, help_text: str, value: Optional[float],
            labels: Optional[dict[str, str]] = None) -> None:
        if value is None:
            return
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = Family(name, kind, help_text)
        fam.samples.append((labels or {}, value))


def _f(d: dict[str, str], key: str) -> Optional[float]:
    """A stats value as a float; None when absent or not numeric (the
    exporter skips such metrics rather than inventing zeros)."""
    v = d.get(key)
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _timeval(d: dict[str, str], key: str) -> Optional[float]:
    # rusage_* are "seconds.microseconds"; float() would misread ".5" as half.
    v = d.get(key)
    if v is None:
        return None
    sec, _, usec = v.partition(".")
    try:
        return int(sec) + (int(usec) / 1_000_000 if usec else 0.0)
    except ValueError:
        return None


def _yes(d: dict[str, str], key: str) -> Optional[float]:
    v = d.get(key)
    return None if v is None else (1.0 if v == "yes" else 0.0 if v == "no" else None)


# (stats field, metric suffix, type, help) — general-purpose `stats`.
_GENERAL = (
    ("uptime", "uptime_seconds", "counter", "Seconds since the server started."),
    ("time", "time_seconds", "gauge", "The server's current UNIX time."),
    ("bytes_read", "read_bytes_total", "counter", "Bytes read from the network by the server."),
    ("bytes_written", "written_bytes_total", "counter", "Bytes sent to the network by the server."),
    ("curr_connections", "current_connections", "gauge", "Open client connections."),
    ("total_connections", "connections_total", "counter",
     "Connections opened since the server started."),
    ("rejected_connections", "connections_rejected_total", "counter",
     "Connections refused because the -c limit was reached (maxconns_fast)."),
    ("conn_yields", "connections_yielded_total", "counter",
     "Times a connection gave up its worker after -R requests in one event."),
    ("listen_disabled_num", "connections_listener_disabled_total", "counter",
     "Times the listener was paused because the connection limit was reached."),
    ("bytes", "current_bytes", "gauge", "Bytes currently used by stored items."),
    ("limit_maxbytes", "limit_bytes", "gauge", "Bytes the server may use for items (-m)."),
    ("curr_items", "current_items", "gauge", "Items currently stored."),
    ("total_items", "items_total", "counter", "Items stored since the server started."),
    ("evictions", "items_evicted_total", "counter",
     "Unexpired items removed to make room for new ones."),
    ("reclaimed", "items_reclaimed_total", "counter",
     "Times an item was stored in memory taken from an expired item."),
    ("store_too_large", "item_too_large_total", "counter",
     "Stores refused because the item was larger than -I."),
    ("store_no_memory", "item_no_memory_total", "counter",
     "Stores refused because no memory could be found."),
    ("lru_crawler_starts", "lru_crawler_starts_total", "counter",
     "Times the LRU crawler was started."),
    ("direct_reclaims", "direct_reclaims_total", "counter",
     "Times a worker had to reclaim or evict items itself."),
    ("crawler_items_checked", "lru_crawler_items_checked_total", "counter",
     "Items examined by the LRU crawler."),
    ("crawler_reclaimed", "lru_crawler_reclaimed_total", "counter",
     "Items freed by the LRU crawler."),
    ("moves_to_cold", "lru_crawler_moves_to_cold_total", "counter",
     "Items moved from the HOT or WARM LRU to COLD."),
    ("moves_to_warm", "lru_crawler_moves_to_warm_total", "counter",
     "Items moved from the COLD LRU to WARM."),
    ("moves_within_lru", "lru_crawler_moves_within_lru_total", "counter",
     "Items bumped within the HOT or WARM LRU."),
    ("accepting_conns", "accepting_connections", "gauge",
     "1 while the server accepts new connections."),
)

# `stats settings`, only when the LRU crawler is on (as the exporter does).
_SETTINGS_LRU = (
    ("lru_crawler_sleep", "lru_crawler_sleep", "Microseconds the LRU crawler sleeps between items."),
    ("lru_crawler_tocrawl", "lru_crawler_to_crawl", "Most items crawled per slab class per run."),
    ("hot_lru_pct", "lru_crawler_hot_percent", "Percent of a slab class reserved for the HOT LRU."),
    ("warm_lru_pct", "lru_crawler_warm_percent",
     "Percent of a slab class reserved for the WARM LRU."),
    ("hot_max_factor", "lru_crawler_hot_max_factor",
     "HOT LRU idle age limit as a multiple of the COLD LRU's age."),
    ("warm_max_factor", "lru_crawler_warm_max_factor",
     "WARM LRU idle age limit as a multiple of the COLD LRU's age."),
)

# `stats items` per class.
_ITEMS = (
    ("number", "slab_current_items", "gauge", "Items stored in this slab class."),
    ("age", "slab_items_age_seconds", "gauge", "Age of the oldest item in this slab class."),
    ("number_hot", "slab_hot_items", "gauge", "Items in this class's HOT LRU."),
    ("number_warm", "slab_warm_items", "gauge", "Items in this class's WARM LRU."),
    ("number_cold", "slab_cold_items", "gauge", "Items in this class's COLD LRU."),
    ("number_temp", "slab_temporary_items", "gauge", "Items in this class's TEMP LRU."),
    ("age_hot", "slab_hot_age_seconds", "gauge", "Age of the oldest item in the HOT LRU."),
    ("age_warm", "slab_warm_age_seconds", "gauge", "Age of the oldest item in the WARM LRU."),
    ("crawler_reclaimed", "slab_items_crawler_reclaimed_total", "counter",
     "Items in this class freed by the LRU crawler."),
    ("evicted", "slab_items_evicted_total", "counter",
     "Items evicted from this class before they expired."),
    ("evicted_nonzero", "slab_items_evicted_nonzero_total", "counter",
     "Items with an explicit expiry evicted from this class before they expired."),
    ("evicted_time", "slab_items_evicted_time_seconds", "counter",
     "Seconds since last access of the most recently evicted item of this class."),
    ("evicted_unfetched", "slab_items_evicted_unfetched_total", "counter",
     "Items evicted from this class that were never fetched."),
    ("expired_unfetched", "slab_items_expired_unfetched_total", "counter",
     "Items expired in this class that were never fetched."),
    ("outofmemory", "slab_items_outofmemory_total", "counter",
     "Stores into this class that failed for lack of memory."),
    ("reclaimed", "slab_items_reclaimed_total", "counter",
     "Stores into this class that reused an expired item's memory."),
    ("tailrepairs", "slab_items_tailrepairs_total", "counter",
     "Times an item at this class's LRU tail had to be repaired."),
    ("moves_to_cold", "slab_items_moves_to_cold", "counter",
     "Items of this class moved from HOT or WARM to COLD."),
    ("moves_to_warm", "slab_items_moves_to_warm", "counter",
     "Items of this class moved from COLD to WARM."),
    ("moves_within_lru", "slab_items_moves_within_lru", "counter",
     "Items of this class bumped within HOT or WARM."),
    ("mem_requested", "slab_mem_requested_bytes", "gauge",
     "Bytes the items of this class asked for (without chunk slack)."),
)

# `stats slabs` per class.
_SLABS = (
    ("chunk_size", "slab_chunk_size_bytes", "Bytes per chunk in this slab class."),
    ("chunks_per_page", "slab_chunks_per_page", "Chunks in one page of this slab class."),
    ("total_pages", "slab_current_pages", "Pages assigned to this slab class."),
    ("total_chunks", "slab_current_chunks", "Chunks assigned to this slab class."),
    ("used_chunks", "slab_chunks_used", "Chunks of this class holding an item."),
    ("free_chunks", "slab_chunks_free", "Chunks of this class not holding an item."),
    ("free_chunks_end", "slab_chunks_free_end", "Never-used chunks at the end of the last page."),
)

_OPS = ("get", "delete", "incr", "decr", "cas", "touch")


@dataclass
class Snapshot:
    stats: dict[str, str]
    settings: dict[str, str]
    slabs: dict[int, dict[str, str]]
    slab_totals: dict[str, str]
    items: dict[int, dict[str, str]]
    hotkeys: Optional[HotKeys] = None


def scrape(host: str, port: int, timeout: float = 5.0,
           unix_path: Optional[str] = None, hotkeys_top: int = 0) -> Snapshot:
    """One connection, four stats commands (five with hot keys).  Raises
    ToolError on any failure but a server that has no `stats hotkeys`."""
    addr = unix_path if unix_path else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    with AdminClient(addr, timeout) as c:
        stats = c.stats()
        settings = c.stats("settings")
        slabs, slab_totals = c.per_class("slabs")
        items, _ = c.per_class("items")
        hot = None
        if hotkeys_top > 0:
            try:
                hot = c.hotkeys(hotkeys_top)
            except ToolError:
                hot = None       # memcached answers ERROR: no hot-key metrics
    return Snapshot(stats, settings, slabs, slab_totals, items, hot)


def hotkey_label(key: bytes, hashed: bool) -> str:
    if hashed:
        return "sha256:" + hashlib.sha256(key).hexdigest()[:16]
    if all(33 <= b < 127 for b in key):
        return key.decode()
    import base64
    return "b64:" + base64.b64encode(key).decode()


def _collect_hotkeys(b: "_Builder", hot: HotKeys, hashed: bool) -> None:
    b.add("memcachepy_hotkeys_sample", "gauge",
          "Hot-key sampling: one key request in this many is sampled (0: off).", hot.sample)
    b.add("memcachepy_hotkeys_window_seconds", "gauge",
          "Seconds the hot-key estimates cover (since start-up or `stats hotkeys reset`).",
          hot.window_s)
    for h in hot.keys:
        lab = {"key": hotkey_label(h.key, hashed)}
        b.add("memcachepy_hotkey_requests", "gauge",
              "Estimated requests for this key in the window (an upper bound).", h.est, lab)
        b.add("memcachepy_hotkey_requests_error", "gauge",
              "How much the estimate may overstate the key's requests.", h.err, lab)
        b.add("memcachepy_hotkey_request_rate", "gauge",
              "Estimated requests per second for this key over the window.", h.rate, lab)
        for op, v in (("get", h.get), ("set", h.set), ("other", h.other)):
            b.add("memcachepy_hotkey_requests_by_op", "gauge",
                  "Estimated requests for this key in the window, by kind.", v,
                  dict(lab, op=op))
        b.add("memcachepy_hotkey_get_hits", "gauge",
              "Estimated gets of this key that found it.", h.hit, lab)


def collect(snap: Optional[Snapshot], slab_metrics: bool = True,
            hotkeys_hash: bool = False) -> dict[str, Family]:
    """Metric families for one scrape; snap None means the server was unreachable."""
    b = _Builder()
    b.add(f"{NS}_up", "gauge", "1 if the memcached server answered the scrape, else 0.",
          1.0 if snap is not None else 0.0)
    if snap is None:
        return b.families
    s = snap.stats
    if "version" in s:
        b.add(f"{NS}_version", "gauge", "The server's version, as a label.", 1.0,
              {"version": s["version"]})
    b.add(f"{NS}_process_user_cpu_seconds_total", "counter",
          "User CPU time used by the server process.", _timeval(s, "rusage_user"))
    b.add(f"{NS}_process_system_cpu_seconds_total", "counter",
          "System CPU time used by the server process.", _timeval(s, "rusage_system"))
    for key, suffix, kind, help_text in _GENERAL:
        b.add(f"{NS}_{suffix}", kind, help_text, _f(s, key))
    b.add(f"{NS}_max_connections", "gauge", "Client connection limit (-c).",
          _f(snap.settings, "maxconns"))
    b.add(f"{NS}_malloced_bytes", "gauge", "Bytes of memory assigned to slab pages.",
          _f(snap.slab_totals, "total_malloced"))

    cmd_help = "Requests by command and outcome."
    cmd = f"{NS}_commands_total"
    for op in _OPS:
        b.add(cmd, "counter", cmd_help, _f(s, f"{op}_hits"), {"command": op, "status": "hit"})
        b.add(cmd, "counter", cmd_help, _f(s, f"{op}_misses"), {"command": op, "status": "miss"})
    b.add(cmd, "counter", cmd_help, _f(s, "cas_badval"), {"command": "cas", "status": "badval"})
    b.add(cmd, "counter", cmd_help, _f(s, "cmd_flush"), {"command": "flush", "status": "hit"})
    # cmd_set also counts every cas attempt; report plain stores separately.
    cas_parts = [_f(s, k) for k in ("cas_misses", "cas_hits", "cas_badval")]
    set_total = _f(s, "cmd_set")
    if set_total is not None and None not in cas_parts:
        b.add(cmd, "counter", cmd_help, set_total - sum(cas_parts),  # type: ignore[arg-type]
              {"command": "set", "status": "hit"})

    st = snap.settings
    if st.get("lru_crawler") == "yes":
        b.add(f"{NS}_lru_crawler_enabled", "gauge", "1 if the LRU crawler is enabled.",
              _yes(st, "lru_crawler"))
        for key, suffix, help_text in _SETTINGS_LRU[:2]:
            b.add(f"{NS}_{suffix}", "gauge", help_text, _f(st, key))
        b.add(f"{NS}_lru_crawler_maintainer_thread", "gauge",
              "1 if the segmented LRU maintainer thread runs.",
              _yes(st, "lru_maintainer_thread"))
        for key, suffix, help_text in _SETTINGS_LRU[2:]:
            b.add(f"{NS}_{suffix}", "gauge", help_text, _f(st, key))

    lru_help = "Hits by slab class and the LRU segment the item was in."
    for cls in sorted(snap.items):
        it = snap.items[cls]
        lab = {"slab": str(cls)}
        for key, suffix, kind, help_text in _ITEMS:
            b.add(f"{NS}_{suffix}", kind, help_text, _f(it, key), lab)
        for key, lru in (("hits_to_hot", "hot"), ("hits_to_warm", "warm"),
                         ("hits_to_cold", "cold"), ("hits_to_temp", "temporary")):
            b.add(f"{NS}_slab_lru_hits_total", "counter", lru_help, _f(it, key),
                  {"slab": str(cls), "lru": lru})

    if slab_metrics:
        scmd = f"{NS}_slab_commands_total"
        shelp = "Requests by slab class, command and outcome."
        for cls in sorted(snap.slabs):
            sl = snap.slabs[cls]
            lab = {"slab": str(cls)}
            for key, suffix, help_text in _SLABS:
                b.add(f"{NS}_{suffix}", "gauge", help_text, _f(sl, key), lab)
            if "mem_requested" in sl and cls not in snap.items:
                b.add(f"{NS}_slab_mem_requested_bytes", "gauge", _ITEMS[-1][3],
                      _f(sl, "mem_requested"), lab)
            for op in _OPS:
                b.add(scmd, "counter", shelp, _f(sl, f"{op}_hits"),
                      {"slab": str(cls), "command": op, "status": "hit"})
            b.add(scmd, "counter", shelp, _f(sl, "cas_badval"),
                  {"slab": str(cls), "command": "cas", "status": "badval"})
            sset, shits, sbad = _f(sl, "cmd_set"), _f(sl, "cas_hits"), _f(sl, "cas_badval")
            if None not in (sset, shits, sbad):
                b.add(scmd, "counter", shelp, sset - shits - sbad,  # type: ignore[operator]
                      {"slab": str(cls), "command": "set", "status": "hit"})
    if snap.hotkeys is not None:
        _collect_hotkeys(b, snap.hotkeys, hotkeys_hash)
    return b.families


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def render(families: dict[str, Family]) -> str:
    """Prometheus text exposition format 0.0.4."""
    out: list[str] = []
    for fam in families.values():
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            if labels:
                lab = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                out.append(f"{fam.name}{{{lab}}} {_value(value)}")
            else:
                out.append(f"{fam.name} {_value(value)}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, target, slab_metrics: bool, timeout: float,
                 hotkeys_top: int = 0, hotkeys_hash: bool = False) -> None:
        host = addr[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.target = target
        self.slab_metrics = slab_metrics
        self.hotkeys_top = hotkeys_top
        self.hotkeys_hash = hotkeys_hash
        self.scrape_timeout = timeout
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "memcachepy-metrics"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would flood the daemon's log.
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            host, port, unix_path = self.server.target
            t0 = time.monotonic()
            try:
                snap: Optional[Snapshot] = scrape(host, port, self.server.scrape_timeout,
                                                  unix_path, self.server.hotkeys_top)
            except (ToolError, OSError):
                snap = None
            fams = collect(snap, self.server.slab_metrics, self.server.hotkeys_hash)
            b = _Builder()
            b.families = fams
            b.add("memcachepy_exporter_scrape_duration_seconds", "gauge",
                  "Seconds this scrape of the server took.", time.monotonic() - t0)
            self._send(200, render(fams).encode(), CONTENT_TYPE)
        elif path == "/":
            self._send(200, b"<html><head><title>memcachepy metrics</title></head><body>"
                            b"<a href=\"/metrics\">/metrics</a></body></html>\n",
                       "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET


class ExporterHandle:
    """A running exporter: .host/.port/.url, and .stop() to shut it down."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        addr = server.server_address
        self.host: str = str(addr[0])
        self.port: int = int(addr[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def start_exporter(listen_host: str = "127.0.0.1", listen_port: int = DEFAULT_METRICS_PORT,
                   target_host: str = "127.0.0.1", target_port: int = 11211, *,
                   target_unix: Optional[str] = None, slab_metrics: bool = True,
                   timeout: float = 5.0, hotkeys_top: int = 10,
                   hotkeys_hash: bool = False) -> ExporterHandle:
    """Serve /metrics on listen_host:listen_port (0 = any free port) in a daemon
    thread, scraping target_host:target_port (or target_unix) per request.

    Raises OSError if the port cannot be bound — the caller should treat
    that as a start-up error (before READY=1), not ignore it.
    """
    server = _Server((listen_host, listen_port), _Handler,
                     (target_host, target_port, target_unix), slab_metrics, timeout,
                     hotkeys_top, hotkeys_hash)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="memcachepy-metrics", daemon=True)
    t.start()
    return ExporterHandle(server, t)


def parse_listen(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'9150' / ':9150' / '0.0.0.0:9150' / '[::1]:9150' -> (host, port)."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest.lstrip(":"))
    if ":" in spec:
        host, _, port = spec.rpartition(":")
        return host or default_host, int(port)
    return default_host, int(spec)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone use: `python -m memcachepy.metrics --target HOST:PORT --listen [H:]P`."""
    p = argparse.ArgumentParser(prog="memcachepy-metrics",
                                description="Prometheus exporter for a memcached-protocol server")
    p.add_argument("--target", default="127.0.0.1:11211")
    p.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_METRICS_PORT}")
    p.add_argument("--no-slab-metrics", action="store_true")
    p.add_argument("--hotkeys", type=int, default=10,
                   help="export the N hottest keys (memcachepy's stats hotkeys; 0: off)")
    p.add_argument("--hotkeys-hash", action="store_true",
                   help="label hot keys by a SHA-256 prefix instead of the key")
    args = p.parse_args(argv)
    lh, lp = parse_listen(args.listen)
    if "/" in args.target:
        th, tp, tu = "", 0, args.target
    else:
        th, tp = parse_listen(args.target)
        tu = None
    h = start_exporter(lh, lp, th, tp, target_unix=tu, slab_metrics=not args.no_slab_metrics,
                       hotkeys_top=args.hotkeys, hotkeys_hash=args.hotkeys_hash)
    print(f"serving {h.url}", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        h.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
