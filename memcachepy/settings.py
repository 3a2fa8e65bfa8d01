# memcachepy.settings — the daemon's settings, their limits, and how they
# reach the compiled core.
#
# Owns: the Settings object (memcached's defaults), `-I` size parsing, `-o`
# sub-options, the cross-field checks memcached makes at start-up, and
# to_core() — the plain dict the Cython core is configured from, including the
# pre-formatted `stats settings` lines that never change at run time.
from __future__ import annotations

import sys

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import __version__
from .options import SUB, SUBOPTIONS, sub_default

EX_USAGE = 64


class SettingsError(Exception):
    def __init__(self, message: str, exit_code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_sasl_pwdb(path: str) -> List[tuple]:
    """memcached's SASL password database (MEMCACHED_SASL_PWDB): `user:password`
    lines, the password ending at the next ':' or the line end; the first line
    naming a user decides. An unreadable file authenticates nobody, as in
    memcached (which reads it at each authentication)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return []
    seen = set()
    entries = []
    for raw in data.split(b"\n"):
        line = raw[:255].decode("utf-8", "surrogateescape")
        user, sep, rest = line.partition(":")
        if not sep or user in seen:
            continue
        seen.add(user)
        password = rest.split(":", 1)[0].split("\r", 1)[0].split("\0", 1)[0]
        entries.append((user, password))
    return entries


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


def atoi(text: str) -> int:
    """C's atoi(), which memcached uses for its numeric flags: leading blanks, a sign,
    digits; anything else ends it (0 if none)."""
    import re
    m = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", text or "")
    return int(m.group(1)) if m else 0


def atof(text: str) -> float:
    """C's atof(), for the shapes a command line holds."""
    import re
    m = re.match(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)", text or "")
    return float(m.group(1)) if m else 0.0


def strtol(text: str, base: int) -> int:
    """C's strtol(text, NULL, base) for bases up to 10: the leading digits, else 0."""
    import re
    m = re.match(r"\s*([+-]?[0-%d]+)" % (base - 1), text or "")
    return int(m.group(1), base) if m else 0


def _strtoul32(text: str) -> Optional[int]:
    """memcached's safe_strtoul: a whole unsigned number that fits in 32 bits, else None."""
    t = text.strip()
    if not t or not (t.isdigit() or (t[0] == "+" and t[1:].isdigit())):
        return None
    n = int(t)
    return n if n < 2**32 else None


# From the sub-option table (options.py): memcached's message for a missing value,
# and the bare switches (memcached ignores a value given to one).
_MISSING = {o.name: o.missing for o in SUBOPTIONS if o.missing}
_SWITCHES = {o.name for o in SUBOPTIONS if o.switch}
# Families memcachepy does not implement (extstore, proxy): cli.py refuses them.
_UNSUPPORTED_PREFIXES = ("ext_", "proxy_")

# -o ssl_* (memcached's TLS options; tls.pxi): the ones taking a string.
_SSL_STRINGS = ("ssl_chain_cert", "ssl_key", "ssl_ciphers", "ssl_ca_cert")
_SSL_MISSING = {n: f"Missing {n} argument" for n in
                _SSL_STRINGS + ("ssl_verify_mode", "ssl_keyformat", "ssl_wbuf_size",
                                "ssl_min_version")}


def _safe_strtol(text: str) -> Optional[int]:
    """memcached's safe_strtol: a whole signed number (blanks around it allowed)."""
    import re
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?\d+)[ \t\n\v\f\r]*", text)
    if not m:
        return None
    n = int(m.group(1))
    return n if -2**63 <= n < 2**63 else None


def _parse_ssl(s: "Settings", name: str, v: Optional[str]) -> None:
    """One -o ssl_* sub-option, with memcached 1.6.18's checks and messages."""
    if name in _SSL_MISSING and v is None:
        raise SettingsError(_SSL_MISSING[name], 1)
    if name in _SSL_STRINGS:
        setattr(s, name, v)
    elif name == "ssl_verify_mode":
        n = _safe_strtol(v)
        if n is None:
            raise SettingsError("could not parse argument to ssl_verify_mode", 1)
        if n not in (0, 1, 2, 3):
            raise SettingsError("Invalid ssl_verify_mode. Use help to see valid options.", 1)
        s.ssl_verify_mode = n
    elif name == "ssl_keyformat":
        n = _safe_strtol(v)
        if n is None:
            raise SettingsError("could not parse argument to ssl_keyformat", 1)
        s.ssl_keyformat = n
    elif name == "ssl_wbuf_size":
        n = _strtoul32(v)
        if n is None:
            raise SettingsError("could not parse argument to ssl_wbuf_size", 1)
        s.ssl_wbuf_size = (n * 1024) % 2**32
    elif name == "ssl_min_version":
        n = _safe_strtol(v)
        if n is None:
            raise SettingsError("could not parse argument to ssl_min_version", 1)
        if n not in (0, 1, 2, 3):
            raise SettingsError("Invalid ssl_min_version. Use help to see valid options.", 1)
        s.ssl_min_version = n
    elif name == "ssl_session_cache":
        s.ssl_session_cache = True
    elif name == "ssl_kernel_tls":
        s.ssl_kernel_tls = True
    else:
        raise SettingsError(f'Illegal suboption "{name}"' + (f"={v}" if v is not None else ""), 1)


def parse_suboptions(s: "Settings", text: str) -> None:
    """-o a,b=1,...: memcached 1.6.18's checks and messages, in order, later ones winning.
    Values land in s.extended (read by settings_text and to_core)."""
    ext = s.extended
    for part in text.split(","):
        if not part:
            continue
        name, eq, value = part.partition("=")
        v: Optional[str] = value if eq else None
        if name in _MISSING and v is None:
            raise SettingsError(_MISSING[name], 1)
        if name == "hashpower":
            n = atoi(v)
            if n < 12:
                raise SettingsError(f"Initial hashtable multiplier of {n} is too low", 1)
            if n > 32:
                raise SettingsError(f"Initial hashtable multiplier of {n} is too high\n"
                                    'Choose a value based on "STAT hash_power_level" from a '
                                    "running instance", 1)
            s.hashpower_init = n
            ext[name] = str(n)
        elif name == "slab_automove":
            n = 1 if v is None else atoi(v)
            if n < 0 or n > 2:
                raise SettingsError("slab_automove must be between 0 and 2", 1)
            ext[name] = str(n)
        elif name == "slab_automove_ratio":
            f = atof(v)
            if f <= 0 or f > 1:
                raise SettingsError("slab_automove_ratio must be > 0 and < 1", 1)
            ext[name] = v
        elif name == "slab_automove_window":
            n = atoi(v)
            if n < 3:
                raise SettingsError("slab_automove_window must be > 2", 1)
            ext[name] = str(n)
        elif name == "tail_repair_time":
            n = atoi(v)
            if n < 10:
                raise SettingsError("Cannot set tail_repair_time to less than 10 seconds", 1)
            ext[name] = str(n)
        elif name == "hash_algorithm":
            if v not in ("jenkins", "murmur3", "xxh3"):
                raise SettingsError("Unknown hash_algorithm option (jenkins, murmur3, xxh3)", 1)
            ext[name] = v
        elif name == "lru_crawler_sleep":
            n = atoi(v)
            if n < 0 or n > 1_000_000:
                raise SettingsError("LRU crawler sleep must be between 0 and 1 second", 1)
            s.lru_crawler_sleep = n
            ext[name] = str(n)
        elif name == "lru_crawler_tocrawl":
            n = _strtoul32(v)
            if n is None:
                raise SettingsError("lru_crawler_tocrawl takes a numeric 32bit value", 1)
            ext[name] = str(n)
        elif name in ("hot_lru_pct", "warm_lru_pct"):
            n = atoi(v)
            if n < 1 or n >= 80:
                raise SettingsError(f"{name} must be > 1 and < 80", 1)
            ext[name] = str(n)
        elif name in ("hot_max_factor", "warm_max_factor"):
            if atof(v) <= 0:
                raise SettingsError(f"{name} must be > 0", 1)
            ext[name] = repr(atof(v))
        elif name == "temporary_ttl":
            ext[name] = str(atoi(v))
        elif name == "idle_timeout":
            s.idle_timeout = atoi(v)
            ext[name] = str(s.idle_timeout)
        elif name in ("watcher_logbuf_size", "worker_logbuf_size", "read_buf_mem_limit"):
            n = _strtoul32(v)
            if n is None:
                raise SettingsError(f"could not parse argument to {name}", 1)
            unit = 1024 * 1024 if name == "read_buf_mem_limit" else 1024
            ext[name] = str(n * unit)
        elif name == "slab_chunk_max":
            try:
                s.slab_chunk_size_max = int(v.strip(), 10)
            except ValueError:
                raise SettingsError("could not parse argument to slab_chunk_max", 1) from None
            ext[name] = v
        elif name == "slab_sizes":
            ext[name] = v
        elif name == "cluster_file":      # memcachepy's own: auto discovery (discovery.py)
            if not v:
                raise SettingsError(_MISSING[name], 1)
            import os
            s.cluster_file = os.path.abspath(v)   # -d chdirs to /; SIGHUP re-reads it
        elif name == "hotkeys_sample":    # memcachepy's own: 1 key request in N sampled
            n = _strtoul32(v)
            if n is None:
                raise SettingsError("hotkeys_sample takes a numeric 32bit value (0 turns it off)", 1)
            ext[name] = str(n)
        elif name == "busy_poll_us":      # memcachepy's own: spin before sleeping
            n = _strtoul32(v)
            if n is None or n > 1000000:
                raise SettingsError("busy_poll_us takes microseconds, 0 to 1000000", 1)
            ext[name] = str(n)
        elif name == "shards":            # memcachepy's own: how many lock shards
            n = atoi(v)
            s.nshards = n
            ext[name] = str(n)
        elif name in _SWITCHES:
            _switch(s, name)
        elif name.startswith("ssl_"):
            _parse_ssl(s, name, v)
        elif name.startswith(_UNSUPPORTED_PREFIXES):
            raise SettingsError(f'"{name}": extstore, TLS and the proxy are not supported '
                                "by memcachepy", 1)
        else:
            raise SettingsError(f'Illegal suboption "{part}"', 1)


def _switch(s: "Settings", name: str) -> None:
    ext = s.extended
    # a switch and its opposite: the later one wins, as in memcached
    for a, b in (("maxconns_fast", "no_maxconns_fast"), ("lru_crawler", "no_lru_crawler"),
                 ("lru_maintainer", "no_lru_maintainer"), ("slab_reassign", "no_slab_reassign"),
                 ("drop_privileges", "no_drop_privileges"),
                 ("inline_ascii_resp", "no_inline_ascii_resp")):
        if name == a:
            ext.pop(b, None)
        elif name == b:
            ext.pop(a, None)
    if name == "resp_obj_mem_limit":
        sys.stderr.write("DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,\n")
        return
    if name == "maxconns_fast":
        s.maxconns_fast = True
    elif name == "no_maxconns_fast":
        s.maxconns_fast = False
    elif name == "no_slab_automove":
        ext["slab_automove"] = "0"
        return
    elif name == "lru_maintainer":       # also turns the segmented LRU back on
        ext.pop("no_lru_segmented", None)
    elif name == "no_lru_maintainer":    # the maintainer runs the segments: flat LRU
        ext["no_lru_segmented"] = ""
    elif name == "no_chunked_items":     # one chunk per item up to a page
        s.slab_chunk_size_max = 1024 * 1024
    elif name == "no_modern":            # 1.5's defaults
        if "slab_chunk_max" not in ext:
            s.slab_chunk_size_max = 1024 * 1024
        s.maxconns_fast = False
        for k in ("maxconns_fast", "lru_crawler", "lru_maintainer", "slab_reassign"):
            ext.pop(k, None)
        ext.update({"no_slab_reassign": "", "no_maxconns_fast": "", "no_lru_crawler": "",
                    "no_lru_maintainer": "",
                    "no_lru_segmented": "", "slab_automove": "0", "hash_algorithm": "jenkins"})
    ext[name] = ""


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
    memory_file: Optional[str] = None      # -e: restartable cache (memcachepy.restart)
    chunk_size: int = 48
    prefix_delimiter: str = ":"
    detail_enabled: bool = False
    num_threads: int = 4
    reqs_per_event: int = 20
    use_cas: bool = True
    backlog: int = 1024
    binding_protocol: str = "auto-negotiate"
    item_size_max: int = 1024 * 1024
    slab_chunk_size_max: int = int(SUB["slab_chunk_max"].default)
    flush_enabled: bool = True
    dump_enabled: bool = True
    watch_enabled: bool = True
    idle_timeout: int = int(SUB["idle_timeout"].default)
    nshards: int = int(SUB["shards"].default)
    hashpower_init: int = int(SUB["hashpower"].default)
    lru_crawler_sleep: int = int(SUB["lru_crawler_sleep"].default)
    metrics_listen: Optional[str] = None
    metrics_hotkeys: int = 10          # hot keys exported by the metrics endpoint (0: none)
    metrics_hotkeys_hash: bool = False # export them as SHA-256 prefixes, not keys
    auth_file: Optional[str] = None
    auth_entries: List[tuple] = field(default_factory=list)
    sasl: bool = False                 # -S: binary protocol with SASL PLAIN
    sasl_pwdb: Optional[str] = None    # MEMCACHED_SASL_PWDB or -o sasl_pwdb=
    log_file: Optional[str] = None
    cluster_file: Optional[str] = None
    cluster_nodes: bytes = b""          # the file's node list, checked (discovery.py)
    extended: Dict[str, str] = field(default_factory=dict)
    # TLS (-Z and -o ssl_*; tls.pxi). ssl_verify_mode and ssl_min_version keep
    # memcached's option values (0-3); the core maps them onto OpenSSL's.
    ssl_enabled: bool = False
    ssl_chain_cert: Optional[str] = None
    ssl_key: Optional[str] = None
    ssl_verify_mode: int = 0
    ssl_keyformat: int = 1
    ssl_ciphers: Optional[str] = None
    ssl_ca_cert: Optional[str] = None
    ssl_wbuf_size: int = 16 * 1024
    ssl_session_cache: bool = False
    ssl_kernel_tls: bool = False
    ssl_min_version: int = 2

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
        ext = self.extended
        if int(sub_default(ext, "hot_lru_pct")) + int(sub_default(ext, "warm_lru_pct")) > 80:
            raise SettingsError("hot_lru_pct + warm_lru_pct cannot be more than 80% combined")
        if "temporary_ttl" in ext and "no_lru_maintainer" in ext:
            raise SettingsError("temporary_ttl requires lru_maintainer to be enabled")
        if self.nshards < 1 or self.nshards > 256 or self.nshards & (self.nshards - 1):
            raise SettingsError("shards must be a power of two between 1 and 256", 1)
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
            line("auth_enabled_sasl", yn(self.sasl)),
            line("auth_enabled_ascii", self.auth_file or "no"),
            line("item_size_max", self.item_size_max),
            line("maxconns_fast", yn(self.maxconns_fast)),
            line("hashpower_init", self.hashpower_init),
            line("slab_reassign", "no" if "no_slab_reassign" in ext else "yes"),
        ])
        b2 = "".join([
            line("slab_automove_window", sub_default(ext, "slab_automove_window")),
            line("slab_chunk_max", self.slab_chunk_size_max),
        ])
        b3 = "".join([
            line("tail_repair_time", sub_default(ext, "tail_repair_time")),
            line("flush_enabled", yn(self.flush_enabled)),
            line("dump_enabled", yn(self.dump_enabled)),
            line("hash_algorithm", sub_default(ext, "hash_algorithm")),
            line("lru_maintainer_thread", "no" if "no_lru_maintainer" in ext else "yes"),
        ])
        b4 = "".join([
            line("idle_timeout", self.idle_timeout),
            line("watcher_logbuf_size", sub_default(ext, "watcher_logbuf_size")),
            line("worker_logbuf_size", sub_default(ext, "worker_logbuf_size")),
            line("read_buf_mem_limit", sub_default(ext, "read_buf_mem_limit")),
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
            line("ssl_enabled", yn(self.ssl_enabled)),
            line("ssl_chain_cert", self.ssl_chain_cert if self.ssl_chain_cert is not None else "(null)"),
            line("ssl_key", self.ssl_key if self.ssl_key is not None else "(null)"),
            line("ssl_verify_mode", {0: 0, 1: 1, 2: 3, 3: 7}[self.ssl_verify_mode]),
            line("ssl_keyformat", self.ssl_keyformat),
            line("ssl_ciphers", self.ssl_ciphers if self.ssl_ciphers is not None else "NULL"),
            line("ssl_ca_cert", self.ssl_ca_cert if self.ssl_ca_cert is not None else "NULL"),
            line("ssl_wbuf_size", self.ssl_wbuf_size),
            line("ssl_session_cache", yn(self.ssl_session_cache)),
            line("ssl_kernel_tls", yn(self.ssl_kernel_tls)),
            line("ssl_min_version", ("tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3")[self.ssl_min_version]),
            line("num_napi_ids", "(null)"),
            line("memory_file", self.memory_file or "(null)"),
            # memcachepy's own, shown only when set: the default listing stays memcached's
            line("busy_poll_us", sub_default(ext, "busy_poll_us"))
            if sub_default(ext, "busy_poll_us") != "0" else "",
        ])
        return a, [b, b2, b3, b4]

    def tls_config(self) -> dict:
        """What tls.pxi's tls_init() builds the SSL context from."""
        return {
            "ssl_chain_cert": self.ssl_chain_cert,
            "ssl_key": self.ssl_key,
            "ssl_ca_cert": self.ssl_ca_cert,
            "ssl_ciphers": self.ssl_ciphers,
            "ssl_verify_mode": self.ssl_verify_mode,
            "ssl_keyformat": self.ssl_keyformat,
            "ssl_min_version": self.ssl_min_version,
            "ssl_session_cache": self.ssl_session_cache,
            "ssl_kernel_tls": self.ssl_kernel_tls,
        }

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
            "binding_protocol": self.binding_protocol,
            "sasl": self.sasl,
            "sasl_entries": read_sasl_pwdb(self.sasl_pwdb) if self.sasl and self.sasl_pwdb else [],
            "prefix_delimiter": self.prefix_delimiter,
            "version": self.memcached_version,
            "own_version": __version__,
            "domain_socket": self.domain_socket,
            "settings_text_a": a,
            "settings_text_b": b,
            "slab_automove": int(sub_default(ext, "slab_automove")),
            "slab_automove_ratio": float(sub_default(ext, "slab_automove_ratio")),
            "slab_automove_window": int(sub_default(ext, "slab_automove_window")),
            "read_buf_mem_limit": int(sub_default(ext, "read_buf_mem_limit")),
            "slab_reassign": "no_slab_reassign" not in ext,
            "lru_crawler": "no_lru_crawler" not in ext,
            "lru_crawler_sleep": self.lru_crawler_sleep,
            "lru_crawler_tocrawl": int(sub_default(ext, "lru_crawler_tocrawl")),
            "lru_maintainer": "no_lru_maintainer" not in ext,
            "lru_segmented": "no_lru_segmented" not in ext and "no_lru_maintainer" not in ext,
            "track_sizes": "track_sizes" in ext,
            "hot_lru_pct": int(sub_default(ext, "hot_lru_pct")),
            "warm_lru_pct": int(sub_default(ext, "warm_lru_pct")),
            "hot_max_factor": float(sub_default(ext, "hot_max_factor")),
            "warm_max_factor": float(sub_default(ext, "warm_max_factor")),
            "temp_lru": "temp_lru" in ext or "temporary_ttl" in ext,
            "temporary_ttl": int(sub_default(ext, "temporary_ttl")),
            "hotkeys_sample": int(sub_default(ext, "hotkeys_sample")),
            "busy_poll_us": int(sub_default(ext, "busy_poll_us")),
        }
