# stats.pxi -- counters and the `stats` family of commands.
#
# Per-request counters live in each worker's thread_stats_t and are written
# only by that worker (relaxed stores, see compat.h); `stats` sums them over
# the workers without stopping anyone. Item, memory and LRU counters live in
# the shards and slab classes, under their own locks. `stats reset` records a
# baseline of the thread counters instead of zeroing counters other threads
# are writing, so a reset never loses or races an increment.
#
# The output is memcached 1.6.18's, field for field and in the same order, so
# tools that parse memcached's stats (memcached_exporter, memcached-tool) read
# ours unchanged. `stats settings` lines that never change at run time are
# pre-formatted by Python at start-up (g_settings_text_*).

from libc.stdio cimport snprintf

cdef worker_t* g_workers = NULL
cdef int g_nworkers = 0
cdef thread_stats_t g_stats_baseline
cdef thread_stats_t g_orphan_stats        # counters of the test API, no worker
cdef uint64_t g_curr_conns = 0
cdef uint64_t g_total_conns = 0
cdef uint64_t g_rejected_conns = 0
cdef uint64_t g_conn_structures = 0
cdef int g_nlisteners = 0
cdef char* g_settings_text_a = NULL     # maxconns .. inter
cdef char* g_settings_text_b[4]         # evictions .. end, around the run-time tunables
cdef uint64_t g_lru_crawler_starts = 0

# ---------------------------------------------------------------- per-prefix stats
# `stats detail on` (or -D): counters per key prefix (the part before the
# delimiter). Off by default, as in memcached; when on, every recorded
# operation takes this one mutex, so it is a diagnostic, not a hot-path feature.
# Prefixes live in memcached's table shape (256 buckets by MurmurHash3, newest
# first in a bucket, a bucket entry matching when it starts with the prefix), so
# `stats detail dump` lists them in the order memcached does.

cdef enum:
    PREFIX_HASH_SIZE = 256

cdef struct prefix_stats_t:
    prefix_stats_t* next
    size_t length
    uint64_t gets
    uint64_t hits
    uint64_t sets
    uint64_t dels
    char prefix[256]

cdef prefix_stats_t* g_prefix_table[PREFIX_HASH_SIZE]
cdef pthread_mutex_t g_prefix_lock
cdef int g_detail_enabled = 0
cdef char g_prefix_delimiter = c':'

# kind: 0 get, 1 set, 2 delete
cdef void stats_prefix_record(const char* key, size_t nkey, int kind, bint hit) noexcept nogil:
    cdef size_t length = 0
    cdef uint32_t b
    cdef prefix_stats_t* p
    while length < nkey and key[length] != 0 and key[length] != g_prefix_delimiter:
        length += 1
    if length >= nkey or key[length] != g_prefix_delimiter:
        return
    b = murmur3_32(key, length) % PREFIX_HASH_SIZE
    pthread_mutex_lock(&g_prefix_lock)
    p = g_prefix_table[b]
    while p != NULL:
        # memcached compares with strncmp(prefix, key, length): a longer stored
        # prefix that starts with this one matches too
        if p.length >= length and memcmp(p.prefix, key, length) == 0:
            break
        p = p.next
    if p == NULL:
        p = <prefix_stats_t*>calloc(1, sizeof(prefix_stats_t))
        if p == NULL:
            pthread_mutex_unlock(&g_prefix_lock)
            return
        memcpy(p.prefix, key, length)
        p.length = length
        p.next = g_prefix_table[b]
        g_prefix_table[b] = p
    if kind == 0:
        p.gets += 1
        if hit:
            p.hits += 1
    elif kind == 1:
        p.sets += 1
    else:
        p.dels += 1
    pthread_mutex_unlock(&g_prefix_lock)

cdef void stats_prefix_clear() noexcept nogil:
    cdef prefix_stats_t* p
    cdef int b
    pthread_mutex_lock(&g_prefix_lock)
    for b in range(PREFIX_HASH_SIZE):
        while g_prefix_table[b] != NULL:
            p = g_prefix_table[b]
            g_prefix_table[b] = p.next
            free(p)
    pthread_mutex_unlock(&g_prefix_lock)

cdef void stats_prefix_dump(conn_t* c) noexcept nogil:
    cdef prefix_stats_t* p
    cdef char line[400]
    cdef int n
    cdef int b
    pthread_mutex_lock(&g_prefix_lock)
    for b in range(PREFIX_HASH_SIZE):
        p = g_prefix_table[b]
        while p != NULL:
            n = snprintf(line, sizeof(line), b"PREFIX %s get %llu hit %llu set %llu del %llu\r\n",
                         p.prefix, <unsigned long long>p.gets, <unsigned long long>p.hits,
                         <unsigned long long>p.sets, <unsigned long long>p.dels)
            out_raw(c, line, <size_t>n)
            p = p.next
    pthread_mutex_unlock(&g_prefix_lock)
    out_raw(c, b"END\r\n", 5)

cdef inline void append_stat_u64(conn_t* c, const char* name, uint64_t v) noexcept nogil:
    cdef size_t n = strlen(name)
    cdef char* p = out_reserve(c, 5 + n + 1 + 21 + 2)
    cdef char* start = p
    if p == NULL:
        c.close_now = True
        return
    memcpy(p, b"STAT ", 5)
    p += 5
    memcpy(p, name, n)
    p += n
    p[0] = c' '
    p = write_u64(p + 1, v)
    p[0] = c'\r'
    p[1] = c'\n'
    c.wlen += <size_t>(p + 2 - start)

cdef inline void append_stat_str(conn_t* c, const char* name, const char* v) noexcept nogil:
    out_raw(c, b"STAT ", 5)
    out_raw(c, name, strlen(name))
    out_raw(c, b" ", 1)
    out_raw(c, v, strlen(v))
    out_raw(c, b"\r\n", 2)

# name is "<prefix>:<field>"
cdef inline void append_stat_pfx(conn_t* c, const char* prefix, int id, const char* field, uint64_t v) noexcept nogil:
    cdef char name[96]
    if prefix[0]:
        snprintf(name, sizeof(name), b"%s:%d:%s", prefix, id, field)
    else:
        snprintf(name, sizeof(name), b"%d:%s", id, field)
    append_stat_u64(c, name, v)

# Response objects memcached would hold now, and its bundles (conn.pxi): a
# worker keeps its last bundle once it took one.
cdef uint64_t resp_obj_count() noexcept nogil:
    cdef uint64_t n = 0
    cdef int w
    for w in range(g_nworkers):
        n += mc_load_u64(&g_workers[w].resp_count)
    return n

cdef uint64_t resp_obj_bundles() noexcept nogil:
    cdef uint64_t n = 0
    cdef int w
    for w in range(g_nworkers):
        n += mc_load_u64(&g_workers[w].resp_bundles)
    return n

# memcached's read_buf_count / read_buf_bytes_free: buffers each worker's cache
# made (held by conns, by response bundles, or free), and the free ones.
cdef void rbuf_cache_totals(uint64_t* total, uint64_t* free_) noexcept nogil:
    cdef int w
    total[0] = 0
    free_[0] = 0
    for w in range(g_nworkers):
        total[0] += mc_load_u64(&g_workers[w].rbc_total)
        free_[0] += mc_load_u64(&g_workers[w].rbc_free)

# Sum every worker's counters, minus the reset baseline.
cdef void threadlocal_stats_aggregate(thread_stats_t* out) noexcept nogil:
    cdef size_t n = sizeof(thread_stats_t) // sizeof(uint64_t)
    cdef uint64_t* dst = <uint64_t*>out
    cdef uint64_t* src
    cdef uint64_t* base = <uint64_t*>&g_stats_baseline
    cdef size_t i
    cdef int w
    memset(out, 0, sizeof(thread_stats_t))
    for w in range(g_nworkers):
        src = <uint64_t*>&g_workers[w].stats
        for i in range(n):
            dst[i] += mc_load_u64(&src[i])
    src = <uint64_t*>&g_orphan_stats
    for i in range(n):
        dst[i] += mc_load_u64(&src[i])
        dst[i] -= mc_load_u64(&base[i])

cdef void stats_reset() noexcept nogil:
    cdef thread_stats_t now
    cdef int i
    cdef int j
    memset(&g_stats_baseline, 0, sizeof(thread_stats_t))
    threadlocal_stats_aggregate(&now)
    memcpy(&g_stats_baseline, &now, sizeof(thread_stats_t))
    for i in range(g_nshards):
        pthread_mutex_lock(&g_shards[i].lock)
        g_shards[i].total_items = 0
        for j in range(MAX_SLAB_CLASSES):
            g_shards[i].lru[j].evicted = 0
            g_shards[i].lru[j].evicted_nonzero = 0
            g_shards[i].lru[j].outofmemory = 0
            g_shards[i].lru[j].reclaimed = 0
            g_shards[i].lru[j].expired_unfetched = 0
            g_shards[i].lru[j].evicted_unfetched = 0
            g_shards[i].lru[j].evicted_active = 0
            g_shards[i].lru[j].moves_within_lru = 0
            g_shards[i].lru[j].moves_to_cold = 0
            g_shards[i].lru[j].moves_to_warm = 0
            g_shards[i].lru[j].crawler_reclaimed = 0
            g_shards[i].lru[j].crawler_items_checked = 0
            g_shards[i].lru[j].direct_reclaims = 0
            g_shards[i].lru[j].lrutail_reflocked = 0
        pthread_mutex_unlock(&g_shards[i].lock)
    mc_store_u64(&g_total_conns, 0)
    mc_store_u64(&g_rejected_conns, 0)
    mc_store_u64(&g_listen_disabled, 0)
    stats_prefix_clear()

# Per-class LRU counters summed over shards.
cdef void lru_stats_aggregate(lru_stats_t* out, uint64_t* hash_buckets) noexcept nogil:
    cdef int i
    cdef int j
    cdef int k
    cdef lock_hold_t t0
    memset(out, 0, sizeof(lru_stats_t) * MAX_SLAB_CLASSES)
    hash_buckets[0] = 0
    for i in range(g_nshards):
        t0 = lockstat_lock(&g_shards[i].lock)
        hash_buckets[0] += <uint64_t>1 << g_shards[i].hashpower
        for j in range(MAX_SLAB_CLASSES):
            out[j].number += g_shards[i].lru[j].number
            out[j].evicted += g_shards[i].lru[j].evicted
            out[j].evicted_nonzero += g_shards[i].lru[j].evicted_nonzero
            if g_shards[i].lru[j].evicted_time > out[j].evicted_time:
                out[j].evicted_time = g_shards[i].lru[j].evicted_time
            out[j].outofmemory += g_shards[i].lru[j].outofmemory
            out[j].reclaimed += g_shards[i].lru[j].reclaimed
            out[j].expired_unfetched += g_shards[i].lru[j].expired_unfetched
            out[j].evicted_unfetched += g_shards[i].lru[j].evicted_unfetched
            out[j].evicted_active += g_shards[i].lru[j].evicted_active
            out[j].moves_within_lru += g_shards[i].lru[j].moves_within_lru
            out[j].moves_to_cold += g_shards[i].lru[j].moves_to_cold
            out[j].moves_to_warm += g_shards[i].lru[j].moves_to_warm
            out[j].crawler_reclaimed += g_shards[i].lru[j].crawler_reclaimed
            out[j].crawler_items_checked += g_shards[i].lru[j].crawler_items_checked
            out[j].direct_reclaims += g_shards[i].lru[j].direct_reclaims
            out[j].lrutail_reflocked += g_shards[i].lru[j].lrutail_reflocked
            for k in range(4):
                out[j].seg_number[k] += g_shards[i].lru[j].seg_number[k]
                out[j].seg_bytes[k] += g_shards[i].lru[j].seg_bytes[k]
        lockstat_unlock(&g_shards[i].lock, LK_STATS, t0)

cdef inline void append_rusage(conn_t* c, const char* name, timeval* tv) noexcept nogil:
    cdef char buf[64]
    snprintf(buf, sizeof(buf), b"%ld.%06ld", <long>tv.tv_sec, <long>tv.tv_usec)
    append_stat_str(c, name, buf)

cdef void stats_general(conn_t* c) noexcept nogil:
    cdef thread_stats_t ts
    cdef uint64_t rb_total
    cdef uint64_t rb_free
    cdef lru_stats_t lru[MAX_SLAB_CLASSES]
    cdef uint64_t hash_buckets
    cdef uint64_t curr_items
    cdef uint64_t total_items
    cdef uint64_t nbytes
    cdef rusage ru
    cdef uint64_t get_hits = 0
    cdef uint64_t set_cmds = 0
    cdef uint64_t delete_hits = 0
    cdef uint64_t incr_hits = 0
    cdef uint64_t decr_hits = 0
    cdef uint64_t cas_hits = 0
    cdef uint64_t cas_badval = 0
    cdef uint64_t touch_hits = 0
    cdef uint64_t evicted = 0
    cdef uint64_t reclaimed = 0
    cdef uint64_t expired_unfetched = 0
    cdef uint64_t evicted_unfetched = 0
    cdef uint64_t evicted_active = 0
    cdef uint64_t moves_within_lru = 0
    cdef uint64_t moves_to_cold = 0
    cdef uint64_t moves_to_warm = 0
    cdef uint64_t crawler_reclaimed = 0
    cdef uint64_t crawler_items_checked = 0
    cdef uint64_t lrutail_reflocked = 0
    cdef uint64_t direct_reclaims = 0
    cdef uint64_t hp = 0
    cdef int i
    cdef rel_time_t now = current_time()
    threadlocal_stats_aggregate(&ts)
    lru_stats_aggregate(lru, &hash_buckets)
    store_totals(&curr_items, &total_items, &nbytes)
    getrusage(RUSAGE_SELF, &ru)
    for i in range(MAX_SLAB_CLASSES):
        get_hits += ts.slab[i].get_hits
        set_cmds += ts.slab[i].set_cmds
        delete_hits += ts.slab[i].delete_hits
        incr_hits += ts.slab[i].incr_hits
        decr_hits += ts.slab[i].decr_hits
        cas_hits += ts.slab[i].cas_hits
        cas_badval += ts.slab[i].cas_badval
        touch_hits += ts.slab[i].touch_hits
        evicted += lru[i].evicted
        reclaimed += lru[i].reclaimed
        expired_unfetched += lru[i].expired_unfetched
        evicted_unfetched += lru[i].evicted_unfetched
        evicted_active += lru[i].evicted_active
        moves_within_lru += lru[i].moves_within_lru
        moves_to_cold += lru[i].moves_to_cold
        moves_to_warm += lru[i].moves_to_warm
        crawler_reclaimed += lru[i].crawler_reclaimed
        crawler_items_checked += lru[i].crawler_items_checked
        lrutail_reflocked += lru[i].lrutail_reflocked
        direct_reclaims += lru[i].direct_reclaims
    while (<uint64_t>1 << (hp + 1)) <= hash_buckets:
        hp += 1
    append_stat_u64(c, b"pid", <uint64_t>getpid())
    append_stat_u64(c, b"uptime", now - ITEM_UPDATE_INTERVAL)
    append_stat_u64(c, b"time", <uint64_t>clock_now_unix())
    append_stat_str(c, b"version", g_settings.version)
    append_stat_str(c, b"libevent", b"none")
    append_stat_u64(c, b"pointer_size", 8 * sizeof(void*))
    append_rusage(c, b"rusage_user", &ru.ru_utime)
    append_rusage(c, b"rusage_system", &ru.ru_stime)
    append_stat_u64(c, b"max_connections", <uint64_t>g_settings.maxconns)
    append_stat_u64(c, b"curr_connections", mc_load_u64(&g_curr_conns))
    append_stat_u64(c, b"total_connections", mc_load_u64(&g_total_conns))
    append_stat_u64(c, b"rejected_connections", mc_load_u64(&g_rejected_conns))
    append_stat_u64(c, b"connection_structures", mc_load_u64(&g_conn_structures))
    append_stat_u64(c, b"response_obj_oom", ts.response_obj_oom)
    append_stat_u64(c, b"response_obj_count", resp_obj_count())
    append_stat_u64(c, b"response_obj_bytes", resp_obj_bundles() * RESP_BUFFER_SIZE)
    rbuf_cache_totals(&rb_total, &rb_free)
    append_stat_u64(c, b"read_buf_count", rb_total)
    append_stat_u64(c, b"read_buf_bytes", rb_total * RESP_BUFFER_SIZE)
    append_stat_u64(c, b"read_buf_bytes_free", rb_free * RESP_BUFFER_SIZE)
    append_stat_u64(c, b"read_buf_oom", ts.read_buf_oom)
    append_stat_u64(c, b"reserved_fds", <uint64_t>(g_nworkers * 2 + g_nlisteners + 4))
    append_stat_u64(c, b"cmd_get", ts.get_cmds)
    append_stat_u64(c, b"cmd_set", set_cmds)
    append_stat_u64(c, b"cmd_flush", ts.flush_cmds)
    append_stat_u64(c, b"cmd_touch", ts.touch_cmds)
    append_stat_u64(c, b"cmd_meta", ts.meta_cmds)
    append_stat_u64(c, b"get_hits", get_hits)
    append_stat_u64(c, b"get_misses", ts.get_misses)
    append_stat_u64(c, b"get_expired", ts.get_expired)
    append_stat_u64(c, b"get_flushed", ts.get_flushed)
    append_stat_u64(c, b"delete_misses", ts.delete_misses)
    append_stat_u64(c, b"delete_hits", delete_hits)
    append_stat_u64(c, b"incr_misses", ts.incr_misses)
    append_stat_u64(c, b"incr_hits", incr_hits)
    append_stat_u64(c, b"decr_misses", ts.decr_misses)
    append_stat_u64(c, b"decr_hits", decr_hits)
    append_stat_u64(c, b"cas_misses", ts.cas_misses)
    append_stat_u64(c, b"cas_hits", cas_hits)
    append_stat_u64(c, b"cas_badval", cas_badval)
    append_stat_u64(c, b"touch_hits", touch_hits)
    append_stat_u64(c, b"touch_misses", ts.touch_misses)
    append_stat_u64(c, b"store_too_large", ts.store_too_large)
    append_stat_u64(c, b"store_no_memory", ts.store_no_memory)
    append_stat_u64(c, b"auth_cmds", ts.auth_cmds)
    append_stat_u64(c, b"auth_errors", ts.auth_errors)
    if g_settings.idle_timeout:
        append_stat_u64(c, b"idle_kicks", ts.idle_kicks)
    append_stat_u64(c, b"bytes_read", ts.bytes_read)
    append_stat_u64(c, b"bytes_written", ts.bytes_written)
    append_stat_u64(c, b"limit_maxbytes", mc_load_u64(&g_settings.maxbytes))
    append_stat_u64(c, b"accepting_conns", 1)
    append_stat_u64(c, b"listen_disabled_num", mc_load_u64(&g_listen_disabled))
    append_stat_u64(c, b"time_in_listen_disabled_us", 0)
    append_stat_u64(c, b"threads", <uint64_t>g_settings.num_threads)
    append_stat_u64(c, b"conn_yields", ts.conn_yields)
    append_stat_u64(c, b"hash_power_level", hp)
    append_stat_u64(c, b"hash_bytes", hash_buckets * sizeof(void*))
    append_stat_u64(c, b"hash_is_expanding", 0)
    if g_settings.slab_reassign:
        append_stat_u64(c, b"slab_reassign_rescues", mc_load_u64(&g_rebal_rescues))
        append_stat_u64(c, b"slab_reassign_chunk_rescues", mc_load_u64(&g_rebal_chunk_rescues))
        append_stat_u64(c, b"slab_reassign_evictions_nomem", mc_load_u64(&g_rebal_evictions))
        append_stat_u64(c, b"slab_reassign_inline_reclaim", mc_load_u64(&g_rebal_inline_reclaim))
        append_stat_u64(c, b"slab_reassign_busy_items", mc_load_u64(&g_rebal_busy))
        append_stat_u64(c, b"slab_reassign_busy_deletes", 0)
        append_stat_u64(c, b"slab_reassign_running", 1 if mc_load_int(&g_rebal_signal) == 2 else 0)
        append_stat_u64(c, b"slabs_moved", mc_load_u64(&g_slabs_moved))
    if g_settings.lru_crawler:
        append_stat_u64(c, b"lru_crawler_running", 0)
        append_stat_u64(c, b"lru_crawler_starts", mc_load_u64(&g_lru_crawler_starts))
    if g_settings.lru_maintainer:
        append_stat_u64(c, b"lru_maintainer_juggles", mc_load_u64(&g_lru_maintainer_juggles))
    append_stat_u64(c, b"malloc_fails", g_malloc_fails)
    append_stat_u64(c, b"log_worker_dropped", 0)
    append_stat_u64(c, b"log_worker_written", mc_load_u64(&g_log_worker_written))
    append_stat_u64(c, b"log_watcher_skipped", mc_load_u64(&g_log_watcher_skipped))
    append_stat_u64(c, b"log_watcher_sent", mc_load_u64(&g_log_watcher_sent))
    append_stat_u64(c, b"log_watchers", <uint64_t>mc_load_int(&g_nwatchers))
    tls_append_stats(c)
    append_stat_u64(c, b"unexpected_napi_ids", 0)
    append_stat_u64(c, b"round_robin_fallback", 0)
    append_stat_u64(c, b"bytes", nbytes)
    append_stat_u64(c, b"curr_items", curr_items)
    append_stat_u64(c, b"total_items", total_items)
    append_stat_u64(c, b"slab_global_page_pool", global_page_pool_size())
    append_stat_u64(c, b"expired_unfetched", expired_unfetched)
    append_stat_u64(c, b"evicted_unfetched", evicted_unfetched)
    # memcached prints the segment counters only while its LRU maintainer runs.
    if g_settings.lru_maintainer:
        append_stat_u64(c, b"evicted_active", evicted_active)
    append_stat_u64(c, b"evictions", evicted)
    append_stat_u64(c, b"reclaimed", reclaimed)
    append_stat_u64(c, b"crawler_reclaimed", crawler_reclaimed)
    append_stat_u64(c, b"crawler_items_checked", crawler_items_checked)
    append_stat_u64(c, b"lrutail_reflocked", lrutail_reflocked)
    if g_settings.lru_maintainer:
        append_stat_u64(c, b"moves_to_cold", moves_to_cold)
        append_stat_u64(c, b"moves_to_warm", moves_to_warm)
        append_stat_u64(c, b"moves_within_lru", moves_within_lru)
        append_stat_u64(c, b"direct_reclaims", direct_reclaims)
        append_stat_u64(c, b"lru_bumps_dropped", 0)

cdef void stats_settings(conn_t* c) noexcept nogil:
    append_stat_u64(c, b"maxbytes", mc_load_u64(&g_settings.maxbytes))
    if g_settings_text_a != NULL:
        out_raw(c, g_settings_text_a, strlen(g_settings_text_a))
    append_stat_u64(c, b"verbosity", <uint64_t>mc_load_int(&g_settings.verbose))
    append_stat_u64(c, b"oldest", mc_load_u32(&g_settings.oldest_live))
    cdef char buf[64]
    if g_settings_text_b[0] == NULL:
        return
    out_raw(c, g_settings_text_b[0], strlen(g_settings_text_b[0]))
    append_stat_u64(c, b"slab_automove", <uint64_t>g_settings.slab_automove)
    snprintf(buf, sizeof(buf), b"%.2f", g_settings.slab_automove_ratio)
    append_stat_str(c, b"slab_automove_ratio", buf)
    out_raw(c, g_settings_text_b[1], strlen(g_settings_text_b[1]))
    append_stat_str(c, b"lru_crawler", b"yes" if g_settings.lru_crawler else b"no")
    append_stat_u64(c, b"lru_crawler_sleep", g_settings.lru_crawler_sleep)
    append_stat_u64(c, b"lru_crawler_tocrawl", g_settings.lru_crawler_tocrawl)
    out_raw(c, g_settings_text_b[2], strlen(g_settings_text_b[2]))
    append_stat_str(c, b"lru_segmented", b"yes" if g_settings.lru_segmented else b"no")
    append_stat_u64(c, b"hot_lru_pct", g_settings.hot_lru_pct)
    append_stat_u64(c, b"warm_lru_pct", g_settings.warm_lru_pct)
    snprintf(buf, sizeof(buf), b"%.2f", g_settings.hot_max_factor)
    append_stat_str(c, b"hot_max_factor", buf)
    snprintf(buf, sizeof(buf), b"%.2f", g_settings.warm_max_factor)
    append_stat_str(c, b"warm_max_factor", buf)
    append_stat_str(c, b"temp_lru", b"yes" if g_settings.temp_lru else b"no")
    append_stat_u64(c, b"temporary_ttl", <uint64_t><uint32_t>g_settings.temporary_ttl)
    out_raw(c, g_settings_text_b[3], strlen(g_settings_text_b[3]))

cdef void stats_items(conn_t* c) noexcept nogil:
    cdef lru_stats_t lru[MAX_SLAB_CLASSES]
    cdef thread_stats_t ts
    cdef uint64_t hb
    cdef uint64_t requested
    cdef int i
    cdef rel_time_t now = current_time()
    cdef rel_time_t ages[3]
    cdef shard_t* s
    cdef item_t* t
    cdef int j
    cdef int k
    cdef lock_hold_t t0
    lru_stats_aggregate(lru, &hb)
    threadlocal_stats_aggregate(&ts)
    for i in range(1, MAX_SLAB_CLASSES):
        if lru[i].number == 0 and lru[i].evicted == 0 and lru[i].outofmemory == 0:
            continue
        if lru[i].number == 0:
            continue
        # the oldest tail of each segment over all shards
        ages[0] = ages[1] = ages[2] = 0
        for j in range(g_nshards):
            s = &g_shards[j]
            t0 = lockstat_lock(&s.lock)
            for k in range(3):
                t = s.tails[lru_idx(i, k)]
                if t != NULL and now - t.time > ages[k]:
                    ages[k] = now - t.time
            lockstat_unlock(&s.lock, LK_STATS, t0)
        pthread_mutex_lock(&g_slabs_lock)
        requested = g_slabclass[i].requested
        pthread_mutex_unlock(&g_slabs_lock)
        requested += slabs_stash_requested(i)      # the workers' shares
        append_stat_pfx(c, b"items", i, b"number", lru[i].number)
        # the segment fields only with the LRU maintainer, as memcached
        if g_settings.lru_maintainer:
            append_stat_pfx(c, b"items", i, b"number_hot", lru[i].seg_number[SEG_HOT])
            append_stat_pfx(c, b"items", i, b"number_warm", lru[i].seg_number[SEG_WARM])
            append_stat_pfx(c, b"items", i, b"number_cold", lru[i].seg_number[SEG_COLD])
            if g_settings.temp_lru:
                append_stat_pfx(c, b"items", i, b"number_temp", lru[i].seg_number[SEG_TEMP])
            append_stat_pfx(c, b"items", i, b"age_hot", ages[SEG_HOT])
            append_stat_pfx(c, b"items", i, b"age_warm", ages[SEG_WARM])
        append_stat_pfx(c, b"items", i, b"age", ages[SEG_COLD])
        append_stat_pfx(c, b"items", i, b"mem_requested", requested)
        append_stat_pfx(c, b"items", i, b"evicted", lru[i].evicted)
        append_stat_pfx(c, b"items", i, b"evicted_nonzero", lru[i].evicted_nonzero)
        append_stat_pfx(c, b"items", i, b"evicted_time", lru[i].evicted_time)
        append_stat_pfx(c, b"items", i, b"outofmemory", lru[i].outofmemory)
        append_stat_pfx(c, b"items", i, b"tailrepairs", 0)
        append_stat_pfx(c, b"items", i, b"reclaimed", lru[i].reclaimed)
        append_stat_pfx(c, b"items", i, b"expired_unfetched", lru[i].expired_unfetched)
        append_stat_pfx(c, b"items", i, b"evicted_unfetched", lru[i].evicted_unfetched)
        if g_settings.lru_maintainer:
            append_stat_pfx(c, b"items", i, b"evicted_active", lru[i].evicted_active)
        append_stat_pfx(c, b"items", i, b"crawler_reclaimed", lru[i].crawler_reclaimed)
        append_stat_pfx(c, b"items", i, b"crawler_items_checked", lru[i].crawler_items_checked)
        append_stat_pfx(c, b"items", i, b"lrutail_reflocked", lru[i].lrutail_reflocked)
        if not g_settings.lru_maintainer:
            continue
        append_stat_pfx(c, b"items", i, b"moves_to_cold", lru[i].moves_to_cold)
        append_stat_pfx(c, b"items", i, b"moves_to_warm", lru[i].moves_to_warm)
        append_stat_pfx(c, b"items", i, b"moves_within_lru", lru[i].moves_within_lru)
        append_stat_pfx(c, b"items", i, b"direct_reclaims", lru[i].direct_reclaims)
        append_stat_pfx(c, b"items", i, b"hits_to_hot", ts.slab[i].lru_hits[SEG_HOT])
        append_stat_pfx(c, b"items", i, b"hits_to_warm", ts.slab[i].lru_hits[SEG_WARM])
        append_stat_pfx(c, b"items", i, b"hits_to_cold", ts.slab[i].lru_hits[SEG_COLD])
        append_stat_pfx(c, b"items", i, b"hits_to_temp", ts.slab[i].lru_hits[SEG_TEMP])

cdef void stats_slabs(conn_t* c) noexcept nogil:
    cdef thread_stats_t ts
    cdef int i
    cdef int active = 0
    cdef slabclass_t p
    cdef uint64_t total_malloced
    cdef uint64_t total_chunks
    cdef uint64_t stashed
    threadlocal_stats_aggregate(&ts)
    for i in range(1, MAX_SLAB_CLASSES):
        pthread_mutex_lock(&g_slabs_lock)
        p = g_slabclass[i]
        pthread_mutex_unlock(&g_slabs_lock)
        if p.slabs == 0:
            continue
        # chunks in workers' stashes are free, as on memcached's free list
        # (a store running meanwhile may make the two reads disagree)
        stashed = slabs_stashed(i)
        p.used_chunks = p.used_chunks - stashed if p.used_chunks > stashed else 0
        active += 1
        total_chunks = p.slabs * p.perslab
        append_stat_pfx(c, b"", i, b"chunk_size", p.size)
        append_stat_pfx(c, b"", i, b"chunks_per_page", p.perslab)
        append_stat_pfx(c, b"", i, b"total_pages", p.slabs)
        append_stat_pfx(c, b"", i, b"total_chunks", total_chunks)
        append_stat_pfx(c, b"", i, b"used_chunks", p.used_chunks)
        append_stat_pfx(c, b"", i, b"free_chunks", total_chunks - p.used_chunks)
        append_stat_pfx(c, b"", i, b"free_chunks_end", p.end_page_free)
        append_stat_pfx(c, b"", i, b"get_hits", ts.slab[i].get_hits)
        append_stat_pfx(c, b"", i, b"cmd_set", ts.slab[i].set_cmds)
        append_stat_pfx(c, b"", i, b"delete_hits", ts.slab[i].delete_hits)
        append_stat_pfx(c, b"", i, b"incr_hits", ts.slab[i].incr_hits)
        append_stat_pfx(c, b"", i, b"decr_hits", ts.slab[i].decr_hits)
        append_stat_pfx(c, b"", i, b"cas_hits", ts.slab[i].cas_hits)
        append_stat_pfx(c, b"", i, b"cas_badval", ts.slab[i].cas_badval)
        append_stat_pfx(c, b"", i, b"touch_hits", ts.slab[i].touch_hits)
    pthread_mutex_lock(&g_slabs_lock)
    total_malloced = g_mem_malloced
    pthread_mutex_unlock(&g_slabs_lock)
    append_stat_u64(c, b"active_slabs", <uint64_t>active)
    append_stat_u64(c, b"total_malloced", total_malloced)

cdef void format_addr(sockaddr_storage* ss, int kind, char* out, size_t outlen) noexcept nogil:
    cdef char host[64]
    cdef sockaddr_in* sin
    cdef sockaddr_in6* sin6
    if kind == 1 or ss.ss_family == AF_UNIX:
        snprintf(out, outlen, b"unix:%s", g_settings.domain_socket)
    elif ss.ss_family == AF_INET:
        sin = <sockaddr_in*>ss
        inet_ntop(AF_INET, &sin.sin_addr, host, sizeof(host))
        snprintf(out, outlen, b"%s:%s:%u", b"udp" if kind == 2 else b"tcp", host,
                 <unsigned>ntohs(sin.sin_port))
    elif ss.ss_family == AF_INET6:
        sin6 = <sockaddr_in6*>ss
        inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof(host))
        snprintf(out, outlen, b"%s:[%s]:%u", b"udp6" if kind == 2 else b"tcp6", host,
                 <unsigned>ntohs(sin6.sin6_port))
    else:
        snprintf(out, outlen, b"unknown")

cdef void stats_conns(conn_t* c) noexcept nogil:
    cdef int w
    cdef conn_t* o
    cdef char name[64]
    cdef char addr[160]
    cdef rel_time_t now = current_time_exact()   # see current_time_exact
    cdef sockaddr_storage ss
    cdef socklen_t sl
    cdef int i
    # listeners first, as memcached lists its listening conns (lowest fds)
    for i in range(g_nlisteners):
        sl = sizeof(sockaddr_storage)
        memset(&ss, 0, sizeof(ss))
        getsockname(g_listen_fds[i], <sockaddr*>&ss, &sl)
        format_addr(&ss, g_listen_kinds[i], addr, sizeof(addr))
        snprintf(name, sizeof(name), b"%d:addr", g_listen_fds[i])
        append_stat_str(c, name, addr)
        snprintf(name, sizeof(name), b"%d:state", g_listen_fds[i])
        append_stat_str(c, name, b"conn_listening")
        snprintf(name, sizeof(name), b"%d:secs_since_last_cmd", g_listen_fds[i])
        append_stat_u64(c, name, 0)
    # then the UDP conns (one per worker and socket, as memcached's), then clients
    for w in range(g_nworkers):
        pthread_mutex_lock(&g_workers[w].lock)
        o = g_workers[w].conns
        while o != NULL:
            if o.listen_kind == 2:
                snprintf(name, sizeof(name), b"%d:UDP", o.fd)
                append_stat_str(c, name, b"UDP")
                format_addr(&o.local, 2, addr, sizeof(addr))
                snprintf(name, sizeof(name), b"%d:addr", o.fd)
                append_stat_str(c, name, addr)
                snprintf(name, sizeof(name), b"%d:state", o.fd)
                append_stat_str(c, name, b"conn_read")
                snprintf(name, sizeof(name), b"%d:secs_since_last_cmd", o.fd)
                append_stat_u64(c, name, now - mc_load_u32(&o.last_cmd_time))
            o = o.next
        pthread_mutex_unlock(&g_workers[w].lock)
    for w in range(g_nworkers):
        pthread_mutex_lock(&g_workers[w].lock)
        o = g_workers[w].conns
        while o != NULL:
            if o.listen_kind == 2:
                o = o.next
                continue
            format_addr(&o.peer, o.listen_kind, addr, sizeof(addr))
            snprintf(name, sizeof(name), b"%d:addr", o.fd)
            append_stat_str(c, name, addr)
            format_addr(&o.local, o.listen_kind, addr, sizeof(addr))
            snprintf(name, sizeof(name), b"%d:listen_addr", o.fd)
            append_stat_str(c, name, addr)
            snprintf(name, sizeof(name), b"%d:state", o.fd)
            append_stat_str(c, name, b"conn_parse_cmd" if o == c else
                            b"conn_nread" if mc_load_int(&o.in_nread) else b"conn_waiting")
            snprintf(name, sizeof(name), b"%d:secs_since_last_cmd", o.fd)
            # the asking conn is running its command now: 0, though its time was taken
            # from the cached clock, which may be a second behind `now`
            append_stat_u64(c, name, 0 if o == c else now - mc_load_u32(&o.last_cmd_time))
            o = o.next
        pthread_mutex_unlock(&g_workers[w].lock)

# `stats cachedump <class> <limit>`: keys of one class, newest first.
cdef void stats_cachedump(conn_t* c, uint32_t id, uint32_t limit) noexcept nogil:
    cdef int i
    cdef item_t* it
    cdef uint32_t shown = 0
    cdef char line[400]
    cdef int n
    cdef time_t exp
    cdef size_t written = 0
    cdef lock_hold_t t0
    for i in range(g_nshards):
        t0 = lockstat_lock(&g_shards[i].lock)
        it = g_shards[i].heads[lru_idx(id, SEG_COLD)]     # COLD only, as memcached
        while it != NULL and (limit == 0 or shown < limit):
            exp = 0
            if it.exptime != 0:
                exp = <time_t>it.exptime + g_process_started
            n = snprintf(line, sizeof(line), b"ITEM %.*s [%u b; %ld s]\r\n", <int>it.nkey,
                         ITEM_key(it), it.nbytes - 2, <long>exp)
            if written + <size_t>n + 6 > 2 * 1024 * 1024:
                break      # memcached caps a cachedump reply at 2 MB
            written += <size_t>n
            out_raw(c, line, <size_t>n)
            shown += 1
            it = it.next
        lockstat_unlock(&g_shards[i].lock, LK_DUMP, t0)
        if limit != 0 and shown >= limit:
            break
    out_raw(c, b"END\r\n", 5)

# `stats locks` (lock_stats.pxi): per kind, holds, total and longest hold in microseconds,
# and the longest CPU time of one hold.
cdef void stats_locks(conn_t* c) noexcept nogil:
    cdef int k
    cdef char name[48]
    for k in range(LK_KINDS):
        snprintf(name, sizeof(name), b"%s:holds", lockstat_name(k))
        append_stat_u64(c, name, mc_load_u64(&g_lock_stats[k].holds))
        snprintf(name, sizeof(name), b"%s:total_us", lockstat_name(k))
        append_stat_u64(c, name, mc_load_u64(&g_lock_stats[k].total_ns) // 1000)
        snprintf(name, sizeof(name), b"%s:max_us", lockstat_name(k))
        append_stat_u64(c, name, mc_load_u64(&g_lock_stats[k].max_ns) // 1000)
        snprintf(name, sizeof(name), b"%s:max_cpu_us", lockstat_name(k))
        append_stat_u64(c, name, mc_load_u64(&g_lock_stats[k].max_cpu_ns) // 1000)

cdef int process_stat(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef token_t* sub = &tokens[1]
    cdef char sname[24]
    cdef size_t bucket
    cdef uint32_t id
    cdef uint32_t limit
    if ntokens < 2:
        out_string(c, b"CLIENT_ERROR bad command line")
        return 0
    if ntokens == 2:
        stats_general(c)
    elif tok_eq(sub, b"reset", 5):
        stats_reset()
        out_string(c, b"RESET")
        return 0
    elif tok_eq(sub, b"detail", 6):
        if ntokens < 4:
            out_string(c, b"CLIENT_ERROR usage: stats detail on|off|dump")
        elif tok_eq(&tokens[2], b"on", 2):
            mc_store_int(&g_detail_enabled, 1)
            out_string(c, b"OK")
        elif tok_eq(&tokens[2], b"off", 3):
            mc_store_int(&g_detail_enabled, 0)
            out_string(c, b"OK")
        elif tok_eq(&tokens[2], b"dump", 4):
            stats_prefix_dump(c)
        else:
            out_string(c, b"CLIENT_ERROR usage: stats detail on|off|dump")
        return 0
    elif tok_eq(sub, b"hotkeys", 7):
        # memcachepy's own: `stats hotkeys [top]`, `stats hotkeys reset` (hotkeys.pxi)
        limit = HK_DEFAULT_TOP
        if ntokens > 3 and tok_eq(&tokens[2], b"reset", 5) and ntokens == 4:
            hotkeys_reset()
            out_string(c, b"RESET")
            return 0
        if ntokens > 4 or (ntokens == 4 and not tok_strtoul(&tokens[2], &limit)):
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        stats_hotkeys(c, limit if limit < HK_MAX_TOP else HK_MAX_TOP)
    elif tok_eq(sub, b"locks", 5):
        # memcachepy's own: how long background work held the locks workers wait on
        stats_locks(c)
    elif tok_eq(sub, b"settings", 8):
        stats_settings(c)
    elif tok_eq(sub, b"cachedump", 9):
        if not g_settings.dump_enabled:
            out_string(c, b"CLIENT_ERROR stats cachedump not allowed")
            return 0
        if ntokens < 5:
            out_string(c, b"CLIENT_ERROR bad command line")
            return 0
        if not (tok_strtoul(&tokens[2], &id) and tok_strtoul(&tokens[3], &limit)):
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        if id >= MC_MAX_CLASSES:
            out_string(c, b"CLIENT_ERROR Illegal slab id")
            return 0
        stats_cachedump(c, id, limit)
        return 0
    elif tok_eq(sub, b"conns", 5):
        stats_conns(c)
    elif tok_eq(sub, b"items", 5):
        stats_items(c)
    elif tok_eq(sub, b"slabs", 5):
        stats_slabs(c)
    elif tok_eq(sub, b"extstore", 8):
        pass          # as memcached built with extstore but started without ext_path
    elif tok_eq(sub, b"sizes", 5):
        if g_sizes_hist == NULL:
            out_raw(c, b"STAT sizes_status disabled\r\n", 28)
        else:
            for bucket in range(g_sizes_buckets):
                if mc_load_u64(&g_sizes_hist[bucket]):
                    snprintf(sname, sizeof(sname), b"%d", <int>(bucket * 32))
                    append_stat_u64(c, sname, mc_load_u64(&g_sizes_hist[bucket]))
    else:
        out_string(c, b"ERROR")
        return 0
    out_raw(c, b"END\r\n", 5)
    return 0
