# proto_admin.pxi -- operator commands: slabs, lru, lru_crawler.
#
# These are not on the request hot path. `slabs reassign` and `slabs automove`
# drive the page mover (slabs_rebalance.pxi). memcachepy has a single
# (non-segmented) LRU per class and shard, so the LRU tuning commands (`lru
# tune|mode|temp_ttl`, `lru_crawler sleep|tocrawl`) are parsed and validated
# exactly as memcached does and reported by `stats settings`, but change no
# behaviour. `lru_crawler crawl` reclaims expired items
# synchronously; `lru_crawler metadump`/`mgdump` list keys in memcached's format.

cdef inline bint parse_strtod(token_t* t, double* out) noexcept nogil:
    # memcached's safe_strtod: a plain decimal is all the tuning commands need.
    cdef size_t i = 0
    cdef double v = 0
    cdef double scale = 1
    cdef bint neg = False
    cdef bint digits = False
    if t.value == NULL:
        return False
    if i < t.length and (t.value[i] == c'-' or t.value[i] == c'+'):
        neg = t.value[i] == c'-'
        i += 1
    while i < t.length and t.value[i] >= c'0' and t.value[i] <= c'9':
        v = v * 10 + (t.value[i] - c'0')
        digits = True
        i += 1
    if i < t.length and t.value[i] == c'.':
        i += 1
        while i < t.length and t.value[i] >= c'0' and t.value[i] <= c'9':
            scale /= 10
            v += (t.value[i] - c'0') * scale
            digits = True
            i += 1
    if not digits or i != t.length:
        return False
    out[0] = -v if neg else v
    return True

cdef int process_slabs_command(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef uint32_t level
    cdef double ratio
    cdef int32_t src
    cdef int32_t dst
    cdef reassign_result_t rv
    if ntokens == 5 and tok_eq(&tokens[1], b"reassign", 8):
        if not g_settings.slab_reassign:
            out_string(c, b"CLIENT_ERROR slab reassignment disabled")
            return 0
        if not (tok_strtol(&tokens[2], &src) and tok_strtol(&tokens[3], &dst)):
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        rv = slabs_reassign(src, dst)
        if rv == REASSIGN_OK:
            out_string(c, b"OK")
        elif rv == REASSIGN_RUNNING:
            out_string(c, b"BUSY currently processing reassign request")
        elif rv == REASSIGN_SRC_DST_SAME:
            out_string(c, b"SAME src and dst class are identical")
        elif rv == REASSIGN_BADCLASS:
            out_string(c, b"BADCLASS invalid src or dst class id")
        else:
            out_string(c, b"NOSPARE source class has no spare pages")
        return 0
    if ntokens >= 4 and tok_eq(&tokens[1], b"automove", 8):
        set_noreply_maybe(c, tokens, ntokens)
        if tok_eq(&tokens[2], b"ratio", 5):
            if ntokens < 5 or not parse_strtod(&tokens[3], &ratio):
                out_string(c, b"ERROR")
                return 0
            g_settings.slab_automove_ratio = ratio
        else:
            if not tok_strtoul(&tokens[2], &level):
                out_string(c, b"CLIENT_ERROR bad command line format")
                return 0
            if level > 2:
                out_string(c, b"ERROR")
                return 0
            g_settings.slab_automove = <int>level
        out_string(c, b"OK")
        return 0
    out_string(c, b"ERROR")
    return 0

cdef int process_lru_command(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef uint32_t pct_hot
    cdef uint32_t pct_warm
    cdef double hot_factor
    cdef double factor
    cdef int32_t ttl
    set_noreply_maybe(c, tokens, ntokens)
    if tok_eq(&tokens[1], b"tune", 4) and ntokens >= 7:
        if not (tok_strtoul(&tokens[2], &pct_hot) and tok_strtoul(&tokens[3], &pct_warm)
                and parse_strtod(&tokens[4], &hot_factor) and parse_strtod(&tokens[5], &factor)):
            out_string(c, b"ERROR")
        elif pct_hot + pct_warm > 80:
            out_string(c, b"ERROR hot and warm pcts must not exceed 80")
        elif factor <= 0 or hot_factor <= 0:
            out_string(c, b"ERROR hot/warm age factors must be greater than 0")
        else:
            g_settings.hot_lru_pct = pct_hot
            g_settings.warm_lru_pct = pct_warm
            g_settings.hot_max_factor = hot_factor
            g_settings.warm_max_factor = factor
            out_string(c, b"OK")
    elif tok_eq(&tokens[1], b"mode", 4) and ntokens >= 4 and g_settings.lru_maintainer:
        if tok_eq(&tokens[2], b"flat", 4):
            g_settings.lru_segmented = False
            out_string(c, b"OK")
        elif tok_eq(&tokens[2], b"segmented", 9):
            g_settings.lru_segmented = True
            out_string(c, b"OK")
        else:
            out_string(c, b"ERROR")
    elif tok_eq(&tokens[1], b"temp_ttl", 8) and ntokens >= 4 and g_settings.lru_maintainer:
        if not tok_strtol(&tokens[2], &ttl):
            out_string(c, b"ERROR")
        else:
            if ttl < 0:
                g_settings.temp_lru = False
            else:
                g_settings.temp_lru = True
                g_settings.temporary_ttl = ttl
            out_string(c, b"OK")
    else:
        out_string(c, b"ERROR")
    return 0

# Parse "all" or a comma list of class ids into `sel`. Returns 0 ok, 1 bad class.
cdef int parse_class_list(token_t* t, bint* sel) noexcept nogil:
    cdef size_t i = 0
    cdef size_t s
    cdef uint32_t id
    memset(sel, 0, sizeof(bint) * MAX_SLAB_CLASSES)
    if tok_eq(t, b"all", 3) or tok_eq(t, b"hash", 4):
        for i in range(1, MAX_SLAB_CLASSES):
            sel[i] = True
        return 0
    while i < t.length:
        s = i
        while i < t.length and t.value[i] != c',':
            i += 1
        if not safe_strtoul(t.value + s, i - s, &id) or id == 0 or id >= MC_MAX_CLASSES - 1:
            return 1
        sel[id] = True
        i += 1
    return 0

cdef inline char* uri_encode(const char* key, size_t n, char* out) noexcept nogil:
    cdef size_t i
    cdef unsigned char ch
    cdef const char* hexd = b"0123456789ABCDEF"
    for i in range(n):
        ch = <unsigned char>key[i]
        if (ch >= c'a' and ch <= c'z') or (ch >= c'A' and ch <= c'Z') or \
                (ch >= c'0' and ch <= c'9') or ch == c'-' or ch == c'.' or ch == c'_' or ch == c'~':
            out[0] = <char>ch
            out += 1
        else:
            out[0] = c'%'
            out[1] = hexd[ch >> 4]
            out[2] = hexd[ch & 15]
            out += 3
    return out

# List the live items of every selected class of every shard (metadump: mode
# 1, mgdump: mode 2); dead ones are skipped, as memcached's dump skips them.
# Returns the shard to continue from when it stopped early because the dump
# filled the output buffer, or -1 when every shard was walked.
cdef int lru_crawler_walk(conn_t* c, bint* sel, int mode, int start) noexcept nogil:
    cdef int i
    cdef int id
    cdef int seg
    cdef item_t* it
    cdef item_t* nxt
    cdef rel_time_t now = current_time()
    cdef char line[1024]
    cdef char* p
    cdef int n
    cdef lock_hold_t t0
    for i in range(start, g_nshards):
        if i > start and c.wlen - c.wsent > WBUF_HIGH:
            return i
        t0 = lockstat_lock(&g_shards[i].lock)
        for id in range(1, MAX_SLAB_CLASSES):
            if not sel[id]:
                continue
            it = g_shards[i].heads[lru_idx(id, SEG_HOT)]
            seg = SEG_HOT
            while True:
                if it == NULL:
                    # HOT, then WARM, then COLD, then TEMP
                    seg += 1
                    if seg > SEG_TEMP:
                        break
                    it = g_shards[i].heads[lru_idx(id, seg)]
                    continue
                nxt = it.next
                if item_dead(it, now):
                    pass                # dead items are skipped, as memcached's dump does
                elif mode == 1:
                    p = uri_encode(ITEM_key(it), it.nkey, line + 4)
                    memcpy(line, b"key=", 4)
                    n = snprintf(p, 256, b" exp=%ld la=%llu cas=%llu fetch=%s cls=%u size=%lu\n",
                                 <long>(-1 if it.exptime == 0 else <long>it.exptime + g_process_started),
                                 <unsigned long long>(it.time + g_process_started),
                                 <unsigned long long>it.cas,
                                 b"yes" if it.it_flags & ITEM_FETCHED else b"no",
                                 <unsigned>id, <unsigned long>ITEM_ntotal(it))
                    out_raw(c, line, <size_t>(p - line) + <size_t>n)
                elif mode == 2:
                    out_raw(c, b"mg ", 3)
                    if it.it_flags & ITEM_KEY_BINARY:
                        p = base64_encode(ITEM_key(it), it.nkey, line)
                        out_raw(c, line, <size_t>(p - line))
                        out_raw(c, b" b", 2)
                    else:
                        out_raw(c, ITEM_key(it), it.nkey)
                    out_raw(c, b"\r\n", 2)
                it = nxt
        lockstat_unlock(&g_shards[i].lock, LK_DUMP, t0)
    return -1

cdef int process_lru_crawler_command(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef bint sel[MAX_SLAB_CLASSES]
    cdef uint32_t v
    cdef int next_shard
    if ntokens == 4 and tok_eq(&tokens[1], b"crawl", 5):
        if not g_settings.lru_crawler:
            out_string(c, b"CLIENT_ERROR lru crawler disabled")
            return 0
        if parse_class_list(&tokens[2], sel):
            out_string(c, b"BADCLASS invalid class id")
            return 0
        if not crawler_crawl_now(sel):
            out_string(c, b"BUSY currently processing crawler request")
            return 0
        out_string(c, b"OK")
        return 0
    if ntokens == 4 and (tok_eq(&tokens[1], b"metadump", 8) or tok_eq(&tokens[1], b"mgdump", 6)):
        if not g_settings.lru_crawler:
            out_string(c, b"CLIENT_ERROR lru crawler disabled")
            return 0
        if not g_settings.dump_enabled:
            out_string(c, b"ERROR metadump not allowed")
            return 0
        # A dump is streamed a shard at a time: when the output buffer is full
        # it pauses (c.get_resume = next shard) and goes on once that is sent.
        if c.get_resume == 0:
            if c.wlen > c.wsent:
                out_string(c, b"ERROR cannot pipeline other commands before metadump")
                return 0
            mc_fetch_add_u64(&g_lru_crawler_starts, 1)
        if parse_class_list(&tokens[2], sel):
            out_string(c, b"BADCLASS invalid class id")
            return 0
        next_shard = lru_crawler_walk(c, sel, 1 if tokens[1].length == 8 else 2, <int>c.get_resume)
        if next_shard >= 0:
            c.get_resume = <size_t>next_shard
            return PROC_PAUSE
        c.get_resume = 0
        out_raw(c, b"END\r\n", 5)
        return 0
    if ntokens == 4 and tok_eq(&tokens[1], b"tocrawl", 7):
        if not tok_strtoul(&tokens[2], &v):
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        g_settings.lru_crawler_tocrawl = v
        out_string(c, b"OK")
        return 0
    if ntokens == 4 and tok_eq(&tokens[1], b"sleep", 5):
        if not tok_strtoul(&tokens[2], &v):
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        if v > 1000000:
            out_string(c, b"CLIENT_ERROR sleep must be one second or less")
            return 0
        g_settings.lru_crawler_sleep = v
        out_string(c, b"OK")
        return 0
    if ntokens == 3:
        if tok_eq(&tokens[1], b"enable", 6):
            g_settings.lru_crawler = True
            out_string(c, b"OK")
        elif tok_eq(&tokens[1], b"disable", 7):
            g_settings.lru_crawler = False
            out_string(c, b"OK")
        else:
            out_string(c, b"ERROR")
        return 0
    out_string(c, b"ERROR")
    return 0

