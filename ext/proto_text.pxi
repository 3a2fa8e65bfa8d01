# proto_text.pxi -- the classic text protocol: command dispatch and handlers.
#
# process_command() gets one request line (without its line end) plus whatever
# input follows it, and either answers it completely or says it needs more
# input (a storage command whose data block has not all arrived) or that output
# is full (a long multiget pauses between keys and resumes later). Every check,
# its order, and every reply string follow memcached 1.6.18's proto_text.c, so
# that the same bytes in give the same bytes out; the differential tests hold
# this file to that.
#
# Handlers take one shard lock per key and never block otherwise.

cdef inline thread_stats_t* conn_stats(conn_t* c) noexcept nogil:
    return &(<worker_t*>c.worker).stats

# memcached's set_noreply_maybe: the last real token decides.
cdef inline bint set_noreply_maybe(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    if tok_eq(&tokens[ntokens - 2], b"noreply", 7):
        c.noreply = True
    return c.noreply

cdef inline bint want_tokens(conn_t* c, size_t ntokens, size_t lo, size_t hi) noexcept nogil:
    if ntokens < lo or ntokens > hi:
        out_string(c, b"ERROR")
        return False
    return True

cdef inline bint want_tokens_or(conn_t* c, size_t ntokens, size_t a, size_t b) noexcept nogil:
    if ntokens != a and ntokens != b:
        out_string(c, b"ERROR")
        return False
    return True

# Append "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n" for a hit
# (the data from the chain of a chunked item: proto.pxi out_value). Caller
# holds `s`'s lock, the item's shard.
cdef inline bint write_value(conn_t* c, shard_t* s, item_t* it, bint return_cas) noexcept nogil:
    cdef bint sg = c.sg_send and item_chunked(it)
    cdef size_t need = 6 + it.nkey + 1 + 10 + 1 + 10 + 21 + 2 + (0 if sg else it.nbytes)
    cdef char* p = out_reserve(c, need)
    cdef char* start = p
    if p == NULL:
        return False
    memcpy(p, b"VALUE ", 6)
    p += 6
    memcpy(p, ITEM_key(it), it.nkey)
    p += it.nkey
    p[0] = c' '
    p = write_u64(p + 1, it.flags)
    p[0] = c' '
    p = write_u64(p + 1, it.nbytes - 2)
    if return_cas:
        p[0] = c' '
        p = write_u64(p + 1, it.cas)
    p[0] = c'\r'
    p[1] = c'\n'
    p += 2
    if not sg:
        item_data_read(it, 0, p, it.nbytes)
        p += it.nbytes
    c.wlen += <size_t>(p - start)
    if sg:
        return out_value(c, s, it, 0, it.nbytes)
    return True

# Next key of a multiget starting at line[pos]: returns its start, sets klen;
# returns `length` when no key is left.
cdef inline size_t next_key(const char* line, size_t length, size_t pos, size_t* klen) noexcept nogil:
    cdef size_t s
    while pos < length and line[pos] == c' ':
        pos += 1
    s = pos
    while pos < length and line[pos] != c' ':
        pos += 1
    klen[0] = pos - s
    return s

# A pipelined batch: while one command is served, fetch the bucket of the key
# the next one (`get`/`gets`/`mg`, already whole in the read buffer at `q`)
# will look up. Only a prefetch (mc_prefetch_bucket): nothing is read under no
# lock but the table's address and size, and a wrong guess costs one line.
cdef inline void prefetch_next_key(const char* q, size_t n) noexcept nogil:
    cdef size_t ks
    cdef size_t e
    cdef size_t lim
    cdef uint64_t h
    cdef shard_t* s
    if n < 5:
        return
    if q[0] == c'g' and q[1] == c'e' and q[2] == c't' and q[3] == c' ':
        ks = 4
    elif q[0] == c'g' and q[1] == c'e' and q[2] == c't' and q[3] == c's' and q[4] == c' ':
        ks = 5
    elif q[0] == c'm' and q[1] == c'g' and q[2] == c' ':
        ks = 3
    else:
        return
    lim = n if n < ks + KEY_MAX_LENGTH + 1 else ks + KEY_MAX_LENGTH + 1
    e = ks
    while e < lim and q[e] != c' ' and q[e] != c'\r' and q[e] != c'\n':
        e += 1
    if e == ks or e == lim:
        return
    h = hash_key(q + ks, e - ks)
    s = shard_of(h)
    mc_prefetch_bucket(&s.buckets, &s.hashpower, bucket_hv(h))

cdef int process_get(conn_t* c, const char* line, size_t length, token_t* tokens,
                     size_t ntokens, bint return_cas, bint should_touch) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef int32_t exptime_int = 0
    cdef rel_time_t exptime = 0
    cdef size_t pos
    cdef size_t klen
    cdef size_t ks
    cdef size_t wstart = c.wlen
    cdef uint32_t sstart = c.nsegs
    cdef size_t p2
    cdef size_t k2
    cdef uint64_t h
    cdef uint64_t h_next = 0
    cdef bint have_next = False
    cdef shard_t* s
    cdef item_t* it
    cdef bint ok
    if should_touch:
        if not tok_strtol(&tokens[1], &exptime_int):
            out_string(c, b"CLIENT_ERROR invalid exptime argument")
            return 0
        exptime = exptime_to_rel(exptime_int)
        pos = <size_t>(tokens[2].value - line) if tokens[2].value != NULL else length
    else:
        pos = <size_t>(tokens[1].value - line)
    cdef uint32_t marks0 = c.numarks
    if c.get_resume:
        pos = c.get_resume
    while True:
        ks = next_key(line, length, pos, &klen)
        if klen == 0:
            break
        pos = ks + klen
        if klen > KEY_MAX_LENGTH:
            c.wlen = wstart
            c.get_resume = 0
            c.numarks = marks0
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        if MC_UNLIKELY(c.listen_kind == 2):
            udp_mark(c, 0)        # memcached's reply object per key (udp.pxi)
        if have_next:
            h = h_next
        else:
            h = hash_key(line + ks, klen)
        # the next key's bucket is fetched while this one is served: a
        # multiget's lookups then wait for their bucket's line once, not each
        p2 = next_key(line, length, pos, &k2)
        have_next = k2 != 0 and k2 <= KEY_MAX_LENGTH
        if have_next:
            h_next = hash_key(line + p2, k2)
            s = shard_of(h_next)
            mc_prefetch_bucket(&s.buckets, &s.hashpower, bucket_hv(h_next))
        s = shard_of(h)
        pthread_mutex_lock(&s.lock)
        if should_touch:
            it = do_item_touch(s, line + ks, klen, bucket_hv(h), exptime, st)
        else:
            it = do_item_get(s, line + ks, klen, bucket_hv(h), st, True)
        if MC_UNLIKELY(mc_load_int(&g_detail_enabled)):
            stats_prefix_record(line + ks, klen, 0, it != NULL)
        if it != NULL:
            ok = write_value(c, s, it, return_cas)
            if should_touch:
                sinc(&st.touch_cmds)
                sinc(&st.slab[it.slabs_clsid].touch_hits)
            else:
                sinc(&st.slab[it.slabs_clsid].get_hits)
                sinc(&st.get_cmds)
            if g_settings.verbose > 1:
                fprintf(stderr, ">%d sending key %.*s\n", c.fd, <int>klen, line + ks)
            pthread_mutex_unlock(&s.lock)
            if not ok:
                out_truncate(c, wstart, sstart)
                c.get_resume = 0
                c.numarks = marks0
                out_string(c, b"SERVER_ERROR out of memory writing get response")
                return 0
        else:
            pthread_mutex_unlock(&s.lock)
            if should_touch:
                sinc(&st.touch_cmds)
                sinc(&st.touch_misses)
            else:
                sinc(&st.get_misses)
                sinc(&st.get_cmds)
        hotkeys_note(c, line + ks, klen, h, HK_GET, it != NULL)
        # memcached takes a response object for every further key (k2: the
        # next key's length, found above for the prefetch)
        if k2 != 0 and not resp_start(c):
            # out of them: drop every reply memcached had not written out yet
            if c.resp_wmark > c.wsent and c.resp_wmark <= c.wlen:
                out_truncate(c, c.resp_wmark, c.resp_wmark_segs)
            elif c.wsent <= c.wlen:
                out_truncate(c, 0, 0)
            c.get_resume = 0
            resp_release_all(c)
            if not resp_start(c):
                c.close_now = True
                return 0
            out_string(c, b"SERVER_ERROR out of memory writing get response")
            return 0
        if c.wlen > WBUF_HIGH:
            # Pause between keys so a huge multiget cannot grow the output
            # without bound. (Values sent from chains do not count: they cost
            # a reference each, no copy, and memcached answers every key of
            # the line before it writes.) memcached answers a bad key anywhere in the line
            # with only an error, so check the rest before any hit leaves.
            if c.get_resume == 0:
                p2 = pos
                while True:
                    p2 = next_key(line, length, p2, &k2)
                    if k2 == 0:
                        break
                    if k2 > KEY_MAX_LENGTH:
                        out_truncate(c, wstart, sstart)
                        c.numarks = marks0
                        out_string(c, b"CLIENT_ERROR bad command line format")
                        return 0
                    p2 += k2
            next_key(line, length, pos, &k2)
            if k2 != 0:
                c.get_resume = pos
                return PROC_PAUSE
    c.get_resume = 0
    if g_settings.verbose > 1:
        fprintf(stderr, ">%d END\n", c.fd)
    out_raw(c, b"END\r\n", 5)
    if MC_UNLIKELY(c.listen_kind == 2):
        udp_mark(c, 1)
    c.cmd_flushed = True
    return 0

# No memory for an update (caller holds the shard lock; released here). A set
# that cannot be stored also drops the old value, as memcached does, so a
# stale value does not outlive the write that failed.
cdef void update_no_memory(conn_t* c, shard_t* s, const char* key, size_t nkey, uint64_t h,
                           thread_stats_t* st, int comm) noexcept nogil:
    cdef item_t* old
    sinc(&st.store_no_memory)
    if comm == NREAD_SET:
        old = do_item_get(s, key, nkey, bucket_hv(h), st, False)
        if old != NULL:
            do_item_unlink(s, old)
    pthread_mutex_unlock(&s.lock)
    out_string(c, b"SERVER_ERROR out of memory storing object")

# set/add/replace/append/prepend/cas. `data` points just past the request line,
# `avail` bytes of input are there.
cdef int process_update(conn_t* c, token_t* tokens, size_t ntokens, int comm, bint handle_cas,
                        const char* data, size_t avail) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef uint32_t flags
    cdef int32_t exptime_int
    cdef int32_t vlen_i
    cdef size_t vlen
    cdef uint64_t req_cas = 0
    cdef rel_time_t exptime
    cdef const char* key = tokens[1].value
    cdef size_t nkey = tokens[1].length
    cdef uint64_t h
    cdef shard_t* s
    cdef item_t* it
    cdef item_t* old
    cdef store_result_t ret
    cdef uint64_t cas_out = 0
    cdef bint consumed
    cdef int clsid
    set_noreply_maybe(c, tokens, ntokens)
    if nkey > KEY_MAX_LENGTH:
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    if not (tok_strtoul(&tokens[2], &flags) and tok_strtol(&tokens[3], &exptime_int)
            and tok_strtol(&tokens[4], &vlen_i)):
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    exptime = exptime_to_rel(exptime_int)
    if handle_cas:
        if not tok_strtoull(&tokens[5], &req_cas):
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
    if vlen_i < 0 or vlen_i > 2147483647 - 2:
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    vlen = <size_t>vlen_i + 2
    if MC_UNLIKELY(mc_load_int(&g_detail_enabled)):
        stats_prefix_record(key, nkey, 1, False)
    h = hash_key(key, nkey)
    s = shard_of(h)
    hotkeys_note(c, key, nkey, h, HK_SET, False)
    if not item_size_ok(nkey, vlen, flags):
        out_string(c, b"SERVER_ERROR object too large for cache")
        sinc(&st.store_too_large)
        if comm == NREAD_SET:
            pthread_mutex_lock(&s.lock)
            old = do_item_get(s, key, nkey, bucket_hv(h), st, False)
            if old != NULL:
                do_item_unlink(s, old)
            pthread_mutex_unlock(&s.lock)
        return conn_swallow(c, vlen, avail)
    if avail < vlen:
        if vlen >= SPOOL_MIN and c.spool == NULL and c.spool_buf == NULL and c.spool_ready == NULL:
            # A large value is received straight into its item, as memcached
            # reads into the item it allocated for the line (conn.pxi spools).
            pthread_mutex_lock(&s.lock)
            it = item_alloc(s, key, nkey, flags, exptime, vlen)
            if it == NULL:
                update_no_memory(c, s, key, nkey, h, st, comm)
                return conn_swallow(c, vlen, avail)
            pthread_mutex_unlock(&s.lock)
            c.spool_ready = it
        c.rneed = vlen
        return PROC_NEED_MORE
    pthread_mutex_lock(&s.lock)
    if c.spool_adopt and c.spool != NULL and data == <char*>c.spool and \
            c.spool.nkey == nkey and c.spool.nbytes == vlen and c.spool.flags == flags:
        it = c.spool              # the value arrived in it already
        c.spool = NULL
        c.spool_adopt = False
        data = NULL
    else:
        it = item_alloc(s, key, nkey, flags, exptime, vlen)
    if it == NULL:
        update_no_memory(c, s, key, nkey, h, st, comm)
        return <int>vlen
    sinc(&st.slab[it.slabs_clsid].set_cmds)
    if data != NULL:
        item_data_write(it, 0, data, vlen)
    if item_data_byte(it, vlen - 2) != c'\r' or item_data_byte(it, vlen - 1) != c'\n':
        item_free(it)
        pthread_mutex_unlock(&s.lock)
        out_string(c, b"CLIENT_ERROR bad data chunk")
        return <int>vlen
    it.hv = bucket_hv(h)
    it.cas = req_cas
    clsid = it.slabs_clsid
    ret = do_store_item(s, it, comm, st, False, 0, &cas_out, &consumed)
    if MC_UNLIKELY(logger_wants(LOG_MUTATIONS)):
        log_item_store(c, key, nkey, 1 if ret == STORE_STORED else 2 if ret == STORE_EXISTS else
                       3 if ret == STORE_NOT_FOUND else 0, comm, exptime, clsid, vlen)
    if not consumed:
        item_free(it)
    pthread_mutex_unlock(&s.lock)
    if ret == STORE_STORED:
        out_string(c, b"STORED")
    elif ret == STORE_EXISTS:
        out_string(c, b"EXISTS")
    elif ret == STORE_NOT_FOUND:
        out_string(c, b"NOT_FOUND")
    else:
        out_string(c, b"NOT_STORED")
    return <int>vlen

# Discard a refused data block: what is here now, and the rest as it arrives.
cdef inline int conn_swallow(conn_t* c, size_t vlen, size_t avail) noexcept nogil:
    if avail >= vlen:
        return <int>vlen
    c.swallow = vlen - avail
    c.state = CONN_SWALLOW
    return <int>avail

cdef int process_touch(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef int32_t exptime_int
    cdef uint64_t h
    cdef shard_t* s
    cdef item_t* it
    set_noreply_maybe(c, tokens, ntokens)
    if tokens[1].length > KEY_MAX_LENGTH:
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    if not tok_strtol(&tokens[2], &exptime_int):
        out_string(c, b"CLIENT_ERROR invalid exptime argument")
        return 0
    h = hash_key(tokens[1].value, tokens[1].length)
    s = shard_of(h)
    hotkeys_note(c, tokens[1].value, tokens[1].length, h, HK_OTHER, False)
    pthread_mutex_lock(&s.lock)
    it = do_item_touch(s, tokens[1].value, tokens[1].length, bucket_hv(h),
                       exptime_to_rel(exptime_int), st)
    sinc(&st.touch_cmds)
    if it != NULL:
        sinc(&st.slab[it.slabs_clsid].touch_hits)
        pthread_mutex_unlock(&s.lock)
        out_string(c, b"TOUCHED")
    else:
        sinc(&st.touch_misses)
        pthread_mutex_unlock(&s.lock)
        out_string(c, b"NOT_FOUND")
    return 0

cdef int process_arithmetic(conn_t* c, token_t* tokens, size_t ntokens, bint incr) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef uint64_t delta
    cdef char buf[32]
    cdef uint64_t h
    cdef shard_t* s
    cdef delta_result_t r
    set_noreply_maybe(c, tokens, ntokens)
    if tokens[1].length > KEY_MAX_LENGTH:
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    if not tok_strtoull(&tokens[2], &delta):
        out_string(c, b"CLIENT_ERROR invalid numeric delta argument")
        return 0
    h = hash_key(tokens[1].value, tokens[1].length)
    s = shard_of(h)
    hotkeys_note(c, tokens[1].value, tokens[1].length, h, HK_OTHER, False)
    pthread_mutex_lock(&s.lock)
    r = do_add_delta(s, tokens[1].value, tokens[1].length, bucket_hv(h), incr, delta, buf,
                     NULL, st, NULL, 0)
    pthread_mutex_unlock(&s.lock)
    if r == DELTA_OK:
        out_string(c, buf)
    elif r == DELTA_NON_NUMERIC:
        out_string(c, b"CLIENT_ERROR cannot increment or decrement non-numeric value")
    elif r == DELTA_EOM:
        out_string(c, b"SERVER_ERROR out of memory")
    elif r == DELTA_NOT_FOUND:
        if incr:
            sinc(&st.incr_misses)
        else:
            sinc(&st.decr_misses)
        out_string(c, b"NOT_FOUND")
    return 0

cdef int process_delete(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef bint hold_is_zero
    cdef bint sets_noreply
    cdef uint64_t h
    cdef shard_t* s
    cdef item_t* it
    if ntokens > 3:
        hold_is_zero = tok_eq(&tokens[2], b"0", 1)
        sets_noreply = set_noreply_maybe(c, tokens, ntokens)
        if not ((ntokens == 4 and (hold_is_zero or sets_noreply))
                or (ntokens == 5 and hold_is_zero and sets_noreply)):
            out_string(c, b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")
            return 0
    if tokens[1].length > KEY_MAX_LENGTH:
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    if MC_UNLIKELY(mc_load_int(&g_detail_enabled)):
        stats_prefix_record(tokens[1].value, tokens[1].length, 2, False)
    h = hash_key(tokens[1].value, tokens[1].length)
    s = shard_of(h)
    hotkeys_note(c, tokens[1].value, tokens[1].length, h, HK_OTHER, False)
    pthread_mutex_lock(&s.lock)
    it = do_item_get(s, tokens[1].value, tokens[1].length, bucket_hv(h), st, False)
    if it != NULL:
        sinc(&st.slab[it.slabs_clsid].delete_hits)
        do_item_unlink(s, it)
        pthread_mutex_unlock(&s.lock)
        out_string(c, b"DELETED")
    else:
        sinc(&st.delete_misses)
        pthread_mutex_unlock(&s.lock)
        out_string(c, b"NOT_FOUND")
    return 0

cdef int process_verbosity(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef uint32_t level
    set_noreply_maybe(c, tokens, ntokens)
    if not tok_strtoul(&tokens[1], &level):
        out_string(c, b"CLIENT_ERROR bad command line format")
        return 0
    mc_store_int(&g_settings.verbose, 2 if level > 2 else <int>level)
    out_string(c, b"OK")
    return 0

cdef int process_memlimit(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef uint32_t memlimit
    set_noreply_maybe(c, tokens, ntokens)
    if not tok_strtoul(&tokens[1], &memlimit):
        out_string(c, b"ERROR")
    elif memlimit < 8:
        out_string(c, b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")
    elif memlimit > 1000000000:
        out_string(c, b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes")
    else:
        slabs_adjust_mem_limit(<uint64_t>memlimit * 1024 * 1024)
        mc_store_u64(&g_settings.maxbytes, <uint64_t>memlimit * 1024 * 1024)
        out_string(c, b"OK")
    return 0

cdef int process_flush_all(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef int32_t exptime = 0
    cdef rel_time_t new_oldest
    cdef rel_time_t now = current_time()
    set_noreply_maybe(c, tokens, ntokens)
    sinc(&conn_stats(c).flush_cmds)
    if not g_settings.flush_enabled:
        out_string(c, b"CLIENT_ERROR flush_all not allowed")
        return 0
    if ntokens != (3 if c.noreply else 2):
        if not tok_strtol(&tokens[1], &exptime):
            out_string(c, b"CLIENT_ERROR invalid exptime argument")
            return 0
    if exptime > 0:
        new_oldest = realtime(exptime)
    else:
        new_oldest = now
    if g_settings.use_cas:
        mc_store_u32(&g_settings.oldest_live, new_oldest - 1)
        if new_oldest - 1 <= now:
            mc_store_u64(&g_settings.oldest_cas, get_cas_id())
    else:
        mc_store_u32(&g_settings.oldest_live, new_oldest)
    out_string(c, b"OK")
    return 0

cdef int process_shutdown(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    if not g_settings.shutdown_command:
        out_string(c, b"ERROR: shutdown not enabled")
        return 0
    if ntokens == 2:
        c.state = CONN_CLOSING
        c.close_now = True
        kill(getpid(), SIGINT)
    elif ntokens == 3 and tok_eq(&tokens[1], b"graceful", 8):
        c.state = CONN_CLOSING
        c.close_now = True
        kill(getpid(), SIGUSR1)
    else:
        out_string(c, b"CLIENT_ERROR invalid shutdown mode")
    return 0

# Dispatch one request line. Returns the number of input bytes consumed after
# the line (a data block), PROC_NEED_MORE or PROC_PAUSE.
cdef int process_command(conn_t* c, const char* line, size_t length,
                         const char* data, size_t avail) noexcept nogil:
    global mc_current_fd
    cdef token_t tokens[MAX_TOKENS]
    cdef size_t ntokens
    cdef const char* nul
    cdef char first
    cdef token_t* cmd
    c.noreply = False
    mc_current_fd = c.fd
    nul = <const char*>memchr(line, 0, length)
    if nul != NULL:
        length = <size_t>(nul - line)      # memcached sees the line as a C string
    if c.rneed == 0 and c.get_resume == 0 and c.spool == NULL and c.spool_buf == NULL:
        if g_settings.verbose > 1:
            if not c.announced:
                c.announced = True
                fprintf(stderr, "%d: Client using the ascii protocol\n", c.fd)
            fprintf(stderr, "<%d %.*s\n", c.fd, <int>length, line)
        if MC_UNLIKELY(logger_wants(LOG_RAWCMDS)):
            log_rawcmd(c, line, length)
    ntokens = tokenize(line, length, tokens, MAX_TOKENS)
    if ntokens < 2 or tokens[0].length < 2:
        out_string(c, b"ERROR")
        return 0
    cmd = &tokens[0]
    first = cmd.value[0]
    if first == c'm' and cmd.length == 2:
        return process_meta_dispatch(c, cmd.value[1], tokens, ntokens, line, length, data, avail)
    elif first == c'g':
        if ntokens < 3:
            out_string(c, b"ERROR")
            return 0
        if tok_eq(cmd, b"get", 3):
            if MC_UNLIKELY(mc_load_int(&g_cluster_enabled)) and ntokens == 3 and \
                    tok_eq(&tokens[1], b"AmazonElastiCache:cluster", 25):
                cluster_reply(c, True)      # the legacy discovery key (cluster.pxi)
                return 0
            return process_get(c, line, length, tokens, ntokens, False, False)
        elif tok_eq(cmd, b"gets", 4):
            return process_get(c, line, length, tokens, ntokens, True, False)
        elif tok_eq(cmd, b"gat", 3):
            return process_get(c, line, length, tokens, ntokens, False, True)
        elif tok_eq(cmd, b"gats", 4):
            return process_get(c, line, length, tokens, ntokens, True, True)
        out_string(c, b"ERROR")
        return 0
    elif first == c's':
        if tok_eq(cmd, b"set", 3):
            if not want_tokens_or(c, ntokens, 6, 7):
                return 0
            return process_update(c, tokens, ntokens, NREAD_SET, False, data, avail)
        elif tok_eq(cmd, b"stats", 5):
            return process_stat(c, tokens, ntokens)
        elif tok_eq(cmd, b"shutdown", 8):
            return process_shutdown(c, tokens, ntokens)
        elif tok_eq(cmd, b"slabs", 5):
            return process_slabs_command(c, tokens, ntokens)
        out_string(c, b"ERROR")
        return 0
    elif first == c'a':
        if tok_eq(cmd, b"add", 3) or tok_eq(cmd, b"append", 6):
            if not want_tokens_or(c, ntokens, 6, 7):
                return 0
            return process_update(c, tokens, ntokens,
                                  NREAD_ADD if cmd.length == 3 else NREAD_APPEND, False, data, avail)
        out_string(c, b"ERROR")
        return 0
    elif first == c'c':
        if tok_eq(cmd, b"cas", 3):
            if not want_tokens_or(c, ntokens, 7, 8):
                return 0
            return process_update(c, tokens, ntokens, NREAD_CAS, True, data, avail)
        elif tok_eq(cmd, b"cache_memlimit", 14):
            if not want_tokens_or(c, ntokens, 3, 4):
                return 0
            return process_memlimit(c, tokens, ntokens)
        elif tok_eq(cmd, b"config", 6) and mc_load_int(&g_cluster_enabled):
            return process_config_command(c, tokens, ntokens, data, avail)
        out_string(c, b"ERROR")
        return 0
    elif first == c'i':
        if tok_eq(cmd, b"incr", 4):
            if not want_tokens_or(c, ntokens, 4, 5):
                return 0
            return process_arithmetic(c, tokens, ntokens, True)
        out_string(c, b"ERROR")
        return 0
    elif first == c'd':
        if tok_eq(cmd, b"delete", 6):
            if not want_tokens(c, ntokens, 3, 5):
                return 0
            return process_delete(c, tokens, ntokens)
        elif tok_eq(cmd, b"decr", 4):
            if not want_tokens_or(c, ntokens, 4, 5):
                return 0
            return process_arithmetic(c, tokens, ntokens, False)
        out_string(c, b"ERROR")
        return 0
    elif first == c't':
        if tok_eq(cmd, b"touch", 5):
            if not want_tokens_or(c, ntokens, 4, 5):
                return 0
            return process_touch(c, tokens, ntokens)
        out_string(c, b"ERROR")
        return 0
    elif tok_eq(cmd, b"replace", 7) or tok_eq(cmd, b"prepend", 7):
        if not want_tokens_or(c, ntokens, 6, 7):
            return 0
        return process_update(c, tokens, ntokens,
                              NREAD_REPLACE if cmd.value[0] == c'r' else NREAD_PREPEND, False, data, avail)
    elif tok_eq(cmd, b"bget", 4):
        if ntokens < 3:
            out_string(c, b"ERROR")
            return 0
        return process_get(c, line, length, tokens, ntokens, False, False)
    elif tok_eq(cmd, b"flush_all", 9):
        if not want_tokens(c, ntokens, 2, 4):
            return 0
        return process_flush_all(c, tokens, ntokens)
    elif tok_eq(cmd, b"version", 7):
        out_raw(c, b"VERSION ", 8)
        out_string(c, g_settings.version)
        return 0
    elif tok_eq(cmd, b"quit", 4):
        c.state = CONN_CLOSING
        if c.listen_kind == 2:
            udp_mark(c, 0)        # UDP: memcached sends quit's empty reply object
        return 0
    elif tok_eq(cmd, b"lru_crawler", 11):
        return process_lru_crawler_command(c, tokens, ntokens)
    elif tok_eq(cmd, b"watch", 5):
        return process_watch_command(c, tokens, ntokens)
    elif tok_eq(cmd, b"verbosity", 9):
        if not want_tokens_or(c, ntokens, 3, 4):
            return 0
        return process_verbosity(c, tokens, ntokens)
    elif tok_eq(cmd, b"refresh_certs", 13):
        # Debian's memcached is built with TLS support; without -Z it answers
        # "Error TLS not enabled" (tls.pxi)
        return process_refresh_certs(c, tokens, ntokens)
    elif tok_eq(cmd, b"lru", 3):
        if ntokens < 3:
            out_string(c, b"ERROR")
            return 0
        return process_lru_command(c, tokens, ntokens)
    if tokens[ntokens - 2].value != NULL and tokens[ntokens - 2].length >= 5 and \
            memcmp(tokens[ntokens - 2].value, b"HTTP/", 5) == 0:
        c.state = CONN_CLOSING
        c.close_now = True
        return 0
    out_string(c, b"ERROR")
    return 0
