# tls.pxi -- TLS (-Z) through OpenSSL's C API, as memcached's tls.c.
#
# Owns the process's SSL_CTX, the `ssl_*` settings it was built from, the
# TLS counters of `stats`, and the per-connection I/O wrappers conn.pxi calls
# when a conn has an SSL object (c.ssl != NULL; plaintext conns never reach
# this file: one pointer test per read and write).
#
# The context is built at start-up (tls_init, before -u drops privileges, as
# memcached) and rebuilt by `refresh_certs` / SIGHUP (tls_refresh). A refresh
# builds a whole new SSL_CTX beside the live one and only swaps it in when the
# certificate, key and CA all loaded, so a bad pair leaves the old context
# serving (memcached reloads into the live context and can leave it half
# changed). g_ssl_lock guards only the g_ssl_ctx pointer: SSL_new() takes its
# own reference on the context under the lock, and the swap drops the old
# context's reference after it, so a handshake running in a worker keeps the
# context it started with alive until its SSL object is freed.
#
# Each SSL object belongs to its conn and so to one worker thread; OpenSSL's
# error queue is per thread, cleared before each call so SSL_get_error() reads
# this call's failure only. Handshakes are non-blocking and run in the worker's
# epoll loop (memcached starts them in its listener thread). Reads decrypt into
# the conn's read buffer; a batch of replies leaves in one SSL_write (the
# buffer may move between retries: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
# Bytes OpenSSL already decrypted but the conn has not taken (SSL_pending) do
# not wake epoll, so conn.pxi drains them before it goes back to waiting.

cdef extern from "<errno.h>" nogil:
    enum:
        EFAULT
        EPIPE

cdef extern from "<openssl/ssl.h>" nogil:
    ctypedef struct SSL_CTX:
        pass
    ctypedef struct SSL:
        pass
    ctypedef struct SSL_METHOD:
        pass
    ctypedef struct SSL_SESSION:
        pass
    const SSL_METHOD* TLS_server_method()
    SSL_CTX* SSL_CTX_new(const SSL_METHOD* meth)
    void SSL_CTX_free(SSL_CTX* ctx)
    long SSL_CTX_set_min_proto_version(SSL_CTX* ctx, int version)
    int SSL_CTX_use_certificate_chain_file(SSL_CTX* ctx, const char* file)
    int SSL_CTX_use_PrivateKey_file(SSL_CTX* ctx, const char* file, int type)
    int SSL_CTX_check_private_key(const SSL_CTX* ctx)
    int SSL_CTX_load_verify_locations(SSL_CTX* ctx, const char* CAfile, const char* CApath)
    void* SSL_load_client_CA_file(const char* file)
    void SSL_CTX_set_client_CA_list(SSL_CTX* ctx, void* names)
    void SSL_CTX_set_verify(SSL_CTX* ctx, int mode, void* cb)
    int SSL_CTX_set_cipher_list(SSL_CTX* ctx, const char* s)
    long SSL_CTX_set_session_cache_mode(SSL_CTX* ctx, long mode)
    int SSL_CTX_set_session_id_context(SSL_CTX* ctx, const unsigned char* sid_ctx, unsigned int len)
    void SSL_CTX_sess_set_new_cb(SSL_CTX* ctx, int (*cb)(SSL*, SSL_SESSION*) noexcept nogil)
    uint64_t SSL_CTX_set_options(SSL_CTX* ctx, uint64_t op)
    long SSL_CTX_set_mode(SSL_CTX* ctx, long mode)
    SSL* SSL_new(SSL_CTX* ctx)
    void SSL_free(SSL* ssl)
    int SSL_set_fd(SSL* ssl, int fd)
    void SSL_set_accept_state(SSL* ssl)
    int SSL_accept(SSL* ssl)
    int SSL_is_init_finished(const SSL* ssl)
    int SSL_read(SSL* ssl, void* buf, int num)
    int SSL_write(SSL* ssl, const void* buf, int num)
    int SSL_pending(const SSL* ssl)
    int SSL_get_error(const SSL* ssl, int ret)
    int SSL_shutdown(SSL* ssl)
    void SSL_set_quiet_shutdown(SSL* ssl, int mode)
    int SSL_ERROR_NONE, SSL_ERROR_SSL, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE
    int SSL_ERROR_SYSCALL, SSL_ERROR_ZERO_RETURN
    int SSL_VERIFY_NONE, SSL_VERIFY_PEER, SSL_VERIFY_FAIL_IF_NO_PEER_CERT, SSL_VERIFY_CLIENT_ONCE
    int SSL_FILETYPE_PEM
    int TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION
    long SSL_SESS_CACHE_SERVER, SSL_SESS_CACHE_OFF
    uint64_t SSL_OP_NO_RENEGOTIATION, SSL_OP_ENABLE_KTLS
    long SSL_MODE_RELEASE_BUFFERS, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER

cdef extern from "<openssl/err.h>" nogil:
    unsigned long ERR_SYSTEM_FLAG
    unsigned long ERR_get_error()
    void ERR_error_string_n(unsigned long e, char* buf, size_t len)
    void ERR_clear_error()

# Listener kind bit (server.py passes kind | LISTEN_TLS for a -Z TCP listener).
cdef enum:
    LISTEN_TLS = 4
    TLS_ERRMSG = 4096 + 64 + 256

cdef SSL_CTX* g_ssl_ctx = NULL
cdef pthread_mutex_t g_ssl_lock
cdef bint g_ssl_enabled = False
cdef char* g_ssl_chain_cert = NULL
cdef char* g_ssl_key = NULL
cdef char* g_ssl_ca_cert = NULL
cdef char* g_ssl_ciphers = NULL
cdef int g_ssl_verify_mode = 0        # the SSL_VERIFY_* bits (ssl_verify_mode 0-3 mapped)
cdef int g_ssl_keyformat = 1          # SSL_FILETYPE_PEM
cdef int g_ssl_min_version = 0        # TLS1_2_VERSION unless set
cdef bint g_ssl_session_cache = False
cdef bint g_ssl_kernel_tls = False
cdef uint64_t g_ssl_handshake_errors = 0
cdef uint64_t g_ssl_new_sessions = 0
cdef rel_time_t g_ssl_last_cert_refresh = 0

cdef int tls_new_session_cb(SSL* s, SSL_SESSION* sess) noexcept nogil:
    mc_fetch_add_u64(&g_ssl_new_sessions, 1)
    return 0

# The first queued OpenSSL error as text (memcached's print_ssl_error), then
# the rest of the queue dropped.
cdef void tls_error_text(char* buf, size_t len) noexcept nogil:
    cdef unsigned long e = ERR_get_error()
    buf[0] = 0
    if e != 0:
        ERR_error_string_n(e, buf, len)
    ERR_clear_error()

# A file option left unset: memcached hands OpenSSL a NULL path, whose fopen()
# fails with EFAULT (and crashes under AddressSanitizer's interceptor); the same
# message without the call.
cdef void tls_unset_file_text(char* buf, size_t len) noexcept nogil:
    ERR_error_string_n(ERR_SYSTEM_FLAG | <unsigned long>EFAULT, buf, len)

# Build a server context from the settings: memcached's ssl_init() and
# load_server_certificates(), in their order and with their messages. Returns
# NULL with the message (ending in "\r\n", as memcached's) in errmsg.
cdef SSL_CTX* tls_ctx_build(char* errmsg, size_t errlen) noexcept nogil:
    cdef char sslerr[256]
    cdef SSL_CTX* ctx
    ERR_clear_error()
    ctx = SSL_CTX_new(TLS_server_method())
    if ctx == NULL:
        tls_error_text(sslerr, sizeof(sslerr))
        snprintf(errmsg, errlen, b"Error creating the TLS context: %s\r\n", sslerr)
        return NULL
    SSL_CTX_set_min_proto_version(ctx, g_ssl_min_version)
    if g_ssl_chain_cert == NULL or not SSL_CTX_use_certificate_chain_file(ctx, g_ssl_chain_cert):
        if g_ssl_chain_cert == NULL:
            tls_unset_file_text(sslerr, sizeof(sslerr))
        else:
            tls_error_text(sslerr, sizeof(sslerr))
        snprintf(errmsg, errlen, b"Error loading the certificate chain: %s : %s\r\n",
                 g_ssl_chain_cert, sslerr)
    elif g_ssl_key == NULL or not SSL_CTX_use_PrivateKey_file(ctx, g_ssl_key, g_ssl_keyformat):
        if g_ssl_key == NULL:
            tls_unset_file_text(sslerr, sizeof(sslerr))
        else:
            tls_error_text(sslerr, sizeof(sslerr))
        snprintf(errmsg, errlen, b"Error loading the key: %s : %s\r\n", g_ssl_key, sslerr)
    elif not SSL_CTX_check_private_key(ctx):
        tls_error_text(sslerr, sizeof(sslerr))
        snprintf(errmsg, errlen, b"Error validating the certificate: %s\r\n", sslerr)
    elif g_ssl_ca_cert != NULL and not SSL_CTX_load_verify_locations(ctx, g_ssl_ca_cert, NULL):
        tls_error_text(sslerr, sizeof(sslerr))
        snprintf(errmsg, errlen, b"Error loading the CA certificate: %s : %s\r\n",
                 g_ssl_ca_cert, sslerr)
    elif g_ssl_ciphers != NULL and not SSL_CTX_set_cipher_list(ctx, g_ssl_ciphers):
        ERR_clear_error()
        snprintf(errmsg, errlen, b"Error setting the provided cipher(s): %s\n", g_ssl_ciphers)
    else:
        if g_ssl_ca_cert != NULL:
            # the CA names a client is told to pick its certificate by
            SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(g_ssl_ca_cert))
        SSL_CTX_set_verify(ctx, g_ssl_verify_mode, NULL)
        if g_ssl_session_cache:
            SSL_CTX_sess_set_new_cb(ctx, tls_new_session_cb)
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER)
            SSL_CTX_set_session_id_context(ctx, <const unsigned char*>b"memcached", 9)
        else:
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF)
        if g_ssl_kernel_tls:
            SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS)
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION)
        # idle conns give their TLS buffers back; a reply buffer may be
        # realloc'd while a short SSL_write waits to be retried
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        ERR_clear_error()
        return ctx
    SSL_CTX_free(ctx)
    return NULL

# refresh_certs and SIGHUP: build a new context; swap it in only if it is
# whole. Returns True, or False with memcached's message in errmsg.
cdef bint tls_refresh(char* errmsg, size_t errlen) noexcept nogil:
    global g_ssl_ctx, g_ssl_last_cert_refresh
    cdef SSL_CTX* ctx
    cdef SSL_CTX* old
    if not g_ssl_enabled:
        snprintf(errmsg, errlen, b"Error TLS not enabled\r\n")
        return False
    ctx = tls_ctx_build(errmsg, errlen)
    if ctx == NULL:
        return False
    pthread_mutex_lock(&g_ssl_lock)
    old = g_ssl_ctx
    g_ssl_ctx = ctx
    pthread_mutex_unlock(&g_ssl_lock)
    if old != NULL:
        SSL_CTX_free(old)         # conns still using it hold their own reference
    mc_store_u32(&g_ssl_last_cert_refresh, current_time())
    return True

cdef const char* tls_proto_text(int version) noexcept nogil:
    if version == TLS1_VERSION:
        return b"tlsv1.0"
    if version == TLS1_1_VERSION:
        return b"tlsv1.1"
    if version == TLS1_2_VERSION:
        return b"tlsv1.2"
    if version == TLS1_3_VERSION:
        return b"tlsv1.3"
    return b"unknown"

# `refresh_certs [noreply]`: OK, or memcached's error text.
cdef int process_refresh_certs(conn_t* c, token_t* tokens, size_t ntokens) noexcept nogil:
    cdef char errmsg[TLS_ERRMSG]
    set_noreply_maybe(c, tokens, ntokens)
    if tls_refresh(errmsg, sizeof(errmsg)):
        out_string(c, b"OK")
    else:
        out_raw(c, errmsg, strlen(errmsg))
    return 0

# `stats` lines (after log_watchers, as memcached).
cdef void tls_append_stats(conn_t* c) noexcept nogil:
    if not g_ssl_enabled:
        return
    if g_ssl_session_cache:
        append_stat_u64(c, b"ssl_new_sessions", mc_load_u64(&g_ssl_new_sessions))
    append_stat_u64(c, b"ssl_handshake_errors", mc_load_u64(&g_ssl_handshake_errors))
    append_stat_u64(c, b"time_since_server_cert_refresh",
                    <uint64_t>(current_time() - mc_load_u32(&g_ssl_last_cert_refresh)))

# ---------------------------------------------------------------- per conn

# A TLS listener's new conn gets its SSL object; False: none could be made
# (the caller closes the socket).
cdef bint tls_conn_init(conn_t* c) noexcept nogil:
    cdef SSL* ssl
    pthread_mutex_lock(&g_ssl_lock)
    ssl = SSL_new(g_ssl_ctx) if g_ssl_ctx != NULL else NULL
    pthread_mutex_unlock(&g_ssl_lock)
    if ssl == NULL:
        ERR_clear_error()
        if g_settings.verbose:
            fprintf(stderr, b"Failed to created the SSL object\n")
        return False
    SSL_set_fd(ssl, c.fd)
    SSL_set_accept_state(ssl)
    c.ssl = ssl
    return True

cdef void tls_conn_free(conn_t* c) noexcept nogil:
    cdef SSL* ssl = <SSL*>c.ssl
    if ssl == NULL:
        return
    ERR_clear_error()
    if c.tls_ready and not c.tls_failed:
        SSL_shutdown(ssl)         # close_notify, best effort (non-blocking)
    SSL_free(ssl)
    ERR_clear_error()
    c.ssl = NULL

# An SSL call did not complete: 0 for a closed or failed conn (no
# close_notify is sent after a fatal error), -1 to retry when the socket is
# ready (c.tls_io_wants_write: for writing, else for reading).
cdef ssize_t tls_io_failed(conn_t* c, int ret) noexcept nogil:
    cdef int err = SSL_get_error(<SSL*>c.ssl, ret)
    if err == SSL_ERROR_WANT_READ:
        c.tls_io_wants_write = False
        return -1
    if err == SSL_ERROR_WANT_WRITE:
        c.tls_io_wants_write = True
        return -1
    c.tls_failed = err != SSL_ERROR_ZERO_RETURN
    ERR_clear_error()
    return 0

# Finish the handshake. 1: done; -1: waiting for the socket (as above);
# 0: failed (counted in ssl_handshake_errors; close the conn).
cdef int tls_handshake(conn_t* c) noexcept nogil:
    cdef int r
    cdef int err
    ERR_clear_error()
    r = SSL_accept(<SSL*>c.ssl)
    if r == 1:
        c.tls_ready = True
        c.tls_io_wants_write = False
        return 1
    err = SSL_get_error(<SSL*>c.ssl, r)
    if err == SSL_ERROR_WANT_READ:
        c.tls_io_wants_write = False
        return -1
    if err == SSL_ERROR_WANT_WRITE:
        c.tls_io_wants_write = True
        return -1
    c.tls_failed = True
    ERR_clear_error()
    mc_fetch_add_u64(&g_ssl_handshake_errors, 1)
    if g_settings.verbose:
        fprintf(stderr, b"SSL connection failed with error code : %d : %s\n", err, strerror(errno))
    return 0

# recv() for a TLS conn, the handshake first: >0 bytes, 0 closed or failed,
# -1 try again when the socket is ready.
cdef ssize_t tls_recv(conn_t* c, char* buf, size_t len) noexcept nogil:
    cdef int r
    if MC_UNLIKELY(not c.tls_ready):
        r = tls_handshake(c)
        if r != 1:
            return r
    if len > 0x40000000:
        len = 0x40000000
    ERR_clear_error()
    r = SSL_read(<SSL*>c.ssl, buf, <int>len)
    if r > 0:
        return r
    return tls_io_failed(c, r)

# send() for a TLS conn: the whole span in one SSL_write (records of up to
# 16 KB each); a retry passes the same bytes again, maybe followed by more.
# >0 bytes sent, -1 try again when the socket is ready, 0 failed.
cdef ssize_t tls_send(conn_t* c, const char* buf, size_t len) noexcept nogil:
    cdef int r
    if MC_UNLIKELY(not c.tls_ready):
        # output only exists after input, and input only after the handshake
        return 0
    if len > 0x40000000:
        len = 0x40000000
    ERR_clear_error()
    r = SSL_write(<SSL*>c.ssl, buf, <int>len)
    if r > 0:
        return r
    return tls_io_failed(c, r)

# Decrypted input still inside OpenSSL (epoll will not report it).
cdef inline bint tls_pending(conn_t* c) noexcept nogil:
    return c.tls_ready and SSL_pending(<SSL*>c.ssl) > 0

# A watcher (logger.pxi) took over a TLS conn's session; the acceptor thread
# alone uses it from then on. >0 bytes written, -1 with errno EAGAIN to retry,
# -1 with another errno when the session failed.
cdef ssize_t tls_write_detached(void* ssl, const char* buf, size_t len) noexcept nogil:
    cdef int r
    cdef int err
    if len > 0x40000000:
        len = 0x40000000
    ERR_clear_error()
    r = SSL_write(<SSL*>ssl, buf, <int>len)
    if r > 0:
        return r
    err = SSL_get_error(<SSL*>ssl, r)
    ERR_clear_error()
    if err == SSL_ERROR_WANT_WRITE or err == SSL_ERROR_WANT_READ:
        (&errno)[0] = EAGAIN
    else:
        (&errno)[0] = EPIPE
    return -1

cdef void tls_free_detached(void* ssl) noexcept nogil:
    ERR_clear_error()
    SSL_shutdown(<SSL*>ssl)
    SSL_free(<SSL*>ssl)
    ERR_clear_error()
