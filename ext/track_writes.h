/*
 * track_writes.h -- which cache lines does each thread write? (a measuring build only)
 *
 * Included by compat.h only when MEMCACHEPY_TRACK_WRITES is defined, which
 * bench/false_sharing does for a build of its own with clang's
 * -fsanitize-coverage=trace-pc-guard,trace-stores: the compiler then calls
 * __sanitizer_cov_storeN(addr) before every store the core makes. Atomic
 * read-modify-writes (mc_fetch_add_*) and the mutexes (pthread_mutex_lock,
 * _trylock, _unlock write the lock word inside libc, which is not
 * instrumented) are counted here by wrapping them. Between mc_track_start()
 * and mc_track_stop() every store is counted per 64-byte line and per thread
 * slot (compat.h mc_tw_slot: worker 0..5, acceptor 6, other 7);
 * mc_track_dump() writes the table for bench/false_sharing to analyse. Stores
 * libc makes for us (memcpy into items and buffers) are not seen.
 *
 * Locking: one spin lock around the table (the measuring build is slow by
 * design; counts are what matter). Nothing here is compiled into the daemon.
 */
#ifndef MEMCACHEPY_TRACK_WRITES_H
#define MEMCACHEPY_TRACK_WRITES_H

#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MC_TW_NOCOV __attribute__((no_sanitize("coverage"), noinline, unused))
#define MC_TW_TABLE (1u << 20)

typedef struct {
    uintptr_t line;                 /* address >> 6; 0 = free */
    uint64_t writes[MC_TW_SLOTS];
} mc_tw_entry_t;

static mc_tw_entry_t *mc_tw_table = NULL;
static int mc_tw_on = 0;
static int mc_tw_spin = 0;
static uint64_t mc_tw_dropped = 0;

MC_TW_NOCOV static void mc_tw_record(const void *addr) {
    uintptr_t line;
    uint32_t h;
    if (!__atomic_load_n(&mc_tw_on, __ATOMIC_RELAXED))
        return;
    line = ((uintptr_t)addr) >> 6;
    h = (uint32_t)((line * 0x9E3779B97F4A7C15ull) >> 44) & (MC_TW_TABLE - 1);
    while (__atomic_exchange_n(&mc_tw_spin, 1, __ATOMIC_ACQUIRE))
        ;
    for (uint32_t i = 0; i < MC_TW_TABLE; i++) {
        mc_tw_entry_t *e = &mc_tw_table[(h + i) & (MC_TW_TABLE - 1)];
        if (e->line == line || e->line == 0) {
            e->line = line;
            e->writes[mc_tw_slot]++;
            __atomic_store_n(&mc_tw_spin, 0, __ATOMIC_RELEASE);
            return;
        }
    }
    mc_tw_dropped++;
    __atomic_store_n(&mc_tw_spin, 0, __ATOMIC_RELEASE);
}

MC_TW_NOCOV static void mc_track_start(void) {
    if (mc_tw_table == NULL)
        mc_tw_table = (mc_tw_entry_t *)calloc(MC_TW_TABLE, sizeof(mc_tw_entry_t));
    else
        memset(mc_tw_table, 0, MC_TW_TABLE * sizeof(mc_tw_entry_t));
    mc_tw_dropped = 0;
    __atomic_store_n(&mc_tw_on, mc_tw_table != NULL, __ATOMIC_SEQ_CST);
}

MC_TW_NOCOV static void mc_track_stop(void) {
    __atomic_store_n(&mc_tw_on, 0, __ATOMIC_SEQ_CST);
    while (__atomic_exchange_n(&mc_tw_spin, 1, __ATOMIC_ACQUIRE))
        ;
    __atomic_store_n(&mc_tw_spin, 0, __ATOMIC_RELEASE);
}

MC_TW_NOCOV static int mc_track_enabled(void) { return 1; }

/* One line per written cache line: "<line address hex> <writes of slot 0> ... <slot 7>". */
MC_TW_NOCOV static int mc_track_dump(const char *path) {
    FILE *f = fopen(path, "w");
    if (f == NULL || mc_tw_table == NULL)
        return -1;
    fprintf(f, "# dropped %llu\n", (unsigned long long)mc_tw_dropped);
    for (uint32_t i = 0; i < MC_TW_TABLE; i++) {
        mc_tw_entry_t *e = &mc_tw_table[i];
        if (e->line == 0)
            continue;
        fprintf(f, "%lx", (unsigned long)(e->line << 6));
        for (int s = 0; s < MC_TW_SLOTS; s++)
            fprintf(f, " %llu", (unsigned long long)e->writes[s]);
        fputc('\n', f);
    }
    fclose(f);
    return 0;
}

/* The compiler's hooks (-fsanitize-coverage=trace-pc-guard,trace-stores). */
MC_TW_NOCOV void __sanitizer_cov_trace_pc_guard_init(uint32_t *start, uint32_t *stop) { (void)start; (void)stop; }
MC_TW_NOCOV void __sanitizer_cov_trace_pc_guard(uint32_t *guard) { (void)guard; }
MC_TW_NOCOV void __sanitizer_cov_store1(uint8_t *a) { mc_tw_record(a); }
MC_TW_NOCOV void __sanitizer_cov_store2(uint16_t *a) { mc_tw_record(a); }
MC_TW_NOCOV void __sanitizer_cov_store4(uint32_t *a) { mc_tw_record(a); }
MC_TW_NOCOV void __sanitizer_cov_store8(uint64_t *a) { mc_tw_record(a); }
MC_TW_NOCOV void __sanitizer_cov_store16(void *a) { mc_tw_record(a); }

/* Writes the instrumentation cannot see. */
MC_TW_NOCOV static int mc_tw_lock(pthread_mutex_t *m) { mc_tw_record(m); return pthread_mutex_lock(m); }
MC_TW_NOCOV static int mc_tw_trylock(pthread_mutex_t *m) { mc_tw_record(m); return pthread_mutex_trylock(m); }
MC_TW_NOCOV static int mc_tw_unlock(pthread_mutex_t *m) { mc_tw_record(m); return pthread_mutex_unlock(m); }
#define pthread_mutex_lock(m) mc_tw_lock(m)
#define pthread_mutex_trylock(m) mc_tw_trylock(m)
#define pthread_mutex_unlock(m) mc_tw_unlock(m)

#undef mc_fetch_add_u64
#undef mc_fetch_add_i64
#define mc_fetch_add_u64(p, v) (mc_tw_record(p), __atomic_add_fetch((p), (v), __ATOMIC_RELAXED))
#define mc_fetch_add_i64(p, v) (mc_tw_record(p), __atomic_add_fetch((p), (v), __ATOMIC_RELAXED))

#endif
