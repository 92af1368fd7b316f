"""Benchmark the k sweep: seed-000 style scikit-learn vs seglake's MLlib sweep stage.

Usage: python bench/bench_sweep.py [--rows 40000] [--large 1000000] [--scratch DIR]

On the same synthetic user table (9 heavy-tailed activity features, 4 latent groups), log1p +
standard scaled identically:

- baseline: the seed's loop, scikit-learn ``KMeans(k, init="k-means++", random_state=0)`` for
  k=2..9 with the seed's SSE (mean distance, ``cdist``) and exact ``silhouette_score`` on all rows;
- seglake: the ``sweep`` stage (MLlib KMeans k-means||, wssse/sse pass, ``ClusteringEvaluator`` on
  all rows, exact silhouette on a 10,000-row sample, Delta writes), at ``--rows`` and ``--large``.

Prints a markdown table (seconds and ratios against the baseline run in this process) for
BENCHMARKS.md, and the choice of k each side makes.
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from _common import entities_config, parser, scratch, session
from seglake.core.tables import Tables
from seglake.segmentation.sweep import choose_k, sweep

FEATURES = ["page_view", "like_count", "authors_viewed", "works_viewed", "avg_duration",
            "music_views", "complete_views", "cities_visited", "cities_of_works"]
KS = list(range(2, 10))


def users(rows: int, seed: int = 0) -> pd.DataFrame:
    """Seed-000-like user features: activity levels from 4 latent groups (70/20/8/2%)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(4, size=rows, p=[0.70, 0.20, 0.08, 0.02])
    views = rng.lognormal(np.log([15.0, 60.0, 160.0, 380.0])[group], 0.45)
    share = lambda low, high: rng.uniform(low, high, rows)  # noqa: E731
    frame = pd.DataFrame({
        "page_view": np.round(views),
        "like_count": rng.poisson(views * 0.008),
        "authors_viewed": np.round(views * share(0.9, 1.0)),
        "works_viewed": np.round(views * share(0.98, 1.0)),
        "avg_duration": rng.normal(11.0, 1.5, rows).clip(1),
        "music_views": np.round(views * share(0.7, 0.95)),
        "complete_views": rng.binomial(np.round(views).astype(int), 0.35),
        "cities_visited": 1 + rng.poisson(0.25, rows),
        "cities_of_works": np.round(np.sqrt(views) * share(2.5, 4.0)),
    }).astype("float64")
    frame.insert(0, "entity_id", [f"u{i}" for i in range(rows)])
    return frame


def seed_style(frame: pd.DataFrame) -> tuple[float, int, str]:
    """The seed's km() loop on log1p + standard scaled features; returns seconds and the choice."""
    started = time.monotonic()
    logged = np.log1p(frame[FEATURES].to_numpy())
    points = (logged - logged.mean(axis=0)) / logged.std(axis=0, ddof=1)
    sse, sc = [], []
    for k in KS:
        model = KMeans(n_clusters=k, init="k-means++", random_state=0).fit(points)
        labels = model.predict(points)
        sse.append(float(np.min(cdist(points, model.cluster_centers_, "euclidean"), axis=1).mean()))
        sc.append(float(silhouette_score(points, labels)))
        print(f"#   sklearn k={k}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    k, reason = choose_k(KS, sse, sc)
    return seconds, k, reason


def seglake_sweep(spark, frame: pd.DataFrame, root: Path, label: str) -> tuple[float, int, str, float]:
    """Write ``frame`` as silver/entities and run the sweep stage; returns seconds, k, reason, per-k sum."""
    folder = root / label
    folder.mkdir()
    config = entities_config(folder, "bench", folder / "lakehouse", sweep="{k_min: 2, k_max: 9}")
    spark.createDataFrame(frame).write.format("delta").save(Tables.of(config).entities)
    started = time.monotonic()
    result = sweep(spark, config, "bench")
    seconds = time.monotonic() - started
    print(f"# seglake {label}: {result.line()}", file=sys.stderr, flush=True)
    per_k = sum(m.seconds for m in result.details["metrics"])
    return seconds, result.details["chosen_k"], result.details["reason"], per_k


def main() -> None:
    ap = parser(__doc__, scratch=True)
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--large", type=int, default=1_000_000, help="MLlib-only run (0 to skip)")
    args = ap.parse_args()
    with scratch("sweep", args.scratch) as root, session("bench-sweep", master=None) as spark:
        small = users(args.rows)
        base_s, base_k, base_reason = seed_style(small)
        ours_s, ours_k, ours_reason, ours_per_k = seglake_sweep(spark, small, root, "small")
        rows = [("scikit-learn, seed-000 loop (exact silhouette on all rows)", args.rows, base_s, base_k),
                ("seglake sweep stage (MLlib), whole stage", args.rows, ours_s, ours_k),
                ("seglake sweep stage (MLlib), k loop only", args.rows, ours_per_k, ours_k)]
        if args.large:
            large_s, large_k, _, large_per_k = seglake_sweep(spark, users(args.large, seed=1), root, "large")
            rows += [("seglake sweep stage (MLlib), whole stage", args.large, large_s, large_k),
                     ("seglake sweep stage (MLlib), k loop only", args.large, large_per_k, large_k)]
    print(f"\nk=2..9, 9 features; {platform.node()}, {platform.processor() or platform.machine()}, "
          f"Spark local[*]\n")
    print("| run | rows | seconds | scikit-learn seconds / these | chosen k |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, n, seconds, k in rows:
        ratio = "-" if n != args.rows else "baseline" if seconds == base_s else f"{base_s / seconds:.1f}x"
        print(f"| {name} | {n:,} | {seconds:.1f} | {ratio} | {k} |")
    if args.large:
        # the exact silhouette is quadratic in rows, and it dominates the seed loop
        estimate = base_s * (args.large / args.rows) ** 2
        print(f"| scikit-learn seed loop, extrapolated (quadratic) | {args.large:,} | ~{estimate:,.0f} "
              f"(~{estimate / 3600:.0f} h) | - | - |")
    print(f"\nscikit-learn choice: {base_reason}\nseglake choice:      {ours_reason}")


if __name__ == "__main__":
    main()
