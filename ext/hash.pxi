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

# MurmurHash3's 32-bit x86 variant with seed 0, written here from the published
# algorithm. memcached 1.6's default hash_algorithm; memcachepy uses it only
# where memcached's hash shows through: the bucket order of `stats detail dump`.
cdef inline uint32_t rotl32(uint32_t x, int r) noexcept nogil:
    return (x << r) | (x >> (32 - r))

cdef uint32_t murmur3_32(const char* key, size_t n) noexcept nogil:
    cdef const unsigned char* p = <const unsigned char*>key
    cdef uint32_t h = 0
    cdef uint32_t k
    cdef uint32_t c1 = 0xcc9e2d51U
    cdef uint32_t c2 = 0x1b873593U
    cdef size_t nblocks = n >> 2
    cdef size_t i
    for i in range(nblocks):
        memcpy(&k, p + i * 4, 4)
        k *= c1
        k = rotl32(k, 15)
        k *= c2
        h ^= k
        h = rotl32(h, 13)
        h = h * 5 + 0xe6546b64U
    p = p + nblocks * 4
    k = 0
    i = n & 3
    if i == 3:
        k ^= (<uint32_t>p[2]) << 16
    if i >= 2:
        k ^= (<uint32_t>p[1]) << 8
    if i >= 1:
        k ^= <uint32_t>p[0]
        k *= c1
        k = rotl32(k, 15)
        k *= c2
        h ^= k
    h ^= <uint32_t>n
    h ^= h >> 16
    h *= 0x85ebca6bU
    h ^= h >> 13
    h *= 0xc2b2ae35U
    h ^= h >> 16
    return h
