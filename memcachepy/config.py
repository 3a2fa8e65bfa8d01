# memcachepy.config — the /etc/memcachepy.conf file and its validation.
#
# Owns: reading a Debian-/etc/memcached.conf-style file (one command-line
# option per line, `#` comments) into argv tokens, merging those tokens with
# the real command line so that command-line flags win, and validating
# option values the way memcached 1.6 does (plus a few stricter checks: a
# number must be a number, not whatever atoi() makes of it).
#
# Why a table of options here as well as the argparse parser in cli.py: the
# config file needs (a) to know which options take an argument so it can
# tokenise `-m64`, `--memory-limit=64` and `-vv` without the real parser,
# (b) canonical names so "-p on the command line" overrides
# "--port in the file", and (c) errors that point at file:line.  cli.py
# stays the final authority on what the daemon accepts.
from __future__ import annotations

import ipaddress
import shlex
import socket
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence, TextIO

__all__ = [
    "ConfigError",
    "Option",
    "OPTIONS",
    "Entry",
    "ConfigFile",
    "parse_config_text",
    "load_config",
    "read_config_file",
    "parse_argv",
    "merge_argv",
    "validate",
    "check_config",
    "DEFAULT_CONFIG_PATH",
]

DEFAULT_CONFIG_PATH = "/etc/memcachepy.conf"


class ConfigError(ValueError):
    """A config file or option problem; str() is a complete, user-facing line."""

    def __init__(self, message: str, source: Optional[str] = None,
                 lineno: Optional[int] = None) -> None:
        self.message = message
        self.source = source
        self.lineno = lineno
        where = ""
        if source is not None:
            where = f"{source}:{lineno}: " if lineno else f"{source}: "
        super().__init__(where + message)


# --------------------------------------------------------------------------
# Value checkers.  Each returns None when the value is fine, or the reason.

Checker = Callable[[str], Optional[str]]


def _int(lo: Optional[int] = None, hi: Optional[int] = None, what: str = "a whole number") -> Checker:
    def check(v: str) -> Optional[str]:
        try:
            n = int(v.strip(), 10)
        except ValueError:
            return f"{v!r} is not {what}"
        if lo is not None and n < lo:
            return f"{n} is too small (minimum {lo})"
        if hi is not None and n > hi:
            return f"{n} is too large (maximum {hi})"
        return None
    return check


def _float_gt(lo: float, hi: Optional[float] = None) -> Checker:
    def check(v: str) -> Optional[str]:
        try:
            x = float(v)
        except ValueError:
            return f"{v!r} is not a number"
        if not x > lo:
            return f"{v} must be greater than {lo:g}"
        if hi is not None and x > hi:
            return f"{v} must be at most {hi:g}"
        return None
    return check


def _choice(*names: str) -> Checker:
    def check(v: str) -> Optional[str]:
        if v not in names:
            return f"{v!r} is not one of {', '.join(names)}"
        return None
    return check


def _nonempty(v: str) -> Optional[str]:
    return None if v.strip() else "an empty value is not allowed"


def _octal(v: str) -> Optional[str]:
    try:
        n = int(v, 8)
    except ValueError:
        return f"{v!r} is not an octal mask such as 0700"
    return None if 0 <= n <= 0o777 else f"{v} is not a permission mask (0 to 0777)"


def _one_char(v: str) -> Optional[str]:
    return None if len(v) == 1 else f"{v!r} must be a single character"


def parse_size(v: str) -> int:
    """-I style size: bytes, or with a k/m suffix (either case)."""
    s = v.strip()
    mult = 1
    if s and s[-1] in "kK":
        mult, s = 1024, s[:-1]
    elif s and s[-1] in "mM":
        mult, s = 1024 * 1024, s[:-1]
    n = int(s, 10)  # ValueError for junk
    return n * mult


def _size(v: str) -> Optional[str]:
    try:
        n = parse_size(v)
    except ValueError:
        return f"{v!r} is not a size (bytes, or a number with a k or m suffix)"
    if n < 1024:
        return "Item max size cannot be less than 1024 bytes."
    if n > 1024 * 1024 * 1024:
        return "Cannot set item size limit higher than a gigabyte."
    return None


def _host_ok(host: str) -> Optional[str]:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"cannot resolve listen address {host!r}"
    return None


def split_listen(item: str) -> tuple[str, Optional[str]]:
    """'127.0.0.1' / '127.0.0.1:11211' / '[::1]:11211' / '::1' -> (host, port|None)."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return host, (rest[1:] if rest.startswith(":") else None)
    if item.count(":") == 1:
        host, port = item.split(":")
        return host, port
    return item, None


def _listen(v: str) -> Optional[str]:
    for item in v.split(","):
        item = item.strip()
        if not item:
            return f"{v!r} has an empty address"
        host, port = split_listen(item)
        if port is not None:
            err = _int(0, 65535, "a port number")(port)
            if err:
                return f"in {item!r}: {err}"
        err = _host_ok(host)
        if err:
            return err
    return None


def _hostport(v: str) -> Optional[str]:
    # [HOST:]PORT for --metrics-listen; host defaults to loopback.
    host, port = split_listen(v) if ":" in v else ("127.0.0.1", v)
    if port is None:
        return f"{v!r} needs a port, e.g. 127.0.0.1:9150"
    err = _int(0, 65535, "a port number")(port)
    return err or _host_ok(host)


def _extended(v: str) -> Optional[str]:
    """-o in a config file: the command line's own parser and messages (settings.py)."""
    from .settings import Settings, SettingsError, parse_suboptions
    try:
        parse_suboptions(Settings(), v)
    except SettingsError as e:
        return str(e).split("\n")[0]
    return None


def split_suboptions(v: str) -> list[tuple[str, str]]:
    """'a=1,b,c=2' -> [('a', 'a=1'), ('b', 'b'), ('c', 'c=2')]."""
    return [(p.partition("=")[0], p) for p in v.split(",") if p]


# --------------------------------------------------------------------------
# The option table (memcached 1.6.18's getopt table + memcachepy's own).


@dataclass(frozen=True)
class Option:
    long: str
    short: Optional[str] = None
    arg: str = "none"  # "none" | "required" | "optional"
    check: Optional[Checker] = None
    in_config: bool = True  # False: meaningless in a config file
    ignore_in_config: bool = False  # accepted in a file but dropped (Debian habit)
    help: str = ""

    @property
    def key(self) -> str:
        return self.short or self.long


OPTIONS: tuple[Option, ...] = (
    Option("port", "p", "required", _int(-1, 65535, "a port number"), help="TCP port"),
    Option("udp-port", "U", "required", _int(-1, 65535, "a port number"), help="UDP port"),
    Option("unix-socket", "s", "required", _nonempty, help="unix socket path"),
    Option("unix-mask", "a", "required", _octal, help="unix socket permission mask"),
    Option("listen", "l", "required", _listen, help="interfaces to listen on"),
    Option("enable-shutdown", "A"),
    Option("enable-ssl", "Z"),
    Option("memory-limit", "m", "required", _int(1, None, "a whole number of megabytes"),
           help="item memory in megabytes"),
    Option("disable-evictions", "M"),
    Option("conn-limit", "c", "required", _int(1, None), help="max simultaneous connections"),
    Option("lock-memory", "k"),
    Option("help", "h", in_config=False, ignore_in_config=True),
    Option("license", "i", in_config=False, ignore_in_config=True),
    Option("version", "V", in_config=False, ignore_in_config=True),
    Option("enable-coredumps", "r"),
    Option("verbose", "v", "optional"),
    # Debian's /etc/memcached.conf has -d; its systemd wrapper drops it and
    # so do we: the daemon is supervised, not forked, when run from a file.
    Option("daemon", "d", ignore_in_config=True),
    Option("user", "u", "required", _nonempty),
    Option("pidfile", "P", "required", _nonempty),
    Option("slab-growth-factor", "f", "required", _float_gt(1.0)),
    Option("slab-min-size", "n", "required", _int(1)),
    Option("threads", "t", "required", _int(1, 1024)),
    Option("prefix-delimiter", "D", "required", _one_char),  # short-only in memcached
    Option("enable-largepages", "L"),
    Option("max-reqs-per-event", "R", "required", _int(1)),
    Option("disable-cas", "C"),
    Option("listen-backlog", "b", "required", _int(1)),
    Option("protocol", "B", "required", _choice("auto", "ascii", "binary")),
    Option("max-item-size", "I", "required", _size),
    Option("enable-sasl", "S"),
    Option("disable-flush-all", "F"),
    Option("disable-dumping", "X"),
    Option("disable-watch", "W"),
    Option("auth-file", "Y", "required", _nonempty),
    Option("memory-file", "e", "required", _nonempty),
    Option("extended", "o", "required", _extended),
    Option("napi-ids", "N", "required", _int(1)),
    # memcachepy's own
    Option("metrics-listen", None, "required", _hostport,
           help="serve Prometheus metrics on [HOST:]PORT (loopback by default)"),
    Option("metrics-hotkeys", None, "required", _int(0, None),
           help="export the N hottest keys with the metrics (default 10; 0: none)"),
    Option("metrics-hotkeys-hash", None,
           help="export hot keys as SHA-256 prefixes instead of the keys"),
    Option("sasl-pwdb", None, "required", _nonempty,
           help="SASL password file (user:password lines), as MEMCACHED_SASL_PWDB"),
    Option("log-file", None, "required", _nonempty,
           help="log to FILE instead of stderr; SIGHUP reopens it"),
    Option("config", None, "required", _nonempty, in_config=False),
    Option("check-config", None, in_config=False),
)

_BY_SHORT = {o.short: o for o in OPTIONS if o.short}
_BY_LONG = {o.long: o for o in OPTIONS}


# --------------------------------------------------------------------------
# Parsing


@dataclass
class Entry:
    """One option occurrence: where it came from and its value (None for flags)."""
    option: Option
    value: Optional[str]
    source: str = "<command line>"
    lineno: Optional[int] = None

    def tokens(self) -> list[str]:
        o = self.option
        if o.short:
            if self.value is None:
                return ["-" + o.short]
            if o.arg == "optional":
                return ["-" + o.short + self.value]
            # `-p-1` keeps a leading '-' in a value from looking like an option.
            return ["-" + o.short + self.value] if self.value.startswith("-") else \
                ["-" + o.short, self.value]
        if self.value is None:
            return ["--" + o.long]
        return ["--" + o.long + "=" + self.value]


@dataclass
class ConfigFile:
    path: str
    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        out: list[str] = []
        for e in self.entries:
            out.extend(e.tokens())
        return out


def _strip_comment(line: str) -> str:
    # Debian's wrapper: an unescaped '#' starts a comment anywhere on the line.
    out = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == "#":
            out.append("#")
            i += 2
            continue
        if ch == "#":
            break
        out.append(ch)
        i += 1
    return "".join(out).strip()


def _getopt(tokens: Sequence[str], source: str, lineno: Optional[int],
            strict: bool) -> tuple[list[Entry], list[str]]:
    """getopt_long over tokens.  Returns (entries, leftovers).

    strict=True (config files): unknown options and stray words are errors.
    strict=False (the real argv): unknown tokens are returned untouched so
    cli.py's parser can judge them.
    """
    entries: list[Entry] = []
    rest: list[str] = []
    i = 0

    def err(msg: str) -> ConfigError:
        return ConfigError(msg, source, lineno)

    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "--":
            rest.extend(tokens[i - 1:])
            break
        if tok.startswith("--") and len(tok) > 2:
            name, eq, val = tok[2:].partition("=")
            opt = _BY_LONG.get(name)
            if opt is None:
                if strict:
                    raise err(f"unknown option '--{name}'")
                rest.append(tok)
                continue
            value: Optional[str] = None
            if opt.arg == "none":
                if eq:
                    raise err(f"option '--{name}' takes no argument")
            elif opt.arg == "optional":
                value = val if eq else None
            else:
                if eq:
                    value = val
                elif i < len(tokens):
                    value = tokens[i]
                    i += 1
                else:
                    raise err(f"option '--{name}' requires an argument")
            entries.append(Entry(opt, value, source, lineno))
            continue
        if tok.startswith("-") and len(tok) > 1:
            j = 1
            while j < len(tok):
                ch = tok[j]
                opt = _BY_SHORT.get(ch)
                if opt is None:
                    if strict:
                        raise err(f"unknown option '-{ch}'")
                    # Hand the whole token to cli.py rather than guess.
                    rest.append(tok)
                    break
                if opt.arg == "none":
                    entries.append(Entry(opt, None, source, lineno))
                    j += 1
                    continue
                if opt.arg == "optional":
                    entries.append(Entry(opt, tok[j + 1:] or None, source, lineno))
                    break
                if j + 1 < len(tok):
                    value = tok[j + 1:]
                elif i < len(tokens):
                    value = tokens[i]
                    i += 1
                else:
                    raise err(f"option '-{ch}' requires an argument")
                entries.append(Entry(opt, value, source, lineno))
                break
            continue
        if strict:
            raise err(f"expected an option such as '-m 64', got {tok!r}")
        rest.append(tok)
    return entries, rest


def parse_config_text(text: str, source: str = "<config>") -> ConfigFile:
    """Parse config file text; raises ConfigError (with file:line) on the first error."""
    cfg = ConfigFile(source)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"cannot split line: {exc}", source, lineno) from None
        if tokens and not tokens[0].startswith("-"):
            # Debian's conf has `logfile PATH` (its init script redirects
            # stderr there): the same as --log-file PATH.
            if tokens[0] == "logfile":
                if len(tokens) != 2:
                    raise ConfigError("logfile: expected one file name", source, lineno)
                cfg.entries.append(Entry(_BY_LONG["log-file"], tokens[1], source, lineno))
                continue
            # `cluster_file PATH`: the same as -o cluster_file=PATH (auto discovery).
            if tokens[0] == "cluster_file":
                if len(tokens) != 2:
                    raise ConfigError("cluster_file: expected one file name", source, lineno)
                cfg.entries.append(Entry(_BY_LONG["extended"], f"cluster_file={tokens[1]}",
                                         source, lineno))
                continue
            raise ConfigError(f"expected an option such as '-m 64', got {tokens[0]!r}",
                              source, lineno)
        entries, _ = _getopt(tokens, source, lineno, strict=True)
        for e in entries:
            if e.option.ignore_in_config:
                cfg.warnings.append(f"{source}:{lineno}: '{line}' is ignored in a config file")
                continue
            if not e.option.in_config:
                raise ConfigError(f"'--{e.option.long}' is only allowed on the command line",
                                  source, lineno)
            if e.value is not None and e.option.arg == "required" and e.option.check:
                why = e.option.check(e.value)
                if why:
                    raise ConfigError(f"{_optname(e.option)}: {why}", source, lineno)
            if e.option.arg == "optional" and e.value is not None and e.option.short == "v":
                if e.value.strip("v"):
                    raise ConfigError(f"-v: unexpected {e.value!r}", source, lineno)
            cfg.entries.append(e)
    return cfg


def _optname(o: Option) -> str:
    return f"-{o.short}/--{o.long}" if o.short else f"--{o.long}"


def load_config(path: str) -> ConfigFile:
    """Read and parse a config file; ConfigError if it is missing or invalid."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", path) from None
    return parse_config_text(text, path)


def read_config_file(path: str) -> list[str]:
    """argv tokens from a config file, to be merged before the real argv.

    Raises ConfigError (str() is "path:line: message") on any problem.
    """
    return load_config(path).argv


def parse_argv(argv: Sequence[str]) -> tuple[list[Entry], list[str]]:
    """The known options of a command line, plus what we did not recognise."""
    return _getopt(list(argv), "<command line>", None, strict=False)


def merge_argv(config_tokens: Sequence[str], argv: Sequence[str]) -> list[str]:
    """Config tokens with every option the command line also sets removed,
    followed by the command line.

    Override is per option (a -l on the command line replaces all -l lines,
    -v replaces the file's verbosity) and per -o sub-option name
    (`-o idle_timeout=5` on the command line replaces only idle_timeout).
    """
    cli_entries, _ = parse_argv(argv)
    cli_keys = {e.option.key for e in cli_entries if e.option.short != "o"}
    cli_subopts = {name for e in cli_entries if e.option.short == "o"
                   for name, _ in split_suboptions(e.value or "")}
    file_entries, _ = _getopt(list(config_tokens), "<config>", None, strict=True)
    kept: list[str] = []
    for e in file_entries:
        if e.option.short == "o":
            parts = [p for name, p in split_suboptions(e.value or "")
                     if name not in cli_subopts]
            if parts:
                kept.extend(Entry(e.option, ",".join(parts)).tokens())
            continue
        if e.option.key in cli_keys:
            continue
        kept.extend(e.tokens())
    return kept + list(argv)


# --------------------------------------------------------------------------
# Whole-configuration checks (what memcached checks after getopt).


@dataclass
class Settings:
    """The handful of merged values the cross-option checks need."""
    memory_mb: int = 64
    item_size_max: int = 1024 * 1024
    slab_chunk_max: Optional[int] = None
    hot_lru_pct: int = 20
    warm_lru_pct: int = 40
    temporary_ttl: bool = False
    lru_maintainer: bool = True
    values: dict = field(default_factory=dict)


def validate(entries: Iterable[Entry]) -> list[ConfigError]:
    """Check every value and the cross-option rules; [] when the set is valid."""
    errors: list[ConfigError] = []
    s = Settings()
    for e in entries:
        o = e.option
        if e.value is not None and o.arg == "required" and o.check:
            why = o.check(e.value)
            if why:
                errors.append(ConfigError(f"{_optname(o)}: {why}", e.source, e.lineno))
                continue
        if o.short == "m" and e.value is not None:
            s.memory_mb = int(e.value)
        elif o.short == "I" and e.value is not None:
            s.item_size_max = parse_size(e.value)
        elif o.short == "o":
            for name, part in split_suboptions(e.value or ""):
                value = part.partition("=")[2]
                if name == "slab_chunk_max":
                    s.slab_chunk_max = int(value)
                elif name == "hot_lru_pct":
                    s.hot_lru_pct = int(value)
                elif name == "warm_lru_pct":
                    s.warm_lru_pct = int(value)
                elif name == "temporary_ttl":
                    s.temporary_ttl = True
                elif name == "no_lru_maintainer":
                    s.lru_maintainer = False
                elif name == "lru_maintainer":
                    s.lru_maintainer = True
        s.values[o.key] = e.value

    def fail(msg: str) -> None:
        errors.append(ConfigError(msg))

    if s.item_size_max > s.memory_mb * 1024 * 1024 // 2:
        fail("Cannot set item size limit higher than 1/2 of memory max. "
             f"(-I {s.item_size_max} bytes, -m {s.memory_mb} MB)")
    # memcached 1.6.18: slab_chunk_max defaults to half a 1 MB page, in bytes.
    chunk_max = s.slab_chunk_max if s.slab_chunk_max is not None else 512 * 1024
    if chunk_max > s.item_size_max:
        fail(f"slab_chunk_max ({chunk_max} bytes) cannot be larger than -I "
             f"({s.item_size_max} bytes)")
    elif s.item_size_max % chunk_max:
        fail(f"-I ({s.item_size_max} bytes) must be evenly divisible by slab_chunk_max "
             f"({chunk_max} bytes)")
    if (1024 * 1024) % chunk_max:
        fail(f"slab_chunk_max ({chunk_max} bytes) must divide the 1 MB slab page evenly")
    if s.hot_lru_pct + s.warm_lru_pct > 80:
        fail("hot_lru_pct + warm_lru_pct cannot be more than 80% combined")
    if s.temporary_ttl and not s.lru_maintainer:
        fail("temporary_ttl requires lru_maintainer to be enabled")
    return errors


def check_config(path: str, argv: Sequence[str] = (), out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr) -> int:
    """`--check-config`: validate the file (and the command line on top of it).

    Prints warnings and every error, then "<path>: OK" on success.  Returns
    the process exit status: 0 valid, 1 invalid (memcached exits 64,
    EX_USAGE, for value errors; 1 keeps "non-zero" simple for scripts).
    """
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"memcachepy: {exc}", file=err)
        return 1
    for w in cfg.warnings:
        print(f"memcachepy: warning: {w}", file=err)
    argv = [a for a in argv if a != "--check-config"]
    try:
        merged = merge_argv(cfg.argv, argv)
        cli_entries, unknown = parse_argv(argv)
    except ConfigError as exc:
        print(f"memcachepy: {exc}", file=err)
        return 1
    # Entries with their file positions, minus what the command line overrides.
    overridden = {e.option.key for e in cli_entries if e.option.short != "o"}
    entries = [e for e in cfg.entries if e.option.key not in overridden or e.option.short == "o"]
    entries += [e for e in cli_entries if e.option.long not in ("config", "check-config")]
    errors = validate(entries)
    if unknown:
        errors.append(ConfigError(f"unknown command-line arguments: {' '.join(unknown)}"))
    for problem in errors:
        print(f"memcachepy: {problem}", file=err)
    if errors:
        return 1
    print(f"{path}: OK ({' '.join(shlex.quote(t) for t in merged) or 'defaults'})", file=out)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m memcachepy.config [FILE] [options...]` == memcachepy --check-config."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = DEFAULT_CONFIG_PATH
    if args and not args[0].startswith("-"):
        path = args.pop(0)
    return check_config(path, args)


if __name__ == "__main__":
    sys.exit(main())
