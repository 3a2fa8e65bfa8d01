# logger.pxi -- `watch`: memcached's live log stream.
#
# A client that sends `watch [fetchers] [mutations] [evictions] [connevents]
# [rawcmds] ...` stops being a request connection: its worker hands the socket
# to the logger, and from then on it receives one line per matching event,
# in memcached 1.6.18's format (ts=... gid=... type=item_get key=... ...).
#
# Cost when nobody watches: one relaxed load of g_log_flags per event site.
# When someone does, the event is formatted on the worker's stack and copied
# into each interested watcher's buffer under g_log_lock; the acceptor thread
# (which already wakes periodically) sends the buffers with non-blocking
# writes. A watcher that cannot keep up loses lines, counted and reported to it
# as `skipped=N`, exactly as memcached does, so a slow watcher never slows the
# workers nor grows memory.
#
# Lock order: shard -> log (evictions are logged under a shard lock).

cdef enum:
    LOG_SYSEVENTS = 1 << 1
    LOG_FETCHERS = 1 << 2
    LOG_MUTATIONS = 1 << 3
    LOG_CONNEVENTS = 1 << 5
    LOG_EVICTIONS = 1 << 6
    LOG_RAWCMDS = 1 << 9
    LOG_PROXYREQS = 1 << 10
    LOG_PROXYEVENTS = 1 << 11
    LOG_PROXYUSER = 1 << 12
    WATCHER_LIMIT = 20
    WATCHER_BUF = 262144

cdef struct watcher_t:
    int fd
    void* ssl            # a TLS conn's SSL object (tls.pxi), owned from now on by the acceptor
    int flags
    char* buf
    size_t len
    uint64_t skipped

cdef watcher_t g_watchers[WATCHER_LIMIT]
cdef int g_nwatchers = 0
cdef int g_log_flags = 0
cdef pthread_mutex_t g_log_lock
cdef uint64_t g_log_gid = 0
cdef uint64_t g_log_watcher_sent = 0
cdef uint64_t g_log_watcher_skipped = 0
cdef uint64_t g_log_worker_written = 0

cdef void logger_init() noexcept nogil:
    global g_nwatchers, g_log_flags
    pthread_mutex_init(&g_log_lock, NULL)
    memset(g_watchers, 0, sizeof(g_watchers))
    g_nwatchers = 0
    g_log_flags = 0

cdef inline bint logger_wants(int flag) noexcept nogil:
    return (mc_load_int(&g_log_flags) & flag) != 0

cdef void logger_recompute_flags() noexcept nogil:
    cdef int f = 0
    cdef int i
    for i in range(g_nwatchers):
        f |= g_watchers[i].flags
    mc_store_int(&g_log_flags, f)

# Append one formatted line (without the "ts=... gid=..." prefix) for `flag`.
cdef void logger_emit(int flag, const char* body, size_t blen) noexcept nogil:
    global g_log_gid, g_log_watcher_sent, g_log_watcher_skipped, g_log_worker_written
    cdef char line[1400]
    cdef char skip[64]
    cdef int n
    cdef int sn
    cdef int i
    cdef timespec ts
    cdef watcher_t* w
    clock_gettime(CLOCK_REALTIME, &ts)
    pthread_mutex_lock(&g_log_lock)
    g_log_gid += 1
    n = snprintf(line, sizeof(line), b"ts=%lld.%d gid=%llu %.*s\n", <long long>ts.tv_sec,
                 <int>(ts.tv_nsec // 1000), <unsigned long long>g_log_gid, <int>blen, body)
    if n >= <int>sizeof(line):
        n = <int>sizeof(line) - 1
    g_log_worker_written += 1
    for i in range(g_nwatchers):
        w = &g_watchers[i]
        if (w.flags & flag) == 0:
            continue
        sn = 0
        if w.skipped:
            sn = snprintf(skip, sizeof(skip), b"skipped=%llu\n", <unsigned long long>w.skipped)
        if w.len + <size_t>n + <size_t>sn > WATCHER_BUF:
            w.skipped += 1
            g_log_watcher_skipped += 1
            continue
        if sn:
            memcpy(w.buf + w.len, skip, <size_t>sn)
            w.len += <size_t>sn
            w.skipped = 0
        memcpy(w.buf + w.len, line, <size_t>n)
        w.len += <size_t>n
        g_log_watcher_sent += 1
    pthread_mutex_unlock(&g_log_lock)

# Register a watcher socket (taken over from a worker). Returns 0 ok,
# 1 too many, 2 failed.
cdef int logger_add_watcher(int fd, int flags, void* ssl) noexcept nogil:
    global g_nwatchers
    cdef watcher_t* w
    cdef int r = 0
    pthread_mutex_lock(&g_log_lock)
    if g_nwatchers >= WATCHER_LIMIT:
        r = 1
    else:
        w = &g_watchers[g_nwatchers]
        w.buf = <char*>malloc(WATCHER_BUF)
        if w.buf == NULL:
            r = 2
        else:
            w.fd = fd
            w.ssl = ssl
            w.flags = flags
            memcpy(w.buf, b"OK\r\n", 4)
            w.len = 4
            w.skipped = 0
            mc_store_int(&g_nwatchers, g_nwatchers + 1)
            logger_recompute_flags()
    pthread_mutex_unlock(&g_log_lock)
    if r == 0:
        acceptor_watch_fd(fd)
    return r

cdef void logger_drop_watcher_locked(int i) noexcept nogil:
    global g_nwatchers
    if g_watchers[i].ssl != NULL:
        tls_free_detached(g_watchers[i].ssl)
    close(g_watchers[i].fd)
    free(g_watchers[i].buf)
    g_watchers[i] = g_watchers[g_nwatchers - 1]
    memset(&g_watchers[g_nwatchers - 1], 0, sizeof(watcher_t))
    mc_store_int(&g_nwatchers, g_nwatchers - 1)
    logger_recompute_flags()

# Acceptor thread: send what the watchers have buffered; drop dead ones.
# `closed_fd` >= 0 names a watcher whose peer hung up.
cdef void logger_flush(int closed_fd) noexcept nogil:
    cdef int i = 0
    cdef ssize_t n
    cdef watcher_t* w
    pthread_mutex_lock(&g_log_lock)
    while i < g_nwatchers:
        w = &g_watchers[i]
        if w.fd == closed_fd:
            logger_drop_watcher_locked(i)
            continue
        if w.len:
            if w.ssl != NULL:
                # TLS: one SSL_write; a retry after EAGAIN sends the same bytes
                # (the buffer only grows at its end until they are out)
                n = tls_write_detached(w.ssl, w.buf, w.len)
            else:
                n = send(w.fd, w.buf, w.len, MSG_NOSIGNAL | MSG_DONTWAIT)
            if n > 0:
                memmove(w.buf, w.buf + n, w.len - <size_t>n)
                w.len -= <size_t>n
            elif n < 0 and errno != EAGAIN and errno != EINTR:
                logger_drop_watcher_locked(i)
                continue
        i += 1
    pthread_mutex_unlock(&g_log_lock)

cdef void logger_close_all() noexcept nogil:
    pthread_mutex_lock(&g_log_lock)
    while g_nwatchers:
        logger_drop_watcher_locked(g_nwatchers - 1)
    pthread_mutex_unlock(&g_log_lock)

# ---------------------------------------------------------------- event sites

cdef void log_item_get(const char* key, size_t nkey, int status, item_t* it) noexcept nogil:
    # status: 0 not_found, 1 found, 2 flushed, 3 expired
    cdef char body[1200]
    cdef char kb[760]
    cdef char* e = uri_encode(key, nkey, kb)
    cdef const char* names[4]
    cdef int n
    names[0] = b"not_found"
    names[1] = b"found"
    names[2] = b"flushed"
    names[3] = b"expired"
    n = snprintf(body, sizeof(body), b"type=item_get key=%.*s status=%s clsid=%u cfd=%d size=%d",
                 <int>(e - kb), kb, names[status], <unsigned>(it.slabs_clsid if it != NULL else 0),
                 mc_current_fd, <int>(it.nbytes - 2 if it != NULL else 0))
    logger_emit(LOG_FETCHERS, body, <size_t>n)

cdef void log_item_store(conn_t* c, const char* key, size_t nkey, int status, int comm,
                         rel_time_t exptime, int clsid, size_t nbytes) noexcept nogil:
    # status: 0 not_stored 1 stored 2 exists 3 not_found 4 too_large 5 no_memory
    cdef char body[1200]
    cdef char kb[760]
    cdef char* e = uri_encode(key, nkey, kb)
    cdef const char* st[6]
    cdef const char* cm[7]
    cdef int n
    st[0] = b"not_stored"
    st[1] = b"stored"
    st[2] = b"exists"
    st[3] = b"not_found"
    st[4] = b"too_large"
    st[5] = b"no_memory"
    cm[0] = b"null"
    cm[1] = b"add"
    cm[2] = b"set"
    cm[3] = b"replace"
    cm[4] = b"append"
    cm[5] = b"prepend"
    cm[6] = b"cas"
    n = snprintf(body, sizeof(body), b"type=item_store key=%.*s status=%s cmd=%s ttl=%u clsid=%u cfd=%d size=%d",
                 <int>(e - kb), kb, st[status], cm[comm if comm <= 6 else 0],
                 <unsigned>(0 if exptime == 0 else exptime - current_time()),
                 <unsigned>clsid, c.fd, <int>(nbytes - 2 if nbytes >= 2 else 0))
    logger_emit(LOG_MUTATIONS, body, <size_t>n)

cdef void log_eviction(item_t* it) noexcept nogil:
    cdef char body[1200]
    cdef char kb[760]
    cdef char* e = uri_encode(ITEM_key(it), it.nkey, kb)
    cdef rel_time_t now = current_time()
    cdef int n
    n = snprintf(body, sizeof(body), b"type=eviction key=%.*s fetch=%s ttl=%lld la=%d clsid=%u size=%d",
                 <int>(e - kb), kb, b"yes" if it.it_flags & ITEM_FETCHED else b"no",
                 <long long>(-1 if it.exptime == 0 else <long long>it.exptime - <long long>now),
                 <int>(now - it.time), <unsigned>it.slabs_clsid, <int>(it.nbytes - 2))
    logger_emit(LOG_EVICTIONS, body, <size_t>n)

cdef void log_conn_event(conn_t* c, bint is_new, int reason) noexcept nogil:
    # reason: 0 error 1 normal 2 idle_timeout 3 shutdown
    cdef char body[400]
    cdef char host[64]
    cdef unsigned port = 0
    cdef const char* transport = b"tcp"
    cdef const char* reasons[4]
    cdef sockaddr_in* sin
    cdef sockaddr_in6* sin6
    cdef int n
    reasons[0] = b"error"
    reasons[1] = b"normal"
    reasons[2] = b"idle_timeout"
    reasons[3] = b"shutdown"
    host[0] = 0
    if c.listen_kind == 1:
        transport = b"local"
        snprintf(host, sizeof(host), b"%s", g_settings.domain_socket)
    elif c.peer.ss_family == AF_INET:
        sin = <sockaddr_in*>&c.peer
        inet_ntop(AF_INET, &sin.sin_addr, host, sizeof(host))
        port = ntohs(sin.sin_port)
    elif c.peer.ss_family == AF_INET6:
        sin6 = <sockaddr_in6*>&c.peer
        inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof(host))
        port = ntohs(sin6.sin6_port)
    if is_new:
        n = snprintf(body, sizeof(body), b"type=conn_new rip=%s rport=%hu transport=%s cfd=%d",
                     host, <unsigned short>port, transport, c.fd)
    else:
        n = snprintf(body, sizeof(body), b"type=conn_close rip=%s rport=%hu transport=%s reason=%s cfd=%d",
                     host, <unsigned short>port, transport, reasons[reason & 3], c.fd)
    logger_emit(LOG_CONNEVENTS, body, <size_t>n)

cdef void log_rawcmd(conn_t* c, const char* line, size_t length) noexcept nogil:
    cdef char body[600]
    cdef int n = snprintf(body, sizeof(body), b"<%d %.*s", c.fd, <int>(length if length < 500 else 500), line)
    logger_emit(LOG_RAWCMDS, body, <size_t>n)

cdef int process_watch_command(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef int f = 0
    cdef size_t x
    cdef token_t* t
    set_noreply_maybe(c, tokens, ntokens)
    if not g_settings.watch_enabled:
        out_string(c, b"CLIENT_ERROR watch commands not allowed")
        return 0
    if c.wlen > c.wsent:
        out_string(c, b"ERROR cannot pipeline other commands before watch")
        return 0
    if ntokens > 2:
        for x in range(1, ntokens - 1):
            t = &tokens[x]
            if tok_eq(t, b"rawcmds", 7):
                f |= LOG_RAWCMDS
            elif tok_eq(t, b"evictions", 9):
                f |= LOG_EVICTIONS
            elif tok_eq(t, b"fetchers", 8):
                f |= LOG_FETCHERS
            elif tok_eq(t, b"mutations", 9):
                f |= LOG_MUTATIONS
            elif tok_eq(t, b"sysevents", 9):
                f |= LOG_SYSEVENTS
            elif tok_eq(t, b"connevents", 10):
                f |= LOG_CONNEVENTS
            elif tok_eq(t, b"proxyreqs", 9):
                f |= LOG_PROXYREQS
            elif tok_eq(t, b"proxyevents", 11):
                f |= LOG_PROXYEVENTS
            elif tok_eq(t, b"proxyuser", 9):
                f |= LOG_PROXYUSER
            elif tok_eq(t, b"hotkeys", 7):
                f |= LOG_HOTKEYS        # memcachepy's own: the sampled keys (hotkeys.pxi)
            else:
                out_string(c, b"ERROR")
                return 0
    else:
        f = LOG_FETCHERS
    if mc_load_int(&g_nwatchers) >= WATCHER_LIMIT:
        out_string(c, b"WATCHER_TOO_MANY log watcher limit reached")
        return 0
    # The connection becomes a watcher once its pending output is out (conn.pxi).
    c.watch_flags = f
    c.state = CONN_WATCH
    return 0
