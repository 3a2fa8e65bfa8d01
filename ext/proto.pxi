# proto.pxi -- what every protocol handler shares: the tokenizer, memcached's
# number parsing rules, and the reply writers.
#
# The tokenizer is memcached's: split on spaces only, at most MAX_TOKENS-1
# tokens, then a terminal token that points at the unparsed rest of the line
# (or is NULL). Token counts below always include that terminal token, so the
# token-count checks read exactly as memcached's do.
#
# The number parsers reproduce strtoul/strtol + memcached's safe_* wrappers:
# leading whitespace and a sign are accepted, the number must end at the token
# end or at whitespace, 64-bit overflow fails, and 32-bit results are silently
# truncated as memcached 1.6.18 does on 64-bit machines.
#
# Replies are appended to the connection's output buffer (conn.pxi flushes it
# once per batch of requests). out_string() honours `noreply` by dropping the
# one reply the command produces, as memcached's out_string does.

from libc.string cimport memchr, strlen

cdef enum:
    PROC_NEED_MORE = -1     # the command needs more input (its data block)
    PROC_PAUSE = -2         # output is full: run the same line again later

cdef inline bint is_space(char ch) noexcept nogil:
    return ch == c' ' or (ch >= 9 and ch <= 13)

cdef size_t tokenize(const char* line, size_t length, token_t* tokens, size_t max_tokens) noexcept nogil:
    cdef size_t n = 0
    cdef size_t s = 0
    cdef size_t e = 0
    while e < length:
        if line[e] == c' ':
            if s != e:
                tokens[n].value = line + s
                tokens[n].length = e - s
                n += 1
                if n == max_tokens - 1:
                    e += 1
                    s = e
                    break
            s = e + 1
        e += 1
    if s != e:
        tokens[n].value = line + s
        tokens[n].length = e - s
        n += 1
    tokens[n].value = NULL if e >= length else line + e
    tokens[n].length = 0
    n += 1
    return n

cdef inline bint tok_eq(token_t* t, const char* s, size_t n) noexcept nogil:
    return t.value != NULL and t.length == n and memcmp(t.value, s, n) == 0

# strtoull-like core: magnitude of the number at p[0:n]; sets neg; returns
# 0 ok, 1 no digits, 2 overflow. `end` receives the index after the digits.
cdef inline int parse_magnitude(const char* p, size_t n, uint64_t* out, bint* neg, size_t* end) noexcept nogil:
    cdef size_t i = 0
    cdef uint64_t v = 0
    cdef size_t start
    cdef uint64_t d
    cdef bint overflow = False
    neg[0] = False
    while i < n and is_space(p[i]):
        i += 1
    if i < n and (p[i] == c'+' or p[i] == c'-'):
        neg[0] = p[i] == c'-'
        i += 1
    start = i
    while i < n and p[i] >= c'0' and p[i] <= c'9':
        d = <uint64_t>(p[i] - c'0')
        if v > (0xFFFFFFFFFFFFFFFFULL - d) // 10:
            overflow = True
        else:
            v = v * 10 + d
        i += 1
    end[0] = i
    out[0] = v
    if i == start:
        return 1
    if overflow:
        return 2
    return 0

cdef inline bint number_ends(const char* p, size_t n, size_t end) noexcept nogil:
    return end >= n or is_space(p[end])

cdef bint safe_strtoull(const char* p, size_t n, uint64_t* out) noexcept nogil:
    cdef uint64_t v
    cdef bint neg
    cdef size_t end
    out[0] = 0
    if parse_magnitude(p, n, &v, &neg, &end) != 0:
        return False
    if not number_ends(p, n, end):
        return False
    if neg:
        v = <uint64_t>(0 - v)
    if <int64_t>v < 0 and memchr(p, c'-', n) != NULL:
        return False
    out[0] = v
    return True

cdef bint safe_strtoul(const char* p, size_t n, uint32_t* out) noexcept nogil:
    cdef uint64_t v
    if not safe_strtoull(p, n, &v):
        out[0] = 0
        return False
    out[0] = <uint32_t>v
    return True

cdef bint safe_strtoll(const char* p, size_t n, int64_t* out) noexcept nogil:
    cdef uint64_t v
    cdef bint neg
    cdef size_t end
    out[0] = 0
    if parse_magnitude(p, n, &v, &neg, &end) != 0:
        return False
    if neg:
        if v > 0x8000000000000000ULL:
            return False
    elif v > 0x7FFFFFFFFFFFFFFFULL:
        return False
    if not number_ends(p, n, end):
        return False
    out[0] = <int64_t>(0 - v) if neg else <int64_t>v
    return True

cdef bint safe_strtol(const char* p, size_t n, int32_t* out) noexcept nogil:
    cdef int64_t v
    if not safe_strtoll(p, n, &v):
        out[0] = 0
        return False
    out[0] = <int32_t>v
    return True

cdef inline bint tok_strtoul(token_t* t, uint32_t* out) noexcept nogil:
    if t.value == NULL:
        return False
    return safe_strtoul(t.value, t.length, out)

cdef inline bint tok_strtoull(token_t* t, uint64_t* out) noexcept nogil:
    if t.value == NULL:
        return False
    return safe_strtoull(t.value, t.length, out)

cdef inline bint tok_strtol(token_t* t, int32_t* out) noexcept nogil:
    if t.value == NULL:
        return False
    return safe_strtol(t.value, t.length, out)

# memcached's EXPTIME_TO_POSITIVE_TIME then realtime().
cdef inline rel_time_t exptime_to_rel(int32_t e) noexcept nogil:
    if e < 0:
        return realtime(REALTIME_MAXDELTA + 1)
    return realtime(e)

# ---------------------------------------------------------------- output

cdef bint wbuf_grow(conn_t* c, size_t need) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    cdef size_t nsize
    cdef char* nb
    if c.wbuf == NULL and w.spare_wbuf != NULL:
        # borrow the worker's spare (conn.pxi); it goes back when all is sent
        c.wbuf = w.spare_wbuf
        c.wsize = w.spare_wsize
        w.spare_wbuf = NULL
        if c.wlen + need <= c.wsize:
            return True
    nsize = c.wsize if c.wsize else 4096
    while nsize < c.wlen + need:
        nsize *= 2
    nb = <char*>realloc(c.wbuf, nsize)
    if nb == NULL:
        return False
    c.wbuf = nb
    c.wsize = nsize
    return True

# Room for n more bytes at c.wbuf + c.wlen; NULL if memory ran out.
cdef inline char* out_reserve(conn_t* c, size_t n) noexcept nogil:
    if c.wlen + n > c.wsize:
        if not wbuf_grow(c, n):
            return NULL
    return c.wbuf + c.wlen

# ---- segments: a chunked item's value sent from its chain (conn.pxi sends)

# Queue `n` value bytes of `it` from value offset `off` as the next output:
# from the chain, holding a reference, when the conn sends segments and the
# item is chunked; else copied into wbuf. Caller holds `s`'s lock (the item's
# shard). False when memory ran out (nothing queued).
cdef bint out_value(conn_t* c, shard_t* s, item_t* it, size_t off, size_t n) noexcept nogil:
    cdef char* p
    cdef conn_seg_t* seg
    cdef uint32_t cap
    if n == 0:
        return True
    if c.sg_send and item_chunked(it):
        if c.nsegs == c.segs_cap:
            cap = c.segs_cap * 2 if c.segs_cap else 8
            seg = <conn_seg_t*>realloc(c.segs, cap * sizeof(conn_seg_t))
            if seg == NULL:
                return False
            c.segs = seg
            c.segs_cap = cap
        seg = &c.segs[c.nsegs]
        seg.woff = c.wlen
        seg.it = it
        seg.shard = s
        seg.off = off
        seg.len = n
        item_ref(it)
        c.nsegs += 1
        c.seg_left += n
        return True
    p = out_reserve(c, n)
    if p == NULL:
        return False
    item_data_read(it, off, p, n)
    c.wlen += n
    return True

# Drop a segment's reference (takes its shard lock: never call holding one).
cdef inline void out_seg_release(conn_seg_t* seg) noexcept nogil:
    pthread_mutex_lock(&seg.shard.lock)
    item_unref(seg.it)
    pthread_mutex_unlock(&seg.shard.lock)

# Output bytes queued and not sent yet (wbuf and segments).
cdef inline size_t out_pending(conn_t* c) noexcept nogil:
    return c.wlen - c.wsent + c.seg_left

# Forget queued output beyond wbuf offset `wlen` and segment `nsegs` (a mark
# taken earlier); what has already started to leave is kept. Segments are
# only ever queued under a shard lock, so callers here may hold one only when
# no segment was queued since the mark (nothing is released then).
cdef void out_truncate(conn_t* c, size_t wlen, uint32_t nsegs) noexcept nogil:
    cdef uint32_t keep = c.sseg + (1 if c.sseg_sent else 0)
    cdef uint32_t i
    if wlen < c.wsent:
        wlen = c.wsent
    if wlen < c.wlen:
        c.wlen = wlen
    if nsegs < keep:
        nsegs = keep
    i = nsegs
    while i < c.nsegs:
        c.seg_left -= c.segs[i].len
        out_seg_release(&c.segs[i])
        i += 1
    if nsegs < c.nsegs:
        c.nsegs = nsegs
    if c.wmark_segs > c.nsegs:
        c.wmark_segs = c.nsegs
    if c.resp_wmark_segs > c.nsegs:
        c.resp_wmark_segs = c.nsegs

# Release every segment (the conn is closing).
cdef void out_segs_free(conn_t* c) noexcept nogil:
    cdef uint32_t i = c.sseg
    while i < c.nsegs:
        out_seg_release(&c.segs[i])
        i += 1
    free(c.segs)
    c.segs = NULL
    c.nsegs = 0
    c.sseg = 0
    c.segs_cap = 0
    c.seg_left = 0
    c.sseg_sent = 0

cdef inline void out_raw(conn_t* c, const char* s, size_t n) noexcept nogil:
    cdef char* p = out_reserve(c, n)
    if p == NULL:
        c.close_now = True
        return
    memcpy(p, s, n)
    c.wlen += n

# One reply line (CRLF added), dropped if the command said noreply.
cdef void out_string_n(conn_t* c, const char* s, size_t n) noexcept nogil:
    cdef char* p
    if c.noreply:
        if g_settings.verbose > 1:
            fprintf(stderr, ">%d NOREPLY %.*s\n", c.fd, <int>n, s)
        c.noreply = False
        return
    if g_settings.verbose > 1:
        fprintf(stderr, ">%d %.*s\n", c.fd, <int>n, s)
    p = out_reserve(c, n + 2)
    if p == NULL:
        c.close_now = True
        return
    memcpy(p, s, n)
    p[n] = c'\r'
    p[n + 1] = c'\n'
    c.wlen += n + 2

cdef inline void out_string(conn_t* c, const char* s) noexcept nogil:
    out_string_n(c, s, strlen(s))

cdef inline void out_errstring(conn_t* c, const char* s) noexcept nogil:
    # Errors that memcached always sends, even under noreply.
    c.noreply = False
    out_string_n(c, s, strlen(s))
