# udp.pxi -- memcached's UDP transport (-U <port>; memcached.c's try_read_udp and
# transmit_udp).
#
# Every worker owns one UDP conn on its own dup() of each UDP socket (memcached's
# num_threads_per_udp conns), in its epoll set, never closed until shutdown.
# A request is one datagram: an 8-byte frame header (request id, sequence
# number, datagram count = 1, reserved) then text or binary commands, the
# protocol chosen by the payload's first byte. Datagrams of 8 bytes or fewer and
# multi-datagram requests are dropped, as memcached drops them. The commands
# run through the same conn_process() as TCP input; whatever a datagram leaves
# unfinished (a partial line, a data block that never came) is discarded.
#
# Replies go back to the sender the way memcached 1.6 sends them: each reply
# object (one get hit, the END after it, one line, one stats dump, one binary
# packet or STAT group) travels in its own datagrams of at most 1,392 bytes of
# data behind an 8-byte header with the request id, its sequence number within
# that reply and that reply's datagram count. udp_send() finds the reply
# boundaries in the output buffer by the protocols' framing.
#
# Touched only by its worker thread; no locks.

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recvfrom(int, void*, size_t, int, sockaddr*, socklen_t*)
    ssize_t sendto(int, const void*, size_t, int, const sockaddr*, socklen_t)

cdef extern from "<unistd.h>" nogil:
    int dup(int)

cdef extern from "<fcntl.h>" nogil:
    int fcntl(int, int, ...)
    enum:
        F_DUPFD_CLOEXEC

cdef enum:
    LISTEN_KIND_UDP = 2           # conn_t.listen_kind: 0 tcp, 1 unix, 2 udp
    UDP_READ_BUFFER_SIZE = 65536
    UDP_MAX_PAYLOAD_SIZE = 1400
    UDP_HEADER_SIZE = 8
    UDP_DATA_SIZE = 1392
    UDP_BATCH = 64                # datagrams read per wake-up before others get a turn

cdef int* g_udp_fds = NULL
cdef int g_nudp = 0

def udp_add_socket(int fd):
    """Python hands over a bound, non-blocking UDP socket (before the workers start)."""
    global g_udp_fds, g_nudp
    g_udp_fds = <int*>realloc(g_udp_fds, (g_nudp + 1) * sizeof(int))
    g_udp_fds[g_nudp] = fd
    g_nudp += 1

def udp_reset():
    global g_udp_fds, g_nudp
    free(g_udp_fds)
    g_udp_fds = NULL
    g_nudp = 0

# One UDP conn per socket for this worker (worker thread, at start).
cdef void udp_conns_open(worker_t* w) noexcept nogil:
    cdef int i
    cdef int fd
    cdef conn_t* c
    cdef epoll_event ev
    cdef socklen_t sl
    for i in range(g_nudp):
        fd = fcntl(g_udp_fds[i], F_DUPFD_CLOEXEC, 0)
        if fd < 0:
            continue
        c = <conn_t*>calloc(1, sizeof(conn_t))
        if c == NULL:
            close(fd)
            continue
        c.rbuf = <char*>malloc(UDP_READ_BUFFER_SIZE)
        if c.rbuf == NULL:
            free(c)
            close(fd)
            continue
        c.authenticated = True    # memcached's UDP path never asks for -Y auth
        c.rsize = UDP_READ_BUFFER_SIZE
        c.fd = fd
        c.listen_kind = LISTEN_KIND_UDP
        c.worker = w
        c.state = CONN_READ
        c.protocol = PROT_ASCII
        c.last_cmd_time = current_time()
        sl = sizeof(sockaddr_storage)
        getsockname(fd, <sockaddr*>&c.local, &sl)
        memcpy(&c.peer, &c.local, sizeof(sockaddr_storage))
        ev.events = EPOLLIN
        ev.data.ptr = c
        if epoll_ctl(w.epfd, EPOLL_CTL_ADD, fd, &ev) != 0:
            free(c.rbuf)
            free(c)
            close(fd)
            continue
        pthread_mutex_lock(&w.lock)
        c.next = w.conns
        if w.conns != NULL:
            w.conns.prev = c
        w.conns = c
        w.nconns += 1
        pthread_mutex_unlock(&w.lock)
        # memcached counts its UDP conns as connections
        mc_fetch_add_u64(&g_curr_conns, 1)
        mc_fetch_add_u64(&g_total_conns, 1)
        if mc_load_u64(&g_curr_conns) + <uint64_t>g_nlisteners > mc_load_u64(&g_conn_structures):
            mc_store_u64(&g_conn_structures, mc_load_u64(&g_curr_conns) + <uint64_t>g_nlisteners)
        if g_settings.verbose > 1:
            fprintf(stderr, "<%d server listening (udp)\n", fd)

# Length of the reply object starting at p[0:n] (text or binary framing).
cdef size_t udp_reply_len(conn_t* c, const char* p, size_t n) noexcept nogil:
    cdef size_t pos = 0
    cdef const char* el
    cdef size_t linelen
    cdef uint64_t dlen
    cdef const char* sp
    cdef bint group = False
    if c.protocol == PROT_BINARY:
        # one packet; a run of STAT packets up to its empty terminator is one reply
        while pos + 24 <= n:
            dlen = bin_be32(p + pos + 8)
            if pos + 24 + dlen > n:
                return n
            if <uint8_t>p[pos + 1] != BIN_CMD_STAT or bin_be16(p + pos + 6) != 0:
                return pos + 24 + <size_t>dlen if not group else pos
            group = True
            pos += 24 + <size_t>dlen
            if dlen == 0:
                return pos
        return n
    while pos < n:
        el = <const char*>memchr(p + pos, c'\n', n - pos)
        if el == NULL:
            return n
        linelen = <size_t>(el - (p + pos)) + 1
        if n - pos >= 6 and (memcmp(p + pos, b"VALUE ", 6) == 0 or memcmp(p + pos, b"VA ", 3) == 0) \
                and not group:
            # header line, data block, CRLF: <bytes> is the 4th word of VALUE, the 2nd of VA
            sp = p + pos
            if memcmp(sp, b"VALUE ", 6) == 0:
                sp = <const char*>memchr(sp + 6, c' ', linelen - 6)
                if sp != NULL:
                    sp = <const char*>memchr(sp + 1, c' ', linelen - <size_t>(sp + 1 - (p + pos)))
            else:
                sp = sp + 2
            if sp == NULL:
                return pos + linelen
            safe_strtoull(sp + 1, linelen - <size_t>(sp + 1 - (p + pos)), &dlen)
            if dlen > n:
                return n
            pos += linelen + <size_t>dlen + 2
            return pos if pos <= n else n
        if n - pos >= 5 and (memcmp(p + pos, b"STAT ", 5) == 0 or memcmp(p + pos, b"ITEM ", 5) == 0
                             or (n - pos >= 7 and memcmp(p + pos, b"PREFIX ", 7) == 0)):
            group = True          # a stats dump: one reply through its END
            pos += linelen
            continue
        pos += linelen
        if not group or (linelen == 5 and memcmp(el - 4, b"END\r\n", 5) == 0):
            return pos
    return n

# A get over UDP records where each of its reply objects starts (kind 0: one
# per key, hit or miss, the END riding on the last) and where its output ends
# (kind 1); udp_send() cuts there instead of by framing. Out of memory: the
# marks are dropped and the output is cut by framing alone.
cdef void udp_mark(conn_t* c, int kind) noexcept nogil:
    cdef size_t* nm
    if c.numarks == c.umarks_cap:
        nm = <size_t*>realloc(c.umarks, (c.umarks_cap * 2 + 16) * sizeof(size_t))
        if nm == NULL:
            return
        c.umarks = nm
        c.umarks_cap = c.umarks_cap * 2 + 16
    c.umarks[c.numarks] = c.wlen * 2 + <size_t>kind
    c.numarks += 1

# One reply object wbuf[pos:pos+rlen] as datagrams of at most 1,392 data bytes.
# An empty one (a get's miss) is a bare header with a count of 0, and only when
# it heads the queue: memcached retires empty objects behind a sent one.
cdef void udp_send_reply(conn_t* c, size_t pos, size_t rlen, uint16_t rid,
                         sockaddr_storage* to, socklen_t tolen, bint* at_head) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    cdef char dgram[UDP_MAX_PAYLOAD_SIZE]
    cdef size_t off = 0
    cdef size_t chunk
    cdef uint32_t total
    cdef uint32_t seq = 0
    cdef ssize_t r
    if rlen == 0 and not at_head[0]:
        return
    at_head[0] = False
    total = <uint32_t>((rlen + UDP_DATA_SIZE - 1) // UDP_DATA_SIZE)
    if total > 65535:
        total = 65535
    while True:
        chunk = rlen - off if rlen - off < UDP_DATA_SIZE else UDP_DATA_SIZE
        dgram[0] = <char>(rid >> 8)
        dgram[1] = <char>rid
        dgram[2] = <char>(seq >> 8)
        dgram[3] = <char>seq
        dgram[4] = <char>(total >> 8)
        dgram[5] = <char>total
        dgram[6] = 0
        dgram[7] = 0
        memcpy(dgram + UDP_HEADER_SIZE, c.wbuf + pos + off, chunk)
        r = sendto(c.fd, dgram, UDP_HEADER_SIZE + chunk, MSG_NOSIGNAL, <sockaddr*>to, tolen)
        if r > 0:
            mc_stat_add(&w.stats.bytes_written, <uint64_t>r)
        off += chunk
        seq += 1
        if off >= rlen:
            break

# Send the queued output as memcached's UDP replies to the request's sender.
cdef void udp_send(conn_t* c, uint16_t rid, sockaddr_storage* to, socklen_t tolen) noexcept nogil:
    cdef size_t pos = 0
    cdef size_t rlen
    cdef size_t limit
    cdef size_t moff
    cdef size_t end
    cdef uint32_t i = 0
    cdef bint at_head = True
    while pos < c.wlen or i < c.numarks:
        if i < c.numarks:
            moff = c.umarks[i] >> 1
            if moff == pos:
                if c.umarks[i] & 1:
                    at_head = True    # memcached writes out after every get
                    i += 1
                    continue
                end = (c.umarks[i + 1] >> 1) if i + 1 < c.numarks else c.wlen
                if end < pos or end > c.wlen:     # marks only grow; never trust otherwise
                    end = c.wlen
                udp_send_reply(c, pos, end - pos, rid, to, tolen, &at_head)
                pos = end
                i += 1
                continue
            limit = moff if moff > pos else c.wlen
        else:
            limit = c.wlen
        rlen = udp_reply_len(c, c.wbuf + pos, limit - pos)
        if rlen == 0 or rlen > limit - pos:
            rlen = limit - pos
        if rlen == 0:
            i += 1                # a mark behind pos (cannot happen): skip it
            continue
        udp_send_reply(c, pos, rlen, rid, to, tolen, &at_head)
        pos += rlen
    c.wlen = 0
    c.wsent = 0
    c.wmark = 0
    c.numarks = 0

# Put the conn back in its idle state after a datagram, whatever it left.
cdef inline void udp_reset_conn(conn_t* c) noexcept nogil:
    c.state = CONN_READ
    c.close_now = False
    c.swallow = 0
    c.rneed = 0
    c.get_resume = 0
    c.noreply = False
    c.sasl_started = False
    if c.spool != NULL:
        item_free(c.spool)
        c.spool = NULL
    if c.spool_ready != NULL:
        item_free(c.spool_ready)
        c.spool_ready = NULL
    free(c.spool_buf)
    c.spool_buf = NULL
    c.spool_adopt = False
    if c.in_nread:
        mc_store_int(&c.in_nread, 0)
    c.rstart = 0
    c.rend = 0

cdef void udp_on_readable(conn_t* c) noexcept nogil:
    cdef worker_t* w = <worker_t*>c.worker
    cdef sockaddr_storage from_addr
    cdef socklen_t flen
    cdef ssize_t n
    cdef int k
    cdef uint16_t rid
    for k in range(UDP_BATCH):
        flen = sizeof(sockaddr_storage)
        n = recvfrom(c.fd, c.rbuf, c.rsize, MSG_DONTWAIT, <sockaddr*>&from_addr, &flen)
        if n < 0:
            if errno == EINTR:
                continue
            return
        if n <= UDP_HEADER_SIZE:
            continue
        mc_stat_add(&w.stats.bytes_read, <uint64_t>n)
        if c.rbuf[4] != 0 or c.rbuf[5] != 1:
            continue              # multi-datagram requests are not supported
        rid = bin_be16(c.rbuf)
        c.rstart = UDP_HEADER_SIZE
        c.rend = <size_t>n
        c.protocol = PROT_BINARY if <uint8_t>c.rbuf[UDP_HEADER_SIZE] == BIN_REQ_MAGIC else PROT_ASCII
        c.nreqs = -1              # -R does not apply: a datagram is answered whole
        mc_store_u32(&c.last_cmd_time, current_time())
        while conn_process(c) == 1:
            udp_send(c, rid, &from_addr, flen)   # a long multiget pauses: send, go on
        if c.state == CONN_WATCH:
            c.wlen = 0            # memcached answers `watch` over UDP with nothing
            c.numarks = 0
        udp_send(c, rid, &from_addr, flen)
        udp_reset_conn(c)
