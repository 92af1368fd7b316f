"""Benchmark seglake.synth.generate: throughput and extrapolated 100M-event time.

Usage: python bench/bench_synth.py [--workers 2] [--full] [--scratch DIR]

Runs 1M parquet, 1M csv and 10M parquet (``--full`` adds a real 100M parquet
run) and prints a markdown table for BENCHMARKS.md. The 100M estimate scales
the 10M parquet time linearly (chunks are independent, entity tables are
small next to the data).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from _common import machine, parser, scratch
from seglake import synth


def _size_mb(paths: list[str]) -> float:
    return sum(os.path.getsize(p) for p in paths) / 2**20


def run(events: int, fmt: str, workers: int, root: Path) -> dict:
    """Generate once into a scratch directory and return the measurements."""
    out = root / f"{fmt}-{events}"
    s = synth.generate(out, events, fmt=fmt, seed=0, corrupt_rate=0.001, workers=workers)
    row = dict(events=events, fmt=fmt, workers=workers, seconds=s.seconds,
               rate=events / s.seconds, mb=_size_mb(s.files))
    shutil.rmtree(out)
    return row


def main() -> None:
    ap = parser(__doc__, scratch=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--full", action="store_true", help="also run 100M parquet for real")
    args = ap.parse_args()
    # a 1M run is a single chunk, so extra workers could not help there
    cases = [(1_000_000, "parquet", 1), (1_000_000, "csv", 1),
             (10_000_000, "parquet", 1), (10_000_000, "parquet", args.workers)]
    if args.full:
        cases.append((100_000_000, "parquet", args.workers))
    rows = []
    with scratch("synth", args.scratch) as root:
        for events, fmt, workers in cases:
            row = run(events, fmt, workers, root)
            rows.append(row)
            print(f"# {events:,} {fmt} workers={workers}: {row['seconds']:.1f} s, "
                  f"{row['rate']:,.0f} events/s, {row['mb']:.0f} MiB", file=sys.stderr, flush=True)
    ten = rows[3]  # 10M parquet with all workers: the configuration used for 100M
    est = ten["seconds"] * 10
    print(f"\nMachine: {machine(memory=False, arch=False)}, corrupt_rate 0.001, chunk_events 1,000,000\n")
    print("| step | events | format | workers | seconds | events/s | output MiB | note |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for r in rows:
        note = f"extrapolated 100M: {est / 60:.1f} min" if r is ten else ""
        if r["events"] == 100_000_000:
            note = "measured"
        print(f"| synth | {r['events']:,} | {r['fmt']} | {r['workers']} | {r['seconds']:.1f} | "
              f"{r['rate']:,.0f} | {r['mb']:.0f} | {note} |")


if __name__ == "__main__":
    main()
