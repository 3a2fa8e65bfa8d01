# hotkeys.pxi -- sampled hot-key detection: `-o hotkeys_sample=N`,
# `stats hotkeys [N|reset]`, `watch hotkeys`. memcachepy's own (memcached has
# only per-prefix counters, `stats detail`).
#
# Each worker samples one key request in N with a countdown of its own (a
# decrement and a compare per request, no random numbers, no shared writes;
# with sampling off the countdown starts at 2^64 - 1 and never runs out) and
# feeds the sampled keys into a Space-Saving summary of HK_ENTRIES counters
# (Metwally et al., 2005): a key already counted gets +1; a new key takes a
# free counter, or the smallest one, inheriting its count as its error bound.
# A hash index finds a key's counter and a min-heap the smallest counter, so a
# sample costs O(log HK_ENTRIES): 300-440 instructions with the lock (callgrind).
# Every key whose sampled count exceeds (samples / HK_ENTRIES) is guaranteed a
# counter, and a counter overstates its key by at most its error.
#
# Locks: the summary of worker w is guarded by workers[w].hk.lock, which only
# the sampled update (1 request in N) and readers take; the countdown is the
# worker's alone. `stats hotkeys` copies each worker's summary under its lock
# and merges the copies as mergeable summaries are merged: a key missing from a
# full summary may still have up to that summary's smallest count there, which
# is added to its upper bound (est) and not to its lower bound (est - err).
# Counts cover the window since start-up or the last `stats hotkeys reset`;
# `est`, `err` and the per-kind counts are sampled counts times N.

cdef enum:
    HK_GET = 0
    HK_SET = 1
    HK_OTHER = 2
    HK_DEFAULT_TOP = 10
    HK_MAX_TOP = 1000
    LOG_HOTKEYS = 1 << 20          # `watch hotkeys`, beyond memcached's flags

cdef uint32_t g_hotkeys_sample = 0     # 1 request in N is sampled; 0 off. Set before workers start
cdef rel_time_t g_hotkeys_since = 0    # start of the counting window (atomic)

cdef void hotkeys_init(hotkeys_t* hk) noexcept nogil:
    pthread_mutex_init(&hk.lock, NULL)
    hk.used = 0
    hk.samples = 0
    memset(hk.slot, 0xff, sizeof(hk.slot))
    hk.entries = NULL
    if g_hotkeys_sample:
        hk.entries = <hk_entry_t*>calloc(HK_ENTRIES, sizeof(hk_entry_t))
    hk.countdown = g_hotkeys_sample if hk.entries != NULL else <uint64_t>-1

cdef void hotkeys_destroy(hotkeys_t* hk) noexcept nogil:
    free(hk.entries)
    hk.entries = NULL
    pthread_mutex_destroy(&hk.lock)

cdef void log_hotkey(const char* key, size_t nkey, int kind, bint hit) noexcept nogil:
    cdef char body[900]
    cdef char kb[760]
    cdef char* e = uri_encode(key, nkey, kb)
    cdef int n = snprintf(body, sizeof(body), b"type=hotkey key=%.*s op=%s hit=%s sample=%u",
                          <int>(e - kb), kb,
                          b"get" if kind == HK_GET else b"set" if kind == HK_SET else b"other",
                          b"yes" if hit else b"no", g_hotkeys_sample)
    logger_emit(LOG_HOTKEYS, body, <size_t>n)

# ---- the hash index: linear probing from slot (h >> 32) % HK_SLOTS; caller holds hk.lock

cdef inline uint32_t hk_home(uint64_t h) noexcept nogil:
    return <uint32_t>(h >> 32) & (HK_SLOTS - 1)

# The slot holding `key`, or the free slot where it would go.
cdef inline uint32_t hk_find(hotkeys_t* hk, const char* key, size_t nkey, uint64_t h) noexcept nogil:
    cdef uint32_t s = hk_home(h)
    cdef int e
    while True:
        e = hk.slot[s]
        if e < 0 or (hk.hashes[e] == h and hk.entries[e].nkey == nkey and
                     memcmp(hk.entries[e].key, key, nkey) == 0):
            return s
        s = (s + 1) & (HK_SLOTS - 1)

# Empty slot `s` and shift later members of its probe run back (no tombstones).
cdef void hk_unslot(hotkeys_t* hk, uint32_t s) noexcept nogil:
    cdef uint32_t j = s
    cdef uint32_t home
    hk.slot[s] = -1
    while True:
        j = (j + 1) & (HK_SLOTS - 1)
        if hk.slot[j] < 0:
            return
        home = hk_home(hk.hashes[hk.slot[j]])
        # move it back unless its home lies cyclically in (s, j]
        if ((j - home) & (HK_SLOTS - 1)) >= ((j - s) & (HK_SLOTS - 1)):
            hk.slot[s] = hk.slot[j]
            hk.slot[j] = -1
            s = j

# ---- the min-heap of counters; caller holds hk.lock

cdef inline void hk_heap_swap(hotkeys_t* hk, uint32_t a, uint32_t b) noexcept nogil:
    cdef uint8_t x = hk.heap[a]
    hk.heap[a] = hk.heap[b]
    hk.heap[b] = x
    hk.heap_pos[hk.heap[a]] = <uint8_t>a
    hk.heap_pos[hk.heap[b]] = <uint8_t>b

# Counter at heap position i grew: move it down past smaller children.
cdef void hk_heap_down(hotkeys_t* hk, uint32_t i) noexcept nogil:
    cdef uint32_t c
    cdef uint32_t n = hk.used
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and hk.counts[hk.heap[c + 1]] < hk.counts[hk.heap[c]]:
            c += 1
        if hk.counts[hk.heap[c]] >= hk.counts[hk.heap[i]]:
            return
        hk_heap_swap(hk, i, c)
        i = c

cdef void hk_heap_up(hotkeys_t* hk, uint32_t i) noexcept nogil:
    cdef uint32_t p
    while i > 0:
        p = (i - 1) // 2
        if hk.counts[hk.heap[p]] <= hk.counts[hk.heap[i]]:
            return
        hk_heap_swap(hk, i, p)
        i = p

# The sampled request (the countdown ran out): count `key` in the worker's summary.
cdef void hotkeys_sample(hotkeys_t* hk, const char* key, size_t nkey, uint64_t h,
                         int kind, bint hit) noexcept nogil:
    cdef uint32_t s
    cdef uint32_t e
    cdef hk_entry_t* en
    hk.countdown = g_hotkeys_sample
    if hk.entries == NULL or nkey == 0 or nkey > KEY_MAX_LENGTH:
        return
    pthread_mutex_lock(&hk.lock)
    hk.samples += 1
    s = hk_find(hk, key, nkey, h)
    if hk.slot[s] >= 0:
        e = <uint32_t>hk.slot[s]
        en = &hk.entries[e]
    else:
        if hk.used < HK_ENTRIES:
            e = hk.used
            hk.used += 1
            hk.counts[e] = 0
            hk.heap[e] = <uint8_t>e
            hk.heap_pos[e] = <uint8_t>e
            hk.entries[e].error = 0
        else:
            # Space-Saving: the smallest counter passes to the new key, which
            # inherits its count as the bound on its own overcount.
            e = hk.heap[0]
            hk_unslot(hk, hk_find(hk, hk.entries[e].key, hk.entries[e].nkey, hk.hashes[e]))
            hk.entries[e].error = hk.counts[e]
            s = hk_find(hk, key, nkey, h)       # the removal may have moved the free slot
        hk.slot[s] = <int16_t>e
        hk.hashes[e] = h
        en = &hk.entries[e]
        en.nkey = <uint32_t>nkey
        memcpy(en.key, key, nkey)
        en.gets = 0
        en.hits = 0
        en.sets = 0
        en.others = 0
    hk.counts[e] += 1
    if hk.counts[e] == 1:
        hk_heap_up(hk, hk.heap_pos[e])
    else:
        hk_heap_down(hk, hk.heap_pos[e])
    if kind == HK_GET:
        en.gets += 1
        if hit:
            en.hits += 1
    elif kind == HK_SET:
        en.sets += 1
    else:
        en.others += 1
    pthread_mutex_unlock(&hk.lock)
    if MC_UNLIKELY(logger_wants(LOG_HOTKEYS)):
        log_hotkey(key, nkey, kind, hit)

# Per key request, on the request path: nearly always one decrement.
cdef inline void hotkeys_note(conn_t* c, const char* key, size_t nkey, uint64_t h,
                              int kind, bint hit) noexcept nogil:
    cdef hotkeys_t* hk = &(<worker_t*>c.worker).hk
    hk.countdown -= 1
    if MC_UNLIKELY(hk.countdown == 0):
        hotkeys_sample(hk, key, nkey, h, kind, hit)

# ---------------------------------------------------------------- reading

cdef struct hk_row_t:          # one counter of one worker's copied summary
    uint64_t hash
    uint64_t count
    uint64_t error
    uint64_t wmin              # its worker's smallest count if that summary is full, else 0
    hk_entry_t* e

cdef struct hk_key_t:          # one key, merged over the workers
    uint64_t upper
    uint64_t lower
    uint64_t gets
    uint64_t hits
    uint64_t sets
    uint64_t others
    hk_entry_t* e

cdef int hk_row_cmp(const void* a, const void* b) noexcept nogil:
    cdef const hk_row_t* x = <const hk_row_t*>a
    cdef const hk_row_t* y = <const hk_row_t*>b
    cdef int r
    if x.hash != y.hash:
        return -1 if x.hash < y.hash else 1
    if x.e.nkey != y.e.nkey:
        return -1 if x.e.nkey < y.e.nkey else 1
    return memcmp(x.e.key, y.e.key, x.e.nkey)

cdef int hk_key_cmp(const void* a, const void* b) noexcept nogil:
    cdef const hk_key_t* x = <const hk_key_t*>a
    cdef const hk_key_t* y = <const hk_key_t*>b
    if x.upper != y.upper:
        return -1 if x.upper > y.upper else 1
    if x.lower != y.lower:
        return -1 if x.lower > y.lower else 1
    if x.e.nkey != y.e.nkey:
        return -1 if x.e.nkey < y.e.nkey else 1
    return memcmp(x.e.key, y.e.key, x.e.nkey)

# A key a text-protocol command could carry: no spaces, controls or high bytes.
cdef inline bint hk_printable(const char* key, size_t n) noexcept nogil:
    cdef size_t i
    for i in range(n):
        if <unsigned char>key[i] <= 32 or <unsigned char>key[i] >= 127:
            return False
    return True

cdef void hotkeys_reset() noexcept nogil:
    cdef int w
    for w in range(g_nworkers):
        pthread_mutex_lock(&g_workers[w].hk.lock)
        g_workers[w].hk.used = 0
        g_workers[w].hk.samples = 0
        memset(g_workers[w].hk.slot, 0xff, sizeof(g_workers[w].hk.slot))
        pthread_mutex_unlock(&g_workers[w].hk.lock)
    mc_store_u32(&g_hotkeys_since, current_time())

# `stats hotkeys [top]`: the header lines, then one HOTKEY line per key, most
# requested first:
#   HOTKEY <key> est <n> err <n> rate <n.n> get <n> hit <n> set <n> other <n>[ b]
# The key as a text-protocol client sends it; one with bytes a text key cannot
# hold (a binary key of the meta protocol) in base64, flagged by a final " b"
# as meta replies flag such keys.
cdef void stats_hotkeys(conn_t* c, uint32_t top) noexcept nogil:
    cdef int nw = g_nworkers
    cdef size_t cap = <size_t>(nw if nw > 0 else 1) * HK_ENTRIES
    cdef hk_entry_t* copies = NULL
    cdef hk_row_t* rows = NULL
    cdef hk_key_t* keys = NULL
    cdef size_t nrows = 0
    cdef size_t nkeys = 0
    cdef size_t i
    cdef size_t j
    cdef uint32_t k
    cdef uint32_t used
    cdef uint64_t wmin
    cdef uint64_t total_min = 0
    cdef uint64_t present_min
    cdef uint64_t samples = 0
    cdef uint64_t n = g_hotkeys_sample
    cdef hotkeys_t* hk
    cdef rel_time_t window = current_time() - mc_load_u32(&g_hotkeys_since)
    cdef char line[1200]
    cdef char* p
    cdef int len_
    cdef int w
    cdef bint binary
    if window < 1:
        window = 1
    if n:
        copies = <hk_entry_t*>malloc(cap * sizeof(hk_entry_t))
        rows = <hk_row_t*>malloc(cap * sizeof(hk_row_t))
        keys = <hk_key_t*>malloc(cap * sizeof(hk_key_t))
        if copies == NULL or rows == NULL or keys == NULL:
            free(copies)
            free(rows)
            free(keys)
            out_string(c, b"SERVER_ERROR out of memory")
            return
        for w in range(nw):
            hk = &g_workers[w].hk
            if hk.entries == NULL:
                continue
            pthread_mutex_lock(&hk.lock)
            used = hk.used
            samples += hk.samples
            memcpy(&copies[nrows], hk.entries, used * sizeof(hk_entry_t))
            wmin = hk.counts[hk.heap[0]] if used == HK_ENTRIES else 0
            for k in range(used):
                rows[nrows + k].hash = hk.hashes[k]
                rows[nrows + k].count = hk.counts[k]
                rows[nrows + k].error = copies[nrows + k].error
                rows[nrows + k].wmin = wmin
                rows[nrows + k].e = &copies[nrows + k]
            pthread_mutex_unlock(&hk.lock)
            nrows += used
            total_min += wmin
        # Equal keys side by side, then one merged record per key.
        qsort(rows, nrows, sizeof(hk_row_t), hk_row_cmp)
        i = 0
        while i < nrows:
            j = i
            present_min = 0
            memset(&keys[nkeys], 0, sizeof(hk_key_t))
            keys[nkeys].e = rows[i].e
            while j < nrows and hk_row_cmp(&rows[i], &rows[j]) == 0:
                keys[nkeys].upper += rows[j].count
                keys[nkeys].lower += rows[j].count - rows[j].error
                keys[nkeys].gets += rows[j].e.gets
                keys[nkeys].hits += rows[j].e.hits
                keys[nkeys].sets += rows[j].e.sets
                keys[nkeys].others += rows[j].e.others
                present_min += rows[j].wmin
                j += 1
            keys[nkeys].upper += total_min - present_min
            nkeys += 1
            i = j
        qsort(keys, nkeys, sizeof(hk_key_t), hk_key_cmp)
    append_stat_u64(c, b"hotkeys_sample", n)
    append_stat_u64(c, b"hotkeys_window", window)
    append_stat_u64(c, b"hotkeys_sampled", samples)
    for i in range(nkeys if nkeys < top else top):
        memcpy(line, b"HOTKEY ", 7)
        binary = not hk_printable(keys[i].e.key, keys[i].e.nkey)
        if binary:
            p = base64_encode(keys[i].e.key, keys[i].e.nkey, line + 7)
        else:
            memcpy(line + 7, keys[i].e.key, keys[i].e.nkey)
            p = line + 7 + keys[i].e.nkey
        len_ = snprintf(p, 300, b" est %llu err %llu rate %.1f get %llu hit %llu set %llu other %llu%s\r\n",
                        <unsigned long long>(keys[i].upper * n),
                        <unsigned long long>((keys[i].upper - keys[i].lower) * n),
                        <double>(keys[i].upper * n) / <double>window,
                        <unsigned long long>(keys[i].gets * n), <unsigned long long>(keys[i].hits * n),
                        <unsigned long long>(keys[i].sets * n), <unsigned long long>(keys[i].others * n),
                        b" b" if binary else b"")
        out_raw(c, line, <size_t>(p - line) + <size_t>len_)
    free(copies)
    free(rows)
    free(keys)
