# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
#
# memcachepy._loadgen: the compiled load generator behind `memcachepy-bench`.
#
# Owns: the whole request loop. Each load thread is a pthread that runs its own epoll loop over
# its share of the conns, entirely at C level (`noexcept nogil`, no Python objects, no GIL), so
# the client costs far less CPU per request than the server it drives (a Python client would
# measure itself). Python only parses options (memcachepy/bench.py), starts the threads, keeps
# time between the phases and reads /proc for CPU time.
#
# Protocol: memcached's classic text protocol only (`get k1 .. kn`, `set k 0 0 n`), which both
# memcached and memcachepy speak.
#
# Phases: connect + prefill -> each thread checks in (cfg.ready) and waits for cfg.go -> the
# coordinator, once all have checked in, fixes t0 and sets go -> run from t0 (warmup, measured
# window) -> drain outstanding replies. The gate polls cfg.abort, so a failed thread, a failed
# pthread_create or Ctrl-C in the coordinator never leaves anyone waiting.
# Only replies that *complete* inside the measured window [t_meas, t_end) enter the latency
# histogram and measured counters; the `total_*` counters cover every request so they can be
# compared with the server's `stats` deltas.
#
# Stalls: every reply also ends a "gap" (how long its conn had requests outstanding and no
# reply); the longest gap, the longest wait from a request's due time and a coarse gap
# histogram are kept per thread (lg_note_gap) and merged like the latency histogram.
#
# Threading invariants: a thread touches only its own lg_thread_t, its conns and the read-only
# config; the only shared mutable word is cfg.abort (atomic). Results are read by the
# coordinator after pthread_join.

from libc.stdint cimport uint64_t, int64_t, uint32_t, uint16_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memchr, memcmp, memmove, memset
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdio cimport snprintf
from cpython.exc cimport PyErr_CheckSignals

cdef extern from "<string.h>" nogil:
    char *strerror(int errnum)

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int clock_nanosleep(int clk, int flags, const timespec *req, timespec *rem)
    int CLOCK_MONOTONIC
    int CLOCK_REALTIME
    int TIMER_ABSTIME

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)
    int close(int fd)

cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, ...)
    int F_GETFL
    int F_SETFL
    int O_NONBLOCK

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *ev)
    int epoll_wait(int epfd, epoll_event *evs, int maxevents, int timeout)
    uint32_t EPOLLIN
    uint32_t EPOLLOUT
    uint32_t EPOLLERR
    uint32_t EPOLLHUP
    int EPOLL_CTL_ADD
    int EPOLL_CTL_MOD
    int EPOLL_CLOEXEC

cdef extern from "<sys/timerfd.h>" nogil:
    struct itimerspec:
        timespec it_interval
        timespec it_value
    int timerfd_create(int clk, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new, itimerspec *old)
    int TFD_NONBLOCK
    int TFD_CLOEXEC

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *m)
    cmsghdr *CMSG_NXTHDR(msghdr *m, cmsghdr *c)
    unsigned char *CMSG_DATA(cmsghdr *c)
    ssize_t recvmsg(int fd, msghdr *m, int flags)
    int SOL_SOCKET
    int SO_TIMESTAMPNS
    int SCM_TIMESTAMPNS
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    int AF_INET
    int SOCK_STREAM
    int SOCK_CLOEXEC
    int MSG_NOSIGNAL

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        int sin_family
        uint16_t sin_port
        in_addr sin_addr
    uint16_t htons(uint16_t v)
    int IPPROTO_TCP

cdef extern from "<netinet/tcp.h>" nogil:
    int TCP_NODELAY

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
    int PR_SET_TIMERSLACK

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *t, const void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t t, void **ret)

cdef extern from *:
    """
    static inline int lg_atomic_load(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void lg_atomic_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void lg_atomic_inc(int *p) { __atomic_add_fetch(p, 1, __ATOMIC_ACQ_REL); }
    """
    int lg_atomic_load(int *p) nogil
    int __builtin_clzll(unsigned long long) nogil
    void lg_atomic_store(int *p, int v) nogil
    void lg_atomic_inc(int *p) nogil


# ---------------------------------------------------------------------------------------------
# Constants

cdef enum:
    LG_MAX_EVENTS = 256
    LG_IBUF_SIZE = 65536          # one reply line (<= ~300 bytes) must fit; values are skipped
    LG_HIST_SUB = 64              # sub-buckets per power of two: < 1.6 % relative error
    LG_HIST_SIZE = 128 + 40 * 64  # exact below 128 ns, log-linear up to 2^47 ns
    LG_GAP_BUCKETS = 15           # gap histogram: lg_gap_edges_us below, then "longer"

# upper edges (exclusive) of the gap histogram's buckets, in microseconds: coarse on purpose,
# a stall report wants to know "how many over 1 ms, over 10 ms", not the shape below 100 us
cdef int64_t[14] LG_GAP_EDGES_US = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
                                   100000, 200000, 500000, 1000000]

# how long to wait for outstanding replies once the run is over
cdef int64_t LG_DRAIN_NS = 5000000000

# reply kinds the parser recognises
cdef enum:
    LG_KIND_SET = 0
    LG_KIND_GET = 1

cdef enum:
    LG_PHASE_PREFILL = 0
    LG_PHASE_RUN = 1


# ---------------------------------------------------------------------------------------------
# Structures

cdef struct lg_req_t:
    int64_t t_start          # ns, monotonic: latency origin (send, or due + one tick if later)
    int64_t t_due            # when it was due: the send (closed loop) or its slot (fixed rate)
    int64_t t_sent           # when it was handed to the conn's send buffer
    uint32_t nkeys           # 0 for a set
    uint64_t key             # a one-key get's key (for --set-on-miss)

cdef struct lg_conn_t:
    int fd
    int want_out             # EPOLLOUT currently registered (only after a short send)
    int dirty                # already on the thread's flush list
    char *obuf
    size_t olen
    size_t ooff
    size_t ocap
    char *ibuf
    size_t ilen
    size_t ioff
    lg_req_t *q              # ring of outstanding requests, oldest first
    uint32_t qhead
    uint32_t qcount
    uint64_t skip            # value bytes still to skip (+2 for its CRLF)
    uint64_t vlen            # length of the value being skipped
    int vcheck               # still comparing it with the value we store (same length so far)
    uint32_t cur_hits        # VALUE blocks seen for the request at the queue head
    int64_t last_reply       # when the last reply on this conn completed (0: none yet)

cdef struct lg_cfg_t:
    sockaddr_in addr
    int nconns
    int nthreads
    uint32_t depth
    uint32_t pf_depth
    uint32_t qcap
    uint64_t keyspace
    char prefix[64]
    int prefix_len
    uint32_t value_size
    char *value
    uint32_t get_parts
    uint32_t set_parts
    uint32_t multiget
    int key_sequential
    double *zipf_cdf         # key_pattern "zipf": P(rank <= i), keyspace entries; else NULL
    int set_on_miss          # a one-key get that misses is followed by a set of that key
    uint64_t scan_every      # every scan_every requests, the first scan_len are gets of
    uint64_t scan_len        # fresh keys never asked for before (a one-time scan)
    int prefill
    uint64_t requests        # 0: run for duration
    double rate              # requests/s over all threads; 0: closed loop
    int64_t tick_ns
    int lazy                 # fixed rate: wake only on ticks, time replies by kernel stamps
    int64_t real_minus_mono  # CLOCK_REALTIME - CLOCK_MONOTONIC, to map kernel rx stamps
    uint64_t seed
    size_t max_req
    # written by the coordinator before it sets `go` (release), read by threads after (acquire)
    int64_t t0
    int64_t t_meas
    int64_t t_end            # only in duration mode
    int abort                # atomic
    int ready                # atomic: threads that finished connect + prefill
    int go                   # atomic: t0 and the window are set, start

cdef struct lg_thread_t:
    lg_cfg_t *cfg
    int idx
    pthread_t tid
    int started
    int epfd
    int tfd
    lg_conn_t *conns
    int nconns
    lg_conn_t **flush
    int nflush
    uint64_t rng
    uint64_t seq_key
    uint64_t cmd_seq
    uint64_t scan_next       # fresh keys this thread's scans used so far
    uint64_t pf_next
    uint64_t pf_end
    uint64_t quota           # requests this thread issues in request-count mode
    uint64_t issued
    double rate_per_ns
    uint64_t scheduled       # fixed-rate mode: requests handed to conns so far
    uint32_t rr              # round-robin cursor for fixed-rate mode
    uint64_t outstanding
    int phase
    int stopping
    # measured window
    uint64_t m_gets
    uint64_t m_get_keys
    uint64_t m_hits
    uint64_t m_sets
    uint64_t m_errors
    uint64_t m_late          # fixed rate: requests sent more than a tick after their slot
    uint64_t *hist
    uint32_t *kcounts        # count_keys: requests per key picked by this thread (else NULL)
    double lat_sum
    int64_t lat_max
    # stalls (measured window): see lg_note_gap
    int64_t gap_max          # longest interval a conn had requests outstanding and no reply
    int64_t gap_max_end      # when that interval ended (the reply), monotonic ns
    int64_t wait_max         # longest time from a request's due time to its reply
    uint64_t gap_hist[LG_GAP_BUCKETS]
    # every request
    uint64_t t_gets
    uint64_t t_get_keys
    uint64_t t_hits
    uint64_t t_sets
    uint64_t t_not_stored
    uint64_t t_errors
    uint64_t t_prefill
    uint64_t t_timeouts
    uint64_t t_unstamped     # lazy reads that came without a kernel receive stamp
    uint64_t t_bad_values    # hits whose length or bytes differ from what we store
    int64_t last_done
    char err[256]


# ---------------------------------------------------------------------------------------------
# Small helpers

cdef inline int64_t lg_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec

cdef int64_t lg_real_minus_mono() noexcept nogil:
    # sampled between two monotonic reads so the pairing error is the read time, ~tens of ns
    cdef timespec r
    cdef int64_t a, b
    a = lg_now()
    clock_gettime(CLOCK_REALTIME, &r)
    b = lg_now()
    return <int64_t>r.tv_sec * 1000000000 + r.tv_nsec - (a + b) // 2

cdef void lg_nap(int64_t ns) noexcept nogil:
    lg_sleep_until(lg_now() + ns)

cdef void lg_sleep_until(int64_t t) noexcept nogil:
    cdef timespec ts
    ts.tv_sec = t // 1000000000
    ts.tv_nsec = t % 1000000000
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR:
        pass

cdef inline uint64_t lg_rand(lg_thread_t *t) noexcept nogil:
    # xorshift64*: cheap, good enough to spread keys over the key space
    cdef uint64_t x = t.rng
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    t.rng = x
    return x * <uint64_t>0x2545F4914F6CDD1D

cdef inline char *lg_write_u64(char *p, uint64_t v) noexcept nogil:
    # hand-written decimal writer: snprintf would dominate the client's user CPU
    cdef char tmp[24]
    cdef int n = 0
    if v == 0:
        p[0] = b'0'
        return p + 1
    while v:
        tmp[n] = <char>(48 + v % 10)
        v //= 10
        n += 1
    while n:
        n -= 1
        p[0] = tmp[n]
        p += 1
    return p

cdef inline int lg_hist_index(int64_t v) noexcept nogil:
    cdef int e, idx
    cdef uint64_t u
    if v < 128:
        return <int>(v if v > 0 else 0)
    u = <uint64_t>v
    e = 63 - __builtin_clzll(u)          # >= 7
    idx = 128 + (e - 7) * LG_HIST_SUB + <int>((u >> (e - 6)) - LG_HIST_SUB)
    if idx >= LG_HIST_SIZE:
        idx = LG_HIST_SIZE - 1
    return idx

cdef double lg_hist_value(int idx) noexcept nogil:
    # midpoint of the bucket, in ns
    cdef int e, top
    if idx < 128:
        return <double>idx
    e = (idx - 128) // LG_HIST_SUB + 7
    top = (idx - 128) % LG_HIST_SUB + LG_HIST_SUB
    return (<double>top + 0.5) * <double>(<uint64_t>1 << (e - 6))

cdef void lg_fail(lg_thread_t *t, const char *what, int err) noexcept nogil:
    if t.err[0] == 0:
        if err:
            snprintf(t.err, sizeof(t.err), b"thread %d: %s: %s", t.idx, what, strerror(err))
        else:
            snprintf(t.err, sizeof(t.err), b"thread %d: %s", t.idx, what)
    lg_atomic_store(&t.cfg.abort, 1)


# ---------------------------------------------------------------------------------------------
# Building requests (appended to the conn's output buffer; sent by lg_flush)

cdef inline char *lg_write_key(lg_cfg_t *cfg, char *p, uint64_t k) noexcept nogil:
    memcpy(p, cfg.prefix, cfg.prefix_len)
    return lg_write_u64(p + cfg.prefix_len, k)

cdef inline uint64_t lg_zipf_rank(lg_thread_t *t) noexcept nogil:
    # inverse CDF by binary search: the first rank whose cumulative share reaches u
    cdef double u = <double>(lg_rand(t) >> 11) * (1.0 / 9007199254740992.0)
    cdef const double *cdf = t.cfg.zipf_cdf
    cdef uint64_t lo = 0, hi = t.cfg.keyspace - 1, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdf[mid] < u:
            lo = mid + 1
        else:
            hi = mid
    return lo

cdef inline uint64_t lg_pick_key(lg_thread_t *t) noexcept nogil:
    cdef uint64_t k
    if t.cfg.key_sequential:
        k = t.seq_key
        t.seq_key += 1
        if t.seq_key >= t.cfg.keyspace:
            t.seq_key = 0
    elif t.cfg.zipf_cdf != NULL:
        k = lg_zipf_rank(t)          # rank 0, the most requested key, is key 0
    else:
        k = lg_rand(t) % t.cfg.keyspace
    if t.kcounts != NULL:
        t.kcounts[k] += 1
    return k

cdef inline void lg_make_room(lg_conn_t *c, size_t need) noexcept nogil:
    # outstanding requests are bounded by qcap, so after compaction the buffer always fits
    if c.olen + need > c.ocap and c.ooff > 0:
        memmove(c.obuf, c.obuf + c.ooff, c.olen - c.ooff)
        c.olen -= c.ooff
        c.ooff = 0

cdef inline void lg_mark_dirty(lg_thread_t *t, lg_conn_t *c) noexcept nogil:
    if not c.dirty:
        c.dirty = 1
        t.flush[t.nflush] = c
        t.nflush += 1

cdef void lg_push(lg_thread_t *t, lg_conn_t *c, uint32_t nkeys, int64_t ts, int64_t due,
                  int64_t sent) noexcept nogil:
    cdef lg_req_t *r = &c.q[(c.qhead + c.qcount) % t.cfg.qcap]
    r.t_start = ts
    r.t_due = due
    r.t_sent = sent
    r.nkeys = nkeys
    c.qcount += 1
    t.outstanding += 1
    lg_mark_dirty(t, c)

cdef void lg_add_set(lg_thread_t *t, lg_conn_t *c, uint64_t key, int64_t ts, int64_t due,
                     int64_t sent) noexcept nogil:
    cdef lg_cfg_t *cfg = t.cfg
    cdef char *p
    lg_make_room(c, cfg.max_req)
    p = c.obuf + c.olen
    memcpy(p, b"set ", 4)
    p = lg_write_key(cfg, p + 4, key)
    memcpy(p, b" 0 0 ", 5)
    p = lg_write_u64(p + 5, cfg.value_size)
    p[0] = b'\r'
    p[1] = b'\n'
    p += 2
    memcpy(p, cfg.value, cfg.value_size)
    p += cfg.value_size
    p[0] = b'\r'
    p[1] = b'\n'
    p += 2
    c.olen = p - c.obuf
    lg_push(t, c, 0, ts, due, sent)

cdef void lg_add_get(lg_thread_t *t, lg_conn_t *c, int64_t ts, int64_t due,
                     int64_t sent, int scan) noexcept nogil:
    cdef lg_cfg_t *cfg = t.cfg
    cdef char *p
    cdef uint32_t i
    cdef uint32_t n = 1 if scan else cfg.multiget
    cdef uint64_t k = 0
    lg_make_room(c, cfg.max_req)
    p = c.obuf + c.olen
    memcpy(p, b"get", 3)
    p += 3
    for i in range(n):
        p[0] = b' '
        if scan:
            # past the key space, one range per thread: never requested before
            k = cfg.keyspace + (<uint64_t>t.idx << 40) + t.scan_next
            t.scan_next += 1
        else:
            k = lg_pick_key(t)
        p = lg_write_key(cfg, p + 1, k)
    p[0] = b'\r'
    p[1] = b'\n'
    p += 2
    c.olen = p - c.obuf
    lg_push(t, c, n, ts, due, sent)
    c.q[(c.qhead + c.qcount - 1) % cfg.qcap].key = k

cdef inline void lg_add_request(lg_thread_t *t, lg_conn_t *c, int64_t ts, int64_t due,
                                int64_t sent) noexcept nogil:
    # the get:set mix is a fixed cycle rather than a coin toss, so counts are exact
    cdef uint64_t slot = t.cmd_seq % (t.cfg.get_parts + t.cfg.set_parts)
    cdef int scan = t.cfg.scan_every != 0 and t.cmd_seq % t.cfg.scan_every < t.cfg.scan_len
    t.cmd_seq += 1
    t.issued += 1
    if scan:
        lg_add_get(t, c, ts, due, sent, 1)
    elif slot < t.cfg.get_parts:
        lg_add_get(t, c, ts, due, sent, 0)
    else:
        lg_add_set(t, c, lg_pick_key(t), ts, due, sent)

cdef int lg_set_epoll(lg_thread_t *t, lg_conn_t *c, int want_out) noexcept nogil:
    cdef epoll_event ev
    ev.events = EPOLLIN | (EPOLLOUT if want_out else 0)
    ev.data.ptr = c
    if epoll_ctl(t.epfd, EPOLL_CTL_MOD, c.fd, &ev) < 0:
        lg_fail(t, b"epoll_ctl", errno)
        return -1
    c.want_out = want_out
    return 0

cdef int lg_flush(lg_thread_t *t, lg_conn_t *c) noexcept nogil:
    # one send per batch; only a short send costs an epoll_ctl
    cdef ssize_t n
    while c.ooff < c.olen:
        n = send(c.fd, c.obuf + c.ooff, c.olen - c.ooff, MSG_NOSIGNAL)
        if n < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN:
                if not c.want_out:
                    return lg_set_epoll(t, c, 1)
                return 0
            lg_fail(t, b"send", errno)
            return -1
        c.ooff += n
    c.olen = 0
    c.ooff = 0
    if c.want_out:
        return lg_set_epoll(t, c, 0)
    return 0

cdef void lg_flush_dirty(lg_thread_t *t) noexcept nogil:
    cdef int i
    for i in range(t.nflush):
        t.flush[i].dirty = 0
        if not t.flush[i].want_out:
            lg_flush(t, t.flush[i])
    t.nflush = 0


# ---------------------------------------------------------------------------------------------
# Replies

cdef inline int lg_in_window(lg_thread_t *t, int64_t now) noexcept nogil:
    if t.cfg.requests:
        return 1
    return now >= t.cfg.t_meas and now < t.cfg.t_end

cdef void lg_complete(lg_thread_t *t, lg_conn_t *c, int64_t now, int error, int not_stored) noexcept nogil:
    cdef lg_req_t req = c.q[c.qhead]     # a copy: a set on miss may reuse the slot
    cdef lg_req_t *r = &req
    cdef int64_t lat
    cdef uint32_t hits = c.cur_hits
    cdef int64_t gap_from = c.last_reply
    if r.t_sent > gap_from:
        gap_from = r.t_sent
    c.last_reply = now
    c.qhead = (c.qhead + 1) % t.cfg.qcap
    c.qcount -= 1
    c.cur_hits = 0
    t.outstanding -= 1
    t.last_done = now
    if t.phase == LG_PHASE_PREFILL:
        t.t_prefill += 1
        if error or not_stored:
            t.t_errors += 1
        return
    if error:
        t.t_errors += 1
    if r.nkeys:
        t.t_gets += 1
        t.t_get_keys += r.nkeys
        t.t_hits += hits
    else:
        t.t_sets += 1
        t.t_not_stored += not_stored
    if (t.cfg.set_on_miss and r.nkeys == 1 and hits == 0 and not error and not t.stopping
            and (t.cfg.requests or now < t.cfg.t_end)):
        lg_add_set(t, c, r.key, now, now, now)     # a cache: fetch from the source, store
    if not lg_in_window(t, now):
        return
    if error:
        t.m_errors += 1
    if r.nkeys:
        t.m_gets += 1
        t.m_get_keys += r.nkeys
        t.m_hits += hits
    else:
        t.m_sets += 1
    lat = now - r.t_start
    if lat < 0:
        lat = 0
    t.hist[lg_hist_index(lat)] += 1
    t.lat_sum += <double>lat
    if lat > t.lat_max:
        t.lat_max = lat
    lg_note_gap(t, now, now - gap_from, now - r.t_due)

cdef void lg_note_gap(lg_thread_t *t, int64_t now, int64_t gap, int64_t wait) noexcept nogil:
    # A reply ends a "gap": the time its conn had requests outstanding and heard nothing, from
    # the later of the previous reply on the conn and this request's send. The worst gap of a
    # run is the longest any conn sat waiting on the server; a server whose worker stops for
    # 50 ms shows a 50 ms gap on every conn it owns even at depth 1, where the percentiles of
    # a short run may not move. `wait` is the request's own wait from its due time (its send in
    # a closed loop, its slot at a fixed rate, so a stall that delays later sends counts too).
    cdef int b = 0
    cdef int64_t us
    if gap < 0:
        gap = 0
    if gap > t.gap_max:
        t.gap_max = gap
        t.gap_max_end = now
    if wait > t.wait_max:
        t.wait_max = wait
    us = gap // 1000
    while b < LG_GAP_BUCKETS - 1 and us >= LG_GAP_EDGES_US[b]:
        b += 1
    t.gap_hist[b] += 1

cdef inline int lg_starts(const char *p, size_t n, const char *lit, size_t ln) noexcept nogil:
    return n >= ln and memcmp(p, lit, ln) == 0

cdef int lg_parse(lg_thread_t *t, lg_conn_t *c, int64_t now) noexcept nogil:
    # Consume every complete reply element in ibuf. Values are skipped, never copied.
    cdef char *p
    cdef char *nl
    cdef char *s
    cdef size_t avail, n, take
    cdef uint64_t nbytes, off, dn
    while True:
        avail = c.ilen - c.ioff
        if c.skip:
            take = avail if avail < c.skip else <size_t>c.skip
            # the CRLF after the data ends the skipped span; its '\r' may have come in the
            # previous recv, so check the '\n' always and the '\r' when it is here
            if take == c.skip:
                if c.ibuf[c.ioff + take - 1] != b'\n' or (take >= 2 and c.ibuf[c.ioff + take - 2] != b'\r'):
                    lg_fail(t, b"protocol: value block not followed by CRLF", 0)
                    return -1
            # every value in our key space is cfg.value: compare while skipping, so a server
            # that hands back another item's bytes is caught, at the cost of a memcmp
            off = c.vlen + 2 - c.skip
            if c.vcheck and off < c.vlen:
                dn = c.vlen - off
                if dn > take:
                    dn = take
                if memcmp(c.ibuf + c.ioff, t.cfg.value + off, dn) != 0:
                    t.t_bad_values += 1
                    c.vcheck = 0
            c.ioff += take
            c.skip -= take
            if c.skip:
                return 0
            continue
        if avail == 0:
            return 0
        p = c.ibuf + c.ioff
        nl = <char *>memchr(p, b'\n', avail)
        if nl == NULL:
            if avail >= LG_IBUF_SIZE:
                lg_fail(t, b"protocol: reply line too long", 0)
                return -1
            return 0
        n = nl - p + 1
        c.ioff += n
        if c.qcount == 0:
            lg_fail(t, b"protocol: reply with no request outstanding", 0)
            return -1
        if lg_starts(p, n, b"VALUE ", 6):
            if c.q[c.qhead].nkeys == 0:
                lg_fail(t, b"protocol: VALUE in reply to a set", 0)
                return -1
            # the byte count is the third token of "VALUE <key> <flags> <bytes>[ <cas>]"
            s = p + 6
            while s < nl and s[0] != b' ':
                s += 1
            s += 1
            while s < nl and s[0] != b' ':
                s += 1
            s += 1
            nbytes = 0
            while s < nl and s[0] >= b'0' and s[0] <= b'9':
                nbytes = nbytes * 10 + <uint64_t>(s[0] - 48)
                s += 1
            c.cur_hits += 1
            c.skip = nbytes + 2
            c.vlen = nbytes
            c.vcheck = nbytes == t.cfg.value_size
            if not c.vcheck and t.phase == LG_PHASE_RUN:
                t.t_bad_values += 1
        elif lg_starts(p, n, b"END\r\n", 5):
            if c.q[c.qhead].nkeys == 0:
                lg_fail(t, b"protocol: END in reply to a set", 0)
                return -1
            lg_complete(t, c, now, 0, 0)
        elif lg_starts(p, n, b"STORED\r\n", 8):
            lg_complete(t, c, now, 0, 0)
        elif lg_starts(p, n, b"NOT_STORED", 10) or lg_starts(p, n, b"EXISTS", 6) or lg_starts(p, n, b"NOT_FOUND", 9):
            lg_complete(t, c, now, 0, 1)
        elif lg_starts(p, n, b"SERVER_ERROR", 12) or lg_starts(p, n, b"CLIENT_ERROR", 12) or lg_starts(p, n, b"ERROR", 5):
            lg_complete(t, c, now, 1, 0)
        else:
            lg_fail(t, b"protocol: unexpected reply line", 0)
            return -1

cdef ssize_t lg_recv_stamped(lg_thread_t *t, lg_conn_t *c, int64_t *now) noexcept nogil:
    # recv that also returns, in *now, when the kernel received the newest bytes read
    # (SO_TIMESTAMPNS, CLOCK_REALTIME mapped onto the monotonic clock): with lazy polling the
    # reply may sit in the socket for up to a tick before we look, but its latency stays exact
    cdef msghdr m
    cdef iovec iov
    cdef char ctl[64]
    cdef cmsghdr *cm
    cdef timespec *ts
    cdef ssize_t n
    iov.iov_base = c.ibuf + c.ilen
    iov.iov_len = LG_IBUF_SIZE - c.ilen
    memset(&m, 0, sizeof(m))
    m.msg_iov = &iov
    m.msg_iovlen = 1
    m.msg_control = ctl
    m.msg_controllen = sizeof(ctl)
    n = recvmsg(c.fd, &m, 0)
    if n > 0:
        cm = CMSG_FIRSTHDR(&m)
        while cm != NULL:
            if cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == SCM_TIMESTAMPNS:
                ts = <timespec *>CMSG_DATA(cm)
                now[0] = <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec - t.cfg.real_minus_mono
                return n
            cm = CMSG_NXTHDR(&m, cm)
        t.t_unstamped += 1      # timed at the poll instead: up to a tick late
    return n

cdef int lg_on_readable(lg_thread_t *t, lg_conn_t *c, int64_t now) noexcept nogil:
    cdef ssize_t n
    if c.ioff == c.ilen:
        c.ioff = 0
        c.ilen = 0
    elif c.ioff > LG_IBUF_SIZE // 2:
        memmove(c.ibuf, c.ibuf + c.ioff, c.ilen - c.ioff)
        c.ilen -= c.ioff
        c.ioff = 0
    # level-triggered epoll: one recv per readiness is enough, leftovers wake us again
    if t.cfg.lazy and t.phase == LG_PHASE_RUN:
        n = lg_recv_stamped(t, c, &now)
    else:
        n = recv(c.fd, c.ibuf + c.ilen, LG_IBUF_SIZE - c.ilen, 0)
    if n < 0:
        if errno == EAGAIN or errno == EINTR:
            return 0
        lg_fail(t, b"recv", errno)
        return -1
    if n == 0:
        lg_fail(t, b"server closed the connection", 0)
        return -1
    c.ilen += n
    return lg_parse(t, c, now)


# ---------------------------------------------------------------------------------------------
# Per-thread phases

cdef int lg_connect_all(lg_thread_t *t) noexcept nogil:
    cdef int i, fd, one = 1, fl
    cdef epoll_event ev
    cdef lg_conn_t *c
    t.epfd = epoll_create1(EPOLL_CLOEXEC)
    if t.epfd < 0:
        lg_fail(t, b"epoll_create1", errno)
        return -1
    for i in range(t.nconns):
        c = &t.conns[i]
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)
        if fd < 0:
            lg_fail(t, b"socket", errno)
            return -1
        c.fd = fd
        # blocking connect to a local address is immediate; then switch to non-blocking
        if connect(fd, <sockaddr *>&t.cfg.addr, sizeof(sockaddr_in)) < 0:
            lg_fail(t, b"connect", errno)
            return -1
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        if t.cfg.lazy:
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one))
        fl = fcntl(fd, F_GETFL, 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK)
        ev.events = EPOLLIN
        ev.data.ptr = c
        if epoll_ctl(t.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            lg_fail(t, b"epoll_ctl", errno)
            return -1
    return 0

cdef int lg_poll(lg_thread_t *t, epoll_event *evs, int timeout_ms) noexcept nogil:
    # wait once, then handle every ready conn; returns -1 on a fatal error
    cdef int n, i
    cdef uint64_t ticks
    cdef lg_conn_t *c
    cdef int64_t now
    n = epoll_wait(t.epfd, evs, LG_MAX_EVENTS, timeout_ms)
    if n < 0:
        if errno == EINTR:
            return 0
        lg_fail(t, b"epoll_wait", errno)
        return -1
    now = lg_now()
    for i in range(n):
        c = <lg_conn_t *>evs[i].data.ptr
        if c == NULL:
            read(t.tfd, &ticks, sizeof(ticks))
            continue
        if evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP):
            if lg_on_readable(t, c, now) < 0:
                return -1
        if evs[i].events & EPOLLOUT:
            if lg_flush(t, c) < 0:
                return -1
    return 0

cdef int lg_prefill(lg_thread_t *t, epoll_event *evs) noexcept nogil:
    # store every key of this thread's slice once, pipelined, and wait for all replies
    cdef int i
    cdef lg_conn_t *c
    cdef int64_t now
    t.phase = LG_PHASE_PREFILL
    while True:
        if lg_atomic_load(&t.cfg.abort):
            return -1
        now = lg_now()
        for i in range(t.nconns):
            c = &t.conns[i]
            while c.qcount < t.cfg.pf_depth and t.pf_next < t.pf_end:
                lg_add_set(t, c, t.pf_next, now, now, now)
                t.pf_next += 1
        lg_flush_dirty(t)
        if t.outstanding == 0 and t.pf_next >= t.pf_end:
            return 0
        if lg_poll(t, evs, 1000) < 0:
            return -1

cdef inline int lg_may_issue(lg_thread_t *t) noexcept nogil:
    if t.stopping:
        return 0
    if t.cfg.requests:
        return t.issued < t.quota
    return 1

cdef void lg_issue_closed(lg_thread_t *t, int64_t now) noexcept nogil:
    # closed loop: keep `depth` requests outstanding on every conn
    cdef int i
    cdef lg_conn_t *c
    for i in range(t.nconns):
        c = &t.conns[i]
        while c.qcount < t.cfg.depth and lg_may_issue(t):
            lg_add_request(t, c, now, now, now)

cdef void lg_issue_rate(lg_thread_t *t, int64_t now) noexcept nogil:
    # open loop: request j of this thread is due at t0 + j / rate. It goes to the next conn with
    # a free pipeline slot; a send later than one tick past its due time is timed from there,
    # so a late send shows up in the percentiles instead of silently lowering the load
    # (coordinated omission).
    cdef uint64_t due
    cdef int64_t slot_t
    cdef int tries
    cdef lg_conn_t *c
    if now < t.cfg.t0:
        return
    due = <uint64_t>(<double>(now - t.cfg.t0) * t.rate_per_ns) + 1
    if t.cfg.requests and due > t.quota:
        due = t.quota
    while t.scheduled < due and lg_may_issue(t):
        tries = 0
        c = &t.conns[t.rr]
        while c.qcount >= t.cfg.depth and tries < t.nconns:
            t.rr = (t.rr + 1) % t.nconns
            c = &t.conns[t.rr]
            tries += 1
        if c.qcount >= t.cfg.depth:
            return                   # every conn is full: stays due, sent later
        slot_t = t.cfg.t0 + <int64_t>(<double>t.scheduled / t.rate_per_ns)
        if now - slot_t > t.cfg.tick_ns and lg_in_window(t, now):
            t.m_late += 1
        # latency starts at the send, or at due + one tick when the send is later than that:
        # waiting for the pacing tick is the client's own quantisation and is forgiven, any
        # further delay (no free conn, a stalled client) is charged
        lg_add_request(t, c, now if now - slot_t <= t.cfg.tick_ns else slot_t + t.cfg.tick_ns,
                       slot_t, now)
        t.scheduled += 1
        t.rr = (t.rr + 1) % t.nconns

cdef int lg_run(lg_thread_t *t, epoll_event *evs) noexcept nogil:
    cdef lg_cfg_t *cfg = t.cfg
    cdef int64_t now, drain_deadline = 0
    cdef int timeout_ms
    cdef itimerspec its
    cdef epoll_event ev
    t.phase = LG_PHASE_RUN
    if cfg.rate > 0 and not cfg.lazy:
        t.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if t.tfd < 0:
            lg_fail(t, b"timerfd_create", errno)
            return -1
        # one periodic tick batches the sends that fell due since the last wake-up
        its.it_interval.tv_sec = cfg.tick_ns // 1000000000
        its.it_interval.tv_nsec = cfg.tick_ns % 1000000000
        its.it_value.tv_sec = cfg.t0 // 1000000000
        its.it_value.tv_nsec = cfg.t0 % 1000000000
        if timerfd_settime(t.tfd, 1, &its, NULL) < 0:   # 1 == TFD_TIMER_ABSTIME
            lg_fail(t, b"timerfd_settime", errno)
            return -1
        ev.events = EPOLLIN
        ev.data.ptr = NULL
        epoll_ctl(t.epfd, EPOLL_CTL_ADD, t.tfd, &ev)
    timeout_ms = 100
    while True:
        if lg_atomic_load(&cfg.abort):
            return -1
        now = lg_now()
        if not t.stopping:
            if cfg.requests:
                if t.issued >= t.quota:
                    t.stopping = 1
            elif now >= cfg.t_end:
                t.stopping = 1
            if t.stopping:
                drain_deadline = now + LG_DRAIN_NS
        if t.stopping:
            if t.outstanding == 0:
                return 0
            if now > drain_deadline:
                t.t_timeouts = t.outstanding
                lg_fail(t, b"timed out waiting for replies", 0)
                return -1
        if cfg.rate > 0:
            lg_issue_rate(t, now)
        else:
            lg_issue_closed(t, now)
        lg_flush_dirty(t)
        if cfg.lazy:
            # sleep until the next tick (nothing else wakes us), then collect whatever
            # replies arrived meanwhile without blocking
            if lg_wait_tick(t) < 0 or lg_poll(t, evs, 0) < 0:
                return -1
        elif lg_poll(t, evs, timeout_ms) < 0:
            return -1

cdef int lg_wait_tick(lg_thread_t *t) noexcept nogil:
    # lazy fixed rate: one clock_nanosleep to the next tick boundary (t0 + k * tick) is the
    # whole wait; a client that fell behind just takes the next boundary
    cdef int64_t now = lg_now(), tick = t.cfg.tick_ns, t0 = t.cfg.t0
    cdef int64_t nxt = t0 if now < t0 else t0 + ((now - t0) // tick + 1) * tick
    lg_sleep_until(nxt)
    return 0

cdef void *lg_thread_main(void *arg) noexcept nogil:
    cdef lg_thread_t *t = <lg_thread_t *>arg
    cdef epoll_event *evs = <epoll_event *>malloc(LG_MAX_EVENTS * sizeof(epoll_event))
    cdef int ok = evs != NULL
    if not ok:
        lg_fail(t, b"out of memory", 0)
    # the default 50 us timer slack would let every paced sleep overshoot by up to half a tick
    prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    if ok and lg_connect_all(t) < 0:
        ok = 0
    if ok and t.cfg.prefill and lg_prefill(t, evs) < 0:
        ok = 0
    lg_atomic_inc(&t.cfg.ready)
    while not lg_atomic_load(&t.cfg.go) and not lg_atomic_load(&t.cfg.abort):
        lg_nap(100000)
    if ok and not lg_atomic_load(&t.cfg.abort):
        lg_sleep_until(t.cfg.t0)              # so request-count runs are timed from t0
        lg_run(t, evs)
    free(evs)
    return NULL


# ---------------------------------------------------------------------------------------------
# Python-facing entry

cdef void lg_free_threads(lg_thread_t *ts, int nthreads) noexcept nogil:
    cdef int i, j
    if ts == NULL:
        return
    for i in range(nthreads):
        if ts[i].conns != NULL:
            for j in range(ts[i].nconns):
                if ts[i].conns[j].fd > 0:
                    close(ts[i].conns[j].fd)
                free(ts[i].conns[j].obuf)
                free(ts[i].conns[j].ibuf)
                free(ts[i].conns[j].q)
            free(ts[i].conns)
        free(ts[i].flush)
        free(ts[i].hist)
        free(ts[i].kcounts)
        if ts[i].epfd > 0:
            close(ts[i].epfd)
        if ts[i].tfd > 0:
            close(ts[i].tfd)
    free(ts)


def _proc_cpu_ticks(int pid):
    """(utime, stime) of a process in clock ticks from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(fields[11]), int(fields[12])


def _proc_oncpu_ns(int pid):
    """Time the process's threads have run, in ns, summed over /proc/PID/task/*/schedstat
    (the scheduler's exact account; utime/stime are sampled at clock ticks and, at low
    load, split noisily between user and system). None where schedstat is missing."""
    import os
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue      # a thread that ended in between
    return total or None


def _server_sample(int pid):
    ticks = _proc_cpu_ticks(pid)
    if ticks is None:
        return None
    return ticks + (_proc_oncpu_ns(pid),)


def _proc_stat_cpus():
    """{cpu index: (busy, steal, total)} in ticks from /proc/stat, to spot other load."""
    out = {}
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"cpu") and line[3:4].isdigit():
                    parts = line.split()
                    v = [int(x) for x in parts[1:]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    steal = v[7] if len(v) > 7 else 0
                    total = sum(v[:8])
                    out[int(parts[0][3:])] = (total - idle - steal, steal, total)
    except OSError:
        pass
    return out


def monotonic_ns():
    """The clock the load threads use, for tests."""
    return lg_now()


def run(*, str host="127.0.0.1", int port, int connections=50, int threads=1, int depth=1,
        unsigned long long keyspace=10000, str key_prefix="key:", int value_size=32,
        int get_ratio=10, int set_ratio=1, int multiget=1, double duration=5.0,
        double warmup=0.0, unsigned long long requests=0, double rate=0.0, bint prefill=False,
        str key_pattern="random", double tick_us=100.0, bint lazy=True,
        unsigned long long seed=1, int server_pid=0, double zipf_s=1.0, int count_keys=0,
        bint set_on_miss=False, unsigned long long scan_every=0, unsigned long long scan_length=0):
    """Drive a memcached-protocol server and return a dict of results (see memcachepy/bench.py).

    With a fixed `rate`, `lazy` (the default) wakes the load threads only on pacing ticks and
    times replies by their kernel receive stamps, which saves the client a wake-up per reply.

    `key_pattern` "zipf" draws key ranks from a Zipf distribution with exponent `zipf_s`
    (key 0 the most requested). `count_keys` > 0 counts every key request exactly and
    returns the `count_keys` most requested keys as result["key_counts"] (for checking
    a server's hot-key estimates).

    `set_on_miss` models a cache in front of a database: a one-key get that misses is
    followed, on the same conn, by a set of that key (counted as a set, beyond `requests`).
    `scan_every` > 0: of every `scan_every` requests a thread issues, the first
    `scan_length` are gets of fresh keys never requested before (a one-time scan).

    `requests` > 0 selects request-count mode (every request is measured, `duration` and
    `warmup` are ignored); otherwise the run lasts warmup + duration seconds and only replies
    completed after the warmup count. `requests=0, duration=0` with `prefill` only prefills.
    """
    cdef lg_cfg_t *cfg = NULL
    cdef lg_thread_t *ts = NULL
    cdef lg_thread_t *t
    cdef lg_conn_t *c
    cdef int i, j, k, nthreads, per, extra, started = 0
    cdef size_t klen, set_len, get_len
    cdef bytes bprefix = key_prefix.encode()
    cdef bytes bhost = host.encode()
    cdef int64_t now
    cdef uint64_t q_base, q_extra
    cdef int64_t t_stop_ns
    import os, resource

    if connections < 1 or threads < 1 or depth < 1 or keyspace < 1 or multiget < 1:
        raise ValueError("connections, threads, depth, keyspace and multiget must be >= 1")
    if get_ratio < 0 or set_ratio < 0 or get_ratio + set_ratio == 0:
        raise ValueError("ratio needs a positive get or set part")
    if len(bprefix) > 32 or b" " in bprefix:
        raise ValueError("key prefix must be at most 32 bytes without spaces")
    if value_size < 0 or value_size > 64 * 1024 * 1024:
        raise ValueError("value size out of range")
    if key_pattern not in ("random", "sequential", "zipf"):
        raise ValueError("key pattern is 'random', 'sequential' or 'zipf'")
    if key_pattern == "zipf" and not zipf_s > 0:
        raise ValueError("zipf exponent must be > 0")
    if set_on_miss and multiget != 1:
        raise ValueError("set on miss needs one key per get")
    if scan_every and not 0 < scan_length <= scan_every:
        raise ValueError("scan length must be between 1 and scan every")
    if rate < 0 or tick_us <= 0:
        raise ValueError("rate must be >= 0 and tick > 0")
    nthreads = min(threads, connections)

    cfg = <lg_cfg_t *>calloc(1, sizeof(lg_cfg_t))
    if cfg == NULL:
        raise MemoryError()
    try:
        cfg.addr.sin_family = AF_INET
        cfg.addr.sin_port = htons(<uint16_t>port)
        if inet_pton(AF_INET, bhost, &cfg.addr.sin_addr) != 1:
            raise ValueError(f"host must be an IPv4 address, got {host!r}")
        cfg.nconns = connections
        cfg.nthreads = nthreads
        cfg.depth = depth
        cfg.keyspace = keyspace
        memcpy(cfg.prefix, <char *>bprefix, len(bprefix))
        cfg.prefix_len = len(bprefix)
        cfg.value_size = value_size
        cfg.get_parts = get_ratio
        cfg.set_parts = set_ratio
        cfg.multiget = multiget
        cfg.key_sequential = key_pattern == "sequential"
        cfg.set_on_miss = set_on_miss
        cfg.scan_every = scan_every
        cfg.scan_len = scan_length
        if key_pattern == "zipf":
            cfg.zipf_cdf = <double *>malloc(keyspace * sizeof(double))
            if cfg.zipf_cdf == NULL:
                raise MemoryError()
            acc = 0.0
            for k in range(<long long>keyspace):
                acc += (k + 1.0) ** -zipf_s
                cfg.zipf_cdf[k] = acc
            for k in range(<long long>keyspace):
                cfg.zipf_cdf[k] /= acc
            cfg.zipf_cdf[keyspace - 1] = 1.0
        cfg.prefill = prefill
        cfg.requests = requests
        cfg.rate = rate
        cfg.tick_ns = <int64_t>(tick_us * 1000.0)
        cfg.lazy = lazy and rate > 0
        cfg.real_minus_mono = lg_real_minus_mono()
        cfg.seed = seed
        klen = cfg.prefix_len + 20
        set_len = 4 + klen + 5 + 20 + 2 + value_size + 2
        get_len = 3 + multiget * (klen + 1) + 2
        cfg.max_req = set_len if set_len > get_len else get_len
        # prefill pipelines deeper than the run (it is not measured), but keeps buffers modest
        cfg.pf_depth = <uint32_t>max(1, min(64, 262144 // set_len))
        cfg.qcap = max(cfg.depth, cfg.pf_depth)
        cfg.value = <char *>malloc(value_size + 1)
        if cfg.value == NULL:
            raise MemoryError()
        for i in range(value_size):
            cfg.value[i] = <char>(97 + i % 26)

        ts = <lg_thread_t *>calloc(nthreads, sizeof(lg_thread_t))
        if ts == NULL:
            raise MemoryError()
        per = connections // nthreads
        extra = connections % nthreads
        q_base = requests // <uint64_t>connections
        q_extra = requests % <uint64_t>connections
        k = 0
        for i in range(nthreads):
            t = &ts[i]
            t.cfg = cfg
            t.idx = i
            t.epfd = -1
            t.tfd = -1
            t.nconns = per + (1 if i < extra else 0)
            # request quota and rate follow the thread's share of the conns
            t.quota = q_base * t.nconns
            for j in range(t.nconns):
                if <uint64_t>(k + j) < q_extra:
                    t.quota += 1
            k += t.nconns
            t.rate_per_ns = rate * t.nconns / connections / 1e9
            t.pf_next = keyspace * i // nthreads
            t.pf_end = keyspace * (i + 1) // nthreads
            t.seq_key = t.pf_next
            t.rng = (seed + 1) * <uint64_t>0x9E3779B97F4A7C15 + <uint64_t>(i + 1) * <uint64_t>0xBF58476D1CE4E5B9
            if t.rng == 0:
                t.rng = 1
            t.conns = <lg_conn_t *>calloc(t.nconns, sizeof(lg_conn_t))
            t.flush = <lg_conn_t **>calloc(t.nconns, sizeof(lg_conn_t *))
            t.hist = <uint64_t *>calloc(LG_HIST_SIZE, sizeof(uint64_t))
            if t.conns == NULL or t.flush == NULL or t.hist == NULL:
                raise MemoryError()
            if count_keys > 0:
                t.kcounts = <uint32_t *>calloc(keyspace, sizeof(uint32_t))
                if t.kcounts == NULL:
                    raise MemoryError()
            for j in range(t.nconns):
                c = &t.conns[j]
                c.fd = -1
                c.ocap = cfg.qcap * cfg.max_req + 64
                c.obuf = <char *>malloc(c.ocap)
                c.ibuf = <char *>malloc(LG_IBUF_SIZE)
                c.q = <lg_req_t *>calloc(cfg.qcap, sizeof(lg_req_t))
                if c.obuf == NULL or c.ibuf == NULL or c.q == NULL:
                    raise MemoryError()

        for i in range(nthreads):
            if pthread_create(&ts[i].tid, NULL, lg_thread_main, &ts[i]) != 0:
                break
            ts[i].started = 1
            started += 1
        if started != nthreads:
            raise OSError("pthread_create failed")   # finally: abort, join the started ones

        clk_tck = os.sysconf("SC_CLK_TCK")
        # wait for every thread to connect and prefill; Ctrl-C lands in finally (abort)
        while lg_atomic_load(&cfg.ready) < started and not lg_atomic_load(&cfg.abort):
            with nogil:
                lg_nap(1000000)
            PyErr_CheckSignals()
        now = lg_now()
        cfg.t0 = now + 2000000                       # time for every thread to see `go`
        if requests:
            cfg.t_meas = cfg.t0
            cfg.t_end = 0
        else:
            cfg.t_meas = cfg.t0 + <int64_t>(warmup * 1e9)
            cfg.t_end = cfg.t_meas + <int64_t>(duration * 1e9)
        srv0 = srv1 = None
        ru0 = ru1 = None
        st0 = st1 = None
        if requests:
            srv0 = _server_sample(server_pid) if server_pid else None
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            st0 = _proc_stat_cpus()
        lg_atomic_store(&cfg.go, 1)
        try:
            if not requests and not lg_atomic_load(&cfg.abort):
                # window boundaries: sleep in slices so Ctrl-C and thread failures are noticed
                for target in (cfg.t_meas, cfg.t_end):
                    while lg_now() < target and not lg_atomic_load(&cfg.abort):
                        now = min(<int64_t>target, lg_now() + 50000000)
                        with nogil:
                            lg_sleep_until(now)
                        PyErr_CheckSignals()
                    if target == cfg.t_meas:
                        srv0 = _server_sample(server_pid) if server_pid else None
                        ru0 = resource.getrusage(resource.RUSAGE_SELF)
                        st0 = _proc_stat_cpus()
                    else:
                        srv1 = _server_sample(server_pid) if server_pid else None
                        ru1 = resource.getrusage(resource.RUSAGE_SELF)
                        st1 = _proc_stat_cpus()
        except BaseException:
            lg_atomic_store(&cfg.abort, 1)
            raise
        finally:
            with nogil:
                for i in range(nthreads):
                    if ts[i].started:
                        pthread_join(ts[i].tid, NULL)
                        ts[i].started = 0
        t_stop_ns = lg_now()
        if requests:
            srv1 = _server_sample(server_pid) if server_pid else None
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            st1 = _proc_stat_cpus()

        errors = [ts[i].err.decode(errors="replace") for i in range(nthreads) if ts[i].err[0]]
        if errors:
            raise RuntimeError("; ".join(errors))
        result = _collect(ts, nthreads, cfg, requests, duration, t_stop_ns, srv0, srv1, ru0,
                          ru1, clk_tck)
        # how busy every CPU was in the window, whoever ran there: with the daemon and the
        # load generator pinned, busy minus their own share is load from other processes
        cpus = {}
        if st0 and st1:
            for cpu in st1:
                if cpu in st0 and st1[cpu][2] > st0[cpu][2]:
                    dt = st1[cpu][2] - st0[cpu][2]
                    cpus[cpu] = dict(busy=(st1[cpu][0] - st0[cpu][0]) / dt,
                                     steal=(st1[cpu][1] - st0[cpu][1]) / dt)
        result["cpus"] = cpus
        if count_keys > 0:
            result["key_counts"] = _key_counts(ts, nthreads, cfg, count_keys)
        return result
    finally:
        if ts != NULL:
            # never free memory a running thread may still touch
            lg_atomic_store(&cfg.abort, 1)
            if started:
                with nogil:
                    for i in range(nthreads):
                        if ts[i].started:
                            pthread_join(ts[i].tid, NULL)
            lg_free_threads(ts, nthreads)
        free(cfg.value)
        free(cfg.zipf_cdf)
        free(cfg)


cdef list _key_counts(lg_thread_t *ts, int nthreads, lg_cfg_t *cfg, int top):
    """The `top` most requested keys, exactly: [(key, requests)], most first."""
    import heapq
    cdef uint64_t k
    cdef uint64_t n
    cdef int i
    prefix = cfg.prefix[:cfg.prefix_len].decode()
    counts = []
    for k in range(cfg.keyspace):
        n = 0
        for i in range(nthreads):
            n += ts[i].kcounts[k]
        if n:
            counts.append((n, k))
    best = heapq.nlargest(top, counts)
    return [(f"{prefix}{k}", n) for n, k in best]


cdef object _collect(lg_thread_t *ts, int nthreads, lg_cfg_t *cfg, uint64_t requests,
                     double duration, int64_t t_stop_ns, srv0, srv1, ru0, ru1, clk_tck):
    cdef uint64_t hist[LG_HIST_SIZE]
    cdef int i, j
    cdef uint64_t total = 0, acc, target
    cdef int64_t last_done = 0
    memset(hist, 0, sizeof(hist))
    agg = dict(gets=0, get_keys=0, hits=0, sets=0, errors=0, late=0)
    tot = dict(gets=0, get_keys=0, hits=0, sets=0, not_stored=0, errors=0, prefill_sets=0,
               unstamped_reads=0, bad_values=0)
    lat_sum = 0.0
    lat_max = 0
    gap_max = 0
    gap_max_end = 0
    wait_max = 0
    gap_hist = [0] * LG_GAP_BUCKETS
    for i in range(nthreads):
        for j in range(LG_GAP_BUCKETS):
            gap_hist[j] += ts[i].gap_hist[j]
        if ts[i].gap_max > gap_max:
            gap_max = ts[i].gap_max
            gap_max_end = ts[i].gap_max_end
        wait_max = max(wait_max, ts[i].wait_max)
        for j in range(LG_HIST_SIZE):
            hist[j] += ts[i].hist[j]
        agg["gets"] += ts[i].m_gets
        agg["get_keys"] += ts[i].m_get_keys
        agg["hits"] += ts[i].m_hits
        agg["sets"] += ts[i].m_sets
        agg["errors"] += ts[i].m_errors
        agg["late"] += ts[i].m_late
        tot["gets"] += ts[i].t_gets
        tot["get_keys"] += ts[i].t_get_keys
        tot["hits"] += ts[i].t_hits
        tot["sets"] += ts[i].t_sets
        tot["not_stored"] += ts[i].t_not_stored
        tot["errors"] += ts[i].t_errors
        tot["prefill_sets"] += ts[i].t_prefill
        tot["unstamped_reads"] += ts[i].t_unstamped
        tot["bad_values"] += ts[i].t_bad_values
        lat_sum += ts[i].lat_sum
        lat_max = max(lat_max, ts[i].lat_max)
        if ts[i].last_done > last_done:
            last_done = ts[i].last_done
    for j in range(LG_HIST_SIZE):
        total += hist[j]

    pct = {}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999)):
        if total == 0:
            pct[name] = None
            continue
        target = <uint64_t>(q * total)
        if target >= total:
            target = total - 1
        acc = 0
        for j in range(LG_HIST_SIZE):
            acc += hist[j]
            if acc > target:
                break
        # a bucket's midpoint can lie above the largest sample in it; no
        # percentile is above the maximum
        pct[name] = min(lg_hist_value(j), <double>lat_max) / 1000.0
    latency = dict(pct, mean=(lat_sum / total / 1000.0) if total else None,
                   max=lat_max / 1000.0 if total else None)

    if requests:
        end = last_done if last_done > cfg.t0 else t_stop_ns
        elapsed = max(end - cfg.t0, 1) / 1e9
    else:
        elapsed = (cfg.t_end - cfg.t_meas) / 1e9
    nreq = agg["gets"] + agg["sets"]
    result = dict(
        elapsed_s=elapsed,
        requests=nreq,
        gets=agg["gets"], sets=agg["sets"], get_keys=agg["get_keys"], hits=agg["hits"],
        misses=agg["get_keys"] - agg["hits"], errors=agg["errors"], late=agg["late"],
        rps=nreq / elapsed if elapsed > 0 else 0.0,
        keys_per_s=(agg["get_keys"] + agg["sets"]) / elapsed if elapsed > 0 else 0.0,
        hit_ratio=(agg["hits"] / agg["get_keys"]) if agg["get_keys"] else None,
        latency_us=latency,
        gaps=dict(
            # longest interval any conn had requests outstanding and no reply
            worst_gap_us=gap_max / 1000.0 if total else None,
            # when it ended, seconds after the measured window opened
            worst_gap_at_s=(gap_max_end - cfg.t_meas) / 1e9 if total else None,
            # longest wait of one request from its due time (send, or slot at a fixed rate)
            worst_wait_us=wait_max / 1000.0 if total else None,
            # one gap per reply: [upper edge in us (None: unbounded), replies]
            histogram=[[LG_GAP_EDGES_US[j] if j < LG_GAP_BUCKETS - 1 else None, gap_hist[j]]
                       for j in range(LG_GAP_BUCKETS)],
        ),
        totals=tot,
        server_cpu=None,
        client_cpu=None,
    )

    def per_req(user_s, sys_s):
        d = dict(user_s=user_s, sys_s=sys_s, cpu_s=user_s + sys_s,
                 utilisation=(user_s + sys_s) / elapsed if elapsed > 0 else None)
        d["us_per_request"] = (user_s + sys_s) / nreq * 1e6 if nreq else None
        d["user_us_per_request"] = user_s / nreq * 1e6 if nreq else None
        d["sys_us_per_request"] = sys_s / nreq * 1e6 if nreq else None
        return d

    if srv0 is not None and srv1 is not None:
        result["server_cpu"] = per_req((srv1[0] - srv0[0]) / clk_tck, (srv1[1] - srv0[1]) / clk_tck)
        if srv0[2] is not None and srv1[2] is not None:
            oncpu = (srv1[2] - srv0[2]) / 1e9
            result["server_cpu"]["oncpu_s"] = oncpu
            result["server_cpu"]["oncpu_us_per_request"] = oncpu / nreq * 1e6 if nreq else None
    if ru0 is not None and ru1 is not None:
        result["client_cpu"] = per_req(ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime)
    return result
