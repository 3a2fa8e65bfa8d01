# assoc.pxi -- each shard's hash table (memcached calls this "assoc").
#
# Chained buckets indexed by the upper 32 bits of the key hash (kept in the
# item as `hv`). A table doubles when it holds 1.5 items per bucket, and it does
# so incrementally, as memcached's does: the doubled table is allocated at once,
# the old one stays (old_buckets) and its buckets move over a few at a time, by
# every insert (ASSOC_MOVE_PER_INSERT) and by the LRU maintainer's pass
# (assoc_expand_run, ASSOC_MOVE_PER_HOLD per shard-lock hold), until none is
# left. A bucket of the old table below expand_bucket has moved; a key whose old
# bucket is at or above it is still found there (assoc_head). Rehashing a whole
# shard at once held its lock for up to 3.6 ms with a million keys (bench/stalls).
#
# Caller holds the shard lock.

from libc.string cimport memcmp

# Shards whose table is doubling right now: the maintainer's share looks at no
# shard while it is 0 (changed under the shard's lock, read without it).
cdef uint64_t g_assoc_expanding = 0

cdef enum:
    ASSOC_MOVE_PER_INSERT = 4   # done long before the next doubling (0.75 x size inserts)
    ASSOC_MOVE_PER_HOLD = 1024  # buckets moved per maintainer step, about 50-100 us

# The chain a key with bucket hash `hv` lives in.
cdef inline item_t** assoc_head(shard_t* s, uint32_t hv) noexcept nogil:
    cdef uint32_t ob
    if MC_UNLIKELY(s.old_buckets != NULL):
        ob = hv & ((<uint32_t>1 << (s.hashpower - 1)) - 1)
        if ob >= s.expand_bucket:
            return &s.old_buckets[ob]
    return &s.buckets[hv & ((<uint32_t>1 << s.hashpower) - 1)]

cdef inline item_t* assoc_find(shard_t* s, const char* key, size_t nkey, uint32_t hv) noexcept nogil:
    cdef item_t* it = assoc_head(s, hv)[0]
    while it != NULL:
        if it.hv == hv and it.nkey == nkey and memcmp(ITEM_key(it), key, nkey) == 0:
            return it
        it = it.h_next
    return NULL

# Move up to `n` buckets of the old table into the new one; the old table is
# freed after its last bucket. Returns the buckets still to move.
cdef uint64_t assoc_expand_step(shard_t* s, uint64_t n) noexcept nogil:
    cdef uint64_t oldsize
    cdef uint32_t newmask
    cdef item_t* it
    cdef item_t* nxt
    cdef uint32_t b
    cdef lock_hold_t t0
    if s.old_buckets == NULL:
        return 0
    oldsize = <uint64_t>1 << (s.hashpower - 1)
    newmask = (<uint32_t>1 << s.hashpower) - 1
    while n > 0 and s.expand_bucket < oldsize:
        it = s.old_buckets[s.expand_bucket]
        while it != NULL:
            nxt = it.h_next
            b = it.hv & newmask
            it.h_next = s.buckets[b]
            s.buckets[b] = it
            it = nxt
        s.old_buckets[s.expand_bucket] = NULL
        s.expand_bucket += 1
        n -= 1
    if s.expand_bucket >= oldsize:
        t0 = lockstat_begin()
        free(s.old_buckets)
        s.old_buckets = NULL
        mc_fetch_add_u64(&g_assoc_expanding, <uint64_t>-1)
        s.expand_bucket = 0
        lockstat_note(LK_EXPAND, t0)
    return oldsize - s.expand_bucket if s.old_buckets != NULL else 0

# Start doubling: a new empty table, the current one becomes old_buckets.
cdef void assoc_expand(shard_t* s) noexcept nogil:
    cdef lock_hold_t t0 = lockstat_begin()
    cdef item_t** nb
    if s.old_buckets != NULL:
        assoc_expand_step(s, <uint64_t>1 << s.hashpower)    # finish the last one first
    nb = <item_t**>calloc(<size_t>1 << (s.hashpower + 1), sizeof(item_t*))
    if nb == NULL:
        return
    s.old_buckets = s.buckets
    mc_fetch_add_u64(&g_assoc_expanding, 1)
    s.expand_bucket = 0
    s.buckets = nb
    s.hashpower += 1
    s.expand_count += 1
    lockstat_note(LK_EXPAND, t0)

# The maintainer's share (acceptor thread, no lock held): finish doublings in
# short steps, each under its own hold of the shard lock.
cdef void assoc_expand_run() noexcept nogil:
    cdef int i
    cdef shard_t* s
    cdef uint64_t left
    cdef lock_hold_t t0
    if mc_load_u64(&g_assoc_expanding) == 0:
        return
    for i in range(g_nshards):
        s = &g_shards[i]
        while True:
            if pthread_mutex_trylock(&s.lock) != 0:
                break
            t0 = lockstat_begin()
            left = assoc_expand_step(s, ASSOC_MOVE_PER_HOLD)
            lockstat_unlock(&s.lock, LK_EXPAND, t0)
            if left == 0:
                break

cdef inline void assoc_insert(shard_t* s, item_t* it) noexcept nogil:
    cdef item_t** head
    if MC_UNLIKELY(s.old_buckets != NULL):
        assoc_expand_step(s, ASSOC_MOVE_PER_INSERT)
    head = assoc_head(s, it.hv)
    it.h_next = head[0]
    head[0] = it
    s.hash_items += 1
    if s.hash_items > ((<uint64_t>3 << s.hashpower) >> 1) and s.hashpower < 30:
        assoc_expand(s)

cdef inline void assoc_delete(shard_t* s, item_t* it) noexcept nogil:
    cdef item_t** pos = assoc_head(s, it.hv)
    while pos[0] != NULL:
        if pos[0] == it:
            pos[0] = it.h_next
            it.h_next = NULL
            s.hash_items -= 1
            return
        pos = &pos[0].h_next
