# thread.pxi -- worker threads, the acceptor thread, and the clock.
#
# Each worker runs worker_loop(): its own epoll set, entered once from Python
# and left only at shutdown, with the GIL released the whole time. The acceptor
# thread (acceptor_loop) owns the listening sockets: it accepts, enforces -c as
# memcached does, and hands each connection to the next worker round-robin
# through the worker's queue and eventfd (one acceptor balances far better than
# workers racing on a shared listener). It also ticks the clock once a second.
#
# Shutdown: stop_all() sets g_shutdown and pokes every eventfd; each loop
# closes what it owns and returns to Python, which joins the threads.

cdef int* g_listen_fds = NULL
cdef int* g_listen_kinds = NULL
cdef int g_acceptor_wake = -1
cdef int g_next_worker = 0
cdef uint64_t g_listen_disabled = 0     # accept() found no free fd (listen_disabled_num)

cdef extern from "<unistd.h>" nogil:
    int usleep(unsigned int)

# Thread names as memcached's (`mc-worker`), so per-thread CPU in /proc or top -H says
# which is which; the acceptor also runs the LRU maintainer (memcached's mc-lrumaint).
cdef extern from *:
    """
    #include <pthread.h>
    static inline void mc_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }
    """
    void mc_thread_name(const char* name) nogil
cdef int g_acceptor_epfd = -1

# Watch a logger socket for hang-ups (logger.pxi hands them over).
cdef void acceptor_watch_fd(int fd) noexcept nogil:
    cdef epoll_event ev
    ev.events = EPOLLIN | EPOLLRDHUP
    ev.data.u64 = (<uint64_t>1 << 32) | <uint32_t>fd
    epoll_ctl(g_acceptor_epfd, EPOLL_CTL_ADD, fd, &ev)
    eventfd_poke(g_acceptor_wake)

cdef int workers_init(int n) noexcept nogil:
    global g_workers, g_nworkers, g_acceptor_wake
    cdef int i
    cdef epoll_event ev
    g_workers = <worker_t*>calloc(n, sizeof(worker_t))
    if g_workers == NULL:
        return -1
    g_nworkers = n
    for i in range(n):
        g_workers[i].id = i
        g_workers[i].epfd = epoll_create1(EPOLL_CLOEXEC)
        g_workers[i].notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if g_workers[i].epfd < 0 or g_workers[i].notify_fd < 0:
            return -1
        pthread_mutex_init(&g_workers[i].lock, NULL)
        hotkeys_init(&g_workers[i].hk)
        slabs_stash_init(&g_workers[i].sc)
        g_workers[i].pending_cap = 64
        g_workers[i].rbuf_limit = resp_rbuf_limit(n)
        g_workers[i].pending = <int*>malloc(64 * sizeof(int))
        g_workers[i].pending_kind = <int*>malloc(64 * sizeof(int))
        ev.events = EPOLLIN
        ev.data.ptr = NULL
        epoll_ctl(g_workers[i].epfd, EPOLL_CTL_ADD, g_workers[i].notify_fd, &ev)
    g_acceptor_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    return 0

cdef void workers_destroy() noexcept nogil:
    global g_workers, g_nworkers, g_acceptor_wake
    cdef int i
    if g_workers == NULL:
        return
    for i in range(g_nworkers):
        close(g_workers[i].epfd)
        close(g_workers[i].notify_fd)
        free(g_workers[i].pending)
        free(g_workers[i].pending_kind)
        pthread_mutex_destroy(&g_workers[i].lock)
        pthread_mutex_destroy(&g_workers[i].sc.lock)
        hotkeys_destroy(&g_workers[i].hk)
    free(g_workers)
    g_workers = NULL
    g_nworkers = 0
    if g_acceptor_wake >= 0:
        close(g_acceptor_wake)
        g_acceptor_wake = -1

cdef inline void eventfd_poke(int fd) noexcept nogil:
    cdef uint64_t one = 1
    write(fd, &one, 8)

cdef inline void eventfd_drain(int fd) noexcept nogil:
    cdef uint64_t v
    read(fd, &v, 8)

# Hand a new connection to a worker (acceptor thread).
cdef void dispatch_conn_new(int fd, int kind) noexcept nogil:
    global g_next_worker
    cdef worker_t* w = &g_workers[g_next_worker]
    cdef int* np
    cdef int* nk
    g_next_worker = (g_next_worker + 1) % g_nworkers
    cdef lock_hold_t t0 = lockstat_lock(&w.lock)
    if w.npending == w.pending_cap:
        np = <int*>realloc(w.pending, w.pending_cap * 2 * sizeof(int))
        nk = <int*>realloc(w.pending_kind, w.pending_cap * 2 * sizeof(int))
        if np != NULL:
            w.pending = np
        if nk != NULL:
            w.pending_kind = nk
        if np == NULL or nk == NULL:
            lockstat_unlock(&w.lock, LK_HANDOFF, t0)
            close(fd)
            mc_fetch_add_u64(&g_curr_conns, <uint64_t>-1)
            return
        w.pending_cap *= 2
    w.pending[w.npending] = fd
    w.pending_kind[w.npending] = kind
    w.npending += 1
    lockstat_unlock(&w.lock, LK_HANDOFF, t0)
    eventfd_poke(w.notify_fd)

cdef void worker_take_pending(worker_t* w) noexcept nogil:
    cdef int fds[64]
    cdef int kinds[64]
    cdef int n
    cdef int i
    while True:
        pthread_mutex_lock(&w.lock)
        n = w.npending if w.npending < 64 else 64
        for i in range(n):
            fds[i] = w.pending[w.npending - 1 - i]
            kinds[i] = w.pending_kind[w.npending - 1 - i]
        w.npending -= n
        pthread_mutex_unlock(&w.lock)
        if n == 0:
            return
        for i in range(n):
            if conn_new(w, fds[i], kinds[i]) == NULL:
                mc_fetch_add_u64(&g_curr_conns, <uint64_t>-1)

cdef void worker_idle_sweep(worker_t* w) noexcept nogil:
    cdef conn_t* c = w.conns
    cdef conn_t* nxt
    cdef rel_time_t now = current_time()
    while c != NULL:
        nxt = c.next
        if now - c.last_cmd_time > <rel_time_t>g_settings.idle_timeout and not c.want_write \
                and c.listen_kind != LISTEN_KIND_UDP:
            mc_stat_add(&w.stats.idle_kicks, 1)
            conn_close_reason(c, 2)
        c = nxt

# Conns that hit -R with input left get their next turn here, after every
# conn that was ready in this round; one that yields again waits for the next.
cdef void worker_resume_yielded(worker_t* w) noexcept nogil:
    cdef conn_t* c = w.yielded
    cdef conn_t* nxt
    w.yielded = NULL
    while c != NULL:
        nxt = c.yield_next
        c.yielded = False
        c.yield_next = NULL
        if not c.want_write:
            conn_drive_start(c, False)
            if conn_drive(c):
                conn_rbuf_release(c)
                if c.ssl != NULL and not c.yielded and not c.want_write and tls_pending(c):
                    conn_on_readable(c)
        c = nxt

cdef inline int64_t worker_now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec

# Nothing was ready: wait for the next event. With -o busy_poll_us=N the
# worker first polls without sleeping for up to N microseconds: a wake-up costs
# more than the requests it serves at low rates, but polling only pays where
# requests come closer together than N (bench/README.md, bench/fixedrate: off
# by default because it lost on loopback). The blocking wait has no timeout
# unless idle conns must be swept: a stop or a new conn pokes the eventfd, and
# a timer would have nothing to do.
cdef int worker_wait(worker_t* w, epoll_event* events, int maxev) noexcept nogil:
    cdef int n = 0
    cdef int64_t until
    if g_settings.busy_poll_us > 0:
        until = worker_now_ns() + <int64_t>g_settings.busy_poll_us * 1000
        while True:
            n = epoll_wait(w.epfd, events, maxev, 0)
            if n != 0 or worker_now_ns() >= until:
                break
        if n != 0:
            return n
    return epoll_wait(w.epfd, events, maxev, 1000 if g_settings.idle_timeout > 0 else -1)

cdef void worker_loop(worker_t* w) noexcept nogil:
    cdef epoll_event events[256]
    cdef int n
    cdef int i
    cdef conn_t* c
    cdef uint32_t ev
    cdef rel_time_t last_sweep = current_time()
    n = 0
    global g_tl_slab_cache
    mc_thread_name(b"mc-worker")
    mc_track_thread(w.id if w.id < 6 else 7)
    g_tl_slab_cache = &w.sc         # this thread's stores use the worker's chunk stash
    udp_conns_open(w)
    while not mc_load_int(&g_shutdown):
        # Conns that yielded (-R) still have input: look without sleeping, then
        # give them their turn. Otherwise block at once, even after a busy round:
        # epoll_wait returns at once when something is ready, so a poll first was
        # one more system call per round (1.33 epoll_wait per request against
        # memcached's 0.92 at 10k req/s, depth 1, strace -c).
        if w.yielded != NULL:
            n = epoll_wait(w.epfd, events, 256, 0)
        else:
            n = worker_wait(w, events, 256)
        for i in range(n):
            c = <conn_t*>events[i].data.ptr
            if c == NULL:
                eventfd_drain(w.notify_fd)
                worker_take_pending(w)
                continue
            ev = events[i].events
            if c.listen_kind == LISTEN_KIND_UDP:
                udp_on_readable(c)
                continue
            if c.want_write:
                if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                    conn_on_writable(c)
            elif ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and not c.yielded:
                # a yielded conn reads again only once its buffered input is
                # answered (as memcached): an EOF behind it must not drop it
                conn_on_readable(c)
        if w.yielded != NULL:
            worker_resume_yielded(w)
        if g_settings.idle_timeout > 0 and current_time() != last_sweep:
            last_sweep = current_time()
            worker_idle_sweep(w)
    # shutdown: drop every connection this worker owns
    worker_take_pending(w)
    while w.conns != NULL:
        c = w.conns
        conn_flush(c)
        conn_close_reason(c, 3)
    free(w.spare_rbuf)
    free(w.spare_wbuf)
    w.spare_rbuf = NULL
    w.spare_wbuf = NULL
    slabs_stash_flush(&w.sc)
    g_tl_slab_cache = NULL

cdef void acceptor_loop(int nlisteners) noexcept nogil:
    global g_acceptor_epfd
    cdef int epfd = epoll_create1(EPOLL_CLOEXEC)
    cdef rel_time_t last_automove = current_time()
    cdef bint maintainer = g_settings.lru_maintainer
    cdef int64_t maint_last = worker_now_ns()
    cdef int64_t maint_due = maint_last
    cdef int64_t now_ns
    cdef int64_t rem
    cdef int timeout
    cdef rel_time_t last_crawler_check = 0
    cdef char drain[256]
    cdef epoll_event ev
    cdef epoll_event events[16]
    cdef int i
    cdef int n
    cdef int j
    cdef int fd
    cdef int lfd
    cdef int kind
    cdef uint64_t reserved = <uint64_t>(5 * g_nworkers + 3 + nlisteners)
    cdef const char* msg = b"ERROR Too many open connections\r\n"
    mc_thread_name(b"mc-acceptor")
    mc_track_thread(6)
    for i in range(nlisteners):
        ev.events = EPOLLIN
        ev.data.u64 = <uint64_t>i
        epoll_ctl(epfd, EPOLL_CTL_ADD, g_listen_fds[i], &ev)
    ev.events = EPOLLIN
    ev.data.u64 = <uint64_t>0xFFFFFFFFU
    epoll_ctl(epfd, EPOLL_CTL_ADD, g_acceptor_wake, &ev)
    g_acceptor_epfd = epfd
    while not mc_load_int(&g_shutdown):
        # watchers are fed every 20 ms; otherwise wake 4 times a second for the clock
        # (1 ms while the automover reclaims pages to the global pool), and when the
        # LRU maintainer's schedule says (lru_maintainer_tick: 1 ms .. 1 s, memcached's).
        # epoll counts in milliseconds: a due time within half of one is due now.
        timeout = 1 if g_automove_hurry else (20 if mc_load_int(&g_nwatchers) else 250)
        if maintainer:
            rem = maint_due - worker_now_ns()
            if rem <= 500000:
                timeout = 0
            elif rem < <int64_t>timeout * 1000000:
                timeout = <int>((rem + 500000) // 1000000)
        n = epoll_wait(epfd, events, 16, timeout)
        clock_tick()
        if maintainer:
            now_ns = worker_now_ns()
            if now_ns + 500000 >= maint_due:
                maint_due = now_ns + <int64_t>lru_maintainer_tick(
                    <uint64_t>(now_ns - maint_last) // 1000) * 1000
                maint_last = now_ns
        # hash tables still doubling move their buckets here too, in short holds
        # (memcached's assoc maintenance thread); nothing to do and no lock taken
        # while no table doubles
        assoc_expand_run()
        if current_time() != last_crawler_check:
            last_crawler_check = current_time()
            crawler_check()
        slabs_automove_tick()
        if mc_load_int(&g_rebal_signal) == 1:
            slabs_rebalance_run()
        if current_time() != last_automove or g_automove_hurry:
            last_automove = current_time()
            slab_automove_tick()
            if mc_load_int(&g_rebal_signal) == 1:
                slabs_rebalance_run()
        if mc_load_int(&g_nwatchers):
            logger_flush(-1)
        for j in range(n):
            if events[j].data.u64 == <uint64_t>0xFFFFFFFFU:
                eventfd_drain(g_acceptor_wake)
                continue
            if events[j].data.u64 >> 32:
                fd = <int>(events[j].data.u64 & 0xFFFFFFFFU)
                if recv(fd, drain, sizeof(drain), MSG_DONTWAIT) <= 0 or events[j].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL)
                    logger_flush(fd)
                continue
            lfd = g_listen_fds[events[j].data.u64]
            kind = g_listen_kinds[events[j].data.u64]
            while True:
                fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
                if fd < 0:
                    if errno == EMFILE or errno == ENFILE:
                        # Out of fds: the pending connection stays in the backlog and
                        # the level-triggered listener would wake us at once, forever.
                        # Back off (memcached stops listening until a conn closes).
                        mc_fetch_add_u64(&g_listen_disabled, 1)
                        usleep(10000)
                    break
                if g_settings.maxconns_fast and \
                        mc_load_u64(&g_curr_conns) + reserved >= <uint64_t>(g_settings.maxconns - 1):
                    send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT)
                    close(fd)
                    mc_fetch_add_u64(&g_rejected_conns, 1)
                    continue
                mc_fetch_add_u64(&g_curr_conns, 1)
                mc_fetch_add_u64(&g_total_conns, 1)
                if mc_load_u64(&g_curr_conns) + <uint64_t>nlisteners > mc_load_u64(&g_conn_structures):
                    mc_store_u64(&g_conn_structures, mc_load_u64(&g_curr_conns) + <uint64_t>nlisteners)
                dispatch_conn_new(fd, kind)
    logger_close_all()
    g_acceptor_epfd = -1
    close(epfd)

cdef void stop_all() noexcept nogil:
    cdef int i
    mc_store_int(&g_shutdown, 1)
    if g_acceptor_wake >= 0:
        eventfd_poke(g_acceptor_wake)
    for i in range(g_nworkers):
        eventfd_poke(g_workers[i].notify_fd)
