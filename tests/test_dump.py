# `lru_crawler metadump` / `mgdump` on a large cache: streamed a shard at a time
# (the dump pauses while its output waits), complete, in memcached's format,
# and other connections keep being served meanwhile.
from __future__ import annotations

import re
import time

import pytest
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(120)

N = 120000


def fill(s: Conn, n: int) -> None:
    for start in range(0, n, 2000):
        s.send(b"".join(b"set key:%d 0 0 4 noreply\r\nabcd\r\n" % i
                        for i in range(start, min(n, start + 2000))))
    s.request(b"")


def read_dump(s: Conn) -> bytes:
    return s.read_until(b"END\r\n")


@pytest.mark.parametrize("cmd,pattern", [
    (b"lru_crawler metadump all\r\n",
     rb"key=key%3A\d+ exp=-1 la=\d+ cas=\d+ fetch=no cls=1 size=\d+"),
    (b"lru_crawler mgdump all\r\n", rb"mg key:\d+"),
])
def test_large_dump_is_complete(start_daemon, cmd, pattern):
    d = start_daemon("memcachepy", "-m", "256")
    s = Conn(d.addr)
    fill(s, N)
    s.send(cmd)
    out = read_dump(s)
    lines = out.split(b"\n" if b"metadump" in cmd else b"\r\n")
    body = [ln for ln in lines if ln and ln not in (b"END\r", b"END")]
    assert len(body) == N
    assert all(re.fullmatch(pattern, ln) for ln in body[:: 997])
    keys = {ln.split()[0].split(b"=")[-1] if b"metadump" in cmd else ln.split()[1] for ln in body}
    assert len(keys) == N
    # the connection is usable afterwards
    s.send(b"get key:7\r\n")
    assert s.read_until(b"END\r\n") == b"VALUE key:7 0 4\r\nabcd\r\nEND\r\n"


def test_dump_streams_while_client_reads_slowly(start_daemon):
    d = start_daemon("memcachepy", "-m", "256")
    s = Conn(d.addr)
    fill(s, N)
    s.send(b"lru_crawler metadump all\r\n")
    time.sleep(0.5)          # the client reads nothing yet: ~10 MB cannot all be in flight
    other = Conn(d.addr)
    other.send(b"get key:1\r\n")                     # served while the dump waits
    assert other.read_until(b"END\r\n") == b"VALUE key:1 0 4\r\nabcd\r\nEND\r\n"
    out = read_dump(s)
    assert out.count(b"\n") == N + 1


def test_dump_output_is_bounded():
    """Through the test hook: the most output ever queued for the dump stays near the
    output high-water mark (256 KB) plus one shard's share, not the whole dump."""
    from memcachepy import _core
    from memcachepy.settings import Settings
    st = _core.Store(Settings().to_core())
    try:
        for i in range(N):
            st.set(b"key:%d" % i, b"abcd")
        out, closed, max_pending, _ = _core.feed(b"lru_crawler metadump all\r\n")
        assert out.endswith(b"END\r\n") and out.count(b"\n") == N + 1
        assert len(out) > 8 * 1024 * 1024
        assert max_pending < 2 * 1024 * 1024, max_pending
    finally:
        st.close()
