# The flag table (memcachepy/options.py) drives the parser, `-h`, the config
# file and --check-config; this checks it record by record.
#
#  * every record has sample values here (a new flag without samples fails
#    test_every_record_has_samples);
#  * for each sample, the command line (cli.settings_from_args, what the daemon
#    runs), a config-file line (config.parse_config_text + validate) and
#    `--check-config` accept or reject it alike, with the command line's
#    message (memcached's wording), e.g. `-m 64M` everywhere;
#  * where memcached has the flag, a good non-default value shows the same
#    `stats settings` lines on memcached and memcachepy (differential).
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest

from memcachepy import cli, config
from memcachepy.options import FLAGS, NONE
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, start_daemons

pytestmark = pytest.mark.timeout(120)

# long name -> values to try (None: the switch alone).  Good and bad ones.
SAMPLES: dict[str, list] = {
    "port": ["0", "11311", "-1", "70000", "x"],
    "udp-port": ["0", "5", "-1", "70000"],
    "unix-socket": ["/tmp/mcpy-table.sock"],
    "enable-shutdown": [None],
    "unix-mask": ["0700", "0999", "abc"],
    "listen": ["127.0.0.1", "127.0.0.1,[::1]:0"],
    "daemon": [None],
    "enable-coredumps": [None],
    "user": ["nobody"],
    "memory-limit": ["64", "64M", "64x", "0", "abc"],
    "disable-evictions": [None],
    "conn-limit": ["10", "0", "zero", "-5"],
    "lock-memory": [None],
    "verbose": [None, "v"],
    "help": [None],
    "license": [None],
    "version": [None],
    "pidfile": ["/tmp/mcpy-table.pid"],
    "slab-growth-factor": ["1.5", "1.0", "x"],
    "slab-min-size": ["64", "0"],
    "enable-largepages": [None],
    "prefix-delimiter": [";", "ab"],
    "threads": ["2", "0", "many"],
    "max-reqs-per-event": ["5", "0"],
    "disable-cas": [None],
    "listen-backlog": ["64", "0"],
    "protocol": ["ascii", "auto", "binary", "ascii2"],
    "max-item-size": ["2m", "512k", "512", "2g", "600k"],
    "disable-flush-all": [None],
    "disable-dumping": [None],
    "disable-watch": [None],
    "auth-file": ["/nonexistent/auth"],
    "memory-file": ["/tmp/mcpy-table.mem"],
    "enable-sasl": [None],
    "napi-ids": ["1"],
    "enable-ssl": [None],
    "extended": ["idle_timeout=5", "hashpower=5", "hot_lru_pct=50,warm_lru_pct=40",
                 "bogus", "no_lru_crawler", "hash_algorithm=md5", "hotkeys_sample=0",
                 "hotkeys_sample=x", "busy_poll_us=50", "busy_poll_us=x",
                 "busy_poll_us=2000000", "ssl_verify_mode=9", "ssl_min_version=3",
                 "ssl_wbuf_size=x", "ssl_chain_cert"],
    "config": ["/nonexistent.conf"],
    "check-config": [None],
    "metrics-listen": ["127.0.0.1:9150", "127.0.0.1:"],
    "sasl-pwdb": ["/tmp/mcpy-table.pwdb"],
    "log-file": ["/tmp/mcpy-table.log"],
    "metrics-hotkeys": ["5", "0", "-1", "x"],
    "metrics-hotkeys-hash": [None],
}

# Not settings at all on a command line that also names a config file.
NOT_IN_FILES = {f.long for f in FLAGS if not f.in_config or f.ignore_in_config}


def tokens(flag, value) -> list[str]:
    name = f"-{flag.short}" if flag.short else f"--{flag.long}"
    if value is None:
        return [name]
    if flag.short == "v":
        return [name + value]
    return [name, value]


CASES = [(f, v) for f in FLAGS for v in SAMPLES.get(f.long, [])
         if f.long not in NOT_IN_FILES]


def test_every_record_has_samples() -> None:
    missing = [f.long for f in FLAGS if f.long not in SAMPLES]
    assert not missing, f"add sample values for {missing} to SAMPLES"
    assert not set(SAMPLES) - {f.long for f in FLAGS}, "samples for flags that are gone"


def command_line(argv: list[str]) -> str | None:
    """The daemon's verdict: None or its message's first line."""
    why = config.check_tokens(argv)
    return None if why is None else str(why).split("\n")[0]


def config_file(tmp_path, argv: list[str]) -> str | None:
    path = tmp_path / "t.conf"
    path.write_text(" ".join(argv) + "\n")
    try:
        cfg = config.load_config(str(path))
    except config.ConfigError as e:
        return str(e)
    errors = config.validate(cfg.entries)
    return str(errors[0]) if errors else None


def check_config(tmp_path, argv: list[str]) -> tuple[int, str]:
    path = tmp_path / "t.conf"
    path.write_text(" ".join(argv) + "\n")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["--config", str(path), "--check-config"])
    return code, err.getvalue()


@pytest.mark.parametrize("flag, value", CASES,
                         ids=[" ".join(tokens(f, v)) for f, v in CASES])
def test_command_line_config_file_and_check_config_agree(tmp_path, flag, value) -> None:
    argv = tokens(flag, value)
    want = command_line(argv)
    got_file = config_file(tmp_path, argv)
    code, err = check_config(tmp_path, argv)
    if want is None:
        assert got_file is None, got_file
        assert code == 0, err
    else:
        assert got_file is not None and want in got_file, (want, got_file)
        assert code != 0 and want in err, (want, err)


def test_memory_limit_with_suffix_everywhere(tmp_path) -> None:
    # the example: memcached reads -m with atoi(), so 64M is 64
    assert command_line(["-m", "64M"]) is None
    assert config_file(tmp_path, ["-m", "64M"]) is None
    assert check_config(tmp_path, ["-m", "64M"])[0] == 0
    assert cli.settings_from_args(cli.parse_args(["-m", "64M"])).maxbytes == 64 << 20


# (command-line flags, `stats settings` names that must match memcached's)
STATS_SAMPLES = [
    (["-m", "32"], ["maxbytes"]),
    (["-m", "32M"], ["maxbytes"]),
    (["-c", "77"], ["maxconns"]),
    (["-M"], ["evictions"]),
    (["-A"], ["shutdown_command"]),
    (["-f", "1.5"], ["growth_factor"]),
    (["-n", "64"], ["chunk_size"]),
    (["-t", "2"], ["num_threads", "num_threads_per_udp"]),
    (["-D", ";"], ["stat_key_prefix", "detail_enabled"]),
    (["-R", "5"], ["reqs_per_event"]),
    (["-C"], ["cas_enabled"]),
    (["-b", "64"], ["tcp_backlog"]),
    (["-B", "ascii"], ["binding_protocol"]),
    (["-I", "2m"], ["item_size_max", "slab_chunk_max"]),
    (["-F"], ["flush_enabled"]),
    (["-X"], ["dump_enabled"]),
    (["-o", "idle_timeout=5,hashpower=20,slab_chunk_max=262144"],
     ["idle_timeout", "hashpower_init", "slab_chunk_max"]),
    (["-o", "no_lru_crawler,no_lru_maintainer,slab_automove=2,hash_algorithm=jenkins"],
     ["lru_crawler", "lru_maintainer_thread", "slab_automove", "hash_algorithm"]),
    (["-o", "hot_lru_pct=30,warm_lru_pct=30,tail_repair_time=20,lru_crawler_sleep=50"],
     ["hot_lru_pct", "warm_lru_pct", "tail_repair_time", "lru_crawler_sleep"]),
]


def test_stats_settings_match_memcached() -> None:
    from conftest import require_memcached, require_memcachepy
    require_memcached()
    require_memcachepy()
    specs = [(k, tuple(flags)) for flags, _ in STATS_SAMPLES
             for k in (KIND_MEMCACHED, KIND_MEMCACHEPY)]
    daemons = start_daemons(specs)
    try:
        for i, (flags, names) in enumerate(STATS_SAMPLES):
            want = daemons[2 * i].stats(b"settings")
            got = daemons[2 * i + 1].stats(b"settings")
            for n in names:
                assert got.get(n) == want.get(n), (flags, n, want.get(n), got.get(n))
    finally:
        for d in daemons:
            d.stop(block=False)
