# memcachepy.cli — the command line, memcached's flags and their checks.
#
# Owns: turning argv into a validated Settings object, with memcached 1.6's
# option names, defaults, limits and error messages, so that a memcached
# command line (or a /etc/memcached.conf) runs unchanged; then handing the
# Settings to memcachepy.server. Nothing here runs per request.
#
# Exit codes follow memcached: 64 (EX_USAGE) for bad option values, 1 for
# unknown options / sub-options, 0 after -h / -V; server.py adds 67 (unknown
# -u user) and 71 (cannot listen / OS error).  Also the front door to the
# systemd unit files (`--print-unit`, `install-systemd`), which
# memcachepy.systemd implements.
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional, Sequence

from . import __version__
from .settings import Settings, SettingsError, parse_size, parse_suboptions

EX_USAGE = 64

USAGE = """\
memcachepy {version} (memcached {mcversion} compatible)
-p, --port=<num>          TCP port to listen on (default: 11211; 0 = no TCP, -1 = any free port)
-U, --udp-port=<num>      UDP port to listen on (default: 0, off; -1 = any free port)
-s, --unix-socket=<file>  UNIX socket to listen on (disables network support)
-A, --enable-shutdown     enable ascii "shutdown" command
-a, --unix-mask=<mask>    access mask for UNIX socket, in octal (default: 700)
-l, --listen=<addr>       interface to listen on (default: INADDR_ANY)
                          a comma separated list, host or host:port
                          under -Z, 'notls:' before an address opts it out of TLS
-d, --daemon              run as a daemon
-r, --enable-coredumps    maximize core file limit
-u, --user=<user>         assume identity of <username> (only when run as root)
-m, --memory-limit=<num>  item memory in megabytes (default: 64)
-M, --disable-evictions   return error on memory exhausted instead of evicting
-c, --conn-limit=<num>    max simultaneous connections (default: 1024)
-k, --lock-memory         accepted, ignored
-v, --verbose             verbose (print errors/warnings while in event loop)
-vv                       very verbose (also print client commands/responses)
-h, --help                print this help and exit
-i, --license             print memcachepy and memcached license and exit
-V, --version             print version and exit
-P, --pidfile=<file>      save PID in <file>, only used with -d option
-e, --memory-file=<file>  keep item memory in <file> (a tmpfs or DAX mount):
                          restartable cache, stop with SIGUSR1 (or SIGTERM)
-f, --slab-growth-factor=<num> chunk size growth factor (default: 1.25)
-n, --slab-min-size=<bytes> min space used for key+value+flags (default: 48)
-L, --enable-largepages   accepted, ignored
-D <char>                 Use <char> as the delimiter between key prefixes and IDs
-t, --threads=<num>       number of worker threads to use (default: 4)
-R, --max-reqs-per-event  maximum number of requests per event (default: 20)
-C, --disable-cas         disable use of CAS
-b, --listen-backlog=<num> set the backlog queue limit (default: 1024)
-B, --protocol=<name>     protocol - one of ascii, binary, or auto (default: auto-negotiate)
-S, --enable-sasl         turn on Sasl authentication (PLAIN; implies -B binary)
-I, --max-item-size=<num> adjusts max item size (default: 1m, min: 1k, max: 1024m)
-F, --disable-flush-all   disable flush_all command
-X, --disable-dumping     disable stats cachedump and lru_crawler metadump
-W, --disable-watch       disable watch commands (live logging)
-Z, --enable-ssl          enable TLS/SSL (OpenSSL; see the ssl_* options)
-o, --extended            comma separated list of extended options
                          most options have a 'no_' prefix to disable
   - maxconns_fast:       immediately close new connections after limit (default: enabled)
   - hashpower:           accepted for compatibility (tables size themselves)
   - idle_timeout:        timeout for idle connections. (default: 0, no timeout)
   - slab_chunk_max:      (bytes) largest chunk of a slab class (default: 524288)
   - shards:              number of hash table shards, a power of two (default: 64)
   - cluster_file:        answer ElastiCache auto discovery (`config get cluster`)
                          with the hostname|ip|port lines of this file (SIGHUP re-reads it)
   - hotkeys_sample:      sample 1 key request in N for `stats hotkeys` (default: 100;
                          0 turns hot-key sampling off)
   - ssl_chain_cert:      certificate chain file in PEM format
   - ssl_key:             private key, if not part of the -ssl_chain_cert
   - ssl_keyformat:       private key format (1 PEM, 2 DER) (default: 1)
   - ssl_verify_mode:     peer certificate verification mode, default is 0(None).
                          valid values are 0(None), 1(Request), 2(Require)
                          or 3(Once)
   - ssl_ciphers:         specify cipher list to be used (TLS 1.2 and older)
   - ssl_ca_cert:         PEM format file of acceptable client CA's
   - ssl_wbuf_size:       size in kilobytes of per-connection SSL output buffer
                          (default: 16)
   - ssl_session_cache:   enable server-side SSL session cache
   - ssl_kernel_tls:      enable kernel TLS offload
   - ssl_min_version:     minimum protocol version to accept (default: 2)
                          valid values are 0(tlsv1.0), 1(tlsv1.1), 2(tlsv1.2), 3(tlsv1.3)
   - lru_crawler, lru_maintainer, slab_reassign, slab_automove, hot_lru_pct,
     warm_lru_pct, hot_max_factor, warm_max_factor, temporary_ttl, tail_repair_time,
     hash_algorithm, track_sizes, modern, no_modern, watcher_logbuf_size,
     worker_logbuf_size, read_buf_mem_limit: accepted as memcached does;
     memcachepy's LRU and allocator do not need them
   - drop_privileges:     seccomp system-call allowlist after start-up (default: on)
   - no_drop_privileges:  turn it off
--config=<file>           read options from a memcached.conf-style file first
--check-config            validate the options (and config file) and exit
--metrics-listen=<[host:]port> serve Prometheus metrics (memcached_exporter names)
                          on this address (default: off; host defaults to 127.0.0.1)
--metrics-hotkeys=<num>   export the <num> hottest keys with the metrics (default: 10; 0: none)
--metrics-hotkeys-hash    label them by a SHA-256 prefix of the key instead of the key
--sasl-pwdb=<file>        with -S: the SASL password file (`user:password` lines;
                          default: $MEMCACHED_SASL_PWDB, as memcached)
--log-file=<file>         write the log (and -vv traffic) to <file> instead of
                          stderr; SIGHUP reopens it (for logrotate)
--print-unit [<unit>] [--exec <path>]
                          print a shipped systemd unit and exit
                          (memcachepy.service, memcachepy.socket, memcachepy@.service)
install-systemd [--dest <dir>] [--exec <path>] [--no-config]
                          write the systemd units (default /etc/systemd/system) and exit
cluster <N> [-p <port>] [--proxy <port>] [-- <daemon options>]
                          run N local nodes sharing a cluster file (auto discovery)
                          until Ctrl-C; `memcachepy cluster -h` for more
"""

LICENSE_TEXT = """memcachepy is distributed under the BSD 3-Clause license (see LICENSE).
It is an independent implementation of the memcached protocol; memcached itself
is Copyright (c) 2003, Danga Interactive, Inc. and distributed under the BSD license.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memcachepy", add_help=False, allow_abbrev=False)
    p.add_argument("-p", "--port", default=None)
    p.add_argument("-U", "--udp-port", default="0")
    p.add_argument("-s", "--unix-socket")
    p.add_argument("-A", "--enable-shutdown", action="store_true")
    p.add_argument("-a", "--unix-mask", default="0700")
    p.add_argument("-l", "--listen", action="append")
    p.add_argument("-d", "--daemon", action="store_true")
    p.add_argument("-r", "--enable-coredumps", action="store_true")
    p.add_argument("-u", "--user")
    p.add_argument("-m", "--memory-limit", default="64")
    p.add_argument("-M", "--disable-evictions", action="store_true")
    p.add_argument("-c", "--conn-limit", default="1024")
    p.add_argument("-k", "--lock-memory", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-i", "--license", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-P", "--pidfile")
    p.add_argument("-f", "--slab-growth-factor", default="1.25")
    p.add_argument("-n", "--slab-min-size", default="48")
    p.add_argument("-L", "--enable-largepages", action="store_true")
    p.add_argument("-D", dest="prefix_delimiter")
    p.add_argument("-t", "--threads", default="4")
    p.add_argument("-R", "--max-reqs-per-event", default="20")
    p.add_argument("-C", "--disable-cas", action="store_true")
    p.add_argument("-b", "--listen-backlog", default="1024")
    p.add_argument("-B", "--protocol", default=None)
    p.add_argument("-I", "--max-item-size", default="1m")
    p.add_argument("-F", "--disable-flush-all", action="store_true")
    p.add_argument("-X", "--disable-dumping", action="store_true")
    p.add_argument("-W", "--disable-watch", action="store_true")
    p.add_argument("-Y", "--auth-file")
    p.add_argument("-e", "--memory-file")
    p.add_argument("-S", "--enable-sasl", action="store_true")
    p.add_argument("-N", "--napi-ids")
    p.add_argument("-Z", "--enable-ssl", action="store_true")
    p.add_argument("-o", "--extended", action="append", default=[])
    p.add_argument("--config")
    p.add_argument("--check-config", action="store_true")
    p.add_argument("--metrics-listen")
    p.add_argument("--metrics-hotkeys", default="10")
    p.add_argument("--metrics-hotkeys-hash", action="store_true")
    p.add_argument("--log-file")
    p.add_argument("--sasl-pwdb")
    return p


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def atoi(value: str) -> int:
    """C's atoi(), which memcached uses for its numeric flags: leading digits
    (after blanks and a sign) or 0."""
    m = re.match(r"\s*([+-]?\d+)", value or "")
    return int(m.group(1)) if m else 0


def atof(value: str) -> float:
    m = re.match(r"\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", value or "")
    return float(m.group(1)) if m else 0.0


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


def settings_from_args(ns: argparse.Namespace) -> Settings:
    """Validate parsed options exactly as memcached 1.6.18 does (same messages,
    same exit codes); raise SettingsError."""
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
    try:
        s.unix_mask = int(ns.unix_mask, 8)
    except ValueError:
        raise SettingsError(f"Invalid value for -a: {ns.unix_mask!r}") from None
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
    s.metrics_listen = ns.metrics_listen
    s.metrics_hotkeys = atoi(ns.metrics_hotkeys)
    if s.metrics_hotkeys < 0:
        raise SettingsError("--metrics-hotkeys must be 0 or more")
    s.metrics_hotkeys_hash = ns.metrics_hotkeys_hash
    if ns.log_file is not None and not ns.log_file:
        raise SettingsError("--log-file needs a file name")
    s.log_file = ns.log_file
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
        sys.stdout.write(USAGE.format(version=__version__, mcversion=Settings.memcached_version))
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
