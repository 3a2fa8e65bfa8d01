# testing.pxi -- test hooks: the real request path without sockets.
#
# The fuzzers and the bad-input tests need to push arbitrary bytes through the
# same parser and handlers the daemon runs (conn_process and everything below
# it) without a socket per input, and to look inside the store afterwards. This
# fragment adds that and nothing else: it is included last by _core.pyx, only
# defines new functions, and nothing in the daemon calls them, so the hot path
# is untouched.
#
#  * feed(data, cuts) makes a conn_t that is not attached to any epoll set (its
#    worker is a static test worker_t, so conn_stats() works), hands it `data`
#    in the pieces a sequence of recv() calls would deliver, and returns exactly
#    what a client would have received: output is "flushed" after each piece as
#    conn_drive() does, and output still queued when the conn is dropped with
#    close_now is lost, as it is in the daemon. It also reports the largest
#    amount of output ever queued and the largest read buffer, so tests can
#    check that backpressure bounds both.
#  * check_invariants() walks every shard and slab class and verifies that the
#    hash tables, LRU lists, item counters and slab accounting agree and that
#    every stored value still ends in CRLF: a cheap oracle for corruption.
#
# Both need the core initialised (a `Store` open in this process).

cdef worker_t g_test_worker

cdef inline void _test_take_output(conn_t* c, bytearray out, size_t* max_pending, size_t limit):
    cdef size_t pending = c.wlen - c.wsent
    if pending > max_pending[0]:
        max_pending[0] = pending
    if pending and <size_t>len(out) < limit:
        out += (c.wbuf + c.wsent)[:pending]
    c.wlen = 0
    c.wsent = 0
    c.wmark = 0

def feed(bytes data, cuts=None, size_t output_limit=64 << 20):
    """Run `data` through a fresh connection, delivered in pieces ending at the
    offsets in `cuts` (default: all at once). Returns (output, closed,
    max_pending, max_rbuf): the bytes a client would receive, whether the
    server closed the connection, the most output queued at once, and the
    largest read buffer it needed."""
    if not g_initialised:
        raise RuntimeError("feed() needs an open Store")
    cdef size_t n = len(data)
    cdef const char* src = data
    cdef conn_t* c = <conn_t*>calloc(1, sizeof(conn_t))
    cdef size_t pos = 0
    cdef size_t end
    cdef size_t k
    cdef size_t max_pending = 0
    cdef size_t max_rbuf = 0
    cdef char* dst
    cdef size_t room
    cdef int r
    cdef int saved_verbose = g_settings.verbose
    cdef bint closed = False
    cdef list ends
    out = bytearray()
    if c == NULL:
        raise MemoryError()
    c.fd = -1
    c.worker = &g_test_worker
    c.state = CONN_READ
    c.nreqs = -1            # no -R budget: nothing here resumes a yielded conn
    c.rbuf = <char*>malloc(RBUF_INITIAL)
    c.rsize = RBUF_INITIAL
    c.last_cmd_time = current_time()
    if c.rbuf == NULL:
        free(c)
        raise MemoryError()
    ends = sorted({int(x) for x in (cuts or ()) if 0 < int(x) < <Py_ssize_t>n})
    ends.append(n)
    try:
        for end in ends:
            while pos < end and not closed:
                if c.spool != NULL or c.spool_buf != NULL:
                    # a large block is being received into its item, as
                    # conn_read_event does: up to the end of one chunk a time
                    if c.spool_buf != NULL:
                        dst = c.spool_buf + c.spool_have
                        room = c.spool_len - c.spool_have
                    else:
                        dst = item_data_span(c.spool, c.spool_have, &room)
                        if room > c.spool_len - c.spool_have:
                            room = c.spool_len - c.spool_have
                    k = end - pos
                    if k > room:
                        k = room
                    memcpy(dst, src + pos, k)
                    pos += k
                    c.spool_have += k
                    if c.spool_have < c.spool_len:
                        continue
                    with nogil:
                        conn_spool_finish(c)
                else:
                    if not conn_rbuf_room(c):
                        closed = True
                        break
                    if c.rsize > max_rbuf:
                        max_rbuf = c.rsize
                    k = end - pos
                    if k > c.rsize - c.rend:
                        k = c.rsize - c.rend
                    memcpy(c.rbuf + c.rend, src + pos, k)
                    c.rend += k
                    pos += k
                # conn_drive(): process, flushing whenever output must drain,
                # then flush what the batch produced.
                while True:
                    with nogil:
                        r = conn_process(c)
                    if c.close_now:
                        closed = True     # queued output is dropped, as in the daemon
                        break
                    _test_take_output(c, out, &max_pending, output_limit)
                    if r == 0:
                        break
                if c.state == CONN_CLOSING:
                    closed = True
            if closed:
                break
    finally:
        g_settings.verbose = saved_verbose
        if c.spool != NULL:
            item_free(c.spool)
        if c.spool_ready != NULL:
            item_free(c.spool_ready)
        free(c.spool_buf)
        free(c.rbuf)
        free(c.wbuf)
        free(c)
    return bytes(out), closed, max_pending, max_rbuf


cdef check_chain(item_t* it):
    # a chunked item's chain: every chunk marked, owned by it, within its
    # class, the used bytes adding up to the value
    cdef item_chain_t* chain = ITEM_chain(it)
    cdef item_chunk_t* ch = chain.first
    cdef item_chunk_t* prev = NULL
    cdef uint64_t total = 0
    cdef uint32_t n = 0
    key = ITEM_key(it)[:it.nkey]
    if chain.hdr_clsid == 0 or chain.hdr_clsid > <uint32_t>g_power_largest:
        raise AssertionError(f"{key!r}: header class {chain.hdr_clsid}")
    while ch != NULL:
        if ch.magic != CHUNK_MAGIC or ch.zero != 0 or ch.head != it or ch.prev != prev:
            raise AssertionError(f"{key!r}: chunk {n} not marked as this item's")
        if ch.clsid == 0 or ch.clsid > <uint32_t>g_power_largest or \
                ch.size + MC_CHUNK_HEADER > g_slabclass[ch.clsid].size or ch.used > ch.size:
            raise AssertionError(f"{key!r}: chunk {n} of class {ch.clsid} size {ch.size} used {ch.used}")
        total += ch.used
        n += 1
        prev = ch
        ch = ch.next
    if total != it.nbytes or n != chain.nchunks:
        raise AssertionError(f"{key!r}: chain holds {total} bytes in {n} chunks, item {it.nbytes} in {chain.nchunks}")

def check_invariants():
    """Raise AssertionError if the store's structures disagree. Returns the
    number of linked items."""
    cdef uint64_t nchunks = 0
    cdef int i
    cdef int j
    cdef uint64_t b
    cdef uint64_t nhash
    cdef uint64_t nnew
    cdef uint64_t nold
    cdef item_t** head
    cdef uint64_t nlru
    cdef uint64_t nseg
    cdef uint64_t bseg
    cdef uint64_t seg_total
    cdef int seg
    cdef uint64_t total_items = 0
    cdef uint64_t nbytes
    cdef uint64_t used = 0
    cdef item_t* it
    cdef item_t* link
    cdef item_t* t
    cdef uintptr_t tags
    cdef item_t* prev
    cdef char* d
    for i in range(g_nshards):
        pthread_mutex_lock(&g_shards[i].lock)
        try:
            nhash = 0
            nbytes = 0
            # the table, and while it doubles the old table's buckets not moved yet
            nnew = <uint64_t>1 << g_shards[i].hashpower
            nold = nnew // 2 if g_shards[i].old_buckets != NULL else 0
            for b in range(nnew + nold):
                if b < nnew:
                    head = &g_shards[i].buckets[b]
                else:
                    head = &g_shards[i].old_buckets[b - nnew]
                    if b - nnew < g_shards[i].expand_bucket and head[0] != NULL:
                        raise AssertionError(f"shard {i}: a moved old bucket still holds items")
                it = assoc_ptr(head[0])
                link = head[0]
                while it != NULL:
                    nhash += 1
                    # each link's filter covers every item from there on (assoc.pxi)
                    tags = 0
                    t = it
                    while t != NULL:
                        tags |= assoc_tag(t.hv)
                        t = assoc_ptr(t.h_next)
                    if (<uintptr_t>link & tags) != tags:
                        raise AssertionError(f"shard {i}: a link's filter misses an item of its chain")
                    if not (it.it_flags & ITEM_LINKED):
                        raise AssertionError(f"shard {i}: unlinked item in hash chain")
                    if assoc_head(&g_shards[i], it.hv) != head:
                        raise AssertionError(f"shard {i}: item in the wrong bucket")
                    if it.nkey == 0 or it.nkey > KEY_MAX_LENGTH:
                        raise AssertionError(f"shard {i}: key length {it.nkey}")
                    if it.nbytes < 2:
                        raise AssertionError(f"shard {i}: value length {it.nbytes}")
                    if item_data_byte(it, it.nbytes - 2) != c'\r' or item_data_byte(it, it.nbytes - 1) != c'\n':
                        raise AssertionError(f"shard {i}: value of {ITEM_key(it)[:it.nkey]!r} lost its CRLF")
                    if item_chunked(it):
                        check_chain(it)
                    if bucket_hv(hash_key(ITEM_key(it), it.nkey)) != it.hv:
                        raise AssertionError(f"shard {i}: stored hash does not match key")
                    if (it.slabs_clsid == 0 or ITEM_footprint(it) > g_slabclass[
                                ITEM_chain(it).hdr_clsid if item_chunked(it) else it.slabs_clsid].size
                            or item_clsid_of(it.nkey, it.flags, it.nbytes) != it.slabs_clsid):
                        raise AssertionError(f"shard {i}: item larger than its chunk")
                    nbytes += ITEM_ntotal(it)
                    if item_chunked(it):
                        nchunks += ITEM_chain(it).nchunks
                    link = it.h_next
                    it = assoc_ptr(link)
            if nhash != g_shards[i].hash_items or nhash != g_shards[i].curr_items:
                raise AssertionError(f"shard {i}: {nhash} hashed, hash_items {g_shards[i].hash_items}, "
                                     f"curr_items {g_shards[i].curr_items}")
            if nbytes != g_shards[i].bytes:
                raise AssertionError(f"shard {i}: bytes {g_shards[i].bytes} but items hold {nbytes}")
            nlru = 0
            for j in range(MAX_SLAB_CLASSES):
                seg_total = 0
                for seg in range(4):
                    it = g_shards[i].heads[lru_idx(j, seg)]
                    prev = NULL
                    nseg = 0
                    bseg = 0
                    while it != NULL:
                        if it.prev != prev:
                            raise AssertionError(f"shard {i} class {j}: broken LRU back link")
                        if it.slabs_clsid != j:
                            raise AssertionError(f"shard {i} class {j}: item of class {it.slabs_clsid} on this LRU")
                        if item_seg(it) != seg:
                            raise AssertionError(f"shard {i} class {j}: item of segment {item_seg(it)} on segment {seg}")
                        nlru += 1
                        nseg += 1
                        bseg += ITEM_ntotal(it)
                        prev = it
                        it = it.next
                    if g_shards[i].tails[lru_idx(j, seg)] != prev:
                        raise AssertionError(f"shard {i} class {j}: tail is not the last item")
                    if nseg != g_shards[i].lru[j].seg_number[seg] or bseg != g_shards[i].lru[j].seg_bytes[seg]:
                        raise AssertionError(f"shard {i} class {j} segment {seg}: {nseg} items of {bseg} bytes, "
                                             f"counted {g_shards[i].lru[j].seg_number[seg]} of {g_shards[i].lru[j].seg_bytes[seg]}")
                    seg_total += nseg
                if g_lru_tailkey[<size_t>j * <size_t>g_nshards + <size_t>i] != lru_tail_key_of(&g_shards[i], j):
                    raise AssertionError(f"shard {i} class {j}: published LRU tail key is stale")
                if seg_total != g_shards[i].lru[j].number:
                    raise AssertionError(f"shard {i} class {j}: {seg_total} items on LRUs, number {g_shards[i].lru[j].number}")
            if nlru != nhash:
                raise AssertionError(f"shard {i}: {nlru} items on LRUs, {nhash} in the hash table")
            total_items += nhash
        finally:
            pthread_mutex_unlock(&g_shards[i].lock)
    pthread_mutex_lock(&g_slabs_lock)
    for j in range(MAX_SLAB_CLASSES):
        used += g_slabclass[j].used_chunks
    pthread_mutex_unlock(&g_slabs_lock)
    for j in range(MAX_SLAB_CLASSES):
        used -= slabs_stashed(j)            # stashed chunks are free
    if used != total_items + nchunks:
        raise AssertionError(f"slabs: {used} chunks in use, {total_items} items linked "
                             f"with {nchunks} chunks in chains")
    return total_items


def key_hv(bytes key):
    """The bucket hash of `key` (its bucket is the low hashpower bits)."""
    return bucket_hv(hash_key(key, len(key)))


def assoc_touches(list keys):
    """(keys found, items read) by hash-table lookups of `keys` (assoc.pxi):
    what the bucket filters spare shows as items not read."""
    cdef uint64_t touched = 0
    cdef uint64_t found = 0
    cdef uint64_t h
    cdef shard_t* s
    cdef bytes k
    for k in keys:
        h = hash_key(k, len(k))
        s = shard_of(h)
        pthread_mutex_lock(&s.lock)
        if assoc_find_counted(s, k, len(k), bucket_hv(h), &touched) != NULL:
            found += 1
        pthread_mutex_unlock(&s.lock)
    return found, touched


def slabs_stash_counts():
    """[{class: chunks}] stashed per worker (slabs.pxi), for tests that must
    know the stashes hold chunks when they look at stats or move a page."""
    cdef int w
    cdef int j
    cdef uint32_t n
    out = []
    for w in range(g_nworkers):
        d = {}
        for j in range(MAX_SLAB_CLASSES):
            n = mc_load_u32(&g_workers[w].sc.cls[j].count)
            if n:
                d[j] = n
        out.append(d)
    return out


def maintainer_run():
    """Every class juggled once, off the maintainer's schedule (it also moves buckets of
    hash tables that are doubling)."""
    with nogil:
        lru_maintainer_run()


def maintainer_tick(uint64_t slept_us):
    """One wake-up of the LRU maintainer `slept_us` after the last, as the acceptor runs it
    (lru_maintainer_tick): returns the microseconds it would sleep next."""
    cdef uint32_t r
    with nogil:
        r = lru_maintainer_tick(slept_us)
    return r


def maintainer_schedule(int clsid):
    """(microseconds until the class's next juggle, its backoff)."""
    if clsid < 1 or clsid >= MAX_SLAB_CLASSES:
        raise ValueError("no such slab class")
    return (g_maint_next[clsid], g_maint_backoff[clsid])


def maintainer_cursor(int clsid):
    """The shard the class's next juggle starts at (it juggles a few shards per wake-up
    while its backoff is short)."""
    if clsid < 1 or clsid >= MAX_SLAB_CLASSES:
        raise ValueError("no such slab class")
    return g_maint_cursor[clsid]


def maintainer_juggles():
    """The `lru_maintainer_juggles` counter: maintainer wake-ups."""
    return mc_load_u64(&g_lru_maintainer_juggles)


def hash_tables():
    """Per shard: (hashpower, doubling, old buckets moved so far, items hashed)."""
    cdef int i
    out = []
    for i in range(g_nshards):
        pthread_mutex_lock(&g_shards[i].lock)
        out.append((g_shards[i].hashpower, g_shards[i].old_buckets != NULL,
                    g_shards[i].expand_bucket, g_shards[i].hash_items))
        pthread_mutex_unlock(&g_shards[i].lock)
    return out


def lock_stats():
    """`stats locks` as {kind: (holds, total ns, longest ns, longest CPU ns)}."""
    cdef int k
    return {lockstat_name(k).decode(): (mc_load_u64(&g_lock_stats[k].holds),
                                        mc_load_u64(&g_lock_stats[k].total_ns),
                                        mc_load_u64(&g_lock_stats[k].max_ns),
                                        mc_load_u64(&g_lock_stats[k].max_cpu_ns))
            for k in range(LK_KINDS)}


# ---- write tracking (bench/false_sharing; a build with MEMCACHEPY_TRACK_WRITES only)

def track_writes_supported():
    """True in the write-tracking build (track_writes.h)."""
    return bool(mc_track_enabled())

def track_writes_start():
    mc_track_start()

def track_writes_stop():
    mc_track_stop()

def track_writes_dump(str path):
    """Write the per-line, per-thread store counts to `path` (track_writes.h)."""
    if mc_track_dump(path.encode()) != 0:
        raise OSError("track_writes_dump failed (not a write-tracking build?)")

def track_writes_requests():
    """[(gets, sets)] each worker has served so far (bench/false_sharing
    divides each worker's writes by its own requests)."""
    cdef int i
    cdef int j
    out = []
    for i in range(g_nworkers):
        sets = 0
        for j in range(MAX_SLAB_CLASSES):
            sets += mc_load_u64(&g_workers[i].stats.slab[j].set_cmds)
        out.append((mc_load_u64(&g_workers[i].stats.get_cmds), sets))
    return out

def track_writes_regions():
    """[(name, start address, size)] of the structures threads share, to name
    the lines a dump lists."""
    cdef int i
    out = [("g_settings", <size_t>&g_settings, sizeof(settings_t)),
           ("g_slabclass", <size_t>&g_slabclass[0], sizeof(g_slabclass))]
    for i in range(g_nshards):
        out.append((f"g_shards[{i}]", <size_t>&g_shards[i], sizeof(shard_t)))
    for i in range(g_nworkers):
        out.append((f"g_workers[{i}]", <size_t>&g_workers[i], sizeof(worker_t)))
    return out
