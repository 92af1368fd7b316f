"""Benchmark the density stage's tasks: one task per group (main fit and stability refit in one
process, as the stage ran before) against a task per (group, fit) spread over the cores, in one
process, on the same sample.

Usage: python bench/bench_density_tasks.py [--rows 20000] [--groups 1] [--repeat 2]

The sample is ``--rows`` blobs (8 heavy-tailed features, 10 blobs) in ``--groups`` groups, with the
default UMAP / HDBSCAN settings and ``stability_fraction`` 0.5. Both ways run the same functions
(:func:`seglake.segmentation.density.cluster_group` and :func:`~seglake.segmentation.density.cluster_sample`),
after a warm-up that compiles numba's kernels in both Python workers; each is timed ``--repeat``
times (best kept), and the labels and stability ARI of both are compared.
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np
from pyspark.sql import functions as F

from _common import blob_entities, machine, parser, session
from seglake.core.config import DensityConfig
from seglake.core.costs import counting
from seglake.segmentation.density import (
    CLUSTERS_SCHEMA, MAIN, cluster_group, cluster_sample, stability_scores)

FEATURES, BLOBS = 8, 10


def one_task_per_group(sample, features, settings):
    """The stage before: ``groupBy(group).applyInPandas(cluster_group)``, refit in the same task."""
    body = functools.partial(cluster_group, features=features, umap=settings.umap.model_dump(),
                             hdbscan=settings.hdbscan.model_dump(), seed=settings.seed,
                             stability_fraction=settings.stability_fraction, offset_by_group=True)
    schema = CLUSTERS_SCHEMA + "".join(f", `{f}` double" for f in features)
    rows = sample.groupBy("group").applyInPandas(body, schema).select(
        "entity_id", "group", "cluster", "stability_ari").toPandas()
    return (rows.sort_values("entity_id").reset_index(drop=True),
            {int(g): float(r["stability_ari"].iloc[0]) for g, r in rows.groupby("group")})


def task_per_fit(sample, features, settings, sizes):
    """The stage now: :func:`cluster_sample`, main fit and refit as tasks of their own."""
    clustered = cluster_sample(sample, features, settings, sizes).cache()
    try:
        rows = clustered.where(F.col("task") == MAIN).select("entity_id", "group", "cluster").toPandas()
        scores = {g: score for g, (score, _) in stability_scores(clustered).items()}
    finally:
        clustered.unpersist()
    return rows.sort_values("entity_id").reset_index(drop=True), scores


def timed(spark, label, run, repeat):
    best, out, cost = float("inf"), None, None
    for _ in range(repeat):
        started = time.monotonic()
        with counting(spark, label) as spent:
            out = run()
        seconds = time.monotonic() - started
        print(f"# {label}: {seconds:.1f} s, {spent.text()}", file=sys.stderr, flush=True)
        if seconds < best:
            best, cost = seconds, spent
    return best, cost, out


def main() -> None:
    args = parser(__doc__, rows=20_000, groups=1, repeat=2).parse_args()
    settings = DensityConfig(sample_size=args.rows, group_by="segment" if args.groups > 1 else "none")
    centers = np.random.default_rng(0).uniform(-6, 6, size=(BLOBS, FEATURES))
    with session("bench-density-tasks") as spark:
        frame = blob_entities(spark, args.rows, centers, 0.7, 0, "u%09d",
                              raw=lambda value: F.signum(value) * F.expm1(F.abs(value)))
        features = [c for c in frame.columns if c != "entity_id"]
        sample = frame.withColumn("group", (F.abs(F.hash("entity_id")) % args.groups).cast("int")).cache()
        sizes = {int(r.group): int(r["count"]) for r in sample.groupBy("group").count().collect()}
        warm = sample.where(F.col("entity_id") < "u000000400")  # numba JIT in both workers
        timed(spark, "warm-up", lambda: task_per_fit(warm, features, settings,
                                                     {g: 200 for g in sizes}), 1)
        before = timed(spark, "one task per group", lambda: one_task_per_group(sample, features, settings),
                       args.repeat)
        after = timed(spark, "a task per fit", lambda: task_per_fit(sample, features, settings, sizes),
                      args.repeat)
    same_labels = before[2][0]["cluster"].equals(after[2][0]["cluster"])
    same_ari = before[2][1] == after[2][1]
    print(f"\nMachine: {machine()}, Spark local[2]; {args.rows:,} rows, {args.groups} group(s), "
          f"{FEATURES} features, stability_fraction {settings.stability_fraction}\n")
    print("| way | seconds (best of %d) | before ÷ this | Spark stages | tasks | same labels and ARI |"
          % args.repeat)
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, (seconds, cost, _) in (("one task per group (before)", before),
                                       ("a task per fit (now)", after)):
        print(f"| {label} | {seconds:.1f} | {before[0] / seconds:.2f}× | {cost.stages} | {cost.tasks} | "
              f"{'yes' if same_labels and same_ari else 'NO'} |")
    print(f"\nstability ARI per group: before {before[2][1]}, now {after[2][1]}")


if __name__ == "__main__":
    main()
