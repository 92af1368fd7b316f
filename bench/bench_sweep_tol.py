"""MLlib KMeans' convergence tolerance: Lloyd iterations, Spark stages and assignments per ``tol``.

Usage: python bench/bench_sweep_tol.py --lakehouse /tmp/bench/lakehouse-1000000 [--tols 1e-4,1e-3,3e-3,1e-2]

Reads ``silver/entities`` of a users lakehouse (e.g. one that ``bench/bench_pipeline.py`` or
``seglake run --stages ingest,features`` left behind; the 1M benchmark's has 16,495 users), keeps
and transforms the rows as the sweep does, and fits k = 2..9 one after another with ``sweep.max_iter``
(30) at each ``tol``: the iterations MLlib ran (``summary.numIter``), the Spark stages of the fits,
their cost, and the adjusted Rand index of each k's assignments against the first ``tol``. This is
how BENCHMARKS.md's "Where the sweep's stages go" table was measured; seglake keeps MLlib's default.
"""

from __future__ import annotations

import time

import numpy as np
from pyspark.ml.clustering import KMeans
from sklearn.metrics import adjusted_rand_score

from _common import ROOT, parser, session
from seglake.core.config import load_config
from seglake.core.costs import counting
from seglake.core.tables import Tables
from seglake.segmentation.prepare import (FEATURES, feature_columns, filter_condition, filter_counts,
                                          fit_transform_pipeline, vectors)
from seglake.segmentation.sweep import PREDICTION, stable_layout


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--lakehouse", required=True)
    ap.add_argument("--tols", default="1e-4,1e-3,3e-3,1e-2")
    args = ap.parse_args()
    tols = [float(t) for t in args.tols.split(",")]
    config = load_config(str(ROOT / "conf" / "tiktok_users.yaml"),
                         [f"lakehouse={args.lakehouse}", "events.path=/unused"])
    settings = config.sweep
    with session("seglake-bench-sweep-tol") as spark:
        entities = spark.read.format("delta").load(Tables.of(config).entities)
        features, categorical = feature_columns(entities)
        _, kept_rows = filter_counts(entities, config.filter)
        kept = stable_layout(entities.where(filter_condition(entities, config.filter)), kept_rows)
        transform = fit_transform_pipeline(kept, features, categorical, config.transform)
        data = vectors(transform, kept).persist()
        data.count()
        print(f"{kept_rows:,} kept users, k = {settings.k_min}..{settings.k_max}, max_iter {settings.max_iter}")
        print("| tol | Lloyd iterations | Spark stages of the fits | seconds | worst ARI against the first tol |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        first: dict[int, np.ndarray] = {}
        for tol in tols:
            iterations = stages = 0
            worst = 1.0
            started = time.perf_counter()
            for k in range(settings.k_min, settings.k_max + 1):
                with counting(spark, f"k{k}") as cost:
                    # as seglake.segmentation.sweep.fit_clustering fits, with this tol
                    model = KMeans(k=k, seed=settings.seed, maxIter=settings.max_iter, tol=tol,
                                   initMode="k-means||", featuresCol=FEATURES).fit(data)
                labels = np.array([r[0] for r in model.transform(data).select(PREDICTION).collect()])
                first.setdefault(k, labels)
                worst = min(worst, adjusted_rand_score(first[k], labels))
                iterations += model.summary.numIter
                stages += cost.stages
            print(f"| {tol:g} | {iterations} | {stages} | {time.perf_counter() - started:.1f} | {worst:.4f} |",
                  flush=True)
        data.unpersist()


if __name__ == "__main__":
    main()
