"""Benchmark the sweep's concurrent k fits against the serial loop, in one process, on two tables.

Usage: python bench/bench_sweep_threads.py [--users 5000] [--threads 4] [--no-movielens]

- a users-like table (9 heavy-tailed features, 4 latent groups, as bench_sweep.py) of ``--users``
  rows, k = 2..9 (the size of the users demo: 4,931 users);
- the MovieLens entity table the ``ratings`` stage builds from ../shared/data/ml-100k (943 users),
  k = 2..12 as in conf/movielens.yaml (skipped when the data is absent).

Each table is swept twice in the same SparkSession: ``sweep.concurrent_fits: 1`` (the serial loop
the sweep ran before) and ``--threads``, after a warm-up sweep so that neither pays the JVM's first
compilations. It prints seconds, the Spark jobs/stages and Delta commits each sweep cost, and checks
that both give the same curves and the same chosen k.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import ROOT, entities_config, machine, parser, scratch, session
from bench_sweep import users
from seglake.core.config import load_config
from seglake.core.costs import counting
from seglake.core.pipeline import run_stages
from seglake.core.tables import Tables
from seglake.segmentation.sweep import sweep

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-100k"


def timed_sweep(spark, config, run_id: str) -> dict:
    started = time.monotonic()
    with counting(spark, "sweep") as cost:
        result = sweep(spark, config, run_id)
    seconds = time.monotonic() - started
    curves = [(m.k, m.wssse, m.sse, m.silhouette, m.silhouette_exact, tuple(m.cluster_sizes))
              for m in result.details["metrics"]]
    print(f"# {config.name} {run_id}: {seconds:.1f} s, {cost.text()}", file=sys.stderr, flush=True)
    return {"seconds": seconds, "cost": cost, "curves": curves, "k": result.details["chosen_k"]}


def compare(spark, config, threads: int) -> list[dict]:
    """Warm-up, then serial and concurrent sweeps of the same table; rows for the table."""
    timed_sweep(spark, config.model_copy(update={"sweep": config.sweep.model_copy(
        update={"k_max": config.sweep.k_min + 1, "concurrent_fits": 1})}), "warmup")
    runs = {}
    for fits in (1, threads):
        settings = config.sweep.model_copy(update={"concurrent_fits": fits})
        runs[fits] = timed_sweep(spark, config.model_copy(update={"sweep": settings}), f"fits{fits}")
    same = runs[1]["curves"] == runs[threads]["curves"] and runs[1]["k"] == runs[threads]["k"]
    return [{"table": config.name, "fits": fits, "same": same, **run} for fits, run in runs.items()]


def main() -> None:
    ap = parser(__doc__, scratch=True, users=5000, threads=4)
    ap.add_argument("--no-movielens", action="store_true")
    args = ap.parse_args()
    rows = []
    with scratch("sweep-threads", args.scratch) as root, session("bench-sweep-threads") as spark:
        folder = root / "users"
        folder.mkdir()
        config = entities_config(folder, "users", folder / "lakehouse", sweep="{k_min: 2, k_max: 9}")
        spark.createDataFrame(users(args.users)).write.format("delta").save(Tables.of(config).entities)
        rows += compare(spark, config, args.threads)
        if not args.no_movielens and (MOVIELENS / "u.data").exists():
            config = load_config(ROOT / "conf" / "movielens.yaml", [f"lakehouse={root / 'movielens'}"])
            run_stages(spark, config, ["ratings"], "ratings", echo=lambda line: None)
            rows += compare(spark, config, args.threads)
    print(f"\nMachine: {machine()}, Spark local[2]\n")
    print("| table | k | concurrent fits | seconds | serial ÷ this | Spark jobs | Spark stages "
          "| Delta commits | same curves and k as serial |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        serial = next(r for r in rows if r["table"] == row["table"] and r["fits"] == 1)
        ks = f"{row['curves'][0][0]}..{row['curves'][-1][0]}"
        print(f"| {row['table']} | {ks} | {row['fits']} | {row['seconds']:.1f} | "
              f"{serial['seconds'] / row['seconds']:.2f}× | {row['cost'].jobs} | {row['cost'].stages} | "
              f"{row['cost'].commits} | {'yes' if row['same'] else 'NO'} |")


if __name__ == "__main__":
    main()
