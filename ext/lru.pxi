# lru.pxi -- LRU lists, bumps and eviction.
#
# Each shard keeps one doubly linked list per slab class, newest at the head.
# A hit does not relink (that would make every get a write to shared list
# pointers); like memcached's segmented LRU it only marks the item FETCHED, and
# on a second hit ACTIVE (and refreshes its access time). Eviction walks from
# the tail: expired or flushed items are reclaimed first, ACTIVE items get a
# second chance (moved to the head, ACTIVE cleared), anything else is evicted.
#
# Caller holds the shard lock. lru_pull_tail() may also take *other* shards'
# locks, but only with trylock, so shard locks never deadlock.

cdef inline void lru_link(shard_t* s, item_t* it) noexcept nogil:
    cdef int id = it.slabs_clsid
    it.prev = NULL
    it.next = s.heads[id]
    if it.next != NULL:
        it.next.prev = it
    s.heads[id] = it
    if s.tails[id] == NULL:
        s.tails[id] = it
    s.lru[id].number += 1

cdef inline void lru_unlink(shard_t* s, item_t* it) noexcept nogil:
    cdef int id = it.slabs_clsid
    if s.heads[id] == it:
        s.heads[id] = it.next
    if s.tails[id] == it:
        s.tails[id] = it.prev
    if it.next != NULL:
        it.next.prev = it.prev
    if it.prev != NULL:
        it.prev.next = it.next
    it.next = NULL
    it.prev = NULL
    s.lru[id].number -= 1

# Mark a hit, as memcached's do_item_bump does for a segmented LRU.
cdef inline void lru_bump(shard_t* s, item_t* it) noexcept nogil:
    if (it.it_flags & ITEM_ACTIVE) == 0:
        if (it.it_flags & ITEM_FETCHED) == 0:
            it.it_flags |= ITEM_FETCHED
        else:
            it.it_flags |= ITEM_ACTIVE
            it.time = current_time()

# Move to the head and refresh the access time (explicit updates: add on an
# existing key, touch).
cdef inline void lru_update(shard_t* s, item_t* it) noexcept nogil:
    cdef rel_time_t now = current_time()
    if it.time < now - ITEM_UPDATE_INTERVAL or it.time > now:
        lru_unlink(s, it)
        lru_link(s, it)
    it.time = now

# Free one item of class `id` from this shard's tail. `evict` false (-M) means
# only expired/flushed items may go. Returns true if a chunk was freed.
cdef bint lru_pull_tail_one(shard_t* s, int id, bint evict) noexcept nogil:
    cdef item_t* it = s.tails[id]
    cdef item_t* prev
    cdef item_t* victim = NULL
    cdef rel_time_t now = current_time()
    cdef int tries = 0
    cdef int dead
    while it != NULL and tries < 64:
        prev = it.prev
        tries += 1
        if it.it_flags & ITEM_PINNED:
            it = prev
            continue
        dead = item_dead(it, now)
        if dead:
            s.lru[id].reclaimed += 1
            if (it.it_flags & ITEM_FETCHED) == 0:
                s.lru[id].expired_unfetched += 1
            do_item_unlink(s, it)
            return True
        if evict:
            if it.it_flags & ITEM_ACTIVE:
                # second chance
                it.it_flags &= ~ITEM_ACTIVE
                lru_unlink(s, it)
                lru_link(s, it)
                s.lru[id].moves_within_lru += 1
                if victim == NULL:
                    victim = it
            else:
                victim = it
                break
        it = prev
    if evict and victim != NULL and (victim.it_flags & ITEM_PINNED) == 0:
        s.lru[id].evicted += 1
        s.lru[id].evicted_time = now - victim.time
        if victim.exptime != 0:
            s.lru[id].evicted_nonzero += 1
        if (victim.it_flags & ITEM_FETCHED) == 0:
            s.lru[id].evicted_unfetched += 1
        if logger_wants(LOG_EVICTIONS):
            log_eviction(victim)
        if victim.it_flags & ITEM_ACTIVE:
            s.lru[id].evicted_active += 1
        do_item_unlink(s, victim)
        return True
    return False

# Free a chunk of class `id`, from this shard if it has any, else from another
# shard whose lock is free right now.
cdef bint lru_pull_tail(shard_t* s, int id, bint evict) noexcept nogil:
    cdef int i
    cdef int start
    cdef shard_t* o
    cdef bint ok
    if s.tails[id] != NULL and lru_pull_tail_one(s, id, evict):
        return True
    start = <int>((<size_t>(s - g_shards) + 1) % <size_t>g_nshards)
    for i in range(g_nshards):
        o = &g_shards[(start + i) % g_nshards]
        if o == s:
            continue
        if pthread_mutex_trylock(&o.lock) != 0:
            continue
        ok = o.tails[id] != NULL and lru_pull_tail_one(o, id, evict)
        pthread_mutex_unlock(&o.lock)
        if ok:
            return True
    return False
