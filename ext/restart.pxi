# restart.pxi -- the restartable cache (-e <memory file>), core side.
#
# With -e, slab pages are not malloc'd: they are cut from one file-backed
# MAP_SHARED region (mapped by memcachepy/restart.py, normally on tmpfs) that
# outlives the process. The region is divided into equal slots, each big
# enough for one page of any class (1 MiB, or the large class's -I-sized
# page), so a page is named by its slot number and the page table written at a
# graceful stop is a list of (slot, class). Pages come from the never-used end
# of the region first (those bytes are zero: the file is emptied at every cold
# start), then from slots pages were returned to; a reused slot is zeroed, as
# is a page the mover hands to another class, so no stale item header can sit
# at a chunk boundary of the page's new class.
#
# Warm start (restart_rebuild): pointers stored in items are never trusted.
# Each page of the table is walked chunk by chunk at its class's chunk size; a
# chunk becomes an item again only if its header is consistent (ITEM_LINKED,
# the page's class, key length, total size within the chunk and of that
# class, CRLF at the end of the value), its key is not already linked, and it
# was not flushed; its times are moved onto this process's clock. An item that
# expired during the downtime is relinked with its exptime in the past, as
# memcached relinks it, for the crawler (or a lookup) to reclaim and count. Everything else goes on the class's free list with ITEM_LINKED
# cleared. Restored items go back into the LRU segment (HOT/WARM/COLD) they
# were in, as memcached's do; within a segment the order is the pages' order,
# not recency (memcached keeps its old list pointers; we never trust them).
#
# Chunked items (items.pxi) keep raw pointers in their chains; the old
# mapping's base address is saved with the page table, so a chain can be
# translated. A chunked header is relinked only if every chunk of its chain
# translates into a page of the table, sits at a chunk boundary of that
# page's class, is marked and names the header as its head, and the chunks
# hold exactly the value; its pointers are then rewritten for this mapping
# and its chunks claimed. Chain chunks are left alone by the page walk; a last
# sweep frees every chunk no relinked header claimed.
#
# Locking: the region allocator is guarded by g_slabs_lock (it is called from
# do_slabs_newslab and rebal_finish). restart_rebuild and restart_pages run
# while no worker, acceptor or mover thread exists (before start / after
# stop), so they take no lock.

cdef char* g_region_base = NULL
cdef uint64_t g_region_slot_size = 0
cdef uint64_t g_region_nslots = 0
cdef uint64_t g_region_next = 0          # first never-used slot
cdef uint32_t* g_region_free = NULL      # slots given back, a stack
cdef uint64_t g_region_nfree = 0
cdef object g_region_obj = None          # keeps the mapping's buffer exported

cdef enum:
    RESTART_REASON_OK = 0

# Caller holds g_slabs_lock. A zeroed page of `length` bytes from the region, or NULL.
cdef char* region_page_alloc(uint64_t length) noexcept nogil:
    global g_region_next, g_region_nfree
    cdef char* page
    if length > g_region_slot_size:
        return NULL
    if g_region_next < g_region_nslots:
        page = g_region_base + g_region_next * g_region_slot_size
        g_region_next += 1
        return page          # never used since the file was emptied: zero
    if g_region_nfree == 0:
        return NULL
    g_region_nfree -= 1
    page = g_region_base + <uint64_t>g_region_free[g_region_nfree] * g_region_slot_size
    memset(page, 0, g_region_slot_size)
    return page

# Caller holds g_slabs_lock.
cdef void region_page_free(char* page) noexcept nogil:
    global g_region_nfree
    g_region_free[g_region_nfree] = <uint32_t>((page - g_region_base) // g_region_slot_size)
    g_region_nfree += 1

# Set the region up (before slabs_init hands out any page).
cdef int region_init(char* base, uint64_t slot_size, uint64_t nslots) noexcept nogil:
    global g_region_base, g_region_slot_size, g_region_nslots, g_region_next
    global g_region_free, g_region_nfree
    g_region_free = <uint32_t*>calloc(nslots if nslots else 1, sizeof(uint32_t))
    if g_region_free == NULL:
        return -1
    g_region_base = base
    g_region_slot_size = slot_size
    g_region_nslots = nslots
    g_region_next = 0
    g_region_nfree = 0
    return 0

cdef void region_destroy() noexcept nogil:
    global g_region_base, g_region_free, g_region_nfree, g_region_nslots, g_region_next
    free(g_region_free)
    g_region_free = NULL
    g_region_base = NULL
    g_region_nfree = 0
    g_region_nslots = 0
    g_region_next = 0

# Counters of one rebuild, for the log line and the tests.
cdef struct restart_counts_t:
    uint64_t restored
    uint64_t expired
    uint64_t flushed
    uint64_t invalid
    uint64_t duplicate
    uint64_t free_chunks

cdef enum:
    CHUNK_CLAIMED = 0x80000000    # item_chunk_t.clsid during a rebuild: a relinked header owns it

cdef inline bint chunk_marked(void* p) noexcept nogil:
    return (<item_chunk_t*>p).magic == CHUNK_MAGIC and (<item_chunk_t*>p).zero == 0

# Is the chunk at `it` (in a page of class `id`) a consistent item header?
cdef bint restart_item_valid(item_t* it, int id) noexcept nogil:
    cdef uint32_t chunk = g_slabclass[id].size
    cdef char* data
    if (it.it_flags & ITEM_LINKED) == 0:
        return False
    if it.nkey == 0 or it.nkey > KEY_MAX_LENGTH:
        return False
    if it.nbytes < 2 or it.nbytes > g_settings.item_size_max + 2:
        return False
    if item_chunked(it):
        # the header only; its chain is checked when it is relinked
        return (it.slabs_clsid == g_power_largest and ITEM_chain(it).hdr_clsid == <uint32_t>id
                and ITEM_footprint(it) <= chunk
                and mc_item_ntotal(it.nkey, it.flags, it.nbytes) <= g_settings.item_size_max)
    if it.slabs_clsid != id:
        return False
    if ITEM_footprint(it) > chunk or ITEM_ntotal(it) > chunk:
        return False
    if item_clsid_of(it.nkey, it.flags, it.nbytes) != id:
        return False
    data = ITEM_data(it)
    if data[it.nbytes - 2] != b'\r' or data[it.nbytes - 1] != b'\n':
        return False
    return True

# Translate and check the chain of chunked header `it` (old address
# `old_it`); on success rewrite its pointers for this mapping and claim its
# chunks. `slot_cls` is each slot's class in the page table (0: none).
cdef bint restart_chain(item_t* it, int64_t shift, uint8_t* slot_cls) noexcept nogil:
    cdef item_chain_t* chain = ITEM_chain(it)
    cdef uintptr_t old_it = <uintptr_t>(<int64_t><uintptr_t>it - shift)
    cdef uintptr_t oldp = <uintptr_t>chain.first
    cdef uintptr_t oldprev = 0
    cdef uint64_t off
    cdef uint64_t slot
    cdef uint64_t inpage
    cdef int cls
    cdef item_chunk_t* ch
    cdef uint64_t total = 0
    cdef uint32_t n = 0
    cdef uint64_t region = g_region_nslots * g_region_slot_size
    while oldp != 0:
        off = <uint64_t>(<int64_t>oldp + shift - <int64_t><uintptr_t>g_region_base)
        if <int64_t>oldp + shift < <int64_t><uintptr_t>g_region_base or off >= region:
            return False
        slot = off // g_region_slot_size
        inpage = off % g_region_slot_size
        cls = slot_cls[slot]
        if cls == 0 or inpage % g_slabclass[cls].size != 0 or \
                inpage // g_slabclass[cls].size >= g_slabclass[cls].perslab:
            return False
        ch = <item_chunk_t*>(g_region_base + off)
        if not chunk_marked(ch) or ch.clsid != <uint32_t>cls or <uintptr_t>ch.head != old_it or \
                <uintptr_t>ch.prev != oldprev or ch.used > ch.size or \
                ch.size + MC_CHUNK_HEADER > g_slabclass[cls].size or n >= chain.nchunks:
            return False
        total += ch.used
        n += 1
        oldprev = oldp
        oldp = <uintptr_t>ch.next
    if total != it.nbytes or n != chain.nchunks:
        return False
    # valid: rewrite for this mapping and claim
    if chain.first != NULL:
        chain.first = <item_chunk_t*>(<int64_t><uintptr_t>chain.first + shift)
    ch = chain.first
    while ch != NULL:
        ch.head = it
        if ch.prev != NULL:
            ch.prev = <item_chunk_t*>(<int64_t><uintptr_t>ch.prev + shift)
        if ch.next != NULL:
            ch.next = <item_chunk_t*>(<int64_t><uintptr_t>ch.next + shift)
        ch.clsid |= CHUNK_CLAIMED
        ch = ch.next
    return item_data_byte(it, it.nbytes - 2) == b'\r' and item_data_byte(it, it.nbytes - 1) == b'\n'

# Last step of a rebuild, per page: chain chunks a relinked header claimed
# count as used; the others are freed.
cdef void restart_sweep_page(char* page, int id, restart_counts_t* rc) noexcept nogil:
    cdef slabclass_t* p = &g_slabclass[id]
    cdef uint64_t i
    cdef item_chunk_t* ch
    for i in range(p.perslab):
        ch = <item_chunk_t*>(page + i * p.size)
        if not chunk_marked(ch):
            continue
        if ch.clsid & CHUNK_CLAIMED:
            ch.clsid &= ~(<uint32_t>CHUNK_CLAIMED)
            p.used_chunks += 1
        else:
            restart_chunk_free(p, <item_t*>ch)
            rc.free_chunks += 1

cdef inline void restart_chunk_free(slabclass_t* p, item_t* it) noexcept nogil:
    (<item_chunk_t*>it).magic = 0
    it.it_flags = 0
    (<void**>it)[0] = p.slots
    p.slots = it
    p.sl_curr += 1

cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil

cdef enum:
    RESTART_PREFETCH = 16        # items ahead whose hash bucket is fetched early

# Rebuild one page of class `id` found at slot `slot`. `delta` moves item
# times from the old process's clock onto this one's. `hs` and `ok` have room
# for a hash and a flag per chunk of the page. Two passes: the first
# validates each chunk and hashes its key (the page is read in order), the
# second links, fetching each item's hash bucket RESTART_PREFETCH items
# ahead: with millions of items the buckets are spread over many MB and the
# cache misses on them were most of a rebuild's time.
cdef int restart_page(uint64_t slot, int id, int64_t delta, int64_t old_oldest_live,
                      uint64_t old_oldest_cas, bint flush_passed, uint64_t* hs,
                      char* ok, restart_counts_t* rc, int64_t shift, bint chains,
                      uint8_t* slot_cls) noexcept nogil:
    global g_mem_malloced
    cdef slabclass_t* p = &g_slabclass[id]
    cdef char* page = g_region_base + slot * g_region_slot_size
    cdef uint64_t length = SLAB_PAGE_SIZE
    cdef uint64_t i
    cdef uint64_t n = p.perslab
    cdef item_t* it
    cdef void** nl
    cdef int64_t t
    cdef int64_t e
    cdef uint64_t h
    cdef shard_t* s
    cdef rel_time_t now = current_time()
    cdef int seg
    cdef bint dead
    if p.slabs == p.list_size:
        nl = <void**>realloc_ptrs(p.slab_list, p.list_size * 2 if p.list_size else 16)
        if nl == NULL:
            return -1
        p.slab_list = nl
        p.list_size = p.list_size * 2 if p.list_size else 16
    p.slab_list[p.slabs] = page
    p.slabs += 1
    g_mem_malloced += length
    for i in range(n):
        ok[i] = 0
        it = <item_t*>(page + i * p.size)
        if chunk_marked(it):
            continue               # a chain's chunk: the sweep decides
        if not restart_item_valid(it, id) or (item_chunked(it) and not chains):
            if it.it_flags & ITEM_LINKED:
                rc.invalid += 1
            restart_chunk_free(p, it)
            rc.free_chunks += 1
            continue
        # flushed (a flush_all horizon, on the old clock, passed by now): the
        # same test as item_dead, made on the old clock's values
        if flush_passed and (<int64_t>it.time <= old_oldest_live or (
                <int64_t>it.time == old_oldest_live + 1 and (
                    (((it.it_flags & ITEM_EPOCH_MASK) >> 8) != flush_epoch(old_oldest_cas))
                    if it.it_flags & ITEM_CAS_CLIENT else
                    (old_oldest_cas != 0 and it.cas != 0 and it.cas < old_oldest_cas)))):
            rc.flushed += 1
            restart_chunk_free(p, it)
            continue
        hs[i] = hash_key(ITEM_key(it), it.nkey)
        ok[i] = 1
    for i in range(n):
        if i + RESTART_PREFETCH < n and ok[i + RESTART_PREFETCH]:
            h = hs[i + RESTART_PREFETCH]
            s = shard_of(h)
            __builtin_prefetch(&s.buckets[bucket_hv(h) & ((<uint32_t>1 << s.hashpower) - 1)])
        if not ok[i]:
            continue
        h = hs[i]
        it = <item_t*>(page + i * p.size)
        dead = False
        if it.exptime != 0:
            e = <int64_t>it.exptime + delta
            if e <= <int64_t>now:
                # expired during the downtime: linked all the same, as memcached
                # relinks it, so the crawler or a lookup reclaims it and counts it
                # (total_items, expired_unfetched, crawler_reclaimed as memcached's);
                # its exptime stays in the past, so no lookup can return it
                dead = True
                e = e if e >= 1 else 1
            it.exptime = <rel_time_t>e
        t = <int64_t>it.time + delta
        it.time = <rel_time_t>(t if t > 1 else 1)
        s = shard_of(h)
        it.hv = bucket_hv(h)
        if assoc_find(s, ITEM_key(it), it.nkey, it.hv) != NULL:
            rc.duplicate += 1
            restart_chunk_free(p, it)
            continue
        if item_chunked(it) and not restart_chain(it, shift, slot_cls):
            rc.invalid += 1
            restart_chunk_free(p, it)
            continue
        it.it_flags &= ~ITEM_PINNED
        if item_chunked(it):
            ITEM_chain(it).refcount = 0     # replies in flight died with the old process
        it.next = NULL
        it.prev = NULL
        it.h_next = NULL
        assoc_insert(s, it)
        # back into the segment it was in, as memcached (its LRU lists survive
        # in the mapping); COLD when the LRU is no longer segmented
        seg = item_seg(it)
        if seg == SEG_TEMP and not g_settings.temp_lru:
            seg = SEG_COLD
        lru_link_seg(s, it, seg if g_settings.lru_segmented or seg == SEG_TEMP else SEG_COLD)
        s.curr_items += 1
        s.total_items += 1
        s.bytes += ITEM_ntotal(it)
        sizes_track(it, 1)
        if item_chunked(it):
            g_slabclass[it.slabs_clsid].requested += ITEM_ntotal(it)
        else:
            p.requested += ITEM_ntotal(it)
        p.used_chunks += 1
        if dead:
            rc.expired += 1
        else:
            rc.restored += 1
    return 0

# Python side ------------------------------------------------------------------

def restart_region_attach(object region, uint64_t slot_size, uint64_t nslots):
    """Use `region` (a writable buffer, the mmap of the memory file) for slab
    pages. Call right after the core is initialised, before serving."""
    global g_region_obj
    cdef unsigned char[::1] mv = region
    if <uint64_t>mv.shape[0] < slot_size * nslots:
        raise ValueError("memory region smaller than its slots")
    if g_region_base != NULL:
        raise RuntimeError("memory region already attached")
    if region_init(<char*>&mv[0], slot_size, nslots) != 0:
        raise MemoryError("cannot allocate the region's slot table")
    g_region_obj = mv

def restart_region_detach():
    """Forget the region (after the core is destroyed) so it can be unmapped."""
    global g_region_obj
    region_destroy()
    g_region_obj = None

def restart_pages():
    """[(slot, class)] for every page the slab classes own, in slot order."""
    cdef int id
    cdef uint64_t j
    out = []
    if g_region_base == NULL:
        return out
    for id in range(1, MAX_SLAB_CLASSES):
        for j in range(g_slabclass[id].slabs):
            out.append(((<char*>g_slabclass[id].slab_list[j] - g_region_base) // g_region_slot_size,
                        id, SLAB_PAGE_SIZE))
    out.sort()
    return out

def restart_state():
    """The clock, CAS and flush state to carry over a restart."""
    return {
        "process_started": int(g_process_started),
        "current_time": int(current_time()),
        "current_cas": int(mc_load_u64(&g_cas_id)),
        "oldest_cas": int(mc_load_u64(&g_settings.oldest_cas)),
        "oldest_live": int(mc_load_u32(&g_settings.oldest_live)),
        "item_header": int(sizeof(item_t)),
        "region_base": int(<uintptr_t>g_region_base),
        "hashpower": [g_shards[i].hashpower for i in range(g_nshards)],
    }

cdef int restart_presize(int i, uint32_t hashpower) noexcept nogil:
    # Give shard i's (still empty) table the size it had grown to, as memcached
    # restores its hashpower: no rehash while millions of items are relinked.
    cdef item_t** nb
    if hashpower > 30:
        hashpower = 30
    if g_shards[i].hash_items != 0 or g_shards[i].hashpower >= hashpower or \
            g_shards[i].old_buckets != NULL:
        return 0
    nb = <item_t**>calloc(<size_t>1 << hashpower, sizeof(item_t*))
    if nb == NULL:
        return -1
    free(g_shards[i].buckets)
    g_shards[i].buckets = nb
    g_shards[i].hashpower = hashpower
    return 0

def restart_rebuild(list pages, long long old_process_started, unsigned long long current_cas,
                    unsigned long long oldest_cas, unsigned int oldest_live,
                    list hashpower=None, old_base=None):
    """Relink every valid, live item of `pages` ([(slot, class)]) and restore
    the CAS counter and flush horizon. Returns the counts of what was found."""
    global g_region_next, g_region_nfree
    cdef restart_counts_t rc
    cdef int64_t delta = <int64_t>(old_process_started - <long long>g_process_started)
    cdef int64_t new_oldest_live = <int64_t>oldest_live + delta
    cdef bint flush_passed = oldest_live != 0 and new_oldest_live <= <int64_t>current_time()
    cdef uint64_t slot
    cdef int id
    cdef char* used
    cdef uint64_t* hs = NULL
    cdef char* ok = NULL
    cdef uint64_t maxper = 1
    cdef uint64_t k
    cdef uint8_t* slot_cls = NULL
    # chains hold the old mapping's addresses: without its base, chunked
    # items are dropped (their chunks freed by the sweep)
    cdef bint chains = old_base is not None
    cdef int64_t shift = (<int64_t><uintptr_t>g_region_base - <int64_t><uintptr_t>old_base) if chains else 0
    if g_region_base == NULL:
        raise RuntimeError("no memory region attached")
    memset(&rc, 0, sizeof(rc))
    if hashpower is not None and len(hashpower) == g_nshards:     # same -o shards
        for k in range(g_nshards):
            if restart_presize(<int>k, <uint32_t>hashpower[k]) != 0:
                raise MemoryError("cannot size the hash tables")
    used = <char*>calloc(g_region_nslots if g_region_nslots else 1, 1)
    slot_cls = <uint8_t*>calloc(g_region_nslots if g_region_nslots else 1, 1)
    if used == NULL or slot_cls == NULL:
        free(used)
        free(slot_cls)
        raise MemoryError()
    try:
        for slot, id, _length in pages:
            if slot >= g_region_nslots or id < 1 or id >= MAX_SLAB_CLASSES or \
                    g_slabclass[id].size == 0 or used[slot] or \
                    SLAB_PAGE_SIZE > g_region_slot_size:
                raise ValueError(f"bad page table entry ({slot}, {id})")
            used[slot] = 1
            slot_cls[slot] = <uint8_t>id
        for k in range(1, MAX_SLAB_CLASSES):
            if g_slabclass[k].perslab > maxper:
                maxper = g_slabclass[k].perslab
        hs = <uint64_t*>malloc(maxper * sizeof(uint64_t))
        ok = <char*>malloc(maxper)
        if hs == NULL or ok == NULL:
            raise MemoryError()
        for slot, id, _length in pages:
            with nogil:
                if restart_page(slot, id, delta, oldest_live, oldest_cas, flush_passed,
                                hs, ok, &rc, shift, chains, slot_cls) != 0:
                    raise MemoryError()
        for slot, id, _length in pages:
            restart_sweep_page(g_region_base + <uint64_t>slot * g_region_slot_size, id, &rc)
        # every slot not in the table is free; slots past the last page are
        # handed out from the end, the gaps from the stack
        g_region_next = 0
        for k in range(g_region_nslots):
            if used[k]:
                g_region_next = k + 1
        g_region_nfree = 0
        for k in range(g_region_next):
            if not used[k]:
                g_region_free[g_region_nfree] = <uint32_t>k
                g_region_nfree += 1
    finally:
        free(used)
        free(slot_cls)
        free(hs)
        free(ok)
    cas_reset(current_cas if current_cas > 0 else 1, g_cas_batch)
    # the horizon moves onto the new clock (items it killed were dropped above;
    # a delayed flush_all still to come keeps its time); one from before this
    # clock's origin has nothing left to kill
    if oldest_live != 0 and new_oldest_live >= 1:
        mc_store_u32(&g_settings.oldest_live, <rel_time_t>new_oldest_live)
        mc_store_u64(&g_settings.oldest_cas, oldest_cas)
    return {"restored": rc.restored, "expired": rc.expired, "flushed": rc.flushed,
            "invalid": rc.invalid, "duplicate": rc.duplicate, "free_chunks": rc.free_chunks}

def restart_item_header():
    """sizeof(item_t): part of the layout a memory file must have been written with."""
    return sizeof(item_t)
