#!/usr/bin/env python3
# Coverage-guided fuzzing of memcachepy's parser and request streams with atheris.
#
# Run on demand (see docs/reliability.md), e.g. for ten minutes with ASan:
#   tests/fuzz/run.sh 600
# or directly (libFuzzer flags after the script name):
#   python tests/fuzz/fuzz_core.py -dict=tests/fuzz/memcached.dict -max_len=8192 \
#       -max_total_time=60 /tmp/corpus tests/fuzz/corpus
# For coverage of the C code (not just this file) the extension must be built with
# clang -fsanitize=fuzzer-no-link (run.sh does that in a scratch copy); with an ordinary
# build this is still a random-input fuzzer with the same oracle. Crashes land in
# ./crash-* files; reproduce one with `python tests/fuzz/fuzz_core.py crash-<sha>`.
from __future__ import annotations

import os
import sys

# libFuzzer's coverage hooks live in the copy atheris loads; make them visible to the
# instrumented extension loaded later.
sys.setdlopenflags(sys.getdlopenflags() | os.RTLD_GLOBAL)

import atheris  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

harness = None


def test_one_input(data: bytes) -> None:
    stream, cuts = harness.split_input(data)
    # `verbosity 2` would make every later request print to stderr, which drowns the
    # fuzzer's own output and halves its speed; the differential tests cover it.
    stream = stream.replace(b"verbosity", b"verbosit_")
    harness.run_one(stream, cuts)


def main() -> None:
    global harness
    atheris.Setup(sys.argv, test_one_input)
    # An instrumented extension resolves libFuzzer's coverage hooks from the copy atheris
    # loads in Setup(), so the core is imported only now.
    import harness as h
    harness = h
    harness.core()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
