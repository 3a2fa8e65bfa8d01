# memcachepy.localcluster — `memcachepy cluster N`: a local cluster for development.
#
# Owns: starting N memcachepy daemons on one host (loopback by default) that share
# one cluster file, so that each answers `config get cluster` with the whole list,
# optionally a nutcracker (twemproxy) in front of them, printing the configuration
# endpoint, forwarding SIGHUP (re-read the cluster file) to every node, and
# stopping them all on SIGINT / SIGTERM.  The daemons are child processes; this
# process only waits for signals and for children that exit.
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

from .discovery import Node, write

START_TIMEOUT = 20.0


class ClusterError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memcachepy cluster",
        description="Start N memcachepy nodes sharing one cluster file (ElastiCache-style "
                    "auto discovery) and stop them all on Ctrl-C / SIGTERM. SIGHUP to this "
                    "process makes every node re-read the cluster file.",
        epilog="Daemon options go after --, e.g. memcachepy cluster 3 -- -m 128 -t 2")
    p.add_argument("nodes", type=int, metavar="N", help="how many nodes (1-64)")
    p.add_argument("-l", "--listen", default="127.0.0.1", help="address of every node (default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=11211,
                   help="port of the first node, the next ones follow (default 11211; "
                        "0: ports chosen by the system)")
    p.add_argument("--hostname", default="localhost",
                   help="hostname written in each cluster file entry (default localhost)")
    p.add_argument("--dir", help="where the cluster file and port files go (default: a new "
                                 "temporary directory, removed at exit)")
    p.add_argument("--proxy", type=int, metavar="PORT",
                   help="also start nutcracker (twemproxy) listening on this port, in front "
                        "of the nodes (ketama, auto_eject_hosts); its stats on PORT+1")
    return p


def nutcracker_config(listen: str, nodes: Sequence[Node]) -> str:
    """The shipped recipe (memcachepy/data/nutcracker.yml) with its listen address
    and server list replaced."""
    import re
    from pathlib import Path
    text = (Path(__file__).parent / "data" / "nutcracker.yml").read_text()
    text = re.sub(r"(?m)^  listen: .*$", f"  listen: {listen}", text)
    servers = "".join(f"    - {n.ip}:{n.port}:1 node{i + 1}\n" for i, n in enumerate(nodes))
    return re.sub(r"(?m)^  servers:\n(    - .*\n)+", "  servers:\n" + servers, text)


class LocalCluster:
    def __init__(self, n: int, host: str, base_port: int, hostname: str, workdir: str,
                 daemon_args: Sequence[str], proxy_port: Optional[int] = None) -> None:
        self.n = n
        self.host = host
        self.base_port = base_port
        self.hostname = hostname
        self.workdir = workdir
        self.daemon_args = list(daemon_args)
        self.proxy_port = proxy_port
        self.cluster_file = os.path.join(workdir, "nodes")
        self.procs: List[subprocess.Popen] = []
        self.nodes: List[Node] = []
        self.proxy: Optional[subprocess.Popen] = None

    def _node_cmd(self, port: int) -> List[str]:
        return [sys.executable, "-m", "memcachepy", "-l", self.host, "-p", str(port),
                "-U", "0", "-o", f"cluster_file={self.cluster_file}", *self.daemon_args]

    def start(self) -> None:
        fixed = self.base_port != 0
        # -p -1 asks a node for any free port (-p 0 would open no TCP port, as memcached)
        ports = [self.base_port + i if fixed else -1 for i in range(self.n)]
        # With fixed ports the list is known now; otherwise a placeholder until they listen.
        write(self.cluster_file,
              [Node(self.hostname, self.host, p) for p in ports] if fixed
              else [Node("placeholder", "127.0.0.1", 1)],
              header="written by `memcachepy cluster`; edit, then SIGHUP the nodes")
        for i, port in enumerate(ports):
            env = dict(os.environ, MEMCACHED_PORT_FILENAME=os.path.join(self.workdir, f"port.{i}"))
            self.procs.append(subprocess.Popen(self._node_cmd(port), env=env,
                                               stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + START_TIMEOUT
        actual = [self._await_port(i, deadline) for i in range(self.n)]
        self.nodes = [Node(self.hostname, self.host, p) for p in actual]
        if not fixed:
            write(self.cluster_file, self.nodes,
                  header="written by `memcachepy cluster`; edit, then SIGHUP the nodes")
            self.signal_nodes(signal.SIGHUP)
            self._await_list(deadline)
        if self.proxy_port is not None:
            self._start_proxy()

    def _await_port(self, i: int, deadline: float) -> int:
        path = os.path.join(self.workdir, f"port.{i}")
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("TCP INET"):
                            return int(line.split(":", 1)[1])
            except (OSError, ValueError):
                pass
            code = self.procs[i].poll()
            if code is not None:
                raise ClusterError(f"node {i} exited with status {code} before listening")
            if time.monotonic() > deadline:
                raise ClusterError(f"node {i} did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)

    def _await_list(self, deadline: float) -> None:
        from .cluster import fetch_config
        want = [(n.ip, n.port) for n in self.nodes]
        for n in self.nodes:
            while True:
                try:
                    _, got = fetch_config((n.ip, n.port), timeout=2)
                    if [(g.ip, g.port) for g in got] == want:
                        break
                except Exception:  # noqa: BLE001 - retried until the deadline
                    pass
                if time.monotonic() > deadline:
                    raise ClusterError(f"node {n.ip}:{n.port} did not load the cluster file")
                time.sleep(0.02)

    def _start_proxy(self) -> None:
        exe = shutil.which("nutcracker")
        if exe is None:
            raise ClusterError("--proxy needs nutcracker (apt-get install nutcracker)")
        conf = os.path.join(self.workdir, "nutcracker.yml")
        with open(conf, "w") as f:
            f.write(nutcracker_config(f"{self.host}:{self.proxy_port}", self.nodes))
        # its stats port is the next one; its log goes next to the cluster file
        self.proxy = subprocess.Popen([exe, "-c", conf, "-a", self.host,
                                       "-s", str(self.proxy_port + 1),
                                       "-o", os.path.join(self.workdir, "nutcracker.log")],
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proxy.poll() is not None:
                raise ClusterError(f"nutcracker exited with status {self.proxy.returncode} "
                                   f"(see {self.workdir}/nutcracker.log)")
            try:
                socket.create_connection((self.host, self.proxy_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError("nutcracker did not start listening") from None
                time.sleep(0.05)

    def signal_nodes(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        everyone = self.procs + ([self.proxy] if self.proxy is not None else [])
        for p in everyone:
            if p.poll() is None:
                p.terminate()
        for p in everyone:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def report(self) -> str:
        first = self.nodes[0]
        lines = [f"configuration endpoint: {first.ip}:{first.port}",
                 f"cluster file: {self.cluster_file} (edit it, then `kill -HUP {os.getpid()}`)",
                 "nodes: " + " ".join(n.entry() for n in self.nodes)]
        if self.proxy is not None:
            lines.append(f"nutcracker proxy: {self.host}:{self.proxy_port} "
                         f"(stats on port {self.proxy_port + 1})")
        lines.append(f"python: memcachepy.cluster.client(\"{first.ip}:{first.port}\")")
        return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    daemon_args: List[str] = []
    if "--" in args:
        i = args.index("--")
        args, daemon_args = args[:i], args[i + 1:]
    ns = build_parser().parse_args(args)
    if not 1 <= ns.nodes <= 64:
        sys.stderr.write("memcachepy cluster: N must be between 1 and 64\n")
        return 64
    if not 0 <= ns.port <= 65535 - ns.nodes:
        sys.stderr.write("memcachepy cluster: bad --port\n")
        return 64
    if os.geteuid() == 0 and "-u" not in daemon_args and not any(
            a.startswith(("-u", "--user")) for a in daemon_args):
        sys.stderr.write("memcachepy cluster: running as root: give the nodes a user after --, "
                         "e.g. memcachepy cluster 3 -- -u nobody\n")
        return 64
    own_dir = ns.dir is None
    workdir = tempfile.mkdtemp(prefix="memcachepy-cluster-") if own_dir else os.path.abspath(ns.dir)
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o755)          # nodes running under -u must read the cluster file
    pending: List[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    cluster = LocalCluster(ns.nodes, ns.listen, ns.port, ns.hostname, workdir, daemon_args,
                           ns.proxy)
    code = 0
    try:
        cluster.start()
        sys.stdout.write(cluster.report())
        sys.stdout.flush()
        reported = set()
        while True:
            while pending:
                sig = pending.pop(0)
                if sig == signal.SIGHUP:
                    cluster.signal_nodes(signal.SIGHUP)
                else:
                    return code
            for i, p in enumerate(cluster.procs):
                if i not in reported and p.poll() is not None:
                    reported.add(i)
                    sys.stderr.write(f"memcachepy cluster: node {cluster.nodes[i].entry()} "
                                     f"exited with status {p.returncode}\n")
            if len(reported) == len(cluster.procs):
                return 1
            time.sleep(0.1)
    except ClusterError as e:
        sys.stderr.write(f"memcachepy cluster: {e}\n")
        code = 1
        return code
    finally:
        cluster.stop()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
