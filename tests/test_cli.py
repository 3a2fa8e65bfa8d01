# Command-line compatibility with memcached 1.6.18.
#
# Tools and init scripts pass memcached's flags to whatever binary they are given and judge it
# by its exit status and message, so memcachepy must reject the same bad input with the same
# status (64 = EX_USAGE for value errors, 1 for getopt-level errors, 71 = EX_OSERR when a
# listener cannot be created) and a message carrying memcached's wording.  Each case runs
# against both binaries; the table itself is what memcached 1.6.18 does.
from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from support.daemons import KIND_MEMCACHED, MEMCACHED_BIN, Proc, binary, run_cli
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(60)

# Network flags that keep a wrongly *accepted* invocation harmless (loopback, no UDP; -p 0
# means "no TCP listener" to both daemons).
BASE = ["-u", "root", "-U", "0", "-l", "127.0.0.1", "-p", "0"]

# (id, extra args, exit status, substring of stderr+stdout)
REJECTED = [
    ("conn_limit_zero", ["-c", "0"], 1, "Maximum connections must be greater than 0"),
    ("conn_limit_negative", ["-c", "-1"], 1, "Maximum connections must be greater than 0"),
    ("threads_zero", ["-t", "0"], 1, "Number of threads must be greater than 0"),
    ("threads_garbage", ["-t", "abc"], 1, "Number of threads must be greater than 0"),
    ("factor_too_small", ["-f", "0.5"], 1, "Factor must be greater than 1"),
    ("chunk_size_zero", ["-n", "0"], 1, "Chunk size must be greater than 0"),
    ("reqs_per_event_zero", ["-R", "0"], 1,
     "Number of requests per event must be greater than 0"),
    ("item_size_too_small", ["-I", "512"], 64, "Item max size cannot be less than 1024 bytes."),
    ("item_size_garbage", ["-I", "abc"], 64, "Item max size cannot be less than 1024 bytes."),
    ("item_size_half_memory", ["-m", "8", "-I", "5m"], 64,
     "Cannot set item size limit higher than 1/2 of memory max."),
    ("item_size_over_gigabyte", ["-m", "4096", "-I", "1025m"], 64,
     "Cannot set item size limit higher than a gigabyte."),
    ("item_size_below_chunk_max", ["-I", "2k"], 64,
     "slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 2048)"),
    ("item_size_not_divisible", ["-I", "1500k"], 64,
     "must be evenly divisible by slab_chunk_max"),
    ("binding_protocol", ["-B", "foo"], 64, "Invalid value for binding protocol: foo"),
    ("illegal_suboption", ["-o", "bogus"], 1, 'Illegal suboption "bogus"'),
    ("suboption_not_in_1618", ["-o", "lru_segmented"], 1, 'Illegal suboption "lru_segmented"'),
    ("hashpower_low", ["-o", "hashpower=5"], 1, "Initial hashtable multiplier of 5 is too low"),
    ("hashpower_missing", ["-o", "hashpower"], 1, "Missing numeric argument for hashpower"),
    ("hot_lru_pct", ["-o", "hot_lru_pct=500"], 1, "hot_lru_pct must be > 1 and < 80"),
    ("warm_lru_pct", ["-o", "warm_lru_pct=90"], 1, "warm_lru_pct must be > 1 and < 80"),
    ("hot_max_factor", ["-o", "hot_max_factor=0"], 1, "hot_max_factor must be > 0"),
    ("warm_max_factor_missing", ["-o", "warm_max_factor"], 1, "Missing warm_max_factor argument"),
    ("crawler_sleep", ["-o", "lru_crawler_sleep=2000000"], 1,
     "LRU crawler sleep must be between 0 and 1 second"),
    ("crawler_tocrawl", ["-o", "lru_crawler_tocrawl=-1"], 1,
     "lru_crawler_tocrawl takes a numeric 32bit value"),
    ("slab_automove", ["-o", "slab_automove=5"], 1, "slab_automove must be between 0 and 2"),
    ("slab_automove_ratio", ["-o", "slab_automove_ratio=2"], 1,
     "slab_automove_ratio must be > 0 and < 1"),
    ("slab_automove_window", ["-o", "slab_automove_window=1"], 1,
     "slab_automove_window must be > 2"),
    ("tail_repair_time", ["-o", "tail_repair_time=5"], 1,
     "Cannot set tail_repair_time to less than 10 seconds"),
    ("watcher_logbuf_size", ["-o", "watcher_logbuf_size=abc"], 1,
     "could not parse argument to watcher_logbuf_size"),
    ("read_buf_mem_limit", ["-o", "read_buf_mem_limit=-1"], 1,
     "could not parse argument to read_buf_mem_limit"),
    ("hash_algorithm", ["-o", "hash_algorithm=sha1"], 1,
     "Unknown hash_algorithm option (jenkins, murmur3, xxh3)"),
    ("unknown_long_option", ["--bogus"], 1, "--bogus"),
    ("unknown_short_option", ["-q"], 1, "q"),
    # (own argv: with `-p 0` memcached would never try to resolve the -l host)
    ("bad_listen_host", ["-u", "root", "-U", "0", "-p", "<free>", "-l", "fooble"], 71,
     "getaddrinfo(): Name or service not known"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(kind: str, args: list[str]) -> subprocess.CompletedProcess:
    try:
        return run_cli(kind, args, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind} {' '.join(args)} was accepted (still running after 5 s)")


@pytest.mark.parametrize("case", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected_options(kind: str, case: tuple) -> None:
    _, extra, status, message = case
    if "<free>" in extra:
        argv = [str(free_port()) if a == "<free>" else a for a in extra]
    else:
        argv = BASE + extra
    proc = _run(kind, argv)
    out = (proc.stderr + proc.stdout).decode(errors="replace")
    assert proc.returncode == status, out
    assert message in out, out


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_flag(kind: str, flag: str) -> None:
    proc = _run(kind, [flag])
    out = proc.stdout.decode()
    assert proc.returncode == 0
    assert re.search(r"\b1\.6\.\d+", out), out  # memcached-1.6-shaped version for tools
    assert len(out.splitlines()) == 1


def test_help_lists_memcached_options(kind: str) -> None:
    proc = _run(kind, ["-h"])
    out = proc.stdout.decode()
    assert proc.returncode == 0
    # tools probe features by grepping -h, so memcached's option spellings must be there
    for opt in ["-p, --port=", "-U, --udp-port=", "-l, --listen=", "-d, --daemon",
                "-u, --user=", "-m, --memory-limit=", "-M, --disable-evictions",
                "-c, --conn-limit=", "-t, --threads=", "-I, --max-item-size=",
                "-C, --disable-cas", "-A, --enable-shutdown", "-F, --disable-flush-all",
                "-o, --extended", "-v, --verbose", "-h, --help", "-V, --version",
                "-B, --protocol=", "-R, --max-reqs-per-event", "-b, --listen-backlog=",
                "-f, --slab-growth-factor=", "-n, --slab-min-size=", "-X, --disable-dumping",
                "-P, --pidfile=", "-s, --unix-socket=", "-a, --unix-mask="]:
        assert opt in out, f"{opt!r} missing from -h output"


def test_version_wins_over_other_flags(kind: str) -> None:
    proc = _run(kind, ["-A", "-m", "8", "-V"])
    assert proc.returncode == 0 and re.search(rb"1\.6\.\d+", proc.stdout)


@pytest.mark.parametrize("ports", [("-p", "0", "-U", "-1"), ("-p", "-1", "-U", "0"),
                                   ("-p", "-1", "-U", "-1"), ("-U", "-1")])
def test_port_zero_and_port_file(kind: str, ports) -> None:
    """`-p 0` opens no TCP listener (a UDP-only or unix-only server), `-p -1`/`-U -1` ask for
    any free port, and -U without -p moves TCP to the UDP port: the port file lists exactly
    the listeners memcached's lists, in its format."""
    with Proc([*binary(kind), "-u", "root", "-l", "127.0.0.1", *ports]) as p:
        p.wait_path(str(p.port_file), 10)
        deadline = time.monotonic() + 10
        want = [k for k, flag in (("TCP", "-p"), ("UDP", "-U"))
                if flag in ports and ports[ports.index(flag) + 1] != "0"]
        if "-p" not in ports:
            want = ["TCP", "UDP"]
        while True:     # the port file is written line by line
            text = p.port_file.read_text()
            kinds = re.findall(r"^(TCP|UDP) INET: (\d+)$", text, re.M)
            if len(kinds) >= len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert [k for k, _ in kinds] == want, text
        for k, port in kinds:
            assert int(port) not in (0, 11211)
            if k == "TCP":
                with Conn(int(port)) as c:
                    assert c.request(b"").startswith(b"VERSION 1.6")
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(5)
                    s.sendto(b"\0\1\0\0\0\1\0\0version\r\n", ("127.0.0.1", int(port)))
                    assert s.recv(100) == b"\0\1\0\0\0\1\0\0VERSION 1.6.18\r\n"


def test_ephemeral_port_via_listen_spec(kind: str) -> None:
    """`-l 127.0.0.1:0` with a non-zero -p binds an ephemeral port (how the harness starts
    memcached); the port file must name it and no UDP line may appear with -U 0."""
    argv = ["-u", "root", "-U", "0", "-l", "127.0.0.1:0", "-p", "11211"]
    with Proc([*binary(kind), *argv]) as p:
        port = p.wait_port(10)
        assert re.fullmatch(r"TCP INET: (\d+)\n", p.port_file.read_text())
        assert port not in (0, 11211)
        with Conn(port) as c:
            assert c.request(b"").startswith(b"VERSION ")


def test_sigterm_exits_cleanly(kind: str, start_daemon) -> None:
    d = start_daemon(kind)
    d.proc.terminate()
    assert d.proc.wait(timeout=10) == 0
