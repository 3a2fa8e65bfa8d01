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
