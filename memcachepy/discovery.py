# memcachepy.discovery — the cluster file behind ElastiCache-style auto discovery.
#
# Owns: reading `-o cluster_file=PATH` (one `hostname|ip|port` entry per
# line, as ElastiCache writes an entry; blank lines and `#` comments allowed)
# into the normalised node list the compiled core serves to `config get
# cluster` (ext/cluster.pxi formats the reply and keeps the version), with
# file:line messages for a malformed file.  server.py calls load() at start-up
# (a bad file stops the start, exit 64) and on SIGHUP (a bad file is logged
# and the list in force stays).  Nothing here runs per request.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import List, Tuple

HOST_MAX = 255


class ClusterFileError(ValueError):
    """A cluster file that cannot be used; str() is a complete message."""


@dataclass(frozen=True)
class Node:
    hostname: str
    ip: str
    port: int

    def entry(self) -> str:
        return f"{self.hostname}|{self.ip}|{self.port}"


def parse_entry(text: str) -> Node:
    """One `hostname|ip|port` entry; ValueError with the reason."""
    parts = text.split("|")
    if len(parts) != 3:
        raise ValueError(f"{text!r} is not hostname|ip|port")
    host, ip, port = parts
    if not host or len(host) > HOST_MAX or any(not (32 < ord(ch) < 127) for ch in host):
        raise ValueError(f"{text!r}: bad hostname {host!r}")
    try:
        if "%" in ip:
            raise ValueError
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"{text!r}: {ip!r} is not an IPv4 or IPv6 address") from None
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and not port.startswith("0")
            and int(port) <= 65535):
        raise ValueError(f"{text!r}: bad port {port!r} (1-65535)")
    return Node(host, ip, int(port))


def parse_text(text: str, source: str = "<cluster file>") -> List[Node]:
    nodes: List[Node] = []
    seen: dict[Tuple[str, int], int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) != 1:
            raise ClusterFileError(f"{source}:{lineno}: one hostname|ip|port entry per line, "
                                   f"got {line!r}")
        try:
            node = parse_entry(line)
        except ValueError as e:
            raise ClusterFileError(f"{source}:{lineno}: {e}") from None
        key = (node.ip, node.port)
        if key in seen:
            raise ClusterFileError(f"{source}:{lineno}: {node.ip}|{node.port} is already listed "
                                   f"on line {seen[key]}")
        seen[key] = lineno
        nodes.append(node)
    if not nodes:
        raise ClusterFileError(f"{source}: no nodes (one hostname|ip|port entry per line)")
    return nodes


def load(path: str) -> List[Node]:
    """Read and check a cluster file; ClusterFileError if it is unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ClusterFileError(f"cannot read cluster file {path}: {e.strerror}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ClusterFileError(f"{path}: cluster file is not ASCII text") from None
    return parse_text(text, path)


def node_list(nodes: List[Node]) -> bytes:
    """The core's form: entries separated by one space."""
    return " ".join(n.entry() for n in nodes).encode("ascii")


def write(path: str, nodes: List[Node], header: str = "") -> None:
    """Write a cluster file atomically (rename), so a SIGHUP never reads half of it."""
    import os
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        if header:
            f.write("".join(f"# {line}\n" for line in header.splitlines()))
        for n in nodes:
            f.write(n.entry() + "\n")
    os.replace(tmp, path)
