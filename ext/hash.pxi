# hash.pxi -- the key hash.
#
# A 64-bit multiply-xorshift hash in the MurmurHash64A family, written here.
# The low bits pick the shard, the high 32 bits pick the bucket inside the
# shard's table (and are kept in the item so a table can grow without rehashing
# keys). Keys are at most 250 bytes, so eight bytes per step is what matters.

from libc.string cimport memcpy

cdef inline uint64_t hash_key(const char* key, size_t n) noexcept nogil:
    cdef uint64_t m = 0xc6a4a7935bd1e995ULL
    cdef int r = 47
    cdef uint64_t h = 0x9747b28c5bd1e995ULL ^ (n * m)
    cdef uint64_t k = 0
    cdef const unsigned char* p = <const unsigned char*>key
    cdef size_t nblocks = n >> 3
    cdef size_t i
    for i in range(nblocks):
        memcpy(&k, p + i * 8, 8)
        k *= m
        k ^= k >> r
        k *= m
        h ^= k
        h *= m
    p = p + nblocks * 8
    cdef size_t rem = n & 7
    k = 0
    if rem:
        for i in range(rem):
            k |= (<uint64_t>p[i]) << (8 * i)
        h ^= k
        h *= m
    h ^= h >> r
    h *= m
    h ^= h >> r
    return h
