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
# Tags: every link of a chain (a bucket, an item's h_next) is a word holding
# the next item's address in its low 48 bits and, in its top 16, a filter of
# the chain from that item on: bit (hv >> 28) of each item in it. A lookup
# whose bit is not in the word's filter stops there without touching the
# item: a miss (a get of an absent key, the lookup before storing a new key)
# usually reads the bucket and nothing else, where it would read every item
# of the chain. A filter may hold bits of items no longer in the chain (a
# superset stays correct); delete recomputes the filters of the links it
# walked, from items it has touched anyway. User-space addresses fit in 47
# bits on x86-64 and arm64 (malloc and mmap without a high hint never return
# more), so the top 16 bits of a link are free. Read links through
# assoc_ptr(); a link is NULL exactly when it points nowhere.
#
# Caller holds the shard lock.

from libc.string cimport memcmp

# Shards whose table is doubling right now: the maintainer's share looks at no
# shard while it is 0 (changed under the shard's lock, read without it).
cdef uint64_t g_assoc_expanding = 0

cdef enum:
    ASSOC_MOVE_PER_INSERT = 4   # done long before the next doubling (0.75 x size inserts)
    ASSOC_MOVE_PER_HOLD = 1024  # buckets moved per maintainer step, about 50-100 us

cdef extern from "<stdint.h>":
    ctypedef unsigned long uintptr_t

cdef enum:
    ASSOC_TAG_SHIFT = 48

# The item a link points at.
cdef inline item_t* assoc_ptr(item_t* link) noexcept nogil:
    return <item_t*>(<uintptr_t>link & ((<uintptr_t>1 << ASSOC_TAG_SHIFT) - 1))

# The filter bit of an item with bucket hash `hv`, in link position. The top
# bits of hv: the bucket index (hv's low hashpower bits) leaves them free.
cdef inline uintptr_t assoc_tag(uint32_t hv) noexcept nogil:
    return (<uintptr_t>1) << (ASSOC_TAG_SHIFT + (hv >> 28))

# A link to `it` whose filter covers `it` and the chain after it (`next`, a link).
cdef inline item_t* assoc_link(item_t* it, item_t* next) noexcept nogil:
    return <item_t*>(<uintptr_t>it | assoc_tag(it.hv) |
                     (<uintptr_t>next & ~((<uintptr_t>1 << ASSOC_TAG_SHIFT) - 1)))

# The same link pointing at `nw` instead (the page mover's rescue: same key).
cdef inline item_t* assoc_relink(item_t* link, item_t* nw) noexcept nogil:
    return <item_t*>((<uintptr_t>link & ~((<uintptr_t>1 << ASSOC_TAG_SHIFT) - 1)) | <uintptr_t>nw)

# The chain a key with bucket hash `hv` lives in (its first link).
cdef inline item_t** assoc_head(shard_t* s, uint32_t hv) noexcept nogil:
    cdef uint32_t ob
    if MC_UNLIKELY(s.old_buckets != NULL):
        ob = hv & ((<uint32_t>1 << (s.hashpower - 1)) - 1)
        if ob >= s.expand_bucket:
            return &s.old_buckets[ob]
    return &s.buckets[hv & ((<uint32_t>1 << s.hashpower) - 1)]

# `touched` (NULL on every path but the test API's) counts the items read.
cdef inline item_t* assoc_find_counted(shard_t* s, const char* key, size_t nkey, uint32_t hv,
                                       uint64_t* touched) noexcept nogil:
    cdef item_t* link = assoc_head(s, hv)[0]
    cdef uintptr_t tag = assoc_tag(hv)
    cdef item_t* it
    while <uintptr_t>link & tag:
        it = assoc_ptr(link)
        if touched != NULL:
            touched[0] += 1
        if it.hv == hv and it.nkey == nkey and memcmp(ITEM_key(it), key, nkey) == 0:
            return it
        link = it.h_next
    return NULL

cdef inline item_t* assoc_find(shard_t* s, const char* key, size_t nkey, uint32_t hv) noexcept nogil:
    return assoc_find_counted(s, key, nkey, hv, NULL)

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
        it = assoc_ptr(s.old_buckets[s.expand_bucket])
        while it != NULL:
            nxt = assoc_ptr(it.h_next)
            b = it.hv & newmask
            it.h_next = s.buckets[b]
            s.buckets[b] = assoc_link(it, it.h_next)
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
    # atomic stores: a worker's multiget prefetches through them without the lock
    mc_store_ptr(&s.buckets, nb)
    mc_store_u32(&s.hashpower, s.hashpower + 1)
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
    head[0] = assoc_link(it, it.h_next)
    s.hash_items += 1
    if s.hash_items > ((<uint64_t>3 << s.hashpower) >> 1) and s.hashpower < 30:
        assoc_expand(s)

cdef enum:
    ASSOC_DELETE_PATH = 16      # links whose filters a delete recomputes (longer: left a superset)

cdef inline void assoc_delete(shard_t* s, item_t* it) noexcept nogil:
    cdef item_t** pos = assoc_head(s, it.hv)
    cdef item_t** path[16]
    cdef int n = 0
    cdef item_t* cur
    while pos[0] != NULL:
        cur = assoc_ptr(pos[0])
        if cur == it:
            pos[0] = it.h_next
            it.h_next = NULL
            s.hash_items -= 1
            # the links before it lose its bit, unless another item has it
            # (their items were just read: no line more is touched)
            while n > 0:
                n -= 1
                path[n][0] = assoc_link(assoc_ptr(path[n][0]), pos[0])
                pos = path[n]
            return
        if n < ASSOC_DELETE_PATH:
            path[n] = pos
            n += 1
        else:
            # a long chain (hash flooding): the first links keep a superset
            n = 0
        pos = &cur.h_next
