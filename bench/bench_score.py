"""Benchmark entity-row scoring: the saved transform + KMeans + density surrogate on 1M+ rows.

Usage: python bench/bench_score.py [--entities 1000000] [--train 100000] [--scratch DIR]

Run with the project's Python first on PATH (Spark's Python workers start ``python3``).

Trains run ``train`` on ``--train`` synthetic entities (8 heavy-tailed features in 6 groups; sweep
pinned to k=6, segment, density on a 5k sample), writes ``--entities`` new rows of the same
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

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from seglake.core.config import load_config  # noqa: E402
from seglake.segmentation.density import density  # noqa: E402
from seglake.segmentation.score import load_scoring_model, score, score_entities  # noqa: E402
from seglake.segmentation.segment import segment  # noqa: E402
from seglake.core.session import build_spark  # noqa: E402
from seglake.segmentation.sweep import sweep  # noqa: E402
from seglake.core.tables import Tables  # noqa: E402

FEATURES = 8
GROUPS = 6


def synthetic(spark, rows: int, seed: int):
    """Entities in ``GROUPS`` blobs of signed-log1p space, as heavy-tailed raw features."""
    centers = np.random.default_rng(0).uniform(0, 8, size=(GROUPS, FEATURES))
    group = F.least(F.floor(F.rand(seed) * GROUPS), F.lit(GROUPS - 1)).cast("int")
    frame = spark.range(rows).select(F.format_string(f"s{seed}-%09d", "id").alias("entity_id"),
                                     group.alias("g"))
    for j in range(FEATURES):
        center = F.element_at(F.array(*[F.lit(float(v)) for v in centers[:, j]]), F.col("g") + 1)
        frame = frame.withColumn(f"f{j}", F.expm1(center + F.randn(seed + j + 1) * 0.5))
    return frame.drop("g")


def timed_noop(df, repeat: int = 3) -> float:
    """Best of ``repeat`` runs into the no-op sink (the machine is shared: best = least disturbed)."""
    times = []
    for _ in range(repeat):
        started = time.monotonic()
        df.write.format("noop").mode("overwrite").save()
        times.append(time.monotonic() - started)
    return min(times)


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--scratch", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="seglake-bench-score-", dir=args.scratch))
    spark = build_spark("bench-score", "local[2]", {"spark.ui.enabled": "false",
                                                     "spark.ui.showConsoleProgress": "false"})
    rows: list[dict] = []
    try:
        (root / "bench.yaml").write_text(
            f"name: bench\nlakehouse: {root / 'lake'}\n"
            f"entities: {{path: {root / 'batch'}, format: parquet, id: entity_id}}\n"
            "sweep: {k_min: 5, k_max: 6, k: 6, silhouette_sample: 2000}\n"
            "density: {sample_size: 5000, stability_fraction: 0, umap: {n_components: 2}}\n")
        config = load_config(root / "bench.yaml")
        tables = Tables.of(config)
        synthetic(spark, args.train, seed=1).write.format("delta").save(tables.entities)
        synthetic(spark, args.entities, seed=2).repartition(4).write.parquet(str(root / "batch"))
        started = time.monotonic()
        for stage in (sweep, segment, density):
            print(f"# {stage(spark, config, 'train').line()}", file=sys.stderr, flush=True)
        print(f"# training took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

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
    finally:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print("| measurement | rows | seconds | rows/s | × baseline time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "1.00"
        print(f"| {row['what']} | {row['rows']:,} | {row['seconds']:.1f} | "
              f"{row['rows'] / row['seconds']:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
