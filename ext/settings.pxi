# settings.pxi -- the daemon's settings and clock, as C globals.
#
# Python fills g_settings once, before any worker starts (_core_init in
# _core.pyx, from Settings.to_core()); after
# that, workers only read it, except the few fields memcached lets clients change
# at run time (verbosity, the flush horizon, the memory limit), which are written
# with relaxed atomic stores. The clock (g_current_time) is seconds since
# process start, ticked once a second by the acceptor thread as memcached's
# clock event does, so a request never makes a time syscall.

cdef struct settings_t:
    uint64_t maxbytes
    int maxconns
    int port
    int udpport
    int verbose
    rel_time_t oldest_live
    uint64_t oldest_cas
    bint evict_to_free
    int chunk_size
    int num_threads
    int reqs_per_event
    uint64_t read_buf_mem_limit   # -o read_buf_mem_limit, bytes; 0 no limit (conn.pxi)
    bint use_cas
    int backlog
    uint32_t item_size_max
    uint32_t slab_chunk_size_max
    bint flush_enabled
    bint dump_enabled
    bint shutdown_command
    bint watch_enabled
    int idle_timeout
    int busy_poll_us          # -o busy_poll_us: workers poll this long before sleeping (thread.pxi)
    int binding_protocol
    bint maxconns_fast
    char inter[256]
    char domain_socket[256]
    char version[64]          # what `version` and stats `version` answer
    char own_version[64]      # memcachepy's own version
    # Tunables memcached's admin commands change at run time (`slabs automove`,
    # `lru_crawler ...`, `lru ...`); `stats settings` reports them. temp_lru:
    # items with a TTL up to temporary_ttl go to the TEMP LRU (lru.pxi).
    bint slab_reassign        # off (-o no_slab_reassign / no_modern): pages never move
    int slab_automove
    double slab_automove_ratio
    uint32_t slab_automove_window
    bint lru_crawler
    uint32_t lru_crawler_sleep
    uint32_t lru_crawler_tocrawl
    bint lru_maintainer
    bint lru_segmented
    double hot_max_factor
    double warm_max_factor
    uint32_t hot_lru_pct
    uint32_t warm_lru_pct
    bint temp_lru
    int32_t temporary_ttl

cdef settings_t g_settings

cdef time_t g_process_started = 0
cdef rel_time_t g_current_time = 0
cdef int64_t g_time_offset = 0          # test hook: shifts the clock (written under g_clock_lock)
# Serialises clock_tick() (the acceptor, 4 times a second) with clock_advance()
# (a test thread): without it a tick computed before an advance could be stored
# after it and move the clock back for a quarter of a second.
cdef pthread_mutex_t g_clock_lock
cdef int g_shutdown = 0
# g_cas_id (the counter, compat.h: a cache line of its own) is declared in the .pxd.
# CAS ids a thread takes from g_cas_id at once (compat.h mc_cas_take): 1 with a
# single worker, where nothing shares the counter's line and ids stay
# consecutive as memcached's; 64 with more, so the workers do not write one
# line on every store. Ids stay unique, and a key's CAS only grows.
cdef uint64_t g_cas_batch = 1
cdef uint64_t g_cas_gen = 0             # bumped whenever g_cas_id is set

cdef inline rel_time_t current_time() noexcept nogil:
    return mc_load_u32(&g_current_time)

cdef void clock_tick() noexcept nogil:
    cdef timespec ts
    pthread_mutex_lock(&g_clock_lock)
    clock_gettime(CLOCK_REALTIME, &ts)
    mc_store_u32(&g_current_time, <rel_time_t>(ts.tv_sec + g_time_offset - g_process_started))
    pthread_mutex_unlock(&g_clock_lock)

# The clock read now rather than at the last tick (which may be up to a quarter
# of a second old). For ages shown to people (`stats conns`): a conn whose last
# command came a whole second ago must show at least 1, which the cached clock
# cannot promise when the tick lags the second boundary. Never below the cache.
cdef rel_time_t current_time_exact() noexcept nogil:
    cdef timespec ts
    cdef rel_time_t cached = current_time()
    cdef rel_time_t exact
    clock_gettime(CLOCK_REALTIME, &ts)
    exact = <rel_time_t>(ts.tv_sec + mc_load_i64(&g_time_offset) - g_process_started)
    return exact if exact > cached else cached

# Test hook: move the clock forward by `seconds` now (the next request sees it).
cdef void clock_advance(int64_t seconds) noexcept nogil:
    global g_time_offset
    pthread_mutex_lock(&g_clock_lock)
    mc_store_i64(&g_time_offset, g_time_offset + seconds)
    pthread_mutex_unlock(&g_clock_lock)
    clock_tick()

cdef inline time_t clock_now_unix() noexcept nogil:
    return g_process_started + <time_t>current_time()

# Convert a client exptime to server-relative time, as memcached's realtime().
# An absolute exptime is a time on the client's clock, which clock_advance()
# did not move: it is shifted by the offset, so that after an advance a
# client's "now + 60" still means 60 s from now (clients such as Flask-Caching
# and Django, for long timeouts, send absolute times). The offset is 0 outside
# tests.
cdef inline rel_time_t realtime(int64_t exptime) noexcept nogil:
    if exptime == 0:
        return 0
    if exptime < 0:
        # memcached maps negative to "just past 30 days absolute": already expired.
        exptime = REALTIME_MAXDELTA + 1
    if exptime > REALTIME_MAXDELTA:
        exptime += mc_load_i64(&g_time_offset)
        if exptime <= g_process_started:
            return 1
        return <rel_time_t>(exptime - g_process_started)
    return <rel_time_t>(exptime + current_time())

cdef inline uint64_t get_cas_id() noexcept nogil:
    return mc_fetch_add_u64(&g_cas_id, 1)

# A CAS id for a store: above `floor` (the CAS of the item it replaces, so a
# key's CAS never goes back) and above the flush horizon (an item stored after
# flush_all must not look older than it). Ids from another thread's batch may
# be lower or higher: CAS values are unique, not ordered across keys.
cdef inline uint64_t next_cas_above(uint64_t floor) noexcept nogil:
    cdef uint64_t oldest
    if not g_settings.use_cas:
        return 0
    oldest = mc_load_u64(&g_settings.oldest_cas)
    if oldest > floor:
        floor = oldest
    return mc_cas_take(&g_cas_id, g_cas_batch, g_cas_gen, floor)

cdef inline uint64_t next_cas() noexcept nogil:
    return next_cas_above(0)

# g_cas_id was set (start-up, warm restart): batches taken before are void.
cdef inline void cas_reset(uint64_t value, uint64_t batch) noexcept nogil:
    global g_cas_batch, g_cas_gen
    mc_store_u64(&g_cas_id, value)
    g_cas_batch = batch if batch > 0 else 1
    g_cas_gen += 1
