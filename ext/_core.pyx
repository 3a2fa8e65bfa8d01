# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
#
# _core.pyx -- the compiled core of memcachepy, one extension module.
#
# The subsystems live in .pxi fragments included below, split as memcached's
# C source is: settings/clock, hash, slabs, items, lru, assoc (hash tables),
# store (shards and item operations), proto (tokenizer and reply writers),
# proto_text, proto_meta, proto_admin, proto_bin, cluster (auto discovery), stats, conn,
# udp, thread. Types are declared in memcachepy_core.pxd. Everything in them is C-level and
# `nogil`.
#
# This file adds the only Python-facing part: `Server`, which Python's
# memcachepy.server uses to configure the core, hand it listening sockets and
# run the worker and acceptor loops (each call releases the GIL until
# shutdown), and `Store`, a test API that drives the same C store functions
# directly, without sockets, with a controllable clock.

from libc.stdlib cimport malloc, free, calloc, realloc, qsort
from libc.string cimport memcpy, memset, memcmp, memchr, strlen, strncpy, strerror
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t, uintptr_t
from memcachepy_core cimport *

include "settings.pxi"
include "lock_stats.pxi"
include "hash.pxi"
include "slabs.pxi"
include "restart.pxi"
include "items.pxi"
include "lru.pxi"
include "assoc.pxi"
include "store.pxi"
include "slabs_rebalance.pxi"
include "slab_automove.pxi"
include "proto.pxi"
include "logger.pxi"
include "stats.pxi"
include "crawler.pxi"
include "hotkeys.pxi"
include "proto_text.pxi"
include "proto_meta.pxi"
include "proto_admin.pxi"
include "cluster.pxi"
include "auth.pxi"
include "tls.pxi"
include "linux_priv.pxi"
include "proto_bin.pxi"
include "conn.pxi"
include "udp.pxi"
include "thread.pxi"
include "testing.pxi"

import time as _time
import os as _os

# memcached's item header is 48 bytes on 64-bit; slab class sizes are computed
# from it so that `-n`/`-f` give exactly memcached's classes.
MEMCACHED_ITEM_HEADER = 48

cdef bint g_initialised = False

cdef void _copy_str(char* dst, size_t cap, object s):
    cdef bytes b = (s or "").encode()[:cap - 1]
    memcpy(dst, <char*>b, len(b))
    dst[len(b)] = 0

cdef char* _strdup_py(object s):
    cdef bytes b = s.encode()
    cdef char* p = <char*>malloc(len(b) + 1)
    memcpy(p, <char*>b, len(b))
    p[len(b)] = 0
    return p

def _core_init(dict cfg, int nworkers):
    """Configure the globals of the core from Settings.to_core() (every key
    present: the defaults live in memcachepy/settings.py and options.py, not
    here). Only one core per process."""
    global g_initialised, g_process_started, g_current_time, g_shutdown
    global g_settings_text_a, g_settings_text_b, g_time_offset, g_ssl_last_cert_refresh
    global g_curr_conns, g_total_conns, g_rejected_conns
    if g_initialised:
        raise RuntimeError("memcachepy core already initialised in this process")
    memset(&g_settings, 0, sizeof(settings_t))
    g_settings.maxbytes = cfg["maxbytes"]
    g_settings.maxconns = cfg["maxconns"]
    g_settings.port = cfg["port"]
    g_settings.udpport = cfg["udpport"]
    g_settings.verbose = cfg["verbose"]
    g_settings.evict_to_free = cfg["evict_to_free"]
    g_settings.chunk_size = cfg["chunk_size"]
    g_settings.num_threads = cfg["num_threads"]
    g_settings.reqs_per_event = cfg["reqs_per_event"]
    g_settings.read_buf_mem_limit = cfg.get("read_buf_mem_limit", 0)
    g_settings.use_cas = cfg["use_cas"]
    g_settings.backlog = cfg["backlog"]
    g_settings.item_size_max = cfg["item_size_max"]
    g_settings.slab_chunk_size_max = cfg["slab_chunk_size_max"]
    g_settings.flush_enabled = cfg["flush_enabled"]
    g_settings.dump_enabled = cfg["dump_enabled"]
    g_settings.shutdown_command = cfg["shutdown_command"]
    g_settings.watch_enabled = cfg["watch_enabled"]
    g_settings.idle_timeout = cfg["idle_timeout"]
    g_settings.busy_poll_us = cfg.get("busy_poll_us", 0)
    g_settings.slab_reassign = cfg["slab_reassign"]
    g_settings.maxconns_fast = cfg["maxconns_fast"]
    global g_detail_enabled, g_prefix_delimiter
    pthread_mutex_init(&g_prefix_lock, NULL)
    g_detail_enabled = 1 if cfg.get("detail_enabled") else 0
    g_prefix_delimiter = ord((cfg.get("prefix_delimiter") or ":")[0])
    _copy_str(g_settings.version, sizeof(g_settings.version), cfg["version"])
    _copy_str(g_settings.own_version, sizeof(g_settings.own_version), cfg.get("own_version", ""))
    _copy_str(g_settings.domain_socket, sizeof(g_settings.domain_socket), cfg.get("domain_socket") or "NULL")
    g_settings_text_a = _strdup_py(cfg.get("settings_text_a", ""))
    segs = cfg.get("settings_text_b") or ["", "", "", ""]
    for i in range(4):
        g_settings_text_b[i] = _strdup_py(segs[i])
    g_settings.slab_automove = cfg["slab_automove"]
    g_settings.slab_automove_ratio = cfg["slab_automove_ratio"]
    g_settings.slab_automove_window = cfg["slab_automove_window"]
    g_settings.lru_crawler = cfg["lru_crawler"]
    g_settings.lru_crawler_sleep = cfg["lru_crawler_sleep"]
    g_settings.lru_crawler_tocrawl = cfg["lru_crawler_tocrawl"]
    g_settings.lru_maintainer = cfg["lru_maintainer"]
    g_settings.lru_segmented = cfg["lru_segmented"]
    g_settings.hot_lru_pct = cfg["hot_lru_pct"]
    g_settings.warm_lru_pct = cfg["warm_lru_pct"]
    g_settings.hot_max_factor = cfg["hot_max_factor"]
    g_settings.warm_max_factor = cfg["warm_max_factor"]
    g_settings.temp_lru = cfg["temp_lru"]
    g_settings.temporary_ttl = cfg["temporary_ttl"]
    _reset_counters()
    pthread_mutex_init(&g_clock_lock, NULL)
    g_process_started = <time_t>int(_time.time()) - ITEM_UPDATE_INTERVAL - 2
    g_time_offset = 0
    g_shutdown = 0
    cas_reset(1, 64 if nworkers > 1 else 1)
    clock_tick()
    if g_ssl_enabled:
        g_ssl_last_cert_refresh = current_time()     # loaded just before, by tls_init()
    nshards = cfg["nshards"]
    if nshards < 1 or nshards > MAX_SHARDS or (nshards & (nshards - 1)):
        raise ValueError("nshards must be a power of two between 1 and %d" % MAX_SHARDS)
    hashpower = cfg.get("shard_hashpower", 0)
    if not hashpower:
        # memcached starts at 2^16 buckets; spread that over the shards
        hashpower = max(4, 16 - (nshards.bit_length() - 1))
    global g_hotkeys_sample, g_hotkeys_since
    g_hotkeys_sample = cfg.get("hotkeys_sample", 0)
    g_hotkeys_since = current_time()
    slabs_init(cfg["maxbytes"], cfg["factor"], MEMCACHED_ITEM_HEADER)
    if cfg.get("memory_region") is not None:
        # -e: slab pages come from the memory file's mapping (restart.pxi)
        restart_region_attach(cfg["memory_region"], cfg["region_slot_size"],
                              cfg["region_nslots"])
    crawler_init()
    if store_init(nshards, hashpower) != 0:
        raise MemoryError("cannot allocate the hash tables")
    if nworkers > 0 and workers_init(nworkers) != 0:
        raise OSError("cannot create worker event loops")
    logger_init()
    global g_sizes_hist, g_sizes_buckets
    if cfg.get("track_sizes"):
        g_sizes_buckets = cfg["item_size_max"] // 32 + 2
        g_sizes_hist = <uint64_t*>calloc(g_sizes_buckets, sizeof(uint64_t))
    auth_load(cfg.get("auth_entries") or [])
    sasl_load(cfg.get("sasl", False), cfg.get("sasl_entries") or [])
    g_settings.binding_protocol = {"ascii": PROT_ASCII, "binary": PROT_BINARY}.get(
        cfg.get("binding_protocol"), PROT_NEGOTIATE)
    memset(&g_stats_baseline, 0, sizeof(thread_stats_t))
    memset(&g_orphan_stats, 0, sizeof(thread_stats_t))
    cluster_reset()
    g_curr_conns = 0
    g_total_conns = 0
    g_rejected_conns = 0
    g_initialised = True

def _core_destroy():
    global g_initialised, g_settings_text_a, g_settings_text_b
    if not g_initialised:
        return
    global g_sizes_hist, g_sizes_buckets
    free(g_sizes_hist)
    g_sizes_hist = NULL
    g_sizes_buckets = 0
    with nogil:
        logger_close_all()
        workers_destroy()
        store_destroy()
        slabs_destroy()
        slab_automove_free()
        stats_prefix_clear()
        cluster_reset()
    restart_region_detach()
    free(g_settings_text_a)
    g_settings_text_a = NULL
    for i in range(4):
        free(g_settings_text_b[i])
        g_settings_text_b[i] = NULL
    free(g_listen_fds)
    free(g_listen_kinds)
    _reset_listeners()
    udp_reset()
    g_initialised = False

# Zero every process-wide counter and schedule the subsystems keep outside
# what their *_init functions reset, so that a core initialised again in the
# same process (the test Store, an embedded server reusing its copy of this
# module: memcachepy.embed) starts from the state of a fresh process.
# A new global counter belongs here too.
cdef void _reset_counters():
    global g_malloc_fails, g_lru_maintainer_juggles, g_moving_page, g_moving_src
    global g_moving_reclaimed, g_rebal_src, g_rebal_dst, g_rebal_signal, g_slabs_moved
    global g_rebal_rescues, g_rebal_evictions, g_rebal_busy, g_automove_next_src, g_automove2_dst, g_rebal_chunk_rescues
    global g_log_gid, g_log_watcher_sent, g_log_watcher_skipped, g_log_worker_written
    global g_listen_disabled, g_next_worker, g_lru_crawler_starts, g_total_items_baseline
    global g_conn_structures, g_acceptor_epfd, g_acceptor_wake, g_assoc_expanding
    g_malloc_fails = 0
    g_lru_maintainer_juggles = 0
    memset(g_cold_age, 0, sizeof(g_cold_age))
    memset(g_maint_next, 0, sizeof(g_maint_next))
    memset(g_maint_backoff, 0, sizeof(g_maint_backoff))
    memset(g_maint_cursor, 0, sizeof(g_maint_cursor))
    g_assoc_expanding = 0
    g_moving_page = NULL
    g_moving_src = 0
    g_moving_reclaimed = 0
    g_rebal_src = 0
    g_rebal_dst = 0
    g_rebal_signal = 0
    g_slabs_moved = 0
    g_rebal_rescues = 0
    g_rebal_evictions = 0
    g_rebal_busy = 0
    g_rebal_chunk_rescues = 0
    g_automove_next_src = 1
    g_automove2_dst = 0
    g_log_gid = 0
    g_log_watcher_sent = 0
    g_log_watcher_skipped = 0
    g_log_worker_written = 0
    g_listen_disabled = 0
    g_next_worker = 0
    g_lru_crawler_starts = 0
    g_total_items_baseline = 0
    g_conn_structures = 0
    g_acceptor_epfd = -1
    g_acceptor_wake = -1

cdef void _reset_listeners():
    global g_listen_fds, g_listen_kinds, g_nlisteners
    g_listen_fds = NULL
    g_listen_kinds = NULL
    g_nlisteners = 0

def slab_classes():
    """[(class id, chunk size, chunks per page)] as memcached -vv prints them."""
    out = []
    for i in range(1, MAX_SLAB_CLASSES):
        if g_slabclass[i].size == 0:
            break
        out.append((i, g_slabclass[i].size, g_slabclass[i].perslab))
    return out


# Auto discovery (cluster.pxi): server.py installs the cluster file's node list.

def cluster_set(bytes nodes):
    """Install a node list (entries separated by blanks or line ends, each
    hostname|ip|port). Returns the version in force afterwards; raises
    ValueError (the core's reason) when the list is malformed."""
    cdef const char* p = nodes
    cdef size_t n = len(nodes)
    cdef size_t nlen = 0
    cdef const char* why = NULL
    cdef char* parsed
    cdef uint64_t v
    with nogil:
        parsed = cluster_parse(p, n, &nlen, &why)
        if parsed != NULL:
            v = cluster_install(parsed, nlen)
    if parsed == NULL:
        raise ValueError(why.decode())
    return v

def cluster_check(bytes nodes):
    """(normalised list, None) if the core accepts the node list, else (None, reason)."""
    cdef size_t nlen = 0
    cdef const char* why = NULL
    cdef char* parsed = cluster_parse(nodes, len(nodes), &nlen, &why)
    if parsed == NULL:
        return None, why.decode()
    try:
        return parsed[:nlen], None
    finally:
        free(parsed)

def cluster_get():
    """(version, node list bytes), or None when no cluster is configured."""
    pthread_mutex_lock(&g_cluster_lock)
    try:
        if not g_cluster_enabled:
            return None
        return (g_cluster_version, g_cluster_nodes[:g_cluster_nodes_len])
    finally:
        pthread_mutex_unlock(&g_cluster_lock)


cdef class Server:
    """The daemon's compiled part. Python binds the listening sockets and passes
    their fds in; run_acceptor() and run_worker(i) block (without the GIL) until
    stop() is called from another thread."""

    cdef int nworkers
    cdef list fds

    def __init__(self, dict cfg):
        _core_init(cfg, cfg["num_threads"])
        self.nworkers = cfg["num_threads"]
        self.fds = []

    def add_listener(self, int fd, int kind):
        global g_total_conns, g_conn_structures
        global g_listen_fds, g_listen_kinds, g_nlisteners
        g_listen_fds = <int*>realloc(g_listen_fds, (g_nlisteners + 1) * sizeof(int))
        g_listen_kinds = <int*>realloc(g_listen_kinds, (g_nlisteners + 1) * sizeof(int))
        g_listen_fds[g_nlisteners] = fd
        g_listen_kinds[g_nlisteners] = kind
        g_nlisteners += 1
        g_total_conns += 1
        g_conn_structures += 1
        self.fds.append(fd)

    def run_acceptor(self):
        cdef int n = g_nlisteners
        with nogil:
            acceptor_loop(n)

    def run_worker(self, int i):
        if i < 0 or i >= self.nworkers:
            raise IndexError(i)
        with nogil:
            worker_loop(&g_workers[i])

    def stop(self):
        with nogil:
            stop_all()

    def close(self):
        _core_destroy()

    def advance_clock(self, int seconds):
        """Move the server's clock forward (TTL tests without sleeping)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with nogil:
            clock_advance(seconds)

    def now(self):
        """The server's clock: seconds since it started (memcached's rel_time)."""
        return current_time()

    def flush_all(self):
        """`flush_all` (even with -F): every item stored so far is dead."""
        core_flush_all()

    @property
    def verbosity(self):
        return mc_load_int(&g_settings.verbose)

    @property
    def curr_connections(self):
        return mc_load_u64(&g_curr_conns)


# `flush_all` with no delay, as process_flush_all does it (test API, embedded
# servers' flush helper).
cdef void core_flush_all() noexcept nogil:
    cdef rel_time_t now = current_time()
    if g_settings.use_cas:
        mc_store_u32(&g_settings.oldest_live, now - 1)
        mc_store_u64(&g_settings.oldest_cas, get_cas_id())
    else:
        mc_store_u32(&g_settings.oldest_live, now)

cdef int g_store_generation = 0

cdef class Store:
    """Test API: the same C store functions, no sockets. Values are bytes.
    Counters land in a private stats block; the clock is set by hand.
    Opening a Store replaces one still open in this process (test modules
    need not know about each other); closing a replaced Store does nothing."""

    cdef int generation

    def __init__(self, dict cfg):
        global g_store_generation
        if g_initialised and g_store_generation:
            _core_destroy()
        _core_init(cfg, 0)
        g_store_generation += 1
        self.generation = g_store_generation

    def close(self):
        if self.generation == g_store_generation and g_initialised:
            _core_destroy()

    def advance_clock(self, int seconds):
        clock_advance(seconds)

    def now(self):
        return current_time()

    def set(self, bytes key, bytes value, unsigned int flags=0, int exptime=0, int mode=NREAD_SET,
            unsigned long long cas=0):
        """Store like the text protocol; returns 'STORED', 'NOT_STORED',
        'EXISTS', 'NOT_FOUND', 'TOO_LARGE' or 'NO_MEMORY'."""
        cdef const char* k = key
        cdef size_t nk = len(key)
        cdef size_t nv = len(value) + 2
        cdef const char* v = value
        cdef uint64_t h = hash_key(k, nk)
        cdef shard_t* s = shard_of(h)
        cdef item_t* it
        cdef store_result_t r
        cdef uint64_t cas_out = 0
        cdef bint consumed
        cdef rel_time_t exp = exptime_to_rel(exptime)
        if nk == 0 or nk > KEY_MAX_LENGTH:
            raise ValueError("bad key length")
        if not item_size_ok(nk, nv, flags):
            return "TOO_LARGE"
        with nogil:
            pthread_mutex_lock(&s.lock)
            it = item_alloc(s, k, nk, flags, exp, nv)
            if it != NULL:
                item_data_write(it, 0, v, nv - 2)
                item_data_write(it, nv - 2, b"\r\n", 2)
                it.hv = bucket_hv(h)
                it.cas = cas
                r = do_store_item(s, it, mode, &g_orphan_stats, False, 0, &cas_out, &consumed)
                if not consumed:
                    item_free(it)
            pthread_mutex_unlock(&s.lock)
        if it == NULL:
            return "NO_MEMORY"
        return {STORE_STORED: "STORED", STORE_NOT_STORED: "NOT_STORED",
                STORE_EXISTS: "EXISTS", STORE_NOT_FOUND: "NOT_FOUND"}[r]

    def get(self, bytes key, bint bump=True):
        """(value, flags, cas) or None."""
        cdef const char* k = key
        cdef size_t nk = len(key)
        cdef uint64_t h = hash_key(k, nk)
        cdef shard_t* s = shard_of(h)
        cdef item_t* it
        cdef char* tmp = NULL
        result = None
        pthread_mutex_lock(&s.lock)
        it = do_item_get(s, k, nk, bucket_hv(h), &g_orphan_stats, bump)
        if it != NULL:
            tmp = <char*>malloc(it.nbytes)
            if tmp != NULL:
                item_data_read(it, 0, tmp, it.nbytes - 2)
                result = (tmp[:it.nbytes - 2], it.flags, it.cas)
                free(tmp)
        pthread_mutex_unlock(&s.lock)
        if it != NULL and result is None:
            raise MemoryError()
        return result

    def delete(self, bytes key):
        cdef const char* k = key
        cdef size_t nk = len(key)
        cdef uint64_t h = hash_key(k, nk)
        cdef shard_t* s = shard_of(h)
        cdef item_t* it
        pthread_mutex_lock(&s.lock)
        it = do_item_get(s, k, nk, bucket_hv(h), &g_orphan_stats, False)
        if it != NULL:
            do_item_unlink(s, it)
        pthread_mutex_unlock(&s.lock)
        return it != NULL

    def incr(self, bytes key, unsigned long long delta, bint incr=True):
        cdef const char* k = key
        cdef size_t nk = len(key)
        cdef uint64_t h = hash_key(k, nk)
        cdef shard_t* s = shard_of(h)
        cdef char buf[32]
        cdef delta_result_t r
        pthread_mutex_lock(&s.lock)
        r = do_add_delta(s, k, nk, bucket_hv(h), incr, delta, buf, NULL, &g_orphan_stats, NULL, 0)
        pthread_mutex_unlock(&s.lock)
        if r == DELTA_OK:
            return int(buf.decode())
        return {DELTA_NON_NUMERIC: "NON_NUMERIC", DELTA_EOM: "EOM", DELTA_NOT_FOUND: "NOT_FOUND"}[r]

    def flush_all(self):
        core_flush_all()

    def slab_classes(self):
        return slab_classes()

    def mem_malloced(self):
        return g_mem_malloced

    def mem_limit(self):
        return g_mem_limit

    def counters(self):
        """Item and LRU counters summed over shards and classes."""
        cdef lru_stats_t lru[MAX_SLAB_CLASSES]
        cdef uint64_t hb, curr, total, nbytes
        lru_stats_aggregate(lru, &hb)
        store_totals(&curr, &total, &nbytes)
        out = {"curr_items": curr, "total_items": total, "bytes": nbytes,
               "hash_buckets": hb, "evictions": 0, "reclaimed": 0, "outofmemory": 0,
               "get_expired": g_orphan_stats.get_expired, "get_flushed": g_orphan_stats.get_flushed}
        for i in range(MAX_SLAB_CLASSES):
            out["evictions"] += lru[i].evicted
            out["reclaimed"] += lru[i].reclaimed
            out["outofmemory"] += lru[i].outofmemory
        return out

    def keys_lru_order(self, int clsid, segment=None):
        """Keys of one class from LRU head (newest) to tail, over all shards: of one
        segment ("hot", "warm", "cold"), or of all three, HOT then WARM then COLD."""
        out = []
        cdef item_t* it
        segs = {"hot": (SEG_HOT,), "warm": (SEG_WARM,), "cold": (SEG_COLD,), "temp": (SEG_TEMP,),
                None: (SEG_HOT, SEG_WARM, SEG_COLD, SEG_TEMP)}[segment]
        for i in range(g_nshards):
            for seg in segs:
                it = g_shards[i].heads[lru_idx(clsid, seg)]
                while it != NULL:
                    out.append(ITEM_key(it)[:it.nkey])
                    it = it.next
        return out

    def clsid_for(self, size_t nkey, size_t nvalue, uint32_t flags=0):
        return item_clsid_of(nkey, flags, nvalue + 2)


# ---------------------------------------------------------------- TLS start-up (tls.pxi)

cdef char* _tls_strdup(object s):
    cdef bytes b
    cdef char* p
    if s is None:
        return NULL
    b = s.encode()
    p = <char*>malloc(len(b) + 1)
    if p == NULL:
        raise MemoryError()
    memcpy(p, <const char*>b, len(b) + 1)
    return p

_VERIFY_MODES = {0: 0, 1: 1, 2: 3, 3: 7}    # ssl_verify_mode -> SSL_VERIFY_* bits
_MIN_VERSIONS = {0: 0x301, 1: 0x302, 2: 0x303, 3: 0x304}

def tls_init(dict cfg):
    """Build the process's SSL context from the -o ssl_* settings (called once,
    before the switch to -u). Returns None, or memcached's error message."""
    global g_ssl_enabled, g_ssl_chain_cert, g_ssl_key, g_ssl_ca_cert, g_ssl_ciphers
    global g_ssl_verify_mode, g_ssl_keyformat, g_ssl_min_version, g_ssl_session_cache
    global g_ssl_kernel_tls, g_ssl_ctx, g_ssl_last_cert_refresh, g_ssl_handshake_errors
    cdef char errmsg[TLS_ERRMSG]
    cdef SSL_CTX* ctx
    cdef SSL_CTX* old
    # A pooled core (memcachepy.embed) may be configured again: no worker runs
    # then, so the old settings and context can go.
    if g_ssl_enabled:
        g_ssl_enabled = False
        old = g_ssl_ctx
        g_ssl_ctx = NULL
        if old != NULL:
            SSL_CTX_free(old)
    else:
        pthread_mutex_init(&g_ssl_lock, NULL)
    for p in (<size_t>g_ssl_chain_cert, <size_t>g_ssl_key, <size_t>g_ssl_ca_cert, <size_t>g_ssl_ciphers):
        free(<void*>p)
    g_ssl_chain_cert = _tls_strdup(cfg.get("ssl_chain_cert"))
    g_ssl_key = _tls_strdup(cfg.get("ssl_key"))
    g_ssl_ca_cert = _tls_strdup(cfg.get("ssl_ca_cert"))
    g_ssl_ciphers = _tls_strdup(cfg.get("ssl_ciphers"))
    g_ssl_verify_mode = _VERIFY_MODES[cfg.get("ssl_verify_mode", 0)]
    g_ssl_keyformat = cfg.get("ssl_keyformat", 1)
    g_ssl_min_version = _MIN_VERSIONS[cfg.get("ssl_min_version", 2)]
    g_ssl_session_cache = bool(cfg.get("ssl_session_cache"))
    g_ssl_kernel_tls = bool(cfg.get("ssl_kernel_tls"))
    g_ssl_handshake_errors = 0
    with nogil:
        ctx = tls_ctx_build(errmsg, sizeof(errmsg))
    if ctx == NULL:
        return errmsg.decode(errors="replace")
    g_ssl_ctx = ctx
    g_ssl_enabled = True
    g_ssl_last_cert_refresh = current_time()
    return None

def tls_reload():
    """SIGHUP: reload the certificates as `refresh_certs` does. Returns None,
    or the error message (the old certificate stays in use)."""
    cdef char errmsg[TLS_ERRMSG]
    cdef bint ok
    with nogil:
        ok = tls_refresh(errmsg, sizeof(errmsg))
    return None if ok else errmsg.decode(errors="replace").rstrip("\r\n")

def tls_enabled():
    return bool(g_ssl_enabled)


# ---------------------------------------------------------------- seccomp (linux_priv.pxi)

def seccomp_supported():
    return bool(mc_seccomp_supported())

def seccomp_install():
    """Install the drop_privileges filter on every thread. Returns None, or an
    OSError-style (errno, message) pair."""
    cdef int err
    with nogil:
        err = linux_priv_drop()
    if err:
        return (err, _os.strerror(err))
    return None

def seccomp_forbidden_call():
    """Test hook: make a system call the filter does not allow (the process
    dies with memcached's message if the filter is on)."""
    with nogil:
        mc_seccomp_forbidden_call()
