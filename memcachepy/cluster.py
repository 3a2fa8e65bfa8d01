# memcachepy.cluster — a pymemcache HashClient that follows a cluster's node list.
#
# Owns: the client half of ElastiCache-style auto discovery.  `client(endpoint)`
# asks the configuration endpoint (any node started with `-o cluster_file=`, or
# an ElastiCache configuration endpoint) for `config get cluster`, builds a
# pymemcache HashClient over the nodes it names, and keeps it current from a
# daemon thread that polls every `refresh_interval` seconds (AWS's clients use
# 60 s).  Keys are placed by HashClient's hasher (rendezvous hashing) over node
# names `ip:port`, so every process with the same node list maps a key to the
# same node, and adding or removing one of N nodes moves only about 1/N of the
# keys.
#
# Concurrency: `_lock` (an RLock) guards the hasher and the node bookkeeping.
# A request takes it only to pick its node (HashClient._get_client) and runs the
# network exchange outside it.  The refresh thread takes it to change the
# topology and swaps in a new `clients` dict instead of editing the one a
# request may be iterating.  A removed node's client stays reachable (but out of
# the hash ring) until the next refresh, and is closed only when no request is
# using it (requests are counted per node client), so a request already talking
# to it finishes normally.
#
# Dead nodes are HashClient's business, with its own options (see docs/
# operations.md, "Running a cluster"): with ignore_exc=True a request to a node
# that does not answer is a miss (get) or a failed store (False), never an
# exception; after retry_attempts failures the node leaves the ring (its keys
# go to the others) and it is tried again after dead_timeout seconds.  A node
# the cluster list no longer names is never brought back that way.
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from .discovery import Node, parse_entry

try:
    from pymemcache.client.base import PooledClient
    from pymemcache.client.hash import HashClient
except ImportError as _e:  # pragma: no cover - exercised only without pymemcache
    raise ImportError("memcachepy.cluster needs pymemcache: pip install 'memcachepy[cluster]'") from _e

__all__ = ["client", "ClusterClient", "DiscoveryError", "fetch_config"]

log = logging.getLogger("memcachepy.cluster")

Server = Tuple[str, int]


class DiscoveryError(Exception):
    """The configuration endpoint did not give a usable node list."""


def _split_endpoint(endpoint: str) -> Server:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]"), int(port)


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise DiscoveryError("connection closed in the middle of the reply")
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while True:
        i = buf.find(b"\r\n")
        if i >= 0:
            line = bytes(buf[:i])
            del buf[:i + 2]
            return line
        if len(buf) > 4096:
            raise DiscoveryError("reply line too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise DiscoveryError("connection closed in the middle of the reply")
        buf += chunk


def parse_config_body(body: bytes) -> Tuple[int, List[Node]]:
    """`<version>\\n<host>|<ip>|<port> ...\\n` -> (version, nodes)."""
    try:
        text = body.decode("ascii")
        version_line, nodes_line, rest = text.split("\n")
        if rest:
            raise ValueError("text after the node line")
        version = int(version_line)
        nodes = [parse_entry(e) for e in nodes_line.split(" ") if e]
    except ValueError as e:
        raise DiscoveryError(f"malformed cluster config: {e}") from None
    if not nodes:
        raise DiscoveryError("the cluster config names no node")
    return version, nodes


def fetch_config(server: Server, timeout: float = 5.0) -> Tuple[int, List[Node]]:
    """Ask one node for the cluster config: `config get cluster`, and if it does
    not know that command, the legacy `get AmazonElastiCache:cluster`."""
    with socket.create_connection(server, timeout=timeout) as sock:
        buf = bytearray()
        sock.sendall(b"config get cluster\r\n")
        head = _read_line(sock, buf)
        if head == b"ERROR":
            sock.sendall(b"get AmazonElastiCache:cluster\r\n")
            head = _read_line(sock, buf)
            prefix = b"VALUE AmazonElastiCache:cluster "
        else:
            prefix = b"CONFIG cluster "
        if head == b"END":
            raise DiscoveryError(f"{server[0]}:{server[1]} has no cluster configured")
        if not head.startswith(prefix):
            raise DiscoveryError(f"unexpected reply {head[:80]!r}")
        fields = head[len(prefix):].split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise DiscoveryError(f"unexpected reply {head[:80]!r}")
        body = _read_exact(sock, buf, int(fields[1]) + 2)
        if body[-2:] != b"\r\n" or _read_line(sock, buf) != b"END":
            raise DiscoveryError("reply not terminated by END")
        return parse_config_body(body[:-2])


class ClusterClient(HashClient):
    """A HashClient over the nodes of a cluster, refreshed in the background.

    Everything HashClient accepts is accepted (and passed on to each node's
    pymemcache Client); see client() for the extra arguments."""

    def __init__(self, endpoint: str, refresh_interval: float = 60.0,
                 discovery_timeout: float = 5.0, **kwargs) -> None:
        self._lock = threading.RLock()
        self._endpoint = _split_endpoint(endpoint)
        self._topology: Dict[str, Server] = {}      # "ip:port" -> (ip, port)
        self._retired: Dict[str, Server] = {}       # left the list; dropped at the next refresh
        self._inflight: Dict[object, int] = {}      # node client -> requests using it now
        self._closing: set = set()                  # dropped clients, closed when unused
        self._discovery_timeout = discovery_timeout
        self.refresh_interval = refresh_interval
        self.config_version: Optional[int] = None
        self.polls = 0                  # refreshes started (the first one is at construction)
        self.applied_at_poll = 0        # the poll that installed the list in force
        self._stop = threading.Event()
        super().__init__([], **kwargs)
        self.refresh()                  # raises DiscoveryError: no cluster to talk to
        self._thread: Optional[threading.Thread] = None
        if refresh_interval and refresh_interval > 0:
            self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                            name=f"memcachepy-cluster-{endpoint}")
            self._thread.start()

    # ------------------------------------------------------------ topology
    @property
    def nodes(self) -> List[str]:
        """The node names (ip:port) of the list in force."""
        with self._lock:
            return sorted(self._topology)

    def node_for(self, key) -> Optional[str]:
        """The node name a key maps to right now (None if no node is alive)."""
        with self._lock:
            return self.hasher.get_node(key)

    def refresh(self) -> bool:
        """Poll the cluster config now; True if the node list changed."""
        with self._lock:
            self.polls += 1
            poll = self.polls
            candidates = [self._endpoint] + [s for s in self._topology.values()
                                             if s != self._endpoint]
        self._close_retired()
        error: Optional[Exception] = None
        for server in candidates:
            try:
                version, nodes = fetch_config(server, self._discovery_timeout)
                break
            except (OSError, DiscoveryError) as e:
                error = e
                log.debug("cluster config from %s:%d failed: %s", server[0], server[1], e)
        else:
            if self.config_version is None:
                raise DiscoveryError(f"no cluster config from {candidates[0][0]}:"
                                     f"{candidates[0][1]}: {error}")
            log.warning("cluster refresh failed (keeping config version %s): %s",
                        self.config_version, error)
            return False
        return self._apply(version, nodes, poll)

    def _apply(self, version: int, nodes: Sequence[Node], poll: int) -> bool:
        wanted = {self._make_client_key((n.ip, n.port)): (n.ip, n.port) for n in nodes}
        with self._lock:
            if version == self.config_version and wanted.keys() == self._topology.keys():
                return False
            added = [k for k in wanted if k not in self._topology]
            removed = [k for k in self._topology if k not in wanted]
            clients = dict(self.clients)
            for key in added:
                server = wanted[key]
                if key in self._retired and key in clients:
                    del self._retired[key]          # back before its client was closed
                else:
                    clients[key] = self._new_client(server)
                self._dead_clients.pop(server, None)
                if key not in self.hasher.nodes:
                    self.hasher.add_node(key)
            for key in removed:
                server = self._topology[key]
                self._dead_clients.pop(server, None)    # never brought back by _retry_dead
                if key in self.hasher.nodes:
                    self.hasher.remove_node(key)
                self._retired[key] = server
            self._topology = dict(wanted)
            self.clients = clients
            changed = bool(added or removed)
            self.config_version = version
            if changed:
                self.applied_at_poll = poll
        if changed:
            log.info("cluster config version %d: %d nodes (+%d -%d)", version, len(wanted),
                     len(added), len(removed))
        return changed

    def _new_client(self, server: Server):
        cls = PooledClient if self.use_pooling else self.client_class
        c = cls(server, **self.default_kwargs)
        if self.use_pooling:
            c.client_class = self.client_class
        return c

    def _close_retired(self) -> None:
        """Drop the clients of nodes removed at the previous refresh (a request
        that looked one up before then still finds it); each is closed as soon
        as no request is using it."""
        with self._lock:
            if not self._retired:
                return
            clients = dict(self.clients)
            idle = []
            for key, server in self._retired.items():
                c = clients.pop(key, None)
                if c is not None:
                    if self._inflight.get(c):
                        self._closing.add(c)        # the last request closes it
                    else:
                        idle.append(c)
                self._failed_clients.pop(server, None)
            self._retired = {}
            self.clients = clients
        for c in idle:
            self._close_quietly(c)

    @staticmethod
    def _close_quietly(c) -> None:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - a dead node's socket may fail to close
            pass

    # Every request HashClient sends goes through these two: count the requests on
    # each node client, so a dropped one is never closed under a request.
    def _enter(self, client) -> None:
        with self._lock:
            self._inflight[client] = self._inflight.get(client, 0) + 1

    def _leave(self, client) -> None:
        with self._lock:
            n = self._inflight.pop(client) - 1
            if n:
                self._inflight[client] = n
                return
            if client not in self._closing:
                return
            self._closing.discard(client)
        self._close_quietly(client)

    def _safely_run_func(self, client, func, default_val, *args, **kwargs):
        self._enter(client)
        try:
            return super()._safely_run_func(client, func, default_val, *args, **kwargs)
        finally:
            self._leave(client)

    def _safely_run_set_many(self, client, values, *args, **kwargs):
        self._enter(client)
        try:
            return super()._safely_run_set_many(client, values, *args, **kwargs)
        finally:
            self._leave(client)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("cluster refresh failed")

    # ------------------------------------- HashClient, made safe for the refresh thread
    def _get_client(self, key):
        with self._lock:
            return super()._get_client(key)

    def _mark_failed_server(self, server) -> None:
        with self._lock:
            super()._mark_failed_server(server)

    def add_server(self, server, port=None) -> None:
        """HashClient's way back for a dead node (after dead_timeout); only nodes
        the cluster list names come back."""
        if port is not None:
            server = (server, port)
        with self._lock:
            key = self._make_client_key(server)
            if key not in self._topology:
                return
            clients = dict(self.clients)
            clients[key] = self._new_client(server)
            self.clients = clients
            if key not in self.hasher.nodes:
                self.hasher.add_node(key)

    def remove_server(self, server, port=None) -> None:
        """HashClient's "mark dead": out of the ring until dead_timeout passes."""
        if port is not None:
            server = (server, port)
        with self._lock:
            key = self._make_client_key(server)
            self._failed_clients.pop(server, None)
            if key in self._topology:
                self._dead_clients[server] = time.time()
            if key in self.hasher.nodes:
                self.hasher.remove_node(key)

    def close(self) -> None:
        """Stop the refresh thread and close every node's connection."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._discovery_timeout + 1)
        self._close_retired()
        super().close()

    disconnect_all = close

    def __enter__(self) -> "ClusterClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client(endpoint: str, refresh_interval: float = 60.0, **kwargs) -> ClusterClient:
    """A pymemcache HashClient over the cluster behind `endpoint` ("host:port" of
    any node, or an ElastiCache configuration endpoint), kept current by a
    background thread polling every `refresh_interval` seconds (0: never; call
    .refresh() yourself).  Other keyword arguments go to pymemcache's HashClient
    (and its per-node Clients): for a client that keeps serving while a node is
    down pass ignore_exc=True, connect_timeout and timeout of about a second,
    and choose retry_attempts, retry_timeout and dead_timeout (docs/operations.md).
    `discovery_timeout` (default 5 s) bounds each config poll.  Raises
    DiscoveryError if no node list can be read at start."""
    return ClusterClient(endpoint, refresh_interval=refresh_interval, **kwargs)
