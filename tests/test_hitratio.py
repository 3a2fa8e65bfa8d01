# bench/hitratio --quick: the hit-ratio comparison runs end to end (a fresh memcached and a
# fresh memcachepy, the same seeded Zipf load with set on miss, with and without scans) and
# reports numbers that make sense. The full comparison (-m 64, three repetitions) is recorded
# in bench/RESULTS.md; here only that the difference is computed and sane, not its size on a
# short run.
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.daemons import REPO_ROOT, memcached_available


@pytest.mark.timeout(180)
def test_hitratio_quick_reports_both_daemons() -> None:
    if not memcached_available():
        pytest.skip("memcached not installed")
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "hitratio"), "--quick",
                          "--json"], check=True, capture_output=True, text=True, timeout=170,
                         cwd=REPO_ROOT).stdout
    res = json.loads(out)
    rows = res["rows"]
    assert {r["workload"] for r in rows} == {"zipf", "zipf+scan"}
    for r in rows:
        for kind in ("memcached", "memcachepy"):
            assert 0.2 < r[f"{kind}_hit_ratio"] < 1.0, r
            assert r[f"{kind}_hits"] <= r[f"{kind}_gets"] == res["config"]["requests"], r
            assert r[f"{kind}_evictions"] > 0, r          # ~10x more keys than fit
            # the same -m holds about as many items in both
            assert r[f"{kind}_curr_items"] > res["config"]["keyspace"] / 20, r
        assert r["diff_points"] == pytest.approx(
            100 * (r["memcachepy_hit_ratio"] - r["memcached_hit_ratio"]))
        assert abs(r["diff_points"]) < 5, r
    s = res["summary"]
    for kind in ("memcached", "memcachepy"):    # a scan's fresh keys can only miss
        assert s["zipf+scan"][kind] < s["zipf"][kind]
