#!/usr/bin/env bash
# Coverage-guided fuzzing of memcachepy's request path (issue 5, item 2).
#
#   tests/fuzz/run.sh [SECONDS] [--asan] [--merge]
#
# Builds the core in a scratch copy of the tree with clang -fsanitize=fuzzer-no-link (so
# libFuzzer sees the C code's edges and comparisons; with --asan also AddressSanitizer +
# UndefinedBehaviorSanitizer), builds libFuzzer as a shared library to preload (atheris'
# wheel ships none that an instrumented extension can link against), and runs
# tests/fuzz/fuzz_core.py for SECONDS (default 60) over the repo's corpus plus a scratch
# corpus. --merge minimises the result with libFuzzer's -merge=1 and adds a small sample of
# it (FUZZ_KEEP files, default 150) to tests/fuzz/corpus. Needs clang and libclang-rt-14-dev (apt) and atheris (pip).
# Crash inputs are written to $OUT/crash-*; the script exits non-zero if libFuzzer found one.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
SECONDS_TO_RUN=60
ASAN=0
MERGE=0
for a in "$@"; do
    case "$a" in
        --asan) ASAN=1 ;;
        --merge) MERGE=1 ;;
        *) SECONDS_TO_RUN="$a" ;;
    esac
done
PY="$(python3 -c 'import sys; print(sys.executable)')"
OUT="${FUZZ_OUT:-/tmp/memcachepy-fuzz}"
BUILD="$OUT/build-$ASAN"
mkdir -p "$OUT/corpus" "$BUILD"

command -v clang >/dev/null || { echo "fuzz: clang is needed (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
"$PY" -c 'import atheris' 2>/dev/null || "$PY" -m pip install -q atheris

RTDIR="$(dirname "$(clang -print-file-name=libclang_rt.asan-x86_64.so)")"
[ -d "$RTDIR" ] || RTDIR="$(clang --print-resource-dir)/lib/linux"
FUZZLIB="$RTDIR/libclang_rt.fuzzer_no_main-x86_64.a"
[ -f "$FUZZLIB" ] || FUZZLIB="$("$PY" -c 'import atheris, os; print(os.path.join(os.path.dirname(os.path.dirname(atheris.__file__)), "libclang_rt.fuzzer_no_main.a"))')"
if [ ! -f "$OUT/libfuzzer.so" ] || [ "$FUZZLIB" -nt "$OUT/libfuzzer.so" ]; then
    clang++ -shared -fPIC -o "$OUT/libfuzzer.so" -Wl,--whole-archive "$FUZZLIB" \
        -Wl,--no-whole-archive -lpthread -lm
fi

# Scratch copy of the current tree (uncommitted edits included), instrumented build.
(cd "$REPO" && tar --exclude=./build --exclude='*.so' --exclude=./ext/_core.c \
    --exclude=./bench/_loadgen.c --exclude=./.git -cf - .) | tar -xf - -C "$BUILD"
FLAGS="-fsanitize=fuzzer-no-link"
PRELOAD="$OUT/libfuzzer.so"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if [ "$ASAN" = 1 ]; then
    FLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -shared-libasan"
    # libFuzzer first: the ASan runtime carries do-nothing coverage hooks that would
    # otherwise win, and the fuzzer would see no edges of the core.
    PRELOAD="$PRELOAD:$RTDIR/libclang_rt.asan-x86_64.so"
    ASAN_OPTIONS="$ASAN_OPTIONS:verify_asan_link_order=0"
fi
(cd "$BUILD" && CC=clang LDSHARED="clang -shared" CFLAGS="$FLAGS -g -O1" MEMCACHEPY_DEBUG=1 \
    "$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1) || { tail -30 "$OUT/build.log"; exit 2; }

cd "$OUT"
run() {
    PYTHONPATH="$BUILD" LD_PRELOAD="$PRELOAD" "$PY" "$BUILD/tests/fuzz/fuzz_core.py" \
        -dict="$REPO/tests/fuzz/memcached.dict" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$OUT/" -print_final_stats=1 "$@"
}
run -max_total_time="$SECONDS_TO_RUN" "$OUT/corpus" "$REPO/tests/fuzz/corpus"
if [ "$MERGE" = 1 ]; then
    # libFuzzer re-runs argv[0] for the merge, so the script runs as an executable (it
    # has a shebang); files are only replaced when the merge produced a corpus.
    rm -rf "$OUT/merged"
    mkdir -p "$OUT/merged"
    run -merge=1 "$OUT/merged" "$REPO/tests/fuzz/corpus" "$OUT/corpus"
    # A full merge keeps ~2,000 files (every hit-count feature); the repo keeps a small
    # sample of them (<= 1.5 KB each), added to what is there.
    "$PY" - "$OUT/merged" "$REPO/tests/fuzz/corpus" "${FUZZ_KEEP:-150}" <<'PYEOF'
import os, random, shutil, sys
src, dst, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
have = set(os.listdir(dst))
pool = sorted(f for f in os.listdir(src)
              if f not in have and os.path.getsize(os.path.join(src, f)) <= 1536)
for f in random.Random(1).sample(pool, min(keep, len(pool))):
    shutil.copy(os.path.join(src, f), os.path.join(dst, f))
PYEOF
    echo "fuzz: corpus now $(ls "$REPO/tests/fuzz/corpus" | wc -l) files"
fi
