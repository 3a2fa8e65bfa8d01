# proto_bin.pxi -- memcached's binary protocol (memcached: proto_bin.c).
#
# A binary request is a 24-byte header (magic 0x80, opcode, key length,
# extras length, body length, opaque, CAS) followed by extras, key and value.
# process_bin_packet() takes the unparsed input of a conn that negotiated the
# binary protocol (conn.pxi decides on the first byte, or -B binary) and answers
# one packet into the conn's output buffer, on the same store functions,
# counters and state machine as the text protocol, so a pipelined batch of
# binary requests still leaves in one send.
#
# As memcached, a packet is dispatched as soon as its header, extras and key
# are here: checks, errors and "too large" are answered then, and only the
# commands that carry a value (set/add/replace/append/prepend, SASL auth/step)
# wait for the value. Bytes a command does not consume (a STAT or TOUCH body
# longer than its key) are read as the next packet, and an unknown opcode
# swallows `bodylen` bytes after its key, both exactly as memcached 1.6.18
# does. Quiet opcodes (getq, setq...) suppress success and miss replies, never
# errors. Reply headers echo the request's opcode and opaque bytes verbatim.
#
# SASL (-S): PLAIN only, checked against the `user:password` list Python loads
# (memcached's MEMCACHED_SASL_PWDB format). Until a conn authenticates, every
# opcode but VERSION and the SASL ones is answered "Auth failure." and the conn
# closed, as memcached does.
#
# No locks of its own: handlers take one shard lock per key, as proto_text.

cdef enum:
    PROT_NEGOTIATE = 0
    PROT_ASCII = 1
    PROT_BINARY = 2

cdef enum:
    BIN_REQ_MAGIC = 0x80
    BIN_RES_MAGIC = 0x81
    BIN_HDR_LEN = 24
    BIN_MAX_SASL_MECH_LEN = 32

    BIN_CMD_GET = 0x00
    BIN_CMD_SET = 0x01
    BIN_CMD_ADD = 0x02
    BIN_CMD_REPLACE = 0x03
    BIN_CMD_DELETE = 0x04
    BIN_CMD_INCREMENT = 0x05
    BIN_CMD_DECREMENT = 0x06
    BIN_CMD_QUIT = 0x07
    BIN_CMD_FLUSH = 0x08
    BIN_CMD_GETQ = 0x09
    BIN_CMD_NOOP = 0x0a
    BIN_CMD_VERSION = 0x0b
    BIN_CMD_GETK = 0x0c
    BIN_CMD_GETKQ = 0x0d
    BIN_CMD_APPEND = 0x0e
    BIN_CMD_PREPEND = 0x0f
    BIN_CMD_STAT = 0x10
    BIN_CMD_SETQ = 0x11
    BIN_CMD_ADDQ = 0x12
    BIN_CMD_REPLACEQ = 0x13
    BIN_CMD_DELETEQ = 0x14
    BIN_CMD_INCREMENTQ = 0x15
    BIN_CMD_DECREMENTQ = 0x16
    BIN_CMD_QUITQ = 0x17
    BIN_CMD_FLUSHQ = 0x18
    BIN_CMD_APPENDQ = 0x19
    BIN_CMD_PREPENDQ = 0x1a
    BIN_CMD_TOUCH = 0x1c
    BIN_CMD_GAT = 0x1d
    BIN_CMD_GATQ = 0x1e
    BIN_CMD_SASL_LIST_MECHS = 0x20
    BIN_CMD_SASL_AUTH = 0x21
    BIN_CMD_SASL_STEP = 0x22
    BIN_CMD_GATK = 0x23
    BIN_CMD_GATKQ = 0x24

    BIN_ST_SUCCESS = 0x00
    BIN_ST_KEY_ENOENT = 0x01
    BIN_ST_KEY_EEXISTS = 0x02
    BIN_ST_E2BIG = 0x03
    BIN_ST_EINVAL = 0x04
    BIN_ST_NOT_STORED = 0x05
    BIN_ST_DELTA_BADVAL = 0x06
    BIN_ST_AUTH_ERROR = 0x20
    BIN_ST_AUTH_CONTINUE = 0x21
    BIN_ST_UNKNOWN_COMMAND = 0x81
    BIN_ST_ENOMEM = 0x82

# One parsed request header; `hdr` points at the raw 24 bytes (the opaque is
# echoed from there), `cmd` is the opcode with its quiet form folded away.
cdef struct bin_req_t:
    const char* hdr
    uint8_t opcode
    uint8_t cmd
    uint8_t extlen
    uint16_t keylen
    uint32_t bodylen
    uint64_t cas
    const char* ext
    const char* key

# ---------------------------------------------------------------- SASL users
cdef auth_entry_t* g_sasl_entries = NULL
cdef int g_sasl_nentries = 0
cdef bint g_sasl_enabled = False

def sasl_load(bint enabled, entries):
    """-S: turn SASL on, with the (user, password) pairs of the password file."""
    global g_sasl_entries, g_sasl_nentries, g_sasl_enabled
    free(g_sasl_entries)
    g_sasl_entries = NULL
    g_sasl_nentries = 0
    g_sasl_enabled = enabled
    if not entries:
        return
    g_sasl_entries = <auth_entry_t*>calloc(len(entries), sizeof(auth_entry_t))
    for i, (user, password) in enumerate(entries):
        u = user.encode()[:255]
        p = password.encode()[:255]
        memcpy(g_sasl_entries[i].user, <char*>u, len(u))
        g_sasl_entries[i].ulen = len(u)
        memcpy(g_sasl_entries[i].password, <char*>p, len(p))
        g_sasl_entries[i].plen = len(p)
    g_sasl_nentries = len(entries)

cdef bint sasl_check(const char* user, size_t ulen, const char* pw, size_t plen) noexcept nogil:
    cdef int i
    cdef bint ok = False
    for i in range(g_sasl_nentries):
        if const_eq(user, ulen, g_sasl_entries[i].user, g_sasl_entries[i].ulen) & \
                const_eq(pw, plen, g_sasl_entries[i].password, g_sasl_entries[i].plen):
            ok = True
    return ok

# ---------------------------------------------------------------- byte order
cdef inline uint16_t bin_be16(const char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>(<uint8_t>p[0]) << 8) | <uint8_t>p[1])

cdef inline uint32_t bin_be32(const char* p) noexcept nogil:
    return ((<uint32_t>(<uint8_t>p[0]) << 24) | (<uint32_t>(<uint8_t>p[1]) << 16) |
            (<uint32_t>(<uint8_t>p[2]) << 8) | <uint32_t>(<uint8_t>p[3]))

cdef inline uint64_t bin_be64(const char* p) noexcept nogil:
    return (<uint64_t>bin_be32(p) << 32) | bin_be32(p + 4)

cdef inline void bin_put32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v

cdef inline void bin_put64(char* p, uint64_t v) noexcept nogil:
    bin_put32(p, <uint32_t>(v >> 32))
    bin_put32(p + 4, <uint32_t>v)

# ---------------------------------------------------------------- replies

# Reserve a whole reply (header + body), fill the header and return where the
# body goes; NULL when memory ran out (the conn is dropped).
# `external`: the last bytes of the body that are not written here (a value
# sent from an item's chain, proto.pxi out_value).
cdef char* bin_header(conn_t* c, bin_req_t* r, uint16_t status, uint8_t extlen,
                      uint16_t keylen, uint32_t bodylen, uint64_t cas,
                      size_t external=0) noexcept nogil:
    cdef char* p = out_reserve(c, BIN_HDR_LEN + <size_t>bodylen - external)
    if p == NULL:
        c.close_now = True
        return NULL
    p[0] = <char>BIN_RES_MAGIC
    p[1] = <char>r.opcode
    p[2] = <char>(keylen >> 8)
    p[3] = <char>keylen
    p[4] = <char>extlen
    p[5] = 0                      # datatype: raw bytes
    p[6] = <char>(status >> 8)
    p[7] = <char>status
    bin_put32(p + 8, bodylen)
    memcpy(p + 12, r.hdr + 12, 4) # opaque, as sent
    bin_put64(p + 16, cas)
    c.wlen += BIN_HDR_LEN + <size_t>bodylen - external
    return p + BIN_HDR_LEN

# memcached's write_bin_error: errors are sent even by quiet opcodes; `swallow`
# bytes of input after the key are discarded.
cdef void bin_error(conn_t* c, bin_req_t* r, uint16_t status, const char* msg,
                    size_t swallow) noexcept nogil:
    cdef size_t n
    cdef char* p
    if msg == NULL:
        if status == BIN_ST_ENOMEM:
            msg = b"Out of memory"
        elif status == BIN_ST_UNKNOWN_COMMAND:
            msg = b"Unknown command"
        elif status == BIN_ST_KEY_ENOENT:
            msg = b"Not found"
        elif status == BIN_ST_EINVAL:
            msg = b"Invalid arguments"
        elif status == BIN_ST_KEY_EEXISTS:
            msg = b"Data exists for key."
        elif status == BIN_ST_E2BIG:
            msg = b"Too large."
        elif status == BIN_ST_DELTA_BADVAL:
            msg = b"Non-numeric server-side value for incr or decr"
        elif status == BIN_ST_NOT_STORED:
            msg = b"Not stored."
        else:
            msg = b"Auth failure."
    if g_settings.verbose > 1:
        fprintf(stderr, ">%d Writing an error: %s\n", c.fd, msg)
    n = strlen(msg)
    p = bin_header(c, r, status, 0, 0, <uint32_t>n, 0)
    if p == NULL:
        return
    memcpy(p, msg, n)
    # memcached writes an error out at once, unless it first swallows a body
    c.cmd_flushed = swallow == 0
    if swallow > 0:
        c.swallow = swallow
        c.state = CONN_SWALLOW

# A malformed request: "Invalid arguments", then the conn is closed.
cdef inline void bin_protocol_error(conn_t* c, bin_req_t* r) noexcept nogil:
    bin_error(c, r, BIN_ST_EINVAL, NULL, 0)
    if g_settings.verbose:
        fprintf(stderr, "Protocol error (opcode %02x), close connection %d\n", r.opcode, c.fd)
    c.state = CONN_CLOSING

# A success reply with an optional body, dropped for quiet opcodes (get/getk
# hits always go out: their quiet forms only hide misses).
cdef inline void bin_response(conn_t* c, bin_req_t* r, const char* body, size_t n,
                              uint64_t cas) noexcept nogil:
    cdef char* p
    if c.noreply and r.cmd != BIN_CMD_GET and r.cmd != BIN_CMD_GETK:
        return
    p = bin_header(c, r, BIN_ST_SUCCESS, 0, 0, <uint32_t>n, cas)
    if p != NULL and n:
        memcpy(p, body, n)

# ---------------------------------------------------------------- handlers

cdef int bin_get_or_touch(conn_t* c, bin_req_t* r) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef bint should_touch = r.cmd == BIN_CMD_TOUCH or r.cmd == BIN_CMD_GAT or r.cmd == BIN_CMD_GATK
    cdef bint return_key = r.cmd == BIN_CMD_GETK or r.cmd == BIN_CMD_GATK
    cdef bint return_value = r.cmd != BIN_CMD_TOUCH
    cdef size_t nkey = r.keylen
    cdef uint64_t h = hash_key(r.key, nkey)
    cdef shard_t* s = shard_of(h)
    cdef item_t* it
    cdef uint32_t bodylen
    cdef size_t vlen
    cdef bint sg = False
    cdef char* p
    if g_settings.verbose > 1:
        fprintf(stderr, "<%d %s %.*s\n", c.fd, b"TOUCH" if should_touch else b"GET", <int>nkey, r.key)
    pthread_mutex_lock(&s.lock)
    if should_touch:
        it = do_item_touch(s, r.key, nkey, bucket_hv(h), realtime(<int64_t>bin_be32(r.ext)), st)
    else:
        it = do_item_get(s, r.key, nkey, bucket_hv(h), st, True)
    if MC_UNLIKELY(mc_load_int(&g_detail_enabled)):
        stats_prefix_record(r.key, nkey, 0, it != NULL)
    if it != NULL:
        if should_touch:
            sinc(&st.touch_cmds)
            sinc(&st.slab[it.slabs_clsid].touch_hits)
        else:
            sinc(&st.get_cmds)
            sinc(&st.slab[it.slabs_clsid].get_hits)
        vlen = it.nbytes - 2 if return_value else 0
        bodylen = <uint32_t>(4 + vlen + (nkey if return_key else 0))
        sg = c.sg_send and vlen > 0 and item_chunked(it)
        p = bin_header(c, r, BIN_ST_SUCCESS, 4, <uint16_t>(nkey if return_key else 0), bodylen, it.cas,
                       vlen if sg else 0)
        if p != NULL:
            bin_put32(p, it.flags)
            p += 4
            if return_key:
                memcpy(p, ITEM_key(it), nkey)
                p += nkey
            if not sg:
                item_data_read(it, 0, p, vlen)
            elif not out_value(c, s, it, 0, vlen):
                c.close_now = True
        pthread_mutex_unlock(&s.lock)
        return 0
    pthread_mutex_unlock(&s.lock)
    if should_touch:
        sinc(&st.touch_cmds)
        sinc(&st.touch_misses)
    else:
        sinc(&st.get_cmds)
        sinc(&st.get_misses)
    if c.noreply:
        return 0
    if return_key:
        p = bin_header(c, r, BIN_ST_KEY_ENOENT, 0, <uint16_t>nkey, <uint32_t>nkey, 0)
        if p != NULL:
            memcpy(p, r.key, nkey)
    else:
        bin_error(c, r, BIN_ST_KEY_ENOENT, NULL, 0)
    return 0

# set/add/replace (comm NREAD_SET/ADD/REPLACE; extras = flags, exptime) and
# append/prepend (no extras). `value` holds vlen bytes, all here.
cdef void bin_complete_update(conn_t* c, bin_req_t* r, int comm, uint32_t flags,
                              rel_time_t exptime, const char* value, size_t vlen) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef size_t nkey = r.keylen
    cdef uint64_t h = hash_key(r.key, nkey)
    cdef shard_t* s = shard_of(h)
    cdef item_t* it
    cdef item_t* old
    cdef store_result_t ret
    cdef uint64_t cas_out = 0
    cdef bint consumed
    cdef int clsid
    cdef uint16_t eno
    pthread_mutex_lock(&s.lock)
    it = item_alloc(s, r.key, nkey, flags, exptime, vlen + 2)
    if it == NULL:
        # stale data must not outlive a set that failed
        if comm == NREAD_SET:
            old = do_item_get(s, r.key, nkey, bucket_hv(h), st, False)
            if old != NULL:
                do_item_unlink(s, old)
        pthread_mutex_unlock(&s.lock)
        bin_error(c, r, BIN_ST_ENOMEM, b"Out of memory allocating item", 0)
        return
    item_data_write(it, 0, value, vlen)
    item_data_write(it, vlen, b"\r\n", 2)
    it.hv = bucket_hv(h)
    it.cas = r.cas
    if r.cas != 0 and comm != NREAD_APPEND and comm != NREAD_PREPEND:
        comm = NREAD_CAS
    clsid = it.slabs_clsid
    sinc(&st.slab[clsid].set_cmds)
    ret = do_store_item(s, it, comm, st, False, 0, &cas_out, &consumed)
    if MC_UNLIKELY(logger_wants(LOG_MUTATIONS)):
        log_item_store(c, r.key, nkey, 1 if ret == STORE_STORED else 2 if ret == STORE_EXISTS else
                       3 if ret == STORE_NOT_FOUND else 0, comm, exptime, clsid, vlen + 2)
    if not consumed:
        item_free(it)
    pthread_mutex_unlock(&s.lock)
    if ret == STORE_STORED:
        bin_response(c, r, NULL, 0, cas_out)
    elif ret == STORE_EXISTS:
        bin_error(c, r, BIN_ST_KEY_EEXISTS, NULL, 0)
    elif ret == STORE_NOT_FOUND:
        bin_error(c, r, BIN_ST_KEY_ENOENT, NULL, 0)
    else:
        if comm == NREAD_ADD:
            eno = BIN_ST_KEY_EEXISTS
        elif comm == NREAD_REPLACE:
            eno = BIN_ST_KEY_ENOENT
        else:
            eno = BIN_ST_NOT_STORED
        bin_error(c, r, eno, NULL, 0)

# The header part (hlen bytes) is parsed; `rest` bytes of input follow it.
cdef int bin_update(conn_t* c, bin_req_t* r, size_t hlen, size_t rest, int comm) noexcept nogil:
    cdef uint32_t flags = 0
    cdef uint32_t exp = 0
    cdef size_t vlen = r.bodylen - r.keylen - r.extlen
    cdef uint64_t h
    cdef shard_t* s
    cdef item_t* old
    if comm != NREAD_APPEND and comm != NREAD_PREPEND:
        flags = bin_be32(r.ext)
        exp = bin_be32(r.ext + 4)
    if not item_size_ok(r.keylen, vlen + 2, flags):
        bin_error(c, r, BIN_ST_E2BIG, NULL, vlen)
        if comm == NREAD_SET:
            h = hash_key(r.key, r.keylen)
            s = shard_of(h)
            pthread_mutex_lock(&s.lock)
            old = do_item_get(s, r.key, r.keylen, bucket_hv(h), conn_stats(c), False)
            if old != NULL:
                do_item_unlink(s, old)
            pthread_mutex_unlock(&s.lock)
        return <int>hlen
    if rest < vlen:
        c.rneed = hlen + vlen
        return PROC_NEED_MORE
    if MC_UNLIKELY(mc_load_int(&g_detail_enabled)):
        stats_prefix_record(r.key, r.keylen, 1, False)
    bin_complete_update(c, r, comm, flags, realtime(<int64_t>exp), r.key + r.keylen, vlen)
    return <int>(hlen + vlen)

cdef int bin_delete(conn_t* c, bin_req_t* r) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef uint64_t h = hash_key(r.key, r.keylen)
    cdef shard_t* s = shard_of(h)
    cdef item_t* it
    if MC_UNLIKELY(mc_load_int(&g_detail_enabled)):
        stats_prefix_record(r.key, r.keylen, 2, False)
    pthread_mutex_lock(&s.lock)
    it = do_item_get(s, r.key, r.keylen, bucket_hv(h), st, False)
    if it != NULL:
        if r.cas == 0 or r.cas == it.cas:
            sinc(&st.slab[it.slabs_clsid].delete_hits)
            do_item_unlink(s, it)
            pthread_mutex_unlock(&s.lock)
            bin_response(c, r, NULL, 0, 0)
        else:
            pthread_mutex_unlock(&s.lock)
            bin_error(c, r, BIN_ST_KEY_EEXISTS, NULL, 0)
    else:
        pthread_mutex_unlock(&s.lock)
        bin_error(c, r, BIN_ST_KEY_ENOENT, NULL, 0)
        sinc(&st.delete_misses)
    return 0

# incr/decr: extras = delta, initial value, exptime (0xffffffff: no create).
cdef int bin_arithmetic(conn_t* c, bin_req_t* r) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef bint incr = r.cmd == BIN_CMD_INCREMENT
    cdef uint64_t delta = bin_be64(r.ext)
    cdef uint64_t initial = bin_be64(r.ext + 8)
    cdef uint32_t exp = bin_be32(r.ext + 16)
    cdef uint64_t cas = r.cas
    cdef uint64_t value
    cdef char buf[32]
    cdef char body[8]
    cdef char* end
    cdef uint64_t h = hash_key(r.key, r.keylen)
    cdef shard_t* s = shard_of(h)
    cdef delta_result_t res
    cdef item_t* it
    cdef store_result_t sr
    cdef uint64_t cas_out = 0
    cdef bint consumed
    pthread_mutex_lock(&s.lock)
    res = do_add_delta(s, r.key, r.keylen, bucket_hv(h), incr, delta, buf, &cas, st, NULL, 0)
    if res == DELTA_OK:
        pthread_mutex_unlock(&s.lock)
        safe_strtoull(buf, strlen(buf), &value)
        bin_put64(body, value)
        bin_response(c, r, body, 8, cas)
    elif res == DELTA_NON_NUMERIC:
        pthread_mutex_unlock(&s.lock)
        bin_error(c, r, BIN_ST_DELTA_BADVAL, NULL, 0)
    elif res == DELTA_EOM:
        pthread_mutex_unlock(&s.lock)
        bin_error(c, r, BIN_ST_ENOMEM, b"Out of memory incrementing value", 0)
    elif res == DELTA_CAS_MISMATCH:
        pthread_mutex_unlock(&s.lock)
        bin_error(c, r, BIN_ST_KEY_EEXISTS, NULL, 0)
    elif exp != <uint32_t>0xFFFFFFFFU:
        # a miss creates the item with the initial value (flags 0), as an add
        end = write_u64(buf, initial)
        it = item_alloc(s, r.key, r.keylen, 0, realtime(<int64_t>exp), <size_t>(end - buf) + 2)
        if it == NULL:
            pthread_mutex_unlock(&s.lock)
            bin_error(c, r, BIN_ST_ENOMEM, b"Out of memory allocating new item", 0)
            return 0
        memcpy(ITEM_data(it), buf, <size_t>(end - buf))
        memcpy(ITEM_data(it) + (end - buf), b"\r\n", 2)
        it.hv = bucket_hv(h)
        sr = do_store_item(s, it, NREAD_ADD, st, False, 0, &cas_out, &consumed)
        if not consumed:
            item_free(it)
        pthread_mutex_unlock(&s.lock)
        if sr == STORE_STORED:
            bin_put64(body, initial)
            bin_response(c, r, body, 8, cas_out)
        else:
            bin_error(c, r, BIN_ST_NOT_STORED, NULL, 0)
    else:
        pthread_mutex_unlock(&s.lock)
        if incr:
            sinc(&st.incr_misses)
        else:
            sinc(&st.decr_misses)
        bin_error(c, r, BIN_ST_KEY_ENOENT, NULL, 0)
    return 0

cdef int bin_flush(conn_t* c, bin_req_t* r) noexcept nogil:
    cdef int64_t exptime = 0
    cdef rel_time_t new_oldest
    cdef rel_time_t now = current_time()
    if not g_settings.flush_enabled:
        bin_error(c, r, BIN_ST_AUTH_ERROR, NULL, 0)
        return 0
    if r.extlen == 4:
        exptime = <int64_t>bin_be32(r.ext)
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
    sinc(&conn_stats(c).flush_cmds)
    bin_response(c, r, NULL, 0, 0)
    return 0

# The text stats writers fill wbuf from `start` with "STAT name value\r\n"
# lines and "END\r\n"; turn them into one STAT reply per line and the empty
# terminator memcached sends for END.
cdef void bin_stats_from_text(conn_t* c, bin_req_t* r, size_t start) noexcept nogil:
    cdef size_t n = c.wlen - start
    cdef char* text
    cdef size_t i = 0
    cdef size_t e
    cdef size_t ks
    cdef size_t ke
    cdef size_t nm
    cdef size_t vs
    cdef char* p
    if n == 0:
        return
    text = <char*>malloc(n)
    if text == NULL:
        c.close_now = True
        return
    memcpy(text, c.wbuf + start, n)
    c.wlen = start
    while i < n:
        e = i
        while e < n and text[e] != c'\n':
            e += 1
        ke = e
        if ke > i and text[ke - 1] == c'\r':
            ke -= 1
        if ke - i >= 5 and memcmp(text + i, b"STAT ", 5) == 0:
            ks = i + 5
            p = <char*>memchr(text + ks, c' ', ke - ks)
            nm = ke if p == NULL else <size_t>(p - text)
            vs = ke if p == NULL else nm + 1
            p = bin_header(c, r, 0, 0, <uint16_t>(nm - ks), <uint32_t>((nm - ks) + (ke - vs)), 0)
            if p != NULL:
                memcpy(p, text + ks, nm - ks)
                memcpy(p + (nm - ks), text + vs, ke - vs)
        else:
            bin_header(c, r, 0, 0, 0, 0, 0)
        i = e + 1
    free(text)

cdef inline bint bin_key_is(bin_req_t* r, const char* s, size_t n) noexcept nogil:
    return r.keylen == n and memcmp(r.key, s, n) == 0

cdef inline bint bin_key_starts(bin_req_t* r, const char* s, size_t n) noexcept nogil:
    return r.keylen >= n and memcmp(r.key, s, n) == 0

cdef int bin_stat(conn_t* c, bin_req_t* r) noexcept nogil:
    cdef size_t start = c.wlen
    cdef size_t bucket
    cdef char sname[24]
    cdef size_t dstart
    cdef char* p
    cdef char* dump
    c.noreply = False
    if r.keylen == 0:
        stats_general(c)
    elif bin_key_starts(r, b"reset", 5):
        stats_reset()
    elif bin_key_starts(r, b"settings", 8):
        stats_settings(c)
    elif bin_key_starts(r, b"detail", 6):
        if r.keylen >= 11 and memcmp(r.key + 6, b" dump", 5) == 0:
            # one reply named "detailed" whose value is the text dump
            dstart = c.wlen
            stats_prefix_dump(c)
            dump = <char*>malloc(c.wlen - dstart + 1)
            if dump == NULL:
                c.close_now = True
                return 0
            memcpy(dump, c.wbuf + dstart, c.wlen - dstart)
            bucket = c.wlen - dstart
            c.wlen = dstart
            p = bin_header(c, r, 0, 0, 8, <uint32_t>(8 + bucket), 0)
            if p != NULL:
                memcpy(p, b"detailed", 8)
                memcpy(p + 8, dump, bucket)
            free(dump)
            bin_header(c, r, 0, 0, 0, 0, 0)
            c.cmd_flushed = True
            return 0
        elif r.keylen >= 9 and memcmp(r.key + 6, b" on", 3) == 0:
            mc_store_int(&g_detail_enabled, 1)
        elif r.keylen >= 10 and memcmp(r.key + 6, b" off", 4) == 0:
            mc_store_int(&g_detail_enabled, 0)
        else:
            bin_error(c, r, BIN_ST_KEY_ENOENT, NULL, 0)
            return 0
    elif bin_key_is(r, b"items", 5):
        stats_items(c)
    elif bin_key_is(r, b"slabs", 5):
        stats_slabs(c)
    elif bin_key_is(r, b"sizes", 5):
        if g_sizes_hist == NULL:
            out_raw(c, b"STAT sizes_status disabled\r\n", 28)
        else:
            for bucket in range(g_sizes_buckets):
                if mc_load_u64(&g_sizes_hist[bucket]):
                    snprintf(sname, sizeof(sname), b"%d", <int>(bucket * 32))
                    append_stat_u64(c, sname, mc_load_u64(&g_sizes_hist[bucket]))
    else:
        bin_error(c, r, BIN_ST_KEY_ENOENT, NULL, 0)
        return 0
    out_raw(c, b"END\r\n", 5)
    bin_stats_from_text(c, r, start)
    c.cmd_flushed = True
    return 0

# ---------------------------------------------------------------- SASL

cdef int bin_sasl_list(conn_t* c, bin_req_t* r) noexcept nogil:
    if not g_sasl_enabled:
        bin_error(c, r, BIN_ST_UNKNOWN_COMMAND, NULL, r.bodylen - r.keylen)
        return 0
    c.authenticated = False       # memcached restarts the SASL conn: logged out
    bin_response(c, r, b"PLAIN", 5, 0)
    return 0

# PLAIN: [authzid] NUL authcid NUL password. An authzid naming someone else
# fails, as Cyrus (no proxy policy) refuses it.
cdef bint sasl_plain(const char* d, size_t n) noexcept nogil:
    cdef const char* a = <const char*>memchr(d, 0, n)
    cdef const char* b
    cdef size_t zlen
    if a == NULL:
        return False
    zlen = <size_t>(a - d)
    a += 1
    b = <const char*>memchr(a, 0, n - <size_t>(a - d))
    if b == NULL:
        return False
    if zlen and (zlen != <size_t>(b - a) or memcmp(d, a, zlen) != 0):
        return False
    return sasl_check(a, <size_t>(b - a), b + 1, n - <size_t>(b + 1 - d))

cdef int bin_sasl_auth(conn_t* c, bin_req_t* r, size_t hlen, size_t rest) noexcept nogil:
    cdef thread_stats_t* st = conn_stats(c)
    cdef size_t vlen = r.bodylen - r.keylen
    cdef const char* data = r.key + r.keylen
    cdef int result = -1        # 0 ok, 1 continue, -1 failure
    if not g_sasl_enabled:
        bin_error(c, r, BIN_ST_UNKNOWN_COMMAND, NULL, vlen)
        return <int>hlen
    if r.keylen > BIN_MAX_SASL_MECH_LEN:
        bin_error(c, r, BIN_ST_EINVAL, NULL, vlen)
        return <int>hlen
    if not item_size_ok(r.keylen, vlen + 2, 0):
        bin_error(c, r, BIN_ST_ENOMEM, NULL, vlen)
        return <int>hlen
    if rest < vlen:
        c.rneed = hlen + vlen
        return PROC_NEED_MORE
    c.authenticated = False       # every exchange starts logged out, as memcached's
    if r.cmd == BIN_CMD_SASL_AUTH:
        c.sasl_started = False
        if r.keylen == 5 and memcmp(r.key, b"PLAIN", 5) == 0:
            if vlen == 0:
                result = 1          # the client sends its credentials in a step
            elif sasl_plain(data, vlen):
                result = 0
            c.sasl_started = result >= 0
    elif c.sasl_started:
        c.sasl_started = False
        if sasl_plain(data, vlen):
            result = 0
    if result == 0:
        c.authenticated = True
        bin_response(c, r, b"Authenticated", 13, 0)
        sinc(&st.auth_cmds)
    elif result == 1:
        bin_header(c, r, BIN_ST_AUTH_CONTINUE, 0, 0, 0, 0)
        c.cmd_flushed = True
    else:
        bin_error(c, r, BIN_ST_AUTH_ERROR, NULL, 0)
        sinc(&st.auth_cmds)
        sinc(&st.auth_errors)
    return <int>(hlen + vlen)

# ---------------------------------------------------------------- dispatch

# Answer the packet at p[0:avail]. Returns the input bytes consumed, or
# PROC_NEED_MORE with c.rneed = the bytes (from p) it needs.
cdef int process_bin_packet(conn_t* c, const char* p, size_t avail) noexcept nogil:
    global mc_current_fd
    cdef bin_req_t r
    cdef size_t hlen
    cdef size_t rest
    cdef uint8_t extlen
    cdef uint16_t keylen
    cdef uint32_t bodylen
    if avail < BIN_HDR_LEN:
        c.rneed = BIN_HDR_LEN
        return PROC_NEED_MORE
    if <uint8_t>p[0] != BIN_REQ_MAGIC:
        if g_settings.verbose:
            fprintf(stderr, "Invalid magic:  %x\n", <unsigned>(<uint8_t>p[0]))
        # memcached closes at once: replies it already wrote out (errors, noop)
        # leave, the ones it still held (get hits, stores) are lost
        if c.wmark > c.wlen:
            c.wmark = c.wlen
        out_truncate(c, c.wmark, c.wmark_segs)
        c.state = CONN_CLOSING
        return 0
    r.hdr = p
    r.opcode = <uint8_t>p[1]
    r.keylen = bin_be16(p + 2)
    r.extlen = <uint8_t>p[4]
    r.bodylen = bin_be32(p + 8)
    r.cas = bin_be64(p + 16)
    extlen = r.extlen
    keylen = r.keylen
    bodylen = r.bodylen
    hlen = BIN_HDR_LEN + <size_t>extlen + keylen
    if avail < hlen:
        c.rneed = hlen
        return PROC_NEED_MORE
    rest = avail - hlen
    r.ext = p + BIN_HDR_LEN
    r.key = r.ext + extlen
    r.cmd = r.opcode
    mc_current_fd = c.fd
    mc_store_u32(&c.last_cmd_time, current_time())
    c.noreply = False
    if <uint32_t>keylen > bodylen or <uint32_t>keylen + extlen > bodylen:
        bin_error(c, &r, BIN_ST_UNKNOWN_COMMAND, NULL, 0)
        c.state = CONN_CLOSING
        return <int>hlen
    if g_sasl_enabled and not c.authenticated and r.opcode != BIN_CMD_SASL_LIST_MECHS and \
            r.opcode != BIN_CMD_SASL_AUTH and r.opcode != BIN_CMD_SASL_STEP and \
            r.opcode != BIN_CMD_VERSION:
        bin_error(c, &r, BIN_ST_AUTH_ERROR, NULL, 0)
        c.state = CONN_CLOSING
        return <int>hlen
    c.noreply = True
    if keylen > KEY_MAX_LENGTH:
        bin_protocol_error(c, &r)
        return <int>hlen
    if r.opcode == BIN_CMD_SETQ:
        r.cmd = BIN_CMD_SET
    elif r.opcode == BIN_CMD_ADDQ:
        r.cmd = BIN_CMD_ADD
    elif r.opcode == BIN_CMD_REPLACEQ:
        r.cmd = BIN_CMD_REPLACE
    elif r.opcode == BIN_CMD_DELETEQ:
        r.cmd = BIN_CMD_DELETE
    elif r.opcode == BIN_CMD_INCREMENTQ:
        r.cmd = BIN_CMD_INCREMENT
    elif r.opcode == BIN_CMD_DECREMENTQ:
        r.cmd = BIN_CMD_DECREMENT
    elif r.opcode == BIN_CMD_QUITQ:
        r.cmd = BIN_CMD_QUIT
    elif r.opcode == BIN_CMD_FLUSHQ:
        r.cmd = BIN_CMD_FLUSH
    elif r.opcode == BIN_CMD_APPENDQ:
        r.cmd = BIN_CMD_APPEND
    elif r.opcode == BIN_CMD_PREPENDQ:
        r.cmd = BIN_CMD_PREPEND
    elif r.opcode == BIN_CMD_GETQ:
        r.cmd = BIN_CMD_GET
    elif r.opcode == BIN_CMD_GETKQ:
        r.cmd = BIN_CMD_GETK
    elif r.opcode == BIN_CMD_GATQ:
        r.cmd = BIN_CMD_GAT
    elif r.opcode == BIN_CMD_GATKQ:
        r.cmd = BIN_CMD_GATK
    else:
        c.noreply = False
    if r.cmd == BIN_CMD_VERSION:
        if extlen == 0 and keylen == 0 and bodylen == 0:
            bin_response(c, &r, g_settings.version, strlen(g_settings.version), 0)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_FLUSH:
        if keylen == 0 and bodylen == extlen and (extlen == 0 or extlen == 4):
            bin_flush(c, &r)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_NOOP:
        if extlen == 0 and keylen == 0 and bodylen == 0:
            bin_response(c, &r, NULL, 0, 0)
            c.cmd_flushed = True          # noop flushes the pipeline
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_SET or r.cmd == BIN_CMD_ADD or r.cmd == BIN_CMD_REPLACE:
        if extlen == 8 and keylen != 0 and bodylen >= <uint32_t>keylen + 8:
            return bin_update(c, &r, hlen, rest, NREAD_SET if r.cmd == BIN_CMD_SET else
                              NREAD_ADD if r.cmd == BIN_CMD_ADD else NREAD_REPLACE)
        bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_GET or r.cmd == BIN_CMD_GETK:
        if extlen == 0 and bodylen == keylen and keylen > 0:
            bin_get_or_touch(c, &r)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_DELETE:
        if keylen > 0 and extlen == 0 and bodylen == keylen:
            bin_delete(c, &r)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_INCREMENT or r.cmd == BIN_CMD_DECREMENT:
        if keylen > 0 and extlen == 20 and bodylen == <uint32_t>keylen + extlen:
            bin_arithmetic(c, &r)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_APPEND or r.cmd == BIN_CMD_PREPEND:
        if keylen > 0 and extlen == 0:
            return bin_update(c, &r, hlen, rest,
                              NREAD_APPEND if r.cmd == BIN_CMD_APPEND else NREAD_PREPEND)
        bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_STAT:
        if extlen == 0:
            bin_stat(c, &r)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_QUIT:
        if keylen == 0 and extlen == 0 and bodylen == 0:
            if c.noreply and c.listen_kind == 2:
                udp_mark(c, 0)    # UDP quitq: memcached sends an empty reply object
            bin_response(c, &r, NULL, 0, 0)
            c.state = CONN_CLOSING
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_SASL_LIST_MECHS:
        if extlen == 0 and keylen == 0 and bodylen == 0:
            bin_sasl_list(c, &r)
        else:
            bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_SASL_AUTH or r.cmd == BIN_CMD_SASL_STEP:
        if extlen == 0 and keylen != 0:
            return bin_sasl_auth(c, &r, hlen, rest)
        bin_protocol_error(c, &r)
    elif r.cmd == BIN_CMD_TOUCH or r.cmd == BIN_CMD_GAT or r.cmd == BIN_CMD_GATK:
        if extlen == 4 and keylen != 0:
            bin_get_or_touch(c, &r)
        else:
            bin_protocol_error(c, &r)
    else:
        bin_error(c, &r, BIN_ST_UNKNOWN_COMMAND, NULL, bodylen)
    return <int>hlen
