# memcachepy_core.pxd -- declarations for the compiled core of memcachepy.
#
# This file declares; the .pxi fragments included by _core.pyx implement.
# It holds the C-level types every subsystem shares (settings, items, slab
# classes, shards, connections, workers, per-thread stats) and the system calls
# the hot path makes. Nothing here touches Python objects, so every function that
# uses these types can run with the GIL released.
#
# ---------------------------------------------------------------- locks
# Every mutex of the core, what it guards, and every nesting (A -> B: B is
# taken while A is held). Nothing else nests; no lock is held across a system
# call that can block (recv/send/epoll_wait).
#
#   shard.lock (store.pxi)   one shard's hash table, LRU lists (heads/tails),
#                            lru_stats_t, curr/total items, bytes, and every
#                            field of the items linked in it. A request takes
#                            exactly one; `do_` functions expect it held.
#   g_slabs_lock (slabs.pxi) slab classes: free lists, pages, requested/used
#                            counters, the memory limit, the page being moved.
#   worker.sc.lock           one worker's stash of free chunks per class
#     (slabs.pxi)            (slab_cache_t): its lists and counts. Taken by
#                            the worker on each alloc/free, by another worker
#                            taking a chunk from it when its class is empty
#                            elsewhere, and by the page mover; uncontended
#                            in steady state, so a set writes no shared line.
#   g_crawler_lock           that one crawl walks at a time (manual
#     (crawler.pxi)          `lru_crawler crawl` or scheduled); the schedule
#                            itself belongs to the acceptor thread.
#   g_log_lock (logger.pxi)  watchers and their buffers.
#   g_prefix_lock (stats.pxi) the `stats detail` prefix table.
#   g_cluster_lock           the cluster node list and its version.
#     (cluster.pxi)
#   worker.lock (thread.pxi) a worker's new-connection queue and conn list.
#   worker.hk.lock           one worker's hot-key summary (its sampled
#     (hotkeys.pxi)          update and `stats hotkeys` readers only).
#   g_ssl_lock (tls.pxi)     the current SSL_CTX pointer (swapped by
#                            `refresh_certs`, read by a new TLS conn).
#   g_clock_lock             clock_tick() against clock_advance() (the
#     (settings.pxi)         test hook) and g_time_offset.
#
# Edges (the only ones):
#   shard -> slabs        item allocation/free under the shard lock
#                         (slabs_alloc, slabs_alloc_chunk, slabs_free).
#   shard -> worker.sc -> slabs   the same through a worker's chunk stash
#                         (refills and drains in batches under slabs). Never
#                         two stash locks at once: a worker gives up its own
#                         before taking a chunk from another's.
#   shard -> other shard  trylock only (eviction from another shard and the
#                         LRU maintainer pass in lru.pxi), so never a deadlock.
#   shard -> log          fetchers/evictions are logged under the shard lock.
#   shard -> prefix       `get` records its prefix stats under the shard lock
#                         (set/delete record before taking it).
#   shard -> hotkeys      a sampled get (text and meta) is noted under the
#                         shard lock (other commands note before taking it).
#   crawler -> shard      a crawl walks each shard under that shard's lock
#                         (and so -> slabs, -> log below it); the crawler
#                         lock itself is only ever trylock'ed.
# The page mover (slabs_rebalance.pxi) takes slabs and shard locks one after
# the other, never nested the other way: a chunk is examined with only its
# shard lock held, then slabs for the rescue allocation (shard -> slabs).
# The page mover takes each stash lock in turn (-> slabs) to pull chunks of
# the page being emptied out of the stashes.
# Leaf locks (nothing taken under them): slabs, log, prefix, cluster, worker,
# hotkeys (a hot-key sample is logged after its lock is released), ssl, clock.
# `stats` and the dumps take shard locks one at a time, then slabs, unnested.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t

cdef extern from "compat.h" nogil:
    bint MC_LIKELY(bint)
    bint MC_UNLIKELY(bint)
    uint64_t mc_load_u64(uint64_t*)
    void mc_store_u64(uint64_t*, uint64_t)
    uint32_t mc_load_u32(uint32_t*)
    void mc_store_u32(uint32_t*, uint32_t)
    int mc_load_int(int*)
    void mc_store_int(int*, int)
    int64_t mc_load_i64(int64_t*)
    void mc_store_i64(int64_t*, int64_t)
    uint64_t mc_fetch_add_u64(uint64_t*, uint64_t)
    int64_t mc_fetch_add_i64(int64_t*, int64_t)
    void mc_stat_add(uint64_t*, uint64_t)
    void mc_assert(bint)
    uint64_t mc_cas_take(uint64_t*, uint64_t, uint64_t, uint64_t)
    uint64_t g_cas_id "mc_cas_counter.v"   # settings.pxi: the CAS counter
    void mc_track_thread(int)          # write-tracking build only (track_writes.h)
    void mc_track_start()
    void mc_track_stop()
    int mc_track_dump(const char*)
    bint mc_track_enabled()
    int mc_current_fd
    void* g_tl_slab_cache "mc_slab_cache_self"   # the running worker's slab_cache_t, NULL elsewhere
    char* mc_load_page(char**)
    void mc_prefetch_bucket(void*, uint32_t*, uint32_t)
    void mc_store_ptr(void*, void*)
    void mc_store_page(char**, char*)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t*, const pthread_mutexattr_t*)
    int pthread_mutex_destroy(pthread_mutex_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_trylock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int)
    int epoll_ctl(int, int, int, epoll_event*)
    int epoll_wait(int, epoll_event*, int, int)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int, int)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef extern from "<sys/socket.h>" nogil:
    ctypedef uint32_t socklen_t
    cdef struct sockaddr:
        unsigned short sa_family
    cdef struct sockaddr_storage:
        unsigned short ss_family
    ssize_t recv(int, void*, size_t, int)
    ssize_t send(int, const void*, size_t, int)
    int accept4(int, sockaddr*, socklen_t*, int)
    int shutdown(int, int)
    int getsockname(int, sockaddr*, socklen_t*)
    int getpeername(int, sockaddr*, socklen_t*)
    int setsockopt(int, int, int, const void*, socklen_t)
    enum:
        MSG_NOSIGNAL
        MSG_DONTWAIT
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        AF_INET
        AF_INET6
        AF_UNIX
        SHUT_RDWR
        SHUT_WR
        IPPROTO_TCP
    cdef struct iovec "iovec":
        void* iov_base
        size_t iov_len
    cdef struct msghdr "msghdr":
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    ssize_t sendmsg(int, const msghdr*, int)

cdef extern from "<sys/uio.h>" nogil:
    pass

cdef extern from "<limits.h>" nogil:
    enum:
        IOV_MAX

cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY

cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        uint32_t s_addr
    cdef struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    uint16_t ntohs(uint16_t)

cdef extern from "<sys/un.h>" nogil:
    cdef struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]

cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int, const void*, char*, socklen_t)

cdef extern from "<unistd.h>" nogil:
    int close(int)
    ssize_t read(int, void*, size_t)
    ssize_t write(int, const void*, size_t)
    int getpid()

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EAGAIN
        EWOULDBLOCK
        EINTR
        EMFILE
        ENFILE

cdef extern from "<signal.h>" nogil:
    int kill(int, int)
    enum:
        SIGINT
        SIGUSR1

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int, timespec*)
    enum:
        CLOCK_REALTIME
        CLOCK_MONOTONIC

cdef extern from "<sys/resource.h>" nogil:
    cdef struct timeval:
        time_t tv_sec
        long tv_usec
    cdef struct rusage:
        timeval ru_utime
        timeval ru_stime
    int getrusage(int, rusage*)
    enum:
        RUSAGE_SELF

cdef extern from "<stdio.h>" nogil:
    ctypedef struct FILE
    FILE* stderr
    int fprintf(FILE*, const char*, ...)
    int fflush(FILE*)
    size_t fwrite(const void*, size_t, size_t, FILE*)


# ---------------------------------------------------------------- limits
cdef enum:
    KEY_MAX_LENGTH = 250
    MAX_TOKENS = 24
    MC_MAX_CLASSES = 64            # memcached's MAX_NUMBER_OF_SLAB_CLASSES
    MAX_SLAB_CLASSES = 66          # memcached's 64 and room (LRU arrays are sized by it)
    SLAB_PAGE_SIZE = 1048576       # 1 MiB pages, as memcached
    CHUNK_ALIGN_BYTES = 8
    REALTIME_MAXDELTA = 2592000    # 30 days: relative vs absolute exptime
    ITEM_UPDATE_INTERVAL = 60      # min seconds between LRU relinks of one item
    LARGE_LINE = 2048              # no newline within this many bytes: not a command
    WBUF_HIGH = 262144             # stop parsing input while this much output waits
    SPARE_WBUF_MAX = 65536         # larger write buffers are freed, not kept as a spare
    RBUF_INITIAL = 16384
    SPOOL_MIN = 65536              # data blocks at least this big arrive in slab memory
    READ_CHUNK = 16384
    MAX_SHARDS = 256

ctypedef uint32_t rel_time_t

# ---------------------------------------------------------------- items
# Item flags (it_flags). LINKED: in hash table + LRU. FETCHED: read since stored.
# ACTIVE: read since last LRU pass (second chance before eviction).
# STALE / TOKEN_SENT: meta-protocol invalidation and recache-token state.
# KEY_BINARY: the key arrived base64-encoded (meta 'b') and is reported that way.
cdef enum:
    ITEM_LINKED = 1
    ITEM_FETCHED = 2
    ITEM_ACTIVE = 4
    ITEM_STALE = 8
    ITEM_TOKEN_SENT = 16
    ITEM_KEY_BINARY = 32

# An item no larger than slab_chunk_max is one chunk: this header, then the
# key, then the value with its trailing "\r\n" (a hit is one memcpy of
# data+CRLF into the reply). A larger one is chunked, as memcached's: this
# header and key in a small chunk, followed (8-aligned) by an item_chain_t,
# and the value in a chain of item_chunk_t from the ordinary classes
# (items.pxi). Whether an item is chunked follows from its shape alone
# (item_chunked: key, flags and value length), so no flag bit is spent on it.
cdef struct item_t:
    item_t* next          # LRU toward head
    item_t* prev          # LRU toward tail
    item_t* h_next        # hash-bucket chain: a tagged link, read it through assoc_ptr (assoc.pxi)
    uint64_t cas
    uint32_t hv           # upper 32 bits of the key hash: bucket index on rehash
    rel_time_t time       # last access or update
    rel_time_t exptime    # 0 = never
    uint32_t nbytes       # value length including the trailing CRLF
    uint32_t flags        # client flags
    uint16_t it_flags
    uint8_t slabs_clsid
    uint8_t nkey

# A chunk of a chunked item's value. Laid over item_t so the page mover, which
# reads every chunk of a page as an item header, tells them apart: `magic`
# sits where item_t.cas is and `zero` where item_t.nbytes is (never 0 in an
# item, which always holds at least its CRLF). magic is CHUNK_MAGIC only while
# the chunk is in a chain: slabs.pxi clears it whenever a chunk is handed out
# or freed, under g_slabs_lock, and chains are linked and freed under it.
cdef struct item_chunk_t:
    item_chunk_t* next    # toward the end of the value
    item_chunk_t* prev    # toward the start (NULL for the first chunk)
    item_t* head          # the header item owning the chain
    uint64_t magic
    uint32_t size         # value bytes this chunk holds when full
    uint32_t used         # value bytes it holds
    uint32_t clsid        # its slab class
    uint32_t zero

# Follows the key (8-aligned) in a chunked item's header chunk.
cdef struct item_chain_t:
    item_chunk_t* first
    uint32_t hdr_clsid    # the header chunk's own class (slabs_clsid is the LRU's)
    uint32_t nchunks
    uint32_t refcount     # replies in flight sending from the chain (conn.pxi);
                          # read and written only under the item's shard lock
    uint32_t pad

# ---------------------------------------------------------------- slabs
cdef struct slabclass_t:
    uint32_t size         # chunk size
    uint32_t perslab      # chunks per page
    void* slots           # free list of chunks
    uint64_t sl_curr      # free chunks on the list
    char* end_page_ptr    # next never-used chunk of the newest page
    uint64_t end_page_free
    uint64_t slabs        # pages owned
    void** slab_list      # every page, so they can be freed at exit
    uint64_t list_size
    uint64_t requested    # bytes asked for by live items (mem_requested)
    uint64_t used_chunks

# A worker's stash of free chunks for one class (slabs.pxi). Chunks in a
# stash count as used in g_slabclass (they left its free list) and as free
# in every number a client sees: stats subtract `count` again.
cdef struct slab_cache_class_t:
    void* head            # free chunks, linked through their first word
    uint32_t count        # chunks on `head` (stores under the stash lock, relaxed reads)
    uint32_t batch        # chunks a refill takes / a drain gives back (from perslab)
    uint64_t requested    # this worker's share of mem_requested (only the worker writes it)
    uint64_t _pad

cdef struct slab_cache_t:
    pthread_mutex_t lock
    char _pad0[24]
    slab_cache_class_t cls[66]

# ---------------------------------------------------------------- per-class LRU stats (kept per shard)
# The first fields (about one cache line) are the ones every store touches;
# the event counters after them only change on evictions and moves.
cdef struct lru_stats_t:
    uint64_t number           # items linked in this class
    uint64_t seg_number[4]    # items in HOT, WARM, COLD, TEMP (lru.pxi)
    uint64_t seg_bytes[4]     # their sizes, for the HOT/WARM limits
    uint64_t moves_to_cold
    uint64_t evicted
    uint64_t evicted_nonzero
    uint64_t evicted_time     # age of the last evicted item
    uint64_t outofmemory
    uint64_t reclaimed
    uint64_t expired_unfetched
    uint64_t evicted_unfetched
    uint64_t evicted_active
    uint64_t moves_within_lru
    uint64_t moves_to_warm
    uint64_t crawler_reclaimed      # crawler.pxi
    uint64_t crawler_items_checked
    uint64_t direct_reclaims        # items.pxi: LRU pulls by a storing thread
    uint64_t lrutail_reflocked      # tail items met while a reply held a reference

# ---------------------------------------------------------------- shards
# A shard owns a slice of the key space: its hash table, its LRU lists (HOT,
# WARM and COLD per slab class) and the counters that change with them, all
# under one mutex. What every request touches comes first (lock, table, item
# counters: two cache lines), then the lists and per-class counters.
cdef struct shard_t:
    pthread_mutex_t lock
    item_t** buckets
    uint32_t hashpower
    uint64_t hash_items
    uint64_t curr_items
    uint64_t total_items
    uint64_t bytes
    uint64_t expand_count
    item_t** old_buckets      # while the table doubles: the old half-size table (assoc.pxi)
    uint64_t expand_bucket    # ...and the first of its buckets not yet moved over
    item_t* heads[264]        # per class and segment: [clsid * 4 + seg] (lru.pxi lru_idx)
    item_t* tails[264]
    lru_stats_t lru[66]
    char _pad[64]

# ---------------------------------------------------------------- per-thread stats
cdef struct slab_thread_stats_t:
    uint64_t get_hits
    uint64_t set_cmds
    uint64_t delete_hits
    uint64_t incr_hits
    uint64_t decr_hits
    uint64_t cas_hits
    uint64_t cas_badval
    uint64_t touch_hits
    uint64_t lru_hits[4]      # hits to items in HOT, WARM, COLD, TEMP (hits_to_*)

cdef struct thread_stats_t:
    uint64_t get_cmds
    uint64_t get_misses
    uint64_t get_expired
    uint64_t get_flushed
    uint64_t touch_cmds
    uint64_t touch_misses
    uint64_t delete_misses
    uint64_t incr_misses
    uint64_t decr_misses
    uint64_t cas_misses
    uint64_t flush_cmds
    uint64_t meta_cmds
    uint64_t bytes_read
    uint64_t bytes_written
    uint64_t conn_yields
    uint64_t store_too_large
    uint64_t store_no_memory
    uint64_t idle_kicks
    uint64_t auth_cmds
    uint64_t auth_errors
    uint64_t response_obj_oom # conn.pxi: memcached's response-object budget refused
    uint64_t read_buf_oom     # conn.pxi: a conn found no read buffer in the budget (closed)
    slab_thread_stats_t slab[66]

# ---------------------------------------------------------------- connections
cdef enum conn_state_t:
    CONN_READ = 0       # parsing commands from rbuf
    CONN_SWALLOW = 1    # discarding the data block of a refused store
    CONN_CLOSING = 2    # close as soon as the output is flushed (or now)
    CONN_WATCH = 3      # hand the socket to the logger once the output is flushed

# A piece of a reply sent straight from a chunked item's chain: `len` value
# bytes from value offset `off`. The conn holds a reference on the item
# (item_chain_t.refcount, under `shard`'s lock) until the piece has been sent
# or the conn drops it.
cdef struct conn_seg_t:
    size_t woff
    item_t* it
    shard_t* shard
    size_t off
    size_t len

cdef struct conn_t:
    int fd
    int state
    int listen_kind      # 0 tcp, 1 unix
    bint noreply
    bint close_after_write
    bint want_write      # registered for EPOLLOUT
    bint close_now       # drop without flushing (protocol violation)
    char* rbuf
    size_t rsize
    size_t rstart        # first unparsed byte
    size_t rend          # end of data
    size_t rneed         # bytes (from rstart) the current command needs
    char* wbuf
    size_t wsize
    size_t wlen
    size_t wsent
    uint64_t swallow
    size_t get_resume    # offset in the current line where a paused multiget resumes
    int watch_flags      # what a `watch` connection asked to see
    item_t* spool        # a large data block still arriving (conn.pxi)
    item_t* spool_ready  # set/add/...: the item itself, allocated when its line was read
    bint spool_adopt     # spool is that item: the command takes it instead of copying
    char* spool_buf      # a block of another command too large for one chunk: malloc'd
    size_t spool_len
    size_t spool_have
    size_t spool_line
    bint announced       # -vv: "Client using the ascii protocol" printed
    bint authenticated   # -Y: passed the ASCII auth exchange; -S: passed SASL
    int protocol         # proto_bin.pxi PROT_*: negotiating, ascii or binary
    bint sasl_started    # -S: a SASL exchange awaits its step
    size_t wmark         # binary: output memcached would already have written
    bint swallow_carried # a swallow outlived the read that started it (conn.pxi)
    int in_nread         # waiting for a data block (read by `stats conns`: atomics)
    size_t* umarks       # udp: reply-object boundaries in wbuf (udp.pxi)
    uint32_t numarks
    uint32_t umarks_cap
    bint auth_started    # -Y: saw the auth `set` line, waiting for "user pass"
    size_t auth_need
    rel_time_t last_cmd_time
    long long nreqs      # -R: commands this drive may still complete (0: no limit)
    bint new_cmd         # yielded: memcached's next drive starts in conn_new_cmd
    bint cmd_flushed     # the last command is one memcached writes out at once (get, mn)
    bint resp_pending    # memcached would still hold a reply to write (counts for -R)
    bint yielded         # on the worker's yielded list
    conn_t* yield_next
    void* worker
    conn_t* next
    conn_t* prev
    uint32_t resp_count   # this conn's share of worker.resp_count
    bint rbuf_cached      # holds one buffer of the worker's budget (conn.pxi)
    bint resp_started     # the current command took its response object
    size_t resp_wmark     # output queued since memcached's last write-out starts here
    sockaddr_storage peer
    sockaddr_storage local
    uint32_t peer_len
    uint32_t local_len
    void* ssl            # SSL* of a -Z conn (tls.pxi); NULL for plaintext
    bint tls_ready       # handshake done
    bint tls_failed      # fatal TLS error: no close_notify
    bint tls_io_wants_write  # the last SSL call waits for writability
    bint tls_read_blocked    # a read waits for EPOLLOUT (handshake or key update)
    # scatter/gather output (conn.pxi): values of chunked items are sent from
    # their chains; segs[i] goes out just before wbuf[segs[i].woff]
    bint sg_send         # this conn may queue segments (plain TCP/unix, not TLS/UDP)
    conn_seg_t* segs
    uint32_t nsegs       # segments queued
    uint32_t segs_cap
    uint32_t sseg        # first segment not fully sent (the ones before are released)
    size_t sseg_sent     # bytes of segs[sseg] already sent
    size_t seg_left      # bytes of queued segments not sent yet
    uint32_t wmark_segs  # segments queued before wmark
    uint32_t resp_wmark_segs  # segments queued before resp_wmark

# ---------------------------------------------------------------- hot keys
# A worker's sampled heavy hitters (hotkeys.pxi): Space-Saving over the keys of
# one request in `hotkeys_sample`, with a hash index (open addressing) to find
# a key's counter and a min-heap of the counters to find the smallest.
cdef enum:
    HK_ENTRIES = 128
    HK_SLOTS = 256            # hash index slots (a power of two, 2 x HK_ENTRIES)

cdef struct hk_entry_t:
    uint64_t error        # overcount bound: the count the entry took over
    uint64_t gets         # sampled requests of each kind since the key took the entry
    uint64_t hits
    uint64_t sets
    uint64_t others       # delete, incr/decr, touch, md, ma
    uint32_t nkey
    char key[250]

cdef struct hotkeys_t:
    uint64_t countdown        # requests until the next sample (the worker's own)
    pthread_mutex_t lock      # taken by the sampled update and by readers only
    uint32_t used
    uint64_t samples
    uint64_t hashes[128]
    uint64_t counts[128]
    int16_t slot[256]         # hash index: entry number, -1 for a free slot
    uint8_t heap[128]         # entry numbers, heap-ordered by count (smallest first)
    uint8_t heap_pos[128]     # where each entry sits in `heap`
    hk_entry_t* entries       # NULL when sampling is off

# ---------------------------------------------------------------- workers
cdef struct worker_t:
    int id
    int epfd
    int notify_fd
    pthread_mutex_t lock      # guards the new-connection queue and the conn list
    int* pending
    int npending
    int pending_cap
    int* pending_kind
    conn_t* conns
    uint64_t nconns
    conn_t* yielded           # conns that hit -R with input left, resumed after this round
    char* spare_rbuf          # buffers lent to whichever conn runs next (conn.pxi)
    char* spare_wbuf
    size_t spare_wsize
    thread_stats_t stats
    hotkeys_t hk
    uint64_t resp_count       # response objects memcached would hold now (conn.pxi)
    uint64_t resp_bundles     # 16 KB buffers those objects take (memcached keeps the last one)
    uint64_t rbc_total        # memcached's rbuf_cache: buffers made (in use or free)
    uint64_t rbc_free         # ... and of those, on the free list
    uint32_t rbuf_limit       # 16 KB buffers this worker may hold, 0: no limit
    slab_cache_t sc           # free chunks per class, so a store skips g_slabs_lock (slabs.pxi)
    char _pad[64]

# ---------------------------------------------------------------- tokens
cdef struct token_t:
    const char* value     # NULL for the terminal token when the line was fully consumed
    size_t length
