# ElastiCache-style auto discovery on one node (issue 9): `config get cluster` and the legacy
# `get AmazonElastiCache:cluster`, byte for byte in AWS's documented framing; the node list
# from `-o cluster_file=` (and the config file's `cluster_file` line), `config set cluster`,
# SIGHUP reloads, version bumps, malformed files refused at start-up and at reload; and,
# without a cluster file, exactly memcached's answers (compared with real memcached).
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import require_memcachepy
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, REPO_ROOT, command_line
from support.rawclient import Conn, Raw, run_transcript

# AWS's documented example cluster (AutoDiscovery.AddingToYourClientLibrary, "Output
# format"): two nodes, config version 12 on AWS; here the first version a node serves is 1.
AWS_NODES = (b"myCluster.pc4ldq.0001.use1.cache.amazonaws.com|10.82.235.120|11211",
             b"myCluster.pc4ldq.0002.use1.cache.amazonaws.com|10.80.249.27|11211")
# The two body lines are "1\n" (2 bytes) and the node line with its "\n" (66 + 1 + 65 + 1):
# 135 bytes, counted by hand, not computed by the code under test.
GOLDEN_CONFIG = (b"CONFIG cluster 0 135\r\n"
                 b"1\n"
                 b"myCluster.pc4ldq.0001.use1.cache.amazonaws.com|10.82.235.120|11211 "
                 b"myCluster.pc4ldq.0002.use1.cache.amazonaws.com|10.80.249.27|11211\n"
                 b"\r\n"
                 b"END\r\n")
GOLDEN_LEGACY = GOLDEN_CONFIG.replace(b"CONFIG cluster 0", b"VALUE AmazonElastiCache:cluster 0")


def write_nodes(path: str, *entries: bytes, comments: bool = True) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        if comments:
            f.write(b"# cluster file written by the test\n\n")
        for e in entries:
            f.write(b"  " + e + b"   # a node\n" if comments else e + b"\n")
    os.replace(tmp, path)


def request(addr, data: bytes, timeout: float = 5.0) -> bytes:
    """Send data, read until the reply to a trailing `version` arrived."""
    with Conn(addr) as c:
        return c.request(data)


def config_get(addr) -> bytes:
    reply = request(addr, b"config get cluster\r\n")
    return reply[:reply.rindex(b"VERSION ")]      # the sentinel's reply


def parse_config(reply: bytes) -> tuple[int, list[bytes]]:
    head, _, rest = reply.partition(b"\r\n")
    n = int(head.split()[3])
    body = rest[:n]
    assert rest[n:] == b"\r\nEND\r\n", reply
    version, nodes, tail = body.split(b"\n")
    assert tail == b""
    return int(version), nodes.split(b" ")


def wait_version(addr, want: int, deadline: float = 10.0) -> tuple[int, list[bytes]]:
    end = time.monotonic() + deadline
    while True:
        v, nodes = parse_config(config_get(addr))
        if v == want or time.monotonic() > end:
            return v, nodes
        time.sleep(0.02)


@pytest.fixture
def cluster_file(tmp_path) -> str:
    path = str(tmp_path / "nodes")
    write_nodes(path, *AWS_NODES)
    return path


@pytest.fixture
def node(start_daemon, cluster_file):
    return start_daemon(KIND_MEMCACHEPY, "-o", f"cluster_file={cluster_file}")


def test_golden_transcript(node):
    """The exact bytes of AWS's documented format, for both request forms and for the
    LF-only request lines discovery scripts send."""
    with Conn(node.addr) as c:
        c.send(b"config get cluster\r\n")
        assert c.read_idle(idle=0.3) == GOLDEN_CONFIG
        c.send(b"get AmazonElastiCache:cluster\r\n")
        assert c.read_idle(idle=0.3) == GOLDEN_LEGACY
        c.send(b"config get cluster\n")
        assert c.read_idle(idle=0.3) == GOLDEN_CONFIG
        # pipelined with ordinary commands, in order
        c.send(b"set k 0 0 1\r\nx\r\nconfig get cluster\r\nget k\r\n")
        assert c.read_idle(idle=0.3) == b"STORED\r\n" + GOLDEN_CONFIG + b"VALUE k 0 1\r\nx\r\nEND\r\n"


def test_legacy_key_only_as_single_get(node):
    """Only `get AmazonElastiCache:cluster` alone is the discovery request; in a multiget
    or with gets it is an ordinary key, as on any memcached."""
    out = request(node.addr, b"get AmazonElastiCache:cluster other\r\ngets AmazonElastiCache:cluster\r\n")
    assert out.startswith(b"END\r\nEND\r\n"), out


def test_version_bumps(node, cluster_file):
    addr = node.addr
    assert parse_config(config_get(addr)) == (1, list(AWS_NODES))
    # config set: the next version, entries separated by spaces or line ends
    body = b"a.example|127.0.0.1|11311\nb.example|::1|11312"
    out = request(addr, b"config set cluster 0 %d\r\n%s\r\n" % (len(body), body))
    assert out.startswith(b"OK\r\n"), out
    assert parse_config(config_get(addr)) == (2, [b"a.example|127.0.0.1|11311", b"b.example|::1|11312"])
    # the same list again: no change, no bump
    same = b"  " + body.replace(b"\n", b" \r\n\t") + b"\n"
    out = request(addr, b"config set cluster 0 %d noreply\r\n%s\r\n" % (len(same), same))
    assert out.startswith(b"VERSION "), out
    assert parse_config(config_get(addr))[0] == 2
    # SIGHUP re-reads the file (which differs from what config set installed): 3
    node.proc.send_signal(signal.SIGHUP)
    assert wait_version(addr, 3) == (3, list(AWS_NODES))
    # SIGHUP with the file unchanged: still 3
    node.proc.send_signal(signal.SIGHUP)
    write_nodes(cluster_file, *AWS_NODES, b"c.example|10.0.0.3|11211")
    node.proc.send_signal(signal.SIGHUP)
    v, nodes = wait_version(addr, 4)
    assert (v, nodes) == (4, [*AWS_NODES, b"c.example|10.0.0.3|11211"])
    # a malformed file at reload: logged with file:line, the old list stays
    write_nodes(cluster_file, AWS_NODES[0], b"c.example|10.0.0.999|11211", comments=False)
    node.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while "keeping cluster config version 4" not in node.stderr_text() and time.monotonic() < end:
        time.sleep(0.02)
    err = node.stderr_text()
    assert f"{cluster_file}:2:" in err and "'10.0.0.999' is not an IPv4 or IPv6 address" in err, err
    assert "keeping cluster config version 4" in err
    assert parse_config(config_get(addr)) == (4, [*AWS_NODES, b"c.example|10.0.0.3|11211"])


@pytest.mark.parametrize("body,reply", [
    (b"a|127.0.0.1|0", b"CLIENT_ERROR invalid cluster node entry (want hostname|ip|port)"),
    (b"a|127.0.0.1|65536", b"CLIENT_ERROR invalid cluster node entry (want hostname|ip|port)"),
    (b"a|localhost|1", b"CLIENT_ERROR invalid cluster node entry (want hostname|ip|port)"),
    (b"|127.0.0.1|1", b"CLIENT_ERROR invalid cluster node entry (want hostname|ip|port)"),
    (b"a|127.0.0.1|1|x", b"CLIENT_ERROR invalid cluster node entry (want hostname|ip|port)"),
    (b"a|127.0.0.1", b"CLIENT_ERROR invalid cluster node entry (want hostname|ip|port)"),
    (b"a|127.0.0.1|1 b|127.0.0.1|1", b"CLIENT_ERROR duplicate cluster node"),
    (b"   \n ", b"CLIENT_ERROR empty cluster node list"),
])
def test_config_set_refuses_bad_lists(node, body, reply):
    out = request(node.addr, b"config set cluster 0 %d noreply\r\n%s\r\n" % (len(body), body))
    assert out.startswith(reply + b"\r\nVERSION "), out     # errors are sent even with noreply
    assert parse_config(config_get(node.addr)) == (1, list(AWS_NODES))


def test_config_set_framing_errors(node):
    addr = node.addr
    steps = [
        b"config set cluster 0 5\r\nabcdefg\r\n",     # data longer than said: bad data chunk
        b"config set cluster x 5\r\n",                 # bad flags: the line alone is refused
        b"config set cluster 0 -1\r\n",
        Raw(b"config set cluster 0 60001\r\n"), Raw(b"x" * 60001 + b"\r\n"),   # too large: swallowed
        b"config get nothing\r\n",
        b"config\r\n",
        b"config set cluster 0\r\n",
    ]
    out = run_transcript(addr, steps)
    assert out.split(b"\r\n")[:-1] == [
        b"CLIENT_ERROR bad data chunk", b"ERROR",        # "g" was the start of a new line
        b"VERSION 1.6.18",
        b"CLIENT_ERROR bad command line format", b"VERSION 1.6.18",
        b"CLIENT_ERROR bad command line format", b"VERSION 1.6.18",
        b"SERVER_ERROR object too large for cache",
        b"ERROR", b"VERSION 1.6.18",
        b"ERROR", b"VERSION 1.6.18",
        b"ERROR", b"VERSION 1.6.18",
    ], out
    assert parse_config(config_get(addr)) == (1, list(AWS_NODES))


def test_without_cluster_file_answers_as_memcached(daemon_pair, sut_kind):
    """No cluster configured: `config ...` is an unknown command and the legacy key an
    ordinary key, byte for byte as memcached 1.6.18."""
    steps = [
        b"config get cluster\r\n",
        b"config get cluster\n",
        b"config\r\n",
        b"config set cluster 0 13\r\na|127.0.0.1|1\r\n",
        b"get AmazonElastiCache:cluster\r\n",
        b"set AmazonElastiCache:cluster 0 0 3\r\nabc\r\n",
        b"get AmazonElastiCache:cluster\r\n",
    ]
    ref, sut = daemon_pair(sut_kind)
    a = run_transcript(ref.addr, steps)
    b = run_transcript(sut.addr, steps)
    assert a == b
    assert a.startswith(b"ERROR\r\nVERSION ")


BAD_FILES = [
    (b"", "no nodes"),
    (b"# only a comment\n\n", "no nodes"),
    (b"a|127.0.0.1|11211\nb|127.0.0.1|70000\n", ":2: 'b|127.0.0.1|70000': bad port '70000'"),
    (b"a|127.0.0.1\n", ":1: 'a|127.0.0.1' is not hostname|ip|port"),
    (b"a|127.0.0.1|1 b|127.0.0.1|2\n", ":1: one hostname|ip|port entry per line"),
    (b"a|127.0.0.1|1\nb|127.0.0.1|1\n", ":2: 127.0.0.1|1 is already listed on line 1"),
    (b"a|host.example|1\n", ":1: 'a|host.example|1': 'host.example' is not an IPv4 or IPv6 address"),
    (b"\xff|127.0.0.1|1\n", "cluster file is not ASCII text"),
]


@pytest.mark.parametrize("content,message", BAD_FILES)
def test_malformed_file_refused_at_start(tmp_path, content, message):
    require_memcachepy()
    path = tmp_path / "nodes"
    path.write_bytes(content)
    proc = subprocess.run(command_line(KIND_MEMCACHEPY, ["-o", f"cluster_file={path}"]),
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64, proc
    assert message in proc.stderr, proc.stderr
    assert str(path) in proc.stderr


def test_missing_file_and_check_config(tmp_path):
    require_memcachepy()
    base = command_line(KIND_MEMCACHEPY, [])
    proc = subprocess.run(base + ["-o", f"cluster_file={tmp_path}/absent"], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64
    assert f"cannot read cluster file {tmp_path}/absent: No such file or directory" in proc.stderr
    proc = subprocess.run(base + ["-o", "cluster_file"], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr.strip()) == (1, "Missing cluster_file argument")
    # the config file's `cluster_file PATH` line, checked by --check-config
    nodes = tmp_path / "nodes"
    nodes.write_bytes(b"a|127.0.0.1|1\na|127.0.0.1|1\n")
    conf = tmp_path / "memcachepy.conf"
    conf.write_text(f"-m 64\ncluster_file {nodes}\n")
    proc = subprocess.run(base + ["--config", str(conf), "--check-config"], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64 and "already listed on line 1" in proc.stderr, proc


def test_config_file_line(start_daemon, tmp_path):
    nodes = tmp_path / "nodes"
    write_nodes(str(nodes), *AWS_NODES)
    conf = tmp_path / "memcachepy.conf"
    conf.write_text(f"# discovery\ncluster_file {nodes}\n")
    d = start_daemon(KIND_MEMCACHEPY, "--config", str(conf))
    assert config_get(d.addr).startswith(GOLDEN_CONFIG)


# Entries both validators (the file's, in Python, and the core's, for `config set`) judge.
ENTRIES = [
    ("a|127.0.0.1|1", True), ("h.example.com|10.0.0.1|65535", True), ("x|::1|11211", True),
    ("x|fe80::1|11211", True), ("x|::ffff:10.0.0.1|1", True),
    ("a|127.0.0.1|0", False), ("a|127.0.0.1|65536", False), ("a|127.0.0.1|-1", False),
    ("a|127.0.0.1|+1", False), ("a|127.0.0.1|1x", False), ("a|127.0.0.1|", False),
    ("|127.0.0.1|1", False), ("a||1", False), ("a|1.2.3|1", False), ("a|1.2.3.4.5|1", False),
    ("a|fe80::1%eth0|1", False), ("a|b|127.0.0.1|1", False), ("a|127.0.0.1", False),
    ("a" * 256 + "|127.0.0.1|1", False), ("a" * 255 + "|127.0.0.1|1", True),
    ("a|127.0.0.1|000001", False), ("a|127.0.0.1|01", False), ("a|127.0.0.1|10", True),
]


@pytest.mark.parametrize("entry,ok", ENTRIES)
def test_validators_agree(entry, ok):
    require_memcachepy()
    from memcachepy import _core, discovery
    assert (_core.cluster_check(entry.encode())[1] is None) == ok
    try:
        discovery.parse_entry(entry)
        py_ok = True
    except ValueError:
        py_ok = False
    assert py_ok == ok


def test_replies_never_torn_while_the_list_changes(node):
    """Workers copy the list while admins replace it: every reply must be one of the
    lists installed, whole, with a byte count that matches (run under ASan in .ci)."""
    addr = node.addr
    lists = [b" ".join(b"n%d|10.0.%d.%d|11211" % (i, k, i) for i in range(1 + 40 * k)) for k in range(3)]
    stop = threading.Event()
    errors: list[bytes] = []

    def writer() -> None:
        with socket.create_connection(addr, timeout=5) as s:
            i = 0
            while not stop.is_set():
                body = lists[i % 3]
                s.sendall(b"config set cluster 0 %d noreply\r\n%s\r\n" % (len(body), body))
                i += 1
                if i % 50 == 0:
                    s.sendall(b"version\r\n")
                    buf = b""
                    while not buf.endswith(b"\r\n"):
                        buf += s.recv(100)
                    if buf != b"VERSION 1.6.18\r\n":
                        errors.append(buf)
                        return

    def reader() -> None:
        with Conn(addr) as c:
            for _ in range(300):
                reply = c.request(b"config get cluster\r\n")
                reply = reply[:reply.rindex(b"VERSION ")]
                try:
                    _, nodes = parse_config(reply)
                except Exception:   # noqa: BLE001 - any framing problem is the failure
                    errors.append(reply)
                    return
                if b" ".join(nodes) not in lists:
                    errors.append(reply)
                    return

    first = lists[0]
    assert request(addr, b"config set cluster 0 %d\r\n%s\r\n" % (len(first), first)).startswith(b"OK")
    w = threading.Thread(target=writer)
    readers = [threading.Thread(target=reader) for _ in range(3)]
    w.start()
    for t in readers:
        t.start()
    for t in readers:
        t.join(60)
    stop.set()
    w.join(10)
    assert not errors, errors[:1]
    assert node.alive()


def reference_parse(body: bytes):
    """The file parser's rules applied to a `config set` body: entries separated by
    spaces, tabs and line ends; (normalised, None) or (None, reason kind)."""
    from memcachepy import discovery
    entries = [e for e in re.split(rb"[ \t\r\n]+", body) if e]
    seen = set()
    for e in entries:
        try:
            node = discovery.parse_entry(e.decode("latin-1"))
        except ValueError:
            return None, "invalid"
        if (node.ip, node.port) in seen:
            return None, "duplicate"
        seen.add((node.ip, node.port))
    if not entries:
        return None, "empty"
    return b" ".join(entries), None


FRAGMENTS = [b"a|127.0.0.1|1", b"a|127.0.0.1|11211", b"h.x|10.0.0.1|65535", b"b|::1|2",
             b"b|::1|02", b"c|1.2.3.4|65536", b"|1.1.1.1|1", b"d||1", b"e|1.2.3|4", b"f|::g|1",
             b"g|1.1.1.1", b"g|1.1.1.1|1|", b"h\x00|1.1.1.1|1", b"\xff|1.1.1.1|1", b"x",
             b"||", b"|", b"0", b"a|127.0.0.1|1"]
SEPS = [b" ", b"\n", b"\r\n", b"\t", b"  ", b""]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(SEPS)), max_size=8),
       st.sampled_from(SEPS))
def test_core_parser_matches_reference(parts, lead):
    require_memcachepy()
    from memcachepy import _core
    body = lead + b"".join(f + s for f, s in parts)
    want, why = reference_parse(body)
    got, reason = _core.cluster_check(body)
    assert got == want, (body, reason)
    if why:
        assert {"invalid": "invalid cluster node entry", "duplicate": "duplicate cluster node",
                "empty": "empty cluster node list"}[why] in reason
