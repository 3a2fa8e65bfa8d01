# proto_meta.pxi -- the meta protocol (mg, ms, md, ma, me, mn).
#
# Same tokenizer, same store and the same counters as the classic text
# protocol (proto_text.pxi): a meta command is one more way to call
# do_item_get / do_store_item / do_add_delta under one shard lock, so both
# protocols always see the same items, CAS values and LRU state.
#
# Behaviour follows memcached 1.6.18 byte for byte (notes/meta-spec.md,
# tests/test_meta_diff.py), plus the later additions where 1.6.18 only
# rejects or ignores the input: E<cas> on mg/ms/md/ma, mg C<cas> (skip an
# unchanged value), ms s (size), ms MA/MP with N (append-vivify) and md x
# (empty the value instead of deleting).
#
# Deliberate differences from 1.6.18 besides those additions: `me` reports
# our item size (56-byte header); ma writes a shorter number in place even
# when an earlier mg of the same pipelined batch still references the item
# (memcached then allocates a new item); an E-chosen CAS is exempt from
# flush_all's CAS ordering (items.pxi / store.pxi meta helpers).
#
# Shape of every handler: check the line and pre-parse the flags into a
# meta_flags_t (no side effects), take the shard lock, do the store work,
# build the reply in a stack buffer while the item is still locked, unlock.
# Flags that return data are written in request order, so the request's flag
# tokens are walked a second time while the reply is built. ms must stay
# side-effect free until its data block is complete (the conn re-runs the
# same line on PROC_NEED_MORE).

cdef enum:
    META_MAX_TOKENS = 20      # memcached's MFLAG_MAX_OPT_LENGTH (counts the terminal token)
    META_MAX_OPAQUE = 32
    META_HDR_MAX = 1024       # reply line: status + at most 17 flags, one key of <= 336 bytes

cdef const char* META_ERR_FORMAT = b"CLIENT_ERROR bad command line format"
cdef const char* META_ERR_BADTOK = b"CLIENT_ERROR bad token in command line format"
cdef const char* META_ERR_OPAQUE = b"CLIENT_ERROR opaque token too long"
cdef const char* META_ERR_FLAG = b"CLIENT_ERROR invalid or duplicate flag"

cdef const char* B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# What the flag tokens of one request asked for (memcached's struct _meta_flags).
cdef struct meta_flags_t:
    const char* key           # the key to use: the token, or binkey after `b`
    size_t nkey
    uint64_t req_cas          # C
    uint64_t cas_in           # E: CAS for whatever the request creates
    uint64_t initial          # J
    uint64_t delta            # D
    rel_time_t exptime        # T
    rel_time_t autoviv_exptime  # N
    rel_time_t recache_time   # R
    uint32_t client_flags     # F
    char mode                 # M
    bint key_binary
    bint locked               # h l T N R: bump only after the reply was built
    bint vivify
    bint value
    bint no_update
    bint no_reply
    bint set_stale
    bint new_ttl
    bint has_cas
    bint has_cas_in
    bint remove_val           # md x


cdef char* base64_encode(const char* src, size_t n, char* out) noexcept nogil:
    cdef size_t i = 0
    cdef uint32_t v
    while i + 2 < n:
        v = (<uint32_t>(<unsigned char>src[i]) << 16) | (<uint32_t>(<unsigned char>src[i + 1]) << 8) | <unsigned char>src[i + 2]
        out[0] = B64_CHARS[(v >> 18) & 63]
        out[1] = B64_CHARS[(v >> 12) & 63]
        out[2] = B64_CHARS[(v >> 6) & 63]
        out[3] = B64_CHARS[v & 63]
        out += 4
        i += 3
    if n - i == 1:
        v = <uint32_t>(<unsigned char>src[i]) << 16
        out[0] = B64_CHARS[(v >> 18) & 63]
        out[1] = B64_CHARS[(v >> 12) & 63]
        out[2] = c'='
        out[3] = c'='
        out += 4
    elif n - i == 2:
        v = (<uint32_t>(<unsigned char>src[i]) << 16) | (<uint32_t>(<unsigned char>src[i + 1]) << 8)
        out[0] = B64_CHARS[(v >> 18) & 63]
        out[1] = B64_CHARS[(v >> 12) & 63]
        out[2] = B64_CHARS[(v >> 6) & 63]
        out[3] = c'='
        out += 4
    return out

cdef inline int b64_value(unsigned char ch) noexcept nogil:
    if ch >= c'A' and ch <= c'Z':
        return ch - c'A'
    if ch >= c'a' and ch <= c'z':
        return ch - c'a' + 26
    if ch >= c'0' and ch <= c'9':
        return ch - c'0' + 52
    if ch == c'+':
        return 62
    if ch == c'/':
        return 63
    if ch == c'=':
        return 0
    return -1

# memcached's lenient decoder: bytes outside the alphabet are skipped, the
# kept ones must be a non-zero multiple of 4, and decoding stops after the
# first group holding padding. Returns the decoded length, 0 on failure.
# `out` needs room for n * 3 / 4 bytes.
cdef size_t base64_decode(const char* src, size_t n, char* out) noexcept nogil:
    cdef size_t i
    cdef size_t count = 0
    cdef size_t pos = 0
    cdef int pad = 0
    cdef int v
    cdef int block[4]
    for i in range(n):
        if b64_value(<unsigned char>src[i]) >= 0:
            count += 1
    if count == 0 or count % 4 != 0:
        return 0
    count = 0
    for i in range(n):
        v = b64_value(<unsigned char>src[i])
        if v < 0:
            continue
        if src[i] == c'=':
            pad += 1
        block[count] = v
        count += 1
        if count == 4:
            out[pos] = <char>((block[0] << 2) | (block[1] >> 4))
            out[pos + 1] = <char>((block[1] << 4) | (block[2] >> 2))
            out[pos + 2] = <char>((block[2] << 6) | block[3])
            pos += 3
            count = 0
            if pad:
                if pad == 1:
                    pos -= 1
                elif pad == 2:
                    pos -= 2
                else:
                    return 0
                break
    return pos

# ---------------------------------------------------------------- flag pre-parse

# memcached's _meta_flag_preparse over tokens[start : ntokens-1]. `cmd` is the
# meta command letter: `x` is only a flag of md (elsewhere it stays invalid,
# as in 1.6.18). Returns True when the flags are usable; else *errstr says why.
cdef bint meta_preparse(token_t* tokens, size_t start, size_t ntokens, meta_flags_t* of,
                        char* binkey, char cmd, const char** errstr) noexcept nogil:
    cdef uint8_t seen[128]
    cdef size_t i
    cdef uint8_t o
    cdef token_t* t
    cdef int32_t tmp
    cdef size_t ret
    cdef bint has_error = False
    memset(seen, 0, sizeof(seen))
    memset(of, 0, sizeof(meta_flags_t))
    of.key = tokens[1].value
    of.nkey = tokens[1].length
    of.delta = 1
    for i in range(start, ntokens - 1):
        t = &tokens[i]
        o = <uint8_t>t.value[0]
        if o >= 127 or seen[o]:
            errstr[0] = b"CLIENT_ERROR duplicate flag"
            return False
        seen[o] = 1
        if o == c'b':
            ret = base64_decode(tokens[1].value, tokens[1].length, binkey)
            if ret == 0:
                errstr[0] = b"CLIENT_ERROR error decoding key"
                has_error = True
            of.key = binkey
            of.nkey = ret
            of.key_binary = True
        elif o == c'N':
            of.locked = True
            of.vivify = True
            if not safe_strtol(t.value + 1, t.length - 1, &tmp):
                errstr[0] = META_ERR_BADTOK
                has_error = True
            else:
                of.autoviv_exptime = exptime_to_rel(tmp)
        elif o == c'T':
            of.locked = True
            if not safe_strtol(t.value + 1, t.length - 1, &tmp):
                errstr[0] = META_ERR_BADTOK
                has_error = True
            else:
                of.exptime = exptime_to_rel(tmp)
                of.new_ttl = True
        elif o == c'R':
            of.locked = True
            if not safe_strtol(t.value + 1, t.length - 1, &tmp):
                errstr[0] = META_ERR_BADTOK
                has_error = True
            else:
                of.recache_time = exptime_to_rel(tmp)
        elif o == c'l' or o == c'h':
            of.locked = True
        elif (o == c'O' or o == c'P' or o == c'L' or o == c'k' or o == c's'
              or o == c't' or o == c'c' or o == c'f'):
            pass
        elif o == c'v':
            of.value = True
        elif o == c'u':
            of.no_update = True
        elif o == c'q':
            of.no_reply = True
        elif o == c'x' and cmd == c'd':
            of.remove_val = True
        elif o == c'F':
            # no message of its own: the generic one unless a later flag sets one
            if not safe_strtoul(t.value + 1, t.length - 1, &of.client_flags):
                has_error = True
        elif o == c'C':
            if not safe_strtoull(t.value + 1, t.length - 1, &of.req_cas):
                errstr[0] = META_ERR_BADTOK
                has_error = True
            else:
                of.has_cas = True
        elif o == c'E':
            if not safe_strtoull(t.value + 1, t.length - 1, &of.cas_in):
                errstr[0] = META_ERR_BADTOK
                has_error = True
            else:
                of.has_cas_in = True
        elif o == c'M':
            if t.length != 2:
                errstr[0] = b"CLIENT_ERROR incorrect length for M token"
                has_error = True
            else:
                of.mode = t.value[1]
        elif o == c'J':
            if not safe_strtoull(t.value + 1, t.length - 1, &of.initial):
                errstr[0] = b"CLIENT_ERROR invalid numeric initial value"
                has_error = True
        elif o == c'D':
            if not safe_strtoull(t.value + 1, t.length - 1, &of.delta):
                errstr[0] = b"CLIENT_ERROR invalid numeric delta value"
                has_error = True
        elif o == c'I':
            of.set_stale = True
        else:
            errstr[0] = b"CLIENT_ERROR invalid flag"
            return False
    if not g_settings.use_cas:
        of.has_cas_in = False      # -C: items carry no CAS, so E has nothing to set
    return not has_error

# ---------------------------------------------------------------- reply pieces

cdef inline char* meta_char(char* p, char ch) noexcept nogil:
    p[0] = c' '
    p[1] = ch
    return p + 2

# " k<key>", or " k<base64> b" for a key that arrived base64-encoded.
cdef inline char* meta_key(char* p, const char* key, size_t nkey, bint binary) noexcept nogil:
    p = meta_char(p, c'k')
    if binary:
        p = base64_encode(key, nkey, p)
        p[0] = c' '
        p[1] = c'b'
        return p + 2
    memcpy(p, key, nkey)
    return p + nkey

cdef inline char* meta_opaque(char* p, token_t* t) noexcept nogil:
    p[0] = c' '
    memcpy(p + 1, t.value, t.length)
    return p + 1 + t.length

# " t<remaining>" (u32, as memcached prints it) or " t-1" without a TTL.
cdef inline char* meta_ttl(char* p, item_t* it) noexcept nogil:
    p = meta_char(p, c't')
    if it.exptime == 0:
        p[0] = c'-'
        p[1] = c'1'
        return p + 2
    return write_u64(p, <uint32_t>(it.exptime - current_time()))

# Append one reply line (CRLF added) unless `skip` (quiet mode). Unlike
# out_string() it does not echo the line at -vv: memcached builds these
# replies directly in its response buffer, so only errors (out_errstring)
# and MN / me's EN show up in its verbose log.
cdef inline void meta_reply(conn_t* c, char* hdr, char* p, bint skip) noexcept nogil:
    cdef size_t n = <size_t>(p - hdr)
    if skip:
        return
    p[0] = c'\r'
    p[1] = c'\n'
    out_raw(c, hdr, n + 2)

# Suffix of a reply without an item (EN, NF, EX): O and k in request order.
# False when an opaque token is too long.
cdef bint meta_suffix_nohit(token_t* tokens, size_t start, size_t ntokens, meta_flags_t* of,
                            char** pp) noexcept nogil:
    cdef size_t i
    cdef char* p = pp[0]
    for i in range(start, ntokens - 1):
        if tokens[i].value[0] == c'O':
            if tokens[i].length > META_MAX_OPAQUE:
                return False
            p = meta_opaque(p, &tokens[i])
        elif tokens[i].value[0] == c'k':
            p = meta_key(p, of.key, of.nkey, of.key_binary)
    pp[0] = p
    return True

# ---------------------------------------------------------------- mg

cdef int process_mget(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef meta_flags_t of
    cdef char binkey[KEY_MAX_LENGTH + 1]
    cdef char hdr[META_HDR_MAX]
    cdef char* p = hdr
    cdef const char* errstr = META_ERR_FORMAT
    cdef uint64_t h
    cdef uint32_t hv
    cdef shard_t* s
    cdef bint sg = False
    cdef item_t* it
    cdef size_t i
    cdef char f
    cdef bint created = False
    cdef bint won = False
    cdef bint ttl_set = False
    cdef bint value
    cdef size_t n
    cdef char* out
    if tokens[1].length > KEY_MAX_LENGTH:
        out_errstring(c, META_ERR_FORMAT)
        return 0
    if ntokens > META_MAX_TOKENS:
        out_errstring(c, b"CLIENT_ERROR options flags are too long")
        return 0
    if not meta_preparse(tokens, 2, ntokens, &of, binkey, c'g', &errstr):
        out_errstring(c, errstr)
        return 0
    h = hash_key(of.key, of.nkey)
    hv = bucket_hv(h)
    s = shard_of(h)
    pthread_mutex_lock(&s.lock)
    # Without h/l/T/N/R the access counts at lookup, else after the reply
    # (h and l report the state from before this request).
    it = do_item_get(s, of.key, of.nkey, hv, st, not of.locked and not of.no_update)
    hotkeys_note(c, of.key, of.nkey, h, HK_GET, it != NULL)
    if it == NULL and of.vivify:
        it = item_alloc(s, of.key, of.nkey, 0, 0, 2)
        if it != NULL:
            ITEM_data(it)[0] = c'\r'
            ITEM_data(it)[1] = c'\n'
            it.hv = hv
            do_item_link(s, it, of.cas_in if of.has_cas_in else 0)
            if of.has_cas_in:
                item_set_client_cas(it, of.cas_in)
                lru_cas_changed(s, it)
            created = True
    if it == NULL:
        pthread_mutex_unlock(&s.lock)
        sinc(&st.get_cmds)
        sinc(&st.get_misses)
        p[0] = c'E'
        p[1] = c'N'
        p += 2
        if not meta_suffix_nohit(tokens, 2, ntokens, &of, &p):
            out_errstring(c, META_ERR_OPAQUE)
            return 0
        meta_reply(c, hdr, p, of.no_reply)
        return 0
    value = of.value
    if of.has_cas and it.cas == of.req_cas:
        value = False           # the client holds this version already
    if value:
        memcpy(p, b"VA ", 3)
        p = write_u64(p + 3, it.nbytes - 2)
    else:
        p[0] = c'H'
        p[1] = c'D'
        p += 2
    for i in range(2, ntokens - 1):
        f = tokens[i].value[0]
        if f == c'T':
            ttl_set = True
            it.exptime = of.exptime
        elif f == c'N':
            if created:
                it.exptime = of.autoviv_exptime
                won = True
        elif f == c'R':
            if ((it.it_flags & ITEM_TOKEN_SENT) == 0 and not created and it.exptime != 0
                    and it.exptime < of.recache_time):
                won = True
        elif f == c's':
            p = meta_char(p, c's')
            p = write_u64(p, it.nbytes - 2)
        elif f == c't':
            p = meta_ttl(p, it)
        elif f == c'c':
            p = meta_char(p, c'c')
            p = write_u64(p, it.cas)
        elif f == c'f':
            p = meta_char(p, c'f')
            p = write_u64(p, it.flags)
        elif f == c'l':
            p = meta_char(p, c'l')
            p = write_u64(p, <uint32_t>(current_time() - it.time))
        elif f == c'h':
            p = meta_char(p, c'h')
            p[0] = c'1' if it.it_flags & ITEM_FETCHED else c'0'
            p += 1
        elif f == c'O':
            if tokens[i].length > META_MAX_OPAQUE:
                # memcached notices this only now: T/N above stay applied
                pthread_mutex_unlock(&s.lock)
                out_errstring(c, META_ERR_OPAQUE)
                return 0
            p = meta_opaque(p, &tokens[i])
        elif f == c'k':
            p = meta_key(p, ITEM_key(it), it.nkey, it.it_flags & ITEM_KEY_BINARY)
    if it.it_flags & ITEM_TOKEN_SENT:
        p = meta_char(p, c'Z')
    if it.it_flags & ITEM_STALE:
        p = meta_char(p, c'X')
        if (it.it_flags & ITEM_TOKEN_SENT) == 0:
            won = True
    if won:
        p = meta_char(p, c'W')
        it.it_flags |= ITEM_TOKEN_SENT
    p[0] = c'\r'
    p[1] = c'\n'
    p += 2
    n = <size_t>(p - hdr)
    sg = value and c.sg_send and item_chunked(it)
    out = out_reserve(c, n + (it.nbytes if value and not sg else 0))
    if out == NULL:
        c.close_now = True
    else:
        memcpy(out, hdr, n)
        if value and not sg:
            item_data_read(it, 0, out + n, it.nbytes)
            n += it.nbytes
        c.wlen += n
        if sg and not out_value(c, s, it, 0, it.nbytes):
            c.close_now = True
    if ttl_set:
        sinc(&st.touch_cmds)
        sinc(&st.slab[it.slabs_clsid].touch_hits)
    else:
        sinc(&st.get_cmds)
        sinc(&st.slab[it.slabs_clsid].get_hits)
    if of.locked and not of.no_update:
        lru_bump(s, it)
    pthread_mutex_unlock(&s.lock)
    return 0

# ---------------------------------------------------------------- ms

cdef int process_mset(conn_t* c, token_t* tokens, size_t ntokens,
                      const char* data, size_t avail) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef meta_flags_t of
    cdef char binkey[KEY_MAX_LENGTH + 1]
    cdef char hdr[META_HDR_MAX]
    cdef char* p = hdr
    cdef const char* errstr = META_ERR_FORMAT
    cdef int32_t vlen_i
    cdef size_t vlen
    cdef size_t i
    cdef int comm = NREAD_SET
    cdef bint opaque_error = False
    cdef uint64_t h
    cdef uint32_t hv
    cdef shard_t* s
    cdef item_t* it
    cdef item_t* old
    cdef rel_time_t exptime
    cdef store_result_t ret
    cdef uint64_t cas_out = 0
    cdef bint consumed
    cdef size_t size_out
    cdef char f
    cdef int clsid
    if tokens[1].length > KEY_MAX_LENGTH:
        out_errstring(c, META_ERR_FORMAT)
        return 0
    if ntokens == 3:
        out_errstring(c, META_ERR_FORMAT)
        return 0
    if ntokens > META_MAX_TOKENS:
        out_errstring(c, b"CLIENT_ERROR options flags too long")
        return 0
    if not tok_strtol(&tokens[2], &vlen_i) or vlen_i < 0 or vlen_i > 2147483647 - 2:
        out_errstring(c, META_ERR_FORMAT)
        return 0
    vlen = <size_t>vlen_i + 2
    # From here on an error also discards the data block.
    if not meta_preparse(tokens, 3, ntokens, &of, binkey, c's', &errstr):
        out_errstring(c, errstr)
        return conn_swallow(c, vlen, avail)
    for i in range(3, ntokens - 1):
        if tokens[i].value[0] == c'O' and tokens[i].length > META_MAX_OPAQUE:
            opaque_error = True
    if of.mode == 0 or of.mode == c'S':
        comm = NREAD_SET
    elif of.mode == c'E':
        comm = NREAD_ADD
    elif of.mode == c'A':
        comm = NREAD_APPEND
    elif of.mode == c'P':
        comm = NREAD_PREPEND
    elif of.mode == c'R':
        comm = NREAD_REPLACE
    else:
        out_errstring(c, b"CLIENT_ERROR invalid mode for ms M token")
        return conn_swallow(c, vlen, avail)
    if of.has_cas and (comm == NREAD_SET or comm == NREAD_REPLACE):
        comm = NREAD_CAS
    if opaque_error:
        out_errstring(c, META_ERR_OPAQUE)
        return conn_swallow(c, vlen, avail)
    h = hash_key(of.key, of.nkey)
    hv = bucket_hv(h)
    s = shard_of(h)
    hotkeys_note(c, of.key, of.nkey, h, HK_SET, False)
    if not item_size_ok(of.nkey, vlen):
        sinc(&st.store_too_large)
        # memcached drops the old value rather than leave it stale
        pthread_mutex_lock(&s.lock)
        old = do_item_get(s, of.key, of.nkey, hv, st, False)
        if old != NULL:
            do_item_unlink(s, old)
        pthread_mutex_unlock(&s.lock)
        out_errstring(c, b"SERVER_ERROR object too large for cache")
        return conn_swallow(c, vlen, avail)
    if avail < vlen:
        c.rneed = vlen
        return PROC_NEED_MORE
    exptime = of.exptime
    pthread_mutex_lock(&s.lock)
    if of.vivify and (comm == NREAD_APPEND or comm == NREAD_PREPEND):
        # append/prepend with N: a miss stores the data as a new item
        if do_item_get(s, of.key, of.nkey, hv, st, False) == NULL:
            comm = NREAD_ADD
            exptime = of.autoviv_exptime
    it = item_alloc(s, of.key, of.nkey, of.client_flags, exptime, vlen)
    if it == NULL:
        sinc(&st.store_no_memory)
        old = do_item_get(s, of.key, of.nkey, hv, st, False)
        if old != NULL:
            do_item_unlink(s, old)
        pthread_mutex_unlock(&s.lock)
        out_errstring(c, b"SERVER_ERROR out of memory storing object")
        return <int>vlen
    sinc(&st.slab[it.slabs_clsid].set_cmds)
    if data[vlen - 2] != c'\r' or data[vlen - 1] != c'\n':
        item_free(it)
        pthread_mutex_unlock(&s.lock)
        out_errstring(c, b"CLIENT_ERROR bad data chunk")
        return <int>vlen
    item_data_write(it, 0, data, vlen)
    it.hv = hv
    it.cas = of.req_cas if of.has_cas else 0
    if of.key_binary:
        it.it_flags |= ITEM_KEY_BINARY
    clsid = it.slabs_clsid
    ret = do_store_item(s, it, comm, st, of.set_stale and comm == NREAD_CAS,
                        of.cas_in if of.has_cas_in else 0, &cas_out, &consumed)
    if MC_UNLIKELY(logger_wants(LOG_MUTATIONS)):
        log_item_store(c, of.key, of.nkey, 1 if ret == STORE_STORED else 2 if ret == STORE_EXISTS else
                       3 if ret == STORE_NOT_FOUND else 0, comm, exptime, clsid, vlen)
    if not consumed:
        item_free(it)
    size_out = vlen - 2
    if ret == STORE_STORED:
        old = assoc_find(s, of.key, of.nkey, hv)     # the item just linked
        if old != NULL:
            if comm == NREAD_APPEND or comm == NREAD_PREPEND:
                size_out = old.nbytes - 2
            if of.has_cas_in:
                item_set_client_cas(old, of.cas_in)
                lru_cas_changed(s, old)
    pthread_mutex_unlock(&s.lock)
    if ret == STORE_STORED:
        memcpy(p, b"HD", 2)
    elif ret == STORE_EXISTS:
        memcpy(p, b"EX", 2)
    elif ret == STORE_NOT_FOUND:
        memcpy(p, b"NF", 2)
    else:
        memcpy(p, b"NS", 2)
    p += 2
    for i in range(3, ntokens - 1):
        f = tokens[i].value[0]
        if f == c'O':
            p = meta_opaque(p, &tokens[i])
        elif f == c'k':
            p = meta_key(p, of.key, of.nkey, of.key_binary)
        elif f == c'c':
            p = meta_char(p, c'c')
            p = write_u64(p, cas_out if ret == STORE_STORED else 0)
        elif f == c's':
            p = meta_char(p, c's')
            p = write_u64(p, size_out)
    meta_reply(c, hdr, p, of.no_reply and ret == STORE_STORED)
    return <int>vlen

# ---------------------------------------------------------------- md

cdef int process_mdelete(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef meta_flags_t of
    cdef char binkey[KEY_MAX_LENGTH + 1]
    cdef char hdr[META_HDR_MAX]
    cdef char* p = hdr + 2          # status goes in front once known
    cdef const char* errstr = META_ERR_FORMAT
    cdef uint64_t h
    cdef uint32_t hv
    cdef shard_t* s
    cdef item_t* it
    cdef item_t* tomb
    cdef store_result_t ret
    cdef uint64_t cas_out = 0
    cdef bint consumed
    cdef bint skip = False
    cdef bint client_cas = False
    if tokens[1].length > KEY_MAX_LENGTH:
        out_errstring(c, META_ERR_FORMAT)
        return 0
    if ntokens > META_MAX_TOKENS:
        out_errstring(c, b"CLIENT_ERROR options flags too long")
        return 0
    if not meta_preparse(tokens, 2, ntokens, &of, binkey, c'd', &errstr):
        out_errstring(c, META_ERR_FLAG)
        return 0
    if not meta_suffix_nohit(tokens, 2, ntokens, &of, &p):
        out_errstring(c, META_ERR_OPAQUE)
        return 0
    h = hash_key(of.key, of.nkey)
    hv = bucket_hv(h)
    s = shard_of(h)
    hotkeys_note(c, of.key, of.nkey, h, HK_OTHER, False)
    pthread_mutex_lock(&s.lock)
    it = do_item_get(s, of.key, of.nkey, hv, st, False)
    if it == NULL:
        sinc(&st.delete_misses)
        memcpy(hdr, b"NF", 2)
    elif of.has_cas and it.cas != of.req_cas:
        sinc(&st.delete_misses)
        memcpy(hdr, b"EX", 2)
    else:
        memcpy(hdr, b"HD", 2)
        skip = of.no_reply
        if of.remove_val:
            # x: swap in an empty item (md's own F and T, the old CAS or E)
            it.it_flags |= ITEM_PINNED
            tomb = item_alloc(s, of.key, of.nkey, of.client_flags, of.exptime, 2)
            it.it_flags &= ~ITEM_PINNED
            if tomb == NULL:
                pthread_mutex_unlock(&s.lock)
                out_errstring(c, b"SERVER_ERROR out of memory")
                return 0
            ITEM_data(tomb)[0] = c'\r'
            ITEM_data(tomb)[1] = c'\n'
            tomb.hv = hv
            tomb.it_flags |= (it.it_flags & ITEM_KEY_BINARY)
            client_cas = of.has_cas_in or (it.it_flags & ITEM_CAS_CLIENT) != 0
            ret = do_store_item(s, tomb, NREAD_SET, st, False,
                                of.cas_in if of.has_cas_in else it.cas, &cas_out, &consumed)
            if not consumed:
                item_free(tomb)
            if ret != STORE_STORED:
                memcpy(hdr, b"NS", 2)
                skip = False
                it = NULL
            else:
                it = tomb
                if client_cas:
                    item_set_client_cas(it, it.cas)
                    lru_cas_changed(s, it)
        if it != NULL:
            if of.set_stale:
                # keep the item, but as stale with a new CAS: the next mg wins
                if of.new_ttl:
                    it.exptime = of.exptime
                it.it_flags |= ITEM_STALE
                it.it_flags &= ~ITEM_TOKEN_SENT
                if of.has_cas_in:
                    item_set_client_cas(it, of.cas_in)
                    lru_cas_changed(s, it)
                else:
                    it.cas = next_cas_above(it.cas)
                    item_clear_client_cas(it)
                    lru_cas_changed(s, it)
            else:
                sinc(&st.slab[it.slabs_clsid].delete_hits)
                if not of.remove_val:
                    do_item_unlink(s, it)
    pthread_mutex_unlock(&s.lock)
    meta_reply(c, hdr, p, skip)
    return 0

# ---------------------------------------------------------------- ma

cdef int process_marithmetic(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef meta_flags_t of
    cdef char binkey[KEY_MAX_LENGTH + 1]
    cdef char hdr[META_HDR_MAX]
    cdef char* p = hdr
    cdef const char* errstr = META_ERR_FORMAT
    cdef bint incr = True
    cdef uint64_t h
    cdef uint32_t hv
    cdef shard_t* s
    cdef item_t* it = NULL
    cdef char numbuf[32]
    cdef char* end
    cdef size_t nlen
    cdef uint64_t cas
    cdef delta_result_t r
    cdef bint created = False
    cdef size_t i
    cdef char f
    cdef uint64_t cas_out = 0
    cdef bint consumed
    if tokens[1].length > KEY_MAX_LENGTH:
        out_errstring(c, META_ERR_FORMAT)
        return 0
    if ntokens > META_MAX_TOKENS:
        out_errstring(c, b"CLIENT_ERROR options flags too long")
        return 0
    if not meta_preparse(tokens, 2, ntokens, &of, binkey, c'a', &errstr):
        out_errstring(c, META_ERR_FLAG)
        return 0
    if of.mode == 0 or of.mode == c'I' or of.mode == c'+':
        incr = True
    elif of.mode == c'D' or of.mode == c'-':
        incr = False
    else:
        out_errstring(c, b"CLIENT_ERROR invalid mode for ma M token")
        return 0
    h = hash_key(of.key, of.nkey)
    hv = bucket_hv(h)
    s = shard_of(h)
    hotkeys_note(c, of.key, of.nkey, h, HK_OTHER, False)
    cas = of.req_cas if of.has_cas else 0      # C0 means "no check" here
    pthread_mutex_lock(&s.lock)
    r = do_add_delta(s, of.key, of.nkey, hv, incr, of.delta, numbuf, &cas, st, &it,
                     of.cas_in if of.has_cas_in else 0)
    if r == DELTA_NON_NUMERIC:
        pthread_mutex_unlock(&s.lock)
        out_errstring(c, b"CLIENT_ERROR cannot increment or decrement non-numeric value")
        return 0
    elif r == DELTA_EOM:
        pthread_mutex_unlock(&s.lock)
        out_errstring(c, b"SERVER_ERROR out of memory")
        return 0
    elif r == DELTA_NOT_FOUND:
        it = NULL
        if of.vivify:
            # create the counter at J (the delta is not applied)
            end = write_u64(numbuf, of.initial)
            end[0] = 0
            nlen = <size_t>(end - numbuf)
            it = item_alloc(s, of.key, of.nkey, 0, 0, nlen + 2)
            if it == NULL:
                pthread_mutex_unlock(&s.lock)
                out_errstring(c, b"SERVER_ERROR Out of memory allocating new item")
                return 0
            memcpy(ITEM_data(it), numbuf, nlen)
            ITEM_data(it)[nlen] = c'\r'
            ITEM_data(it)[nlen + 1] = c'\n'
            it.hv = hv
            do_store_item(s, it, NREAD_ADD, st, False, of.cas_in if of.has_cas_in else 0,
                          &cas_out, &consumed)
            if not consumed:
                item_free(it)
                it = NULL
                memcpy(p, b"NS", 2)
                p += 2
            else:
                created = True
                if of.has_cas_in:
                    item_set_client_cas(it, it.cas)
                    lru_cas_changed(s, it)
        else:
            if incr:
                sinc(&st.incr_misses)
            else:
                sinc(&st.decr_misses)
            memcpy(p, b"NF", 2)
            p += 2
    elif r == DELTA_CAS_MISMATCH:
        it = NULL
        memcpy(p, b"EX", 2)
        p += 2
    if it == NULL:
        pthread_mutex_unlock(&s.lock)
        if not meta_suffix_nohit(tokens, 2, ntokens, &of, &p):
            out_errstring(c, META_ERR_OPAQUE)
            return 0
        meta_reply(c, hdr, p, False)
        return 0
    if r == DELTA_OK:
        if of.has_cas_in:
            item_set_client_cas(it, it.cas)
            lru_cas_changed(s, it)
        else:
            item_clear_client_cas(it)
            lru_cas_changed(s, it)
    nlen = strlen(numbuf)
    if of.value:
        memcpy(p, b"VA ", 3)
        p = write_u64(p + 3, nlen)
    else:
        memcpy(p, b"HD", 2)
        p += 2
    for i in range(2, ntokens - 1):
        f = tokens[i].value[0]
        if f == c'c':
            p = meta_char(p, c'c')
            p = write_u64(p, it.cas)
        elif f == c't':
            p = meta_ttl(p, it)
        elif f == c'T':
            it.exptime = of.exptime
        elif f == c'N':
            if created:
                it.exptime = of.autoviv_exptime
        elif f == c'O':
            if tokens[i].length > META_MAX_OPAQUE:
                pthread_mutex_unlock(&s.lock)
                out_errstring(c, META_ERR_OPAQUE)
                return 0
            p = meta_opaque(p, &tokens[i])
        elif f == c'k':
            p = meta_key(p, of.key, of.nkey, of.key_binary)
    pthread_mutex_unlock(&s.lock)
    if of.value:
        p[0] = c'\r'
        p[1] = c'\n'
        memcpy(p + 2, numbuf, nlen)
        p += 2 + nlen
    # 1.6.18: q hides a delta's reply, not an autovivify's
    meta_reply(c, hdr, p, of.no_reply and not created)
    return 0

# ---------------------------------------------------------------- me

cdef int process_meta_debug(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef char binkey[KEY_MAX_LENGTH + 1]
    cdef char hdr[META_HDR_MAX]
    cdef char* p = hdr
    cdef const char* key
    cdef size_t nkey
    cdef uint64_t h
    cdef shard_t* s
    cdef item_t* it
    cdef rel_time_t now
    if ntokens < 3 or tokens[1].length > KEY_MAX_LENGTH:
        out_string(c, META_ERR_FORMAT)
        return 0
    key = tokens[1].value
    nkey = tokens[1].length
    if ntokens >= 4 and tok_eq(&tokens[2], b"b", 1):
        nkey = base64_decode(key, nkey, binkey)
        if nkey == 0:
            out_string(c, META_ERR_FORMAT)
            return 0
        key = binkey
    h = hash_key(key, nkey)
    s = shard_of(h)
    pthread_mutex_lock(&s.lock)
    it = do_item_get(s, key, nkey, bucket_hv(h), st, False)
    if it != NULL:
        now = current_time()
        memcpy(p, b"ME ", 3)
        p += 3
        if it.it_flags & ITEM_KEY_BINARY:
            p = base64_encode(ITEM_key(it), it.nkey, p)
        else:
            memcpy(p, ITEM_key(it), it.nkey)
            p += it.nkey
        # 1.6.18 prints now - exptime (negative while the item is live)
        memcpy(p, b" exp=", 5)
        p = write_i64(p + 5, -1 if it.exptime == 0 else <int64_t>(<int32_t>(now - it.exptime)))
        memcpy(p, b" la=", 4)
        p = write_u64(p + 4, <uint32_t>(now - it.time))
        memcpy(p, b" cas=", 5)
        p = write_u64(p + 5, it.cas)
        if it.it_flags & ITEM_FETCHED:
            memcpy(p, b" fetch=yes", 10)
            p += 10
        else:
            memcpy(p, b" fetch=no", 9)
            p += 9
        memcpy(p, b" cls=", 5)
        p = write_u64(p + 5, it.slabs_clsid)
        memcpy(p, b" size=", 6)
        p = write_u64(p + 6, ITEM_ntotal(it))
        pthread_mutex_unlock(&s.lock)
        meta_reply(c, hdr, p, False)
    else:
        pthread_mutex_unlock(&s.lock)
        out_string(c, b"EN")
    sinc(&st.meta_cmds)
    return 0

# ---------------------------------------------------------------- dispatch

# `sub` is the second letter of a two-letter command starting with `m`.
cdef int process_meta_dispatch(conn_t* c, char sub, token_t* tokens, size_t ntokens,
                               const char* line, size_t length,
                               const char* data, size_t avail) noexcept nogil:
    if sub == c'n':
        # our conn flushes after every batch, so MN is already a flush point
        out_string(c, b"MN")
        c.cmd_flushed = True
        return 0
    if sub == c'e':
        return process_meta_debug(c, tokens, ntokens)
    if sub != c'g' and sub != c's' and sub != c'd' and sub != c'a':
        out_string(c, b"ERROR")
        return 0
    if ntokens < 3:
        out_string(c, b"ERROR")
        return 0
    if sub == c'g':
        return process_mget(c, tokens, ntokens)
    if sub == c's':
        return process_mset(c, tokens, ntokens, data, avail)
    if sub == c'd':
        return process_mdelete(c, tokens, ntokens)
    return process_marithmetic(c, tokens, ntokens)
