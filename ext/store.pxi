# store.pxi -- shards and the item operations every protocol uses.
#
# The key space is split over g_nshards shards (a power of two) by the low bits
# of the key hash. A request takes exactly one shard lock and does all its work
# on the item under it (lookup, copy into the reply, store, LRU and counters);
# there is no global lock on this path. The memory limit is global and lives in
# the slab allocator (slabs.pxi), whose short lock nests inside a shard lock.
#
# Lock order: shard -> slabs. A second shard lock is only ever trylock'ed
# (eviction, lru.pxi). `do_` functions expect the caller to hold the shard lock.
#
# memcached semantics kept here: CAS compare-and-swap rules, add bumping an
# existing item, append/prepend keeping flags and TTL, incr/decr in place with
# space padding, lazy expiry and flush checks.

cdef shard_t* g_shards = NULL
cdef int g_nshards = 0

# -o track_sizes: live items per 32-byte size bucket (`stats sizes`).
cdef uint64_t* g_sizes_hist = NULL
cdef size_t g_sizes_buckets = 0

cdef inline void sizes_track(item_t* it, int64_t d) noexcept nogil:
    cdef size_t ntotal
    cdef size_t bucket
    if g_sizes_hist == NULL:
        return
    ntotal = ITEM_ntotal(it)
    bucket = (ntotal + 31) // 32
    if bucket < g_sizes_buckets:
        mc_fetch_add_u64(&g_sizes_hist[bucket], <uint64_t>d)

cdef enum store_comm_t:
    NREAD_ADD = 1
    NREAD_SET = 2
    NREAD_REPLACE = 3
    NREAD_APPEND = 4
    NREAD_PREPEND = 5
    NREAD_CAS = 6

cdef enum store_result_t:
    STORE_STORED = 1
    STORE_NOT_STORED = 2
    STORE_EXISTS = 3
    STORE_NOT_FOUND = 4

cdef enum delta_result_t:
    DELTA_OK = 0
    DELTA_NON_NUMERIC = 1
    DELTA_EOM = 2
    DELTA_NOT_FOUND = 3
    DELTA_CAS_MISMATCH = 4

cdef inline void sinc(uint64_t* p) noexcept nogil:
    mc_stat_add(p, 1)

cdef int store_init(int nshards, int hashpower) noexcept nogil:
    global g_shards, g_nshards, g_lru_tailkey, g_lru_coldtime
    cdef int i
    g_shards = <shard_t*>calloc(nshards, sizeof(shard_t))
    if g_shards == NULL:
        return -1
    g_nshards = nshards
    g_lru_tailkey = <uint64_t*>malloc(<size_t>nshards * LRU_CLASSES * sizeof(uint64_t))
    if g_lru_tailkey == NULL:
        return -1
    memset(g_lru_tailkey, 0xFF, <size_t>nshards * LRU_CLASSES * sizeof(uint64_t))
    g_lru_coldtime = <uint32_t*>calloc(<size_t>nshards * LRU_CLASSES, sizeof(uint32_t))
    if g_lru_coldtime == NULL:
        return -1
    for i in range(nshards):
        pthread_mutex_init(&g_shards[i].lock, NULL)
        g_shards[i].hashpower = <uint32_t>hashpower
        g_shards[i].buckets = <item_t**>calloc(<size_t>1 << hashpower, sizeof(item_t*))
        if g_shards[i].buckets == NULL:
            return -1
    return 0

cdef void store_destroy() noexcept nogil:
    global g_shards, g_nshards, g_lru_tailkey, g_lru_coldtime
    cdef int i
    if g_shards == NULL:
        return
    for i in range(g_nshards):
        free(g_shards[i].buckets)
        free(g_shards[i].old_buckets)
        pthread_mutex_destroy(&g_shards[i].lock)
    free(g_shards)
    g_shards = NULL
    g_nshards = 0
    free(g_lru_tailkey)
    g_lru_tailkey = NULL
    free(g_lru_coldtime)
    g_lru_coldtime = NULL

cdef inline shard_t* shard_of(uint64_t h) noexcept nogil:
    return &g_shards[h & <uint64_t>(g_nshards - 1)]

cdef inline uint32_t bucket_hv(uint64_t h) noexcept nogil:
    return <uint32_t>(h >> 32)

# Link a new item: hash table, LRU head, counters, a fresh CAS (or `new_cas`).
cdef void do_item_link(shard_t* s, item_t* it, uint64_t new_cas) noexcept nogil:
    it.it_flags |= ITEM_LINKED
    it.time = current_time()
    if new_cas != 0:
        it.cas = new_cas
    else:
        it.cas = next_cas()
    assoc_insert(s, it)
    lru_link(s, it)
    s.curr_items += 1
    s.total_items += 1
    s.bytes += ITEM_ntotal(it)
    sizes_track(it, 1)

# Unlink and free; a referenced (chunked) item is freed when its last
# reference drops instead (items.pxi item_unref), as memcached's item_unlink
# then do_item_remove.
cdef void do_item_unlink(shard_t* s, item_t* it) noexcept nogil:
    it.it_flags &= ~ITEM_LINKED
    assoc_delete(s, it)
    lru_unlink(s, it)
    s.curr_items -= 1
    s.bytes -= ITEM_ntotal(it)
    sizes_track(it, -1)
    if item_chunked(it) and ITEM_chain(it).refcount != 0:
        # stats items' mem_requested counts linked items, as memcached's
        # sizes_bytes: the rest goes when the memory does (item_unref)
        slabs_requested_sub(it.slabs_clsid, ITEM_ntotal(it))
        return
    item_free(it)

cdef inline void do_item_replace(shard_t* s, item_t* old, item_t* it, uint64_t new_cas) noexcept nogil:
    if new_cas == 0:
        new_cas = next_cas_above(old.cas)     # 0 with -C: do_item_link gives 0 too
    do_item_unlink(s, old)
    do_item_link(s, it, new_cas)

# Find a live item. Dead ones found on the way are unlinked and counted.
cdef item_t* do_item_get(shard_t* s, const char* key, size_t nkey, uint32_t hv,
                         thread_stats_t* st, bint bump) noexcept nogil:
    cdef item_t* it = assoc_find(s, key, nkey, hv)
    cdef item_state_t dead
    if it == NULL:
        if MC_UNLIKELY(logger_wants(LOG_FETCHERS)):
            log_item_get(key, nkey, 0, NULL)
        return NULL
    dead = item_dead(it, current_time())
    if dead:
        if dead == ITEM_FLUSHED:
            sinc(&st.get_flushed)
        else:
            sinc(&st.get_expired)
        if MC_UNLIKELY(logger_wants(LOG_FETCHERS)):
            log_item_get(key, nkey, 2 if dead == ITEM_FLUSHED else 3, NULL)
        do_item_unlink(s, it)
        return NULL
    if MC_UNLIKELY(logger_wants(LOG_FETCHERS)):
        log_item_get(key, nkey, 1, it)
    if bump:
        sinc(&st.slab[it.slabs_clsid].lru_hits[item_seg(it)])
        lru_bump(s, it)
    return it

cdef item_t* do_item_touch(shard_t* s, const char* key, size_t nkey, uint32_t hv,
                           rel_time_t exptime, thread_stats_t* st) noexcept nogil:
    cdef item_t* it = do_item_get(s, key, nkey, hv, st, True)
    if it != NULL:
        it.exptime = exptime
    return it

# Store `it` (unlinked, value filled in, it.cas = the CAS the client sent).
# On any result but STORED the caller still owns `it` and must free it.
# `set_stale`: meta "I" mode, a lower CAS is accepted and marks the item stale.
# `cas_out` receives the CAS of the stored item.
cdef store_result_t do_store_item(shard_t* s, item_t* it, int comm, thread_stats_t* st,
                                  bint set_stale, uint64_t new_cas, uint64_t* cas_out,
                                  bint* consumed) noexcept nogil:
    cdef item_t* old = do_item_get(s, ITEM_key(it), it.nkey, it.hv, st, False)
    cdef store_result_t stored = STORE_NOT_STORED
    cdef uint64_t it_cas = it.cas if g_settings.use_cas else 0
    cdef uint64_t old_cas
    cdef int cas_res = 0     # 0 none, 1 match, 2 badval, 3 stale
    cdef bint do_store = False
    cdef item_t* new_it = NULL
    cdef bint ok
    consumed[0] = False
    if old != NULL:
        old_cas = old.cas
        if it_cas == 0:
            cas_res = 0
        elif it_cas == old_cas:
            cas_res = 1
        elif set_stale and it_cas < old_cas:
            cas_res = 3
        else:
            cas_res = 2
        if comm == NREAD_ADD:
            lru_update(s, old)
        elif comm == NREAD_CAS:
            if cas_res == 1:
                sinc(&st.slab[old.slabs_clsid].cas_hits)
                do_store = True
            elif cas_res == 3:
                it.exptime = old.exptime
                it.it_flags |= ITEM_STALE
                if old.it_flags & ITEM_TOKEN_SENT:
                    it.it_flags |= ITEM_TOKEN_SENT
                sinc(&st.slab[old.slabs_clsid].cas_hits)
                do_store = True
            else:
                sinc(&st.slab[old.slabs_clsid].cas_badval)
                stored = STORE_EXISTS
        elif comm == NREAD_APPEND or comm == NREAD_PREPEND:
            if cas_res != 0 and cas_res != 1:
                stored = STORE_EXISTS
            else:
                old.it_flags |= ITEM_PINNED
                new_it = item_alloc(s, ITEM_key(it), it.nkey, old.flags, old.exptime,
                                    it.nbytes + old.nbytes - 2, True)
                if new_it != NULL and item_chunked(new_it):
                    # the chain is built as memcached's append builds it
                    if comm == NREAD_APPEND:
                        ok = (item_chain_fill(s, new_it, old, old.nbytes - 2) and
                              item_chain_fill(s, new_it, it, it.nbytes))
                    else:
                        ok = (item_chain_fill(s, new_it, it, it.nbytes - 2) and
                              item_chain_fill(s, new_it, old, old.nbytes))
                    if not ok:
                        item_free(new_it)
                        new_it = NULL
                elif new_it != NULL:
                    if comm == NREAD_APPEND:
                        item_data_copy(new_it, 0, old, 0, old.nbytes - 2)
                        item_data_copy(new_it, old.nbytes - 2, it, 0, it.nbytes)
                    else:
                        item_data_copy(new_it, 0, it, 0, it.nbytes - 2)
                        item_data_copy(new_it, it.nbytes - 2, old, 0, old.nbytes)
                old.it_flags &= ~ITEM_PINNED
                if new_it != NULL:
                    new_it.hv = it.hv
                    new_it.it_flags |= (old.it_flags & ITEM_KEY_BINARY)
                    do_store = True
        else:
            do_store = True
        if do_store:
            if new_it != NULL:
                do_item_replace(s, old, new_it, new_cas)
                cas_out[0] = new_it.cas
                item_free(it)      # its bytes were copied into new_it
                consumed[0] = True
            else:
                do_item_replace(s, old, it, new_cas)
                cas_out[0] = it.cas
                consumed[0] = True
            stored = STORE_STORED
    else:
        if comm == NREAD_ADD or comm == NREAD_SET:
            do_store = True
        elif comm == NREAD_CAS:
            stored = STORE_NOT_FOUND
            sinc(&st.cas_misses)
        if do_store:
            do_item_link(s, it, new_cas)
            cas_out[0] = it.cas
            consumed[0] = True
            stored = STORE_STORED
    return stored

cdef inline char* write_u64(char* p, uint64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef int n = 0
    if v == 0:
        p[0] = c'0'
        return p + 1
    while v:
        tmp[n] = <char>(c'0' + v % 10)
        v //= 10
        n += 1
    while n:
        n -= 1
        p[0] = tmp[n]
        p += 1
    return p

cdef inline char* write_i64(char* p, int64_t v) noexcept nogil:
    if v < 0:
        p[0] = c'-'
        return write_u64(p + 1, <uint64_t>(-v))
    return write_u64(p, <uint64_t>v)

# safe_strtoull over a chunked item's value (CRLF included), span by span:
# blanks, a sign, digits, then the end or a blank; a value that reads as
# negative is refused when a '-' is anywhere in it. Only -C items under
# memcached's chunking threshold get here (do_add_delta).
cdef bint item_chain_strtoull(item_t* it, uint64_t* out) noexcept nogil:
    cdef size_t off = 0
    cdef size_t k
    cdef size_t i
    cdef char* p
    cdef char ch
    cdef int state = 0          # 0 blanks, 1 after the sign, 2 digits, 3 done
    cdef bint neg = False
    cdef bint overflow = False
    cdef bint ended = True      # no byte after the digits: the number ends there
    cdef bint has_minus = False
    cdef uint64_t v = 0
    cdef uint64_t d
    out[0] = 0
    while off < it.nbytes:
        p = item_data_span(it, off, &k)
        if p == NULL or k == 0:
            return False
        if k > it.nbytes - off:
            k = it.nbytes - off
        if memchr(p, c'-', k) != NULL:
            has_minus = True
        i = 0
        while state != 3 and i < k:
            ch = p[i]
            if state == 0 and is_space(ch):
                pass
            elif state == 0 and (ch == c'+' or ch == c'-'):
                neg = ch == c'-'
                state = 1
            elif ch >= c'0' and ch <= c'9':
                d = <uint64_t>(ch - c'0')
                if v > (0xFFFFFFFFFFFFFFFFULL - d) // 10:
                    overflow = True
                else:
                    v = v * 10 + d
                state = 2
            else:
                if state != 2:
                    return False        # no digits
                ended = is_space(ch)
                state = 3
            i += 1
        off += k
    if state < 2 or overflow or not ended:
        return False
    if neg:
        v = <uint64_t>(0 - v)
    if <int64_t>v < 0 and has_minus:
        return False
    out[0] = v
    return True

# In-place incr/decr result in a chunked item: the digits, then blanks up to
# the CRLF, as memcached pads a shorter number.
cdef void item_chain_pad_number(item_t* it, const char* buf, size_t res) noexcept nogil:
    cdef size_t off = res
    cdef size_t k
    cdef char* p
    item_data_write(it, 0, buf, res)
    while off < it.nbytes - 2:
        p = item_data_span(it, off, &k)
        if p == NULL or k == 0:
            return
        if k > it.nbytes - 2 - off:
            k = it.nbytes - 2 - off
        memset(p, c' ', k)
        off += k

# incr/decr. `buf` receives the new value as text (NUL-terminated), `cas` in:
# CAS to compare (0 = none), out: the item's new CAS. `it_out` (may be NULL)
# receives the item, still linked and locked by the caller.
cdef delta_result_t do_add_delta(shard_t* s, const char* key, size_t nkey, uint32_t hv,
                                 bint incr, uint64_t delta, char* buf, uint64_t* cas,
                                 thread_stats_t* st, item_t** it_out,
                                 uint64_t new_cas) noexcept nogil:
    cdef item_t* it = do_item_get(s, key, nkey, hv, st, False)
    cdef uint64_t value
    cdef char* end
    cdef size_t res
    cdef item_t* new_it
    if it == NULL:
        return DELTA_NOT_FOUND
    if it.nbytes <= 2 or ITEM_ntotal(it) > g_settings.slab_chunk_size_max:
        # an item memcached chunks (ITEM_CHUNKED: its ntotal is above
        # slab_chunk_max) is no number to it, whatever it holds, and this
        # answer comes before the CAS check, as in memcached's do_add_delta
        return DELTA_NON_NUMERIC
    if cas != NULL and cas[0] != 0 and it.cas != cas[0]:
        return DELTA_CAS_MISMATCH
    # memcached parses the stored value with the same safe_strtoull as a request
    # token (the CRLF ends the number). With -C our header is 8 bytes larger
    # than memcached's, so an item within 8 bytes under slab_chunk_max is
    # chunked here but one chunk there: read such a value through its chain.
    if item_chunked(it):
        if not item_chain_strtoull(it, &value):
            return DELTA_NON_NUMERIC
    elif not safe_strtoull(ITEM_data(it), it.nbytes, &value):
        return DELTA_NON_NUMERIC
    if incr:
        value += delta
        sinc(&st.slab[it.slabs_clsid].incr_hits)
    else:
        if delta > value:
            value = 0
        else:
            value -= delta
        sinc(&st.slab[it.slabs_clsid].decr_hits)
    end = write_u64(buf, value)
    end[0] = 0
    res = <size_t>(end - buf)
    if res + 2 <= it.nbytes:
        # in place, right-padded with spaces, as memcached does
        if new_cas != 0:
            it.cas = new_cas
        else:
            it.cas = next_cas_above(it.cas)
        if item_chunked(it):
            item_chain_pad_number(it, buf, res)
        else:
            memcpy(ITEM_data(it), buf, res)
            memset(ITEM_data(it) + res, c' ', it.nbytes - res - 2)
        lru_update(s, it)
    else:
        it.it_flags |= ITEM_PINNED
        new_it = item_alloc(s, key, nkey, it.flags, it.exptime, res + 2)
        it.it_flags &= ~ITEM_PINNED
        if new_it == NULL:
            return DELTA_EOM
        new_it.hv = hv
        new_it.it_flags |= (it.it_flags & ITEM_KEY_BINARY)
        memcpy(ITEM_data(new_it), buf, res)
        memcpy(ITEM_data(new_it) + res, b"\r\n", 2)
        do_item_replace(s, it, new_it, new_cas)
        it = new_it
    if cas != NULL:
        cas[0] = it.cas
    if it_out != NULL:
        it_out[0] = it
    return DELTA_OK

# Sum of the per-shard item counters (takes each shard lock in turn).
cdef void store_totals(uint64_t* curr_items, uint64_t* total_items, uint64_t* bytes) noexcept nogil:
    cdef int i
    curr_items[0] = 0
    total_items[0] = 0
    bytes[0] = 0
    for i in range(g_nshards):
        pthread_mutex_lock(&g_shards[i].lock)
        curr_items[0] += g_shards[i].curr_items
        total_items[0] += g_shards[i].total_items
        bytes[0] += g_shards[i].bytes
        pthread_mutex_unlock(&g_shards[i].lock)

# ---- meta helpers

# The meta E flag gave `it` a client-chosen CAS. flush_all tells items set
# before it from items set after it, in the same second, by comparing CAS
# values, which a client CAS defeats; such items carry ITEM_CAS_CLIENT and
# the flush epoch current when the CAS was set instead (items.pxi item_dead).
cdef inline void item_set_client_cas(item_t* it, uint64_t cas) noexcept nogil:
    it.cas = cas
    it.it_flags = <uint16_t>((it.it_flags & (0xFF | ITEM_SEG_MASK)) | ITEM_CAS_CLIENT
                             | (flush_epoch(mc_load_u64(&g_settings.oldest_cas)) << 8))

# The item got a server CAS again (in-place incr, md I): ordinary flush rules.
cdef inline void item_clear_client_cas(item_t* it) noexcept nogil:
    it.it_flags = <uint16_t>(it.it_flags & (0xFF | ITEM_SEG_MASK) & ~ITEM_CAS_CLIENT)
