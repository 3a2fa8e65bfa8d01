# lru.pxi -- the segmented LRU (HOT, WARM, COLD), bumps and eviction.
#
# Each shard keeps three doubly linked lists per slab class, newest at the
# head, with memcached's rules for moving between them:
#   * a new item goes to HOT (to COLD with -o no_lru_segmented);
#   * a hit does not relink (that would make every get a write to shared list
#     pointers): it marks the item FETCHED, and on a second hit ACTIVE and
#     refreshes its time; only an ACTIVE hit on a COLD item moves it, to WARM;
#   * the tails of HOT and WARM are kept to hot_lru_pct / warm_lru_pct of the
#     class's bytes and to hot_max_factor / warm_max_factor times the age of
#     COLD's tail: inactive items flow down to COLD, ACTIVE ones out of HOT into
#     WARM and round WARM again (lru_juggle);
#   * eviction takes the class's least recently used item over all shards
#     (below); expired or flushed items met on the way are reclaimed first.
# With -o temp_lru (temporary_ttl), an item whose TTL is at most
# temporary_ttl when it is stored goes to a fourth list, TEMP, as memcached's:
# never moved, never evicted, left out of the HOT/WARM sizes; its expired
# items are reclaimed by the maintainer's pass, the crawler and lookups.
#
# memcached does the juggling in a background "LRU maintainer" thread; here
# it runs inline, a few moves per item linked, under the shard lock the store
# already holds, so the lists never drift far from their limits; and the
# acceptor thread runs memcached's maintainer schedule (lru_maintainer_tick):
# each class has its own next juggle and backoff (1 ms .. 1 s, longer by an
# eighth after a juggle that moved nothing, halved after one that moved, 0
# below 1 ms), a wake-up juggles only the classes due, and the acceptor sleeps
# until the earliest one. So under load it wakes about as often as memcached's
# mc-lrumaint thread (hundreds of times a second) and once a second when idle.
# A juggle of a class reads the class-wide sizes and COLD ages that the shards
# publish (lock-free, below) and locks only the shards holding items of it.
#
# Eviction order is the class's, not the shard's. memcached keeps one LRU per
# class and evicts its tail; here each shard publishes, per class, the age key
# of the older of its HOT and COLD tails (g_lru_tailkey: item time in seconds,
# then the low bits of its CAS, which orders stores within a second), and a
# store that must free memory evicts from the shard whose key is the oldest:
# a scan of g_nshards words, only when the class is full. An inactive HOT tail
# older than every COLD item is evicted as memcached's maintainer would have
# moved it to COLD first (its moves are in LRU order; ours run per shard).
# The keys are written under each shard's lock and read without it: a stale
# key costs a worse choice, never memory safety (the chosen shard is locked
# and its lists read under the lock).
#
# Caller holds the shard lock. lru_pull_tail() may also take *other* shards'
# locks, but only with trylock, so shard locks never deadlock.

cdef enum:
    SEG_HOT = 0
    SEG_WARM = 1
    SEG_COLD = 2
    SEG_TEMP = 3
    LRU_CLASSES = 66
    LRU_TRIES = 5          # tail items looked at per pull, as memcached
    LRU_PICK_TRIES = 4     # shards an eviction tries, oldest first (lru_pull_tail)
    JUGGLE_ROUNDS = 4      # HOT+WARM pulls per item linked
    MAINTAINER_ROUNDS = 500  # per class and pass of lru_maintainer_run, as memcached
    MAINTAINER_ROUNDS_PER_HOLD = 20  # ...taken in steps this long, the shard lock let go
                                     # between them (a whole pass held it for up to 4 ms)
    SHARD_LIMIT_MIN_ITEMS = 32  # items of a class a shard needs to apply size limits alone

    MAINT_SLEEP_MIN_US = 1000       # memcached's MIN_LRU_MAINTAINER_SLEEP
    MAINT_SLEEP_MAX_US = 1000000    # memcached's MAX_LRU_MAINTAINER_SLEEP
    # A class juggled often (backoff under MAINT_SWEEP_ALL_US) is juggled in at most
    # MAINT_SHARDS_PER_WAKE of its shards per wake-up, the next ones the next time:
    # memcached juggles one list per class and wake-up, here a class has one per shard,
    # and all 64 at ~1,000 wake-ups a second cost ~26 us each (perf: the tails' cache
    # misses, the locks' lines, two clock reads per hold). Each list is then still
    # looked at every few milliseconds, and a store juggles its own list inline.
    MAINT_SHARDS_PER_WAKE = 8
    MAINT_SWEEP_ALL_US = 64000

# Age of the oldest COLD item of each class over all shards, refreshed by
# each juggle of the class: HOT's and WARM's age limits follow it, as in memcached
# (a shard's own COLD tail says little when a shard holds a few items of a class).
cdef rel_time_t g_cold_age[LRU_CLASSES]
cdef uint64_t g_lru_maintainer_juggles = 0     # maintainer wake-ups (stats)

# The maintainer's schedule, per class, in microseconds (acceptor thread only).
cdef uint32_t g_maint_next[LRU_CLASSES]       # until the class's next juggle
cdef uint32_t g_maint_backoff[LRU_CLASSES]    # its current backoff
cdef int g_maint_cursor[LRU_CLASSES]          # the shard its next juggle starts at

# [class * g_nshards + shard]: age key of the shard's oldest HOT/COLD tail of
# the class, LRU_KEY_NONE when both are empty (allocated by store_init).
cdef uint64_t* g_lru_tailkey = NULL
# [class * g_nshards + shard]: time of the shard's COLD tail of the class, 0
# when COLD is empty; written with the tail key (only when a tail changes).
cdef uint32_t* g_lru_coldtime = NULL

from libc.stdint cimport UINT64_MAX as LRU_KEY_NONE

# Older items have smaller keys: last access second, then store order.
cdef inline uint64_t lru_key(item_t* it) noexcept nogil:
    return (<uint64_t>it.time << 32) | (it.cas & <uint64_t>0xFFFFFFFF)

# The key the shard should publish for class `id` (caller holds its lock).
cdef inline uint64_t lru_tail_key_of(shard_t* s, int id) noexcept nogil:
    cdef item_t* h = s.tails[lru_idx(id, SEG_HOT)]
    cdef item_t* c = s.tails[lru_idx(id, SEG_COLD)]
    cdef uint64_t key = LRU_KEY_NONE
    if h != NULL:
        key = lru_key(h)
    if c != NULL and lru_key(c) < key:
        key = lru_key(c)
    return key

# Refresh the shard's published key for class `id` (caller holds its lock).
# Out of line: called only when a tail changes, it keeps link/unlink small.
cdef void lru_publish(shard_t* s, int id) noexcept nogil:
    cdef uint64_t key = lru_tail_key_of(s, id)
    cdef size_t x = <size_t>id * <size_t>g_nshards + <size_t>(s - g_shards)
    cdef uint64_t* slot = &g_lru_tailkey[x]
    cdef item_t* c = s.tails[lru_idx(id, SEG_COLD)]
    cdef uint32_t ct = c.time if c != NULL else 0
    if mc_load_u64(slot) != key:
        mc_store_u64(slot, key)
    if mc_load_u32(&g_lru_coldtime[x]) != ct:
        mc_store_u32(&g_lru_coldtime[x], ct)

# The item counters of a shard's class are read by the maintainer without the
# shard lock (lru_maintainer_juggle): their writers (under the lock) store them
# atomically, which costs nothing over a plain store (a relaxed mov).
cdef inline void lru_count(shard_t* s, int id, int seg, int64_t n, int64_t nbytes) noexcept nogil:
    cdef lru_stats_t* st = &s.lru[id]
    mc_store_u64(&st.number, st.number + <uint64_t>n)
    st.seg_number[seg] += <uint64_t>n
    mc_store_u64(&st.seg_bytes[seg], st.seg_bytes[seg] + <uint64_t>nbytes)

# How many segments the crawler and dumps walk: TEMP only with temp_lru.
cdef inline int lru_nsegs() noexcept nogil:
    return SEG_TEMP + 1 if g_settings.temp_lru else SEG_COLD + 1

cdef inline int item_seg(item_t* it) noexcept nogil:
    return (it.it_flags & ITEM_SEG_MASK) >> ITEM_SEG_SHIFT

# A class's four heads (and its four tails) are neighbours in the shard's
# arrays, so a store that links, juggles and unlinks in one class touches one
# line of heads and one of tails rather than three of each (bench/README.md,
# cache misses: 11 % fewer D1 misses per request at 10k keys).
cdef inline int lru_idx(int id, int seg) noexcept nogil:
    return id * 4 + seg

cdef inline void lru_link_seg(shard_t* s, item_t* it, int seg) noexcept nogil:
    cdef int id = it.slabs_clsid
    cdef int x = lru_idx(id, seg)
    it.it_flags = <uint16_t>((it.it_flags & ~ITEM_SEG_MASK) | (seg << ITEM_SEG_SHIFT))
    it.prev = NULL
    it.next = s.heads[x]
    if it.next != NULL:
        it.next.prev = it
    s.heads[x] = it
    lru_count(s, id, seg, 1, <int64_t>ITEM_ntotal(it))
    if s.tails[x] == NULL:
        s.tails[x] = it
        if seg == SEG_HOT or seg == SEG_COLD:
            lru_publish(s, id)

# Link at the tail: an item older than everything in the segment.
cdef inline void lru_link_seg_tail(shard_t* s, item_t* it, int seg) noexcept nogil:
    cdef int id = it.slabs_clsid
    cdef int x = lru_idx(id, seg)
    if s.tails[x] == NULL:
        lru_link_seg(s, it, seg)
        return
    it.it_flags = <uint16_t>((it.it_flags & ~ITEM_SEG_MASK) | (seg << ITEM_SEG_SHIFT))
    it.next = NULL
    it.prev = s.tails[x]
    it.prev.next = it
    s.tails[x] = it
    lru_count(s, id, seg, 1, <int64_t>ITEM_ntotal(it))
    if seg == SEG_HOT or seg == SEG_COLD:
        lru_publish(s, id)

cdef inline void lru_unlink(shard_t* s, item_t* it) noexcept nogil:
    cdef int id = it.slabs_clsid
    cdef int seg = item_seg(it)
    cdef int x = lru_idx(id, seg)
    cdef bint was_tail = s.tails[x] == it
    if s.heads[x] == it:
        s.heads[x] = it.next
    if was_tail:
        s.tails[x] = it.prev
    if it.next != NULL:
        it.next.prev = it.prev
    if it.prev != NULL:
        it.prev.next = it.next
    it.next = NULL
    it.prev = NULL
    lru_count(s, id, seg, -1, -<int64_t>ITEM_ntotal(it))
    if was_tail and (seg == SEG_HOT or seg == SEG_COLD):
        lru_publish(s, id)

# A newly stored item. memcached picks TEMP by the TTL left when the item is
# allocated, in unsigned arithmetic (no TTL, or one already past: not TEMP).
cdef inline void lru_link(shard_t* s, item_t* it) noexcept nogil:
    if MC_UNLIKELY(g_settings.temp_lru) and \
            <rel_time_t>(it.exptime - current_time()) <= <rel_time_t>g_settings.temporary_ttl:
        lru_link_seg(s, it, SEG_TEMP)
    elif g_settings.lru_segmented:
        lru_link_seg(s, it, SEG_HOT)
        lru_juggle(s, it.slabs_clsid)
    else:
        lru_link_seg(s, it, SEG_COLD)

# A new access time for a linked item; a tail's key is published again.
cdef inline void lru_touch_time(shard_t* s, item_t* it, rel_time_t now) noexcept nogil:
    it.time = now
    if it.next == NULL and (item_seg(it) == SEG_HOT or item_seg(it) == SEG_COLD):
        lru_publish(s, it.slabs_clsid)

# A linked item got a new CAS (meta E, md I): a tail's key is published again.
cdef inline void lru_cas_changed(shard_t* s, item_t* it) noexcept nogil:
    if (it.it_flags & ITEM_LINKED) and it.next == NULL and \
            (item_seg(it) == SEG_HOT or item_seg(it) == SEG_COLD):
        lru_publish(s, it.slabs_clsid)

# An ACTIVE item in COLD goes to WARM (memcached's do_item_update).
cdef inline void lru_cold_to_warm(shard_t* s, item_t* it) noexcept nogil:
    it.time = current_time()
    lru_unlink(s, it)
    it.it_flags &= ~ITEM_ACTIVE
    lru_link_seg(s, it, SEG_WARM)
    s.lru[it.slabs_clsid].moves_to_warm += 1

# Mark a hit, as memcached's do_item_bump does.
cdef inline void lru_bump(shard_t* s, item_t* it) noexcept nogil:
    cdef int seg = item_seg(it)
    if (it.it_flags & ITEM_ACTIVE) == 0:
        if (it.it_flags & ITEM_FETCHED) == 0:
            it.it_flags |= ITEM_FETCHED
        else:
            it.it_flags |= ITEM_ACTIVE
            if seg == SEG_COLD and g_settings.lru_segmented:
                lru_cold_to_warm(s, it)
            else:
                lru_touch_time(s, it, current_time())

# An explicit update (add on an existing key, touch): refresh the time; with
# the segmented LRU an ACTIVE item in COLD moves to WARM, without it the item
# goes to the head at most once per ITEM_UPDATE_INTERVAL.
cdef inline void lru_update(shard_t* s, item_t* it) noexcept nogil:
    cdef rel_time_t now = current_time()
    if g_settings.lru_segmented:
        if item_seg(it) == SEG_COLD and (it.it_flags & ITEM_ACTIVE):
            lru_cold_to_warm(s, it)
        else:
            lru_touch_time(s, it, now)
        return
    if it.time < now - ITEM_UPDATE_INTERVAL or it.time > now:
        lru_unlink(s, it)
        lru_link_seg(s, it, SEG_COLD)
    lru_touch_time(s, it, now)

cdef inline void lru_count_eviction(shard_t* s, item_t* it, rel_time_t now) noexcept nogil:
    cdef int id = it.slabs_clsid
    s.lru[id].evicted += 1
    s.lru[id].evicted_time = now - it.time
    if it.exptime != 0:
        s.lru[id].evicted_nonzero += 1
    if (it.it_flags & ITEM_FETCHED) == 0:
        s.lru[id].evicted_unfetched += 1
    if it.it_flags & ITEM_ACTIVE:
        s.lru[id].evicted_active += 1
    if logger_wants(LOG_EVICTIONS):
        log_eviction(it)
    slabs_automove_on_eviction(id)

# memcached's lru_pull_tail for one segment of class `id` in this shard.
# HOT/WARM: an ACTIVE tail item is rescued (HOT -> WARM, WARM -> WARM's head);
# an inactive one goes to COLD if the segment is over its share of
# `total_bytes` or older than `max_age`. COLD: the tail item is evicted
# (unless -M, or `evict` is false: then an ACTIVE tail item goes back to WARM,
# as the maintainer's pull of COLD does). Expired and flushed items met at a
# tail are reclaimed (unless `reclaim` is false). Returns how many items were
# removed or moved.
cdef int lru_pull_tail_seg(shard_t* s, int id, int seg, uint64_t total_bytes,
                           rel_time_t max_age, bint reclaim=True,
                           uint64_t* gbytes=NULL, bint use_limit=True,
                           bint evict=True) noexcept nogil:
    cdef int x = lru_idx(id, seg)
    cdef item_t* it = s.tails[x]
    cdef item_t* prev
    cdef rel_time_t now = current_time()
    cdef int tries = LRU_TRIES
    cdef int removed = 0
    cdef uint64_t limit = 0
    while it != NULL and tries > 0:
        tries -= 1
        prev = it.prev
        if it.it_flags & ITEM_PINNED:
            it = prev
            continue
        if item_chunked(it) and ITEM_chain(it).refcount != 0:
            # memcached's lru_pull_tail counts a referenced tail item and
            # goes on as usual: evicting unlinks it, its memory comes back
            # when the reply holding it is out (store.pxi do_item_unlink)
            s.lru[id].lrutail_reflocked += 1
        if reclaim and item_dead(it, now):
            s.lru[id].reclaimed += 1
            if (it.it_flags & ITEM_FETCHED) == 0:
                s.lru[id].expired_unfetched += 1
            if gbytes != NULL:
                gbytes[seg] -= ITEM_ntotal(it)
            do_item_unlink(s, it)
            removed += 1
            it = prev
            continue
        if seg == SEG_TEMP:
            break               # only reclaims: TEMP items are never moved or evicted
        if seg == SEG_COLD:
            if not evict:
                if it.it_flags & ITEM_ACTIVE and g_settings.lru_segmented:
                    it.it_flags &= ~ITEM_ACTIVE
                    if gbytes != NULL:
                        gbytes[SEG_COLD] -= ITEM_ntotal(it)
                        gbytes[SEG_WARM] += ITEM_ntotal(it)
                    lru_unlink(s, it)
                    s.lru[id].moves_to_warm += 1
                    lru_link_seg(s, it, SEG_WARM)
                    removed += 1
            elif g_settings.evict_to_free:
                lru_count_eviction(s, it, now)
                do_item_unlink(s, it)
                removed += 1
            break
        if seg == SEG_HOT:
            limit = total_bytes * g_settings.hot_lru_pct // 100
        if limit == 0:
            limit = total_bytes * g_settings.warm_lru_pct // 100
        if it.it_flags & ITEM_ACTIVE:
            it.it_flags &= ~ITEM_ACTIVE
            removed += 1
            if gbytes != NULL and seg == SEG_HOT:
                gbytes[SEG_HOT] -= ITEM_ntotal(it)
                gbytes[SEG_WARM] += ITEM_ntotal(it)
            lru_unlink(s, it)
            if seg == SEG_WARM:
                s.lru[id].moves_within_lru += 1
            else:
                s.lru[id].moves_to_warm += 1
            lru_link_seg(s, it, SEG_WARM)
            if seg == SEG_WARM:
                it = prev
                continue
            break
        if (use_limit and (gbytes[seg] if gbytes != NULL else s.lru[id].seg_bytes[seg]) > limit) \
                or now - it.time > max_age:
            if gbytes != NULL:
                gbytes[seg] -= ITEM_ntotal(it)
                gbytes[SEG_COLD] += ITEM_ntotal(it)
            lru_unlink(s, it)
            lru_link_seg(s, it, SEG_COLD)
            s.lru[id].moves_to_cold += 1
            removed += 1
        break
    return removed

# Keep HOT and WARM of class `id` within their limits (memcached's
# lru_maintainer_juggle, a few rounds at a time).
# The size limits are memcached's, over a class's bytes in all shards: the
# maintainer passes the class-wide sizes (`gbytes`, `gtotal`); an inline juggle
# applies them to its shard alone only once the shard holds enough items of the
# class for its own shares to mean the same (below that, only the age limits).
# Returns the rounds run: fewer than `rounds` when the lists were within their limits.
# `temp_reclaims`, when given, gets the TEMP items reclaimed added to it.
cdef int lru_juggle(shard_t* s, int id, int rounds=JUGGLE_ROUNDS, uint64_t* gbytes=NULL,
                    uint64_t gtotal=0, int* temp_reclaims=NULL) noexcept nogil:
    cdef lru_stats_t* st = &s.lru[id]
    cdef uint64_t total = st.seg_bytes[SEG_HOT] + st.seg_bytes[SEG_WARM] + st.seg_bytes[SEG_COLD]
    cdef bint use_limit = gbytes != NULL or st.number >= SHARD_LIMIT_MIN_ITEMS
    cdef item_t* cold_tail = s.tails[lru_idx(id, SEG_COLD)]
    cdef rel_time_t now = current_time()
    cdef rel_time_t cold_age = mc_load_u32(&g_cold_age[id])
    if cold_tail != NULL and now - cold_tail.time > cold_age:
        cold_age = now - cold_tail.time
    cdef rel_time_t hot_age = <rel_time_t>(cold_age * g_settings.hot_max_factor)
    cdef rel_time_t warm_age = <rel_time_t>(cold_age * g_settings.warm_max_factor)
    cdef int i
    # The maintainer's pass reclaims expired items it meets at the tails, as
    # memcached's maintainer thread does. The inline juggle only moves: its
    # caller may still be working with items of this shard.
    cdef bint reclaim = gbytes != NULL
    if reclaim and g_settings.temp_lru:
        # TEMP first and only for reclaims, as memcached's juggle (a step's
        # worth per hold, like the rest)
        for i in range(rounds):
            if lru_pull_tail_seg(s, id, SEG_TEMP, 0, 0) == 0:
                break
            if temp_reclaims != NULL:
                temp_reclaims[0] += 1
    if gbytes != NULL:
        total = gtotal
    cdef int moved
    for i in range(rounds):
        moved = lru_pull_tail_seg(s, id, SEG_HOT, total, hot_age, reclaim, gbytes, use_limit)
        if moved == 0:
            moved = lru_pull_tail_seg(s, id, SEG_WARM, total, warm_age, reclaim, gbytes, use_limit)
        # The maintainer also pulls COLD without evicting, as memcached's
        # juggle does: an expired item there is reclaimed before a store
        # would have to find it (memcached's t/issue_163.t counts on it).
        if reclaim:
            moved += lru_pull_tail_seg(s, id, SEG_COLD, total, 0, True, gbytes, use_limit, False)
        if moved == 0:
            return i
    return rounds

# memcached's lru_maintainer_juggle for class `id`: HOT and WARM within their
# limits, ACTIVE tails rescued, expired tails reclaimed, in every shard holding
# items of the class. Returns the rounds that moved something (with TEMP
# reclaims), which drives the class's backoff (lru_maintainer_tick).
# No lock held by the caller. The class-wide sizes and the COLD age come from
# what the shards publish (lru_count, lru_publish), read without their locks:
# memcached too reads them under a lock it lets go before juggling, so they are
# a snapshot either way; a shard with no item of the class is not locked at all.
# The juggling of one shard goes in steps of MAINTAINER_ROUNDS_PER_HOLD rounds,
# each under its own trylock: a worker waiting for the shard gets it between two
# steps (memcached's maintainer likewise takes its LRU lock per pull), and a
# shard busy serving is skipped until the class's next juggle.
# At most `max_shards` shards holding items of the class are juggled, from where
# the last juggle of the class stopped.
cdef int lru_maintainer_juggle(int id, int max_shards) noexcept nogil:
    cdef int i
    cdef int j
    cdef int k
    cdef int juggled = 0
    cdef int done
    cdef int ran
    cdef int moves = 0
    cdef int nshards = g_nshards
    cdef shard_t* s
    cdef lru_stats_t* st
    cdef rel_time_t now = current_time()
    cdef rel_time_t age = 0
    cdef uint32_t ct
    cdef uint64_t gbytes[3]
    cdef uint64_t gtotal
    cdef uint64_t have[4]          # shards with items of the class (at most 256)
    cdef uint32_t* coldtime = &g_lru_coldtime[<size_t>id * <size_t>nshards]
    cdef lock_hold_t t0
    if not g_settings.lru_segmented:
        return 0                # flat: everything is in COLD already, as memcached's
    gbytes[0] = 0
    gbytes[1] = 0
    gbytes[2] = 0
    memset(have, 0, sizeof(have))
    for i in range(nshards):
        st = &g_shards[i].lru[id]
        if mc_load_u64(&st.number) == 0:
            continue
        have[i >> 6] |= <uint64_t>1 << (i & 63)
        for k in range(3):
            gbytes[k] += mc_load_u64(&st.seg_bytes[k])
        ct = mc_load_u32(&coldtime[i])
        if ct != 0 and now - ct > age:
            age = now - ct
    mc_store_u32(&g_cold_age[id], age)
    gtotal = gbytes[0] + gbytes[1] + gbytes[2]
    if g_maint_cursor[id] >= nshards:
        g_maint_cursor[id] = 0
    for j in range(nshards):
        i = (g_maint_cursor[id] + j) % nshards
        if (have[i >> 6] >> (i & 63)) & 1 == 0:
            continue
        if juggled == max_shards:
            g_maint_cursor[id] = i
            break
        juggled += 1
        s = &g_shards[i]
        done = 0
        while done < MAINTAINER_ROUNDS:
            if pthread_mutex_trylock(&s.lock) != 0:
                break
            t0 = lockstat_begin_sampled()
            ran = 0
            if s.lru[id].number != 0:
                ran = lru_juggle(s, id, MAINTAINER_ROUNDS_PER_HOLD, gbytes, gtotal, &moves)
            lockstat_unlock(&s.lock, LK_MAINTAINER, t0)
            moves += ran
            if ran < MAINTAINER_ROUNDS_PER_HOLD:
                break
            done += ran
    return moves

# One wake-up of memcached's lru_maintainer_thread, `slept_us` after the last:
# every class whose next juggle is due is juggled and gets its new backoff.
# Returns how long to sleep before the next wake-up, in microseconds (0: run
# again at once, as memcached does while a class keeps moving items).
# Acceptor thread only (the schedule is its own).
cdef uint32_t lru_maintainer_tick(uint64_t slept_us) noexcept nogil:
    cdef int id
    cdef int did
    cdef uint32_t to_sleep = MAINT_SLEEP_MAX_US
    cdef uint32_t b
    # a sleep of zero counts as a minimum of 1 ms, as memcached's
    cdef uint64_t last = slept_us if slept_us > MAINT_SLEEP_MIN_US else MAINT_SLEEP_MIN_US
    mc_fetch_add_u64(&g_lru_maintainer_juggles, 1)
    for id in range(1, MAX_SLAB_CLASSES):
        g_maint_next[id] = <uint32_t>(g_maint_next[id] - last) if g_maint_next[id] > last else 0
        if g_maint_next[id] > 0:
            if g_maint_next[id] < to_sleep:
                to_sleep = g_maint_next[id]
            continue
        b = g_maint_backoff[id]
        did = lru_maintainer_juggle(id, MAINT_SHARDS_PER_WAKE if b < MAINT_SWEEP_ALL_US
                                    else g_nshards)
        if did == 0:
            b = b + b // 8 if b != 0 else MAINT_SLEEP_MIN_US
            if b > MAINT_SLEEP_MAX_US:
                b = MAINT_SLEEP_MAX_US
        elif b > 0:
            b //= 2
            if b < MAINT_SLEEP_MIN_US:
                b = 0
        g_maint_backoff[id] = b
        g_maint_next[id] = b
        if b < to_sleep:
            to_sleep = b
    # memcached also sleeps at most 1 ms while its async bumps of COLD hits
    # wait; here a COLD hit moves to WARM inline (lru_bump), so none ever waits.
    return to_sleep

# Every class juggled at once, off the schedule (the test API's maintainer_run,
# and `lru_maintainer_run` kept for it): the hash tables still doubling move
# their buckets too.
cdef void lru_maintainer_run() noexcept nogil:
    cdef int id
    assoc_expand_run()
    mc_fetch_add_u64(&g_lru_maintainer_juggles, 1)
    for id in range(1, MAX_SLAB_CLASSES):
        lru_maintainer_juggle(id, g_nshards)

# Free room in class `id` of this shard: evict from COLD; if COLD had nothing
# to give, push HOT's (then WARM's) tail down to COLD and try again.
# Each try at COLD counts as one of memcached's direct_reclaims (one failed
# allocation and pull of its do_item_alloc_pull loop).
cdef bint lru_pull_tail_one(shard_t* s, int id) noexcept nogil:
    cdef int round
    for round in range(3):
        s.lru[id].direct_reclaims += 1
        if lru_pull_tail_seg(s, id, SEG_COLD, 0, 0) > 0:
            return True
        if not g_settings.lru_segmented:
            return False
        if lru_pull_tail_seg(s, id, SEG_HOT, 0, 0) == 0 and \
                lru_pull_tail_seg(s, id, SEG_WARM, 0, 0) == 0:
            return False
    return False

cdef inline bint lru_has_items(shard_t* s, int id) noexcept nogil:
    return s.lru[id].number != 0

# Free room in class `id` from this shard's older HOT/COLD tail: an inactive
# HOT tail older than COLD's goes to COLD's tail (moves_to_cold) and is
# evicted there; an ACTIVE one goes to WARM, as a pull of HOT sends it.
cdef bint lru_pull_oldest(shard_t* s, int id) noexcept nogil:
    cdef item_t* h = s.tails[lru_idx(id, SEG_HOT)]
    cdef item_t* c = s.tails[lru_idx(id, SEG_COLD)]
    if h != NULL and (h.it_flags & ITEM_PINNED) == 0 and (c == NULL or lru_key(h) < lru_key(c)) \
            and not item_dead(h, current_time()):
        lru_unlink(s, h)
        if h.it_flags & ITEM_ACTIVE:
            h.it_flags &= ~ITEM_ACTIVE
            s.lru[id].moves_to_warm += 1
            lru_link_seg(s, h, SEG_WARM)
            s.lru[id].direct_reclaims += 1
            return True
        s.lru[id].moves_to_cold += 1
        lru_link_seg_tail(s, h, SEG_COLD)
    return lru_pull_tail_one(s, id)

# Free a chunk of class `id`: from the shard holding the class's oldest
# HOT/COLD tail (this one, or another whose lock is free right now; up to
# LRU_PICK_TRIES shards, oldest first); failing that, from this shard, else
# from any shard whose lock is free.
cdef bint lru_pull_tail(shard_t* s, int id) noexcept nogil:
    cdef int i
    cdef int j
    cdef int start
    cdef int attempt
    cdef shard_t* o
    cdef bint ok
    cdef bint seen
    cdef uint64_t* keys = &g_lru_tailkey[<size_t>id * <size_t>g_nshards]
    cdef uint64_t best
    cdef uint64_t k
    cdef int bi
    cdef int tried[LRU_PICK_TRIES]
    cdef int ntried = 0
    # The oldest shard first; when its lock is taken right now (the maintainer,
    # a crawler step, a worker) or it has nothing to give, the next oldest: a
    # fallback to this shard's own lists would push its WARM tail out while
    # older items wait elsewhere.
    for attempt in range(LRU_PICK_TRIES):
        best = LRU_KEY_NONE
        bi = -1
        for i in range(g_nshards):
            k = mc_load_u64(&keys[i])
            if k < best:
                seen = False
                for j in range(ntried):
                    if tried[j] == i:
                        seen = True
                if not seen:
                    best = k
                    bi = i
        if bi < 0:
            break
        tried[ntried] = bi
        ntried += 1
        o = &g_shards[bi]
        if o == s:
            if lru_pull_oldest(s, id):
                return True
        elif pthread_mutex_trylock(&o.lock) == 0:
            ok = lru_has_items(o, id) and lru_pull_oldest(o, id)
            pthread_mutex_unlock(&o.lock)
            if ok:
                return True
    if lru_has_items(s, id) and lru_pull_tail_one(s, id):
        return True
    start = <int>((<size_t>(s - g_shards) + 1) % <size_t>g_nshards)
    for i in range(g_nshards):
        o = &g_shards[(start + i) % g_nshards]
        if o == s:
            continue
        if pthread_mutex_trylock(&o.lock) != 0:
            continue
        ok = lru_has_items(o, id) and lru_pull_tail_one(o, id)
        pthread_mutex_unlock(&o.lock)
        if ok:
            return True
    return False
