/*
 * compat.h -- the few things Cython cannot say directly.
 *
 * Relaxed atomics for counters and flags that one thread writes and others read
 * (stats, the clock, the shutdown flag), branch hints, and a portable
 * "pause" for spin loops. Everything here is a macro or static inline so that it
 * costs nothing on the hot path.
 */
#ifndef MEMCACHEPY_COMPAT_H
#define MEMCACHEPY_COMPAT_H

#include <stdint.h>
#include <stddef.h>

#define MC_LIKELY(x)   __builtin_expect(!!(x), 1)
#define MC_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* 64-bit counters: relaxed loads and stores keep TSan quiet and compile to plain movs. */
#define mc_load_u64(p)        __atomic_load_n((p), __ATOMIC_RELAXED)
#define mc_store_u64(p, v)    __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define mc_load_u32(p)        __atomic_load_n((p), __ATOMIC_RELAXED)
#define mc_store_u32(p, v)    __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define mc_load_int(p)        __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define mc_store_int(p, v)    __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define mc_load_i64(p)        __atomic_load_n((p), __ATOMIC_RELAXED)
#define mc_store_i64(p, v)    __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define mc_fetch_add_u64(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)
#define mc_fetch_add_i64(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)

/* Single-writer counter bump: only the owning thread writes, others may read. */
#define mc_stat_add(p, v)     __atomic_store_n((p), __atomic_load_n((p), __ATOMIC_RELAXED) + (v), __ATOMIC_RELAXED)

/* CAS ids come in batches (settings.pxi next_cas_above): each thread keeps the
 * rest of the range it took from the global counter, so with several workers
 * the counter's cache line is written once per batch, not once per store.
 * `gen` voids batches taken before the counter was (re)set. A batch is given
 * up early when its next id is not above `floor` (the item's old CAS, or the
 * flush horizon): a fresh batch is above every id handed out so far. */
typedef struct { uint64_t next, end, gen; } mc_cas_batch_t;
/* The global counter on a cache line of its own: the workers read their
 * neighbours in .bss (the shutdown flag, the memory limit) on every request. */
static struct { uint64_t v; char pad[56]; } __attribute__((aligned(64))) mc_cas_counter;
static __thread mc_cas_batch_t mc_cas_batch;

static inline uint64_t mc_cas_take(uint64_t *global, uint64_t n, uint64_t gen, uint64_t floor) {
    uint64_t c = mc_cas_batch.next;
    if (MC_UNLIKELY(c >= mc_cas_batch.end || c <= floor || mc_cas_batch.gen != gen)) {
        uint64_t top = mc_fetch_add_u64(global, n);
        c = top - n + 1;
        mc_cas_batch.end = top + 1;
        mc_cas_batch.gen = gen;
    }
    mc_cas_batch.next = c + 1;
    return c;
}

/* Which thread runs: worker i (0..5), the acceptor (6), anything else (7).
 * Only the write-tracking build (below) looks at it. */
static __thread int mc_tw_slot = 7;
#define MC_TW_SLOTS 8
#define mc_track_thread(slot) (mc_tw_slot = ((slot) < 0 || (slot) > 6) ? 7 : (slot))

#if defined(MEMCACHEPY_TRACK_WRITES)
#include "track_writes.h"
#else
#define mc_track_start() ((void)0)
#define mc_track_stop() ((void)0)
#define mc_track_dump(path) (-1)
#define mc_track_enabled() (0)
#endif

/* Prefetch the hash-table bucket a key with bucket hash `hv` will be looked up
 * in, before its shard's lock is taken (a multiget's next key while this one
 * is served). The table's address and size are read without the lock: a
 * doubling may swap them meanwhile, and then a wrong line is fetched, which
 * costs nothing but the fetch; assoc_expand stores them atomically. */
#define mc_prefetch_bucket(bucketsp, hashpowerp, hv) \
    __builtin_prefetch((char *)__atomic_load_n((void **)(bucketsp), __ATOMIC_RELAXED) + \
        sizeof(void *) * ((hv) & ((1u << __atomic_load_n((hashpowerp), __ATOMIC_RELAXED)) - 1)), 0, 3)
#define mc_store_ptr(p, v)    __atomic_store_n((void **)(p), (void *)(v), __ATOMIC_RELAXED)

/* The chunk stash of the worker running this thread (slabs.pxi slab_cache_t);
 * NULL in every other thread, whose allocations go to the slab classes. */
static __thread void *mc_slab_cache_self = NULL;

/* The page being emptied by the page mover: written under g_slabs_lock, read
 * by workers under their stash lock only. */
#define mc_load_page(p)       __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define mc_store_page(p, v)   __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* The socket of the request a worker thread is serving, for log lines
 * (memcached's cfd=) emitted deep inside store functions. */
static __thread int mc_current_fd = -1;

#if defined(MEMCACHEPY_DEBUG)
#include <assert.h>
#define mc_assert(x) assert(x)
#else
#define mc_assert(x) ((void)0)
#endif

#endif
