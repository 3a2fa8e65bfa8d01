# memcachepy.config — the /etc/memcachepy.conf file and its validation.
#
# Owns: reading a Debian-/etc/memcached.conf-style file (one command-line
# option per line, `#` comments) into argv tokens, merging those tokens with
# the real command line so that command-line flags win, and `--check-config`.
#
# Which options exist and take a value comes from the flag table
# (memcachepy/options.py); whether a value is valid is decided by the one
# validator, cli.settings_from_args (memcached's messages and exit statuses),
# run over each file line alone (so an error names file:line) and then over
# the merged set (the checks across options). A file therefore accepts exactly
# what the command line accepts.
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, TextIO

from .options import BY_LONG, BY_SHORT, OPTIONAL, Flag
from .settings import SettingsError

__all__ = [
    "ConfigError",
    "check_tokens",
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


def split_suboptions(v: str) -> list[tuple[str, str]]:
    """'a=1,b,c=2' -> [('a', 'a=1'), ('b', 'b'), ('c', 'c=2')]."""
    return [(p.partition("=")[0], p) for p in v.split(",") if p]


def check_tokens(tokens: Sequence[str], whole: bool = True) -> Optional[SettingsError]:
    """What the daemon would say about this command line (None: it accepts it).
    whole=False leaves out the checks across options."""
    from . import cli
    try:
        cli.settings_from_args(cli.parse_args(list(tokens)), check=whole)
    except SettingsError as e:
        return e
    except cli._ArgError as e:
        return SettingsError(str(e), 1)
    return None


# --------------------------------------------------------------------------
# Parsing


@dataclass
class Entry:
    """One option occurrence: where it came from and its value (None for flags)."""
    option: Flag
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
            opt = BY_LONG.get(name)
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
                opt = BY_SHORT.get(ch)
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
                cfg.entries.append(Entry(BY_LONG["log-file"], tokens[1], source, lineno))
                continue
            # `cluster_file PATH`: the same as -o cluster_file=PATH (auto discovery).
            if tokens[0] == "cluster_file":
                if len(tokens) != 2:
                    raise ConfigError("cluster_file: expected one file name", source, lineno)
                cfg.entries.append(Entry(BY_LONG["extended"], f"cluster_file={tokens[1]}",
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
            if e.option.arg == OPTIONAL and e.value is not None and e.option.short == "v":
                if e.value.strip("v"):
                    raise ConfigError(f"-v: unexpected {e.value!r}", source, lineno)
            why = check_tokens(e.tokens(), whole=False)
            if why:
                raise ConfigError(f"{_optname(e.option)}: {why}", source, lineno)
            cfg.entries.append(e)
    return cfg


def _optname(o: Flag) -> str:
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


def validate(entries: Iterable[Entry]) -> list[ConfigError]:
    """Each entry alone, then the whole set, through the daemon's own validator;
    [] when the daemon would start with these options."""
    entries = list(entries)
    errors: list[ConfigError] = []
    for e in entries:
        why = check_tokens(e.tokens(), whole=False)
        if why:
            errors.append(ConfigError(f"{_optname(e.option)}: {why}", e.source, e.lineno))
    if not errors:
        why = check_tokens([t for e in entries for t in e.tokens()])
        if why:
            errors.append(ConfigError(str(why)))
    return errors


def check_config(path: str, argv: Sequence[str] = (), out: Optional[TextIO] = None,
                 err: Optional[TextIO] = None) -> int:
    """`--check-config`: validate the file (and the command line on top of it).

    Prints warnings and every error, then "<path>: OK" on success.  Returns
    the process exit status: 0 valid, 1 invalid (memcached exits 64,
    EX_USAGE, for value errors; 1 keeps "non-zero" simple for scripts).
    """
    out = out or sys.stdout
    err = err or sys.stderr
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
