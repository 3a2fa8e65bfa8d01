# Reply normaliser for differential tests.
#
# Two correct daemons still differ in a few places: CAS uniques (any unique numbering is
# legal; only equality/inequality is observable), pids, clocks, CPU usage, version strings,
# the listener address, and internal sizes that depend on item header layout.  normalise()
# rewrites exactly those and nothing else, so a byte-for-byte comparison of the results is a
# real compatibility check.  Data blocks after VALUE headers are copied verbatim (their bytes
# are never interpreted as reply lines).
#
# Meta replies (VA HD EN NS EX NF ME MN lines): their `c<cas>` / `cas=<cas>` tokens are renamed
# by the same CasMapper; meta requests may name an earlier CAS as `{c0}`, `{c1}`...
# (CasMapper.request).  same_reply() compares second-granular clocks with a slack.
#
# STAT values: names (and their order) are always compared; values only for the fields
# listed in *_COMPARED, i.e. the counters and settings a client can rely on.
from __future__ import annotations

import re

# `stats` (general) and `stats settings` fields whose values must be equal.
GENERAL_COMPARED = frozenset("""
max_connections curr_connections total_connections rejected_connections
cmd_get cmd_set cmd_flush cmd_touch cmd_meta get_hits get_misses
delete_misses delete_hits incr_misses incr_hits decr_misses decr_hits cas_misses cas_hits
cas_badval touch_hits touch_misses store_too_large store_no_memory auth_cmds auth_errors
bytes_read limit_maxbytes accepting_conns listen_disabled_num threads conn_yields
curr_items total_items evicted_active evictions pointer_size active_slabs bytes
""".split())
# Not compared: direct_reclaims (one or two pulls per eviction depending on whether
# memcached's maintainer thread had moved the items to COLD yet), get_expired, get_flushed, reclaimed,
# expired_unfetched, evicted_unfetched.  memcached's LRU crawler/maintainer threads may reap a
# dead item before the request that would have counted it arrives (observed flaking between
# two memcached instances), so their values are timing-dependent.

SETTINGS_COMPARED = frozenset("""
maxbytes maxconns udpport verbosity evictions domain_socket umask shutdown_command
growth_factor chunk_size num_threads num_threads_per_udp stat_key_prefix detail_enabled
reqs_per_event cas_enabled tcp_backlog binding_protocol auth_enabled_sasl auth_enabled_ascii
item_size_max maxconns_fast hashpower_init slab_reassign slab_automove slab_automove_ratio
slab_automove_window slab_chunk_max lru_crawler lru_crawler_sleep lru_crawler_tocrawl
tail_repair_time flush_enabled dump_enabled hash_algorithm lru_maintainer_thread
lru_segmented hot_lru_pct warm_lru_pct hot_max_factor warm_max_factor temp_lru
temporary_ttl idle_timeout watcher_logbuf_size worker_logbuf_size read_buf_mem_limit
track_sizes inline_ascii_response
ssl_enabled ssl_chain_cert ssl_key ssl_verify_mode ssl_keyformat ssl_ciphers ssl_ca_cert
ssl_wbuf_size ssl_session_cache ssl_kernel_tls ssl_min_version
""".split())

# `stats items` (items:<cls>:<field>) and `stats slabs` (<cls>:<field>) values compared.
# Sizes (bytes, mem_requested, stats sizes, me size=) are memcached's item sizes in both.
ITEMS_COMPARED = frozenset("number evicted evicted_nonzero outofmemory".split())
SLABS_COMPARED = frozenset("chunk_size chunks_per_page used_chunks mem_requested get_hits cmd_set "
                           "delete_hits incr_hits decr_hits cas_hits cas_badval touch_hits "
                           "active_slabs".split())

# keys may hold any byte but space/CR/LF (tabs and control bytes included), hence [^ ]
_VALUE = re.compile(rb"VALUE ([^ ]+) ([^ ]+) (\d+)(?: ([^ ]+))?")
_STAT = re.compile(rb"STAT ([^ ]+) (.*)")
_ITEM = re.compile(rb"ITEM ([^ ]+) \[(\d+) b; (\d+) s\]")


def _stat_compared(name: str) -> bool:
    if name.isdigit():  # `stats sizes` bucket: item count per 32-byte size bucket
        return True
    parts = name.split(":")
    if len(parts) == 3 and parts[0] == "items":
        return parts[2] in ITEMS_COMPARED
    if len(parts) == 2 and parts[0].isdigit():
        return parts[1] in SLABS_COMPARED
    return name in GENERAL_COMPARED or name in SETTINGS_COMPARED


class CasMapper:
    """Maps CAS uniques to <c0>, <c1>... in order of first appearance.  0 stays 0 because it
    is meaningful (-C disables CAS and every item then reads 0)."""

    def __init__(self) -> None:
        self.ids: dict[bytes, bytes] = {}
        self.cas: list[bytes] = []  # the real values, by ordinal

    def __call__(self, cas: bytes) -> bytes:
        if cas == b"0":
            return cas
        if cas not in self.ids:
            self.ids[cas] = b"<c%d>" % len(self.cas)
            self.cas.append(cas)
        return self.ids[cas]

    def request(self, data: bytes) -> bytes:
        """`{cN}` in a request -> the real CAS this daemon gave the N-th time."""
        return _CAS_REF.sub(lambda m: self.cas[int(m.group(1))], data)


_CAS_REF = re.compile(rb"\{c(\d+)\}")
_META_STATUS = frozenset((b"VA", b"HD", b"EN", b"NS", b"EX", b"NF", b"ME", b"MN"))
_META_CAS = re.compile(rb"(c|cas=)(\d+)")


def _meta_line(body: bytes, cas: CasMapper) -> bytes:
    toks = body.split(b" ")
    for i, t in enumerate(toks[1:], 1):
        m = _META_CAS.fullmatch(t)
        if m:
            toks[i] = m.group(1) + cas(m.group(2))
        elif toks[0] == b"ME" and t in (b"la=0", b"la=1"):
            # seconds since the last access of an item touched moments ago: a clock tick
            # between the store and the `me` makes it 1 (memcached disagreed with itself)
            toks[i] = b"la=<0|1>"
    return b" ".join(toks)


def normalise(reply: bytes, cas: CasMapper | None = None) -> bytes:
    cas = cas or CasMapper()
    out: list[bytes] = []
    pos = 0
    n = len(reply)
    while pos < n:
        end = reply.find(b"\n", pos)
        if end < 0:
            out.append(reply[pos:])
            break
        line = reply[pos:end + 1]
        body = line.rstrip(b"\r\n")
        pos = end + 1
        m = _VALUE.fullmatch(body)
        if m:
            key, flags, nbytes, c = m.groups()
            hdr = b"VALUE " + key + b" " + flags + b" " + nbytes
            if c is not None:
                hdr += b" " + (cas(c) if c.isdigit() else c)
            out.append(hdr + line[len(body):])
            blk = int(nbytes) + 2
            out.append(reply[pos:pos + blk])
            pos += blk
            continue
        head = body.split(b" ", 1)[0]
        if head in _META_STATUS:
            out.append(_meta_line(body, cas) + line[len(body):])
            size = body.split(b" ")[1:2]
            if head == b"VA" and size and size[0].isdigit():  # the value block, verbatim
                blk = int(size[0]) + 2
                out.append(reply[pos:pos + blk])
                pos += blk
            continue
        if body.startswith(b"VERSION "):
            out.append(b"VERSION <version>" + line[len(body):])
            continue
        m = _STAT.fullmatch(body)
        if m:
            name = m.group(1).decode("latin-1")
            if not _stat_compared(name):
                out.append(b"STAT " + m.group(1) + b" <*>" + line[len(body):])
                continue
        m = _ITEM.fullmatch(body)
        if m and m.group(3) != b"0":
            out.append(b"ITEM %s [%s b; <t> s]" % (m.group(1), m.group(2)) + line[len(body):])
            continue
        out.append(line)
    return b"".join(out)


_CLOCK = re.compile(rb"(t|l|exp=|la=)(-?\d+)")


def same_reply(expected: bytes, actual: bytes, slack: int = 2) -> bool:
    """Byte equality except second-granular clock tokens (meta t/l, me exp=/la=), which
    may differ by `slack` (never in sign for t: -1 means "no expiry")."""
    if expected == actual:
        return True
    e_t = re.split(rb"( |\r\n)", expected)
    a_t = re.split(rb"( |\r\n)", actual)
    if len(e_t) != len(a_t):
        return False
    for e, a in zip(e_t, a_t):
        if e == a:
            continue
        me, ma = _CLOCK.fullmatch(e), _CLOCK.fullmatch(a)
        if not (me and ma and me.group(1) == ma.group(1)):
            return False
        ev, av = int(me.group(2)), int(ma.group(2))
        if (ev < 0) != (av < 0) and e.startswith(b"t"):
            return False
        if abs(ev - av) > slack:
            return False
    return True


def diff(want: bytes, got: bytes, want_name: str = "memcached",
         got_name: str = "memcachepy", context: int = 2) -> str:
    """Unified diff of two normalised reply streams, one reply line per diff line."""
    import difflib
    return "\n".join(difflib.unified_diff(lines(want), lines(got), want_name, got_name,
                                          n=context, lineterm=""))


def lines(reply: bytes) -> list[str]:
    """Readable form for assertion diffs (pytest shows list diffs element by element)."""
    return [repr(x)[2:-1] for x in reply.split(b"\n")]
