# lock_stats.pxi -- how long the background work holds the locks a worker may wait on.
#
# A worker stops answering while it waits for a shard lock that someone else holds for
# long, so every hold taken *off* the request path (the LRU maintainer pass, the crawler,
# the page mover, `stats` collection, the dumps, the acceptor's hand-off of a new conn) and
# the one long step taken *on* it (a hash table doubling inside a store) is timed here:
# holds, total and longest hold per kind, shown by `stats locks` (memcachepy's own).
# The per-request shard holds are not timed: two clock reads per request would cost more
# than the hold itself, and what they wait on is exactly what is timed here.
#
# Each hold's wall time and its thread's CPU time are taken: on a shared CPU a hold can be
# long because its holder was preempted, and only the CPU time says how much work it did.
# Cost: two wall-clock reads per timed hold (vDSO, no system call) and, for the rare kinds,
# two CPU-clock reads (CLOCK_THREAD_CPUTIME_ID is a real system call).
# The LRU maintainer holds shard locks hundreds of times a second under load (memcached's
# schedule, lru.pxi), so its holds read the CPU clock only for one hold in
# LOCKSTAT_CPU_SAMPLE (the first of each thread included): max_cpu_us is then the longest
# of the sampled holds, while holds, total_us and max_us still count every hold.
# Counters are global atomics, each kind on its own cache line, written only by whoever
# held the lock; `stats reset` does not touch them.

cdef extern from *:
    """
    static inline void mc_max_u64(uint64_t *p, uint64_t v) {
        uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, 1, __ATOMIC_RELAXED,
                                                       __ATOMIC_RELAXED)) {
        }
    }
    """
    void mc_max_u64(uint64_t* p, uint64_t v) nogil

cdef extern from *:
    """
    /* per thread: which of its sampled-kind holds reads the CPU clock */
    static __thread unsigned mc_lockstat_seq;
    static inline unsigned mc_lockstat_next(void) { return mc_lockstat_seq++; }
    """
    unsigned mc_lockstat_next() nogil

cdef enum:
    LOCKSTAT_CPU_SAMPLE = 16      # a power of two

cdef enum lock_kind_t:
    LK_MAINTAINER = 0     # shard lock, LRU maintainer pass (lru.pxi)
    LK_CRAWLER = 1        # shard lock, one LRU of one shard walked by the crawler
    LK_EXPAND = 2         # shard lock, the hash table doubling inside a store (assoc.pxi)
    LK_PAGE_MOVE = 3      # shard and slabs locks held by the page mover (slabs_rebalance.pxi)
    LK_HANDOFF = 4        # a worker's queue lock, acceptor handing over a conn (thread.pxi)
    LK_STATS = 5          # shard and slabs locks held to collect `stats`
    LK_DUMP = 6           # shard lock, cachedump/metadump/mgdump walking a shard
    LK_KINDS = 7

cdef struct lock_stat_t:
    uint64_t holds
    uint64_t total_ns
    uint64_t max_ns
    uint64_t max_cpu_ns   # the longest on-CPU time of one hold: a hold far longer than its
                          # CPU time was preempted (shared CPU), not working
    char _pad[32]         # one cache line per kind: holders of different kinds never share

cdef struct lock_hold_t:
    uint64_t wall
    uint64_t cpu

cdef lock_stat_t g_lock_stats[LK_KINDS]

cdef extern from "<time.h>" nogil:
    enum:
        CLOCK_THREAD_CPUTIME_ID

cdef const char* lockstat_name(int kind) noexcept nogil:
    if kind == LK_MAINTAINER:
        return b"maintainer"
    if kind == LK_CRAWLER:
        return b"crawler"
    if kind == LK_EXPAND:
        return b"hash_expand"
    if kind == LK_PAGE_MOVE:
        return b"page_move"
    if kind == LK_HANDOFF:
        return b"conn_handoff"
    if kind == LK_STATS:
        return b"stats"
    return b"dump"

cdef inline uint64_t lockstat_clock(int clk) noexcept nogil:
    cdef timespec ts
    clock_gettime(clk, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec

# The start of a hold, taken just after the lock was.
cdef inline lock_hold_t lockstat_begin() noexcept nogil:
    cdef lock_hold_t h
    h.wall = lockstat_clock(CLOCK_MONOTONIC)
    h.cpu = lockstat_clock(CLOCK_THREAD_CPUTIME_ID)
    return h

# The start of a hold whose CPU time is only sampled (one in LOCKSTAT_CPU_SAMPLE of
# this thread's; cpu = 0 marks a hold not sampled).
cdef inline lock_hold_t lockstat_begin_sampled() noexcept nogil:
    cdef lock_hold_t h
    h.wall = lockstat_clock(CLOCK_MONOTONIC)
    h.cpu = 0
    if (mc_lockstat_next() & (LOCKSTAT_CPU_SAMPLE - 1)) == 0:
        h.cpu = lockstat_clock(CLOCK_THREAD_CPUTIME_ID)
    return h

# Record one hold of `kind` that started at `h` and ends now.
cdef inline void lockstat_note(int kind, lock_hold_t h) noexcept nogil:
    cdef uint64_t d = lockstat_clock(CLOCK_MONOTONIC) - h.wall
    cdef uint64_t dc
    cdef lock_stat_t* s = &g_lock_stats[kind]
    mc_fetch_add_u64(&s.holds, 1)
    mc_fetch_add_u64(&s.total_ns, d)
    mc_max_u64(&s.max_ns, d)
    if h.cpu != 0:
        dc = lockstat_clock(CLOCK_THREAD_CPUTIME_ID) - h.cpu
        mc_max_u64(&s.max_cpu_ns, dc)

# Take `m` and return the start of the hold: pair with lockstat_unlock.
cdef inline lock_hold_t lockstat_lock(pthread_mutex_t* m) noexcept nogil:
    pthread_mutex_lock(m)
    return lockstat_begin()

cdef inline void lockstat_unlock(pthread_mutex_t* m, int kind, lock_hold_t h) noexcept nogil:
    lockstat_note(kind, h)
    pthread_mutex_unlock(m)
