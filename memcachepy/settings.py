# memcachepy.settings — the daemon's settings, their limits, and how they
# reach the compiled core.
#
# Owns: the Settings object (memcached's defaults), `-I` size parsing, `-o`
# sub-options, the cross-field checks memcached makes at start-up, and
# to_core() — the plain dict the Cython core is configured from, including the
# pre-formatted `stats settings` lines that never change at run time.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import __version__

EX_USAGE = 64


class SettingsError(Exception):
    def __init__(self, message: str, exit_code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_size(text: str) -> int:
    """-I value: bytes, or with a k/m suffix, as memcached reads it."""
    import re
    t = text or ""
    mult = 1
    if t[-1:] in ("k", "K"):
        mult, t = 1024, t[:-1]
    elif t[-1:] in ("m", "M"):
        mult, t = 1024 * 1024, t[:-1]
    m = re.match(r"\s*([+-]?\d+)", t)     # atoi(), as memcached
    return (int(m.group(1)) if m else 0) * mult


# -o sub-options memcached 1.6.18 accepts that memcachepy's design makes moot;
# accepted (with their value checked for shape) so memcached command lines run.
_ACCEPTED_FLAGS = {
    "maxconns_fast", "no_maxconns_fast", "no_hashexpand", "lru_crawler", "no_lru_crawler",
    "lru_maintainer", "no_lru_maintainer", "slab_reassign", "no_slab_reassign", "modern",
    "no_modern", "track_sizes", "drop_privileges", "no_drop_privileges", "no_chunked_items",
    "no_inline_ascii_resp", "temp_lru", "no_lru_segmented", "lru_segmented",
}
_ACCEPTED_VALUES = {
    "hashpower", "tail_repair_time", "hash_algorithm", "lru_crawler_sleep",
    "lru_crawler_tocrawl", "hot_lru_pct", "warm_lru_pct", "hot_max_factor", "warm_max_factor",
    "temporary_ttl", "slab_automove", "slab_automove_ratio", "slab_automove_window",
    "watcher_logbuf_size", "worker_logbuf_size", "read_buf_mem_limit", "slab_sizes",
    "idle_timeout", "slab_chunk_max", "shards",
}


def parse_suboptions(s: "Settings", text: str) -> None:
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        if name in _ACCEPTED_FLAGS and not eq:
            if name == "maxconns_fast":
                s.maxconns_fast = True
            elif name == "no_maxconns_fast":
                s.maxconns_fast = False
            s.extended[name] = ""
            continue
        if name in _ACCEPTED_VALUES and eq:
            if name == "hash_algorithm":
                if value not in ("murmur3", "jenkins", "xxh3"):
                    raise SettingsError("Unknown hash_algorithm option (jenkins, murmur3, xxh3)", 1)
            elif name in ("hot_max_factor", "warm_max_factor", "slab_automove_ratio"):
                try:
                    float(value)
                except ValueError:
                    raise SettingsError(f"Invalid value for {name}: {value!r}", 1) from None
            elif name == "slab_sizes":
                pass
            else:
                try:
                    n = int(value, 10)
                except ValueError:
                    raise SettingsError(f"Invalid value for {name}: {value!r}", 1) from None
                if name == "idle_timeout":
                    s.idle_timeout = n
                elif name == "slab_chunk_max":
                    s.slab_chunk_size_max = n
                elif name == "shards":
                    s.nshards = n
                elif name == "hashpower":
                    if n < 12 or n > 32:
                        raise SettingsError("Initial hashtable multiplier of 12 or higher required.\n"
                                            "Hash table power size cannot exceed 32", 1)
                    s.hashpower_init = n
                elif name == "lru_crawler_sleep":
                    s.lru_crawler_sleep = n
            s.extended[name] = value
            continue
        raise SettingsError(f'Illegal suboption "{part}"', 1)


@dataclass
class Settings:
    memcached_version = "1.6.18"

    port: int = 11211
    udpport: int = 0
    listen: List[str] = field(default_factory=list)
    domain_socket: Optional[str] = None
    unix_mask: int = 0o700
    shutdown_command: bool = False
    daemonize: bool = False
    user: Optional[str] = None
    pidfile: Optional[str] = None
    maxbytes: int = 64 * 1024 * 1024
    evict_to_free: bool = True
    maxconns: int = 1024
    maxconns_fast: bool = True
    verbose: int = 0
    factor: float = 1.25
    chunk_size: int = 48
    prefix_delimiter: str = ":"
    detail_enabled: bool = False
    num_threads: int = 4
    reqs_per_event: int = 20
    use_cas: bool = True
    backlog: int = 1024
    binding_protocol: str = "auto-negotiate"
    item_size_max: int = 1024 * 1024
    slab_chunk_size_max: int = 512 * 1024
    flush_enabled: bool = True
    dump_enabled: bool = True
    watch_enabled: bool = True
    idle_timeout: int = 0
    nshards: int = 64
    hashpower_init: int = 0
    lru_crawler_sleep: int = 100
    metrics_listen: Optional[str] = None
    auth_file: Optional[str] = None
    auth_entries: List[tuple] = field(default_factory=list)
    log_file: Optional[str] = None
    extended: Dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """memcached's start-up checks on -I, slab_chunk_max and friends."""
        if self.item_size_max < 1024:
            raise SettingsError("Item max size cannot be less than 1024 bytes.")
        if self.item_size_max > self.maxbytes // 2:
            raise SettingsError("Cannot set item size limit higher than 1/2 of memory max.")
        if self.item_size_max > 1024 * 1024 * 1024:
            raise SettingsError("Cannot set item size limit higher than a gigabyte.")
        if self.slab_chunk_size_max > self.item_size_max:
            raise SettingsError(f"slab_chunk_max (bytes: {self.slab_chunk_size_max}) cannot be larger "
                                f"than -I (item_size_max {self.item_size_max})")
        if self.item_size_max % self.slab_chunk_size_max:
            raise SettingsError(f"-I (item_size_max: {self.item_size_max}) must be evenly divisible by "
                                f"slab_chunk_max (bytes: {self.slab_chunk_size_max})")
        if (1024 * 1024) % self.slab_chunk_size_max:
            raise SettingsError(f"slab_chunk_max (bytes: {self.slab_chunk_size_max}) must divide "
                                f"evenly into {1024 * 1024} (slab_page_size)")
        if self.nshards < 1 or self.nshards > 256 or self.nshards & (self.nshards - 1):
            raise SettingsError("shards must be a power of two between 1 and 256", 1)
        if self.idle_timeout < 0:
            raise SettingsError("idle_timeout must be 0 or more", 1)
        if self.domain_socket and self.listen:
            # memcached: -s disables network support; -l is then ignored.
            self.listen = []

    # ----------------------------------------------------------- core config
    def inter_text(self) -> str:
        if self.listen:
            return ",".join(self.listen)
        return "NULL"

    def settings_text(self) -> tuple:
        """The static lines of `stats settings`, as memcached 1.6.18 prints them
        (compile-time ext_/ssl_ fields as Debian's build reports them)."""
        def line(name: str, value: object) -> str:
            return f"STAT {name} {value}\r\n"

        yn = lambda b: "yes" if b else "no"  # noqa: E731
        ext = self.extended
        a = "".join([
            line("maxconns", self.maxconns),
            line("tcpport", 0 if self.domain_socket else self.port),
            line("udpport", self.udpport),
            line("inter", self.inter_text()),
        ])
        b = "".join([
            line("evictions", "on" if self.evict_to_free else "off"),
            line("domain_socket", self.domain_socket or "NULL"),
            line("umask", format(self.unix_mask, "o")),
            line("shutdown_command", yn(self.shutdown_command)),
            line("growth_factor", f"{self.factor:.2f}"),
            line("chunk_size", self.chunk_size),
            line("num_threads", self.num_threads),
            line("num_threads_per_udp", self.num_threads),
            line("stat_key_prefix", self.prefix_delimiter),
            line("detail_enabled", yn(self.detail_enabled)),
            line("reqs_per_event", self.reqs_per_event),
            line("cas_enabled", yn(self.use_cas)),
            line("tcp_backlog", self.backlog),
            line("binding_protocol", self.binding_protocol),
            line("auth_enabled_sasl", "no"),
            line("auth_enabled_ascii", self.auth_file or "no"),
            line("item_size_max", self.item_size_max),
            line("maxconns_fast", yn(self.maxconns_fast)),
            line("hashpower_init", self.hashpower_init),
            line("slab_reassign", "yes"),
        ])
        b2 = "".join([
            line("slab_automove_window", ext.get("slab_automove_window", "30")),
            line("slab_chunk_max", self.slab_chunk_size_max),
        ])
        b3 = "".join([
            line("tail_repair_time", ext.get("tail_repair_time", "0")),
            line("flush_enabled", yn(self.flush_enabled)),
            line("dump_enabled", yn(self.dump_enabled)),
            line("hash_algorithm", ext.get("hash_algorithm", "murmur3")),
            line("lru_maintainer_thread", "no" if "no_lru_maintainer" in ext else "yes"),
        ])
        b4 = "".join([
            line("idle_timeout", self.idle_timeout),
            line("watcher_logbuf_size", ext.get("watcher_logbuf_size", "262144")),
            line("worker_logbuf_size", ext.get("worker_logbuf_size", "65536")),
            line("read_buf_mem_limit", ext.get("read_buf_mem_limit", "0")),
            line("track_sizes", "yes" if "track_sizes" in ext else "no"),
            line("inline_ascii_response", "no"),
            line("ext_item_size", 512),
            line("ext_item_age", 4294967295),
            line("ext_low_ttl", 0),
            line("ext_recache_rate", 2000),
            line("ext_wbuf_size", 4194304),
            line("ext_compact_under", 0),
            line("ext_drop_under", 0),
            line("ext_max_sleep", 1000000),
            line("ext_max_frag", "0.80"),
            line("slab_automove_freeratio", "0.010"),
            line("ext_drop_unread", "no"),
            line("ssl_enabled", "no"),
            line("ssl_chain_cert", "(null)"),
            line("ssl_key", "(null)"),
            line("ssl_verify_mode", 0),
            line("ssl_keyformat", 1),
            line("ssl_ciphers", "NULL"),
            line("ssl_ca_cert", "NULL"),
            line("ssl_wbuf_size", 16384),
            line("ssl_session_cache", "no"),
            line("ssl_kernel_tls", "no"),
            line("ssl_min_version", "tlsv1.2"),
            line("num_napi_ids", "(null)"),
            line("memory_file", "(null)"),
        ])
        return a, [b, b2, b3, b4]

    def to_core(self) -> dict:
        a, b = self.settings_text()
        ext = self.extended
        return {
            "maxbytes": self.maxbytes,
            "maxconns": self.maxconns,
            "maxconns_fast": self.maxconns_fast,
            "port": self.port,
            "udpport": self.udpport,
            "verbose": self.verbose,
            "evict_to_free": self.evict_to_free,
            "factor": self.factor,
            "chunk_size": self.chunk_size,
            "num_threads": self.num_threads,
            "reqs_per_event": self.reqs_per_event,
            "use_cas": self.use_cas,
            "backlog": self.backlog,
            "item_size_max": self.item_size_max,
            "slab_chunk_size_max": self.slab_chunk_size_max,
            "flush_enabled": self.flush_enabled,
            "dump_enabled": self.dump_enabled,
            "shutdown_command": self.shutdown_command,
            "watch_enabled": self.watch_enabled,
            "idle_timeout": self.idle_timeout,
            "nshards": self.nshards,
            "detail_enabled": self.detail_enabled,
            "auth_entries": list(self.auth_entries),
            "prefix_delimiter": self.prefix_delimiter,
            "version": self.memcached_version,
            "own_version": __version__,
            "domain_socket": self.domain_socket,
            "settings_text_a": a,
            "settings_text_b": b,
            "slab_automove": int(ext.get("slab_automove", 1)),
            "slab_automove_ratio": float(ext.get("slab_automove_ratio", 0.8)),
            "lru_crawler": "no_lru_crawler" not in ext,
            "lru_crawler_sleep": self.lru_crawler_sleep,
            "lru_crawler_tocrawl": int(ext.get("lru_crawler_tocrawl", 0)),
            "lru_maintainer": "no_lru_maintainer" not in ext,
            "lru_segmented": "no_lru_segmented" not in ext and "no_lru_maintainer" not in ext,
            "track_sizes": "track_sizes" in ext,
            "hot_lru_pct": int(ext.get("hot_lru_pct", 20)),
            "warm_lru_pct": int(ext.get("warm_lru_pct", 40)),
            "hot_max_factor": float(ext.get("hot_max_factor", 0.2)),
            "warm_max_factor": float(ext.get("warm_max_factor", 2.0)),
            "temp_lru": "temp_lru" in ext or "temporary_ttl" in ext,
            "temporary_ttl": int(ext.get("temporary_ttl", 61)),
        }
