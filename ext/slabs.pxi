# slabs.pxi -- the slab allocator: size classes, 1 MiB pages, free chunks.
#
# Memory for items comes only from here. Pages are malloc'd one at a time and
# each belongs to one slab class until the page mover (slabs_rebalance.pxi)
# empties it and hands it to another class; a page is cut
# into chunks of its class's size lazily, so RSS grows with use. The total of
# pages is capped by the memory limit (-m), except that a class may always get
# its first page, exactly as memcached allows.
#
# The global page pool is class 0's page list, as in memcached: pages the page
# mover empties for "class 0" (slabs reassign N 0, the automover's reclaim)
# wait there, and a class that needs a page takes one from the pool before
# asking malloc, even when the memory limit is reached (the pool's pages are
# already counted). When the limit is lowered (cache_memlimit) pooled pages
# beyond it are freed (memory_release). total_malloced is the bytes of pages
# malloc'd and not freed, so it is memcached's number.
#
# Class sizes follow memcached: the smallest chunk is the item header plus -n
# bytes, each next class is -f times larger (8-byte aligned) until
# slab_chunk_size_max, which is the last class. Items larger than that (up to
# -I) are chunked as memcached's (items.pxi): a header chunk from a small
# class and a chain of slab_chunk_max chunks, the last from the class that
# fits the rest. The chain is linked, and freed as a whole, under
# g_slabs_lock, so the page mover, holding it, can trust a chunk's magic and
# head (item_chunk_t in memcachepy_core.pxd).
#
# Worker stashes. Each worker keeps a few free chunks per class of its own
# (worker_t.sc, slab_cache_t), taken from and given back to the classes in
# batches (slab_cache_class_t.batch, up to 16 chunks) under g_slabs_lock, so
# a store that replaces an item (alloc the new chunk, free the old one) takes
# no global lock and writes no line another worker writes. memcached's
# numbers stay exact: a stashed chunk counts as used in g_slabclass (it left
# the free list) and `stats` subtracts the stashes again (slabs_stashed), so
# used_chunks, free_chunks and mem_requested (each worker's share is summed)
# are memcached's. Where memcached would take a free chunk, one is taken:
# before a class gets a new page, or before a store evicts, a worker with an
# empty stash takes a chunk from another worker's stash (slabs_steal); the
# page mover pulls the chunks of the page it empties out of every stash
# (slabs_stash_purge_page) and its rescues may take stashed chunks too.
# Threads that are not workers (the acceptor's maintainer, crawler and mover,
# the test API) use the classes directly. Only workers write their own
# stash's `requested`; counts change under the stash lock.
#
# Locking: g_slabs_lock guards everything here but the stashes, each guarded
# by its own lock. Lock order: shard -> stash -> slabs; never two stashes.

from libc.stdlib cimport malloc, free, calloc, realloc, getenv, strtoll
from libc.string cimport memset

cdef slabclass_t g_slabclass[MAX_SLAB_CLASSES]
cdef int g_power_largest = 0
cdef uint64_t g_mem_limit = 0
cdef uint64_t g_mem_malloced = 0
cdef uint64_t g_malloc_fails = 0
cdef pthread_mutex_t g_slabs_lock

cdef enum:
    SLAB_GLOBAL_PAGE_POOL = 0

cdef uint64_t CHUNK_MAGIC = 0x4b4e484344454e43    # a chunk in a chain ("CNEDCHNK")

cdef void slabs_init(uint64_t limit, double factor, uint32_t item_header) noexcept nogil:
    global g_power_largest, g_mem_limit, g_mem_malloced
    cdef int i = 0
    cdef uint32_t size = item_header + <uint32_t>g_settings.chunk_size
    cdef uint32_t chunk_max = g_settings.slab_chunk_size_max
    memset(g_slabclass, 0, sizeof(g_slabclass))
    pthread_mutex_init(&g_slabs_lock, NULL)
    g_mem_limit = limit
    g_mem_malloced = 0
    # memcached's test suite fakes memory already malloc'd (t/64bit.t)
    cdef char* t_initial = getenv(b"T_MEMD_INITIAL_MALLOC")
    cdef char* t_end = NULL
    cdef long long t_val
    if t_initial != NULL and t_initial[0] != 0:
        t_val = strtoll(t_initial, &t_end, 10)
        if t_end != NULL and t_end[0] == 0 and t_val >= 0:
            g_mem_malloced = <uint64_t>t_val
    while True:
        i += 1
        if i >= MC_MAX_CLASSES - 1:
            break
        if size >= chunk_max / factor:
            break
        if size % CHUNK_ALIGN_BYTES:
            size += CHUNK_ALIGN_BYTES - (size % CHUNK_ALIGN_BYTES)
        g_slabclass[i].size = size
        g_slabclass[i].perslab = SLAB_PAGE_SIZE // size
        size = <uint32_t>(size * factor)
    g_power_largest = i
    g_slabclass[i].size = chunk_max
    g_slabclass[i].perslab = SLAB_PAGE_SIZE // chunk_max

cdef void slabs_destroy() noexcept nogil:
    global g_mem_malloced
    cdef int i
    cdef uint64_t j
    for i in range(MAX_SLAB_CLASSES):
        if g_region_base == NULL:     # -e: pages belong to the memory file
            for j in range(g_slabclass[i].slabs):
                free(g_slabclass[i].slab_list[j])
        free(g_slabclass[i].slab_list)
    memset(g_slabclass, 0, sizeof(g_slabclass))
    g_mem_malloced = 0

# Smallest class whose chunks hold `size` bytes; 0 if none can (a chunked item).
cdef inline int slabs_clsid(size_t size) noexcept nogil:
    cdef int lo = 1
    cdef int hi
    cdef int mid
    if size == 0:
        return 0
    hi = g_power_largest
    if size > g_slabclass[hi].size:
        return 0
    # binary search: classes are sorted by size
    while lo < hi:
        mid = (lo + hi) >> 1
        if g_slabclass[mid].size >= size:
            hi = mid
        else:
            lo = mid + 1
    return lo

# Caller holds g_slabs_lock. Pop the newest page of the global pool, NULL if empty.
cdef char* get_page_from_global_pool() noexcept nogil:
    cdef slabclass_t* g = &g_slabclass[SLAB_GLOBAL_PAGE_POOL]
    if g.slabs < 1:
        return NULL
    g.slabs -= 1
    return <char*>g.slab_list[g.slabs]

# Caller holds g_slabs_lock. Put an emptied page into the global pool; False
# (page not taken) when the pool's list cannot grow.
cdef bint slabs_page_to_global_pool(char* page) noexcept nogil:
    cdef slabclass_t* g = &g_slabclass[SLAB_GLOBAL_PAGE_POOL]
    cdef void** nl
    if g.slabs == g.list_size:
        nl = <void**>realloc_ptrs(g.slab_list, g.list_size * 2 if g.list_size else 16)
        if nl == NULL:
            return False
        g.slab_list = nl
        g.list_size = g.list_size * 2 if g.list_size else 16
    g.slab_list[g.slabs] = page
    g.slabs += 1
    return True

# Caller holds g_slabs_lock. Free pooled pages while more is malloc'd than the
# limit allows (memcached's memory_release; only with the page mover on).
cdef void memory_release() noexcept nogil:
    global g_mem_malloced
    cdef char* page
    if not g_settings.slab_reassign:
        return
    while g_mem_limit and g_mem_malloced > g_mem_limit:
        page = get_page_from_global_pool()
        if page == NULL:
            break
        slabs_page_release(page)     # free(), or back to the memory file (-e)
        g_mem_malloced -= SLAB_PAGE_SIZE

cdef uint64_t global_page_pool_size() noexcept nogil:
    cdef uint64_t n
    pthread_mutex_lock(&g_slabs_lock)
    n = g_slabclass[SLAB_GLOBAL_PAGE_POOL].slabs
    pthread_mutex_unlock(&g_slabs_lock)
    return n

# Caller holds g_slabs_lock. Returns 0 when the memory limit forbids a page.
cdef int do_slabs_newslab(int id) noexcept nogil:
    global g_mem_malloced, g_malloc_fails
    cdef slabclass_t* p = &g_slabclass[id]
    cdef uint64_t length = SLAB_PAGE_SIZE
    cdef void** nl
    cdef char* page = NULL
    cdef bint pooled = g_slabclass[SLAB_GLOBAL_PAGE_POOL].slabs > 0
    if g_mem_limit and g_mem_malloced + length > g_mem_limit and p.slabs > 0 \
            and not pooled:
        return 0
    if p.slabs == p.list_size:
        nl = <void**>realloc_ptrs(p.slab_list, p.list_size * 2 if p.list_size else 16)
        if nl == NULL:
            return 0
        p.slab_list = nl
        p.list_size = p.list_size * 2 if p.list_size else 16
    if pooled:
        page = get_page_from_global_pool()
        if MC_UNLIKELY(g_region_base != NULL):
            # -e: no header of the page's old class may sit at a chunk
            # boundary of this one (a warm restart walks pages by class)
            memset(page, 0, SLAB_PAGE_SIZE)
    else:
        if MC_UNLIKELY(g_region_base != NULL):
            page = region_page_alloc(length)     # -e: a slot of the memory file (restart.pxi)
        else:
            page = <char*>malloc(length)
        if page == NULL:
            g_malloc_fails += 1
            return 0
        g_mem_malloced += length
    p.slab_list[p.slabs] = page
    p.slabs += 1
    p.end_page_ptr = page
    p.end_page_free = p.perslab
    return 1

cdef inline void* realloc_ptrs(void** old, uint64_t n) noexcept nogil:
    return realloc(old, n * sizeof(void*))

# Take one chunk of class `id`; NULL if the class is empty and no page may be added.
cdef void* slabs_alloc(size_t size, int id) noexcept nogil:
    cdef slab_cache_t* sc = <slab_cache_t*>g_tl_slab_cache
    if sc != NULL:
        return slabs_stash_alloc(sc, size, id)
    return slabs_alloc_chunk(size, id, True)

# Takes g_slabs_lock itself (not a do_ function: the caller holds no slabs
# lock). `newpage` false: only chunks the class already has (the page mover's
# rescues).
cdef void* slabs_alloc_chunk(size_t size, int id, bint newpage) noexcept nogil:
    cdef slabclass_t* p = &g_slabclass[id]
    cdef void* ret = NULL
    pthread_mutex_lock(&g_slabs_lock)
    if p.sl_curr == 0 and p.end_page_free == 0 and newpage:
        do_slabs_newslab(id)
    if p.sl_curr > 0:
        ret = p.slots
        p.slots = (<void**>ret)[0]
        p.sl_curr -= 1
    elif p.end_page_free > 0:
        ret = p.end_page_ptr
        p.end_page_ptr += p.size
        p.end_page_free -= 1
    if ret != NULL:
        p.requested += size
        p.used_chunks += 1
        # no stale chunk mark may survive into whatever the caller makes of it
        (<item_chunk_t*>ret).magic = 0
    pthread_mutex_unlock(&g_slabs_lock)
    return ret

# Caller holds g_slabs_lock. One chunk back to its class (or counted, if its
# page is being emptied).
cdef inline void do_slabs_free(void* ptr, size_t size, int id) noexcept nogil:
    global g_moving_reclaimed
    cdef slabclass_t* p = &g_slabclass[id]
    (<item_chunk_t*>ptr).magic = 0
    if MC_UNLIKELY(in_moving_page(ptr)):
        # the page is being emptied (slabs_rebalance.pxi): count, don't reuse
        g_moving_reclaimed += 1
    else:
        (<void**>ptr)[0] = p.slots
        p.slots = ptr
        p.sl_curr += 1
    p.requested -= size
    p.used_chunks -= 1

# Append `ch` (a chunk of class `id` just taken with slabs_alloc) to the chain
# of chunked item `it` after `last` (NULL: as the first chunk). Under
# g_slabs_lock, so the page mover never sees a half-linked chunk.
cdef void slabs_chain_link(item_t* it, item_chain_t* chain, item_chunk_t* last,
                           item_chunk_t* ch, int id, uint32_t size) noexcept nogil:
    pthread_mutex_lock(&g_slabs_lock)
    ch.next = NULL
    ch.prev = last
    ch.head = it
    ch.size = size
    ch.used = 0
    ch.clsid = <uint32_t>id
    ch.zero = 0
    ch.magic = CHUNK_MAGIC
    if last == NULL:
        chain.first = ch
    else:
        last.next = ch
    chain.nchunks += 1
    pthread_mutex_unlock(&g_slabs_lock)

# Free a chunked item: its header chunk and every chunk of its chain, in one
# hold of g_slabs_lock (the page mover relies on a chain never being half
# freed). `requested` is what the item counted in its LRU class.
cdef void slabs_free_chain(item_t* it, item_chain_t* chain, size_t requested) noexcept nogil:
    cdef item_chunk_t* ch = chain.first
    cdef item_chunk_t* nx
    pthread_mutex_lock(&g_slabs_lock)
    while ch != NULL:
        nx = ch.next
        do_slabs_free(ch, 0, <int>ch.clsid)
        ch = nx
    chain.first = NULL
    chain.nchunks = 0
    g_slabclass[it.slabs_clsid].requested -= requested
    do_slabs_free(it, 0, <int>chain.hdr_clsid)
    pthread_mutex_unlock(&g_slabs_lock)

# A chunked item's full size counts in its LRU class's mem_requested, as memcached's.
cdef void slabs_requested_add(int id, size_t size) noexcept nogil:
    pthread_mutex_lock(&g_slabs_lock)
    g_slabclass[id].requested += size
    pthread_mutex_unlock(&g_slabs_lock)

cdef void slabs_requested_sub(int id, size_t size) noexcept nogil:
    pthread_mutex_lock(&g_slabs_lock)
    g_slabclass[id].requested -= size
    pthread_mutex_unlock(&g_slabs_lock)

cdef void slabs_free(void* ptr, size_t size, int id) noexcept nogil:
    cdef slab_cache_t* sc = <slab_cache_t*>g_tl_slab_cache
    if sc != NULL:
        slabs_stash_free(sc, ptr, size, id)
        return
    pthread_mutex_lock(&g_slabs_lock)
    do_slabs_free(ptr, size, id)
    pthread_mutex_unlock(&g_slabs_lock)

# ---------------------------------------------------------------- worker stashes

# A refill takes up to `batch` chunks; a stash above 2 x batch gives `batch`
# back. Classes with few chunks per page stash fewer (a 512 KB class: one),
# so a stash never holds a large share of a page.
cdef inline uint32_t slabs_stash_batch(uint32_t perslab) noexcept nogil:
    cdef uint32_t b = perslab // 64
    if b < 1:
        return 1
    if b > 16:
        return 16
    return b

# Set a worker's stash up (empty) before its thread runs.
cdef void slabs_stash_init(slab_cache_t* sc) noexcept nogil:
    cdef int i
    memset(sc, 0, sizeof(slab_cache_t))
    pthread_mutex_init(&sc.lock, NULL)
    for i in range(MAX_SLAB_CLASSES):
        sc.cls[i].batch = slabs_stash_batch(g_slabclass[i].perslab)

# Chunks of class `id` in every stash (relaxed reads: exact when no store runs).
cdef uint64_t slabs_stashed(int id) noexcept nogil:
    cdef uint64_t n = 0
    cdef int w
    for w in range(g_nworkers):
        n += mc_load_u32(&g_workers[w].sc.cls[id].count)
    return n

# The workers' shares of class `id`'s mem_requested (each may be "negative").
cdef uint64_t slabs_stash_requested(int id) noexcept nogil:
    cdef uint64_t n = 0
    cdef int w
    for w in range(g_nworkers):
        n += mc_load_u64(&g_workers[w].sc.cls[id].requested)
    return n

# True when a stash other than `self` holds chunks of class `id`.
cdef inline bint slabs_stash_others(slab_cache_t* self, int id) noexcept nogil:
    cdef int w
    for w in range(g_nworkers):
        if &g_workers[w].sc != self and mc_load_u32(&g_workers[w].sc.cls[id].count) != 0:
            return True
    return False

# One chunk of class `id` from a stash other than `self` (the caller holds no
# stash lock); NULL if none has one. The chunk stays counted as used.
cdef void* slabs_steal(slab_cache_t* self, int id) noexcept nogil:
    cdef int w
    cdef slab_cache_t* o
    cdef slab_cache_class_t* cc
    cdef void* ret = NULL
    for w in range(g_nworkers):
        o = &g_workers[w].sc
        if o == self or mc_load_u32(&o.cls[id].count) == 0:
            continue
        pthread_mutex_lock(&o.lock)
        cc = &o.cls[id]
        ret = cc.head
        if ret != NULL:
            cc.head = (<void**>ret)[0]
            mc_store_u32(&cc.count, cc.count - 1)
        pthread_mutex_unlock(&o.lock)
        if ret != NULL:
            break
    return ret

# Caller holds sc.lock. Refill an empty stash with up to `batch` chunks of
# class `id` (the free list first, then never-used chunks of the newest page,
# then a new page, as memcached's do_slabs_alloc prefers them) and take one.
# NULL when the class has none: `*steal` then says whether another stash has
# some (a new page is only added when none does, as memcached adds one only
# when the class has no free chunk).
cdef void* slabs_stash_refill(slab_cache_t* sc, slab_cache_class_t* cc, int id,
                              bint* steal) noexcept nogil:
    cdef slabclass_t* p = &g_slabclass[id]
    cdef void* ret = NULL
    cdef void* last = NULL
    cdef void* ch
    cdef uint32_t k = 0
    cdef uint32_t want = cc.batch
    steal[0] = False
    pthread_mutex_lock(&g_slabs_lock)
    if p.sl_curr == 0 and p.end_page_free == 0:
        if slabs_stash_others(sc, id):
            steal[0] = True
            pthread_mutex_unlock(&g_slabs_lock)
            return NULL
        do_slabs_newslab(id)
    while k < want:
        if p.sl_curr > 0:
            ch = p.slots
            p.slots = (<void**>ch)[0]
            p.sl_curr -= 1
        elif p.end_page_free > 0:
            ch = p.end_page_ptr
            p.end_page_ptr += p.size
            p.end_page_free -= 1
        else:
            break
        # kept in the order taken: chunks go out in the order memcached's
        # allocator would hand them out (a warm restart relinks by address)
        if ret == NULL:
            ret = ch
        else:
            (<void**>last)[0] = ch
        last = ch
        k += 1
    p.used_chunks += k
    if ret != NULL:
        (<void**>last)[0] = NULL
        # published before the slabs lock goes: a worker that finds the class
        # empty must see these before it adds a page
        cc.head = (<void**>ret)[0]
        mc_store_u32(&cc.count, k - 1)
    pthread_mutex_unlock(&g_slabs_lock)
    return ret

# A worker's slabs_alloc: a chunk from its stash, refilled in a batch when
# empty; else one from another stash; else the classes' own path (which may
# add a page). NULL when the class is out of memory.
cdef void* slabs_stash_alloc(slab_cache_t* sc, size_t size, int id) noexcept nogil:
    cdef slab_cache_class_t* cc = &sc.cls[id]
    cdef void* ret
    cdef bint steal = False
    pthread_mutex_lock(&sc.lock)
    ret = cc.head
    if MC_LIKELY(ret != NULL):
        cc.head = (<void**>ret)[0]
        mc_store_u32(&cc.count, cc.count - 1)
    else:
        ret = slabs_stash_refill(sc, cc, id, &steal)
    pthread_mutex_unlock(&sc.lock)
    if ret == NULL:
        if steal:
            ret = slabs_steal(sc, id)
        if ret == NULL:
            # nothing stashed anywhere, or it was taken meanwhile: the classes
            # decide (a page if the limit allows), counting `size` themselves
            return slabs_alloc_chunk(size, id, True)
    mc_stat_add(&cc.requested, size)
    # no stale chunk mark may survive into whatever the caller makes of it
    (<item_chunk_t*>ret).magic = 0
    return ret

# Caller holds sc.lock. Give `n` chunks of the stash back to their class.
cdef void slabs_stash_drain(slab_cache_class_t* cc, int id, uint32_t n) noexcept nogil:
    cdef void* ch
    cdef uint32_t k = 0
    pthread_mutex_lock(&g_slabs_lock)
    while k < n and cc.head != NULL:
        ch = cc.head
        cc.head = (<void**>ch)[0]
        do_slabs_free(ch, 0, id)
        k += 1
    pthread_mutex_unlock(&g_slabs_lock)
    mc_store_u32(&cc.count, cc.count - k)

# A worker's slabs_free: onto its stash, unless the chunk's page is being
# emptied (then the mover counts it, under the slabs lock). The stash lock
# orders this against the mover's purge: a chunk pushed before it is purged,
# one freed after it sees g_moving_page.
cdef void slabs_stash_free(slab_cache_t* sc, void* ptr, size_t size, int id) noexcept nogil:
    cdef slab_cache_class_t* cc = &sc.cls[id]
    cdef char* moving
    pthread_mutex_lock(&sc.lock)
    moving = mc_load_page(&g_moving_page)
    if MC_UNLIKELY(moving != NULL and <char*>ptr >= moving and <char*>ptr < moving + SLAB_PAGE_SIZE):
        pthread_mutex_lock(&g_slabs_lock)
        do_slabs_free(ptr, size, id)
        pthread_mutex_unlock(&g_slabs_lock)
        pthread_mutex_unlock(&sc.lock)
        return
    (<item_chunk_t*>ptr).magic = 0
    (<void**>ptr)[0] = cc.head
    cc.head = ptr
    mc_store_u32(&cc.count, cc.count + 1)
    mc_stat_add(&cc.requested, <uint64_t>0 - size)
    if MC_UNLIKELY(cc.count > 2 * cc.batch):
        slabs_stash_drain(cc, id, cc.batch)
    pthread_mutex_unlock(&sc.lock)

# The worker stops: every stashed chunk back to its class and its share of
# mem_requested folded into the class's (its worker_t goes away).
cdef void slabs_stash_flush(slab_cache_t* sc) noexcept nogil:
    cdef int i
    pthread_mutex_lock(&sc.lock)
    for i in range(MAX_SLAB_CLASSES):
        if sc.cls[i].count:
            slabs_stash_drain(&sc.cls[i], i, sc.cls[i].count)
        pthread_mutex_lock(&g_slabs_lock)
        g_slabclass[i].requested += sc.cls[i].requested
        mc_store_u64(&sc.cls[i].requested, 0)
        pthread_mutex_unlock(&g_slabs_lock)
    pthread_mutex_unlock(&sc.lock)

# Page mover, step 1 (the caller holds no lock; g_moving_page is set): take
# every chunk of the moving page out of the stashes, counted as reclaimed.
cdef void slabs_stash_purge_page(int id) noexcept nogil:
    global g_moving_reclaimed
    cdef int w
    cdef slab_cache_t* sc
    cdef slab_cache_class_t* cc
    cdef void** pos
    cdef uint32_t removed
    for w in range(g_nworkers):
        sc = &g_workers[w].sc
        pthread_mutex_lock(&sc.lock)
        cc = &sc.cls[id]
        removed = 0
        pos = &cc.head
        while pos[0] != NULL:
            if in_moving_page(pos[0]):
                pos[0] = (<void**>pos[0])[0]
                removed += 1
            else:
                pos = <void**>pos[0]
        if removed:
            mc_store_u32(&cc.count, cc.count - removed)
            pthread_mutex_lock(&g_slabs_lock)
            g_slabclass[id].used_chunks -= removed
            g_moving_reclaimed += removed
            pthread_mutex_unlock(&g_slabs_lock)
        pthread_mutex_unlock(&sc.lock)

# The page mover is about to empty a page of class `id`: every worker's
# stashed chunks of the class go back to the class's free list first, in the
# order they were freed (the stash's head, its newest, ends on top), so the
# free list is the one memcached would have: its count of inline reclaims
# (slabs_rebalance.pxi) replays that list.
cdef void slabs_stash_return_class(int id) noexcept nogil:
    cdef int w
    cdef slab_cache_t* sc
    cdef slab_cache_class_t* cc
    cdef void** arr
    cdef void* ch
    cdef uint32_t n
    cdef uint32_t k
    for w in range(g_nworkers):
        sc = &g_workers[w].sc
        pthread_mutex_lock(&sc.lock)
        cc = &sc.cls[id]
        n = cc.count
        if n == 0:
            pthread_mutex_unlock(&sc.lock)
            continue
        arr = <void**>malloc(n * sizeof(void*))
        if arr == NULL:
            slabs_stash_drain(cc, id, n)
            pthread_mutex_unlock(&sc.lock)
            continue
        k = 0
        ch = cc.head
        while ch != NULL and k < n:
            arr[k] = ch
            k += 1
            ch = (<void**>ch)[0]
        pthread_mutex_lock(&g_slabs_lock)
        while k > 0:
            k -= 1
            do_slabs_free(arr[k], 0, id)
        pthread_mutex_unlock(&g_slabs_lock)
        cc.head = ch
        mc_store_u32(&cc.count, 0 if ch == NULL else cc.count - n)
        pthread_mutex_unlock(&sc.lock)
        free(arr)

# The page mover's rescue allocation: a free chunk of the class, or a stashed
# one (memcached's free list holds both), never a new page.
cdef void* slabs_alloc_rescue(size_t size, int id) noexcept nogil:
    cdef void* ret = slabs_alloc_chunk(size, id, False)
    if ret != NULL:
        return ret
    ret = slabs_steal(NULL, id)
    if ret != NULL:
        (<item_chunk_t*>ret).magic = 0
        if size:
            pthread_mutex_lock(&g_slabs_lock)
            g_slabclass[id].requested += size
            pthread_mutex_unlock(&g_slabs_lock)
    return ret

cdef void slabs_adjust_mem_limit(uint64_t new_limit) noexcept nogil:
    global g_mem_limit
    pthread_mutex_lock(&g_slabs_lock)
    g_mem_limit = new_limit
    memory_release()        # free what already waits in the global pool
    pthread_mutex_unlock(&g_slabs_lock)
