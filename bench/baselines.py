"""Single-node baselines for ``bench_pipeline.py``: DuckDB + scikit-learn, and the seed's own way.

* :func:`duckdb_sklearn`: the config's features as one DuckDB ``GROUP BY`` over the synthetic
  Parquet, the config's activity filter, log1p + standard scaling, then scikit-learn ``KMeans`` for
  every k of the sweep with the silhouette on a seeded sample of ``sweep.silhouette_sample`` rows
  (the same sample size seglake uses). What a careful single-machine user would write today.
* :func:`seed_approach`: seed 000 as written: pandas ``groupby`` features, the filter, ``KMeans``
  (k-means++, ``random_state=0``) on the raw features, the seed's SSE (mean Euclidean distance to
  the nearest centre, via ``cdist``) and the *exact* ``silhouette_score`` on every kept row, which
  is quadratic in users. Above ``max_users`` kept users the k loop is skipped and only the
  features are timed; the harness extrapolates the loop from a size where it ran.

Each function returns a dict of phase seconds and counts; the harness runs each in its own process
so that its peak memory is its own.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from bench_features import duckdb_sql
from seglake.core.config import SeglakeConfig

PANDAS_AGGS = {"count": "size", "sum": "sum", "mean": "mean", "min": "min", "max": "max",
               "count_distinct": "nunique"}


def _filtered(features: pd.DataFrame, config: SeglakeConfig) -> pd.DataFrame:
    """The config's activity filter (inclusive bounds, nulls dropped), as prepare.apply_filter."""
    keep = pd.Series(True, index=features.index)
    for name, bound in config.filter.min.items():
        keep &= features[name] >= bound
    for name, bound in config.filter.max.items():
        keep &= features[name] <= bound
    return features[keep]


def duckdb_sklearn(parquet_glob: str, config: SeglakeConfig) -> dict:
    """DuckDB features, then a scikit-learn KMeans sweep with sampled silhouettes."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    features = con.sql(duckdb_sql(config.features, parquet_glob)).df().set_index(config.features.entity)
    con.close()
    features_seconds = time.perf_counter() - started

    started = time.perf_counter()
    kept = _filtered(features.astype("float64"), config)
    points = StandardScaler().fit_transform(np.log1p(kept.clip(lower=0).to_numpy()))
    rng = np.random.default_rng(config.sweep.seed)
    sample = rng.choice(len(points), size=min(config.sweep.silhouette_sample, len(points)),
                        replace=False)
    silhouettes = {}
    for k in range(config.sweep.k_min, config.sweep.k_max + 1):
        model = KMeans(n_clusters=k, init="k-means++", random_state=config.sweep.seed,
                       max_iter=config.sweep.max_iter, n_init=1).fit(points)
        silhouettes[k] = float(silhouette_score(points[sample], model.labels_[sample]))
    return {"features_seconds": features_seconds, "sweep_seconds": time.perf_counter() - started,
            "entities": len(features), "kept": len(kept), "silhouettes": silhouettes}


def seed_approach(parquet_files: list[str], config: SeglakeConfig, max_users: int) -> dict:
    """Seed 000: pandas features, then KMeans k-loop with exact silhouettes (skipped above ``max_users``)."""
    definitions = config.features.definitions
    columns = sorted({config.features.entity} | {d.column for d in definitions.values() if d.column})
    started = time.perf_counter()
    events = pd.concat([pd.read_parquet(f, columns=columns) for f in parquet_files], ignore_index=True)
    grouped = events.groupby(config.features.entity)
    features = grouped.agg(**{name: (spec.column or config.features.entity, PANDAS_AGGS[spec.agg])
                              for name, spec in definitions.items()})
    del events, grouped
    features_seconds = time.perf_counter() - started
    kept = _filtered(features, config)
    result = {"features_seconds": features_seconds, "entities": len(features), "kept": len(kept),
              "sweep_seconds": None}
    if len(kept) > max_users:
        return result
    started = time.perf_counter()
    points = kept.to_numpy(dtype="float64")
    sse, silhouettes = {}, {}
    for k in range(config.sweep.k_min, config.sweep.k_max + 1):
        model = KMeans(n_clusters=k, init="k-means++", random_state=0).fit(points)
        labels = model.predict(points)
        sse[k] = float(np.min(cdist(points, model.cluster_centers_, "euclidean"), axis=1).mean())
        silhouettes[k] = float(silhouette_score(points, labels))
    result.update(sweep_seconds=time.perf_counter() - started, sse=sse, silhouettes=silhouettes)
    return result
