# assoc.pxi -- each shard's hash table (memcached calls this "assoc").
#
# Chained buckets indexed by the upper 32 bits of the key hash (kept in the
# item as `hv`). A table doubles when it holds 1.5 items per bucket; the shard
# is small, so the rehash is done at once under the shard lock rather than
# incrementally as memcached's single global table must.
#
# Caller holds the shard lock.

from libc.string cimport memcmp

cdef inline item_t* assoc_find(shard_t* s, const char* key, size_t nkey, uint32_t hv) noexcept nogil:
    cdef item_t* it = s.buckets[hv & ((<uint32_t>1 << s.hashpower) - 1)]
    while it != NULL:
        if it.hv == hv and it.nkey == nkey and memcmp(ITEM_key(it), key, nkey) == 0:
            return it
        it = it.h_next
    return NULL

cdef void assoc_expand(shard_t* s) noexcept nogil:
    cdef uint32_t newpower = s.hashpower + 1
    cdef uint32_t newmask = (<uint32_t>1 << newpower) - 1
    cdef item_t** nb = <item_t**>calloc(<size_t>1 << newpower, sizeof(item_t*))
    cdef uint64_t i
    cdef item_t* it
    cdef item_t* nxt
    cdef uint32_t b
    cdef uint64_t t0 = lockstat_now()
    if nb == NULL:
        return
    for i in range(<uint64_t>1 << s.hashpower):
        it = s.buckets[i]
        while it != NULL:
            nxt = it.h_next
            b = it.hv & newmask
            it.h_next = nb[b]
            nb[b] = it
            it = nxt
    free(s.buckets)
    s.buckets = nb
    s.hashpower = newpower
    s.expand_count += 1
    lockstat_note(LK_EXPAND, t0)

cdef inline void assoc_insert(shard_t* s, item_t* it) noexcept nogil:
    cdef uint32_t b = it.hv & ((<uint32_t>1 << s.hashpower) - 1)
    it.h_next = s.buckets[b]
    s.buckets[b] = it
    s.hash_items += 1
    if s.hash_items > ((<uint64_t>3 << s.hashpower) >> 1) and s.hashpower < 30:
        assoc_expand(s)

cdef inline void assoc_delete(shard_t* s, item_t* it) noexcept nogil:
    cdef item_t** pos = &s.buckets[it.hv & ((<uint32_t>1 << s.hashpower) - 1)]
    while pos[0] != NULL:
        if pos[0] == it:
            pos[0] = it.h_next
            it.h_next = NULL
            s.hash_items -= 1
            return
        pos = &pos[0].h_next
