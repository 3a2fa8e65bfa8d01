# slabs_rebalance.pxi -- moving pages between slab classes.
#
# Pages belong to one class for life unless moved here. `slabs reassign
# <src> <dst>` (and the automover, `slabs automove 1`) ask for one page of
# class src to be emptied and given to class dst (or, for dst 0, put in the
# global page pool, slabs.pxi, from which any class can take it). The move runs in the acceptor
# thread, in the background, as memcached's rebalancer thread does:
#
#  1. under the slabs lock, pick src's oldest page, take its free chunks off
#     src's free list and stop carving it, so no chunk of it is handed out
#     again; chunks freed from now on are counted instead of reused; then
#     take its chunks out of the workers' stashes (slabs.pxi) the same way;
#  2. for every chunk still holding a live item: lock the item's shard, check
#     the hash table still points at this chunk, and copy the item into a free
#     chunk of the same class elsewhere ("rescue", same place in the LRU, same
#     CAS) or, when there is none, evict it;
#  3. once every chunk is accounted for, hand the page to dst.
#
# A chunk of a chunked item's chain (item_chunk_t, marked with CHUNK_MAGIC) is
# recognised under the slabs lock, where its head is valid (chains are linked
# and freed under it); under the head's shard lock, with the head still
# linked and the chunk still in its chain, the chunk is copied into a free
# chunk of the class and the chain relinked (slab_reassign_chunk_rescues), or
# the whole item is evicted. A chunked item's header chunk is rescued like
# any item, and its chunks are told their new head. Chunks of the page never
# carved are skipped: they were never written.
#
# Reading a chunk's header before holding its shard lock is safe because the
# page is no longer handed out: its memory stays valid and the shard lock plus
# the hash-table check decide whether the bytes are a live item.

from posix.unistd cimport usleep

cdef char* g_moving_page = NULL
cdef int g_moving_src = 0
cdef uint64_t g_moving_reclaimed = 0
cdef int g_rebal_src = 0
cdef int g_rebal_dst = 0
cdef int g_rebal_signal = 0             # 1 requested, 2 running
cdef uint64_t g_slabs_moved = 0
cdef uint64_t g_rebal_rescues = 0
cdef uint64_t g_rebal_evictions = 0
cdef uint64_t g_rebal_busy = 0
cdef uint64_t g_rebal_chunk_rescues = 0
cdef uint64_t g_rebal_inline_reclaim = 0   # slab_reassign_inline_reclaim (rebal_inline_reclaims)
cdef uint64_t g_rebal_inline_pending = 0   # ... reckoned for the move under way
cdef char* g_moving_carved_end = NULL   # chunks of the moving page from here on were never used
cdef int g_automove_next_src = 1

cdef inline bint in_moving_page(void* p) noexcept nogil:
    return g_moving_page != NULL and <char*>p >= g_moving_page and \
        <char*>p < g_moving_page + SLAB_PAGE_SIZE

cdef enum reassign_result_t:    # memcached's enum reassign_result_type
    REASSIGN_OK = 0
    REASSIGN_RUNNING            # BUSY: a page move is under way
    REASSIGN_SRC_DST_SAME
    REASSIGN_BADCLASS
    REASSIGN_NOSPARE

# Answer a reassign request as memcached's do_slabs_reassign does.
cdef reassign_result_t slabs_reassign(int src, int dst) noexcept nogil:
    global g_automove_next_src, g_rebal_src, g_rebal_dst
    cdef int i
    cdef int tries
    if mc_load_int(&g_rebal_signal) != 0:
        return REASSIGN_RUNNING
    if src == dst:
        return REASSIGN_SRC_DST_SAME
    if src == -1:
        src = -1
        pthread_mutex_lock(&g_slabs_lock)
        for tries in range(g_power_largest):
            i = g_automove_next_src
            g_automove_next_src = g_automove_next_src + 1 if g_automove_next_src < g_power_largest else 1
            if i != dst and g_slabclass[i].slabs > 1:
                src = i
                break
        pthread_mutex_unlock(&g_slabs_lock)
        if src == -1:
            return REASSIGN_NOSPARE
    if src < 0 or src > g_power_largest or dst < 0 or dst > g_power_largest:
        return REASSIGN_BADCLASS
    if src == 0 or g_slabclass[src].slabs < 2:
        return REASSIGN_NOSPARE
    g_rebal_src = src
    g_rebal_dst = dst
    mc_store_int(&g_rebal_signal, 1)
    return REASSIGN_OK

# memcached's slab_reassign_inline_reclaim for the move of `page` (caller holds
# the slabs lock; the page's free chunks are still on src's list). memcached
# leaves a moving page's free chunks on the free list and walks the page from
# its first chunk: a free chunk it reaches is cut from the list; for each live
# item it rescues it pops the list's head, and every head that lies in the
# page further on is marked freed and counted (slab_rebalance_alloc) until one
# outside the page (the rescue) or none (an eviction). memcachepy cuts the
# page's free chunks at once instead, so this replays memcached's walk over
# the list as it stands: the free list, then the chunks never carved from the
# class's newest page. memcached hands a page's chunks out from its last one
# down and memcachepy from its first one up (slabs.pxi carves upward, and a
# page moved into a class is listed first chunk first), so memcached's chunk
# k is our chunk perslab-1-k and its walk goes down our page. Items memcached
# would not rescue (expired or flushed) pop nothing. An estimate when clients
# store or delete during the move, as memcached's own count is then timing's.
cdef uint64_t rebal_inline_reclaims(slabclass_t* p, char* page) noexcept nogil:
    cdef uint32_t per = p.perslab
    cdef uint8_t* st            # per chunk: 0 in use, 1 free and listed, 2 off the list
    cdef void* v
    cdef char* ep
    cdef char* ep_cur
    cdef uint64_t left
    cdef uint64_t n = 0
    cdef uint64_t j
    cdef uint64_t k
    cdef int64_t i
    cdef rel_time_t now = current_time()
    cdef item_chunk_t* ch
    if per == 0:
        return 0
    st = <uint8_t*>calloc(per, 1)
    if st == NULL:
        return 0
    v = p.slots
    while v != NULL:
        if in_moving_page(v):
            st[(<char*>v - page) // p.size] = 1
        v = (<void**>v)[0]
    if p.end_page_free and p.end_page_ptr >= page and p.end_page_ptr < page + SLAB_PAGE_SIZE:
        for j in range(<uint64_t>(p.end_page_ptr - page) // p.size, per):
            st[j] = 1
    # the replayed list: v walks the free list, then ep the never carved chunks
    v = p.slots
    ep = p.end_page_ptr
    left = p.end_page_free
    i = <int64_t>per - 1
    while i >= 0:
        j = <uint64_t>i
        i -= 1
        if st[j] != 0:
            st[j] = 2          # reached by the walk: cut (or already popped)
            continue
        ch = <item_chunk_t*>(page + j * p.size)
        if not (ch.magic == CHUNK_MAGIC and ch.zero == 0) and \
                item_dead(<item_t*>ch, now) != ITEM_LIVE:
            continue
        while True:            # the rescue's slab_rebalance_alloc
            if v != NULL:
                ep_cur = <char*>v
                v = (<void**>v)[0]
            elif left > 0:
                ep_cur = ep
                ep += p.size
                left -= 1
            else:
                break          # nothing free: memcached evicts
            if ep_cur >= page and ep_cur < page + SLAB_PAGE_SIZE:
                k = <uint64_t>(ep_cur - page) // p.size
                if st[k] == 2:
                    continue   # cut by the walk already
                st[k] = 2
                n += 1
                continue
            break              # a chunk elsewhere: the item is rescued into it
    free(st)
    return n

# Step 1, under the slabs lock.
cdef void rebal_start() noexcept nogil:
    global g_moving_page, g_moving_src, g_moving_reclaimed, g_moving_carved_end
    global g_rebal_inline_pending
    cdef slabclass_t* p = &g_slabclass[g_rebal_src]
    cdef char* page
    cdef void** pos
    cdef uint64_t removed = 0
    cdef lock_hold_t t0
    slabs_stash_return_class(g_rebal_src)
    t0 = lockstat_lock(&g_slabs_lock)
    page = <char*>p.slab_list[0]
    mc_store_page(&g_moving_page, page)     # workers read it under their stash locks
    g_moving_src = g_rebal_src
    g_rebal_inline_pending = rebal_inline_reclaims(p, page)
    pos = &p.slots
    while pos[0] != NULL:
        if in_moving_page(pos[0]):
            pos[0] = (<void**>pos[0])[0]
            removed += 1
        else:
            pos = <void**>pos[0]
    p.sl_curr -= removed
    g_moving_carved_end = page + SLAB_PAGE_SIZE
    if p.end_page_free and p.end_page_ptr >= page and p.end_page_ptr < page + SLAB_PAGE_SIZE:
        removed += p.end_page_free
        p.end_page_free = 0
        g_moving_carved_end = p.end_page_ptr
    g_moving_reclaimed = removed
    lockstat_unlock(&g_slabs_lock, LK_PAGE_MOVE, t0)
    # the page's chunks in workers' stashes are free chunks too
    slabs_stash_purge_page(g_rebal_src)

# Step 2 for a chunk of a chain (the caller saw its mark under the slabs
# lock and copied its head's key). Returns True when it is no longer in use.
cdef bint rebal_clear_data_chunk(item_chunk_t* ch, item_t* head, const char* key,
                                 size_t nkey, int id) noexcept nogil:
    global g_rebal_chunk_rescues, g_rebal_evictions, g_rebal_busy
    cdef uint64_t h = hash_key(key, nkey)
    cdef shard_t* s = shard_of(h)
    cdef item_chain_t* chain
    cdef item_chunk_t* cur
    cdef item_chunk_t* nw
    cdef lock_hold_t t0 = lockstat_lock(&s.lock)
    if assoc_find(s, key, nkey, bucket_hv(h)) != head:
        # its item is not linked (a value still arriving, or one being
        # replaced or freed): wait until it is linked or freed
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return False
    chain = ITEM_chain(head)
    cur = chain.first
    while cur != NULL and cur != ch:
        cur = cur.next
    if cur == NULL:
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return False
    if item_busy(head):
        mc_stat_add(&g_rebal_busy, 1)
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return False
    if item_dead(head, current_time()):
        do_item_unlink(s, head)
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return True
    nw = <item_chunk_t*>slabs_alloc_rescue(0, id)
    if nw == NULL:
        s.lru[head.slabs_clsid].evicted += 1
        mc_stat_add(&g_rebal_evictions, 1)
        do_item_unlink(s, head)
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return True
    # rescue: the same bytes in another chunk of the class, relinked in
    # place, in one hold of the slabs lock (the chain is never seen half moved)
    pthread_mutex_lock(&g_slabs_lock)
    memcpy(nw, ch, sizeof(item_chunk_t) + ch.used)
    if nw.prev != NULL:
        nw.prev.next = nw
    else:
        chain.first = nw
    if nw.next != NULL:
        nw.next.prev = nw
    do_slabs_free(ch, 0, id)
    pthread_mutex_unlock(&g_slabs_lock)
    mc_stat_add(&g_rebal_chunk_rescues, 1)
    lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
    return True

# Step 2 for one chunk. Returns True when the chunk no longer holds a live item.
cdef bint rebal_clear_chunk(item_t* it, int id) noexcept nogil:
    global g_rebal_rescues, g_rebal_evictions, g_rebal_busy
    cdef size_t nkey = it.nkey
    cdef char key[256]
    cdef uint64_t h
    cdef shard_t* s
    cdef item_t* cur
    cdef item_t* nw
    cdef item_t** pos
    cdef size_t ntotal
    cdef lock_hold_t t0
    cdef item_chunk_t* ch = <item_chunk_t*>it
    cdef item_t* head = NULL
    cdef bint chunked
    pthread_mutex_lock(&g_slabs_lock)
    if ch.magic == CHUNK_MAGIC and ch.zero == 0:
        head = ch.head
        nkey = head.nkey
        memcpy(key, ITEM_key(head), nkey)
    pthread_mutex_unlock(&g_slabs_lock)
    if head != NULL:
        return rebal_clear_data_chunk(ch, head, key, nkey, id)
    if nkey == 0:
        return True
    memcpy(key, ITEM_key(it), nkey)
    h = hash_key(key, nkey)
    s = shard_of(h)
    t0 = lockstat_lock(&s.lock)
    cur = assoc_find(s, key, nkey, bucket_hv(h))
    if cur != it:
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return True
    if item_busy(it):
        mc_stat_add(&g_rebal_busy, 1)               # memcached counts every busy item it meets
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return False
    if item_dead(it, current_time()):
        # expired or flushed: not worth a rescue, and no eviction either
        do_item_unlink(s, it)
        lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
        return True
    chunked = item_chunked(it)
    # a chunked item's header counts nothing in its own class's mem_requested
    ntotal = 0 if chunked else ITEM_ntotal(it)
    nw = <item_t*>slabs_alloc_rescue(ntotal, id)
    if nw != NULL:
        # rescue: same bytes, same place in the hash chain and the LRU
        memcpy(nw, it, ITEM_footprint(it))
        if chunked:
            pthread_mutex_lock(&g_slabs_lock)
            ch = ITEM_chain(nw).first
            while ch != NULL:
                ch.head = nw
                ch = ch.next
            pthread_mutex_unlock(&g_slabs_lock)
        pos = assoc_head(s, it.hv)
        while assoc_ptr(pos[0]) != it:
            pos = &assoc_ptr(pos[0]).h_next
        pos[0] = assoc_relink(pos[0], nw)
        if nw.prev != NULL:
            nw.prev.next = nw
        else:
            s.heads[lru_idx(nw.slabs_clsid, item_seg(nw))] = nw
        if nw.next != NULL:
            nw.next.prev = nw
        else:
            s.tails[lru_idx(nw.slabs_clsid, item_seg(nw))] = nw
        # the old chunk is no item any more: a warm restart (-e) that walks
        # this page, should the process stop before the move ends, must not
        # take the stale copy for a live item
        it.it_flags &= ~ITEM_LINKED
        slabs_free(it, ntotal, id)
        mc_stat_add(&g_rebal_rescues, 1)
    else:
        s.lru[it.slabs_clsid].evicted += 1
        mc_stat_add(&g_rebal_evictions, 1)
        do_item_unlink(s, it)
    lockstat_unlock(&s.lock, LK_PAGE_MOVE, t0)
    return True

cdef inline void slabs_page_release(char* page) noexcept nogil:
    if g_region_base != NULL:
        region_page_free(page)
    else:
        free(page)

# Step 3, under the slabs lock: give the emptied page to dst (or free it).
cdef void rebal_finish() noexcept nogil:
    global g_moving_page, g_mem_malloced, g_slabs_moved, g_rebal_inline_reclaim
    global g_rebal_inline_pending
    cdef slabclass_t* sp = &g_slabclass[g_moving_src]
    cdef slabclass_t* dp
    cdef char* page = g_moving_page
    cdef uint64_t i
    cdef void** nl
    cdef lock_hold_t t0 = lockstat_lock(&g_slabs_lock)
    for i in range(sp.slabs):
        if sp.slab_list[i] == page:
            # the rest keep their order, as memcached's: the next move takes
            # the next oldest page
            memmove(&sp.slab_list[i], &sp.slab_list[i + 1], (sp.slabs - i - 1) * sizeof(void*))
            sp.slabs -= 1
            break
    mc_store_page(&g_moving_page, NULL)
    if g_rebal_dst == 0:
        # to the global pool; freed at once if the limit was lowered meanwhile
        if not slabs_page_to_global_pool(page):
            slabs_page_release(page)
            g_mem_malloced -= SLAB_PAGE_SIZE
        memory_release()
    else:
        dp = &g_slabclass[g_rebal_dst]
        if dp.slabs == dp.list_size:
            nl = <void**>realloc_ptrs(dp.slab_list, dp.list_size * 2 if dp.list_size else 16)
            if nl == NULL:
                slabs_page_release(page)
                g_mem_malloced -= SLAB_PAGE_SIZE
                lockstat_unlock(&g_slabs_lock, LK_PAGE_MOVE, t0)
                return
            dp.slab_list = nl
            dp.list_size = dp.list_size * 2 if dp.list_size else 16
        dp.slab_list[dp.slabs] = page
        dp.slabs += 1
        if g_region_base != NULL:
            # -e: no header of src's chunk size may remain at a chunk boundary
            # of dst's (a warm restart walks pages by their class)
            memset(page, 0, SLAB_PAGE_SIZE)
        i = dp.perslab
        while i > 0:
            # listed last chunk first, so the first is handed out first, as
            # carving does (rebal_inline_reclaims relies on that order)
            i -= 1
            # no mark of the page's old life may sit at a chunk of its new one
            (<item_chunk_t*>(page + i * dp.size)).magic = 0
            (<void**>(page + i * dp.size))[0] = dp.slots
            dp.slots = page + i * dp.size
            dp.sl_curr += 1
    mc_stat_add(&g_slabs_moved, 1)
    mc_stat_add(&g_rebal_inline_reclaim, g_rebal_inline_pending)
    g_rebal_inline_pending = 0
    lockstat_unlock(&g_slabs_lock, LK_PAGE_MOVE, t0)

# Run a requested move to completion (acceptor thread).
cdef void slabs_rebalance_run() noexcept nogil:
    cdef int id
    cdef uint32_t i
    cdef uint32_t perslab
    cdef uint32_t size
    cdef bint done
    cdef int passes = 0
    if mc_load_int(&g_rebal_signal) != 1:
        return
    mc_store_int(&g_rebal_signal, 2)
    id = g_rebal_src
    perslab = g_slabclass[id].perslab
    size = g_slabclass[id].size
    rebal_start()
    while True:
        done = True
        for i in range(perslab):
            if g_moving_page + <size_t>i * size >= g_moving_carved_end:
                break             # never carved: never written, already counted
            if not rebal_clear_chunk(<item_t*>(g_moving_page + <size_t>i * size), id):
                done = False
        pthread_mutex_lock(&g_slabs_lock)
        if g_moving_reclaimed >= perslab:
            pthread_mutex_unlock(&g_slabs_lock)
            break
        pthread_mutex_unlock(&g_slabs_lock)
        passes += 1
        if mc_load_int(&g_shutdown):
            break
        usleep(1000)
    if g_moving_reclaimed >= perslab:
        rebal_finish()
    mc_store_int(&g_rebal_signal, 0)

# `slabs automove 2`, as memcached's: every eviction asks for a page to be
# moved into the evicting class from the next class (round robin) that has
# more than one, unless a move is already under way. memcached calls
# slabs_reassign(-1, class) from the evicting thread; here the worker (which
# holds its shard lock, maybe more) only leaves the class in g_automove2_dst
# and pokes the acceptor once, and the acceptor asks for the move. memcached
# logs no sysevent for these moves, nor does this.
cdef int g_automove2_dst = 0

cdef inline void slabs_automove_on_eviction(int id) noexcept nogil:
    if g_settings.slab_automove != 2 or not g_settings.slab_reassign:
        return
    if mc_load_int(&g_rebal_signal) != 0 or mc_load_int(&g_automove2_dst) != 0:
        return
    mc_store_int(&g_automove2_dst, id)
    eventfd_poke(g_acceptor_wake)

# The acceptor's half: the move asked for since its last look.
cdef void slabs_automove_tick() noexcept nogil:
    cdef int dst = mc_load_int(&g_automove2_dst)
    if dst == 0:
        return
    if g_settings.slab_automove == 2 and g_settings.slab_reassign:
        slabs_reassign(-1, dst)
    mc_store_int(&g_automove2_dst, 0)
