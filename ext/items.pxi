# items.pxi -- item layout, allocation and liveness.
#
# An item is one slab chunk: item_t header, key bytes, value bytes ending in
# CRLF. item_alloc() is where a store gets memory: it asks the slab allocator
# and, when the class is full, asks the LRU (lru.pxi) to reclaim or evict from
# the tail and tries again. Liveness (expiry and flush_all) is decided lazily,
# when an item is looked up, exactly as memcached's do_item_get does.
#
# Caller holds the lock of `shard` for everything in this file.

cdef enum:
    ITEM_PINNED = 64       # being copied from while a new item is allocated: never evict
    ITEM_CAS_CLIENT = 128  # CAS chosen by the client (meta E): says nothing about age;
                           # bits 8-13 then hold the flush epoch (store.pxi, meta helpers)
    ITEM_SEG_SHIFT = 14    # bits 14-15: the LRU segment the item is linked in (lru.pxi)
    ITEM_SEG_MASK = 0xC000
    ITEM_EPOCH_MASK = 0x3F00

cdef inline char* ITEM_key(item_t* it) noexcept nogil:
    return (<char*>it) + sizeof(item_t)

cdef inline char* ITEM_data(item_t* it) noexcept nogil:
    return (<char*>it) + sizeof(item_t) + it.nkey

# Two sizes per item. The footprint is what our layout occupies (item_t, key,
# value). ntotal is the size memcached gives the same item: its 48-byte header,
# the key and its NUL, 4 bytes of client flags unless they are 0, the value
# with CRLF, and the CAS unless -C. ntotal is the one every number a client can
# see is made of ("object too large", the slab class, bytes, mem_requested,
# stats sizes, me size=), so those match memcached's; the slab class is chosen
# for the larger of the two, which is ntotal unless -C.
cdef enum:
    MC_ITEM_HEADER = 48

cdef inline size_t item_footprint_of(size_t nkey, size_t nbytes) noexcept nogil:
    return sizeof(item_t) + nkey + nbytes

cdef inline size_t ITEM_footprint(item_t* it) noexcept nogil:
    return sizeof(item_t) + it.nkey + it.nbytes

cdef inline size_t mc_item_ntotal(size_t nkey, uint32_t flags, size_t nbytes) noexcept nogil:
    return (MC_ITEM_HEADER + nkey + 1 + (4 if flags != 0 else 0) + nbytes
            + (8 if g_settings.use_cas else 0))

cdef inline size_t ITEM_ntotal(item_t* it) noexcept nogil:
    return mc_item_ntotal(it.nkey, it.flags, it.nbytes)

# The class an item of this shape goes to; 0 if none can hold it.
cdef inline int item_clsid_of(size_t nkey, uint32_t flags, size_t nbytes) noexcept nogil:
    cdef size_t ntotal = mc_item_ntotal(nkey, flags, nbytes)
    cdef size_t footprint = item_footprint_of(nkey, nbytes)
    return slabs_clsid(ntotal if ntotal > footprint else footprint)

# True when an item of this size could ever be stored (else: "object too large").
cdef inline bint item_size_ok(size_t nkey, size_t nbytes, uint32_t flags=0) noexcept nogil:
    return (mc_item_ntotal(nkey, flags, nbytes) <= g_settings.item_size_max
            and item_clsid_of(nkey, flags, nbytes) != 0)

# Small tag of the flush horizon in force (0 = never flushed): two flush_all
# commands in one second get different CAS ids, hence different tags.
cdef inline uint16_t flush_epoch(uint64_t oldest_cas) noexcept nogil:
    if oldest_cas == 0:
        return 0
    return <uint16_t>(oldest_cas % 63 + 1)

cdef enum item_state_t:
    ITEM_LIVE = 0           # false: callers test `if item_dead(...)`
    ITEM_EXPIRED = 1
    ITEM_FLUSHED = 2

# Flush wins over expiry, as in memcached.
cdef inline item_state_t item_dead(item_t* it, rel_time_t now) noexcept nogil:
    cdef rel_time_t oldest_live = mc_load_u32(&g_settings.oldest_live)
    cdef uint64_t oldest_cas
    if oldest_live != 0 and oldest_live <= now:
        if it.time <= oldest_live:
            return ITEM_FLUSHED
        oldest_cas = mc_load_u64(&g_settings.oldest_cas)
        if it.it_flags & ITEM_CAS_CLIENT:
            # a client-chosen CAS cannot be ordered against the flush; the
            # epoch recorded when it was set can (only the flush second matters)
            if it.time == oldest_live + 1 and ((it.it_flags & ITEM_EPOCH_MASK) >> 8) != flush_epoch(oldest_cas):
                return ITEM_FLUSHED
        elif oldest_cas != 0 and it.cas != 0 and it.cas < oldest_cas:
            return ITEM_FLUSHED
    if it.exptime != 0 and it.exptime <= now:
        return ITEM_EXPIRED
    return ITEM_LIVE

# Allocate an unlinked item in `shard`'s name, evicting if the class is full.
# Returns NULL when the item can never fit (check item_size_ok) or memory is
# exhausted and eviction is disabled or impossible.
cdef item_t* item_alloc(shard_t* shard, const char* key, size_t nkey, uint32_t flags,
                        rel_time_t exptime, size_t nbytes) noexcept nogil:
    cdef size_t ntotal = mc_item_ntotal(nkey, flags, nbytes)
    cdef int id = item_clsid_of(nkey, flags, nbytes)
    cdef item_t* it = NULL
    cdef int tries
    if id == 0 or ntotal > g_settings.item_size_max:
        return NULL
    if not g_settings.lru_segmented:
        # With the flat LRU memcached first reclaims expired and flushed items
        # at the tail, without evicting: memory a dead item held is reused and
        # counted as `reclaimed` (t/issue_183.t). Pinned items are skipped.
        lru_pull_tail_seg(shard, id, SEG_COLD, 0, 0, True, NULL, True, False)
    for tries in range(10):
        it = <item_t*>slabs_alloc(ntotal, id)
        if it != NULL:
            break
        # evicts unless -M (lru.pxi checks evict_to_free, as memcached)
        if not lru_pull_tail(shard, id):
            break
    if it == NULL:
        shard.lru[id].outofmemory += 1
        return NULL
    it.next = NULL
    it.prev = NULL
    it.h_next = NULL
    it.cas = 0
    it.hv = 0
    it.time = current_time()
    it.exptime = exptime
    it.nbytes = <uint32_t>nbytes
    it.flags = flags
    it.it_flags = 0
    it.slabs_clsid = <uint8_t>id
    it.nkey = <uint8_t>nkey
    memcpy(ITEM_key(it), key, nkey)
    return it

# Return an unlinked item's chunk to its slab class.
cdef inline void item_free(item_t* it) noexcept nogil:
    slabs_free(it, ITEM_ntotal(it), it.slabs_clsid)
