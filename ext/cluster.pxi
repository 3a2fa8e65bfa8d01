# cluster.pxi -- ElastiCache-style auto discovery: the cluster's node list
# and the `config get cluster` / `get AmazonElastiCache:cluster` replies.
#
# A node started with `-o cluster_file=PATH` answers discovery requests as an
# ElastiCache configuration endpoint does:
#
#   config get cluster\r\n
#   CONFIG cluster 0 <bytes>\r\n<version>\n<host>|<ip>|<port> ...\n\r\nEND\r\n
#
# where <bytes> counts the two body lines with their LF. The legacy form
# `get AmazonElastiCache:cluster` (one key) gets the same body in a VALUE
# reply. A node without a cluster file answers `config ...` as memcached
# answers any unknown command, and treats the legacy key as a plain key.
#
# The list changes at run time by `config set cluster <flags> <bytes>` with
# the node list as its data block (admins), or from Python (the file re-read
# on SIGHUP). Either way the version goes up by one when the list differs
# from the current one; an identical list changes nothing.
#
# Locking: g_cluster_lock guards g_cluster_nodes/_len/_version. A reply
# copies the body into the connection's output buffer while holding it; a
# change builds the new string outside, swaps the pointer under the lock and
# frees the old one after unlocking, so no worker ever reads freed memory.
# g_cluster_enabled only goes 0 -> 1 (under the lock) while the core lives;
# the hot path reads it with one relaxed load before anything else.

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int, const char*, void*)

cdef enum:
    CLUSTER_BODY_MAX = 60000       # node list bytes `config set` takes (below SPOOL_MIN: read in rbuf)
    CLUSTER_HOST_MAX = 255

cdef pthread_mutex_t g_cluster_lock
pthread_mutex_init(&g_cluster_lock, NULL)
cdef int g_cluster_enabled = 0
cdef uint64_t g_cluster_version = 0
cdef char* g_cluster_nodes = NULL          # "h|ip|port h|ip|port", no version, no LF
cdef size_t g_cluster_nodes_len = 0

cdef inline bint cluster_sep(char ch) noexcept nogil:
    return ch == c' ' or ch == c'\n' or ch == c'\r' or ch == c'\t'

# One `hostname|ip|port` entry at p[0:n]: a hostname of printable characters
# without '|', an IPv4 or IPv6 address, a port 1-65535 (no leading zero).
cdef bint cluster_entry_ok(const char* p, size_t n) noexcept nogil:
    cdef size_t i
    cdef size_t bar1 = n
    cdef size_t bar2 = n
    cdef char ip[64]
    cdef unsigned char addr[16]
    cdef size_t iplen
    cdef uint32_t port = 0
    for i in range(n):
        if p[i] == c'|':
            if bar1 == n:
                bar1 = i
            elif bar2 == n:
                bar2 = i
            else:
                return False
        elif <unsigned char>p[i] <= 32 or <unsigned char>p[i] >= 127:
            return False
    if bar1 == 0 or bar1 > CLUSTER_HOST_MAX or bar2 == n:
        return False
    iplen = bar2 - bar1 - 1
    if iplen == 0 or iplen >= sizeof(ip):
        return False
    memcpy(ip, p + bar1 + 1, iplen)
    ip[iplen] = 0
    if inet_pton(AF_INET, ip, addr) != 1 and inet_pton(AF_INET6, ip, addr) != 1:
        return False
    if n - bar2 - 1 == 0 or n - bar2 - 1 > 5 or p[bar2 + 1] == c'0':
        return False                # 1-5 digits, no leading zero: one spelling per port
    for i in range(bar2 + 1, n):
        if p[i] < c'0' or p[i] > c'9':
            return False
        port = port * 10 + <uint32_t>(p[i] - c'0')
    return port >= 1 and port <= 65535

# The ip|port part of an entry (for duplicate checks).
cdef inline const char* cluster_addr(const char* p, size_t n, size_t* alen) noexcept nogil:
    cdef const char* bar = <const char*>memchr(p, c'|', n)
    alen[0] = n - <size_t>(bar + 1 - p)
    return bar + 1

# Normalise a node list (entries separated by spaces, tabs or line ends) into
# a malloc'd "e1 e2 ..." string. Returns NULL, with why[0] set, when an entry
# is malformed, an ip|port repeats, or there is no entry at all.
cdef char* cluster_parse(const char* body, size_t n, size_t* outlen, const char** why) noexcept nogil:
    cdef char* out = <char*>malloc(n + 1)
    cdef size_t o = 0
    cdef size_t i = 0
    cdef size_t s
    cdef size_t j
    cdef size_t k
    cdef size_t elen
    cdef size_t alen
    cdef size_t blen
    cdef const char* a
    cdef const char* b
    if out == NULL:
        why[0] = b"out of memory"
        return NULL
    while i < n:
        while i < n and cluster_sep(body[i]):
            i += 1
        if i >= n:
            break
        s = i
        while i < n and not cluster_sep(body[i]):
            i += 1
        if not cluster_entry_ok(body + s, i - s):
            free(out)
            why[0] = b"invalid cluster node entry (want hostname|ip|port)"
            return NULL
        a = cluster_addr(body + s, i - s, &alen)
        # duplicates: compare ip|port with every entry kept so far
        j = 0
        while j < o:
            k = j
            while k < o and out[k] != c' ':
                k += 1
            b = cluster_addr(out + j, k - j, &blen)
            if blen == alen and memcmp(a, b, alen) == 0:
                free(out)
                why[0] = b"duplicate cluster node"
                return NULL
            j = k + 1
        if o:
            out[o] = c' '
            o += 1
        memcpy(out + o, body + s, i - s)
        o += i - s
    if o == 0:
        free(out)
        why[0] = b"empty cluster node list"
        return NULL
    out[o] = 0
    outlen[0] = o
    return out

# Install a parsed list (takes ownership of `nodes`). Returns the version now
# in force: one more than before if the list changed, the same otherwise.
cdef uint64_t cluster_install(char* nodes, size_t len) noexcept nogil:
    global g_cluster_nodes, g_cluster_nodes_len, g_cluster_version
    cdef char* old = NULL
    cdef uint64_t v
    pthread_mutex_lock(&g_cluster_lock)
    if g_cluster_nodes != NULL and g_cluster_nodes_len == len and \
            memcmp(g_cluster_nodes, nodes, len) == 0:
        old = nodes                   # unchanged: keep the version
    else:
        old = g_cluster_nodes
        g_cluster_nodes = nodes
        g_cluster_nodes_len = len
        g_cluster_version += 1
        mc_store_int(&g_cluster_enabled, 1)
    v = g_cluster_version
    pthread_mutex_unlock(&g_cluster_lock)
    free(old)
    return v

cdef void cluster_reset() noexcept nogil:
    global g_cluster_nodes, g_cluster_nodes_len, g_cluster_version
    cdef char* old
    pthread_mutex_lock(&g_cluster_lock)
    old = g_cluster_nodes
    g_cluster_nodes = NULL
    g_cluster_nodes_len = 0
    g_cluster_version = 0
    mc_store_int(&g_cluster_enabled, 0)
    pthread_mutex_unlock(&g_cluster_lock)
    free(old)

# Append the discovery reply: `CONFIG cluster 0 <bytes>` (legacy: `VALUE
# AmazonElastiCache:cluster 0 <bytes>`), the version line, the node line,
# CRLF and END. The body is copied while the lock is held.
cdef void cluster_reply(conn_t* c, bint legacy) noexcept nogil:
    cdef char head[64]
    cdef char ver[24]
    cdef int hn
    cdef int vn
    cdef size_t body
    cdef char* p
    pthread_mutex_lock(&g_cluster_lock)
    vn = snprintf(ver, sizeof(ver), b"%llu", <unsigned long long>g_cluster_version)
    body = <size_t>vn + 1 + g_cluster_nodes_len + 1
    if legacy:
        hn = snprintf(head, sizeof(head), b"VALUE AmazonElastiCache:cluster 0 %zu\r\n", body)
    else:
        hn = snprintf(head, sizeof(head), b"CONFIG cluster 0 %zu\r\n", body)
    p = out_reserve(c, <size_t>hn + body + 2 + 5)
    if p == NULL:
        pthread_mutex_unlock(&g_cluster_lock)
        c.close_now = True
        return
    memcpy(p, head, <size_t>hn)
    p += hn
    memcpy(p, ver, <size_t>vn)
    p += vn
    p[0] = c'\n'
    p += 1
    memcpy(p, g_cluster_nodes, g_cluster_nodes_len)
    p += g_cluster_nodes_len
    memcpy(p, b"\n\r\nEND\r\n", 8)
    c.wlen += <size_t>hn + body + 2 + 5
    pthread_mutex_unlock(&g_cluster_lock)
    if g_settings.verbose > 1:
        fprintf(stderr, ">%d %.*s\n", c.fd, hn - 2, head)

# `config get cluster` and `config set cluster <flags> <bytes> [noreply]`
# (+ data block). Only reached when a cluster is configured.
cdef int process_config_command(conn_t* c, token_t* tokens, size_t ntokens,
                                const char* data, size_t avail) noexcept nogil:
    cdef uint32_t flags
    cdef int32_t vlen_i
    cdef size_t vlen
    cdef char* nodes
    cdef size_t nlen = 0
    cdef const char* why = NULL
    if ntokens == 4 and tok_eq(&tokens[1], b"get", 3) and tok_eq(&tokens[2], b"cluster", 7):
        cluster_reply(c, False)
        return 0
    if (ntokens == 6 or ntokens == 7) and tok_eq(&tokens[1], b"set", 3) and \
            tok_eq(&tokens[2], b"cluster", 7):
        set_noreply_maybe(c, tokens, ntokens)
        if not (tok_strtoul(&tokens[3], &flags) and tok_strtol(&tokens[4], &vlen_i)) or vlen_i < 0:
            out_string(c, b"CLIENT_ERROR bad command line format")
            return 0
        vlen = <size_t>vlen_i + 2
        if vlen_i > CLUSTER_BODY_MAX:
            out_string(c, b"SERVER_ERROR object too large for cache")
            return conn_swallow(c, vlen, avail)
        if avail < vlen:
            c.rneed = vlen
            return PROC_NEED_MORE
        if data[vlen - 2] != c'\r' or data[vlen - 1] != c'\n':
            out_string(c, b"CLIENT_ERROR bad data chunk")
            return <int>vlen
        nodes = cluster_parse(data, vlen - 2, &nlen, &why)
        if nodes == NULL:
            c.noreply = False
            out_raw(c, b"CLIENT_ERROR ", 13)
            out_string(c, why)
            return <int>vlen
        cluster_install(nodes, nlen)
        out_string(c, b"OK")
        return <int>vlen
    out_string(c, b"ERROR")
    return 0
