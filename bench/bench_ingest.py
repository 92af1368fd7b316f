"""Benchmark the ingest stage's scans of CSV files: the whole stage, beside its counting pass alone.

Usage: python bench/bench_ingest.py [--events 1000000] [--repeat 2] [--scratch DIR]

Synthetic Douyin events (``seglake synth --format csv``, 1% corrupt rows) are ingested with
``conf/tiktok_users.yaml`` (``dedupe: true``) into a fresh lakehouse, best of ``--repeat``. The
stage counts each file's rows in a pass of its own before classifying them (the reconciliation's
independent input count); that pass (``read_raw(...).groupBy("_ingest_file").count()``) is timed
alone on the same files in the same process: what a one-scan ingest could save at most. Wall time and the Spark tasks' CPU time
(on a shared machine CPU time depends far less on the neighbours) are both printed, with the
stage's Spark jobs, stages and Delta commits. Prints a markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import subprocess
import sys
from datetime import date

from _common import ROOT, best_of, machine, parser, scratch, session, spark_cpu_seconds
from seglake.core.config import load_config
from seglake.core.costs import counting
from seglake.segmentation.ingest import ingest
from seglake.segmentation.raw_files import list_files, read_raw


def main() -> None:
    ap = parser(__doc__, scratch=True, events=1_000_000, repeat=2)
    args = ap.parse_args()
    with scratch("ingest", args.scratch) as root:
        subprocess.run([str(ROOT / ".venv" / "bin" / "seglake"), "synth", "--events", str(args.events),
                        "--out", str(root / "data"), "--format", "csv", "--corrupt-rate", "0.01",
                        "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
        with session("bench-ingest", ui=True) as spark:
            last: dict = {}  # the latest stage run's cost and line

            def stage() -> None:  # each run on a fresh lakehouse, so every file is new
                lakehouse = root / f"lake{len(last.get('runs', []))}"
                config = load_config(ROOT / "conf" / "tiktok_users.yaml", overrides=[
                    f"events.path={root / 'data' / 'events'}", "events.format=csv", f"lakehouse={lakehouse}"])
                with counting(spark, "bench-ingest") as cost:
                    result = ingest(spark, config, "bench")
                last.update(cost=cost, line=result.message, runs=[*last.get("runs", []), lakehouse])

            source = load_config(ROOT / "conf" / "tiktok_users.yaml", overrides=[
                f"events.path={root / 'data' / 'events'}", "events.format=csv", f"lakehouse={root / 'unused'}"]).events
            paths = [f.path for f in list_files(spark, source.path)]
            count_pass = lambda: read_raw(spark, paths, source).groupBy("_ingest_file").count().collect()
            cpu = lambda: spark_cpu_seconds(spark)
            now_wall, now_cpu = best_of(args.repeat, stage, cpu)
            pass_wall, pass_cpu = best_of(args.repeat, count_pass, cpu)
    day = date.today().isoformat()
    print(f"\n{machine()}; {args.events:,} events in {len(paths)} CSV files; best of {args.repeat}.\n"
          f"Stage line: {last['line']}; cost: {last['cost'].text()}.\n")
    print("| date | measurement | wall s | task CPU s | × the stage (wall) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, wall, cpu_s in [("the stage (its counting pass included)", now_wall, now_cpu),
                               ("its counting pass alone", pass_wall, pass_cpu)]:
        print(f"| {day} | {label} | {wall:.1f} | {cpu_s:.1f} | {wall / now_wall:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
