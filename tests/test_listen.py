# Listening: unix sockets with -s/-a, several -l addresses, IPv6 loopback,
# and the port report for -p 0. Compared with memcached where it has the
# same behaviour.
from __future__ import annotations

import os
import stat
import tempfile

import pytest

from support.daemons import KIND_MEMCACHEPY, Proc, memcached_available, start_unix
from support.daemons import binary as binary_argv
from support.rawclient import Conn

pytestmark = pytest.mark.timeout(60)


def roundtrip(c: Conn) -> bytes:
    c.send(b"set k 0 0 2\r\nhi\r\nget k\r\n")
    return c.read_until(b"END\r\n")


@pytest.mark.parametrize("binary", ["memcached", "memcachepy"])
def test_unix_socket_with_mask(binary):
    if binary == "memcached" and not memcached_available():
        pytest.skip("memcached not installed")
    d = tempfile.mkdtemp(prefix="mcpy-unix-")
    path = os.path.join(d, "mc.sock")
    with start_unix(binary, path, ["-a", "0770"], d) as p:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o770
        with Conn(path) as c:
            assert roundtrip(c) == b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"
            assert c.stats(b"settings")["domain_socket"] == path.encode()
        assert p.stop() == 0
    if binary == "memcachepy":
        assert not os.path.exists(path), "the socket file is removed at exit"


def test_several_listen_addresses_and_ipv6(tmp_path):
    with Proc([*binary_argv(KIND_MEMCACHEPY), "-u", "root", "-p", "-1",
               "-l", "127.0.0.1,[::1]:0"], tmp_path) as p:
        p.wait_path(str(p.port_file))
        lines = p.port_file.read_text().split("\n")
        ports = {ln.split(":")[0]: int(ln.split(":")[1]) for ln in lines if ln}
        assert set(ports) == {"TCP INET", "TCP INET6"}
        with Conn(ports["TCP INET"]) as c:
            assert roundtrip(c).startswith(b"STORED")
        with Conn(("::1", ports["TCP INET6"])) as c:
            assert roundtrip(c).endswith(b"hi\r\nEND\r\n")
        assert p.stop() == 0
