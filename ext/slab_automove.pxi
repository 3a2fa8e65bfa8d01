# slab_automove.pxi -- `slabs automove 1`: memcached's windowed page mover policy.
#
# Once a second (more often while it is reclaiming, see below) the automover
# looks at every class over the last `slab_automove_window` looks:
#   * a class with more than 2.5 pages of free chunks whose window is clean
#     (no eviction, no out-of-memory, no new page in it) gives one page to the
#     global page pool (dst 0), where any class can take it (slabs.pxi);
#   * otherwise, once the window has filled, the class with the youngest COLD
#     tail that evicts steadily (in more than half the window, or more than a
#     quarter of all evictions) takes a page from the class with the oldest
#     COLD tail having more than 2 pages, if the youngest age is below
#     slab_automove_ratio times the oldest.
# A reclaim decision asks for the next look at once rather than a second
# later, as memcached's maintainer does, so emptied classes drain quickly.
#
# Runs only in the acceptor thread; the window lives here and is touched by
# nothing else. It reads the slab counters under g_slabs_lock and the LRU
# counters through lru_stats_aggregate (shard locks).

from libc.stdlib cimport calloc, free

cdef struct automove_window_t:
    uint64_t age
    uint64_t dirty
    double evicted_ratio
    uint64_t evicted_seen

cdef automove_window_t* g_am_window = NULL
cdef uint32_t g_am_window_size = 0
cdef uint64_t g_am_window_cur = 0
cdef bint g_am_primed = False
cdef uint64_t g_am_evicted_before[MAX_SLAB_CLASSES]
cdef uint64_t g_am_oom_before[MAX_SLAB_CLASSES]
cdef uint64_t g_am_pages_before[MAX_SLAB_CLASSES]
cdef bint g_automove_hurry = False      # a reclaim was asked: look again at once

cdef void slab_automove_free() noexcept nogil:
    global g_am_window, g_am_window_size, g_am_primed, g_am_window_cur
    free(g_am_window)
    g_am_window = NULL
    g_am_window_size = 0
    g_am_window_cur = 0
    g_am_primed = False

# Snapshot the counters the policy compares from one look to the next.
cdef void am_fill(uint64_t* evicted, uint64_t* oom, uint64_t* pages,
                  uint64_t* free_chunks, uint64_t* perslab) noexcept nogil:
    cdef lru_stats_t lru[MAX_SLAB_CLASSES]
    cdef uint64_t hb
    cdef int i
    lru_stats_aggregate(lru, &hb)
    pthread_mutex_lock(&g_slabs_lock)
    for i in range(MAX_SLAB_CLASSES):
        evicted[i] = lru[i].evicted
        oom[i] = lru[i].outofmemory
        pages[i] = g_slabclass[i].slabs
        free_chunks[i] = g_slabclass[i].sl_curr + g_slabclass[i].end_page_free + slabs_stashed(i)
        perslab[i] = g_slabclass[i].perslab
    pthread_mutex_unlock(&g_slabs_lock)

# One look; sets src/dst (-1 when nothing should move).
cdef void slab_automove_run(int* src, int* dst) noexcept nogil:
    global g_am_window, g_am_window_size, g_am_window_cur, g_am_primed
    cdef uint64_t evicted[MAX_SLAB_CLASSES]
    cdef uint64_t oom[MAX_SLAB_CLASSES]
    cdef uint64_t pages[MAX_SLAB_CLASSES]
    cdef uint64_t free_chunks[MAX_SLAB_CLASSES]
    cdef uint64_t perslab[MAX_SLAB_CLASSES]
    cdef uint32_t wsize = g_settings.slab_automove_window
    cdef uint64_t evicted_total = 0
    cdef uint64_t evicted_delta
    cdef automove_window_t* wd
    cdef automove_window_t w_sum
    cdef uint64_t age
    cdef int oldest = -1
    cdef uint64_t oldest_age = 0
    cdef int youngest = -1
    cdef uint64_t youngest_age = <uint64_t>-1
    cdef bint youngest_evicting = False
    cdef int n
    cdef uint32_t x
    src[0] = -1
    dst[0] = -1
    if wsize < 1:
        wsize = 1
    if g_am_window == NULL or g_am_window_size != wsize:
        free(g_am_window)
        g_am_window = <automove_window_t*>calloc(<size_t>wsize * MAX_SLAB_CLASSES,
                                                  sizeof(automove_window_t))
        if g_am_window == NULL:
            g_am_window_size = 0
            return
        g_am_window_size = wsize
        g_am_window_cur = 0
        g_am_primed = False
    am_fill(evicted, oom, pages, free_chunks, perslab)
    if not g_am_primed:
        # the first look only records where the counters start
        memcpy(g_am_evicted_before, evicted, sizeof(evicted))
        memcpy(g_am_oom_before, oom, sizeof(oom))
        memcpy(g_am_pages_before, pages, sizeof(pages))
        g_am_primed = True
        return
    for n in range(1, MAX_SLAB_CLASSES):
        evicted_total += evicted[n] - g_am_evicted_before[n]
    g_am_window_cur += 1
    for n in range(1, MAX_SLAB_CLASSES):
        wd = &g_am_window[<size_t>n * wsize + g_am_window_cur % wsize]
        memset(wd, 0, sizeof(automove_window_t))
        evicted_delta = evicted[n] - g_am_evicted_before[n]
        if evicted_delta > 0:
            wd.evicted_ratio = <double>evicted_delta / <double>evicted_total
            wd.evicted_seen = 1
            wd.dirty = 1
        if oom[n] > g_am_oom_before[n]:
            wd.dirty = 1
        if pages[n] > g_am_pages_before[n]:
            wd.dirty = 1
        wd.age = mc_load_u32(&g_cold_age[n]) if n < LRU_CLASSES else 0
        memset(&w_sum, 0, sizeof(automove_window_t))
        for x in range(wsize):
            w_sum.age += g_am_window[<size_t>n * wsize + x].age
            w_sum.dirty += g_am_window[<size_t>n * wsize + x].dirty
            w_sum.evicted_ratio += g_am_window[<size_t>n * wsize + x].evicted_ratio
            w_sum.evicted_seen += g_am_window[<size_t>n * wsize + x].evicted_seen
        age = w_sum.age / wsize
        if <double>free_chunks[n] > <double>perslab[n] * 2.5 and w_sum.dirty == 0 \
                and n <= g_power_largest:
            src[0] = n
            dst[0] = 0
            youngest = -1
            oldest = -1
            break
        if age > oldest_age and pages[n] > 2 and n <= g_power_largest:
            oldest = n
            oldest_age = age
        if age < youngest_age and (w_sum.evicted_seen > wsize / 2 or
                                   w_sum.evicted_ratio / wsize > 0.25) and n <= g_power_largest:
            youngest = n
            youngest_age = age
            youngest_evicting = wd.evicted_seen != 0
    memcpy(g_am_evicted_before, evicted, sizeof(evicted))
    memcpy(g_am_oom_before, oom, sizeof(oom))
    memcpy(g_am_pages_before, pages, sizeof(pages))
    if youngest != -1 and oldest != -1 and g_am_window_cur > wsize:
        if <double>youngest_age < <double>oldest_age * g_settings.slab_automove_ratio \
                and youngest_evicting:
            src[0] = oldest
            dst[0] = youngest

# The acceptor's automove step for `slabs automove 1`.
cdef void slab_automove_tick() noexcept nogil:
    global g_automove_hurry
    cdef int src
    cdef int dst
    cdef char body[96]
    cdef int n
    g_automove_hurry = False
    if not g_settings.slab_reassign or g_settings.slab_automove != 1:
        return
    slab_automove_run(&src, &dst)
    if src != -1 and dst != -1:
        slabs_reassign(src, dst)
        if logger_wants(LOG_SYSEVENTS):
            n = snprintf(body, sizeof(body), b"type=slab_move src=%d dst=%d", src, dst)
            logger_emit(LOG_SYSEVENTS, body, <size_t>n)
    if dst == 0:
        g_automove_hurry = True
