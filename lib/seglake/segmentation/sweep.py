"""The k sweep: cluster the prepared entities for every k in a range, measure, and choose k.

Seed 000 ran scikit-learn KMeans for k=2..9 and judged an SSE elbow together with the silhouette
score. Here the same curves are computed with MLlib on every kept entity (past ``sweep.fit_sample``,
250,000 by default, on a seeded sample of that many: the curves' shape is what picks k, and the
chosen k is then fitted on every kept entity), and the choice of k is automatic and explained in
one line (:func:`choose_k`), so a person can read it beside both curves and overrule it with ``sweep.k``.

Per k, in ``gold/sweep`` (partitioned by ``run_id``):

- ``wssse``: sum of squared Euclidean distances to the nearest center (MLlib's KMeans cost),
  computed from the final centers for every algorithm so that all three compare like with like;
- ``sse``: the seed's "SSE", the *mean Euclidean* distance to the nearest center;
- ``silhouette``: MLlib ``ClusteringEvaluator`` on every fitted entity (squared Euclidean, its default);
- ``silhouette_exact``: scikit-learn's Euclidean silhouette (the seed's metric, :func:`exact_silhouette`) on a seeded
  random sample of at most ``sweep.silhouette_sample`` entities, the only data brought to the driver;
- ``min_cluster_share``, ``cluster_sizes``, ``seconds`` (fit plus measurements, wall time: up to
  ``sweep.concurrent_fits`` k values are fitted at once, from driver threads);
- ``chosen`` (true on one row) and ``reason`` (on the chosen row).

:func:`choose_k` weighs the SSE knee with ``silhouette_exact``: it is the seed's metric, on the
scale people know (squared-Euclidean silhouettes run higher), and a 10,000-row sample pins it to
about +-0.01.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from kneed import KneeLocator
from pyspark import StorageLevel
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import pairwise_distances_argmin, pairwise_distances_chunked, silhouette_score

from seglake.core.config import SeglakeConfig
from seglake.core.costs import inheritable
from seglake.core.errors import SeglakeError
from seglake.segmentation.drift import training_bins
from seglake.core.artifacts import CLUSTERING, TRANSFORM, library_versions, save_model, write_manifest
from seglake.segmentation.prepare import (
    ENTITY_ID,
    FEATURES,
    feature_columns,
    filter_condition,
    filter_counts,
    fit_transform_pipeline,
    vectors,
)
from seglake.core.stages import StageResult
from seglake.core.run_cache import entity_snapshot
from seglake.core.tables import Tables, record_run, write_run

PREDICTION = "prediction"
# Below this relative fall of SSE from the first to the last k the curve is flat: any "knee" kneed
# reports on it is noise (kneed normalises the curve, so it finds knees in pure noise).
FLAT_SSE = 0.10
SWEEP_COLUMNS = (
    "run_id string, k int, algorithm string, wssse double, sse double, silhouette double, "
    "silhouette_exact double, min_cluster_share double, cluster_sizes array<long>, seconds double, "
    "chosen boolean, reason string"
)


@dataclass(frozen=True)
class KMetrics:
    """Measurements of one k."""

    k: int
    wssse: float
    sse: float
    silhouette: float
    silhouette_exact: float
    cluster_sizes: list[int]
    seconds: float

    @property
    def min_cluster_share(self) -> float:
        """Share of entities in the smallest cluster (0 when a cluster came out empty).

        Examples
        --------
        >>> KMetrics(3, wssse=9.0, sse=0.5, silhouette=0.4, silhouette_exact=0.4,
        ...          cluster_sizes=[50, 30, 20], seconds=1.0).min_cluster_share
        0.2
        """
        return min(self.cluster_sizes) / sum(self.cluster_sizes)


def fit_clustering(data: DataFrame, algorithm: str, k: int, seed: int, max_iter: int):
    """Fit MLlib KMeans (k-means||), BisectingKMeans or GaussianMixture on the ``features`` column.

    The same data (same rows, same partitions), k and seed give the same model: the sweep relies on
    this when it refits the chosen k on every entity after measuring it on a sample.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> points = spark.createDataFrame([(str(i), Vectors.dense(p)) for i, p in
    ...     enumerate([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])], [ENTITY_ID, FEATURES])
    >>> model = fit_clustering(points, "kmeans", k=2, seed=0, max_iter=10)
    >>> [row.prediction for row in model.transform(points).collect()], sorted(cluster_centers(model))
    ([0, 0, 1, 1], [[0.0, 0.5], [10.0, 0.5]])
    """
    if algorithm == "kmeans":
        estimator = KMeans(k=k, seed=seed, maxIter=max_iter, initMode="k-means||")
    elif algorithm == "bisecting_kmeans":
        estimator = BisectingKMeans(k=k, seed=seed, maxIter=max_iter)
    elif algorithm == "gaussian_mixture":
        estimator = GaussianMixture(k=k, seed=seed, maxIter=max_iter)
    else:
        raise SeglakeError(f"sweep.algorithm: unknown algorithm '{algorithm}'")
    return estimator.setFeaturesCol(FEATURES).setPredictionCol(PREDICTION).fit(data)


ENTITIES_PER_PARTITION = 50_000


def stable_layout(kept: DataFrame, rows: int) -> DataFrame:
    """``kept`` hash-partitioned by entity id into ``ceil(rows / 50,000)`` partitions, each sorted.

    k-means|| draws its initial centres per partition and in row order, and the silhouette sample is
    drawn per partition too, so the same entities laid out differently (silver written by another
    number of tasks, shuffle blocks fetched in another order by a cluster's executors) give other
    segments. A layout that depends only on the rows gives the same segments in local mode and on
    any cluster, and lets a refit reproduce the measured model exactly.

    Examples
    --------
    >>> kept = spark.createDataFrame([("b",), ("a",), ("c",)], [ENTITY_ID])
    >>> stable_layout(kept, rows=120_000).rdd.getNumPartitions()  # ceil(120,000 / 50,000)
    3
    """
    partitions = max(1, math.ceil(rows / ENTITIES_PER_PARTITION))
    return kept.repartition(partitions, ENTITY_ID).sortWithinPartitions(ENTITY_ID)


def cluster_centers(model) -> list[list[float]]:
    """Centers of a fitted model as plain lists (a Gaussian mixture's centers are its means).

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> points = spark.createDataFrame([(str(i), Vectors.dense([x])) for i, x in
    ...     enumerate([0.0, 1.0, 10.0, 11.0])], [ENTITY_ID, FEATURES])
    >>> sorted(cluster_centers(fit_clustering(points, "bisecting_kmeans", k=2, seed=0, max_iter=10)))
    [[0.5], [10.5]]
    """
    if hasattr(model, "clusterCenters"):
        return [[float(v) for v in c] for c in model.clusterCenters()]
    return [[float(v) for v in g.mean] for g in model.gaussians]


def _matrix(arrays: pd.Series) -> np.ndarray:
    return np.stack(arrays.to_numpy()) if len(arrays) else np.empty((0, 0))


def nearest_squared_distance(x: Column, centers: list[list[float]]) -> Column:
    """Squared Euclidean distance from array column ``x`` to the nearest of ``centers``.

    A pandas UDF (numpy on Arrow batches): the same expression written out term by term is
    k x d terms, and at MovieLens' 44 features from k = 16 the generated aggregation grew beyond
    Java's 64 KB per method (Janino printed its stack trace and Spark fell back to interpretation).

    Examples
    --------
    >>> rows = spark.createDataFrame([([3.0, 4.0],), ([0.0, 0.0],)], "x array<double>")
    >>> nearest = nearest_squared_distance(F.col("x"), [[0.0, 0.0], [3.0, 3.0]])
    >>> [row.d for row in rows.select(nearest.alias("d")).collect()]
    [1.0, 0.0]
    """
    table = np.asarray(centers, dtype=np.float64)

    @F.pandas_udf("double")
    def nearest(arrays: pd.Series) -> pd.Series:
        return pd.Series(nearest_squared(_matrix(arrays), table), index=arrays.index)

    return nearest(x)


def nearest_squared(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared distance of each row of ``points`` to its nearest row of ``centers`` (numpy).

    Differences are squared and summed, not expanded as |x|² − 2x·c + |c|² (which cancels badly
    near a center); rows go in chunks so that a chunk's temporary stays near 16 MB at any width.

    Examples
    --------
    >>> nearest_squared(np.array([[3.0, 4.0], [1.0, 1.0]]), np.array([[0.0, 0.0], [1.0, 2.0]]))
    array([8., 1.])
    """
    if not len(points):
        return np.empty(0)
    out = np.empty(len(points))
    step = max(1, 2_000_000 // max(1, points.shape[1]))
    for start in range(0, len(points), step):
        chunk = points[start:start + step]
        out[start:start + step] = np.min(
            [((chunk - center) ** 2).sum(axis=1) for center in centers], axis=0)
    return out


def center_metrics(labelled: DataFrame, centers: list[list[float]]) -> tuple[list[int], float, float]:
    """Cluster sizes, ``wssse`` and the seed's ``sse`` in one pass over labelled entities.

    Returns
    -------
    cluster_sizes : list of int
        Entities per cluster index ``0..len(centers)-1`` (an empty cluster counts 0).
    wssse : float
        Sum of squared distances to the nearest center.
    sse : float
        Mean Euclidean distance to the nearest center.

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> labelled = spark.createDataFrame([(Vectors.dense([0.0, 0.0]), 0), (Vectors.dense([0.0, 2.0]), 0),
    ...     (Vectors.dense([10.0, 0.0]), 1)], [FEATURES, PREDICTION])
    >>> center_metrics(labelled, [[0.0, 1.0], [10.0, 0.0]])  # sizes, 1 + 1 + 0, (1 + 1 + 0) / 3
    ([2, 1], 2.0, 0.6666666666666666)
    """
    with_array = labelled.select(PREDICTION, vector_to_array(FEATURES).alias("x"))
    nearest = nearest_squared_distance(F.col("x"), centers)
    per_cluster = (
        with_array.select(PREDICTION, nearest.alias("d2"))
        .groupBy(PREDICTION)
        .agg(F.count(F.lit(1)).alias("size"), F.sum("d2").alias("d2"), F.sum(F.sqrt("d2")).alias("d"))
        .collect()  # one row per cluster
    )
    sizes = [0] * len(centers)
    for row in per_cluster:
        sizes[row[PREDICTION]] = int(row["size"])
    total = sum(sizes)
    return sizes, float(sum(r["d2"] for r in per_cluster)), float(sum(r["d"] for r in per_cluster)) / total


def hash_share(seed: int, fraction: float) -> Column:
    """True for about ``fraction`` of entities, chosen by a seeded hash of the id: the same entities
    however the rows are partitioned or ordered.

    Examples
    --------
    >>> ids = spark.range(1000).select(F.col("id").cast("string").alias(ENTITY_ID))
    >>> chosen = ids.where(hash_share(seed=0, fraction=0.1))
    >>> shuffled = ids.repartition(7).where(hash_share(seed=0, fraction=0.1))
    >>> chosen.count(), sorted(chosen.collect()) == sorted(shuffled.collect())
    (93, True)
    """
    share = math.ceil(min(1.0, fraction) * 1_000_000)
    return F.pmod(F.xxhash64(ENTITY_ID, F.lit(seed)), F.lit(1_000_000)) < F.lit(share)


def silhouette_sample(data: DataFrame, size: int, rows: int, seed: int) -> DataFrame:
    """A seeded random sample of at most ``size`` of the ``rows`` entities, persisted.

    The entities with the smallest seeded hash of their id: the same ones however the rows are
    partitioned or ordered (a per-partition Bernoulli sample and a bare limit are not). Persisted so
    that every k scores the very same entities.

    Examples
    --------
    >>> data = spark.range(100).select(F.col("id").cast("string").alias(ENTITY_ID))
    >>> sample = silhouette_sample(data, size=5, rows=100, seed=0)
    >>> sorted(row.entity_id for row in sample.collect()) == sorted(
    ...     row.entity_id for row in silhouette_sample(data.repartition(3), 5, 100, 0).collect())
    True
    >>> sample.count()
    5
    """
    key = F.xxhash64(ENTITY_ID, F.lit(seed))
    sample = data.where(hash_share(seed, 1.2 * size / rows))  # a margin before sorting, then the cap
    sample = sample.orderBy(key, ENTITY_ID).limit(size)
    sample = sample.persist(StorageLevel.MEMORY_AND_DISK)
    sample.count()
    return sample


PRECOMPUTED_DISTANCES_BYTES = 1 << 30


def sample_distances(points: np.ndarray) -> np.ndarray | None:
    """The silhouette sample's Euclidean distance matrix as float32, computed once for every k
    (scikit-learn's ``pairwise_distances_chunked``), or None past 1 GiB (about 16,000 points),
    where each k computes its blocks again instead.

    Examples
    --------
    >>> sample_distances(np.array([[0.0, 0.0], [3.0, 4.0]]))
    array([[0., 5.],
           [5., 0.]], dtype=float32)
    """
    if len(points) ** 2 * 4 > PRECOMPUTED_DISTANCES_BYTES:
        return None
    out, start = np.empty((len(points), len(points)), dtype=np.float32), 0
    for block in pairwise_distances_chunked(points):
        out[start:start + len(block)] = block
        start += len(block)
    return out


def exact_silhouette(points: np.ndarray, labels: np.ndarray, distances: np.ndarray | None = None) -> float:
    """scikit-learn's Euclidean silhouette, or NaN when it is undefined (one cluster, or all alone).

    Every k scores the same sample, so the distances can be computed once (``distances``, from
    :func:`sample_distances`; else blocks of ``pairwise_distances_chunked`` for this call). Each
    block's per-cluster sums are one matrix product with the labels' indicator matrix (in float64)
    instead of ``silhouette_score``'s ``bincount`` per row. Together that took the sweep's exact
    silhouettes from 1.65 s to about 0.1 s per k at 10,000 points; the mean agrees with
    ``silhouette_score`` to about 1e-7 (float32 distances) or 1e-12 (float64). A point alone in its
    cluster scores 0, as there.

    Examples
    --------
    >>> points = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
    >>> labels = np.array([0, 0, 1, 1, 2])
    >>> bool(abs(exact_silhouette(points, labels) - silhouette_score(points, labels)) < 1e-12)
    True
    >>> bool(abs(exact_silhouette(points, labels, sample_distances(points))
    ...          - silhouette_score(points, labels)) < 1e-6)
    True
    >>> round(exact_silhouette(points[:4], labels[:4]), 3)
    0.98
    >>> exact_silhouette(points, np.zeros(5))
    nan
    """
    codes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(codes) < 2 or len(codes) >= len(labels):
        return math.nan
    indicator = np.zeros((len(labels), len(codes)))
    indicator[np.arange(len(labels)), inverse] = 1.0
    if distances is None:
        blocks = pairwise_distances_chunked(points, reduce_func=lambda block, start: block @ indicator)
    else:
        step = 1024
        blocks = (distances[i:i + step].astype(np.float64) @ indicator for i in range(0, len(labels), step))
    sums = np.vstack(list(blocks))
    rows, own = np.arange(len(labels)), counts[inverse]
    inside = sums[rows, inverse] / np.maximum(own - 1, 1)
    means = sums / counts
    means[rows, inverse] = np.inf
    nearest = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.nan_to_num((nearest - inside) / np.maximum(inside, nearest))
    scores[own == 1] = 0.0
    return float(scores.mean())


def sample_points(sample: DataFrame) -> np.ndarray:
    """The silhouette sample's feature vectors on the driver (at most ``sweep.silhouette_sample`` rows).

    Examples
    --------
    >>> from pyspark.ml.linalg import Vectors
    >>> sample = spark.createDataFrame(
    ...     [("a", Vectors.dense([0.0, 1.0])), ("b", Vectors.dense([2.0, 3.0]))], [ENTITY_ID, FEATURES])
    >>> sample_points(sample)
    array([[0., 1.],
           [2., 3.]])
    """
    rows = sample.select(vector_to_array(FEATURES).alias("x")).toPandas()
    return np.stack(rows["x"].to_numpy()) if len(rows) else np.empty((0, 0))


def measure_k(
    data: DataFrame, sample: DataFrame, points: np.ndarray, algorithm: str, k: int, seed: int, max_iter: int,
    distances: np.ndarray | None = None,
) -> tuple[KMetrics, object]:
    """Fit one k on the persisted ``data`` and measure it (see the module docstring).

    ``points`` are ``sample``'s vectors, collected once (``distances`` their distance matrix, when
    :func:`sample_distances` kept it): a KMeans model labels them on the driver by their nearest
    center (what its ``predict`` does), so each k costs no Spark job for the exact silhouette; other
    algorithms label the sample through Spark.
    """
    started = time.monotonic()
    model = fit_clustering(data, algorithm, k, seed, max_iter)
    labelled = model.transform(data)
    centers = cluster_centers(model)
    sizes, wssse, sse = center_metrics(labelled, centers)
    silhouette = ClusteringEvaluator(featuresCol=FEATURES, predictionCol=PREDICTION).evaluate(labelled)
    if algorithm == "kmeans" and len(points):
        labels = pairwise_distances_argmin(points, np.asarray(centers))
    else:
        distances = None  # the sample comes back from Spark, in its own order
        scored = model.transform(sample).select(vector_to_array(FEATURES).alias("x"), PREDICTION).toPandas()
        points = np.stack(scored["x"].to_numpy()) if len(scored) else np.empty((0, 0))
        labels = scored[PREDICTION].to_numpy()
    exact = exact_silhouette(points, labels, distances)
    return KMetrics(k, wssse, sse, float(silhouette), exact, sizes, time.monotonic() - started), model


def sse_knee(ks: list[int], sse: list[float]) -> tuple[int | None, str]:
    """The knee of the SSE curve by kneed, and a phrase saying why there is none when there is none.

    Examples
    --------
    >>> sse_knee([2, 3, 4, 5, 6], [10.0, 5.0, 3.0, 2.6, 2.4])
    (4, '')
    >>> sse_knee([2, 3, 4], [1.0, 0.98, 0.95])
    (None, 'SSE falls only 5% from k=2 to k=4')
    >>> sse_knee([2, 3], [1.0, 0.5])
    (None, 'too few k for a knee (2)')
    """
    if len(ks) < 3:
        return None, f"too few k for a knee ({len(ks)})"
    fall = (sse[0] - sse[-1]) / sse[0] if sse[0] > 0 else 0.0
    if fall < FLAT_SSE:
        return None, f"SSE falls only {fall:.0%} from k={ks[0]} to k={ks[-1]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns when it finds no knee; we say so ourselves
        knee = KneeLocator(ks, sse, curve="convex", direction="decreasing").knee
    if knee is None:
        return None, "kneed found none"
    return int(knee), ""


def _score(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def choose_k(
    ks: list[int],
    sse: list[float],
    silhouette: list[float],
    pinned: int | None = None,
    shares: list[float] | None = None,
    min_share: float = 0.0,
) -> tuple[int, str]:
    """Choose k from the SSE curve and the silhouette, and say why in one line.

    The rule:

    1. Find the knee of the SSE curve with kneed (``curve="convex", direction="decreasing"``). It is
       distrusted when SSE falls less than 10% over the range (kneed finds "knees" in noise).
    2. Candidates are the knee and its neighbours (knee-1, knee, knee+1) when there is a knee, else
       every k: the knee says roughly where adding segments stops paying, not exactly where.
    3. Candidates whose smallest segment holds less than ``min_share`` of the entities are dropped
       (unless every candidate has one): a segment of a handful of people cannot be acted on.
    4. The candidate with the best silhouette wins; a tie goes to the smaller k.

    ``pinned`` (``sweep.k``) overrides the rule; the reason still says what the rule would pick.

    Parameters
    ----------
    ks : list of int
        Swept k values, ascending.
    sse : list of float
        The seed's SSE (mean distance to the nearest center) per k.
    silhouette : list of float
        Silhouette per k (NaN counts as the worst).
    pinned : int, optional
        A k fixed by the user.
    shares : list of float, optional
        Smallest segment's share of entities per k.
    min_share : float
        Smallest acceptable segment share.

    Returns
    -------
    k : int
    reason : str
        One line, e.g. ``k=4: SSE knee at 4 (kneed), silhouette 0.41 is the best within knee±1
        (k=3: 0.38, k=5: 0.36)``.

    Examples
    --------
    >>> ks, sse, silhouette = [2, 3, 4, 5, 6], [10.0, 5.0, 3.0, 2.6, 2.4], [0.30, 0.42, 0.40, 0.35, 0.33]
    >>> choose_k(ks, sse, silhouette)
    (3, 'k=3: SSE knee at 4 (kneed), silhouette 0.42 is the best within knee±1 (k=4: 0.40, k=5: 0.35)')
    >>> choose_k(ks, sse, silhouette, shares=[0.4, 0.002, 0.1, 0.1, 0.05], min_share=0.005)[0]
    4
    >>> choose_k(ks, sse, silhouette, pinned=5)[1].split(";")[0]
    'k=5: pinned by sweep.k (silhouette 0.35)'
    """
    by_k = dict(zip(ks, silhouette))
    knee, no_knee = sse_knee(ks, sse)
    if knee is not None:
        candidates = [k for k in ks if abs(k - knee) <= 1]
        where = f"SSE knee at {knee} (kneed), silhouette {{s}} is the best within knee±1"
    else:
        candidates = list(ks)
        where = f"no SSE knee ({no_knee}), silhouette {{s}} is the best of k={ks[0]}..{ks[-1]}"
    notes = []
    if shares is not None and min_share > 0:
        share_of = dict(zip(ks, shares))
        small = [k for k in candidates if share_of[k] < min_share]
        if small and len(small) < len(candidates):
            candidates = [k for k in candidates if k not in small]
            notes.append("skipped " + ", ".join(f"k={k} (smallest segment {share_of[k]:.1%})" for k in small)
                         + f" below sweep.min_share {min_share:.1%}")
        elif small:
            notes.append(f"every candidate has a segment below sweep.min_share {min_share:.1%}")
    best = max(candidates, key=lambda k: (_score(by_k[k]), -k))
    others = ", ".join(f"k={k}: {by_k[k]:.2f}" for k in candidates if k != best)
    reason = f"k={best}: " + where.format(s=f"{by_k[best]:.2f}") + (f" ({others})" if others else "")
    reason += "".join(f"; {n}" for n in notes)
    if pinned is None:
        return best, reason
    silhouette_pinned = f"{by_k[pinned]:.2f}" if pinned in by_k else "not measured"
    return pinned, (f"k={pinned}: pinned by sweep.k (silhouette {silhouette_pinned}); "
                    f"the rule would pick {reason}")


def _table(metrics: list[KMetrics], chosen: int) -> str:
    lines = ["    k        sse  silhouette  silhouette_exact  min_share  seconds"]
    for m in metrics:
        mark = " <" if m.k == chosen else ""
        lines.append(f"  {m.k:>3}  {m.sse:>9.4f}  {m.silhouette:>10.3f}  {m.silhouette_exact:>16.3f}"
                     f"  {m.min_cluster_share:>9.2%}  {m.seconds:>7.1f}{mark}")
    return "\n".join(lines)


def sweep(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Filter, fit and save the transform, sweep k, choose k, fit the chosen k on every kept entity.

    Writes ``gold/sweep``, the ``sweep`` row of ``gold/runs`` and ``models/<run_id>/`` (transform,
    clustering model, manifest). Reads the current version of ``silver/entities`` and records that
    version in the manifest, so the segment stage labels exactly the same rows even if features are
    rebuilt meanwhile.

    Returns
    -------
    StageResult
        ``rows_in`` entities, ``rows_out`` k values written; ``details`` holds ``kept_fraction``,
        ``entities``, ``kept``, ``chosen_k``, ``reason`` and ``metrics`` (list of :class:`KMetrics`).

    Raises
    ------
    SeglakeError
        No ``silver/entities``, a bad filter or transform key, or fewer kept entities than the k range.
    """
    started = time.monotonic()
    settings = config.sweep
    tables = Tables.of(config)
    entities, version = entity_snapshot(spark, tables.entities, "features")
    features, categorical = feature_columns(entities)
    total, kept_rows = filter_counts(entities, config.filter)
    ks = sorted(set(range(settings.k_min, settings.k_max + 1)) | ({settings.k} if settings.k else set()))
    if kept_rows <= ks[-1]:
        raise SeglakeError(f"sweep: only {kept_rows:,} entities pass the filter; k up to {ks[-1]} "
                           f"needs more (lower sweep.k_max or loosen filter)")
    filtered = entities.where(filter_condition(entities, config.filter))
    kept = stable_layout(filtered, kept_rows)
    transform = fit_transform_pipeline(kept, features, categorical, config.transform)
    folder = tables.models(run_id)
    save_model(transform, f"{folder}/{TRANSFORM}")

    fitted, fit_rows = kept, kept_rows
    if settings.fit_sample is not None and kept_rows > settings.fit_sample:
        # Choosing k needs the shape of the SSE and silhouette curves, which a seeded sample of a
        # quarter million entities pins down; the chosen k is then fitted on every entity.
        fitted = filtered.where(hash_share(settings.seed + 1, settings.fit_sample / kept_rows))
        fit_rows = fitted.count()
        fitted = stable_layout(fitted, fit_rows)
    data = vectors(transform, fitted).persist(StorageLevel.MEMORY_AND_DISK)
    data.count()
    sample = silhouette_sample(data, settings.silhouette_sample, fit_rows, settings.seed)
    try:
        points = sample_points(sample)
        distances = sample_distances(points) if settings.algorithm == "kmeans" else None
        # MLlib fits one k per Spark job at a time, and a small job mostly waits on scheduling:
        # fitting a few k at once from driver threads keeps the cores busy. Each fit reads the
        # same persisted rows with the same seed, so the models are those of a serial loop.
        measure = inheritable(spark, lambda k: measure_k(
            data, sample, points, settings.algorithm, k, settings.seed, settings.max_iter, distances))
        with ThreadPoolExecutor(max_workers=min(settings.concurrent_fits, len(ks))) as pool:
            measured = list(pool.map(measure, ks))
    finally:
        sample.unpersist()
        data.unpersist()
    metrics = [m for m, _ in measured]
    # Cut points for drift, on the very rows the transform and clustering were fitted on.
    bins = training_bins(kept, features, config.drift.bins, categorical)
    chosen, reason = choose_k(
        ks, [m.sse for m in metrics], [m.silhouette_exact for m in metrics], pinned=settings.k,
        shares=[m.min_cluster_share for m in metrics], min_share=settings.min_share,
    )
    rows = [(run_id, m.k, settings.algorithm, m.wssse, m.sse, m.silhouette, m.silhouette_exact,
             m.min_cluster_share, m.cluster_sizes, m.seconds, m.k == chosen,
             reason if m.k == chosen else None) for m in metrics]
    write_run(spark.createDataFrame(rows, SWEEP_COLUMNS), tables.gold("sweep"), run_id)
    # The chosen k on every kept entity: the measured model when every kept entity was fitted,
    # else a refit on all of them (same layout, algorithm, k and seed).
    model = dict(zip(ks, (m for _, m in measured)))[chosen]
    if fit_rows < kept_rows:
        model = fit_clustering(vectors(transform, kept), settings.algorithm, chosen, settings.seed,
                               settings.max_iter)
    save_model(model, f"{folder}/{CLUSTERING}")
    kept_fraction = kept_rows / total
    write_manifest(spark, folder, {
        "run_id": run_id, "use_case": config.name, "config_hash": config.config_hash,
        "entities_path": tables.entities, "entities_version": int(version),
        "entities": total, "kept": kept_rows, "kept_fraction": kept_fraction, "fit_rows": fit_rows,
        "filter": config.filter.model_dump(), "transform": config.transform.model_dump(),
        "features": features, "categorical": categorical, "sweep": settings.model_dump(),
        "feature_types": {f.name: f.dataType.simpleString() for f in entities.schema.fields
                          if f.name in (*features, *categorical)},
        "feature_definitions": ({n: d.model_dump() for n, d in config.features.definitions.items()}
                                if config.events is not None else None),
        "entity_id_column": (config.features.entity if config.events is not None
                             else config.entities.id if config.entities is not None else None),
        "drift_bins": bins, "versions": library_versions(),
        "chosen_k": chosen, "reason": reason,
        "clustering": {"algorithm": settings.algorithm, "k": chosen, "seed": settings.seed,
                       "max_iter": settings.max_iter, "fit_rows": kept_rows},
        "artefacts": {"transform": TRANSFORM, "clustering": CLUSTERING},
    }, saved=(TRANSFORM, CLUSTERING))
    record_run(spark, config, run_id, "sweep", total, len(metrics), kept_fraction, chosen, reason)
    fitted_on = f"; each k fitted on a seeded sample of {fit_rows:,}" if fit_rows < kept_rows else ""
    message = (f"kept {kept_fraction:.2f} of {total:,} entities ({kept_rows:,}){fitted_on}; {reason}\n"
               + _table(metrics, chosen))
    details = {"kept_fraction": kept_fraction, "entities": total, "kept": kept_rows,
               "chosen_k": chosen, "reason": reason, "metrics": metrics, "features": features, "fit_rows": fit_rows,
               "categorical": categorical}
    return StageResult("sweep", total, len(metrics), time.monotonic() - started, details, message)
