# auth.pxi -- memcached's ASCII authentication (-Y <file>).
#
# With -Y, a connection must first send `set <any> <any> <any> <n>\r\n` with
# a data block "<user> <password>"; until it does, every line is answered
# `CLIENT_ERROR unauthenticated`. The credentials file holds `user:password`
# lines; Python reads it at start-up and hands the pairs to the core. Checks
# compare every entry in full so timing does not reveal where a guess failed.

cdef struct auth_entry_t:
    char user[256]
    size_t ulen
    char password[256]
    size_t plen

cdef auth_entry_t* g_auth_entries = NULL
cdef int g_auth_nentries = 0
cdef bint g_auth_enabled = False

def auth_load(entries):
    global g_auth_entries, g_auth_nentries, g_auth_enabled
    free(g_auth_entries)
    g_auth_entries = NULL
    g_auth_nentries = 0
    g_auth_enabled = False
    if not entries:
        return
    g_auth_entries = <auth_entry_t*>calloc(len(entries), sizeof(auth_entry_t))
    for i, (user, password) in enumerate(entries):
        u = user.encode()[:255]
        p = password.encode()[:255]
        memcpy(g_auth_entries[i].user, <char*>u, len(u))
        g_auth_entries[i].ulen = len(u)
        memcpy(g_auth_entries[i].password, <char*>p, len(p))
        g_auth_entries[i].plen = len(p)
    g_auth_nentries = len(entries)
    g_auth_enabled = True

cdef inline bint const_eq(const char* a, size_t alen, const char* b, size_t blen) noexcept nogil:
    cdef unsigned char diff = 0
    cdef size_t i
    if alen != blen:
        return False
    for i in range(alen):
        diff |= <unsigned char>(a[i] ^ b[i])
    return diff == 0

cdef bint auth_check(token_t* user, token_t* password) noexcept nogil:
    cdef int i
    cdef bint ok = False
    for i in range(g_auth_nentries):
        if const_eq(user.value, user.length, g_auth_entries[i].user, g_auth_entries[i].ulen) & \
                const_eq(password.value, password.length, g_auth_entries[i].password, g_auth_entries[i].plen):
            ok = True
    return ok

# memcached reuses one response object during the auth exchange, so an auth
# reply not yet sent is replaced by the next one (pipelined junk before
# authentication gets a single error). Only auth replies can be pending here.
cdef inline void auth_reply(conn_t* c, const char* msg) noexcept nogil:
    c.wlen = c.wsent
    out_string(c, msg)

# One step of the auth exchange on the unparsed input p[0:avail]. Returns the
# bytes consumed, or -1 when more input is needed.
cdef int process_auth(conn_t* c, const char* p, size_t avail) noexcept nogil:
    cdef const char* el
    cdef token_t tokens[MAX_TOKENS]
    cdef size_t ntokens
    cdef size_t linelen
    cdef uint32_t size
    cdef thread_stats_t* st = conn_stats(c)
    cdef const char* nul
    c.noreply = False
    if not c.auth_started:
        if avail < 2:
            return -1
        el = <const char*>memchr(p, c'\n', avail)
        if el == NULL:
            if avail > LARGE_LINE:
                c.close_now = True
            return -1
        linelen = <size_t>(el - p)
        nul = <const char*>memchr(p, 0, linelen)
        ntokens = tokenize(p, <size_t>(nul - p) if nul != NULL else linelen, tokens, MAX_TOKENS)
        if ntokens < 6 or not tok_eq(&tokens[0], b"set", 3) or not tok_strtoul(&tokens[4], &size):
            auth_reply(c, b"CLIENT_ERROR unauthenticated")
            return <int>(linelen + 1)
        c.auth_need = <size_t>size + 2
        c.auth_started = True
        return <int>(linelen + 1)
    if avail < c.auth_need:
        c.rneed = c.auth_need
        return -1
    c.rneed = 0
    c.auth_started = False
    linelen = c.auth_need
    if p[linelen - 2] != c'\r' or p[linelen - 1] != c'\n':
        auth_reply(c, b"CLIENT_ERROR bad command line termination")
        return <int>linelen
    nul = <const char*>memchr(p, 0, linelen - 2)
    ntokens = tokenize(p, <size_t>(nul - p) if nul != NULL else linelen - 2, tokens, MAX_TOKENS)
    sinc(&st.auth_cmds)
    if ntokens < 3:
        auth_reply(c, b"CLIENT_ERROR bad authentication token format")
        return <int>linelen
    if auth_check(&tokens[0], &tokens[1]):
        c.authenticated = True
        auth_reply(c, b"STORED")
    else:
        sinc(&st.auth_errors)
        auth_reply(c, b"CLIENT_ERROR authentication failure")
    return <int>linelen
