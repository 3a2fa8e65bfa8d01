# The pytest plugin (memcachepy/pytest_plugin.py): the sample project suite in
# tests/plugin_sample/ run in its own pytest process, against the embedded
# server and against real memcached through --memcached-address, the option's
# errors, the entry point, and docs/testing.md's snippets being the tested ones.
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import require_memcached
from support.daemons import KIND_MEMCACHED, REPO_ROOT

SAMPLE = REPO_ROOT / "tests" / "plugin_sample"
DOC = REPO_ROOT / "docs" / "testing.md"
CLOCK_TESTS = {"test_cache_aside", "test_cache_aside_reloads_after_ttl", "test_rate_limit_window",
               "test_report_is_computed_once_per_minute", "test_timeout_and_touch"}
FRAMEWORK_TESTS = {  # test name -> the module it needs
    "test_report_is_computed_once_per_minute": "flask_caching",
    "test_report_cache_is_shared_between_app_instances": "flask_caching",
    "test_set_get_and_get_or_set": "django", "test_incr_and_many": "django",
    "test_timeout_and_touch": "django", "test_starts_empty": "django",
}
ALL_TESTS = {"test_cache_aside", "test_cache_aside_loads_once", "test_cache_aside_reloads_after_ttl",
             "test_rate_limit_window", "test_cas_update_survives_a_concurrent_writer",
             "test_isolation_1_writes", "test_isolation_2_starts_empty",
             "test_too_large_value_is_refused", "test_stats_reflect_the_test"} | set(FRAMEWORK_TESTS)

pytestmark = pytest.mark.timeout(180)


def run_sample(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """Run the sample suite; (process, {test name: passed|failed|skipped|error})."""
    xml = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "memcachepy.pytest_plugin",
         "-c", str(SAMPLE / "pytest.ini"), "-p", "no:cacheprovider", "-q", "-rs",
         f"--junitxml={xml}", str(SAMPLE), *extra],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=150)
    outcomes: dict[str, str] = {}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
            outcomes[case.get("name")] = {"failure": "failed", "error": "error",
                                          "skipped": "skipped"}.get(kinds[0] if kinds else "", "passed")
    return proc, outcomes


def expected(name: str, clock_skipped: bool) -> str:
    mod = FRAMEWORK_TESTS.get(name)
    if mod and importlib.util.find_spec(mod) is None:
        return "skipped"
    if clock_skipped and name in CLOCK_TESTS:
        return "skipped"
    return "passed"


def test_sample_suite_on_the_embedded_server(tmp_path) -> None:
    proc, outcomes = run_sample(tmp_path)
    report = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert set(outcomes) == ALL_TESTS, report
    assert outcomes == {n: expected(n, False) for n in ALL_TESTS}, report
    assert proc.returncode == 0, report


def test_sample_suite_on_real_memcached(tmp_path, start_daemon) -> None:
    require_memcached()
    mc = start_daemon(KIND_MEMCACHED, "-I", "2m")
    proc, outcomes = run_sample(tmp_path, "--memcached-address", mc.server_string)
    report = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert outcomes == {n: expected(n, True) for n in ALL_TESTS}, report
    assert "advance_clock needs the embedded memcachepy server" in proc.stdout, report
    # everything ran against memcached: it saw the sample's sets
    assert int(mc_stat(mc.addr, "cmd_set")) > 10


def mc_stat(addr: tuple[str, int], name: str) -> str:
    from memcachepy.pytest_plugin import ExternalServer
    return ExternalServer(addr).stats()[name]


@pytest.mark.parametrize("address, message", [
    ("localhost", "wants HOST:PORT"), ("127.0.0.1:http", "bad port"),
    ("127.0.0.1:1", "Connection refused")])
def test_bad_memcached_address_is_a_usage_error(tmp_path, address, message) -> None:
    proc, outcomes = run_sample(tmp_path, "--memcached-address", address, "-k", "loads_once")
    assert proc.returncode != 0 and not any(v == "passed" for v in outcomes.values())
    assert message in proc.stdout + proc.stderr


def test_entry_point_is_declared() -> None:
    try:
        import tomllib
    except ImportError:          # Python < 3.11
        pytest.skip("needs tomllib")
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["pytest11"]
    assert eps == {"memcachepy.pytest_plugin": "memcachepy.pytest_plugin"}
    import memcachepy.pytest_plugin as plugin
    assert callable(plugin.pytest_addoption) and callable(plugin.memcached_client)


def test_docs_snippets_are_the_tested_ones() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    exec(compile(blocks[0], "docs/testing.md", "exec"), {})    # the embedded server's tour
    sources = "\n".join(p.read_text() for p in SAMPLE.rglob("*.py"))
    sample_lines = {ln.rstrip() for ln in sources.splitlines()}
    for block in blocks[1:]:
        missing = [ln for ln in block.splitlines() if ln.strip() and ln.rstrip() not in sample_lines]
        assert not missing, f"docs/testing.md lines not in tests/plugin_sample: {missing}"
