# Shared pytest fixtures for memcachepy's socket-level tests.
#
# Owns: daemon start/stop fixtures (real memcached and memcachepy), the differential "pair"
# factory, the rules for when a test skips versus fails because a daemon is unavailable, and
# a default per-test timeout so that a hung daemon fails a test instead of hanging CI.
#
#  * memcached missing  -> differential tests FAIL when $CI is set (the reference is part of
#    the CI image, its absence is a broken environment), skip otherwise.
#  * memcachepy._core not importable -> memcachepy-side tests skip with the reason.
#
# Fixtures:  start_daemon(kind, *flags) -> Daemon      (any test; stopped at teardown)
#            start_many([(kind, flags), ...]) -> [Daemon]  (concurrent start, no checks)
#            daemon_pair(sut_kind, flags) -> (memcached, sut)   (differential tests)
#            module_daemons(kind, *flags) -> Daemon  (one per kind+flags per module,
#                      shared by the module's tests; stopped after the module)
#            kind      parametrises a test over memcached and memcachepy
#            sut_kind  parametrises the side compared with memcached ("sanity-memcached"
#                      runs memcached against itself, proving a comparison is deterministic)
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Callable

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support.daemons import (
    KIND_MEMCACHED,
    KIND_MEMCACHEPY,
    MEMCACHED_BIN,
    Daemon,
    memcached_available,
    memcachepy_status,
    reap_all,
    start_daemons,
)

DEFAULT_TIMEOUT = 120  # seconds per test unless the test sets its own

# A sample project suite for the pytest plugin: tests/test_pytest_plugin.py runs it
# in its own pytest process (with its own pytest.ini), never as part of this run.
collect_ignore = ["plugin_sample"]
BOTH_KINDS = (KIND_MEMCACHED, KIND_MEMCACHEPY)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "memcachepy_only: needs the compiled memcachepy core")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


def require_memcached() -> None:
    if memcached_available():
        return
    msg = f"real memcached ({MEMCACHED_BIN}) is not installed; apt-get install memcached"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set: the reference daemon is mandatory)")
    pytest.skip(msg)


def require_memcachepy() -> None:
    ok, reason = memcachepy_status()
    if not ok:
        pytest.skip(reason)


def require(kind: str) -> None:
    if kind == KIND_MEMCACHED:
        require_memcached()
    else:
        require_memcachepy()


@pytest.fixture(scope="session", autouse=True)
def _reap_daemons_at_exit() -> Iterator[None]:
    yield
    reap_all()


StartFn = Callable[..., Daemon]


@pytest.fixture
def start_daemon() -> Iterator[StartFn]:
    """Factory: start_daemon(kind, *flags) -> Daemon, stopped at teardown."""
    started: list[Daemon] = []

    def start(kind: str, *flags: str) -> Daemon:
        require(kind)
        d = start_daemons([(kind, flags)])[0]
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop(block=False)


PairFn = Callable[[str, Sequence[str]], "tuple[Daemon, Daemon]"]


@pytest.fixture
def daemon_pair() -> Iterator[PairFn]:
    """Factory: daemon_pair(sut_kind, flags) -> (reference memcached, system under test),
    both started concurrently with identical flags.  sut_kind "memcached" gives the
    memcached-vs-memcached sanity pairing that proves the normaliser is not too strict."""
    started: list[Daemon] = []

    def pair(sut_kind: str, flags: Sequence[str] = ()) -> tuple[Daemon, Daemon]:
        require_memcached()
        require(sut_kind)
        ds = start_daemons([(KIND_MEMCACHED, flags), (sut_kind, flags)])
        started.extend(ds)
        return ds[0], ds[1]

    yield pair
    for d in started:
        d.stop(block=False)


@pytest.fixture(scope="module")
def module_daemons() -> Iterator[StartFn]:
    """Factory: module_daemons(kind, *flags) -> Daemon, started on first use and shared by
    every test of the module that asks for the same kind and flags."""
    started: dict[tuple[str, tuple[str, ...]], Daemon] = {}

    def get(kind: str, *flags: str) -> Daemon:
        require(kind)
        if (kind, flags) not in started:
            started[kind, flags] = start_daemons([(kind, flags)])[0]
        return started[kind, flags]

    yield get
    for d in started.values():
        d.stop(block=False)


@pytest.fixture
def start_many() -> Iterator[Callable[[Sequence[tuple[str, Sequence[str]]]], list[Daemon]]]:
    """Factory: start_many([(kind, flags), ...]) starts several daemons concurrently, no
    availability checks (call require*() first); all are stopped at teardown."""
    started: list[Daemon] = []

    def start(specs: Sequence[tuple[str, Sequence[str]]]) -> list[Daemon]:
        ds = start_daemons(specs)
        started.extend(ds)
        return ds

    yield start
    for d in started:
        d.stop(block=False)


@pytest.fixture(params=BOTH_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both daemons (each must meet the same expectations)."""
    require(request.param)
    return request.param


@pytest.fixture(params=BOTH_KINDS, ids=["sanity-memcached", "memcachepy"])
def sut_kind(request: pytest.FixtureRequest) -> str:
    """The daemon compared against real memcached in differential tests."""
    return request.param
