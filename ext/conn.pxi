# conn.pxi -- one client connection: buffers and the state machine.
#
# Input is read into rbuf with one recv() per readiness event; every complete
# request in it is answered into wbuf; then wbuf leaves in one send(). So a
# batch of pipelined requests costs one read and one write, however many
# requests it holds (memcached 1.6.18 writes once per request). A storage
# command waits in rbuf until its whole data block is there; a refused one
# (too large) is swallowed as it arrives instead of buffered.
#
# Backpressure: when output cannot be sent (the client is not reading), the
# connection stops reading and waits for EPOLLOUT; parsing also stops while
# more than WBUF_HIGH bytes of output wait, and a long multiget pauses between
# keys. A client therefore cannot make the server buffer more than about
# WBUF_HIGH plus one item of output, nor more input than one request.
#
# Large data blocks (SPOOL_MIN and up) do not wait in rbuf: as memcached reads a
# value into the item it allocated for it, the block is received into a chunk
# taken from the slab allocator (evicting if need be), so values still in
# flight count against -m instead of growing memory beside it. When the block is
# complete the request line, still in rbuf, is run again with the chunk as its
# data, and the chunk is returned.
#
# Buffers are lent, not owned: like memcached's per-thread buffer cache, a
# worker keeps one spare read and one spare write buffer, a conn takes them when
# it has something to read or write and hands them back when they are empty
# again. Idle conns hold no buffers, and the few a worker cycles through stay in
# the CPU cache (with 50 conns each owning its own, every wake-up at a low
# request rate touched cold memory in recv and send). Only a conn left with
# partial input or unsent output keeps its buffer until that is done.
#
# A connection belongs to one worker and is only touched by that worker's
# thread; the worker's lock guards only its membership in the worker's list
# (read by `stats conns`).

from libc.string cimport memmove

# ---- memcached's per-worker buffer budget (-o read_buf_mem_limit)
# memcached takes read buffers and response objects (in bundles of 13, one
# 16 KB buffer each) from one per-thread cache (cache.c, thread.c) capped at
# read_buf_mem_limit / threads / 16 KB buffers; a buffer given back stays on
# the cache's free list (read_buf_bytes_free) unless the cache is over its cap.
# A conn takes a read buffer when it has something to read and gives it back
# once its input is consumed and its output written; one that finds none is
# closed without a word (read_buf_oom), so conns each holding a partial
# request use the budget up. A command takes one response object before it
# runs, each further key of a multiget one more, and all are given back once
# the replies are written out (after a get, when input runs out, on a -R
# yield); the last bundle is kept. memcachepy reads and writes through its own
# buffers (the worker's spares, conn_rbuf_take), but keeps memcached's counts
# beside them so it refuses exactly where memcached does: a multiget that runs
# out gets only `SERVER_ERROR out of memory writing get response`, a command
# that cannot get its object closes the connection without writing anything
# queued, a conn with no read buffer is closed; read_buf_* and response_obj_*
# are these counts. Only the worker's own thread writes them; stats reads them.
cdef enum:
    RESP_BUFFER_SIZE = 16384          # memcached's READ_BUFFER_SIZE
    MAX_RESP_PER_BUNDLE = 13          # (16384 - 24) / sizeof(mc_resp) on 64-bit

cdef uint32_t resp_rbuf_limit(int nthreads) noexcept nogil:
    cdef uint64_t limit
    if g_settings.read_buf_mem_limit == 0 or nthreads < 1:
        return 0
    limit = g_settings.read_buf_mem_limit // <uint64_t>nthreads
    if limit < RESP_BUFFER_SIZE:
        return 1
    return <uint32_t>(limit // RESP_BUFFER_SIZE)

# memcached's cache_alloc on the worker's buffer cache: the free list first,
# then a new buffer while under the cap. False when the budget is spent.
cdef inline bint rbuf_cache_alloc(worker_t* w) noexcept nogil:
    if w.rbc_free > 0:
        mc_store_u64(&w.rbc_free, w.rbc_free - 1)
        return True
    if w.rbuf_limit == 0 or w.rbc_total < w.rbuf_limit:
        mc_store_u64(&w.rbc_total, w.rbc_total + 1)
        return True
    return False

# memcached's cache_free: onto the free list unless the cache is over its cap.
cdef inline void rbuf_cache_free(worker_t* w) noexcept nogil:
    if w.rbuf_limit != 0 and w.rbuf_limit < w.rbc_total:
        mc_store_u64(&w.rbc_total, w.rbc_total - 1)
    else:
        mc_store_u64(&w.rbc_free, w.rbc_free + 1)

# memcached's resp_start: False (and response_obj_oom counted) when the budget is spent.
cdef inline bint resp_start(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    cdef uint64_t n = w.resp_count + 1
    if MC_UNLIKELY(n > w.resp_bundles * MAX_RESP_PER_BUNDLE):
        # a new bundle, from the same budget as the read buffers
        if not rbuf_cache_alloc(w):
            mc_stat_add(&w.stats.response_obj_oom, 1)
            return False
        mc_store_u64(&w.resp_bundles, w.resp_bundles + 1)
    mc_store_u64(&w.resp_count, n)
    c.resp_count += 1
    return True

# The replies were written out: memcached frees this conn's response objects,
# and the bundles left empty but the last.
cdef inline void resp_release_all(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    if c.resp_count:
        mc_store_u64(&w.resp_count, w.resp_count - c.resp_count)
        c.resp_count = 0
        while w.resp_bundles > 1 and (w.resp_bundles - 1) * MAX_RESP_PER_BUNDLE >= w.resp_count:
            rbuf_cache_free(w)
            mc_store_u64(&w.resp_bundles, w.resp_bundles - 1)
    c.resp_wmark = c.wlen
    c.resp_wmark_segs = c.nsegs

cdef inline void conn_set_events(conn_t* c, uint32_t events) noexcept nogil:
    cdef epoll_event ev
    ev.events = events
    ev.data.ptr = c
    epoll_ctl((<worker_t*>c.worker).epfd, EPOLL_CTL_MOD, c.fd, &ev)

cdef conn_t* conn_new(worker_t* w, int fd, int kind) noexcept nogil:
    cdef conn_t* c = <conn_t*>calloc(1, sizeof(conn_t))
    cdef epoll_event ev
    cdef socklen_t sl
    cdef int one = 1
    if c == NULL:
        close(fd)
        return NULL
    c.fd = fd
    c.listen_kind = kind & 3
    c.worker = w
    c.state = CONN_READ
    c.protocol = g_settings.binding_protocol
    c.last_cmd_time = current_time()
    sl = sizeof(sockaddr_storage)
    getpeername(fd, <sockaddr*>&c.peer, &sl)
    sl = sizeof(sockaddr_storage)
    getsockname(fd, <sockaddr*>&c.local, &sl)
    if kind & 3 == 0:
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(int))
    # TLS copies values into wbuf (one SSL_write per batch, as before)
    c.sg_send = (kind & LISTEN_TLS) == 0 and (kind & 3) != 2
    if kind & LISTEN_TLS and not tls_conn_init(c):
        free(c)
        close(fd)
        return NULL
    ev.events = EPOLLIN
    ev.data.ptr = c
    if epoll_ctl(w.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
        tls_conn_free(c)
        free(c)
        close(fd)
        return NULL
    pthread_mutex_lock(&w.lock)
    c.next = w.conns
    if w.conns != NULL:
        w.conns.prev = c
    w.conns = c
    w.nconns += 1
    pthread_mutex_unlock(&w.lock)
    if g_settings.verbose > 1:
        if c.protocol == PROT_NEGOTIATE:
            fprintf(stderr, "<%d new auto-negotiating client connection\n", fd)
        elif c.protocol == PROT_BINARY:
            fprintf(stderr, "<%d new binary client connection.\n", fd)
        else:
            fprintf(stderr, "<%d new ascii client connection.\n", fd)
    if logger_wants(LOG_CONNEVENTS):
        log_conn_event(c, True, 1)
    return c

# Take a connection out of its worker: list, epoll, buffers. The socket stays
# open; the caller closes it or gives it away.
cdef void conn_detach(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    pthread_mutex_lock(&w.lock)
    if c.prev != NULL:
        c.prev.next = c.next
    else:
        w.conns = c.next
    if c.next != NULL:
        c.next.prev = c.prev
    w.nconns -= 1
    pthread_mutex_unlock(&w.lock)
    if c.yielded:
        conn_unyield(c)
    resp_release_all(c)
    out_segs_free(c)          # a client gone mid-reply: its references drop here
    epoll_ctl(w.epfd, EPOLL_CTL_DEL, c.fd, NULL)
    if c.spool != NULL:
        item_free(c.spool)
    if c.spool_ready != NULL:
        item_free(c.spool_ready)
    free(c.spool_buf)
    if c.ssl != NULL:
        tls_conn_free(c)
    if c.rbuf_cached:
        rbuf_cache_free(w)
        c.rbuf_cached = False
    free(c.rbuf)
    free(c.wbuf)
    free(c.umarks)
    free(c)
    mc_fetch_add_u64(&g_curr_conns, <uint64_t>-1)

cdef void conn_close_reason(conn_t* c, int reason) noexcept nogil:
    cdef int fd = c.fd
    if g_settings.verbose > 1:
        fprintf(stderr, "<%d connection closed.\n", c.fd)
    if logger_wants(LOG_CONNEVENTS):
        log_conn_event(c, False, reason)
    conn_detach(c)
    close(fd)

cdef void conn_close(conn_t* c) noexcept nogil:
    conn_close_reason(c, 0 if c.close_now else 1)

# -R (reqs_per_event), counted as memcached counts it, so conn_yields moves as
# memcached's does. memcached spends one unit of a drive's budget of R each time
# it returns to conn_new_cmd: after every command, and once more when it writes
# out replies it had queued (at the end of the input, or on a yield). get/gets/
# gat/gats and mn write at once, so they cost one unit; other commands leave their
# reply queued. A drive that starts by reading gets one unit more than one that
# resumes a yielded conn. When the budget is gone the conn yields: its output is
# flushed, it counts in conn_yields, and if input is left it waits on the
# worker's yielded list until every other ready conn of this round has had its
# turn (batching is unaffected below R commands per read).
cdef inline void conn_drive_start(conn_t* c, bint fresh) noexcept nogil:
    cdef long long r = g_settings.reqs_per_event if g_settings.reqs_per_event > 0 else 1
    if fresh and not c.new_cmd:
        r += 1
    c.nreqs = r
    c.new_cmd = False

cdef void conn_yield(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    mc_stat_add(&w.stats.conn_yields, 1)
    c.resp_pending = False
    resp_release_all(c)
    # with nothing left to parse, memcached's next read starts a fresh drive
    c.new_cmd = c.rend > c.rstart
    if c.new_cmd and not c.yielded:
        c.yielded = True
        c.yield_next = w.yielded
        w.yielded = c

cdef void conn_unyield(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    cdef conn_t** pp = &w.yielded
    while pp[0] != NULL:
        if pp[0] == c:
            pp[0] = c.yield_next
            break
        pp = &pp[0].yield_next
    c.yielded = False
    c.yield_next = NULL

# A command completed: charge it to this drive's -R budget (nreqs < 0: none,
# as for feed()). True: the conn yielded; nothing more runs in this drive.
cdef inline bint conn_count_command(conn_t* c) noexcept nogil:
    c.resp_pending = not c.cmd_flushed
    c.resp_started = False
    if c.cmd_flushed:
        resp_release_all(c)
    c.cmd_flushed = False
    if c.nreqs > 0:
        c.nreqs -= 1
        if c.nreqs == 0:
            conn_yield(c)
            return True
    return False

# Input ran out (no complete line): memcached writes out queued replies now,
# which costs a unit of the budget.
cdef inline void conn_count_flush(conn_t* c) noexcept nogil:
    resp_release_all(c)
    if c.resp_pending:
        c.resp_pending = False
        if c.nreqs > 0:
            c.nreqs -= 1
            if c.nreqs == 0:
                conn_yield(c)

# Borrow the worker's spare read buffer (or a new one) for a conn that has none.
# False when the budget has no buffer left (read_buf_oom counted: memcached's
# rbuf_alloc; the caller closes the conn, as memcached does) or malloc failed.
cdef inline bint conn_rbuf_take(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    if c.rbuf != NULL:
        return True
    if not rbuf_cache_alloc(w):
        mc_stat_add(&w.stats.read_buf_oom, 1)
        return False
    c.rbuf_cached = True
    if w.spare_rbuf != NULL:
        c.rbuf = w.spare_rbuf
        w.spare_rbuf = NULL
    else:
        c.rbuf = <char*>malloc(RBUF_INITIAL)
        if c.rbuf == NULL:
            rbuf_cache_free(w)
            c.rbuf_cached = False
            return False
    c.rsize = RBUF_INITIAL
    c.rstart = 0
    c.rend = 0
    return True

# Give the read buffer back once everything in it has been answered and
# written out (memcached keeps it until its conn waits for input again).
cdef inline void conn_rbuf_release(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    if c.rbuf == NULL or c.rstart != c.rend or (c.spool != NULL or c.spool_buf != NULL):
        return
    if c.wsent < c.wlen:
        return
    if c.rbuf_cached:
        rbuf_cache_free(w)
        c.rbuf_cached = False
    if w.spare_rbuf == NULL and c.rsize == RBUF_INITIAL:
        w.spare_rbuf = c.rbuf
    else:
        free(c.rbuf)
    c.rbuf = NULL
    c.rsize = 0
    c.rstart = 0
    c.rend = 0

# Make room to read: compact, then grow so the current command fits.
cdef bint conn_rbuf_room(conn_t* c) noexcept nogil:
    cdef size_t used = c.rend - c.rstart
    cdef size_t want
    cdef size_t nsize
    cdef char* nb
    if c.rstart > 0 and (c.rstart == c.rend or c.rsize - c.rend < READ_CHUNK // 2
                         or c.rneed > c.rsize - c.rstart):
        if used:
            memmove(c.rbuf, c.rbuf + c.rstart, used)
        c.rstart = 0
        c.rend = used
    want = used + READ_CHUNK // 2
    if c.rneed > used:
        want = c.rneed if c.rneed > want else want
    if want > c.rsize:
        nsize = c.rsize
        while nsize < want:
            nsize *= 2
        nb = <char*>realloc(c.rbuf, nsize)
        if nb == NULL:
            return False
        c.rbuf = nb
        c.rsize = nsize
    return True

# Send what is queued. True when all of it left; False when the socket is full
# (EPOLLOUT is then armed) or the connection failed (close_now set).
cdef bint conn_flush(conn_t* c) noexcept nogil:
    cdef ssize_t n
    cdef worker_t* w = <worker_t*>c.worker
    if c.sseg < c.nsegs:
        if not conn_sg_send(c, c.wlen, c.nsegs):
            return False
    while c.wsent < c.wlen:
        if c.ssl != NULL:
            n = tls_send(c, c.wbuf + c.wsent, c.wlen - c.wsent)
            if n == 0:
                c.close_now = True
                return False
            if n < 0:
                # OpenSSL wants to read first only mid-handshake, which never
                # has output queued; either way, retry when writable
                if not c.want_write:
                    c.want_write = True
                    conn_set_events(c, EPOLLOUT)
                return False
        else:
            n = send(c.fd, c.wbuf + c.wsent, c.wlen - c.wsent, MSG_NOSIGNAL)
        if n > 0:
            c.wsent += <size_t>n
            mc_stat_add(&w.stats.bytes_written, <uint64_t>n)
            continue
        if n < 0 and errno == EINTR:
            continue
        if n < 0 and (errno == EAGAIN):
            if not c.want_write:
                c.want_write = True
                conn_set_events(c, EPOLLOUT)
            return False
        c.close_now = True
        return False
    c.wlen = 0
    c.wsent = 0
    c.wmark = 0
    c.resp_wmark = 0
    c.nsegs = 0
    c.sseg = 0
    c.wmark_segs = 0
    c.resp_wmark_segs = 0
    if c.segs_cap > 64:       # a huge multiget's array is not kept
        free(c.segs)
        c.segs = NULL
        c.segs_cap = 0
    # all sent: the buffer goes back to the worker (a big one is freed instead)
    if w.spare_wbuf == NULL and c.wsize <= SPARE_WBUF_MAX:
        w.spare_wbuf = c.wbuf
        w.spare_wsize = c.wsize
    else:
        free(c.wbuf)
    c.wbuf = NULL
    c.wsize = 0
    if c.want_write:
        c.want_write = False
        conn_set_events(c, EPOLLIN)
    return True

# ---- scatter/gather send
# The output stream is wbuf with the segments spliced in: segs[i] goes out
# right before wbuf[segs[i].woff]. While a segment is pending it is sent with
# sendmsg() over an iovec batch (wbuf pieces and one entry per chunk of the
# chain), as memcached's transmit does; a short send is resumed from
# (wsent, sseg, sseg_sent). A segment fully sent drops its item reference at
# once. Only plaintext TCP/unix conns queue segments (c.sg_send).

cdef enum:
    SG_IOV_BATCH = 64       # iovecs per sendmsg (fewer if the system's IOV_MAX is lower)

# Send wbuf up to `limit` and segments before index `nseg_limit`, stopping at
# the first segment at or beyond it. True when all of that left; False when
# the socket is full (EPOLLOUT armed) or the conn failed (close_now).
cdef bint conn_sg_send(conn_t* c, size_t limit, uint32_t nseg_limit) noexcept nogil:
    cdef iovec iov[SG_IOV_BATCH]
    cdef msghdr msg
    cdef int niov
    cdef uint32_t k
    cdef size_t pos
    cdef size_t end
    cdef size_t sent
    cdef size_t left
    cdef size_t inner
    cdef size_t take
    cdef size_t un
    cdef item_chunk_t* ch
    cdef conn_seg_t* seg
    cdef ssize_t n
    cdef worker_t* w = <worker_t*>c.worker
    cdef int batch = SG_IOV_BATCH if SG_IOV_BATCH <= IOV_MAX else IOV_MAX
    while c.sseg < nseg_limit:
        # build one batch from the current position
        niov = 0
        k = c.sseg
        pos = c.wsent
        sent = c.sseg_sent
        while niov < batch:
            end = c.segs[k].woff if k < nseg_limit else limit
            if pos < end:
                iov[niov].iov_base = c.wbuf + pos
                iov[niov].iov_len = end - pos
                niov += 1
                pos = end
                if niov == batch:
                    break
            if k >= nseg_limit:
                break
            seg = &c.segs[k]
            left = seg.len - sent
            if item_chunked(seg.it):
                ch = chunk_at(seg.it, seg.off + sent, &inner)
                while left > 0 and ch != NULL and niov < batch:
                    take = ch.used - inner
                    if take > left:
                        take = left
                    iov[niov].iov_base = CHUNK_data(ch) + inner
                    iov[niov].iov_len = take
                    niov += 1
                    left -= take
                    inner = 0
                    ch = ch.next
            if left > 0:
                break             # the batch is full mid-segment
            k += 1
            sent = 0
        memset(&msg, 0, sizeof(msghdr))
        msg.msg_iov = iov
        msg.msg_iovlen = <size_t>niov
        n = sendmsg(c.fd, &msg, MSG_NOSIGNAL)
        if n < 0 and errno == EINTR:
            continue
        if n < 0 and errno == EAGAIN:
            if not c.want_write:
                c.want_write = True
                conn_set_events(c, EPOLLOUT)
            return False
        if n <= 0:
            c.close_now = True
            return False
        mc_stat_add(&w.stats.bytes_written, <uint64_t>n)
        # advance over what left, releasing finished segments
        un = <size_t>n
        while un > 0:
            if c.sseg < nseg_limit and c.wsent == c.segs[c.sseg].woff:
                seg = &c.segs[c.sseg]
                take = seg.len - c.sseg_sent
                if take > un:
                    take = un
                c.sseg_sent += take
                c.seg_left -= take
                un -= take
                if c.sseg_sent == seg.len:
                    out_seg_release(seg)
                    c.sseg += 1
                    c.sseg_sent = 0
            else:
                end = c.segs[c.sseg].woff if c.sseg < nseg_limit else limit
                take = end - c.wsent
                if take > un:
                    take = un
                c.wsent += take
                un -= take
    # segments done; the wbuf rest up to `limit` is sent by the caller
    return True

# Send the queued output up to wbuf[limit] and keep the rest queued. True when
# that much left; False when the socket is full (EPOLLOUT armed: the writable
# handler then sends everything) or the connection failed (close_now set).
cdef bint conn_flush_upto(conn_t* c, size_t limit) noexcept nogil:
    cdef ssize_t n
    cdef worker_t* w = <worker_t*>c.worker
    if c.sseg < c.wmark_segs:
        if not conn_sg_send(c, limit, c.wmark_segs):
            return False
    while c.wsent < limit:
        n = send(c.fd, c.wbuf + c.wsent, limit - c.wsent, MSG_NOSIGNAL)
        if n > 0:
            c.wsent += <size_t>n
            mc_stat_add(&w.stats.bytes_written, <uint64_t>n)
            continue
        if n < 0 and errno == EINTR:
            continue
        if n < 0 and errno == EAGAIN:
            if not c.want_write:
                c.want_write = True
                conn_set_events(c, EPOLLOUT)
            return False
        c.close_now = True
        return False
    return True

# Answer every complete request in rbuf. Returns 1 when it stopped because
# output must drain first, 0 when input ran out (or the conn is closing).
cdef int conn_process(conn_t* c) noexcept nogil:
    cdef size_t avail
    cdef size_t k
    cdef char* p
    cdef char* el
    cdef size_t linelen
    cdef size_t cont
    cdef size_t sp
    cdef int r
    while True:
        if c.state == CONN_CLOSING or c.state == CONN_WATCH or c.close_now or c.spool != NULL or c.spool_buf != NULL:
            return 0
        if c.nreqs == 0:
            return 0          # yielded (a spooled command may have used the budget)
        if out_pending(c) > WBUF_HIGH:
            return 1
        avail = c.rend - c.rstart
        if avail == 0:
            conn_count_flush(c)
            break
        if MC_UNLIKELY(g_auth_enabled and not c.authenticated):
            r = process_auth(c, c.rbuf + c.rstart, avail)
            if r < 0:
                break
            c.rstart += <size_t>r
            continue
        if c.state == CONN_SWALLOW:
            k = avail if avail < c.swallow else <size_t>c.swallow
            c.rstart += k
            c.swallow -= k
            if c.swallow == 0:
                c.state = CONN_READ
                if c.swallow_carried:
                    # memcached read the rest of the body by itself, then wrote out
                    # everything it held before going on (binary: wmark)
                    c.swallow_carried = False
                    c.wmark = c.wlen
                    c.wmark_segs = c.nsegs
            continue
        p = c.rbuf + c.rstart
        if c.protocol != PROT_ASCII:
            if c.protocol == PROT_NEGOTIATE:
                # memcached decides once, on the first byte a conn sends
                c.protocol = PROT_BINARY if <uint8_t>p[0] == BIN_REQ_MAGIC else PROT_ASCII
                if g_settings.verbose > 1:
                    c.announced = True
                    fprintf(stderr, "%d: Client using the %s protocol\n", c.fd,
                            b"binary" if c.protocol == PROT_BINARY else b"ascii")
            if c.protocol == PROT_BINARY:
                r = process_bin_packet(c, p, avail)
                if r == PROC_NEED_MORE:
                    conn_count_flush(c)
                    break
                c.rneed = 0
                c.rstart += <size_t>r
                if c.cmd_flushed:
                    c.wmark = c.wlen
                    c.wmark_segs = c.nsegs
                if conn_count_command(c):
                    c.wmark = c.wlen
                    c.wmark_segs = c.nsegs
                    return 0
                continue
        el = <char*>memchr(p, c'\n', avail)
        if el == NULL:
            if avail > LARGE_LINE:
                # No newline in the first 2 KB: only a huge multiget may go on.
                sp = 0
                while sp < avail and p[sp] == c' ':
                    sp += 1
                if sp > 100 or not ((avail - sp >= 4 and memcmp(p + sp, b"get ", 4) == 0) or
                                    (avail - sp >= 5 and memcmp(p + sp, b"gets ", 5) == 0)):
                    c.close_now = True
                    return 0
                if c.rbuf_cached:
                    # memcached moves such a line to a malloc'd buffer of its
                    # own (rbuf_switch_to_malloc): the budget gets its buffer back
                    rbuf_cache_free(<worker_t*>c.worker)
                    c.rbuf_cached = False
                c.rneed = avail + READ_CHUNK
            conn_count_flush(c)
            break
        linelen = <size_t>(el - p)
        cont = linelen + 1
        if linelen > 1 and p[linelen - 1] == c'\r':
            linelen -= 1
        mc_store_u32(&c.last_cmd_time, current_time())
        if not c.resp_started:
            if not resp_start(c):
                # memcached closes a conn whose command gets no response
                # object, dropping the replies it had queued
                c.close_now = True
                return 0
            c.resp_started = True
        if avail > cont:
            prefetch_next_key(p + cont, avail - cont)
        r = process_command(c, p, linelen, p + cont, avail - cont)
        if r == PROC_NEED_MORE:
            if not c.in_nread:
                mc_store_int(&c.in_nread, 1)      # `stats conns` says conn_nread
            if c.rneed >= SPOOL_MIN:
                if conn_spool_start(c, cont, avail):
                    break
                continue
            c.rneed = cont + c.rneed
            break
        if MC_UNLIKELY(c.in_nread):
            mc_store_int(&c.in_nread, 0)
        c.rneed = 0
        if r == PROC_PAUSE:
            return 1
        c.rstart += cont + <size_t>r
        if conn_count_command(c):
            return 0
    if c.rstart == c.rend:
        c.rstart = 0
        c.rend = 0
        if c.rsize > 4 * RBUF_INITIAL:
            p = <char*>realloc(c.rbuf, RBUF_INITIAL)
            if p != NULL:
                c.rbuf = p
                c.rsize = RBUF_INITIAL
    return 0

# Process and flush until input runs out or the socket is full. Returns False
# when the connection was closed.
cdef bint conn_drive(conn_t* c) noexcept nogil:
    while True:
        if conn_process(c) == 1:
            if c.close_now:
                conn_close(c)
                return False
            if not conn_flush(c):
                if c.close_now:
                    conn_close(c)
                    return False
                return True
            continue
        break
    if c.close_now:
        conn_close(c)
        return False
    if MC_UNLIKELY(c.state == CONN_SWALLOW and c.protocol == PROT_BINARY and c.wmark < c.wlen
                   and c.ssl == NULL):   # (a TLS conn writes its whole batch: tls_send)
        # memcached writes nothing while it swallows a binary body still arriving:
        # replies queued since its last write wait for the rest of the body
        if not conn_flush_upto(c, c.wmark) and c.close_now:
            conn_close(c)
            return False
        return True
    if not conn_flush(c):
        if c.close_now:
            conn_close(c)
            return False
        return True
    if c.state == CONN_CLOSING:
        conn_close(c)
        return False
    if c.state == CONN_WATCH:
        conn_become_watcher(c)
        return False
    return True

cdef void conn_become_watcher(conn_t* c) noexcept nogil:
    cdef int fd = c.fd
    cdef int flags = c.watch_flags
    cdef void* ssl = c.ssl
    cdef int r
    c.ssl = NULL              # a TLS session goes with the socket to the logger
    conn_detach(c)
    r = logger_add_watcher(fd, flags, ssl)
    if r == 1:
        send(fd, b"WATCHER_TOO_MANY log watcher limit reached\r\n", 44, MSG_NOSIGNAL | MSG_DONTWAIT)
        close(fd)
    elif r == 2:
        send(fd, b"WATCHER_FAILED failed to add log watcher\r\n", 42, MSG_NOSIGNAL | MSG_DONTWAIT)
        close(fd)

# The command at rstart needs c.rneed more bytes of data than the `avail -
# cont` it has. Move them into a slab chunk and receive the rest there.
# Returns True when spooling; False when memory ran out (answered like
# memcached, the block swallowed) and processing goes on.
cdef bint conn_spool_start(conn_t* c, size_t cont, size_t avail) noexcept nogil:
    cdef size_t vlen = c.rneed
    cdef size_t have = avail - cont
    cdef shard_t* s = &g_shards[0]
    cdef item_t* it = c.spool_ready
    c.spool_ready = NULL
    c.spool_adopt = it != NULL
    if it == NULL:
        # any other command with a data block: a bare chunk, copied out at
        # the end; the command reads it as one buffer, so a block that would
        # be chunked is malloc'd instead
        if item_chunked_of(0, 0, vlen):
            c.spool_buf = <char*>malloc(vlen)
        else:
            pthread_mutex_lock(&s.lock)
            it = item_alloc(s, b"", 0, 0, 0, vlen)
            pthread_mutex_unlock(&s.lock)
    c.rneed = 0
    if it == NULL and c.spool_buf == NULL:
        sinc(&conn_stats(c).store_no_memory)
        out_string(c, b"SERVER_ERROR out of memory storing object")
        c.rstart += cont + have
        c.swallow = vlen - have
        c.state = CONN_SWALLOW
        return False
    if c.spool_buf != NULL:
        memcpy(c.spool_buf, c.rbuf + c.rstart + cont, have)
    else:
        item_data_write(it, 0, c.rbuf + c.rstart + cont, have)
    c.spool = it
    c.spool_len = vlen
    c.spool_have = have
    c.spool_line = cont
    c.rend = c.rstart + cont
    return True

# The spooled block is complete: run its request line with it as the data.
cdef void conn_spool_finish(conn_t* c) noexcept nogil:
    cdef char* p = c.rbuf + c.rstart
    cdef size_t linelen = c.spool_line - 1
    cdef int r
    if linelen > 1 and p[linelen - 1] == c'\r':
        linelen -= 1
    cdef const char* data
    if c.spool_buf != NULL:
        data = c.spool_buf
    elif c.spool_adopt:
        data = <char*>c.spool     # process_update takes the item: no byte is read through this
    else:
        data = ITEM_data(c.spool)   # a bare chunk, one contiguous block
    r = process_command(c, p, linelen, data, c.spool_len)
    if c.in_nread:
        mc_store_int(&c.in_nread, 0)
    if c.spool != NULL:       # not taken by the command (see process_update)
        item_free(c.spool)
        c.spool = NULL
    free(c.spool_buf)
    c.spool_buf = NULL
    c.spool_adopt = False
    c.rstart += c.spool_line
    if r < 0:
        c.close_now = True
    conn_count_command(c)

# One readiness event: read once, answer. Returns False when the conn was
# closed.
cdef bint conn_read_event(conn_t* c) noexcept nogil:
    cdef ssize_t n
    cdef worker_t* w = <worker_t*>c.worker
    cdef char* dst
    cdef size_t room
    conn_drive_start(c, True)
    if c.spool != NULL or c.spool_buf != NULL:
        # straight into the item: up to the end of the chunk the next byte is in
        if c.spool_buf != NULL:
            dst = c.spool_buf + c.spool_have
            room = c.spool_len - c.spool_have
        else:
            dst = item_data_span(c.spool, c.spool_have, &room)
            if room > c.spool_len - c.spool_have:
                room = c.spool_len - c.spool_have
        n = conn_recv(c, dst, room)
        if n == 0:
            conn_close(c)
            return False
        if n < 0:
            return True
        c.spool_have += <size_t>n
        mc_stat_add(&w.stats.bytes_read, <uint64_t>n)
        if c.spool_have < c.spool_len:
            return True
        conn_spool_finish(c)
        if conn_drive(c):
            conn_rbuf_release(c)
            return True
        return False
    if not conn_rbuf_take(c) or not conn_rbuf_room(c):
        conn_close(c)
        return False
    n = conn_recv(c, c.rbuf + c.rend, c.rsize - c.rend)
    if n == 0:
        conn_close(c)
        return False
    if n < 0:
        conn_rbuf_release(c)
        return True
    c.rend += <size_t>n
    mc_stat_add(&w.stats.bytes_read, <uint64_t>n)
    if c.state == CONN_SWALLOW:
        c.swallow_carried = True
    if conn_drive(c):
        conn_rbuf_release(c)
        return True
    return False

# recv() as the read path wants it: >0 bytes, 0 closed (or failed), -1 to
# wait for the next readiness event.
cdef inline ssize_t conn_recv(conn_t* c, char* buf, size_t len) noexcept nogil:
    cdef ssize_t n
    if c.ssl != NULL:
        n = tls_recv(c, buf, len)
        if n < 0 and c.tls_io_wants_write and not c.want_write:
            # the handshake (or a key update) must send before it can read on
            c.tls_read_blocked = True
            c.want_write = True
            conn_set_events(c, EPOLLOUT)
        return n
    while True:
        n = recv(c.fd, buf, len, 0)
        if n < 0 and errno == EINTR:
            continue
        break
    if n < 0:
        return -1 if errno == EAGAIN else 0
    return n

cdef void conn_on_readable(conn_t* c) noexcept nogil:
    while conn_read_event(c):
        # TLS: a record decrypted beyond what the buffer took stays inside
        # OpenSSL, where epoll cannot see it; take it now
        if c.ssl == NULL or c.yielded or c.want_write or not tls_pending(c):
            return


cdef void conn_on_writable(conn_t* c) noexcept nogil:
    conn_drive_start(c, False)
    if conn_flush(c):
        if conn_drive(c):
            conn_rbuf_release(c)
            if c.ssl != NULL and not c.want_write and (c.tls_read_blocked or tls_pending(c)):
                c.tls_read_blocked = False
                conn_on_readable(c)
    elif c.close_now:
        conn_close(c)
