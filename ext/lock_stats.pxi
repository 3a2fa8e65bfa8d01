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
# Cost: two vDSO clock reads per timed hold, and the timed holds are rare (a maintainer
# pass takes each shard lock a few times a second, the crawler once per LRU it walks), so
# it stays on. Counters are global atomics, each kind on its own cache line, written only
# by whoever held the lock; `stats reset` does not touch them.

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
    char _pad[40]         # one cache line per kind: holders of different kinds never share

cdef lock_stat_t g_lock_stats[LK_KINDS]

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

cdef inline uint64_t lockstat_now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec

# Record one hold of `kind` that started at `t0` (lockstat_now() just after the lock was
# taken) and ends now.
cdef inline void lockstat_note(int kind, uint64_t t0) noexcept nogil:
    cdef uint64_t d = lockstat_now() - t0
    cdef lock_stat_t* s = &g_lock_stats[kind]
    mc_fetch_add_u64(&s.holds, 1)
    mc_fetch_add_u64(&s.total_ns, d)
    mc_max_u64(&s.max_ns, d)

# Take `m` and return the time the hold started: pair with lockstat_unlock.
cdef inline uint64_t lockstat_lock(pthread_mutex_t* m) noexcept nogil:
    pthread_mutex_lock(m)
    return lockstat_now()

cdef inline void lockstat_unlock(pthread_mutex_t* m, int kind, uint64_t t0) noexcept nogil:
    lockstat_note(kind, t0)
    pthread_mutex_unlock(m)

cdef void lockstat_reset() noexcept nogil:
    cdef int k
    for k in range(LK_KINDS):
        mc_store_u64(&g_lock_stats[k].holds, 0)
        mc_store_u64(&g_lock_stats[k].total_ns, 0)
        mc_store_u64(&g_lock_stats[k].max_ns, 0)
