# Short soak in the default run (issue 5, item 6); the long one is `python -m tests.soak
# --minutes 10` (see tests/soak.py and docs/reliability.md).
#
# 8 client threads against memcachepy -m 32 -t 4 for SOAK_SECONDS (default 30): mixed sizes
# up to ~1 MB, TTLs, multigets, deletes, touches, exact per-thread counters and values over
# -I, under constant eviction. Every hit's embedded key, length and CRC32 are verified.
from __future__ import annotations

import json
import os

import pytest

from conftest import require_memcachepy
import soak

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))


@pytest.mark.timeout(SECONDS + 120)
def test_soak_short() -> None:
    require_memcachepy()
    res = soak.run(SECONDS, threads=8, mem_mb=32, workers=4, verbose=False)
    print(json.dumps(res))
    assert res["corrupted"] == 0, res["errors"]
    assert not res["errors"], res["errors"]
    assert res["alive_at_end"] and res["exit_code"] == 0
    assert res["evictions"] > 0, "no eviction pressure: the soak is not testing the LRU"
    assert res["hits"] > 1000 and res["too_large"] > 0
    if not any(x in os.environ.get("LD_PRELOAD", "") for x in ("asan", "tsan")):
        # (under a sanitizer RSS is the sanitizer's shadow and quarantine, not ours)
        assert res["rss_mb_max_after_third"] - res["rss_mb_at_third"] <= 4.0, res
