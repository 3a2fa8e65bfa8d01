# memcachepy.options — the one table of command-line flags.
#
# Owns: one record per memcached flag (and memcachepy's own long options):
# short and long names, whether it takes an argument, the argparse default,
# where it may appear (command line, config file), and its line of `-h`.
# Everything that needs to know the flags is driven from it:
#   * cli.build_parser()  — the argparse parser (names, arity, defaults);
#   * cli's `-h` text     — usage() below, in table order;
#   * config.py           — the config-file tokenizer (which options take a
#     value, which are command-line only or ignored in a file) and its
#     override rules;
#   * validation          — there is one: cli.settings_from_args() with
#     memcached's messages and exit statuses. A config-file line is checked by
#     running that same function over the line's tokens (config.validate), so
#     a file accepts exactly what the command line accepts (`-m 64M` included,
#     atoi semantics as memcached).
# The `-o` sub-options are parsed in settings.parse_suboptions (memcached's
# messages, in its order); their help lines are SUBOPTION_HELP below.
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

NONE = "none"          # a switch
REQUIRED = "required"  # takes a value
OPTIONAL = "optional"  # -v / -vv: a value glued to the flag only
COUNT = "count"        # argparse: counted (-v)
APPEND = "append"      # argparse: may repeat, values collected (-l, -o)


@dataclass(frozen=True)
class Flag:
    long: str
    short: Optional[str] = None
    arg: str = NONE            # NONE | REQUIRED | OPTIONAL (config-file tokenizer)
    action: str = ""           # argparse action when not implied by `arg`
    default: object = None     # argparse default (memcached's, as text it would parse)
    dest: Optional[str] = None
    in_config: bool = True     # False: only meaningful on a command line
    ignore_in_config: bool = False  # accepted in a file, dropped with a warning
    help: str = ""             # "<metavar>|text": the `-h` line; "" = not listed

    @property
    def key(self) -> str:
        """The name command-line/config-file overrides are matched by."""
        return self.short or self.long

    def argparse_names(self) -> list[str]:
        names = [f"-{self.short}"] if self.short else []
        if self.long and not (self.short == "D"):      # -D is short-only in memcached
            names.append(f"--{self.long}")
        return names

    def argparse_kwargs(self) -> dict:
        kw: dict = {}
        if self.dest:
            kw["dest"] = self.dest
        if self.action == COUNT:
            kw.update(action="count", default=0)
        elif self.action == APPEND:
            kw.update(action="append", default=[] if self.default is None else self.default)
        elif self.arg == NONE:
            kw["action"] = "store_true"
        elif self.default is not None:
            kw["default"] = self.default
        return kw

    def usage_line(self) -> Optional[str]:
        if not self.help:
            return None
        metavar, _, text = self.help.partition("|")
        if self.short and self.short != "D":
            head = f"-{self.short}, --{self.long}{('=' + metavar) if metavar else ''}"
        elif self.short:
            head = f"-{self.short}{(' ' + metavar) if metavar else ''}"
        else:
            head = f"--{self.long}{('=' + metavar) if metavar else ''}"
        lines = text.split("\n")
        if len(head) >= 26:
            out = [head + " " + lines[0]]
        else:
            out = [head.ljust(26) + lines[0]]
        out += [" " * 26 + ln for ln in lines[1:]]
        return "\n".join(out)


FLAGS: tuple[Flag, ...] = (
    # -p has no argparse default: -U with no -p moves TCP to the UDP port (memcached)
    Flag("port", "p", REQUIRED,
         help="<num>|TCP port to listen on (default: 11211; 0 = no TCP, -1 = any free port)"),
    Flag("udp-port", "U", REQUIRED, default="0",
         help="<num>|UDP port to listen on (default: 0, off; -1 = any free port)"),
    Flag("unix-socket", "s", REQUIRED,
         help="<file>|UNIX socket to listen on (disables network support)"),
    Flag("enable-shutdown", "A", help='|enable ascii "shutdown" command'),
    Flag("unix-mask", "a", REQUIRED, default="0700",
         help="<mask>|access mask for UNIX socket, in octal (default: 700)"),
    Flag("listen", "l", REQUIRED, action=APPEND,
         help="<addr>|interface to listen on (default: INADDR_ANY)\n"
              "a comma separated list, host or host:port\n"
              "under -Z, 'notls:' before an address opts it out of TLS"),
    # Debian's /etc/memcached.conf has -d; its systemd wrapper drops it and so
    # does a config file here: the daemon is supervised, not forked.
    Flag("daemon", "d", ignore_in_config=True, help="|run as a daemon"),
    Flag("enable-coredumps", "r", help="|maximize core file limit"),
    Flag("user", "u", REQUIRED,
         help="<user>|assume identity of <username> (only when run as root)"),
    Flag("memory-limit", "m", REQUIRED, default="64",
         help="<num>|item memory in megabytes (default: 64)"),
    Flag("disable-evictions", "M",
         help="|return error on memory exhausted instead of evicting"),
    Flag("conn-limit", "c", REQUIRED, default="1024",
         help="<num>|max simultaneous connections (default: 1024)"),
    Flag("lock-memory", "k", help="|accepted, ignored"),
    Flag("verbose", "v", OPTIONAL, action=COUNT,
         help="|verbose (print errors/warnings while in event loop)\n"
              "-vv: very verbose (also print client commands/responses)"),
    Flag("help", "h", in_config=False, ignore_in_config=True,
         help="|print this help and exit"),
    Flag("license", "i", in_config=False, ignore_in_config=True,
         help="|print memcachepy and memcached license and exit"),
    Flag("version", "V", in_config=False, ignore_in_config=True,
         help="|print version and exit"),
    Flag("pidfile", "P", REQUIRED, help="<file>|save PID in <file>, only used with -d option"),
    Flag("memory-file", "e", REQUIRED,
         help="<file>|keep item memory in <file> (a tmpfs or DAX mount):\n"
              "restartable cache, stop with SIGUSR1 (or SIGTERM)"),
    Flag("slab-growth-factor", "f", REQUIRED, default="1.25",
         help="<num>|chunk size growth factor (default: 1.25)"),
    Flag("slab-min-size", "n", REQUIRED, default="48",
         help="<bytes>|min space used for key+value+flags (default: 48)"),
    Flag("enable-largepages", "L", help="|accepted, ignored"),
    Flag("prefix-delimiter", "D", REQUIRED, dest="prefix_delimiter",
         help="<char>|Use <char> as the delimiter between key prefixes and IDs"),
    Flag("threads", "t", REQUIRED, default="4",
         help="<num>|number of worker threads to use (default: 4)"),
    Flag("max-reqs-per-event", "R", REQUIRED, default="20",
         help="<num>|maximum number of requests per event (default: 20)"),
    Flag("disable-cas", "C", help="|disable use of CAS"),
    Flag("listen-backlog", "b", REQUIRED, default="1024",
         help="<num>|set the backlog queue limit (default: 1024)"),
    # no argparse default: -S and -Y pick binary/ascii unless -B was given
    Flag("protocol", "B", REQUIRED,
         help="<name>|protocol - one of ascii, binary, or auto (default: auto-negotiate)"),
    Flag("enable-sasl", "S", help="|turn on Sasl authentication (PLAIN; implies -B binary)"),
    Flag("max-item-size", "I", REQUIRED, default="1m",
         help="<num>|adjusts max item size (default: 1m, min: 1k, max: 1024m)"),
    Flag("disable-flush-all", "F", help="|disable flush_all command"),
    Flag("disable-dumping", "X", help="|disable stats cachedump and lru_crawler metadump"),
    Flag("disable-watch", "W", help="|disable watch commands (live logging)"),
    Flag("auth-file", "Y", REQUIRED,
         help="<file>|require authentication with the user:password lines of <file>"),
    Flag("napi-ids", "N", REQUIRED),
    Flag("enable-ssl", "Z", help="|enable TLS/SSL (OpenSSL; see the ssl_* options)"),
    Flag("extended", "o", REQUIRED, action=APPEND,
         help="<opts>|comma separated list of extended options\n"
              "most options have a 'no_' prefix to disable"),
    # memcachepy's own (long only)
    Flag("config", None, REQUIRED, in_config=False,
         help="<file>|read options from a memcached.conf-style file first"),
    Flag("check-config", None, in_config=False,
         help="|validate the options (and config file) and exit"),
    Flag("metrics-listen", None, REQUIRED,
         help="<[host:]port>|serve Prometheus metrics (memcached_exporter names)\n"
              "on this address (default: off; host defaults to 127.0.0.1)"),
    Flag("metrics-hotkeys", None, REQUIRED, default="10",
         help="<num>|export the <num> hottest keys with the metrics (default: 10; 0: none)"),
    Flag("metrics-hotkeys-hash", None,
         help="|label them by a SHA-256 prefix of the key instead of the key"),
    Flag("sasl-pwdb", None, REQUIRED,
         help="<file>|with -S: the SASL password file (`user:password` lines;\n"
              "default: $MEMCACHED_SASL_PWDB, as memcached)"),
    Flag("log-file", None, REQUIRED,
         help="<file>|write the log (and -vv traffic) to <file> instead of\n"
              "stderr; SIGHUP reopens it (for logrotate)"),
)

BY_SHORT = {f.short: f for f in FLAGS if f.short}
BY_LONG = {f.long: f for f in FLAGS}

@dataclass(frozen=True)
class SubOption:
    """One `-o` sub-option: its default as memcached reports it in `stats settings`
    (and the core gets it), memcached's message when its value is missing, and
    whether it is a bare switch. The checks on the value, in memcached's order
    and words, are settings.parse_suboptions."""
    name: str
    default: Optional[str] = None
    missing: str = ""          # "" = a value is optional or not taken
    switch: bool = False


def _v(name: str, default: Optional[str], missing: Optional[str] = None) -> SubOption:
    return SubOption(name, default, missing or f"Missing {name} argument")


SUBOPTIONS: tuple[SubOption, ...] = (
    _v("hashpower", "0", "Missing numeric argument for hashpower"),
    SubOption("slab_automove", "1"),
    _v("slab_automove_ratio", "0.8"),
    _v("slab_automove_window", "30"),
    _v("tail_repair_time", "0", "Missing numeric argument for tail_repair_time"),
    _v("hash_algorithm", "murmur3"),
    _v("lru_crawler_sleep", "100", "Missing lru_crawler_sleep value"),
    _v("lru_crawler_tocrawl", "0", "Missing lru_crawler_tocrawl value"),
    _v("hot_lru_pct", "20"),
    _v("warm_lru_pct", "40"),
    _v("hot_max_factor", "0.2"),
    _v("warm_max_factor", "2.0"),
    _v("temporary_ttl", "61"),
    _v("idle_timeout", "0", "Missing numeric argument for idle_timeout"),
    _v("watcher_logbuf_size", "262144"),
    _v("worker_logbuf_size", "65536"),
    _v("read_buf_mem_limit", "0"),
    _v("slab_chunk_max", "524288"),
    _v("slab_sizes", None),
    _v("shards", "64"),                 # memcachepy's own: lock shards
    _v("cluster_file", None),           # memcachepy's own: auto discovery
    # memcachepy's own: sample one key request in N for `stats hotkeys` (0: off);
    # the default is the measured cost/accuracy trade-off (README, "Hot keys").
    _v("hotkeys_sample", "100"),
    # memcachepy's own: a worker with nothing to do polls this many microseconds
    # before it sleeps (0: off; bench/README.md, bench/fixedrate, has what it costs)
    _v("busy_poll_us", "0"),
    *(SubOption(n, switch=True) for n in (
        "maxconns_fast", "no_maxconns_fast", "no_hashexpand", "slab_reassign",
        "no_slab_reassign", "no_slab_automove", "lru_crawler", "no_lru_crawler",
        "lru_maintainer", "no_lru_maintainer", "track_sizes", "inline_ascii_resp",
        "no_inline_ascii_resp", "no_chunked_items", "modern", "no_modern",
        "drop_privileges", "no_drop_privileges", "resp_obj_mem_limit", "sock_cookie_id")),
)

SUB = {o.name: o for o in SUBOPTIONS}


def sub_default(ext: dict, name: str) -> str:
    """A sub-option's value as set, else its table default."""
    return ext.get(name, SUB[name].default)


# `-o` sub-options in `-h`, after the -o line.
SUBOPTION_HELP = """\
   - maxconns_fast:       immediately close new connections after limit (default: enabled)
   - hashpower:           accepted for compatibility (tables size themselves)
   - idle_timeout:        timeout for idle connections. (default: 0, no timeout)
   - slab_chunk_max:      (bytes) largest chunk of a slab class (default: 524288)
   - shards:              number of hash table shards, a power of two (default: 64)
   - cluster_file:        answer ElastiCache auto discovery (`config get cluster`)
                          with the hostname|ip|port lines of this file (SIGHUP re-reads it)
   - hotkeys_sample:      sample 1 key request in N for `stats hotkeys` (default: 100;
                          0 turns hot-key sampling off)
   - busy_poll_us:        an idle worker polls for this many microseconds before
                          it sleeps (default: 0, sleep at once)
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
   - lru_crawler, lru_maintainer, slab_reassign, slab_automove, slab_automove_ratio,
     hot_lru_pct, warm_lru_pct, hot_max_factor, warm_max_factor, lru_crawler_sleep,
     lru_crawler_tocrawl, no_lru_segmented, temporary_ttl: memcached's meaning
     (segmented LRU, crawler, page mover, TEMP LRU); tail_repair_time, hash_algorithm,
     track_sizes, modern, no_modern, watcher_logbuf_size, worker_logbuf_size,
     read_buf_mem_limit: accepted and reported as memcached does
   - drop_privileges:     seccomp system-call allowlist after start-up (default: on)
   - no_drop_privileges:  turn it off
"""

# Commands that are not flags, listed at the end of `-h`.
COMMANDS_HELP = """\
--print-unit [<unit>] [--exec <path>]
                          print a shipped systemd unit and exit
                          (memcachepy.service, memcachepy.socket, memcachepy@.service)
install-systemd [--dest <dir>] [--exec <path>] [--no-config]
                          write the systemd units (default /etc/systemd/system) and exit
cluster <N> [-p <port>] [--proxy <port>] [-- <daemon options>]
                          run N local nodes sharing a cluster file (auto discovery)
                          until Ctrl-C; `memcachepy cluster -h` for more
"""


def usage(version: str, mcversion: str) -> str:
    """The `-h` text, in table order."""
    out = [f"memcachepy {version} (memcached {mcversion} compatible)"]
    for f in FLAGS:
        line = f.usage_line()
        if line:
            out.append(line)
        if f.short == "o":
            out.append(SUBOPTION_HELP.rstrip("\n"))
    return "\n".join(out) + "\n" + COMMANDS_HELP
