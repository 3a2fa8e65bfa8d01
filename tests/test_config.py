# Tests for memcachepy.config: the /etc/memcached.conf-style file format,
# command-line override, --check-config, and — because the file maps 1:1 onto
# memcached's flags — differential checks: the argv we produce is accepted by
# real memcached with the same meaning (seen through `stats settings`), and
# values real memcached refuses are refused by our validator too.
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from memcachepy import config
from memcachepy.config import ConfigError
from support.daemons import KIND_MEMCACHEPY, Proc, binary, memcachepy_status
from support.rawclient import stats

pytestmark = pytest.mark.timeout(60)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMCACHED = shutil.which("memcached") or ""
need_memcached = pytest.mark.skipif(not MEMCACHED, reason="memcached not installed")

# Written in the shape of Debian's /etc/memcached.conf (not a copy of it):
# -d, a logfile directive, comments, short options with separate values.
DEBIAN_STYLE = """\
# cache options
-d

logfile /var/log/memcached.log
# -v
-m 128
-p 11311
-u memcache
-l 127.0.0.1
# -c 1024
-P /var/run/memcached/memcached.pid
"""


def write(tmp_path, text: str, name: str = "memcachepy.conf") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ------------------------------------------------------------------ format


def test_debian_style_file(tmp_path):
    cfg = config.load_config(write(tmp_path, DEBIAN_STYLE))
    assert cfg.argv == ["--log-file=/var/log/memcached.log", "-m", "128", "-p", "11311",
                        "-u", "memcache", "-l", "127.0.0.1",
                        "-P", "/var/run/memcached/memcached.pid"]
    # -d is dropped, as Debian's systemd wrapper drops it, with a note; logfile is
    # --log-file (what Debian's init script does with it: stderr to that file).
    assert len(cfg.warnings) == 1
    assert ":2: '-d' is ignored" in cfg.warnings[0]


def test_shipped_example_is_valid_and_loopback_only():
    path = os.path.join(REPO, "memcachepy", "data", "memcachepy.conf")
    cfg = config.load_config(path)
    assert cfg.argv == ["-m", "64", "-p", "11211", "-l", "127.0.0.1", "-U", "0"]
    assert cfg.warnings == []
    assert config.validate(cfg.entries) == []


@pytest.mark.parametrize("line, argv", [
    ("-m 64", ["-m", "64"]),
    ("-m64", ["-m", "64"]),
    ("--memory-limit=64", ["-m", "64"]),
    ("--memory-limit 64", ["-m", "64"]),
    ("   -m 64   # trailing comment", ["-m", "64"]),
    ("-p -1", ["-p-1"]),
    ("-vv", ["-vv"]),
    ("-v", ["-v"]),
    ("--verbose", ["-v"]),
    ("-M -C", ["-M", "-C"]),
    ("-MC", ["-M", "-C"]),
    ("-o idle_timeout=5,hash_algorithm=jenkins", ["-o", "idle_timeout=5,hash_algorithm=jenkins"]),
    ("--extended=no_lru_crawler", ["-o", "no_lru_crawler"]),
    ("-I 2m", ["-I", "2m"]),
    ("-l 127.0.0.1,::1", ["-l", "127.0.0.1,::1"]),
    ("-l '[::1]:11211'", ["-l", "[::1]:11211"]),
    ("-s /run/memcachepy/mc\\#1.sock", ["-s", "/run/memcachepy/mc#1.sock"]),
    ("--metrics-listen 127.0.0.1:9150", ["--metrics-listen=127.0.0.1:9150"]),
    ("--metrics-listen 9150", ["--metrics-listen=9150"]),
    ("-D :", ["-D", ":"]),
])
def test_line_forms(line, argv):
    assert config.parse_config_text(line + "\n").argv == argv


@pytest.mark.parametrize("text, lineno, message", [
    ("\n\n-c 0\n", 3, "-c/--conn-limit: Maximum connections must be greater than 0"),
    ("-t abc\n", 1, "-t/--threads: Number of threads must be greater than 0"),
    ("-p 70000\n", 1, "-p/--port: Invalid port number"),
    ("-q\n", 1, "unknown option '-q'"),
    ("--no-such-thing\n", 1, "unknown option '--no-such-thing'"),
    ("memory 64\n", 1, "expected an option such as '-m 64', got 'memory'"),
    ("-m 64 extra\n", 1, "expected an option such as '-m 64', got 'extra'"),
    ("-m\n", 1, "option '-m' requires an argument"),
    ("--config /etc/other.conf\n", 1, "'--config' is only allowed on the command line"),
    ("-B ascii2\n", 1, "-B/--protocol: Invalid value for binding protocol: ascii2"),
    ("-f 1.0\n", 1, "-f/--slab-growth-factor: Factor must be greater than 1"),
    ("-o bogus\n", 1, '-o/--extended: Illegal suboption "bogus"'),
    ("-o hashpower=5\n", 1, "-o/--extended: Initial hashtable multiplier of 5 is too low"),
    ("-o hashpower\n", 1, "-o/--extended: Missing numeric argument for hashpower"),
    ("-o hash_algorithm=md5\n", 1, "Unknown hash_algorithm option (jenkins, murmur3, xxh3)"),
    ("-o hot_lru_pct=90\n", 1, "-o/--extended: hot_lru_pct must be > 1 and < 80"),
    ("-m '64\n", 1, "cannot split line"),
    ("--metrics-listen 127.0.0.1:\n", 1, "Invalid --metrics-listen address: 127.0.0.1:"),
])
def test_errors_name_file_and_line(tmp_path, text, lineno, message):
    path = write(tmp_path, "# header\n" + text)
    with pytest.raises(ConfigError) as ei:
        config.read_config_file(path)
    assert ei.value.lineno == lineno + 1
    assert str(ei.value).startswith(f"{path}:{lineno + 1}: ")
    assert message in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        config.read_config_file(str(tmp_path / "nope.conf"))
    assert "cannot read config file" in str(ei.value) and "nope.conf" in str(ei.value)


# ---------------------------------------------------------------- override


def test_command_line_overrides_file():
    file_argv = config.parse_config_text(
        "-m 64\n-p 11211\n-l 127.0.0.1\n-l ::1\n-vv\n-o idle_timeout=5,no_lru_crawler\n").argv
    merged = config.merge_argv(file_argv, ["--port=0", "-l", "10.0.0.1", "-v",
                                           "-o", "idle_timeout=9"])
    # -p, both -l lines and the verbosity are replaced; only the overridden
    # -o sub-option goes, the other stays.
    assert merged == ["-m", "64", "-o", "no_lru_crawler",
                      "--port=0", "-l", "10.0.0.1", "-v", "-o", "idle_timeout=9"]


def test_merge_keeps_unknown_cli_tokens_for_the_real_parser():
    merged = config.merge_argv(["-m", "64"], ["--some-future-flag", "x", "-m", "8"])
    assert merged == ["--some-future-flag", "x", "-m", "8"]


def test_merge_without_overlap_is_concatenation():
    assert config.merge_argv(["-m", "64"], ["-c", "10"]) == ["-m", "64", "-c", "10"]


# ------------------------------------------------------------ check-config


def run_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "memcachepy.config", *args],
                          capture_output=True, text=True, timeout=30, env=env)


def test_check_config_ok(tmp_path):
    path = write(tmp_path, DEBIAN_STYLE)
    r = run_check(path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: OK (")
    assert "warning:" in r.stderr and "'-d' is ignored" in r.stderr


@pytest.mark.parametrize("text, cli, message", [
    ("-t 0\n", [], ":1: -t/--threads: Number of threads must be greater than 0"),
    ("-I 512\n", [], "Item max size cannot be less than 1024 bytes."),
    ("-m 1\n-I 1m\n", [], "Cannot set item size limit higher than 1/2 of memory max."),
    ("-m 64\n", ["-m", "1"], "Cannot set item size limit higher than 1/2 of memory max."),
    ("-I 600k\n", [], "must be evenly divisible by slab_chunk_max"),
    ("-o hot_lru_pct=50,warm_lru_pct=40\n", [], "cannot be more than 80% combined"),
    ("-m 64\n", ["-c", "zero"], "-c/--conn-limit: Maximum connections must be greater than 0"),
])
def test_check_config_rejects(tmp_path, text, cli, message):
    r = run_check(write(tmp_path, text), *cli)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "OK" not in r.stdout


def test_check_config_cli_can_fix_the_file(tmp_path):
    # The file alone is invalid (-I too big for -m 1); the command line wins.
    path = write(tmp_path, "-m 1\n-I 1m\n")
    assert run_check(path).returncode != 0
    assert run_check(path, "-m", "64").returncode == 0


# ------------------------------------------ differential with real memcached


def _stats_settings(port: int) -> dict[str, str]:
    return stats(port, b"settings")


@need_memcached
def test_file_argv_means_the_same_to_real_memcached(tmp_path):
    path = write(tmp_path, """\
-m 32           # megabytes
--conn-limit=77
-o idle_timeout=9,hash_algorithm=jenkins
-t 2
-p 11211
-C
-vv
""")
    argv = config.merge_argv(config.read_config_file(path),
                             ["-u", "root", "-l", "127.0.0.1", "-U", "0", "-p", "-1", "-v"])
    with Proc([MEMCACHED, *argv], tmp_path) as p:
        st = _stats_settings(p.wait_port(10))  # fails if memcached refuses our argv
    assert st["maxbytes"] == str(32 * 1024 * 1024)
    assert st["maxconns"] == "77"
    assert st["idle_timeout"] == "9"
    assert st["hash_algorithm"] == "jenkins"
    assert st["num_threads"] == "2"
    assert st["cas_enabled"] == "no"
    assert st["verbosity"] == "1"  # -v on the command line replaced -vv
    assert st["tcpport"] != "11211"  # -p -1 on the command line won


@need_memcached
def test_shipped_example_starts_real_memcached(tmp_path):
    path = os.path.join(REPO, "memcachepy", "data", "memcachepy.conf")
    argv = config.merge_argv(config.read_config_file(path), ["-u", "root", "-p", "-1"])
    with Proc([MEMCACHED, *argv], tmp_path) as p:
        st = _stats_settings(p.wait_port(10))  # fails if memcached refuses the example
    assert st["maxbytes"] == str(64 * 1024 * 1024)
    assert st["inter"] == "127.0.0.1" and st["udpport"] == "0"


# Values real memcached 1.6.18 refuses at start-up; ours must refuse them too.
REFUSED_BY_MEMCACHED = [
    ["-c", "0"],
    ["-t", "0"],
    ["-R", "0"],
    ["-f", "1"],
    ["-n", "0"],
    ["-B", "textual"],
    ["-I", "1k"],
    ["-I", "600k"],
    ["-m", "1", "-I", "1m"],
    ["-I", "2000m"],
    ["-o", "hashpower=40"],
    ["-o", "slab_automove=3"],
    ["-o", "tail_repair_time=2"],
    ["-o", "hash_algorithm=sha1"],
    ["-o", "lru_crawler_sleep=2000000"],
    ["-o", "hot_lru_pct=60,warm_lru_pct=30"],
    ["-o", "not_an_option"],
    ["-o", "slab_chunk_max=1000"],
    ["-o", "temporary_ttl=10,no_lru_maintainer"],
]


@need_memcached
@pytest.mark.parametrize("bad", REFUSED_BY_MEMCACHED, ids=" ".join)
def test_refuses_what_memcached_refuses(tmp_path, bad):
    r = subprocess.run([MEMCACHED, "-u", "root", "-l", "127.0.0.1", "-U", "0", "-p", "-1", *bad],
                       capture_output=True, timeout=5)
    assert r.returncode != 0, "memcached accepted it; the table is stale"
    errors = []
    try:
        entries = config.parse_config_text(" ".join(bad) + "\n").entries
        errors = config.validate(entries)
    except ConfigError as e:
        errors = [e]
    assert errors, f"{bad} passed our validation but memcached refuses it"


# ------------------------------------------- the daemon itself (integration)
#
# `memcachepy --config FILE [--check-config]`.


def _daemon_with_config_or_skip() -> None:
    ok, reason = memcachepy_status()
    if not ok:
        pytest.skip(reason)


def _root() -> list[str]:
    return ["-u", "root"] if os.geteuid() == 0 else []


def test_daemon_reads_config_and_cli_overrides(tmp_path):
    _daemon_with_config_or_skip()
    path = write(tmp_path, "-m 32\n-c 77\n-p 11211\n-l 127.0.0.1\n-U 0\n-o idle_timeout=9\n")
    with Proc([*binary(KIND_MEMCACHEPY), "--config", path, *_root(), "-p", "-1", "-c", "55"],
              tmp_path) as p:
        st = _stats_settings(p.wait_port(30))
    assert st["maxbytes"] == str(32 * 1024 * 1024)  # from the file
    assert st["maxconns"] == "55"                  # the command line won over 77
    assert st["idle_timeout"] == "9"
    assert st["tcpport"] != "11211"


def test_daemon_check_config(tmp_path):
    _daemon_with_config_or_skip()
    good = write(tmp_path, "-m 32\n-l 127.0.0.1\n", "good.conf")
    bad = write(tmp_path, "-m 32\n-t many\n", "bad.conf")
    r = subprocess.run([sys.executable, "-m", "memcachepy", "--config", good, "--check-config"],
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    r = subprocess.run([sys.executable, "-m", "memcachepy", "--config", bad, "--check-config"],
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"{bad}:2:" in r.stderr and "Number of threads must be greater than 0" in r.stderr
    # Starting for real with the bad file fails the same way, before listening.
    r = subprocess.run([sys.executable, "-m", "memcachepy", "--config", bad, *_root(),
                        "-p", "-1", "-U", "0"], cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and f"{bad}:2:" in r.stderr
