# memcachepy.cli — the command line, memcached's flags and their checks.
#
# Owns: turning argv into a validated Settings object, with memcached 1.6's
# option names, defaults, limits and error messages, so that a memcached
# command line (or a /etc/memcached.conf) runs unchanged; then handing the
# Settings to memcachepy.server. Nothing here runs per request. The flags
# themselves (names, arity, defaults, -h) are the table in options.py;
# settings_from_args is the only validator (config.py runs it for files).
#
# Exit codes follow memcached: 64 (EX_USAGE) for bad option values, 1 for
# unknown options / sub-options, 0 after -h / -V; server.py adds 67 (unknown
# -u user) and 71 (cannot listen / OS error).  Also the front door to the
# systemd unit files (`--print-unit`, `install-systemd`), which
# memcachepy.systemd implements.
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from . import __version__
from .options import FLAGS, usage
from .settings import Settings, SettingsError, atof, atoi, parse_size, parse_suboptions, strtol

EX_USAGE = 64

LICENSE_TEXT = """memcachepy is distributed under the BSD 3-Clause license (see LICENSE).
It is an independent implementation of the memcached protocol; memcached itself
is Copyright (c) 2003, Danga Interactive, Inc. and distributed under the BSD license.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser, from the flag table (memcachepy/options.py)."""
    p = argparse.ArgumentParser(prog="memcachepy", add_help=False, allow_abbrev=False)
    for f in FLAGS:
        p.add_argument(*f.argparse_names(), **f.argparse_kwargs())
    return p


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def read_auth_file(path: str) -> list:
    """memcached's -Y file: one `user:password` per line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SettingsError(f"Could not load authfile: {path}: {e.strerror}", 1) from None
    entries = []
    for raw in data.splitlines():
        line = raw.decode("utf-8", "replace")
        if not line:
            continue
        user, sep, password = line.partition(":")
        if not sep:
            raise SettingsError(f"Invalid authfile entry in {path}: no ':' separator", 1)
        entries.append((user, password))
    if not entries:
        raise SettingsError(f"Could not load authfile: {path}: no entries", 1)
    return entries


def settings_from_args(ns: argparse.Namespace, check: bool = True) -> Settings:
    """Validate parsed options exactly as memcached 1.6.18 does (same messages,
    same exit codes); raise SettingsError.  This is the only validation: the
    config file and --check-config run it too (config.validate).  check=False
    skips the checks across options (one config-file line is checked alone)."""
    s = Settings()
    # memcached's ports: -1 any free port, 0 no listener of that kind; -U with
    # no -p moves TCP to the UDP port, as memcached does
    tcp_specified = ns.port is not None
    s.port = atoi(ns.port) if tcp_specified else 11211
    s.udpport = atoi(ns.udp_port)
    if ns.udp_port != "0" and s.udpport != 0 and not tcp_specified:
        s.port = s.udpport
    if s.port < -1 or s.port > 65535 or s.udpport < -1 or s.udpport > 65535:
        raise SettingsError("Invalid port number")
    s.domain_socket = ns.unix_socket
    s.unix_mask = strtol(ns.unix_mask, 8)   # memcached: strtol(optarg, NULL, 8)
    s.shutdown_command = ns.enable_shutdown
    if ns.listen:
        s.listen = [a.strip() for item in ns.listen for a in item.split(",") if a.strip()]
    s.daemonize = ns.daemon
    s.user = ns.user
    s.maxbytes = atoi(ns.memory_limit) * 1024 * 1024
    s.evict_to_free = not ns.disable_evictions
    s.maxconns = atoi(ns.conn_limit)
    if s.maxconns <= 0:
        raise SettingsError("Maximum connections must be greater than 0", 1)
    s.verbose = min(ns.verbose, 2)
    s.pidfile = ns.pidfile
    s.factor = atof(ns.slab_growth_factor)
    if s.factor <= 1.0:
        raise SettingsError("Factor must be greater than 1", 1)
    s.chunk_size = atoi(ns.slab_min_size)
    if s.chunk_size == 0:
        raise SettingsError("Chunk size must be greater than 0", 1)
    if ns.prefix_delimiter is not None:
        s.prefix_delimiter = ns.prefix_delimiter[:1] or ":"
        s.detail_enabled = True
    s.num_threads = atoi(ns.threads)
    if s.num_threads <= 0:
        raise SettingsError("Number of threads must be greater than 0", 1)
    if s.num_threads > 64:
        sys.stderr.write("WARNING: Setting a high number of worker threads is not recommended.\n"
                         " Set this value to the number of cores in your machine or less.\n")
    s.reqs_per_event = atoi(ns.max_reqs_per_event)
    if s.reqs_per_event == 0:
        raise SettingsError("Number of requests per event must be greater than 0", 1)
    s.use_cas = not ns.disable_cas
    s.backlog = atoi(ns.listen_backlog)
    protocol_specified = ns.protocol is not None
    protocol = ns.protocol if protocol_specified else "auto"
    if protocol not in ("ascii", "binary", "auto"):
        raise SettingsError(f"Invalid value for binding protocol: {protocol}\n"
                            " -- should be one of auto, binary, or ascii")
    s.binding_protocol = {"auto": "auto-negotiate"}.get(protocol, protocol)
    s.item_size_max = parse_size(ns.max_item_size)
    s.flush_enabled = not ns.disable_flush_all
    s.dump_enabled = not ns.disable_dumping
    s.watch_enabled = not ns.disable_watch
    if ns.memory_file:
        s.memory_file = ns.memory_file
    s.ssl_enabled = bool(ns.enable_ssl)
    if ns.enable_sasl:
        # memcached's order: SASL means binary, and UDP cannot authenticate
        s.sasl = True
        if not protocol_specified:
            s.binding_protocol = "binary"
        elif s.binding_protocol != "binary":
            raise SettingsError("ERROR: You cannot allow the ASCII protocol while using SASL.")
        if s.udpport:
            raise SettingsError("ERROR: Cannot enable UDP while using binary SASL authentication.")
        s.sasl_pwdb = ns.sasl_pwdb or os.environ.get("MEMCACHED_SASL_PWDB") or None
    if ns.auth_file:
        if not protocol_specified:
            s.binding_protocol = "ascii"
        elif s.binding_protocol != "ascii":
            raise SettingsError("ERROR: You cannot allow the BINARY protocol while using ascii "
                                "authentication tokens.")
        s.auth_file = ns.auth_file
        s.auth_entries = read_auth_file(ns.auth_file)
    for opt in ns.extended:
        parse_suboptions(s, opt)
    if s.cluster_file:
        from . import discovery
        try:
            s.cluster_nodes = discovery.node_list(discovery.load(s.cluster_file))
        except discovery.ClusterFileError as e:
            raise SettingsError(str(e)) from None
    if ns.metrics_listen is not None:
        from .metrics import parse_listen
        try:
            port = parse_listen(ns.metrics_listen)[1]
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise SettingsError(f"Invalid --metrics-listen address: {ns.metrics_listen}")
    s.metrics_listen = ns.metrics_listen
    s.metrics_hotkeys = atoi(ns.metrics_hotkeys)
    if s.metrics_hotkeys < 0:
        raise SettingsError("--metrics-hotkeys must be 0 or more")
    s.metrics_hotkeys_hash = ns.metrics_hotkeys_hash
    if ns.log_file is not None and not ns.log_file:
        raise SettingsError("--log-file needs a file name")
    s.log_file = ns.log_file
    if check:
        s.check()
    return s


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    parser.__class__ = _Parser
    return parser.parse_args(list(argv))


def _expand_config(argv: List[str]) -> List[str]:
    """Put the options of --config FILE (if given) before the real command line,
    so that command-line flags win."""
    path: Optional[str] = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
    if path is None:
        return argv
    from . import config
    return config.merge_argv(config.read_config_file(path), argv)


def _systemd_command(args: List[str]) -> Optional[int]:
    """`memcachepy --print-unit [NAME] ...` and `memcachepy install-systemd ...`
    (only as the first argument, so no daemon flag can be mistaken for them)."""
    if not args:
        return None
    first = args[0]
    if first == "install-systemd":
        sub = ["install", *args[1:]]
    elif first == "--print-unit":
        sub = ["print-unit", *args[1:]]
    elif first.startswith("--print-unit="):
        sub = ["print-unit", first.split("=", 1)[1], *args[1:]]
    else:
        return None
    from . import systemd
    try:
        return systemd.main(sub)
    except SystemExit as e:     # argparse: --help, or a bad unit name
        return e.code if isinstance(e.code, int) else 1
    except OSError as e:
        sys.stderr.write(f"memcachepy: {e.filename or ''}: {e.strerror}\n")
        return 73   # EX_CANTCREAT


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["cluster"]:
        # `memcachepy cluster N`: memcached takes no positional argument, so a
        # first word "cluster" can only mean the local cluster runner.
        from . import localcluster
        return localcluster.main(args[1:])
    code = _systemd_command(args)
    if code is not None:
        return code
    raw_args = list(args)
    try:
        args = _expand_config(args)
        ns = parse_args(args)
    except _ArgError as e:
        sys.stderr.write(f"memcachepy: {e}\nTry `memcachepy -h' for more information.\n")
        return 1
    except (OSError, ValueError) as e:
        sys.stderr.write(f"memcachepy: {e}\n")
        return EX_USAGE
    if ns.help:
        sys.stdout.write(usage(__version__, Settings.memcached_version))
        return 0
    if ns.version:
        sys.stdout.write(f"memcachepy {__version__} (memcached {Settings.memcached_version} compatible)\n")
        return 0
    if ns.license:
        sys.stdout.write(LICENSE_TEXT)
        return 0
    try:
        settings = settings_from_args(ns)
    except SettingsError as e:
        sys.stderr.write(f"{e}\n")
        return e.exit_code
    if ns.check_config:
        if ns.config:
            from . import config
            return config.check_config(ns.config, [a for a in raw_args if a != '--check-config'])
        sys.stdout.write("configuration OK\n")
        return 0
    if (os.geteuid() == 0 or os.getuid() == 0) and not settings.user:
        sys.stderr.write("can't run as root without the -u switch\n")
        return EX_USAGE
    from .server import run
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
