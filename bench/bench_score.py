"""Benchmark entity-row scoring: the saved transform + KMeans + density surrogate on 1M+ rows.

Usage: python bench/bench_score.py [--entities 1000000] [--train 100000] [--scratch DIR]

Run with the project's Python first on PATH (Spark's Python workers start ``python3``).

Trains run ``train`` on ``--train`` synthetic entities (8 heavy-tailed features in 6 groups; sweep
pinned to k=6, density on a 5k sample, segment), writes ``--entities`` new rows of the same
distribution as Parquet, then measures in one process:

- baseline: scikit-learn doing the same work on the same rows already in pandas memory
  (signed log1p, median imputation, standard scaling, ``KMeans.predict``, distance to the center),
  fitted on the same training rows;
- :func:`seglake.segmentation.score.score_entities` (Parquet → transform → KMeans → surrogate pandas UDF) into
  Spark's no-op sink, best of 3: the scoring itself;
- the whole ``score`` stage: read and type the Parquet, score, write ``gold/segments``,
  ``gold/drift`` and the quarantine, reconcile.

Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from pyspark.sql import functions as F

from _common import blob_entities, entities_config, parser, print_measurements, scratch, session, timed_noop
from seglake.core.tables import Tables
from seglake.segmentation.density import density
from seglake.segmentation.score import load_scoring_model, score, score_entities
from seglake.segmentation.segment import segment
from seglake.segmentation.sweep import sweep

FEATURES = 8
GROUPS = 6


def synthetic(spark, rows: int, seed: int):
    """Entities in ``GROUPS`` blobs of signed-log1p space, as heavy-tailed raw features."""
    centers = np.random.default_rng(0).uniform(0, 8, size=(GROUPS, FEATURES))
    return blob_entities(spark, rows, centers, 0.5, seed, f"s{seed}-%09d", raw=F.expm1)


def trained_run(spark, root, train: int, batch: int, partitions: int, stages):
    """The benchmark's model run ``train``: ``train`` synthetic entities in ``silver/entities``,
    swept (k pinned to 6), clustered on a 5k sample and segmented by ``stages(spark, config)``;
    and a batch of ``batch`` new entities in Parquet at ``<root>/batch``. Returns the config."""
    config = entities_config(
        root, "bench", root / "lake", f"{{path: {root / 'batch'}, format: parquet, id: entity_id}}",
        sweep="{k_min: 5, k_max: 6, k: 6, silhouette_sample: 2000}",
        density="{sample_size: 5000, stability_fraction: 0, umap: {n_components: 2, n_neighbors: 30}, "
                "hdbscan: {min_cluster_size: 50}}")
    synthetic(spark, train, seed=1).write.format("delta").save(Tables.of(config).entities)
    synthetic(spark, batch, seed=2).repartition(partitions).write.parquet(str(root / "batch"))
    started = time.monotonic()
    stages(spark, config)
    print(f"# training took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return config


def _stage_by_stage(spark, config) -> None:
    for stage in (sweep, density, segment):  # the pipeline's order
        print(f"# {stage(spark, config, 'train').line()}", file=sys.stderr, flush=True)


def sklearn_baseline(train, batch) -> float:
    """Seconds for scikit-learn to transform and label ``batch`` (pandas) with a model fitted on ``train``."""
    from sklearn.cluster import KMeans
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    columns = [f"f{j}" for j in range(FEATURES)]
    prepare = make_pipeline(FunctionTransformer(lambda x: np.sign(x) * np.log1p(np.abs(x))),
                            SimpleImputer(strategy="median"), StandardScaler())
    points = prepare.fit_transform(train[columns].to_numpy())
    kmeans = KMeans(n_clusters=GROUPS, n_init=1, random_state=0).fit(points)
    started = time.monotonic()
    x = prepare.transform(batch[columns].to_numpy())
    labels = kmeans.predict(x)
    np.linalg.norm(x - kmeans.cluster_centers_[labels], axis=1)
    return time.monotonic() - started


def main() -> None:
    args = parser(__doc__, scratch=True, entities=1_000_000, train=100_000).parse_args()
    rows: list[dict] = []
    with scratch("score", args.scratch) as root, session("bench-score") as spark:
        config = trained_run(spark, root, args.train, args.entities, 4, _stage_by_stage)
        tables = Tables.of(config)

        train = spark.read.format("delta").load(tables.entities).toPandas()
        batch = spark.read.parquet(str(root / "batch")).toPandas()  # the baseline's input, in memory
        baseline = min(sklearn_baseline(train, batch) for _ in range(3))
        del train, batch
        rows.append(dict(what="baseline: scikit-learn log1p + impute + scale + KMeans.predict + "
                              "distance, rows already in pandas (best of 3)",
                         rows=args.entities, seconds=baseline))

        model = load_scoring_model(spark, tables, "train")
        entities = spark.read.parquet(str(root / "batch"))
        timed_noop(score_entities(entities.limit(20_000), model, "warm"), 1)  # start Python workers
        core = timed_noop(score_entities(entities, model, "bench"))
        rows.append(dict(what="seglake `score_entities`: Parquet → transform → KMeans → surrogate, "
                              "no-op sink (best of 3)", rows=args.entities, seconds=core,
                         ratio=core / baseline))
        started = time.monotonic()
        result = score(spark, config, "train", str(root / "batch"), "bench")
        stage = time.monotonic() - started
        print(f"# {result.line()}", file=sys.stderr, flush=True)
        rows.append(dict(what="seglake `score` stage: read + type + score + Delta writes + drift + "
                              "reconcile", rows=args.entities, seconds=stage, ratio=stage / baseline))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print_measurements(rows, no_ratio="1.00")


if __name__ == "__main__":
    main()
