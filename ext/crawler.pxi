# crawler.pxi -- the LRU crawler: expired and flushed items reclaimed in the
# background, so curr_items and memory go down without anyone asking for them.
#
# memcached's crawler is a thread that walks an LRU from its tail one item at a
# time; its LRU maintainer decides, once a second, which classes are worth a
# crawl. Here a crawl walks each shard's hash table, a few hundred buckets per
# hold of the shard's lock, and takes the items of the LRUs it was asked for
# (crawler_crawl_shard; with `lru_crawler tocrawl` set, each LRU from its tail
# as far as that limit), and the decision is memcached's own schedule, run by the acceptor
# thread once a second (crawler_check), for each LRU (a class's HOT, WARM or
# COLD list) on its own, as memcached schedules each of its LRUs:
#   * every LRU is crawled as soon as the daemon starts;
#   * a crawl records, for the items it leaves, how many never expire and how
#     many expire in each of the next 60 minutes;
#   * the next crawl of the LRU comes 60 s sooner when 1% of its items will
#     have expired well within the current wait, 60 s later when none will
#     (never more than an hour apart), plus 5 s.
# `lru_crawler crawl <classes>` runs the same walk at once, outside the
# schedule; `lru_crawler metadump/mgdump` walk with proto_admin.pxi's writer.
# Counted as memcached counts: crawler_reclaimed, crawler_items_checked and
# expired_unfetched per class; lru_crawler_starts once per crawl started; each
# planned crawl is a `watch sysevents` line, as is each slab page moved.

cdef enum:
    CRAWL_HISTO = 61            # minutes 0..60 of remaining TTL
    MAX_MAINTCRAWL_WAIT = 3600
    CRAWL_BUCKETS_PER_HOLD = 256  # hash buckets walked per hold of a shard lock

cdef struct crawler_class_t:
    uint64_t seen               # live items the last crawl left
    uint64_t noexp              # ...of which never expire
    uint64_t histo[CRAWL_HISTO] # ...expiring in minute x from then
    uint64_t reclaimed          # what the last crawl took
    rel_time_t start_time
    rel_time_t end_time
    rel_time_t next_crawl       # when this LRU is due
    rel_time_t wait             # current spacing of its crawls
    bint run_complete           # a crawl finished and the next is not planned yet

# Schedule state: only the acceptor thread touches it. g_crawler_lock keeps a
# manual crawl and a scheduled one from walking at the same time.
cdef crawler_class_t g_crawler[MAX_SLAB_CLASSES * 4]     # [lru_idx(class, segment)]
cdef pthread_mutex_t g_crawler_lock

cdef void crawler_init() noexcept nogil:
    memset(g_crawler, 0, sizeof(g_crawler))
    pthread_mutex_init(&g_crawler_lock, NULL)

# Walk segment `seg` of class `id` in every shard from the tail; reclaim what
# is dead and, when `cs` is given, record what is left for the schedule. At
# most `tocrawl` items per shard (0: all).
cdef void crawler_crawl_lru(int id, int seg, uint32_t tocrawl, crawler_class_t* cs) noexcept nogil:
    cdef int i
    cdef shard_t* s
    cdef item_t* it
    cdef item_t* prev
    cdef rel_time_t now
    cdef uint32_t budget
    cdef bint flushed
    cdef lock_hold_t t0
    for i in range(g_nshards):
        s = &g_shards[i]
        t0 = lockstat_lock(&s.lock)
        now = current_time()
        it = s.tails[lru_idx(id, seg)]
        budget = tocrawl
        while it != NULL:
            if tocrawl:
                if budget == 0:
                    break
                budget -= 1
            prev = it.prev
            s.lru[id].crawler_items_checked += 1
            flushed = item_dead(it, now) == ITEM_FLUSHED
            # the crawler takes an item once its exptime has passed (a lookup
            # already at the exptime second, as memcached)
            if (flushed or (it.exptime != 0 and it.exptime < now)) and \
                    not item_busy(it):
                s.lru[id].crawler_reclaimed += 1
                if not flushed and (it.it_flags & ITEM_FETCHED) == 0:
                    s.lru[id].expired_unfetched += 1
                do_item_unlink(s, it)
                if cs != NULL:
                    cs.reclaimed += 1
            elif cs != NULL:
                cs.seen += 1
                if it.exptime == 0:
                    cs.noexp += 1
                elif it.exptime - now <= 3599 and (it.exptime - now) // 60 < CRAWL_HISTO:
                    cs.histo[(it.exptime - now) // 60] += 1
            it = prev
        lockstat_unlock(&s.lock, LK_CRAWLER, t0)

# Walk every item of shard i whose LRU is selected in todo[lru_idx(class,
# segment)] through the shard's hash table, CRAWL_BUCKETS_PER_HOLD buckets per
# hold of its lock: a walk of a whole LRU under one hold held a shard of a
# million-key cache for 6 ms of CPU (and, preempted on a shared CPU, for up to
# 650 ms), so a worker needing it stalled that long. A bucket index stays valid
# between holds as long as the table keeps its size; a doubling in progress is
# helped along first (as the maintainer does), and one that started since the
# last hold makes the walk start over (rare: a doubling needs 0.75 x the table's
# size in new items). Dead items are reclaimed and, with `record`, what is left
# is recorded for each LRU's schedule. Same items, same counters as a walk of
# each selected LRU from its tail; only the order differs.
cdef void crawler_crawl_shard(int i, bint* todo, bint record) noexcept nogil:
    cdef shard_t* s = &g_shards[i]
    cdef uint64_t b = 0
    cdef uint64_t end
    cdef uint64_t n
    cdef uint32_t hp = 0
    cdef item_t** pos
    cdef item_t* it
    cdef int x
    cdef int id
    cdef rel_time_t now
    cdef bint flushed
    cdef crawler_class_t* cs
    cdef lock_hold_t t0
    while True:
        t0 = lockstat_lock(&s.lock)
        if s.old_buckets != NULL:
            assoc_expand_step(s, ASSOC_MOVE_PER_HOLD)
            lockstat_unlock(&s.lock, LK_CRAWLER, t0)
            continue
        if hp != s.hashpower:
            b = 0
            hp = s.hashpower
        n = <uint64_t>1 << hp
        end = b + CRAWL_BUCKETS_PER_HOLD
        if end > n:
            end = n
        now = current_time()
        while b < end:
            pos = &s.buckets[b]
            while pos[0] != NULL:
                it = assoc_ptr(pos[0])
                id = it.slabs_clsid
                x = lru_idx(id, item_seg(it))
                if not todo[x]:
                    pos = &it.h_next
                    continue
                cs = &g_crawler[x] if record else NULL
                s.lru[id].crawler_items_checked += 1
                flushed = item_dead(it, now) == ITEM_FLUSHED
                if (flushed or (it.exptime != 0 and it.exptime < now)) and \
                        not item_busy(it):
                    s.lru[id].crawler_reclaimed += 1
                    if not flushed and (it.it_flags & ITEM_FETCHED) == 0:
                        s.lru[id].expired_unfetched += 1
                    do_item_unlink(s, it)       # pos[0] is now the next item
                    if cs != NULL:
                        cs.reclaimed += 1
                    continue
                if cs != NULL:
                    cs.seen += 1
                    if it.exptime == 0:
                        cs.noexp += 1
                    elif it.exptime - now <= 3599 and (it.exptime - now) // 60 < CRAWL_HISTO:
                        cs.histo[(it.exptime - now) // 60] += 1
                pos = &it.h_next
            b += 1
        lockstat_unlock(&s.lock, LK_CRAWLER, t0)
        if b >= n:
            return

# Crawl the LRUs selected in todo[] (and record them when `record`): through
# the hash tables in short holds, or, with `lru_crawler tocrawl` set, from
# each LRU's tail as far as that limit (a bounded walk anyway).
cdef void crawler_crawl(bint* todo, bint record) noexcept nogil:
    cdef int i
    cdef int id
    cdef int seg
    if g_settings.lru_crawler_tocrawl:
        for seg in range(lru_nsegs()):
            for id in range(1, MAX_SLAB_CLASSES):
                if todo[lru_idx(id, seg)]:
                    crawler_crawl_lru(id, seg, g_settings.lru_crawler_tocrawl,
                                      &g_crawler[lru_idx(id, seg)] if record else NULL)
        return
    for i in range(g_nshards):
        crawler_crawl_shard(i, todo, record)

# `lru_crawler crawl`: the selected classes now. False when a crawl is running.
cdef bint crawler_crawl_now(bint* sel) noexcept nogil:
    cdef int id
    cdef int seg
    cdef bint todo[MAX_SLAB_CLASSES * 4]
    if pthread_mutex_trylock(&g_crawler_lock) != 0:
        return False
    mc_fetch_add_u64(&g_lru_crawler_starts, 1)
    memset(todo, 0, sizeof(todo))
    for id in range(1, MAX_SLAB_CLASSES):
        if sel[id]:
            for seg in range(lru_nsegs()):
                todo[lru_idx(id, seg)] = True
    crawler_crawl(todo, False)
    pthread_mutex_unlock(&g_crawler_lock)
    return True

# Plan the next crawl of an LRU from what its last one saw (memcached's
# lru_maintainer_crawler_check), and say so to `watch sysevents`.
cdef void crawler_plan(crawler_class_t* cs, rel_time_t now, int id, int seg) noexcept nogil:
    cdef char body[400]
    cdef int n
    cdef uint64_t low_watermark = (cs.seen - cs.noexp) // 100 + 1
    cdef uint64_t available = 0
    cdef int x
    for x in range(60):
        available += cs.histo[x]
        if available > low_watermark:
            if cs.wait < <rel_time_t>(x * 60):
                cs.wait += 60
            elif cs.wait >= 60:
                cs.wait -= 60
            break
    if available == 0:
        cs.wait += 60
    if cs.wait > MAX_MAINTCRAWL_WAIT:
        cs.wait = MAX_MAINTCRAWL_WAIT
    cs.next_crawl = now + cs.wait + 5
    cs.run_complete = False
    if logger_wants(LOG_SYSEVENTS):
        n = snprintf(body, sizeof(body),
                     b"type=lru_crawler crawler=%d lru=%s low_mark=%llu next_reclaims=%llu "
                     b"since_run=%u next_run=%d elapsed=%u examined=%llu reclaimed=%llu",
                     id, b"hot" if seg == SEG_HOT else (b"warm" if seg == SEG_WARM else b"cold"),
                     <unsigned long long>low_watermark,
                     <unsigned long long>available, <unsigned>(now - cs.end_time),
                     <int>(cs.next_crawl - now), <unsigned>(cs.end_time - cs.start_time),
                     <unsigned long long>cs.seen, <unsigned long long>cs.reclaimed)
        logger_emit(LOG_SYSEVENTS, body, <size_t>n)

# Once a second (acceptor thread): crawl every LRU that is due.
cdef void crawler_check() noexcept nogil:
    cdef int id
    cdef int seg
    cdef int x
    cdef rel_time_t now = current_time()
    cdef bint todo[MAX_SLAB_CLASSES * 4]
    cdef bint any_due = False
    cdef crawler_class_t* cs
    # scheduled by the LRU maintainer, as in memcached (-o no_lru_maintainer: manual only)
    if not g_settings.lru_crawler or not g_settings.lru_maintainer:
        return
    memset(todo, 0, sizeof(todo))
    # LRU by LRU in memcached's order: every class's HOT, then WARM, then COLD
    # (then TEMP with -o temp_lru)
    for seg in range(lru_nsegs()):
        for id in range(1, MAX_SLAB_CLASSES):
            x = lru_idx(id, seg)
            cs = &g_crawler[x]
            if cs.run_complete:
                crawler_plan(cs, now, id, seg)
            todo[x] = now > cs.next_crawl
            if todo[x]:
                cs.next_crawl = now + 5     # minimum retry wait
                any_due = True
    if not any_due or pthread_mutex_trylock(&g_crawler_lock) != 0:
        return
    mc_fetch_add_u64(&g_lru_crawler_starts, 1)
    for x in range(MAX_SLAB_CLASSES * 4):
        if todo[x]:
            cs = &g_crawler[x]
            cs.seen = 0
            cs.noexp = 0
            cs.reclaimed = 0
            memset(cs.histo, 0, sizeof(cs.histo))
            cs.start_time = current_time()
    crawler_crawl(todo, True)
    for x in range(MAX_SLAB_CLASSES * 4):
        if todo[x]:
            cs = &g_crawler[x]
            cs.end_time = current_time()
            cs.run_complete = True
    pthread_mutex_unlock(&g_crawler_lock)
