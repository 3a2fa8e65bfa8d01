/*
 * uring_probe.c -- what an io_uring event loop could save over epoll on this
 * kernel, before anything is built into the daemon (bench/README.md, "Event
 * loop at fixed rates").
 *
 * A stand-in server, one thread, answering the load generator's text protocol
 * without a store (every get misses: END; every set: STORED), in two modes:
 *   0  epoll: epoll_wait, one recv per ready conn, one send of its replies;
 *   1  io_uring: multishot poll on the listener, multishot recv per conn into
 *      a ring of provided buffers, replies sent by a send SQE that goes out
 *      with the next io_uring_enter, which also waits (SINGLE_ISSUER,
 *      DEFER_TASKRUN).
 * Both do the same work per request outside the kernel, so the difference in
 * their CPU per request is what the event loop's system calls cost.
 *
 * Not built by setup.py or CI (it needs liburing-dev):
 *   cc -O2 -o /tmp/uring_probe bench/uring_probe.c -luring
 *   taskset -c 0 /tmp/uring_probe MODE PORT &
 *   taskset -c 1 python -m memcachepy.bench -p PORT -R 30000 --server-pid $! ...
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSZ 65536
#define MAXFD 65536
#define NBUF 256
#define PBUFSZ 16384

typedef struct {
    char in[BUFSZ];
    int ilen;
    char out[BUFSZ];
    int olen;
    int sending;            /* io_uring: a send of out[] is in flight */
    int eof;                /* io_uring: closed by the peer while sending */
} conn_t;

static conn_t *conns[MAXFD];

/* Answer every complete request in in[]; stop when out[] could overflow. */
static void process(conn_t *c) {
    int pos = 0;
    while (c->olen + 16 < BUFSZ) {
        char *nl = memchr(c->in + pos, '\n', c->ilen - pos);
        if (!nl)
            break;
        int ll = (int)(nl - (c->in + pos)) + 1;
        if (ll > 4 && !strncmp(c->in + pos, "set ", 4)) {
            char *sp = c->in + pos + ll - 2;
            while (sp > c->in + pos && *sp != ' ')
                sp--;
            int n = atoi(sp + 1);
            if (n < 0 || n > BUFSZ / 2)
                n = 0;
            if (c->ilen - pos - ll < n + 2)
                break;
            pos += ll + n + 2;
            memcpy(c->out + c->olen, "STORED\r\n", 8);
            c->olen += 8;
        } else {
            pos += ll;
            memcpy(c->out + c->olen, "END\r\n", 5);
            c->olen += 5;
        }
    }
    memmove(c->in, c->in + pos, c->ilen - pos);
    c->ilen -= pos;
}

static int new_conn(int lfd) {
    int one = 1;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
    if (fd < 0)
        return -1;
    if (fd >= MAXFD) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conns[fd] = calloc(1, sizeof(conn_t));
    return fd;
}

static void drop(int fd) {
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

static void epoll_loop(int lfd) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                while ((fd = new_conn(lfd)) >= 0) {
                    ev.events = EPOLLIN;
                    ev.data.fd = fd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            conn_t *c = conns[fd];
            ssize_t r = recv(fd, c->in + c->ilen, BUFSZ - c->ilen, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN)) {
                drop(fd);
                continue;
            }
            if (r < 0)
                continue;
            c->ilen += (int)r;
            process(c);
            if (c->olen && send(fd, c->out, c->olen, MSG_NOSIGNAL) >= 0)
                c->olen = 0;
        }
    }
}

enum { UD_LISTEN = 1, UD_RECV = 2, UD_SEND = 3 };

static struct io_uring ring;

static void arm_recv(int fd) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, ((unsigned long long)UD_RECV << 32) | (unsigned)fd);
}

static void queue_send(int fd, conn_t *c) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    /* MSG_WAITALL: io_uring retries a short send itself and completes once */
    io_uring_prep_send(sqe, fd, c->out, c->olen, MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, ((unsigned long long)UD_SEND << 32) | (unsigned)fd);
    c->sending = 1;
}

static void uring_loop(int lfd) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (io_uring_queue_init_params(4096, &ring, &p)) {
        perror("io_uring_queue_init_params");
        exit(1);
    }
    struct io_uring_buf_ring *br;
    if (posix_memalign((void **)&br, 4096, NBUF * sizeof(struct io_uring_buf)))
        exit(1);
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF,
                                   .bgid = 0};
    if (io_uring_register_buf_ring(&ring, &reg, 0)) {
        perror("io_uring_register_buf_ring");
        exit(1);
    }
    io_uring_buf_ring_init(br);
    char *bufs = malloc((size_t)NBUF * PBUFSZ);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * PBUFSZ, PBUFSZ, i,
                              io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(br, NBUF);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_poll_multishot(sqe, lfd, POLLIN);
    io_uring_sqe_set_data64(sqe, (unsigned long long)UD_LISTEN << 32);
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            int fd = (int)(cqe->user_data & 0xffffffffu);
            int kind = (int)(cqe->user_data >> 32);
            conn_t *c = fd >= 0 && fd < MAXFD ? conns[fd] : NULL;
            if (kind == UD_LISTEN) {
                while ((fd = new_conn(lfd)) >= 0)
                    arm_recv(fd);
                continue;
            }
            if (c == NULL)
                continue;
            if (kind == UD_SEND) {
                c->sending = 0;
                c->olen = 0;
                if (c->eof) {
                    drop(fd);
                    continue;
                }
            } else {
                if (cqe->res <= 0) {
                    if (cqe->res == 0 || cqe->res != -ENOBUFS) {
                        if (!(cqe->flags & IORING_CQE_F_MORE)) {
                            if (c->sending)
                                c->eof = 1;     /* out[] is the kernel's until then */
                            else
                                drop(fd);
                        }
                        continue;
                    }
                } else {
                    int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                    int n = cqe->res;
                    if (n > BUFSZ - c->ilen)
                        n = BUFSZ - c->ilen;       /* the probe's load never gets here */
                    memcpy(c->in + c->ilen, bufs + (size_t)bid * PBUFSZ, n);
                    c->ilen += n;
                    io_uring_buf_ring_add(br, bufs + (size_t)bid * PBUFSZ, PBUFSZ, bid,
                                          io_uring_buf_ring_mask(NBUF), 0);
                    io_uring_buf_ring_advance(br, 1);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_recv(fd);
            }
            if (!c->sending) {
                process(c);
                if (c->olen)
                    queue_send(fd, c);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s 0|1 PORT  (0 epoll, 1 io_uring)\n", argv[0]);
        return 2;
    }
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1024)) {
        perror("bind/listen");
        return 1;
    }
    if (atoi(argv[1]) == 1)
        uring_loop(lfd);
    else
        epoll_loop(lfd);
    return 0;
}
