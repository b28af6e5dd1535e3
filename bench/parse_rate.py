"""The per-row rate of the parse: ``transforms.rows.parse_values`` in this process, no Spark.

Generates N rows of the default traffic mix (fixed seed), or reads the
change feed of a table made by ``bench/throughput.py --dir`` (delta-rs), and
times ``parse_values`` over them: one warm-up, then the best of ``--runs``
runs, printed as rows/s per core (CPU time of this process; wall time too).

    python bench/parse_rate.py --rows 20000
    python bench/parse_rate.py --dir /tmp/bench1m --limit 200000
    python bench/parse_rate.py --rows 20000 --profile          # cProfile top 25
    python bench/parse_rate.py --rows 30000 --save /tmp/parse_ref.json.gz
    python bench/parse_rate.py --rows 30000 --check /tmp/parse_ref.json.gz

``--save`` writes the parse's output (one canonical JSON line per row) and
``--check`` asserts the output equals a saved one, row by row.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import pstats
import time
from pathlib import Path
from typing import Any

import orjson

import gatewatch.transforms.parsers  # noqa: F401  (registers the built-in parsers)
from gatewatch.transforms.rows import parse_values

Columns = tuple[list, list, list, list]
_INPUT = ("request", "response", "status_code", "logging_error_codes")


def generated(rows: int, seed: int) -> Columns:
    """``rows`` rows of the default mix as the four input columns."""
    from gatewatch.traffic import generate as traffic

    out = [g.row for g in traffic.generate(rows, seed=seed)]
    return tuple([r[name] for r in out] for name in _INPUT)  # type: ignore[return-value]


def from_feed(path: str, limit: int | None) -> Columns:
    """The input columns of a change-feed table's rows (delta-rs), at most ``limit`` of them."""
    import pyarrow as pa
    from deltalake import DeltaTable

    feed = pa.table(DeltaTable(path).load_cdf(starting_version=0, columns=[*_INPUT, "_change_type"]).read_all())
    keep = [change == "insert" for change in feed.column("_change_type").to_pylist()]
    columns = tuple([v for v, k in zip(feed.column(name).to_pylist(), keep) if k][:limit] for name in _INPUT)
    return columns  # type: ignore[return-value]


def rows_of(columns: dict[str, list[Any]]) -> list[bytes]:
    """The parse's output as one canonical JSON line per row (sorted keys)."""
    names = sorted(columns)
    n = len(columns[names[0]])
    return [orjson.dumps({k: columns[k][i] for k in names}, option=orjson.OPT_SORT_KEYS) for i in range(n)]


def timed(columns: Columns, runs: int) -> tuple[float, float]:
    """Best CPU seconds and best wall seconds of ``runs`` runs of ``parse_values`` after one warm-up.

    CPU time (``time.process_time``) is the figure per core: on a shared
    machine the wall time also counts the time other processes held the core.
    """
    parse_values(*columns)
    cpu, wall = float("inf"), float("inf")
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        parse_values(*columns)
        cpu = min(cpu, time.process_time() - started_cpu)
        wall = min(wall, time.perf_counter() - started)
    return cpu, wall


def check(columns: Columns, reference: Path) -> None:
    """Assert the parse's output equals the one saved in ``reference``."""
    got = rows_of(parse_values(*columns))
    want = gzip.decompress(reference.read_bytes()).splitlines()
    assert len(got) == len(want), f"{len(got)} rows, reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"row {i} differs:\n got  {g[:600]!r}\n want {w[:600]!r}"
    print(f"output identical to {reference} ({len(got):,} rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000, help="generated rows (default 20,000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", help="a folder made by bench/throughput.py --dir: read its change feed instead")
    ap.add_argument("--limit", type=int, help="with --dir: at most this many rows")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print the cProfile top 25 of one run")
    ap.add_argument("--save", type=Path, help="write the output to this file (gzip, a JSON line per row)")
    ap.add_argument("--check", type=Path, help="assert the output equals the one in this file")
    args = ap.parse_args()

    table = str(Path(args.dir) / "source") if args.dir and (Path(args.dir) / "source").exists() else args.dir
    columns = from_feed(table, args.limit) if table else generated(args.rows, args.seed)
    n = len(columns[0])
    if args.save:
        args.save.write_bytes(gzip.compress(b"\n".join(rows_of(parse_values(*columns)))))
        print(f"saved {n:,} rows to {args.save}")
        return
    if args.check:
        check(columns, args.check)
        return
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(parse_values, *columns)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    cpu, wall = timed(columns, args.runs)
    print(f"{n:,} rows, best of {args.runs}: {cpu:.3f} s CPU, {n / cpu:,.0f} rows/s per core "
          f"(wall {wall:.3f} s, {n / wall:,.0f} rows/s)")


if __name__ == "__main__":
    main()
