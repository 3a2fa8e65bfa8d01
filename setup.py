"""Build the compiled core (and, when present, the benchmark load generator).

Everything else about the package is in pyproject.toml. Set MEMCACHEPY_DEBUG=1
to build with assertions and debug info, MEMCACHEPY_SANITIZE=address,undefined
(or thread) to add sanitizers, for the reliability runs. MEMCACHEPY_TRACK_WRITES=1
(with CC=clang) builds the write-tracking core bench/false_sharing measures
(ext/track_writes.h); never a daemon to run.
"""
import os
import platform

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("MEMCACHEPY_DEBUG") == "1"
sanitize = os.environ.get("MEMCACHEPY_SANITIZE", "")

cflags = ["-O2", "-fno-strict-aliasing", "-Wno-unused-function", "-Wno-unreachable-code"]
ldflags = []
macros = []
if debug or sanitize:
    cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-strict-aliasing", "-Wno-unused-function"]
    macros.append(("MEMCACHEPY_DEBUG", "1"))
else:
    macros.append(("NDEBUG", "1"))
    if platform.machine() in ("x86_64", "AMD64") and "clang" not in os.environ.get("CC", ""):
        # gcc inlines a memcpy of unknown size (a key into a reply) as `rep movsq`,
        # whose start-up costs more than the copy of a 10-40 byte key; glibc's
        # memcpy does short copies in a few vector moves. 100-key multigets:
        # 5.2 M -> 6.7 M keys/s, depth 16 +5 %, 1 KB sets unchanged (bench/README.md)
        cflags.append("-mstringop-strategy=libcall")
if sanitize:
    macros.append(("MEMCACHEPY_SANITIZED", "1"))    # no seccomp filter (linux_priv.h)
    cflags.append(f"-fsanitize={sanitize}")
    ldflags.append(f"-fsanitize={sanitize}")

if os.environ.get("MEMCACHEPY_TRACK_WRITES") == "1":
    macros.append(("MEMCACHEPY_TRACK_WRITES", "1"))
    cflags.append("-fsanitize-coverage=trace-pc-guard,trace-stores")

extensions = [
    Extension(
        "memcachepy._core",
        ["ext/_core.pyx"],
        include_dirs=["ext"],
        libraries=["ssl", "crypto"],      # TLS (-Z): Debian's libssl-dev, OpenSSL 3
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
]
if os.path.exists(os.path.join("bench", "_loadgen.pyx")):
    extensions.append(
        Extension(
            "memcachepy._loadgen",
            ["bench/_loadgen.pyx"],
            include_dirs=["bench"],
            extra_compile_args=["-O2"],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        include_path=["ext"],
    )
)
