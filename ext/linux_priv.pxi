# linux_priv.pxi -- -o drop_privileges: the seccomp allowlist (linux_priv.h,
# memcached's linux_priv.c), installed by Python once start-up is done.
#
# Nothing here runs per request; the filter itself costs one short BPF run per
# system call in every thread.

cdef extern from "linux_priv.h" nogil:
    int mc_seccomp_supported()
    int mc_seccomp_install()
    long mc_seccomp_forbidden_call()

# 0 on success, else the errno of the failure (ENOSYS: not supported here).
cdef int linux_priv_drop() noexcept nogil:
    if mc_seccomp_install() != 0:
        return errno
    return 0
