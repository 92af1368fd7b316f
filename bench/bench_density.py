"""Benchmark the density stage: UMAP + HDBSCAN on a 50k sample, then assigning 1M+ entities.

Usage: python bench/bench_density.py [--entities 1000000] [--sample 50000] [--scratch DIR]

Run with the project's Python first on PATH (Spark's Python workers start ``python3``).

Prints a markdown table for BENCHMARKS.md:

- numba: UMAP + HDBSCAN fit time of each of 4 groups (1,000 rows each) on ``local[2]``: the first
  task in each Python worker compiles numba kernels, later tasks in the same worker do not.
- the density stage end to end on ``--entities`` entities with a ``--sample`` sample and the default
  UMAP / HDBSCAN settings, with its phases (sample + cluster, surrogate, assign + write).
- full-population assignment: the surrogate (iterator pandas UDF) into a no-op sink, against a
  baseline run in the same process: the same read into the same sink without predicting; and the
  seed's way to label new rows (``UMAP.transform`` + ``hdbscan.approximate_predict``) on 2,000 rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

from _common import blob_entities, entities_config, parser, print_measurements, scratch, session, timed_noop
from seglake.core.artifacts import get_bytes
from seglake.segmentation.density import clustering_space, density
from seglake.segmentation.surrogate import assign
from seglake.segmentation.sweep import sweep
from seglake.core.tables import Tables

FEATURES = 8
CLUSTERS = 10


def make_entities(spark, path: str, entities: int, seed: int = 0, blobs: int = CLUSTERS,
                  skewed: bool = True) -> None:
    """Blobs in signed-log1p space (unequal sizes unless not ``skewed``), written as heavy-tailed raw
    features."""
    centers = np.random.default_rng(seed).uniform(-6, 6, size=(blobs, FEATURES))
    frame = blob_entities(spark, entities, centers, 0.7, seed, "u%09d", skewed=skewed,
                          raw=lambda value: F.signum(value) * F.expm1(F.abs(value)))
    frame.repartition(8).write.format("delta").mode("overwrite").save(path)


def config_for(root: Path, name: str, density: str, **sections: str):
    return entities_config(root, name, root, "{path: unused.csv, id: entity_id}", density=density,
                           **sections)


def numba_rows(spark, root: Path) -> list[dict]:
    """Fit seconds per group: JIT once per Python worker, not once per task.

    Four equal, well separated blobs; the sweep pinned at k = 4 finds them, and the density stage
    clusters each of its segments (``group_by: segment``) as one task.
    """
    config = config_for(root, "jit", "{sample_size: 4000, group_by: segment, stability_fraction: 0, "
                                     "umap: {n_neighbors: 15}, hdbscan: {min_cluster_size: 30}}",
                        sweep="{k_min: 3, k_max: 4, k: 4}")
    make_entities(spark, Tables.of(config).entities, 4000, seed=1, blobs=4, skewed=False)
    print(f"# {sweep(spark, config, 'jit').line()}", file=sys.stderr, flush=True)
    result = density(spark, config, "jit")
    fits = sorted(g["fit_seconds"] for g in result.details["groups"])
    return [dict(what=f"UMAP+HDBSCAN fit of a ≈1k-row group, {i + 1} of 4 by time (2 workers: "
                      f"the 2 slowest include numba JIT)", rows=1000, seconds=s) for i, s in enumerate(fits)]


def main() -> None:
    args = parser(__doc__, scratch=True, entities=1_000_000, sample=50_000).parse_args()
    rows: list[dict] = []
    with scratch("density", args.scratch) as root, session("bench-density") as spark:
        rows += numba_rows(spark, root)
        for row in rows:
            print(f"# {row['what']}: {row['seconds']:.1f} s", file=sys.stderr, flush=True)

        config = config_for(root, "bench", f"{{sample_size: {args.sample}}}")
        tables = Tables.of(config)
        make_entities(spark, tables.entities, args.entities)
        started = time.monotonic()
        result = density(spark, config, "bench")
        total = time.monotonic() - started
        group, phases = result.details["groups"][0], result.details["seconds"]
        print(f"# density: {result.line()}", file=sys.stderr, flush=True)
        rows.append(dict(what=f"density stage, {args.entities:,} entities, {args.sample:,} sample "
                              f"({group['clusters']} clusters, noise {group['noise_share']:.1%}, "
                              f"stability ARI {group['stability_ari']:.3f}, "
                              f"fidelity {group['fidelity']:.4f})",
                         rows=args.entities, seconds=total))
        for phase, seconds in phases.items():
            rows.append(dict(what=f"  phase: {phase}", rows=args.sample if phase != "assign_and_write"
                             else args.entities, seconds=seconds))

        folder = tables.models("bench")
        manifest = json.loads(get_bytes(spark, f"{folder}/manifest-density.json"))
        models = {0: (get_bytes(spark, f"{folder}/surrogate.json"),
                      manifest["details"]["models"]["surrogate.json"]["classes"])}
        features = manifest["details"]["features"]
        population = (spark.read.format("delta").load(tables.entities)
                      .select("entity_id", F.lit(0).alias("group"), *features))
        timed_noop(assign(population.limit(50_000), models, features), 1)  # warm the Python workers
        baseline = timed_noop(population)
        predict = timed_noop(assign(population, models, features))
        rows.append(dict(what="baseline: read entities into a no-op sink", rows=args.entities,
                         seconds=baseline))
        rows.append(dict(what="surrogate assignment (pandas UDF, broadcast model) into a no-op sink",
                         rows=args.entities, seconds=predict, ratio=predict / baseline))
        rows.append(seed_way(spark, tables))
        rate, seed_rate = args.entities / predict, 2000 / rows[-1]["seconds"]
        summary = (f"Surrogate assignment: {rate:,.0f} entities/s (target ≥ 500,000), "
                   f"{rate / seed_rate:,.0f}× the seed's UMAP.transform + approximate_predict, "
                   f"{predict / baseline:.1f}× the time of a bare read of the same table.")
    print_measurements(rows)
    print(f"\n{summary}")


def seed_way(spark, tables: Tables) -> dict:
    """Label 2,000 new rows with UMAP.transform + approximate_predict, fitted on 5,000 rows."""
    import hdbscan
    import umap

    rows = (spark.read.format("delta").load(tables.entities).limit(7000).toPandas()
            .drop(columns="entity_id").to_numpy())
    space = clustering_space(rows)
    reducer = umap.UMAP(n_neighbors=30, n_components=5, min_dist=0.0, random_state=0).fit(space[:5000])
    clusterer = hdbscan.HDBSCAN(min_cluster_size=50, prediction_data=True).fit(reducer.embedding_)
    hdbscan.approximate_predict(clusterer, reducer.transform(space[5000:5100]))  # compile first
    started = time.monotonic()
    hdbscan.approximate_predict(clusterer, reducer.transform(space[5000:]))
    return dict(what="seed's way: UMAP.transform + hdbscan.approximate_predict (driver)",
                rows=2000, seconds=time.monotonic() - started)


if __name__ == "__main__":
    main()
