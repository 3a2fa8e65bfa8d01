# proto_meta.pxi -- the meta protocol (mg, ms, md, ma, mn, me).
#
# Placeholder until the meta commands land: mn answers, the rest are unknown.

cdef const char* B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

cdef char* base64_encode(const char* src, size_t n, char* out) noexcept nogil:
    cdef size_t i = 0
    cdef uint32_t v
    while i + 2 < n:
        v = (<uint32_t>(<unsigned char>src[i]) << 16) | (<uint32_t>(<unsigned char>src[i + 1]) << 8) | <unsigned char>src[i + 2]
        out[0] = B64_CHARS[(v >> 18) & 63]
        out[1] = B64_CHARS[(v >> 12) & 63]
        out[2] = B64_CHARS[(v >> 6) & 63]
        out[3] = B64_CHARS[v & 63]
        out += 4
        i += 3
    if n - i == 1:
        v = <uint32_t>(<unsigned char>src[i]) << 16
        out[0] = B64_CHARS[(v >> 18) & 63]
        out[1] = B64_CHARS[(v >> 12) & 63]
        out[2] = c'='
        out[3] = c'='
        out += 4
    elif n - i == 2:
        v = (<uint32_t>(<unsigned char>src[i]) << 16) | (<uint32_t>(<unsigned char>src[i + 1]) << 8)
        out[0] = B64_CHARS[(v >> 18) & 63]
        out[1] = B64_CHARS[(v >> 12) & 63]
        out[2] = B64_CHARS[(v >> 6) & 63]
        out[3] = c'='
        out += 4
    return out

cdef int process_meta_dispatch(conn_t* c, char sub, token_t* tokens, size_t ntokens,
                               const char* line, size_t length,
                               const char* data, size_t avail) noexcept nogil:
    if sub == c'n':
        out_string(c, b"MN")
        return 0
    out_string(c, b"ERROR")
    return 0
