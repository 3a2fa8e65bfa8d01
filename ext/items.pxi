# items.pxi -- item layout, allocation and liveness.
#
# An item is one slab chunk: item_t header, key bytes, value bytes ending in
# CRLF; or, when its ntotal or footprint is above slab_chunk_max, a chunked
# item as memcached's: a header chunk (item_t, key, item_chain_t) from the
# class that fits it, and the value in a chain of chunks (item_chunk_t), each
# of slab_chunk_max bytes but the last, which comes from the class that fits
# the rest (memcached's do_item_alloc_chunk). The chain is allocated with the
# header, evicting per chunk class as needed, and freed with it. Code that
# reads or writes a value goes through item_data_read / item_data_write /
# item_data_span, which walk the chain; ITEM_data is only for items known to
# be small (incr results, empty tombstones). item_alloc() is where a store gets memory: it asks the slab allocator
# and, when the class is full, asks the LRU (lru.pxi) to reclaim or evict from
# the tail and tries again. Liveness (expiry and flush_all) is decided lazily,
# when an item is looked up, exactly as memcached's do_item_get does.
#
# Reference counts (memcached's refcount_incr/decr, item_remove): a reply
# sending a chunked item's value straight from its chain (conn.pxi segments)
# holds a reference, item_chain_t.refcount, taken and dropped under the item's
# shard lock (no atomics: every other reader of it holds that lock too).
# Unlinking (delete, overwrite, eviction, expiry, flush, crawler) takes the
# item out of the hash table and the LRU at once, but a referenced item's
# memory is freed only when the last reference drops (item_unref). As in
# memcached, the crawler and the page mover leave a referenced item alone
# (item_busy; the mover counts slab_reassign_busy_items and retries), while
# the LRU tail counts it (lrutail_reflocked) and evicts it all the same: it
# is unlinked at once, and the store goes on evicting since that memory is
# not free yet. Items no larger than slab_chunk_max are copied into the reply
# under the lock and never referenced.
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

cdef enum:
    MC_CHUNK_HEADER = 48   # memcached's sizeof(item_chunk): a chunk's value room is its size less this

# True when an item of this shape is chunked (see the top of this file).
cdef inline bint item_chunked_of(size_t nkey, uint32_t flags, size_t nbytes) noexcept nogil:
    return (mc_item_ntotal(nkey, flags, nbytes) > g_settings.slab_chunk_size_max or
            item_footprint_of(nkey, nbytes) > g_settings.slab_chunk_size_max)

cdef inline bint item_chunked(item_t* it) noexcept nogil:
    return item_chunked_of(it.nkey, it.flags, it.nbytes)

cdef inline item_chain_t* ITEM_chain(item_t* it) noexcept nogil:
    return <item_chain_t*>((<char*>it) + ((sizeof(item_t) + it.nkey + 7) & ~(<size_t>7)))

cdef inline char* CHUNK_data(item_chunk_t* ch) noexcept nogil:
    return (<char*>ch) + sizeof(item_chunk_t)

# The bytes an item's own chunk holds (the header chunk of a chunked item).
cdef inline size_t ITEM_footprint(item_t* it) noexcept nogil:
    if item_chunked(it):
        return ((sizeof(item_t) + it.nkey + 7) & ~(<size_t>7)) + sizeof(item_chain_t)
    return sizeof(item_t) + it.nkey + it.nbytes

# memcached's size of a chunked item's header (its item, key and NUL, client
# flags, one item_chunk, CAS): the class of our header chunk is chosen for it.
cdef inline size_t mc_header_ntotal(size_t nkey, uint32_t flags) noexcept nogil:
    return (MC_ITEM_HEADER + nkey + 1 + (4 if flags != 0 else 0) + MC_CHUNK_HEADER
            + (8 if g_settings.use_cas else 0))

# Chunk `ch` and the offset in it where value byte `off` lives (off < nbytes).
cdef inline item_chunk_t* chunk_at(item_t* it, size_t off, size_t* inner) noexcept nogil:
    cdef item_chunk_t* ch = ITEM_chain(it).first
    while ch != NULL and off >= ch.used:
        off -= ch.used
        ch = ch.next
    inner[0] = off
    return ch

# Copy n value bytes starting at `off` out to dst.
cdef void item_data_read(item_t* it, size_t off, char* dst, size_t n) noexcept nogil:
    cdef item_chunk_t* ch
    cdef size_t inner
    cdef size_t k
    if not item_chunked(it):
        memcpy(dst, ITEM_data(it) + off, n)
        return
    ch = chunk_at(it, off, &inner)
    while n > 0 and ch != NULL:
        k = ch.used - inner
        if k > n:
            k = n
        memcpy(dst, CHUNK_data(ch) + inner, k)
        dst += k
        n -= k
        inner = 0
        ch = ch.next

# Copy n bytes from src into the value at `off` (the chain is already sized).
cdef void item_data_write(item_t* it, size_t off, const char* src, size_t n) noexcept nogil:
    cdef item_chunk_t* ch
    cdef size_t inner
    cdef size_t k
    if not item_chunked(it):
        memcpy(ITEM_data(it) + off, src, n)
        return
    ch = chunk_at(it, off, &inner)
    while n > 0 and ch != NULL:
        k = ch.used - inner
        if k > n:
            k = n
        memcpy(CHUNK_data(ch) + inner, src, k)
        src += k
        n -= k
        inner = 0
        ch = ch.next

# Where value byte `off` lives and how many bytes follow it contiguously
# (off < nbytes): what a recv() into the item may fill in one go.
cdef char* item_data_span(item_t* it, size_t off, size_t* avail) noexcept nogil:
    cdef item_chunk_t* ch
    cdef size_t inner
    if not item_chunked(it):
        avail[0] = it.nbytes - off
        return ITEM_data(it) + off
    ch = chunk_at(it, off, &inner)
    if ch == NULL:
        avail[0] = 0
        return NULL
    avail[0] = ch.used - inner
    return CHUNK_data(ch) + inner

# Value byte `off`.
cdef inline char item_data_byte(item_t* it, size_t off) noexcept nogil:
    cdef char b = 0
    item_data_read(it, off, &b, 1)
    return b

# Copy n value bytes of `src` from soff into `dst` at doff, chunk span by span.
cdef void item_data_copy(item_t* dst, size_t doff, item_t* src, size_t soff, size_t n) noexcept nogil:
    cdef char* p
    cdef size_t k
    while n > 0:
        p = item_data_span(src, soff, &k)
        if p == NULL or k == 0:
            return
        if k > n:
            k = n
        item_data_write(dst, doff, p, k)
        doff += k
        soff += k
        n -= k

cdef inline size_t mc_item_ntotal(size_t nkey, uint32_t flags, size_t nbytes) noexcept nogil:
    return (MC_ITEM_HEADER + nkey + 1 + (4 if flags != 0 else 0) + nbytes
            + (8 if g_settings.use_cas else 0))

cdef inline size_t ITEM_ntotal(item_t* it) noexcept nogil:
    return mc_item_ntotal(it.nkey, it.flags, it.nbytes)

# The class an item of this shape goes to; 0 if none can hold it.
cdef inline int item_clsid_of(size_t nkey, uint32_t flags, size_t nbytes) noexcept nogil:
    if item_chunked_of(nkey, flags, nbytes):
        # chunked: it lives in the LRU of the largest class, as memcached's
        return g_power_largest if mc_item_ntotal(nkey, flags, nbytes) <= g_settings.item_size_max else 0
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

# One chunk of class `id` for `shard`'s store, evicting from that class's
# tail until one is free (memcached's do_item_alloc_pull); NULL when memory is
# exhausted and nothing can be evicted.
cdef void* item_alloc_pull(shard_t* shard, size_t size, int id) noexcept nogil:
    cdef void* p = NULL
    cdef int tries
    if not g_settings.lru_segmented:
        # With the flat LRU memcached first reclaims expired and flushed items
        # at the tail, without evicting: memory a dead item held is reused and
        # counted as `reclaimed` (t/issue_183.t). Pinned items are skipped.
        lru_pull_tail_seg(shard, id, SEG_COLD, 0, 0, True, NULL, True, False)
    for tries in range(10):
        p = slabs_alloc(size, id)
        if p != NULL:
            break
        # evicts unless -M (lru.pxi checks evict_to_free, as memcached)
        if not lru_pull_tail(shard, id):
            break
    return p

# Chain one more chunk to chunked item `it` after `last`, sized for `remain`
# more bytes as memcached's do_item_alloc_chunk: slab_chunk_max at most,
# else the class that fits the rest (a full-size one when that class has no
# memory); `remain` 0 gives an empty chunk, as memcached's appends leave.
# NULL when memory ran out.
cdef item_chunk_t* item_chunk_alloc(shard_t* shard, item_t* it, item_chunk_t* last,
                                    size_t remain) noexcept nogil:
    cdef size_t cmax = g_settings.slab_chunk_size_max
    cdef size_t size = remain + MC_CHUNK_HEADER
    cdef item_chunk_t* ch
    cdef int id
    if size > cmax:
        size = cmax
    id = slabs_clsid(size)
    ch = <item_chunk_t*>item_alloc_pull(shard, 0, id)
    if ch == NULL and size < cmax:
        size = cmax
        id = slabs_clsid(size)
        ch = <item_chunk_t*>item_alloc_pull(shard, 0, id)
    if ch != NULL:
        slabs_chain_link(it, ITEM_chain(it), last, ch, id, <uint32_t>(size - MC_CHUNK_HEADER))
    return ch

# The chain of a chunked item whose value arrives whole (a store): chunks
# allocated while bytes remain, as memcached's read into a chunked item.
# False when memory ran out; the caller frees the header and what was chained.
cdef bint item_alloc_chain(shard_t* shard, item_t* it, size_t nbytes) noexcept nogil:
    cdef item_chunk_t* last = NULL
    cdef size_t remain = nbytes
    while remain > 0:
        last = item_chunk_alloc(shard, it, last, remain)
        if last == NULL:
            return False
        last.used = last.size if last.size < remain else <uint32_t>remain
        remain -= last.used
    return True

# Append n value bytes of `src` (from its start) to the chain of chunked item
# `it` built lazily (item_alloc with lazy_chain), the way memcached's append
# and prepend copy (_store_item_copy_chunks): fill the last chunk; whenever
# a chunk is full, chain one sized for what is left of this copy, even when
# nothing is (so stats slabs count the same chunks). False on no memory.
cdef bint item_chain_fill(shard_t* shard, item_t* it, item_t* src, size_t n) noexcept nogil:
    cdef item_chunk_t* dch = ITEM_chain(it).first
    cdef size_t done = 0
    cdef size_t todo
    cdef size_t k
    cdef char* p
    if n == 0:
        return True
    while dch != NULL and dch.next != NULL:
        dch = dch.next
    if dch == NULL or dch.used == dch.size:
        dch = item_chunk_alloc(shard, it, dch, n)
        if dch == NULL:
            return False
    while done < n:
        todo = dch.size - dch.used
        if todo > n - done:
            todo = n - done
        while todo > 0:
            p = item_data_span(src, done, &k)
            if p == NULL or k == 0:
                return False
            if k > todo:
                k = todo
            memcpy(CHUNK_data(dch) + dch.used, p, k)
            dch.used += <uint32_t>k
            done += k
            todo -= k
        if dch.used == dch.size:
            dch = item_chunk_alloc(shard, it, dch, n - done)
            if dch == NULL:
                return False
    return True

# Allocate an unlinked item in `shard`'s name, evicting if the class is full.
# Returns NULL when the item can never fit (check item_size_ok) or memory is
# exhausted and eviction is disabled or impossible.
# `lazy_chain`: a chunked item gets its header only; item_chain_fill builds
# the chain (append/prepend).
cdef item_t* item_alloc(shard_t* shard, const char* key, size_t nkey, uint32_t flags,
                        rel_time_t exptime, size_t nbytes, bint lazy_chain=False) noexcept nogil:
    cdef size_t ntotal = mc_item_ntotal(nkey, flags, nbytes)
    cdef int id = item_clsid_of(nkey, flags, nbytes)
    cdef bint chunked = item_chunked_of(nkey, flags, nbytes)
    cdef int hdr_id = id
    cdef item_t* it = NULL
    cdef item_chain_t* chain
    if id == 0 or ntotal > g_settings.item_size_max:
        return NULL
    if chunked:
        hdr_id = slabs_clsid(mc_header_ntotal(nkey, flags))
        it = <item_t*>item_alloc_pull(shard, 0, hdr_id)
    else:
        it = <item_t*>item_alloc_pull(shard, ntotal, id)
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
    if chunked:
        chain = ITEM_chain(it)
        chain.first = NULL
        chain.hdr_clsid = <uint32_t>hdr_id
        chain.nchunks = 0
        chain.refcount = 0
        slabs_requested_add(id, ntotal)
        if not lazy_chain and not item_alloc_chain(shard, it, nbytes):
            item_free(it)
            shard.lru[id].outofmemory += 1
            return NULL
    return it

# True when the item must not be evicted, moved or reclaimed now: pinned
# (being copied from) or referenced by a reply in flight.
cdef inline bint item_busy(item_t* it) noexcept nogil:
    if it.it_flags & ITEM_PINNED:
        return True
    return item_chunked(it) and ITEM_chain(it).refcount != 0

# Take a reference on chunked item `it` (its shard lock held).
cdef inline void item_ref(item_t* it) noexcept nogil:
    ITEM_chain(it).refcount += 1

# Drop a reference (its shard lock held); the last one frees an item that was
# unlinked meanwhile.
cdef inline void item_unref(item_t* it) noexcept nogil:
    cdef item_chain_t* chain = ITEM_chain(it)
    chain.refcount -= 1
    if chain.refcount == 0 and (it.it_flags & ITEM_LINKED) == 0:
        # unlinked while referenced: its mem_requested went then (store.pxi)
        slabs_free_chain(it, chain, 0)

# Return an unlinked item's memory (all its chunks) to the slab classes.
cdef inline void item_free(item_t* it) noexcept nogil:
    if item_chunked(it):
        slabs_free_chain(it, ITEM_chain(it), ITEM_ntotal(it))
    else:
        slabs_free(it, ITEM_ntotal(it), it.slabs_clsid)
