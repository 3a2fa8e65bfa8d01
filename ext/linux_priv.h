/*
 * linux_priv.h -- memcached's -o drop_privileges (linux_priv.c): a seccomp
 * filter over the whole process once start-up is done.
 *
 * The filter is an allowlist. memcachepy's process is more than memcached's:
 * besides the workers and the acceptor, the Python main thread keeps serving
 * signals, logging (and reopening the log on SIGHUP), TLS certificate reloads,
 * the metrics thread (an HTTP server that scrapes the daemon over TCP), the
 * systemd watchdog, and the interpreter's own shutdown; the list covers what
 * those need and nothing that changes identity, mounts, namespaces, other
 * processes' memory or loads code (execve, ptrace, mount, setuid, bpf, ...).
 *
 * Anything else traps (SECCOMP_RET_TRAP): the SIGSYS handler writes
 * memcached's message with the system call's number to stderr (the log file
 * under --log-file) and _exit()s with status 1, so a block is never silent.
 * The filter is installed with SECCOMP_FILTER_FLAG_TSYNC so every thread
 * already running gets it. Built with a sanitizer the filter is left off: the
 * sanitizer runtimes make calls of their own when they report.
 */
#ifndef MEMCACHEPY_LINUX_PRIV_H
#define MEMCACHEPY_LINUX_PRIV_H

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#if defined(__linux__) && !defined(MEMCACHEPY_SANITIZED) && \
    (defined(__x86_64__) || defined(__aarch64__))
#define MC_SECCOMP 1
#if defined(__x86_64__)
#define MC_AUDIT_ARCH AUDIT_ARCH_X86_64
#else
#define MC_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif
#else
#define MC_SECCOMP 0
#endif

#define MC_KILL_MSG "Seccomp policy failure. Caught syscall ???. This is " \
    "either an exploit attempt, or your system is not supported yet.\n"

static char mc_kill_msg[] = MC_KILL_MSG;

static void mc_seccomp_sigsys(int signum, siginfo_t *si, void *ctx) {
    int nr = si->si_syscall;
    (void)signum; (void)ctx;
    /* only async-signal-safe work: patch the digits, write, _exit */
    mc_kill_msg[39] = (char)('0' + (nr / 100) % 10);
    mc_kill_msg[40] = (char)('0' + (nr / 10) % 10);
    mc_kill_msg[41] = (char)('0' + nr % 10);
    if (write(2, mc_kill_msg, sizeof(mc_kill_msg) - 1) < 0) {
        /* nothing more can be done */
    }
    _exit(1);
}

static inline int mc_seccomp_supported(void) {
    return MC_SECCOMP;
}

#if MC_SECCOMP
#define MC_ALLOW(name) \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, 0, 1), \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static const struct sock_filter mc_seccomp_prog[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MC_AUDIT_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
    /* x32 ABI numbers carry this bit: never allowed */
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
#endif
    /* the request path: workers and acceptor */
    MC_ALLOW(read), MC_ALLOW(write), MC_ALLOW(readv), MC_ALLOW(writev),
    MC_ALLOW(close), MC_ALLOW(epoll_pwait), MC_ALLOW(epoll_ctl),
    MC_ALLOW(accept4), MC_ALLOW(sendto), MC_ALLOW(recvfrom), MC_ALLOW(sendmsg),
    MC_ALLOW(recvmsg), MC_ALLOW(setsockopt), MC_ALLOW(getsockopt),
    MC_ALLOW(getsockname), MC_ALLOW(getpeername), MC_ALLOW(shutdown),
    MC_ALLOW(futex), MC_ALLOW(clock_gettime), MC_ALLOW(clock_nanosleep),
    MC_ALLOW(nanosleep), MC_ALLOW(gettid), MC_ALLOW(getpid), MC_ALLOW(kill),
    MC_ALLOW(tgkill), MC_ALLOW(sched_yield), MC_ALLOW(mmap), MC_ALLOW(munmap),
    MC_ALLOW(mremap), MC_ALLOW(mprotect), MC_ALLOW(madvise), MC_ALLOW(brk),
    MC_ALLOW(rt_sigreturn), MC_ALLOW(rt_sigprocmask), MC_ALLOW(rt_sigaction),
    MC_ALLOW(sigaltstack), MC_ALLOW(restart_syscall), MC_ALLOW(exit),
    MC_ALLOW(exit_group), MC_ALLOW(getrandom), MC_ALLOW(membarrier),
    MC_ALLOW(getrusage), MC_ALLOW(times),
    /* the interpreter: main loop, logging, log reopen, TLS reload, metrics
       and watchdog threads, shutdown */
    MC_ALLOW(openat), MC_ALLOW(fstat), MC_ALLOW(newfstatat), MC_ALLOW(statx),
    MC_ALLOW(lseek), MC_ALLOW(pread64), MC_ALLOW(fcntl), MC_ALLOW(ioctl),
    MC_ALLOW(dup), MC_ALLOW(dup3), MC_ALLOW(pipe2), MC_ALLOW(pselect6),
    MC_ALLOW(ppoll), MC_ALLOW(socket), MC_ALLOW(socketpair), MC_ALLOW(connect),
    MC_ALLOW(bind), MC_ALLOW(listen), MC_ALLOW(unlinkat), MC_ALLOW(renameat),
    MC_ALLOW(getcwd), MC_ALLOW(readlinkat), MC_ALLOW(faccessat),
    MC_ALLOW(faccessat2), MC_ALLOW(getdents64), MC_ALLOW(fsync),
    MC_ALLOW(fdatasync), MC_ALLOW(ftruncate), MC_ALLOW(uname), MC_ALLOW(sysinfo),
    MC_ALLOW(prlimit64), MC_ALLOW(getuid), MC_ALLOW(geteuid), MC_ALLOW(getgid),
    MC_ALLOW(getegid), MC_ALLOW(getppid), MC_ALLOW(clone), MC_ALLOW(clone3),
    MC_ALLOW(set_robust_list), MC_ALLOW(rseq), MC_ALLOW(sched_getaffinity),
    MC_ALLOW(prctl), MC_ALLOW(clock_getres), MC_ALLOW(gettimeofday),
    MC_ALLOW(eventfd2), MC_ALLOW(epoll_create1), MC_ALLOW(sendmmsg),
    MC_ALLOW(recvmmsg), MC_ALLOW(tkill), MC_ALLOW(set_tid_address),
    MC_ALLOW(umask), MC_ALLOW(fchmod),
#if defined(__x86_64__)
    MC_ALLOW(epoll_wait), MC_ALLOW(select), MC_ALLOW(poll), MC_ALLOW(open),
    MC_ALLOW(stat), MC_ALLOW(lstat), MC_ALLOW(dup2), MC_ALLOW(pipe),
    MC_ALLOW(unlink), MC_ALLOW(rename), MC_ALLOW(readlink), MC_ALLOW(access),
    MC_ALLOW(time), MC_ALLOW(getrlimit), MC_ALLOW(accept), MC_ALLOW(arch_prctl),
#endif
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
};

/* Install the filter on every thread. 0, or -1 with errno set. */
static inline int mc_seccomp_install(void) {
    struct sock_fprog prog;
    struct sigaction act;
    memset(&act, 0, sizeof(act));
    act.sa_sigaction = mc_seccomp_sigsys;
    act.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &act, NULL) != 0)
        return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    prog.len = (unsigned short)(sizeof(mc_seccomp_prog) / sizeof(mc_seccomp_prog[0]));
    prog.filter = (struct sock_filter *)mc_seccomp_prog;
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
        return -1;
    return 0;
}

/* Test hook: a call the filter does not allow (personality(0xffffffff) only
   queries, so it is harmless where no filter is installed). */
static inline long mc_seccomp_forbidden_call(void) {
    return syscall(__NR_personality, 0xffffffffUL);
}
#else
static inline int mc_seccomp_install(void) { errno = ENOSYS; return -1; }
static inline long mc_seccomp_forbidden_call(void) { return 0; }
#endif

#endif
