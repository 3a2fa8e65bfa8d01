# Connection abuse (issue 5, item 4): the daemon survives clients that misbehave at the
# connection level, and one such client never costs the others their service.
#
#  * -c held: thousands of connections held open up to -c; the next one gets memcached's
#    `ERROR Too many open connections` and is closed; held ones keep working; closing some
#    makes room again. memcached 1.6.18 decides by fd number (fd >= -c - 1), memcachepy by
#    count (open conns + 5 per worker + 3 + listeners >= -c - 1), so the exact cut-over can
#    differ by a few connections between them; both must reject before -c is exceeded.
#  * connect/close storms (with and without half-sent requests, with RST): the daemon still
#    answers, and memcachepy's curr_connections and open sockets return to their baseline.
#  * a client that pipelines hundreds of MB of large gets and never reads: the daemon's
#    RSS stays bounded (it stops reading that conn, see conn.pxi), and when the client
#    finally reads, every reply is complete and correct.
#  * -o idle_timeout: idle conns are closed, busy ones are not.
#  * half-closed sockets: shutdown(SHUT_WR) right after the requests; every reply still
#    arrives before the daemon closes its side.
# Each test runs against real memcached too, which keeps the expectations honest.
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import socket
import struct
import threading
import time

import pytest

from support.daemons import KIND_MEMCACHEPY, Daemon
from support.rawclient import Conn

CRLF = b"\r\n"
TOO_MANY = b"ERROR Too many open connections\r\n"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets the process holds open (from /proc/PID/fd)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def kernel_states(inodes: set[str]) -> dict[str, tuple[str, int]]:
    """The kernel's view of each socket: (TCP state, bytes waiting in its receive queue).
    A socket reset by its peer is unhashed, so it is absent from /proc/net/tcp: "GONE"."""
    table = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            for line in f.readlines()[1:]:
                x = line.split()
                table[x[9]] = (TCP_STATES.get(x[3], x[3]), int(x[4].split(":")[1], 16))
    return {i: table.get(i, ("GONE", 0)) for i in inodes}


def stat(d: Daemon, name: str, conn: Conn | None = None) -> int:
    if conn is not None:
        return int(conn.stats()[name])
    with Conn(d.addr) as c:
        return int(c.stats()[name])


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def recv_exact(sock: socket.socket, n: int, timeout: float = 30.0) -> bytes:
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


@pytest.mark.timeout(120)
def test_max_connections_held(kind: str, start_daemon) -> None:
    limit = 2000
    raise_nofile(limit * 2 + 200)
    d = start_daemon(kind, "-c", str(limit), "-t", "4")
    held: list[socket.socket] = []
    rejected = None
    try:
        for i in range(limit + 10):
            s = socket.create_connection(d.addr, timeout=10)
            try:
                s.sendall(b"version\r\n")
                got = s.recv(64)
            except ConnectionResetError:
                # closed with our request unread: the kernel sends RST, which may destroy
                # the error line; a probe that sends nothing must get it intact
                s.close()
                s = socket.create_connection(d.addr, timeout=10)
                got = s.recv(64)
            if got == TOO_MANY:
                try:
                    assert s.recv(64) == b"", "rejected connection was not closed"
                except ConnectionResetError:
                    pass
                s.close()
                rejected = i
                break
            assert got.startswith(b"VERSION "), got
            held.append(s)
        assert rejected is not None, f"{kind} accepted more than -c {limit} connections"
        assert limit - 40 <= rejected < limit, rejected
        # every held connection still works, and the daemon is still itself
        for s in held[:: max(1, len(held) // 50)]:
            s.sendall(b"get nothing\r\n")
            assert s.recv(64) == b"END\r\n"
        # closing some makes room for new ones
        for s in held[:20]:
            s.close()
        del held[:20]
        time.sleep(0.3)
        with Conn(d.addr) as c:
            assert c.request(b"").startswith(b"VERSION ")
        print(f"{kind}: held {len(held) + 20} connections, rejected connection #{rejected + 1}")
    finally:
        for s in held:
            s.close()


@pytest.mark.timeout(120)
def test_connect_close_storm(kind: str, start_daemon) -> None:
    d = start_daemon(kind, "-t", "4")
    watcher = Conn(d.addr)     # one conn for every stats read, so it is in the baseline
    base = stat(d, "curr_connections", watcher)
    base_inodes = socket_inodes(d.proc.pid)
    linger_rst = struct.pack("ii", 1, 0)

    def storm(seed: int) -> None:
        for i in range(600):
            s = socket.create_connection(d.addr, timeout=10)
            mode = (i + seed) % 4
            if mode == 1:
                s.sendall(b"set storm%d 0 0 100\r\nabc" % i)     # half a data block
            elif mode == 2:
                s.sendall(b"get a b c d e f")                     # half a request line
            elif mode == 3:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
                s.sendall(b"get " + b"k " * 100 + CRLF)
            s.close()

    threads = [threading.Thread(target=storm, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Wait until every storm conn is closed and no more are being accepted: the clients are
    # done when their threads end, but up to a listen backlog of their conns may still wait
    # in the kernel's accept queue, so curr_connections can touch the baseline and rise again
    # as the acceptor takes the rest (seen: back to base, then 42 more accepted).
    deadline = time.monotonic() + 20
    last_total = -1
    while time.monotonic() < deadline:
        total = stat(d, "total_connections", watcher)
        if stat(d, "curr_connections", watcher) == base and total == last_total:
            break
        last_total = total
        time.sleep(0.3)
    # The daemon answers for every socket the kernel has news on: a FIN (CLOSE_WAIT), an
    # RST (unhashed: GONE) or unread bytes. A socket the kernel still shows ESTABLISHED
    # with nothing to read is not the daemon's to close: under accept-queue overflow the
    # kernel can drop a client's final ACK, complete the handshake later from a retransmit
    # and lose the client's FIN to backoff, and then neither side says anything for a long
    # time. On the 2-CPU CI machine real memcached 1.6.18 once still counted 189 storm
    # conns open 20 s later and memcachepy 6; such sockets are reported, not failed.
    curr = stat(d, "curr_connections", watcher)
    extra = kernel_states(socket_inodes(d.proc.pid) - base_inodes)
    curr_again = stat(d, "curr_connections", watcher)
    total = stat(d, "total_connections", watcher)
    # connections the kernel dropped from a full accept queue never reach the daemon
    assert total >= 1200, total
    silent = [i for i, (state, rx) in extra.items() if state == "ESTABLISHED" and rx == 0]
    print(f"{kind}: {curr - base} storm conns still open after the wait, "
          f"{len(silent)} of them with no FIN, RST or data from the kernel")
    if kind == KIND_MEMCACHEPY:
        # Real memcached is not held to this (see above): it is checked only to survive.
        unanswered = {i: v for i, v in extra.items() if i not in silent}
        if unanswered:      # say which conns are left and in what state, to find why
            left = {k: v for k, v in watcher.stats(b"conns").items() if k.endswith(":state")}
            raise AssertionError(f"sockets the kernel closed or fed but the daemon did not "
                                 f"answer: {unanswered}; conns: {left}")
        # the counter agrees with the sockets the daemon holds
        if curr == curr_again:
            assert curr - base == len(extra), (curr, base, extra)
    watcher.close()
    with Conn(d.addr) as c:
        assert c.request(b"set after 0 0 2\r\nok\r\nget after\r\n").startswith(
            b"STORED\r\nVALUE after 0 2\r\nok\r\nEND\r\n")
    assert d.alive()


@pytest.mark.timeout(120)
def test_client_that_never_reads(kind: str, start_daemon) -> None:
    """Pipeline ~400 MB worth of gets of a 500 KB value without reading: RSS must not
    follow. Then read: every reply complete and byte-exact."""
    d = start_daemon(kind, "-m", "64", "-t", "2")
    value = os.urandom(500_000)
    with Conn(d.addr, timeout=20) as c:
        assert c.request(b"set big 0 0 %d\r\n" % len(value) + value + CRLF).startswith(b"STORED")
    before = rss_kb(d.proc.pid)
    s = socket.create_connection(d.addr, timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    n = 800
    req = b"get big\r\n" * n
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 10
    while sent < len(req) and time.monotonic() < deadline:
        try:
            sent += s.send(req[sent:])
        except BlockingIOError:
            time.sleep(0.05)
    time.sleep(1.0)
    during = rss_kb(d.proc.pid)
    # meanwhile another client is served normally
    with Conn(d.addr) as other:
        assert other.request(b"get nothing\r\n").startswith(b"END\r\n")
    grown_mb = (during - before) / 1024
    print(f"{kind}: RSS {before // 1024} MB before, {during // 1024} MB with {sent} bytes of "
          f"unread gets queued ({n * len(value) // 2**20} MB of replies)")
    assert grown_mb < 40, f"RSS grew {grown_mb:.0f} MB for a client that does not read"
    s.setblocking(True)
    # the requests that did get in are answered completely
    whole = n if sent == len(req) else sent // len(b"get big\r\n")
    one = b"VALUE big 0 %d\r\n" % len(value) + value + b"\r\nEND\r\n"
    for i in range(whole):
        got = recv_exact(s, len(one))
        assert got == one, f"reply {i} differs"
    s.close()
    assert d.alive()


@pytest.mark.timeout(60)
def test_idle_timeout(kind: str, start_daemon) -> None:
    d = start_daemon(kind, "-o", "idle_timeout=2")
    idle = Conn(d.addr, timeout=10)
    busy = Conn(d.addr, timeout=10)
    try:
        assert idle.request(b"").startswith(b"VERSION ")
        t0 = time.monotonic()
        closed_at = None
        while time.monotonic() - t0 < 10:
            assert busy.request(b"get k\r\n").startswith(b"END\r\n"), "busy conn was closed"
            if closed_at is None:
                idle.sock.settimeout(0.01)
                try:
                    if idle.sock.recv(16) == b"":
                        closed_at = time.monotonic() - t0
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed_at = time.monotonic() - t0
            time.sleep(0.25)
        assert closed_at is not None, "idle connection was never closed"
        # memcachepy sweeps every second and kicks a conn idle for more than 2 full
        # seconds. memcached's timeout thread scans all fds over a second and then sleeps
        # until the oldest conn could time out (+1 s): its kick lands between 3 and ~7 s
        # (5.2 s seen on the 2-CPU CI machine), so it gets the whole 10 s.
        assert 1.5 <= closed_at <= (5.0 if kind == KIND_MEMCACHEPY else 10.0), closed_at
        assert stat(d, "idle_kicks") >= 1
    finally:
        idle.close()
        busy.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [10, 200_000])
def test_half_closed_socket_gets_replies(kind: str, start_daemon, size: int) -> None:
    d = start_daemon(kind)
    value = os.urandom(size)
    n = 100
    s = socket.create_connection(d.addr, timeout=20)
    req = b"set h 0 0 %d\r\n" % size + value + CRLF + b"get h\r\n" * n + b"version\r\n"
    s.sendall(req)
    s.shutdown(socket.SHUT_WR)
    want = b"STORED\r\n" + (b"VALUE h 0 %d\r\n" % size + value + b"\r\nEND\r\n") * n
    got = recv_exact(s, len(want) + 200, timeout=20)
    s.close()
    assert got[:len(want)] == want
    assert got[len(want):].startswith(b"VERSION ") and got.endswith(CRLF)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])     # utime + stime


@pytest.mark.timeout(60)
def test_out_of_fds_no_spin(start_daemon) -> None:
    """Started with a soft fd limit (64) below -c, memcachepy runs out of fds before it
    reaches -c. The connections that do not fit wait in the backlog (as in memcached, which
    stops listening), the acceptor must not spin on the ready listener, and once some
    connections close the waiting ones are served. (memcached itself refuses to start when
    it cannot raise the fd limit to -c; see docs/reliability.md.)"""
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is not installed")
    d = start_daemon(KIND_MEMCACHEPY, "-c", "1024", "-t", "2")
    # The daemon raises its own limit towards -c at start-up (as memcached does), so
    # lower it from outside once it runs.
    subprocess.run(["prlimit", "--pid", str(d.proc.pid), "--nofile=64:64"], check=True)
    held: list[socket.socket] = []
    waiting: list[socket.socket] = []
    try:
        opened = []
        for _ in range(80):
            s = socket.create_connection(d.addr, timeout=5)
            s.sendall(b"version\r\n")
            opened.append(s)
        time.sleep(1.0)
        for s in opened:
            s.setblocking(False)
            try:
                assert s.recv(64).startswith(b"VERSION ")
                held.append(s)
            except BlockingIOError:
                waiting.append(s)
            s.setblocking(True)
        assert waiting, "no connection ran out of fds: the test is not testing anything"
        before = cpu_ticks(d.proc.pid)
        time.sleep(2.0)
        spent = cpu_ticks(d.proc.pid) - before
        assert spent <= 20, f"daemon burnt {spent / 100:.2f} s of CPU in 2 s while out of fds"
        for s in held[:len(waiting) + 5]:
            s.close()
        for s in waiting:
            s.settimeout(5)
            assert s.recv(64).startswith(b"VERSION "), "a backlogged connection was never served"
        assert d.alive()
    finally:
        for s in held + waiting:
            s.close()
