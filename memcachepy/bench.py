# memcachepy.bench: the `memcachepy-bench` console script.
#
# Owns option parsing and reporting for the load generator; every request is made by the
# compiled module memcachepy._loadgen (built from bench/_loadgen.pyx), whose load threads run
# without the GIL. This file never sits on the request path, so plain Python is fine here.
# Latency percentiles, hit ratio and CPU per request are defined in bench/README.md.
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any, Sequence


def _load_module() -> Any:
    try:
        from memcachepy import _loadgen
    except ImportError as exc:  # no silent fallback: a Python client would measure itself
        raise SystemExit(
            "memcachepy-bench: the compiled module memcachepy._loadgen is missing "
            f"({exc}); build it with `pip install -e .` (or `python setup.py build_ext "
            "--inplace`) from the source tree"
        ) from None
    return _loadgen


def _ratio(text: str) -> tuple[int, int]:
    try:
        g, s = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("ratio is GET:SET, e.g. 10:1") from None
    if g < 0 or s < 0 or g + s == 0:
        raise argparse.ArgumentTypeError("ratio needs a positive get or set part")
    return g, s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memcachepy-bench",
        description="Compiled load generator for memcached-protocol servers (classic text "
        "protocol get/set/multiget). Measures requests/s, latency percentiles, hit ratio "
        "and, with --server-pid, the server's CPU time per request.",
    )
    p.add_argument("-s", "--host", default="127.0.0.1", help="server address (default %(default)s)")
    p.add_argument("-p", "--port", type=int, required=True, help="server TCP port")
    p.add_argument("-c", "--connections", type=int, default=50, help="total conns (default %(default)s)")
    p.add_argument("-t", "--threads", type=int, default=1,
                   help="load threads, each with its own epoll loop (default %(default)s)")
    p.add_argument("-d", "--depth", "--pipeline", type=int, default=1,
                   help="requests in flight per conn (default %(default)s)")
    p.add_argument("-k", "--keyspace", type=int, default=10000, help="number of keys (default %(default)s)")
    p.add_argument("--key-prefix", default="key:", help="key prefix (default %(default)s)")
    p.add_argument("--key-pattern", choices=("random", "sequential", "zipf"), default="random",
                   help="how keys are picked (default %(default)s); zipf: key 0 the most "
                   "requested, see --zipf-s")
    p.add_argument("--zipf-s", type=float, default=1.0,
                   help="exponent of --key-pattern zipf (default %(default)s)")
    p.add_argument("--key-counts", type=int, default=0, metavar="N",
                   help="count every key request and report the N most requested keys "
                   "exactly (to check a server's `stats hotkeys`)")
    p.add_argument("--set-on-miss", action="store_true",
                   help="a get that misses is followed by a set of its key (a cache in front "
                   "of a database; needs -g 1)")
    p.add_argument("--scan-every", type=int, default=0, metavar="N",
                   help="of every N requests, the first --scan-length are gets of fresh keys "
                   "(a one-time scan; default 0: none)")
    p.add_argument("--scan-length", type=int, default=0, metavar="L",
                   help="keys per scan (see --scan-every)")
    p.add_argument("-V", "--value-size", type=int, default=32, help="value bytes (default %(default)s)")
    p.add_argument("-r", "--ratio", type=_ratio, default=(10, 1),
                   help="GET:SET mix, a fixed cycle (default 10:1)")
    p.add_argument("-g", "--multiget", type=int, default=1,
                   help="keys per get request (default %(default)s)")
    p.add_argument("-D", "--duration", type=float, default=5.0,
                   help="measured seconds (default %(default)s)")
    p.add_argument("-w", "--warmup", type=float, default=0.0,
                   help="unmeasured seconds before the measured window (default %(default)s)")
    p.add_argument("-n", "--requests", type=int, default=0,
                   help="run exactly this many requests instead of a duration; all are measured")
    p.add_argument("-R", "--rate", type=float, default=0.0,
                   help="fixed total request rate per second (open loop); 0 = as fast as "
                   "the conns and depth allow")
    p.add_argument("--tick-us", type=float, default=100.0,
                   help="pacing tick of the fixed rate, microseconds (default %(default)s)")
    p.add_argument("--eager-replies", action="store_true",
                   help="fixed rate: wake for every reply instead of once per tick (costs the "
                   "load generator a wake-up per reply; latency is exact either way)")
    p.add_argument("--prefill", action="store_true",
                   help="store every key of the key space once before the run")
    p.add_argument("--prefill-only", action="store_true", help="prefill, then stop")
    p.add_argument("--server-pid", type=int, default=0,
                   help="report this process's CPU time (utime+stime) per request")
    p.add_argument("--seed", type=int, default=1, help="key choice seed (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _raise_fd_limit(need: int) -> None:
    # many conns need many descriptors; the soft limit is often 1024 while the hard one allows more
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load described by parsed options; returns the result dict of _loadgen.run."""
    lg = _load_module()
    try:
        host = socket.gethostbyname(args.host)
    except OSError as exc:
        raise SystemExit(f"memcachepy-bench: cannot resolve {args.host!r}: {exc}") from None
    if args.server_pid and not os.path.exists(f"/proc/{args.server_pid}/stat"):
        raise SystemExit(f"memcachepy-bench: no process {args.server_pid}")
    _raise_fd_limit(args.connections + 64)
    g, s = args.ratio
    result = lg.run(
        host=host, port=args.port, connections=args.connections, threads=args.threads,
        depth=args.depth, keyspace=args.keyspace, key_prefix=args.key_prefix,
        value_size=args.value_size, get_ratio=g, set_ratio=s, multiget=args.multiget,
        duration=0.0 if args.prefill_only else args.duration,
        warmup=0.0 if args.prefill_only else args.warmup,
        requests=0 if args.prefill_only else args.requests, rate=args.rate,
        prefill=args.prefill or args.prefill_only, key_pattern=args.key_pattern,
        tick_us=args.tick_us, lazy=not args.eager_replies, seed=args.seed, server_pid=args.server_pid,
        zipf_s=args.zipf_s, count_keys=args.key_counts, set_on_miss=args.set_on_miss,
        scan_every=args.scan_every, scan_length=args.scan_length,
    )
    result["config"] = dict(
        host=host, port=args.port, connections=args.connections, threads=args.threads,
        depth=args.depth, keyspace=args.keyspace, value_size=args.value_size,
        ratio=f"{g}:{s}", multiget=args.multiget, duration=args.duration,
        warmup=args.warmup, requests=args.requests, rate=args.rate, prefill=args.prefill,
        key_pattern=args.key_pattern, zipf_s=args.zipf_s if args.key_pattern == "zipf" else None,
        set_on_miss=args.set_on_miss, scan_every=args.scan_every, scan_length=args.scan_length,
    )
    return result


def _fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def _ms(us: int) -> str:
    return f"{us / 1000:g} ms"


def format_gaps(g: dict[str, Any] | None) -> list[str]:
    """The stall lines of the text report: worst gap, worst wait and the gap histogram
    (buckets from 1 ms up, where stalls live; the shorter ones are summed in one)."""
    if not g or g.get("worst_gap_us") is None:
        return []
    lines = [
        f"worst gap    {_fmt(g['worst_gap_us'] / 1000, ' ms', 2)} with requests outstanding "
        f"and no reply on a conn (ended {g['worst_gap_at_s']:.2f} s into the window); "
        f"worst wait {_fmt(g['worst_wait_us'] / 1000, ' ms', 2)} from a request's due time"
    ]
    hist = g["histogram"]
    parts = [f"< 1 ms {sum(n for edge, n in hist if edge is not None and edge <= 1000):,}"]
    lo = 1000
    for edge, n in hist:
        if edge is not None and edge <= 1000:
            continue
        if n:
            parts.append(f"{_ms(lo)}-{_ms(edge)} {n:,}" if edge else f">= {_ms(lo)} {n:,}")
        lo = edge or lo
    lines.append("gaps         " + ", ".join(parts) + " (one per reply)")
    return lines


def format_report(r: dict[str, Any]) -> str:
    c = r["config"]
    lat = r["latency_us"]
    lines = [
        f"target       {c['host']}:{c['port']}  conns={c['connections']} threads={c['threads']} "
        f"depth={c['depth']} keys={c['keyspace']} value={c['value_size']}B "
        f"get:set={c['ratio']} multiget={c['multiget']}"
        + (f" rate={c['rate']:,.0f}/s" if c["rate"] else ""),
        f"measured     {r['elapsed_s']:.3f} s: {r['requests']:,} requests "
        f"({r['gets']:,} gets for {r['get_keys']:,} keys, {r['sets']:,} sets), "
        f"{r['errors']} errors",
        f"throughput   {r['rps']:,.0f} requests/s, {r['keys_per_s']:,.0f} keys/s",
        f"hit ratio    {_fmt(r['hit_ratio'], '', 4)}",
        f"latency      p50 {_fmt(lat['p50'], ' us')}  p90 {_fmt(lat['p90'], ' us')}  "
        f"p99 {_fmt(lat['p99'], ' us')}  p99.9 {_fmt(lat['p99.9'], ' us')}  "
        f"max {_fmt(lat['max'], ' us')}",
    ]
    if c["rate"]:
        lines.append(f"late sends   {r['late']:,} (sent more than one tick after their slot)")
    lines += format_gaps(r.get("gaps"))
    for name in ("server_cpu", "client_cpu"):
        cpu = r.get(name)
        if cpu:
            who = "server cpu  " if name == "server_cpu" else "loadgen cpu "
            lines.append(
                f"{who} {_fmt(cpu['us_per_request'], ' us', 2)}/request "
                f"(user {_fmt(cpu['user_us_per_request'], '', 2)}, "
                f"sys {_fmt(cpu['sys_us_per_request'], '', 2)}), "
                f"{_fmt(100 * cpu['utilisation'] if cpu['utilisation'] is not None else None, '%', 0)} "
                "of one CPU"
            )
    if r.get("cpus"):
        lines.append("cpus busy    " + ", ".join(
            f"cpu{k} {100 * v['busy']:.0f}%" + (f" (steal {100 * v['steal']:.0f}%)" if v["steal"] else "")
            for k, v in sorted(r["cpus"].items(), key=lambda kv: int(kv[0]))) +
            "  (all processes; see other load)")
    t = r["totals"]
    lines.append(
        f"all phases   prefill sets {t['prefill_sets']:,}, gets {t['gets']:,} "
        f"({t['get_keys']:,} keys), sets {t['sets']:,}, errors {t['errors']}, "
        f"values not as stored {t['bad_values']}"
    )
    if r.get("key_counts"):
        lines.append("top keys     " + ", ".join(f"{k} {n:,}" for k, n in r["key_counts"][:10])
                     + " (exact requests)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests and args.warmup:
        raise SystemExit("memcachepy-bench: --warmup applies to duration runs, not --requests")
    try:
        result = run_from_args(args)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"memcachepy-bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memcachepy-bench: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
