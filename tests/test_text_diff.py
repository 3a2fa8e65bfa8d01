# Differential transcripts for the classic text protocol (issue 2).
#
# Each transcript is a named list of steps (see support/rawclient.py) sent over one fresh
# connection to a fresh real memcached 1.6.18 and a fresh memcachepy started with identical
# flags; every reply byte is collected and, after normalise() has erased what may legitimately
# differ (CAS numbering, versions, clocks), compared byte for byte.  The "sanity-memcached"
# parametrisation runs memcached against memcached: it proves each transcript is
# deterministic and the normaliser is not hiding or inventing differences.
#
# Coverage follows shared/protocol-checklist.md §1 (framing, limits), §2 (exptime, CAS) and
# §3 (every classic command, its noreply form and its error paths).
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from conftest import require_memcached
from support.daemons import KIND_MEMCACHED, KIND_MEMCACHEPY, memcachepy_status
from support.normalise import diff, normalise
from support.rawclient import Conn, Raw, Step, run_transcript

CRLF = b"\r\n"
K250 = b"k" * 250
K251 = b"k" * 251
# memcached 1.6.18 refuses -I below slab_chunk_max (512 KiB by default), so small item
# limits always come with a matching slab_chunk_max (in bytes, as 1.6.18 reads it).
I1K = ("-I", "1k", "-o", "slab_chunk_max=1024")
I2K = ("-I", "2k", "-o", "slab_chunk_max=2048")


def _auth_file() -> str:
    """Credentials for -Y (ASCII auth): one `user:password` per line."""
    path = os.path.join(tempfile.mkdtemp(prefix="mcpy-auth-"), "auth")
    with open(path, "w") as fh:
        fh.write("user:pass\nfoo:bar\n")
    atexit.register(shutil.rmtree, os.path.dirname(path), True)
    return path


AUTH_FILE = _auth_file()
FUTURE_ABS = str(int(time.time()) + 3600).encode()  # absolute exptime one hour ahead
PAST_ABS = b"2592001"  # > 30 days, so absolute, and long before the daemon started


@dataclass(frozen=True)
class T:
    name: str
    steps: tuple[Step, ...]
    flags: tuple[str, ...] = ()
    mode: str = "sync"
    exits: bool = False  # the transcript makes the daemon exit (shutdown with -A)


TRANSCRIPTS: list[T] = []


def t(name: str, *steps: Step, flags: Sequence[str] = (), mode: str = "sync",
      exits: bool = False) -> None:
    assert all(x.name != name for x in TRANSCRIPTS), name
    TRANSCRIPTS.append(T(name, tuple(steps), tuple(flags), mode, exits))


def st(cmd: str, key: bytes | str, value: bytes | str, flags: int | str = 0,
       exptime: int | str = 0, extra: str = "") -> bytes:
    """A storage command line plus its data block."""
    if isinstance(key, str):
        key = key.encode()
    if isinstance(value, str):
        value = value.encode()
    line = b"%s %s %s %s %d" % (cmd.encode(), key, str(flags).encode(), str(exptime).encode(),
                                len(value))
    if extra:
        line += b" " + extra.encode()
    return line + CRLF + value + CRLF


def s(key: str | bytes, value: str | bytes, flags: int | str = 0, exptime: int | str = 0,
      extra: str = "") -> bytes:
    return st("set", key, value, flags, exptime, extra)


# ---------------------------------------------------------------- §1 framing, tokenising
t("frame_bare_lf", b"set lf 0 0 1\nx\r\nget lf\n", b"gets lf\n")
t("frame_data_contains_crlf", s("k", b"a\r\nb"), b"get k\r\n")
t("frame_data_contains_command", s("k", b"get k\r\n"), b"get k\r\n")
t("frame_tab_is_not_separator", b"set\ttab 0 0 1\r\nx\r\n", b"get\ta\r\n")
t("frame_tab_inside_key", s(b"a\tb", "v"), b"get a\tb\r\n", b"get a\r\n")
t("frame_control_char_key", s(b"a\x01b", "v"), b"get a\x01b\r\n")
t("frame_leading_trailing_spaces", s("a", "1"), b"   get a\r\n", b"get a   \r\n",
  b"  set   b  0  0  1  \r\nz\r\n", b"get    a     b\r\n")
t("frame_command_case", s("a", "1"), b"GET a\r\n", b"Get a\r\n", b"SET a 0 0 1\r\nx\r\n",
  b"Delete a\r\n", b"get a\r\n")
t("frame_empty_lines", b"\r\n", b"\n", b"  \r\n", b"\r\n\r\nget a\r\n")
t("frame_unknown_commands", b"foo\r\n", b"foo bar baz\r\n", b"gett a\r\n", b"sett a 0 0 1\r\n")
t("frame_24_tokens_set", b"set a 0 0 1" + b" x" * 20 + b"\r\nv\r\n", b"get a\r\n")
t("frame_24_tokens_get", s("a", "1"), b"get " + b" ".join(b"a%d" % i for i in range(30)) + b" a\r\n")
t("frame_many_tokens_delete", s("a", "1"), b"delete a b c d e\r\n", b"delete a 0 noreply x\r\n",
  b"get a\r\n")
t("frame_many_tokens_incr", s("n", "1"), b"incr n 1 noreply x\r\n", b"incr n 1 2 3 4 5 6\r\n",
  b"get n\r\n")
t("frame_key_250", s(K250, "v"), b"get " + K250 + CRLF, b"gets " + K250 + CRLF,
  b"touch " + K250 + b" 0\r\n", b"delete " + K250 + CRLF)
t("frame_key_251_set", s(K251, "v"), b"get " + K251 + CRLF)
t("frame_key_251_get", s("a", "1"), b"get a " + K251 + b" a\r\n", b"gets " + K251 + CRLF,
  b"get a\r\n")
t("frame_key_251_other_cmds", b"delete " + K251 + CRLF, b"incr " + K251 + b" 1\r\n",
  b"decr " + K251 + b" 1\r\n", b"touch " + K251 + b" 0\r\n", b"gat 0 " + K251 + CRLF,
  b"gats 0 a " + K251 + CRLF)
t("frame_key_251_storage", st("add", K251, "v"), st("replace", K251, "v"),
  st("append", K251, "v"), st("prepend", K251, "v"), b"cas " + K251 + b" 0 0 1 1\r\nv\r\n")
t("frame_line_too_long_closes", s("a", "1"), Raw(b"x" * 3000), mode="eof")
t("frame_line_too_long_set_closes", Raw(b"set a 0 0 1" + b" " * 2100), mode="eof")
t("frame_long_line_with_newline_ok", b"set k 0 0 1" + b" " * 2100 + b"\r\nx\r\n", b"get k\r\n")
t("frame_long_get_without_newline_kept", s("a", "1"), s("b", "2"),
  Raw(b"get a " + b" ".join(b"miss%04d" % i for i in range(400))),
  b" b\r\n")
t("frame_long_gets_without_newline_kept", s("a", "1"),
  Raw(b"gets " + b" ".join(b"miss%04d" % i for i in range(400))), b" a\r\n")
t("frame_leading_spaces_long_get", s("a", "1"),
  Raw(b" " * 50 + b"get " + b" ".join(b"z%04d" % i for i in range(500))), b" a\r\n")
t("frame_too_many_leading_spaces_long_get_closes", s("a", "1"),
  Raw(b" " * 150 + b"get " + b" ".join(b"z%04d" % i for i in range(500))), mode="eof")
t("frame_huge_multiget", s("a", "1"), s("b", "22"),
  b"get " + b" ".join(b"key%05d" % i for i in range(3000)) + b" a b a\r\n")
t("frame_http_request_closes", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", mode="eof")
t("frame_http_last_token_closes", s("a", "1"), b"foo bar HTTP/1.0\r\n", mode="eof")
t("frame_http_known_command_not_closed", s("a", "1"), b"get a HTTP/1.0\r\n", b"get a\r\n")
t("frame_split_command", Raw(b"se"), Raw(b"t a 0 0 5"), Raw(b"\r"), Raw(b"\nhel"), Raw(b"lo"),
  Raw(b"\r"), b"\n", b"get a\r\n")
t("frame_split_get", s("a", "1"), Raw(b"ge"), Raw(b"t"), Raw(b" a"), b"\r\n")
t("frame_pipeline_mixed", s("a", "1") + b"get a\r\n" + st("add", "a", "2") + b"incr a 5\r\n"
  + b"bogus\r\n" + b"gets a\r\n" + b"delete a\r\n" + b"get a\r\n")
t("frame_many_small_pipelined", b"".join(s("p%d" % i, str(i)) for i in range(200))
  + b"get " + b" ".join(b"p%d" % i for i in range(200)) + CRLF)
t("frame_cr_only_is_not_terminator", Raw(b"get a\r"), Raw(b"get b\r"), b"\n")
t("frame_nul_byte_in_command", s("a", "1"), b"get\x00a\r\n", b"get a\x00\r\n")
t("frame_bget_alias", s("a", "1"), b"bget a\r\n")

# ---------------------------------------------------------------- §1.15 numbers
t("num_flags_max_u32", s("a", "v", flags=4294967295), b"get a\r\n")
t("num_flags_truncated_2pow32", s("a", "v", flags=4294967296), b"gets a\r\n",
  s("b", "v", flags=4294967297), b"get b\r\n")
t("num_flags_negative", s("a", "v", flags=-1), b"get a\r\n")
t("num_flags_garbage", s("a", "v", flags="12ab"), s("b", "v", flags="abc"),
  s("c", "v", flags=""), b"get a b c\r\n")
t("num_flags_plus_sign", s("a", "v", flags="+5"), b"get a\r\n")
t("num_flags_leading_zeros", s("a", "v", flags="0007"), b"get a\r\n")
t("num_exptime_garbage", s("a", "v", exptime="abc"), s("a", "v", exptime="1x"), b"get a\r\n")
t("num_bytes_negative", b"set a 0 0 -1\r\nv\r\n", b"get a\r\n")
t("num_bytes_garbage", b"set a 0 0 abc\r\nv\r\n", b"set a 0 0 1x\r\nv\r\n", b"get a\r\n")
t("num_bytes_zero", b"set a 0 0 0\r\n\r\n", b"get a\r\n", b"append a 0 0 0\r\n\r\n",
  b"get a\r\n")
t("num_bytes_huge", b"set a 0 0 4294967296\r\nv\r\n", b"get a\r\n")

# ---------------------------------------------------------------- §1.2 data chunk errors
t("chunk_too_long", s("a", "old"), b"set a 0 0 3\r\nhello\r\n", b"get a\r\n")
t("chunk_bad_terminator", s("a", "old"), b"set a 0 0 3\r\nabcXY\r\n", b"get a\r\n")
t("chunk_lf_only_terminator", s("a", "old"), b"set a 0 0 3\r\nabc\nget a\r\n", b"get a\r\n")
t("chunk_split_then_bad", s("a", "old"), Raw(b"set a 0 0 3\r\nab"), b"cdefg\r\n", b"get a\r\n")
t("chunk_error_noreply", b"set nr 0 0 1 noreply\r\nxyz\r\n", b"get nr\r\n")
t("chunk_error_each_storage_cmd", s("a", "1"), st("add", "b", "1")[:-2] + b"XX\r\n",
  st("replace", "a", "1")[:-2] + b"XX\r\n", st("append", "a", "1")[:-2] + b"XX\r\n",
  st("prepend", "a", "1")[:-2] + b"XX\r\n", b"cas a 0 0 1 1\r\n2XX\r\n", b"get a b\r\n")
t("chunk_split_data_block", Raw(b"set a 0 0 10\r\n01234"), Raw(b"567"), b"89\r\n", b"get a\r\n")

# ---------------------------------------------------------------- retrieval
t("get_hit_miss", s("a", "1"), s("b", "two", flags=7), b"get a\r\n", b"get zz\r\n",
  b"get a zz b\r\n")
t("get_duplicates", s("a", "1"), b"get a a a\r\n", b"gets a a\r\n")
t("get_no_key", b"get\r\n", b"get \r\n", b"gets\r\n", b"gets   \r\n")
t("get_noreply_is_a_key", s("a", "1"), s("noreply", "n"), b"get a noreply\r\n")
t("gets_cas_distinct_and_stable", s("a", "1"), s("b", "2"), b"gets a b\r\n", b"gets a b\r\n",
  s("a", "3"), b"gets a b\r\n")
t("gets_binary_value", s("bin", bytes(range(256))), b"gets bin\r\n", b"get bin\r\n")
t("get_large_value", s("big", b"x" * 500000), b"get big\r\n")
t("gat_hit_miss", s("a", "1"), b"gat 100 a\r\n", b"gat 100 a zz\r\n", b"gat 0 zz\r\n")
t("gats_hit_miss", s("a", "1", flags=3), b"gats 100 a zz a\r\n", b"gets a\r\n")
t("gat_no_key", s("a", "1"), b"gat 100\r\n", b"gats 100\r\n", b"gat\r\n", b"gats\r\n")
t("gat_bad_exptime", s("a", "1"), b"gat abc a\r\n", b"gats 1x a\r\n", b"gat  a\r\n")
t("gat_negative_expires_after_return", s("a", "1"), b"gat -1 a\r\n", b"get a\r\n")
t("gats_negative_expires_after_return", s("a", "1"), b"gats -1 a\r\n", b"gets a\r\n")
t("gat_does_not_change_cas", s("a", "1"), b"gets a\r\n", b"gats 100 a\r\n", b"gets a\r\n")
t("gat_past_absolute", s("a", "1"), b"gat " + PAST_ABS + b" a\r\n", b"get a\r\n")
t("gat_future_absolute", s("a", "1"), b"gat " + FUTURE_ABS + b" a\r\n", b"get a\r\n")

# ---------------------------------------------------------------- storage
t("set_basic", s("a", "hello", flags=42), b"get a\r\n", s("a", "bye", flags=1), b"get a\r\n")
t("set_wrong_token_count", b"set a 0 0\r\nv\r\n", b"set a 0\r\n", b"set\r\n",
  b"set a 0 0 1 noreply extra\r\nv\r\n", b"get a\r\n")
t("set_noreply", s("a", "1", extra="noreply"), b"get a\r\n")
t("set_noreply_bad_token_is_not_noreply", s("a", "1", extra="noreplyx"), b"get a\r\n")
t("add_semantics", st("add", "a", "1"), st("add", "a", "2"), b"get a\r\n")
t("add_noreply", st("add", "a", "1", extra="noreply"), st("add", "a", "2", extra="noreply"),
  b"get a\r\n")
t("add_over_expired", s("a", "1", exptime=-1), st("add", "a", "2"), b"get a\r\n")
t("replace_semantics", st("replace", "a", "1"), s("a", "x"), st("replace", "a", "2", flags=9),
  b"get a\r\n")
t("replace_noreply", st("replace", "a", "1", extra="noreply"), s("a", "x"),
  st("replace", "a", "2", extra="noreply"), b"get a\r\n")
t("append_prepend_semantics", st("append", "a", "x"), st("prepend", "a", "x"),
  s("a", "mid", flags=5), st("append", "a", "_end", flags=99, exptime=-1),
  st("prepend", "a", "start_", flags=77), b"gets a\r\n")
t("append_prepend_noreply", s("a", "m"), st("append", "a", "e", extra="noreply"),
  st("prepend", "a", "s", extra="noreply"), st("append", "zz", "e", extra="noreply"),
  b"get a zz\r\n")
t("append_changes_cas", s("a", "m"), b"gets a\r\n", st("append", "a", "x"), b"gets a\r\n")
t("append_keeps_ttl", s("a", "m", exptime=1000), st("append", "a", "x", exptime=-1),
  b"get a\r\n")
t("append_empty", s("a", "m"), st("append", "a", ""), st("prepend", "a", ""), b"get a\r\n")
t("storage_bad_cmdline_does_not_swallow",
  s("a", "v", flags="x"), st("add", "a", "v", exptime="y"), b"replace a 0 0 z\r\nv\r\n",
  b"append a -1 0 1\r\nv\r\n")

# ---------------------------------------------------------------- cas
t("cas_stored", s("a", "1"), b"gets a\r\n", b"cas a 5 0 1 {cas:a}\r\n2\r\n", b"gets a\r\n")
t("cas_exists", s("a", "1"), b"gets a\r\n", s("a", "2"), b"cas a 0 0 1 {cas:a}\r\n3\r\n",
  b"cas a 0 0 1 999999\r\n3\r\n", b"get a\r\n")
t("cas_not_found", b"cas a 0 0 1 1\r\nv\r\n", b"get a\r\n")
t("cas_noreply", s("a", "1"), b"gets a\r\n", b"cas a 0 0 1 {cas:a} noreply\r\n2\r\n",
  b"cas a 0 0 1 {cas:a} noreply\r\n3\r\n", b"cas zz 0 0 1 1 noreply\r\n3\r\n", b"get a\r\n")
t("cas_bad_unique", s("a", "1"), b"cas a 0 0 1 abc\r\nv\r\n", b"cas a 0 0 1 -1\r\nv\r\n",
  b"get a\r\n")
t("cas_missing_unique", s("a", "1"), b"cas a 0 0 1\r\nv\r\n", b"get a\r\n")
t("cas_zero", s("a", "1"), b"cas a 0 0 1 0\r\nv\r\n", b"get a\r\n")
t("cas_after_touch_still_valid", s("a", "1"), b"gets a\r\n", b"touch a 100\r\n",
  b"cas a 0 0 1 {cas:a}\r\n2\r\n", b"get a\r\n")
t("cas_after_incr_invalid", s("a", "1"), b"gets a\r\n", b"incr a 1\r\n",
  b"cas a 0 0 1 {cas:a}\r\n9\r\n", b"get a\r\n")
t("cas_expired_is_not_found", s("a", "1"), b"gets a\r\n", b"touch a -1\r\n",
  b"cas a 0 0 1 {cas:a}\r\n2\r\n")
t("cas_disabled", s("a", "1"), b"gets a\r\n", b"cas a 0 0 1 0\r\n2\r\n",
  b"cas a 0 0 1 1\r\n2\r\n", b"cas zz 0 0 1 0\r\n2\r\n", b"gats 0 a\r\n", flags=["-C"])
t("cas_unique_sequence", s("a", "1"), s("b", "1"), st("append", "a", "2"), b"incr b 1\r\n",
  b"touch a 0\r\n", b"gets a b\r\n", s("c", "1"), b"gets c b a\r\n")

# ---------------------------------------------------------------- delete
t("delete_semantics", s("a", "1"), b"delete a\r\n", b"delete a\r\n", b"get a\r\n")
t("delete_zero_hold", s("a", "1"), b"delete a 0\r\n", b"get a\r\n")
t("delete_nonzero_hold", s("a", "1"), b"delete a 5\r\n", b"delete a x\r\n", b"get a\r\n")
t("delete_noreply", s("a", "1"), b"delete a noreply\r\n", b"delete a noreply\r\n",
  s("b", "1"), b"delete b 0 noreply\r\n", b"get a b\r\n")
t("delete_token_count", b"delete\r\n", b"delete a b c d e\r\n", b"delete a 0 noreply x\r\n")

# ---------------------------------------------------------------- incr / decr
t("incr_decr_basic", s("n", "10", flags=3), b"incr n 5\r\n", b"decr n 3\r\n", b"gets n\r\n")
t("incr_missing", b"incr zz 1\r\n", b"decr zz 1\r\n")
t("incr_wraps", s("n", "18446744073709551615"), b"incr n 1\r\n", b"get n\r\n",
  s("m", "18446744073709551610"), b"incr m 10\r\n")
t("decr_clamps", s("n", "5"), b"decr n 10\r\n", b"decr n 1\r\n", b"get n\r\n")
# memcached rewrites in place only while nobody else holds a reference to the item (its LRU
# maintainer sometimes does), so only the first in-place step is deterministic enough to diff.
t("decr_in_place_padding", s("n", "100"), b"decr n 1\r\n", b"get n\r\n")
t("incr_after_in_place_padding", s("n", "100"), b"decr n 1\r\n", b"incr n 1\r\n")
t("incr_grows_value", s("n", "99"), b"incr n 1\r\n", b"get n\r\n", s("m", "9"),
  b"incr m 18446744073709551606\r\n", b"get m\r\n")
t("incr_non_numeric_value", s("a", "abc"), b"incr a 1\r\n", s("b", ""), b"incr b 1\r\n",
  s("c", "-1"), b"decr c 1\r\n", s("d", "12ab"), b"incr d 1\r\n",
  s("e", "18446744073709551616"), b"incr e 1\r\n")
t("incr_leading_spaces_value", s("a", "  12"), b"incr a 1\r\n", b"get a\r\n")
t("incr_trailing_space_value", s("a", "12 "), b"incr a 1\r\n", b"get a\r\n")
t("incr_bad_delta", s("n", "1"), b"incr n abc\r\n", b"incr n -1\r\n",
  b"incr n 18446744073709551616\r\n", b"decr n 1x\r\n", b"incr n 18446744073709551615\r\n")
t("incr_noreply", s("n", "1"), b"incr n 5 noreply\r\n", b"decr n 2 noreply\r\n",
  b"incr zz 1 noreply\r\n", b"incr n x noreply\r\n", b"get n\r\n")
t("incr_token_count", b"incr\r\n", b"incr n\r\n", b"decr\r\n", b"decr n\r\n")
t("incr_keeps_ttl_and_flags", s("n", "1", flags=77, exptime=-1), b"incr n 1\r\n",
  s("m", "1", flags=77), b"incr m 1\r\n", b"get m\r\n")
t("incr_zero_delta", s("n", "007"), b"incr n 0\r\n", b"get n\r\n")
t("incr_plus_sign_delta", s("n", "1"), b"incr n +5\r\n", b"get n\r\n")

# ---------------------------------------------------------------- touch
t("touch_semantics", s("a", "1"), b"touch a 100\r\n", b"touch zz 100\r\n", b"get a\r\n")
t("touch_expire", s("a", "1"), b"touch a -1\r\n", b"get a\r\n", b"touch a 0\r\n")
t("touch_past_absolute", s("a", "1"), b"touch a " + PAST_ABS + CRLF, b"get a\r\n")
t("touch_bad_exptime", s("a", "1"), b"touch a abc\r\n", b"touch a 1x\r\n", b"get a\r\n")
t("touch_noreply", s("a", "1"), b"touch a 100 noreply\r\n", b"touch zz 1 noreply\r\n",
  b"touch a x noreply\r\n", b"get a\r\n")
t("touch_token_count", b"touch\r\n", b"touch a\r\n", b"touch a 1 noreply x\r\n")
t("touch_keeps_cas", s("a", "1"), b"gets a\r\n", b"touch a 1000\r\n", b"gets a\r\n")

# ---------------------------------------------------------------- expiry (§2)
t("exptime_negative", s("a", "1", exptime=-1), b"get a\r\n", s("b", "1", exptime=-100000),
  b"get b\r\n")
t("exptime_absolute_past", s("a", "1", exptime=PAST_ABS.decode()), b"get a\r\n")
t("exptime_absolute_future", s("a", "1", exptime=FUTURE_ABS.decode()), b"get a\r\n")
t("exptime_30_days_relative", s("a", "1", exptime=2592000), b"get a\r\n")
t("exptime_relative_elapses", s("a", "1", exptime=1), s("b", "1", exptime=100), 2.2,
  b"get a b\r\n")
t("exptime_zero_never", s("a", "1", exptime=0), b"get a\r\n")

# ---------------------------------------------------------------- flush_all
t("flush_all_basic", s("a", "1"), s("b", "2"), b"flush_all\r\n", b"get a b\r\n",
  s("a", "3"), b"get a\r\n")
t("flush_all_noreply", s("a", "1"), b"flush_all noreply\r\n", b"get a\r\n",
  s("a", "1"), b"flush_all 0 noreply\r\n", b"get a\r\n")
t("flush_all_args", s("a", "1"), b"flush_all 0\r\n", s("a", "1"), b"flush_all -1\r\n",
  b"get a\r\n", b"flush_all abc\r\n", b"flush_all 1x\r\n", b"flush_all 0 2\r\n",
  b"flush_all 1 2 3\r\n")
# Delay 3, not 2: a delayed flush takes effect at "now + delay - 1" on a 1 s clock, so with
# delay 2 one clock tick between `flush_all` and the next `get` would already flush.
t("flush_all_delayed", s("a", "1"), b"flush_all 3\r\n", b"get a\r\n", 4.1, b"get a\r\n")
t("flush_all_delayed_cancelled", s("a", "1"), b"flush_all 3\r\n", b"flush_all 0\r\n",
  s("b", "1"), 4.1, b"get a b\r\n")
t("flush_all_disabled", s("a", "1"), b"flush_all\r\n", b"flush_all 0 noreply\r\n",
  b"get a\r\n", b"stats\r\n", flags=["-F"])
t("flush_all_then_add", s("a", "1"), b"flush_all\r\n", st("add", "a", "2"), b"get a\r\n")

# ---------------------------------------------------------------- misc commands
t("version_cmd", b"version\r\n", b"version extra tokens\r\n", b"version noreply\r\n")
t("verbosity_cmd", b"verbosity 1\r\n", b"verbosity 0\r\n", b"verbosity\r\n",
  b"verbosity noreply\r\n", b"verbosity 1 noreply\r\n", b"verbosity abc\r\n",
  b"verbosity foo bar my\r\n", b"verbosity 0\r\n")
t("verbosity_capped", b"verbosity 5\r\n", b"stats settings\r\n", b"verbosity 0\r\n")
t("quit_cmd", s("a", "1"), b"get a\r\nquit\r\nget a\r\n", mode="eof")
t("quit_extra_tokens", Raw(b"quit extra tokens\r\n"), mode="eof")
t("quit_noreply", Raw(b"quit noreply\r\n"), mode="eof")
t("shutdown_not_enabled", b"shutdown\r\n", b"shutdown graceful\r\n", b"shutdown bogus\r\n",
  b"shutdown noreply\r\n")
t("shutdown_bad_mode_enabled", b"shutdown bogus\r\n", b"shutdown graceful extra\r\n",
  flags=["-A"])
t("shutdown_enabled", s("a", "1"), Raw(b"shutdown\r\n"), mode="eof", flags=["-A"], exits=True)
t("shutdown_graceful_enabled", Raw(b"shutdown graceful\r\n"), mode="eof", flags=["-A"],
  exits=True)
t("cache_memlimit_cmd", b"cache_memlimit 100\r\n", b"stats\r\n", b"cache_memlimit 7\r\n",
  b"cache_memlimit 2000000000\r\n", b"cache_memlimit abc\r\n", b"cache_memlimit\r\n",
  b"cache_memlimit 64 noreply\r\n", b"cache_memlimit 8\r\n", b"stats settings\r\n")

# ---------------------------------------------------------------- stats
# incr/decr hits are left out of the general-stats transcripts: whether memcached rewrites
# the number in place (total_items unchanged) or links a new item (total_items + 1) depends
# on a refcount race with its LRU maintainer.  incr_hits/decr_hits are diffed via stats slabs.
t("stats_after_ops", s("a", "1"), s("b", "2"), b"get a b zz\r\n", b"gets a\r\n",
  st("add", "a", "x"), b"cas a 0 0 1 999\r\nx\r\n", b"cas zz 0 0 1 1\r\nx\r\n",
  b"incr zz 1\r\ndecr zz 1\r\n", b"touch a 0\r\ntouch zz 0\r\n",
  b"gat 0 a zz\r\n", b"delete b\r\ndelete zz\r\n", b"flush_all 0\r\n", b"get a\r\n",
  b"stats\r\n")
t("stats_expired_and_flushed_counters", s("a", "1"), b"touch a -1\r\n", b"get a\r\n",
  s("b", "1"), b"flush_all\r\n", b"get b\r\n", b"stats\r\n")
t("stats_reset", s("a", "1"), b"get a zz\r\n", b"stats reset\r\n", b"stats\r\n",
  b"get a\r\n", b"stats\r\n")
t("stats_reset_extra", b"stats reset x\r\n", b"stats\r\n")
t("stats_bad_subcommand", b"stats bogus\r\n", b"stats noreply\r\n", b"stats items bogus\r\n")
t("stats_settings_default", b"stats settings\r\n")
t("stats_general_flags", s("a", "1"), b"stats\r\n", flags=["-m", "16", "-c", "64", "-t", "2", "-R", "3"])
t("stats_settings_flags", b"stats settings\r\n",
  flags=["-m", "8", "-M", "-C", *I2K, "-F", "-A", "-c", "32", "-t", "4"])
t("stats_settings_more_flags", b"stats settings\r\n",
  flags=["-m", "16", "-f", "1.5", "-n", "64", "-R", "5", "-b", "64", "-B", "ascii", "-X"])
t("stats_settings_extended_opts", b"stats settings\r\n",
  flags=["-o", "hashpower=18,no_lru_crawler,hot_lru_pct=30,warm_lru_pct=30,temporary_ttl=30,"
         "lru_crawler_sleep=50,lru_crawler_tocrawl=5,slab_automove=0,idle_timeout=30,"
         "hash_algorithm=jenkins,maxconns_fast"])
# -o spellings memcached 1.6.18 accepts: values ignored on switches, no-ops, 1.5 defaults
# (no_modern), later switches winning, a deprecated option, values read with atoi()
for _i, _opts in enumerate(["modern=1,inline_ascii_resp,no_inline_ascii_resp", "no_modern",
                            "slab_automove,no_chunked_items", "no_lru_maintainer,lru_maintainer",
                            "lru_crawler_tocrawl=7,watcher_logbuf_size=16,read_buf_mem_limit=2",
                            "temporary_ttl=abc,idle_timeout=-5,hot_max_factor=0.5x",
                            "resp_obj_mem_limit=9,hashpower=13"]):
    t(f"stats_settings_suboptions_{_i}", b"stats settings\r\n", flags=["-o", _opts])
t("stats_settings_extended_opts2", b"stats settings\r\n", b"stats sizes\r\n",
  s("a", "1"), s("b", b"x" * 100), s("c", b"y" * 100), b"stats sizes\r\n",
  flags=["-o", "track_sizes,no_maxconns_fast,no_lru_maintainer"])
# Without the LRU maintainer memcached leaves the segment counters out of `stats`
# (memcached's t/stats.t counts the fields with exactly these options).
t("stats_without_lru_maintainer", s("a", "1"), b"get a\r\n", b"stats\r\n",
  flags=["-I", "1024", "-o", "slab_chunk_max=1024,no_lru_crawler,no_lru_maintainer"])
t("stats_items_after_sets", s("a", "1"), s("b", "x" * 100), s("c", "y" * 1000),
  s("d", "z" * 1000), b"get a b c d\r\n", b"stats items\r\n")
t("stats_items_empty", b"stats items\r\n")
t("stats_slabs_after_sets", s("a", "1"), s("b", "x" * 100), s("c", "y" * 1000),
  b"get a b\r\n", b"delete c\r\n", b"incr a 1\r\n", b"decr a 1\r\n", b"touch a 0\r\n",
  b"stats slabs\r\n")
t("stats_slabs_empty", b"stats slabs\r\n")
# (the successful cachedump listing depends on which sub-LRU the maintainer thread has moved
# each item to, so it is checked structurally in test_stats_cachedump_listing instead)
t("stats_cachedump_errors", s("a", "1"), b"stats cachedump\r\n", b"stats cachedump 1\r\n",
  b"stats cachedump abc 1\r\n", b"stats cachedump 1 abc\r\n", b"stats cachedump 99 1\r\n",
  b"stats cachedump 64 1\r\n", b"stats cachedump 63 1\r\n")
t("stats_cachedump_disabled", s("a", "1"), b"stats cachedump 1 0\r\n", flags=["-X"])
t("stats_sizes", s("a", "1"), b"stats sizes\r\n")


def _class_boundary_steps() -> list[bytes]:
    """Items just below and just above each of the first five class sizes (96, 120, 152,
    192, 240 with -n 48 -f 1.25), with and without client flags. memcached sizes an item
    as its 48-byte header + key + NUL + 4 bytes of flags when they are not 0 + value +
    CRLF + 8 bytes of CAS: every item must land in memcached's class, and bytes,
    mem_requested, stats sizes and me size= must add up the same."""
    steps, keys = [], []
    for chunk in (96, 120, 152, 192, 240):
        for flags in (0, 7):
            for over in (0, 1):
                key = "b%03d" % len(keys)
                steps.append(s(key, b"v" * (chunk - 63 - (4 if flags else 0) + over), flags))
                keys.append(key)
    steps += [b"me %s\r\n" % k.encode() for k in keys]
    return steps + [b"stats slabs\r\n", b"stats items\r\n", b"stats sizes\r\n", b"stats\r\n"]


t("item_sizes_at_class_boundaries", *_class_boundary_steps(), flags=["-o", "track_sizes"])
# -m 2: the 100 KB class gets two pages, then every store evicts. Values this large are
# received straight into their item, as in memcached: 20 kept, 20 evicted. Which items
# go differs (memcachepy evicts per shard), so no get here.
t("evictions_when_full", *[s("big%02d" % i, b"v" * 100_000) for i in range(40)],
  b"stats items\r\n", b"stats\r\n", flags=["-m", "2"])
t("stats_detail", b"stats detail on\r\n", s("p:a", "1"), b"get p:a p:b q:c\r\n",
  b"delete p:a\r\n", b"stats detail dump\r\n", b"stats detail off\r\n", b"stats detail\r\n",
  b"stats detail bogus\r\n")
# memcached keeps prefixes in a 256-bucket MurmurHash3 table, newest first in a bucket,
# and a stored prefix matches any shorter one it starts with in the same bucket: "abbn"
# and "ab" share bucket 95, so the get of ab:1 is counted on "abbn"
t("stats_detail_dump_order", b"stats detail on\r\n",
  *[s(f"{p}:k", "1") for p in ("zeta", "a", "b", "users", "sess", "u1", "u2", "cart",
                                "x" * 40, "item9", "q", "p", "abbn", "k:v", "")],
  b"get ab:1 abbn:1 users:k nope:1\r\n", b"delete cart:k\r\n", b"delete ab:2\r\n",
  b"stats detail dump\r\n", flags=["-D", ":"])

# ---------------------------------------------------------------- more edge cases
t("edge_exptime_overflow_truncated", s("a", "v", exptime=4294967296), b"get a\r\n",
  s("b", "v", exptime=4294967295), b"get b\r\n")
t("edge_bytes_overflow_truncated", b"set a 0 0 4294967297\r\nv\r\n", b"get a\r\n")
t("edge_touch_exptime_overflow", s("a", "v"), b"touch a 4294967296\r\n", b"get a\r\n")
t("edge_incr_long_zero_padded", s("n", "00000000000000000000001"), b"incr n 1\r\n",
  b"get n\r\n")
t("edge_decr_zero", s("n", "0"), b"decr n 1\r\n", b"decr n 0\r\n")
t("edge_append_makes_numeric", s("n", "1"), st("append", "n", "0"), b"incr n 1\r\n")
t("edge_gat_noreply_is_a_key", s("a", "1"), s("noreply", "n"), b"gat 0 a noreply\r\n")
t("edge_noreply_trailing_spaces", b"set a 0 0 1 noreply   \r\nv\r\n", b"get a\r\n")
t("edge_noreply_misspelled", s("n", "1"), b"incr n 1 noreplyx\r\n", b"delete n NOREPLY\r\n",
  b"touch n 0 norep\r\n")
t("edge_double_cr", s("a", "1"), b"get a\r\r\n", b"set b 0 0 1\r\r\nv\r\n", b"get b\r\n")
t("edge_data_with_bare_lf", s("a", b"x\ny\n"), b"get a\r\n")
t("edge_empty_key_positions", b"set  0 0 1\r\nv\r\n", b"get  \r\n")
t("edge_long_get_bad_key_after_24_tokens", s("a", "1"),
  b"get " + b" ".join([b"a"] * 30) + b" " + K251 + b"\r\n", b"get a\r\n")
t("edge_stats_trailing_spaces", b"stats   \r\n", b"stats  settings \r\n")
t("edge_big_response_pipeline", s("v", b"x" * 1000), b"get v\r\n" * 3000)
t("edge_many_multiget_hits", b"".join(s("h%d" % i, b"%d" % i * 10) for i in range(300)),
  b"gets " + b" ".join(b"h%d" % i for i in range(300)) + b"\r\n")
t("edge_cas_noreply_bad_chunk", s("a", "1"), b"gets a\r\n",
  b"cas a 0 0 1 {cas:a} noreply\r\nxyz\r\n", b"get a\r\n")
t("edge_set_after_expired_keeps_new", s("a", "1", exptime=-1), s("a", "2"), b"get a\r\n")
t("edge_prepend_empty_item", s("a", ""), st("prepend", "a", "p"), st("append", "a", "q"),
  b"get a\r\n")
t("edge_incr_on_empty_after_append", s("a", ""), st("append", "a", "5"), b"incr a 5\r\n")
t("edge_verbosity_extra", b"verbosity 1 noreply extra\r\n", b"verbosity 1 2\r\n")

# ---------------------------------------------------------------- -B protocol selection
BIN_GET_A = bytes([0x80, 0x00, 0x00, 0x01] + [0] * 4 + [0, 0, 0, 1] + [0] * 12) + b"a"
t("proto_ascii_only_binary_bytes", Raw(BIN_GET_A), Raw(b"\r\n"), mode="idle", flags=["-B", "ascii"])
t("proto_ascii_only_text_ok", s("a", "1"), b"get a\r\n", flags=["-B", "ascii"])

# ---------------------------------------------------------------- ASCII auth (-Y)
# Until a client authenticates every reply is an error (the sentinel too), so these use Raw
# steps, each waiting for its one reply line (memcached answers unauthenticated commands that
# arrive in one read with the last reply only: auth_not_a_set shows it, and without the wait
# a loaded machine merged two steps on memcached's side once), then read until the daemon
# goes quiet or closes.
t("auth_required_first", Raw(b"get a\r\n", 1), Raw(b"version\r\n", 1), Raw(b"mn\r\n", 1),
  mode="idle", flags=["-Y", AUTH_FILE])
t("auth_success_then_normal", Raw(b"set x 0 0 9\r\nuser pass\r\n", 1), s("k", "v"),
  b"get k x\r\n", b"stats\r\n", flags=["-Y", AUTH_FILE])
t("auth_second_user", Raw(b"set x 0 0 7\r\nfoo bar\r\n", 1), b"get x\r\n",
  flags=["-Y", AUTH_FILE])
t("auth_wrong_password", Raw(b"set x 0 0 9\r\nuser nope\r\n", 1), Raw(b"get a\r\n", 1),
  mode="idle", flags=["-Y", AUTH_FILE])
t("auth_bad_token_format", Raw(b"set x 0 0 8\r\nuserpass\r\n", 1), Raw(b"get a\r\n", 1),
  mode="idle", flags=["-Y", AUTH_FILE])
t("auth_bad_termination", Raw(b"set x 0 0 9\r\nuser passXX\r\n", 1), mode="idle",
  flags=["-Y", AUTH_FILE])
t("auth_not_a_set", Raw(b"add x 0 0 9\r\nuser pass\r\n"), mode="idle", flags=["-Y", AUTH_FILE])

# ---------------------------------------------------------------- admin commands (tier A)
# (lru_crawler metadump and watch are left out: their output is asynchronous)
t("admin_lru_crawler", b"lru_crawler sleep 2000000\r\n", b"lru_crawler sleep 100\r\n",
  b"lru_crawler tocrawl 10\r\n", b"lru_crawler bogus\r\n", b"lru_crawler\r\n",
  b"lru_crawler crawl 99\r\n", b"lru_crawler crawl abc\r\n", b"lru_crawler disable\r\n")
# (no `enable` right after `disable`: memcached sometimes answers
# `ERROR failed to start lru crawler thread` while the old thread is still winding down)
t("admin_slabs", b"slabs automove 0\r\n", b"slabs automove 3\r\n", b"slabs automove abc\r\n",
  b"slabs automove ratio 0.5\r\n", b"slabs reassign 1 1\r\n", b"slabs reassign 1 2\r\n",
  b"slabs reassign abc 1\r\n", b"slabs reassign 99 1\r\n", b"slabs bogus\r\n", b"slabs\r\n",
  b"stats settings\r\n")
t("admin_lru", b"lru tune 10 10 0.1 2\r\n", b"lru tune 50 50 0.1 2\r\n",
  b"lru tune 10 10 0 2\r\n", b"lru mode flat\r\n", b"lru mode segmented\r\n",
  b"lru temp_ttl 10\r\n", b"lru bogus\r\n", b"lru\r\n", b"stats settings\r\n")
t("admin_watch_disabled", b"watch\r\n", b"watch fetchers\r\n", flags=["-W"])
t("admin_release_build_unknowns", b"misbehave\r\n", b"debugtime 1\r\n", b"extstore foo 1\r\n",
  b"refresh_certs\r\n", b"stats extstore\r\n")
t("stats_slabs_chunked_item", s("big", b"x" * 600000), b"stats slabs\r\n", b"stats items\r\n")

# ---------------------------------------------------------------- limits: -I, -M, -c
t("too_large_default", s("big", b"x" * 1048576), b"get big\r\n", s("a", "1"), b"get a\r\n")
t("too_large_default_fits", s("big", b"x" * 1048400), b"gets big\r\n")
t("too_large_replaces_old", s("k", "old"), s("k", b"x" * 2000), b"get k\r\n", b"stats\r\n",
  flags=I1K)
t("too_large_each_cmd", s("k", "old"), st("add", "n", b"x" * 2000),
  st("replace", "k", b"x" * 2000), st("append", "k", b"x" * 2000),
  st("prepend", "k", b"x" * 2000), b"cas k 0 0 2000 1\r\n" + b"x" * 2000 + CRLF,
  b"get k n\r\n", flags=I1K)
t("too_large_noreply", s("k", b"x" * 2000, extra="noreply"), b"get k\r\n", flags=I1K)
t("too_large_small_fits", s("k", b"x" * 500), b"get k\r\n", flags=I1K)
t("too_large_append_grows_past_limit", s("k", b"x" * 600), st("append", "k", b"y" * 600),
  b"get k\r\n", flags=I1K)
t("too_large_swallows_data_block", s("k", b"get k\r\n" * 300), b"get k\r\n",
  flags=I1K)
t("item_size_max_2k", s("k", b"x" * 1900), s("j", b"x" * 2100), b"get k j\r\n",
  flags=I2K)


# Transcripts where memcachepy differs from memcached by design (README, "Differences from
# memcached 1.6.18"): the memcached pair is still checked for determinism, and memcachepy's
# output is checked against what the design says instead.
# (none left: chunked items, the last one, are memcached's since issue 13)
DESIGN_DIFFERENCES: dict = {}


@pytest.mark.timeout(60)
# ids keep the "memcachepy-" prefix so `-k memcachepy` selects everything compared with it
@pytest.mark.parametrize("tr", TRANSCRIPTS, ids=[f"memcachepy-{x.name}" for x in TRANSCRIPTS])
def test_transcript(tr: T, start_many) -> None:
    """Two memcached instances and memcachepy run the transcript at the same time.  The two
    memcacheds must agree (else the transcript or the normaliser is wrong, not memcachepy);
    then memcachepy must agree with them.  Without a built memcachepy only the first check
    runs and the test is reported as skipped."""
    require_memcached()
    have_sut, why_not = memcachepy_status()
    specs = [(KIND_MEMCACHED, tr.flags), (KIND_MEMCACHED, tr.flags)]
    if have_sut:
        specs.append((KIND_MEMCACHEPY, tr.flags))
    ds = start_many(specs)
    with ThreadPoolExecutor(len(ds)) as pool:  # sleeps in transcripts overlap
        futs = [pool.submit(run_transcript, d.addr, tr.steps, tr.mode) for d in ds]
        outs = [normalise(f.result()) for f in futs]
    want = outs[0]
    assert want, "reference produced no bytes: transcript is not testing anything"
    assert outs[1] == want, (f"{tr.name}: memcached disagrees with itself (transcript or "
                             "normaliser is not deterministic):\n" + diff(want, outs[1]))
    if not have_sut:
        pytest.skip(why_not)
    sut = ds[2]
    if tr.name in DESIGN_DIFFERENCES:
        DESIGN_DIFFERENCES[tr.name](outs[2])
    else:
        assert outs[2] == want, f"{tr.name} {tr.flags}:\n" + diff(want, outs[2], "memcached", sut.kind)
    if tr.exits:
        for d in ds:
            d.proc.wait(timeout=5)
    else:
        with Conn(sut.addr) as c:
            if "-Y" in tr.flags:  # the probe connection must log in first
                c.request(b"set x 0 0 9\r\nuser pass\r\n")
            assert c.is_open(wait=1.0), f"{sut.kind} stopped answering after the transcript"


def test_transcript_count() -> None:
    assert len(TRANSCRIPTS) >= 100


@pytest.mark.timeout(30)
def test_stats_cachedump_listing(kind: str, start_daemon) -> None:
    """`stats cachedump <cls> <limit>` lists `ITEM <key> [<bytes> b; <exp> s]` for items of
    that class (in whatever LRU order), honours the limit, and ends with END."""
    d = start_daemon(kind)
    exp = int(FUTURE_ABS)
    with Conn(d.addr) as c:
        c.request(s("a", "1") + s("b", "22") + s("c", "333", exptime=exp))
        listed: dict[bytes, tuple[int, int]] = {}
        # memcached 1.6.18 dumps only the COLD sub-LRU, which items reach when its LRU
        # maintainer thread gets round to moving them: poll for a while.
        deadline = time.monotonic() + 8
        while not listed and time.monotonic() < deadline:
            time.sleep(0.05)
            for cls in range(1, 4):
                out = c.request(b"stats cachedump %d 0\r\n" % cls)
                body = out[:out.rindex(b"VERSION ")]
                assert body.endswith(b"END\r\n"), body
                for m in re.finditer(rb"ITEM (\S+) \[(\d+) b; (\d+) s\]\r\n", body):
                    listed[m.group(1)] = (int(m.group(2)), int(m.group(3)))
                stripped = re.sub(rb"ITEM \S+ \[\d+ b; \d+ s\]\r\n", b"", body)
                assert stripped == b"END\r\n", body
        assert set(listed) <= {b"a", b"b", b"c"}
        assert listed, "cachedump listed nothing for three stored items"
        for key, (nbytes, when) in listed.items():
            assert nbytes == {b"a": 1, b"b": 2, b"c": 3}[key]
            if key == b"c":
                assert abs(when - exp) <= 2
            else:
                assert when == 0
        limited = c.request(b"stats cachedump 1 1\r\n")
        assert limited.count(b"ITEM ") <= 1


def _stats(c: Conn) -> dict[bytes, bytes]:
    out = c.request(b"stats\r\n")
    return dict(re.findall(rb"STAT (\S+) (\S+)\r\n", out))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("no_evict", [True, False], ids=["with-M", "without-M"])
def test_memory_limit_fill(kind: str, start_daemon, no_evict: bool) -> None:
    """-m 8: filling the cache with 100 KB items either evicts (default) or, with -M, answers
    `SERVER_ERROR out of memory storing object` while swallowing the data block and keeping
    what is stored.  The exact item count at which memory runs out depends on the slab
    allocator, so this is checked by invariants rather than byte-diffed."""
    flags = ["-m", "8"] + (["-M"] if no_evict else [])
    d = start_daemon(kind, *flags)
    val = b"x" * 100000
    n = 120
    with Conn(d.addr) as c:
        out = c.request(b"".join(b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(val), val)
                                 for i in range(n)))
        replies = out.split(b"\r\n")[:n]
        assert set(replies) <= {b"STORED", b"SERVER_ERROR out of memory storing object"}, \
            set(replies)
        stored = replies.count(b"STORED")
        oom = n - stored
        after = c.request(b"set small 0 0 1\r\nx\r\nget small\r\n")
        assert after.startswith(b"STORED\r\nVALUE small 0 1\r\nx\r\nEND\r\n"), after
        st_ = _stats(c)
        if no_evict:
            assert 40 <= stored < n and oom > 0
            assert st_[b"store_no_memory"] == b"%d" % oom
            assert st_[b"evictions"] == b"0"
            assert st_[b"curr_items"] == b"%d" % (stored + 1)
            first = c.request(b"get k0\r\n")
            assert first.startswith(b"VALUE k0 0 100000\r\n" + val + b"\r\nEND\r\n")
        else:
            assert stored == n
            assert int(st_[b"evictions"]) > 0
            # every eviction was made by the storing thread itself (memcached's maintainer
            # never evicts ahead), and counted as a direct reclaim
            assert int(st_[b"direct_reclaims"]) >= int(st_[b"evictions"]), st_
            assert st_[b"store_no_memory"] == b"0"
            last = c.request(b"get k%d\r\n" % (n - 1))
            assert last.startswith(b"VALUE k%d 0 100000\r\n" % (n - 1))


@pytest.mark.timeout(30)
def test_too_many_connections(kind: str, start_daemon) -> None:
    """Over -c, the next connection gets `ERROR Too many open connections` and is closed;
    the daemon keeps serving the existing ones."""
    d = start_daemon(kind, "-c", "32", "-t", "1")
    conns: list[Conn] = []
    rejected = b""
    try:
        for _ in range(40):
            c = Conn(d.addr)
            conns.append(c)
            got = c.request(b"")
            if not got.startswith(b"VERSION "):
                rejected = got
                break
        assert rejected.startswith(b"ERROR Too many open connections\r\n"), rejected
        assert conns[-1].closed_by_peer
        assert conns[0].request(b"get a\r\n").startswith(b"END\r\n")
    finally:
        for c in conns:
            c.close()


@pytest.mark.timeout(30)
def test_connection_counters(sut_kind: str, daemon_pair) -> None:
    """curr_connections counts open client conns; total_connections also counts the
    listener (fresh daemon, 2 clients -> 2 and 3); both follow opens and closes."""
    ref, sut = daemon_pair(sut_kind, ())
    seen = []
    for d in (ref, sut):
        a = Conn(d.addr)
        a.request(b"")  # a round trip: the daemon has surely accepted `a` now
        b = Conn(d.addr)
        first = _stats(b)
        a.close()
        c = Conn(d.addr)
        for _ in range(50):  # the daemon notices the close asynchronously
            second = _stats(c)
            if second[b"curr_connections"] == b"2":
                break
            time.sleep(0.05)
        b.close()
        c.close()
        seen.append([(st_[b"curr_connections"], st_[b"total_connections"])
                     for st_ in (first, second)])
    assert seen[0] == [(b"2", b"3"), (b"2", b"4")]
    assert seen[1] == seen[0]


def _conns_summary(out: bytes, own_port: int, listen_port: int) -> list[tuple[str, ...]]:
    """`stats conns` reduced to what must match: per conn its role (this conn, another client,
    the listener), its field names and its state; fds, ports and idle seconds vary."""
    per_fd: dict[bytes, dict[bytes, bytes]] = {}
    for fd, field, value in re.findall(rb"STAT (\d+):(\w+) ([^\r\n]*)\r\n", out):
        per_fd.setdefault(fd, {})[field] = value
    summary = []
    for fields in per_fd.values():
        addr = fields.get(b"addr", b"")
        if addr.endswith(b":%d" % listen_port) and b"listen_addr" not in fields:
            role = "listener"
        elif addr.endswith(b":%d" % own_port):
            role = "self"
        else:
            role = "other-client"
        assert addr.startswith(b"tcp:127.0.0.1:"), addr
        # another idle client's state races with memcached's worker (conn_read, conn_mwrite,
        # conn_waiting were all observed), so only this conn's and the listener's count
        state = fields.get(b"state", b"").decode() if role != "other-client" else "*"
        summary.append((role, ",".join(f.decode() for f in fields), state))
    return sorted(summary)


@pytest.mark.timeout(30)
def test_stats_conns(sut_kind: str, daemon_pair) -> None:
    ref, sut = daemon_pair(sut_kind, ())
    seen = []
    for d in (ref, sut):
        with Conn(d.addr) as other, Conn(d.addr) as me:
            other.request(b"")
            out = me.request(b"stats conns\r\n")
            assert out.startswith(b"STAT ") and b"END\r\n" in out, out
            seen.append(_conns_summary(out, me.sock.getsockname()[1], d.port))
    assert seen[1] == seen[0]


@pytest.mark.timeout(30)
def test_stats_conns_idle_seconds(sut_kind: str, daemon_pair) -> None:
    """A conn whose last command came a whole second ago shows at least 1 idle second (as
    memcached's t/stats-conns.t asks); the asking conn shows 0. memcachepy's cached clock is
    ticked 4 times a second, so a tick late past the second boundary once showed 0 here;
    it now reads the clock when it answers. memcached's answer comes from its own coarse
    clock and races the same way (0 was seen from it in CI, and design-notes record
    t/stats-conns.t failing there), so for memcached only the fields are checked."""
    ref, sut = daemon_pair(sut_kind, ())
    for d in (ref, sut):
        with Conn(d.addr) as other, Conn(d.addr) as me:
            assert other.request(b"version\r\n").startswith(b"VERSION ")
            time.sleep(1.0)
            out = me.request(b"stats conns\r\n")
            idle = {}
            for fd, value in re.findall(rb"STAT (\d+):secs_since_last_cmd (\d+)\r\n", out):
                idle[fd] = int(value)
            other_port = b":%d\r" % other.sock.getsockname()[1]
            own_port = b":%d\r" % me.sock.getsockname()[1]
            fd_of = {port: fd for fd, port in re.findall(rb"STAT (\d+):addr tcp:[\d.]+(:\d+\r)", out)}
            if d.kind == KIND_MEMCACHEPY:
                assert idle[fd_of[own_port]] == 0, (d, out)
                assert idle[fd_of[other_port]] >= 1, (d, out)
            else:   # memcached's coarse clock: 0 and 1 both seen for either conn
                assert idle[fd_of[own_port]] in (0, 1), (d, out)
                assert idle[fd_of[other_port]] in (0, 1, 2), (d, out)
