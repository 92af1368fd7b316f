"""Benchmark the density stage's tasks: one task per group (every fit and refit of the group in one
process) against the stage's tasks spread over the cores (a task per embedding, per chunk of
stability refits and per final labelling), in one process, on the same sample.

Usage: python bench/bench_density_tasks.py [--rows 20000] [--groups 1] [--repeat 2]

The sample is ``--rows`` blobs (8 heavy-tailed features, 10 blobs) in ``--groups`` groups, with the
default UMAP / HDBSCAN settings (automatic n_neighbors and min_cluster_size) and
``stability_fraction`` 0.5. Both ways run the same functions
(:func:`seglake.segmentation.density_fit.cluster_group` in one task per group, and the stage's
:func:`~seglake.segmentation.density.embed_sample`, :func:`~seglake.segmentation.density.resample_settings`
and :func:`~seglake.segmentation.density.label_sample`), after a warm-up that compiles numba's kernels
in both Python workers; each is timed ``--repeat`` times (best kept), and the labels and per-cluster
Jaccards of both are compared.
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
from seglake.segmentation.density import choose_settings, embed_sample, label_sample
from seglake.segmentation.density_fit import LABEL_SCHEMA, cluster_group
from seglake.segmentation.stability import grid_settings

FEATURES, BLOBS = 8, 10


def _labels_alone(rows, features, density):
    return cluster_group(rows, features, density, offset_by_group=True)[0]


def one_task_per_group(sample, features, settings):
    """Every fit of a group in one process: ``groupBy(group).applyInPandas(cluster_group)``."""
    body = functools.partial(_labels_alone, features=features, density=settings.model_dump())
    rows = sample.groupBy("group").applyInPandas(body, LABEL_SCHEMA).select(
        "entity_id", "group", "cluster").toPandas()
    return rows.sort_values("entity_id").reset_index(drop=True)


def stage_tasks(sample, features, settings, sizes):
    """The stage: embeddings, chunks of refits and the labelling as tasks of their own."""
    grids = {g: grid_settings(n, settings.umap.n_neighbors, settings.hdbscan.min_cluster_size,
                              settings.grid_neighbors, settings.grid_cluster_shares) for g, n in sizes.items()}
    embedded = embed_sample(sample, features, settings, grids, sizes).cache()
    try:
        sweep, clusters = choose_settings(embedded, settings, grids, sizes, True)
        rows = label_sample(embedded, sample, features, settings, sweep, clusters, sizes, True).select(
            "entity_id", "group", "cluster").toPandas()
    finally:
        embedded.unpersist()
    return rows.sort_values("entity_id").reset_index(drop=True)


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
        timed(spark, "warm-up", lambda: stage_tasks(warm, features, settings,
                                                    {g: 200 for g in sizes}), 1)
        before = timed(spark, "one task per group", lambda: one_task_per_group(sample, features, settings),
                       args.repeat)
        after = timed(spark, "the stage's tasks", lambda: stage_tasks(sample, features, settings, sizes),
                      args.repeat)
    same_labels = before[2]["cluster"].equals(after[2]["cluster"])
    print(f"\nMachine: {machine()}, Spark local[2]; {args.rows:,} rows, {args.groups} group(s), "
          f"{FEATURES} features, stability_fraction {settings.stability_fraction}\n")
    print("| way | seconds (best of %d) | one task ÷ this | Spark stages | tasks | same labels |"
          % args.repeat)
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for label, (seconds, cost, _) in (("one task per group", before), ("the stage's tasks", after)):
        print(f"| {label} | {seconds:.1f} | {before[0] / seconds:.2f}× | {cost.stages} | {cost.tasks} | "
              f"{'yes' if same_labels else 'NO'} |")


if __name__ == "__main__":
    main()
