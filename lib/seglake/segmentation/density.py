"""Density clusters: UMAP + HDBSCAN on a bounded sample per group, a surrogate for everyone else.

Steps of :func:`density` (config section ``density``):

1. Groups: the whole population (``group_by: none``, group 0) or each KMeans segment of this run
   (``group_by: segment``: the entities the sweep kept, labelled by the clustering model it saved;
   the others are left out).
2. A stratified random sample of at most ``sample_size`` rows in total: the budget is shared
   equally between groups, a group smaller than its share is taken whole and its unused share goes
   to the others. Rows are chosen by a hash of ``(seed, entity_id)``, so the same table and seed
   give the same sample however Spark partitions it.
3. ``groupBy(group, task).applyInPandas(cluster_task)``, each (group, task) a Spark task of its
   own spread over the cores (:func:`apply_per_key`), so that a group's main fit (task 0) and its
   stability refit (task 1, step 4) run side by side. Main fit: in each group, the clustering space
   is sign(x)·log1p(|x|) of every numeric feature, nulls set to the group's median, then standard
   scaling, all fitted on the group's sample inside the UDF (self-contained: it does not use the
   prepare stage's Spark ML transform, so density runs without it). UMAP (``density.umap``) then
   HDBSCAN (``density.hdbscan``) give ``cluster`` (−1 noise) and ``cluster_probability``; a second
   2-D UMAP with ``map_min_dist`` gives the picture's ``x, y`` (the clustering embedding itself when
   it is already 2-D). With groups, cluster ids are ``group * 1000 + c`` so they are unique across
   groups (noise stays −1) and ``group`` tells which segment a cluster belongs to.
4. Stability: UMAP (seed + 1) + HDBSCAN rerun on a random ``stability_fraction`` of the group's
   sample (``min_cluster_size`` scaled by the same fraction), in the clustering space of the whole
   group's sample (so task 1 gets all of the group's rows, as task 0 does); the adjusted Rand index
   between the two labelings of those rows (noise counted as a label), computed on the driver from
   at most ``stability_fraction × sample_size`` pairs of labels, is the group's ``stability_ari``.
   UMAP can tear clusters apart; a low ARI says the clusters depend on the seed and sample.
5. A surrogate XGBoost per group (:mod:`seglake.segmentation.surrogate`), one task per group again,
   learns the sample's labels from the raw features, its held-out accuracy is the ``fidelity``, and a
   pandas UDF assigns every entity.

Writes ``gold/clusters`` (one row per entity; sampled rows keep their HDBSCAN label, membership
strength and ``x, y``; the others get the surrogate's label and class probability, ``x, y`` null),
``gold/cluster_quality`` (one row per group) and ``models/<run_id>/surrogate*.json`` with
``manifest-density.json`` (which records the checksum of the sweep's clustering model, so that the
segment stage joins these clusters into ``gold/segments`` only for the sweep they were made on).
Sorting each group by ``entity_id`` before UMAP makes the labels depend only on the data and seeds,
not on shuffle order (nor on which task or partition a group lands in).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import warnings

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import DensityConfig, SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.artifacts import (
    CLUSTERING,
    DENSITY_MANIFEST,
    MANIFEST as RUN_MANIFEST,
    path_exists,
    read_manifest,
    write_manifest,
)
from seglake.core.tables import Tables, read_delta, write_run
from seglake.segmentation.segment import kept_entities, label_segments, load_swept
from seglake.segmentation.surrogate import NOISE, SURROGATE_SCHEMA, assign, fit_surrogate

GROUP_STRIDE = 1000
MANIFEST = DENSITY_MANIFEST
NUMERIC = (T.DoubleType, T.FloatType, T.IntegerType, T.LongType, T.ShortType, T.DecimalType)
QUALITY_SCHEMA = ("run_id string, group int, population long, sample_rows long, clusters long, "
                  "noise_share double, stability_ari double, fit_seconds double, fidelity double, "
                  "fidelity_clustered double")
CLUSTERS_SCHEMA = ("entity_id string, group int, cluster int, cluster_probability double, "
                   "x double, y double, stability_ari double, fit_seconds double")
# what cluster_task returns: task 0 rows are a group's sample with its labels (cluster_group without
# stability_ari), task 1 rows the stability refit's labels of the subsample (the rest NaN)
TASK_SCHEMA = ("entity_id string, group int, task int, cluster int, cluster_probability double, "
               "x double, y double, fit_seconds double")
MAIN, REFIT = 0, 1
SLOT = "_slot"


# ---------------------------------------------------------------- sampling (Spark, bounded)


def feature_columns(entities: DataFrame) -> list[str]:
    """Every numeric column of an entity table except ``entity_id``, in table order.

    Examples
    --------
    >>> entities = spark.createDataFrame([("a", 3, 10.0, "fr")],
    ...                                  "entity_id string, plays long, minutes double, country string")
    >>> feature_columns(entities)
    ['plays', 'minutes']
    """
    return [f.name for f in entities.schema.fields
            if f.name != "entity_id" and isinstance(f.dataType, NUMERIC)]


def allocate(counts: dict[int, int], total: int) -> dict[int, int]:
    """Share ``total`` sample rows equally between strata; a stratum smaller than its share is taken
    whole and the rest is shared again among the others (water-filling).

    Equal shares (not proportional ones) give small groups enough rows for UMAP and HDBSCAN.

    Examples
    --------
    >>> allocate({0: 50, 1: 1000, 2: 1000}, 300)  # group 0 whole, its unused 50 shared by the others
    {0: 50, 1: 125, 2: 125}
    >>> allocate({0: 10, 1: 10}, 5)
    {0: 3, 1: 2}
    """
    quotas: dict[int, int] = {}
    left, open_strata = total, sorted(counts, key=lambda s: counts[s])
    while open_strata:
        share = left // len(open_strata)
        smallest = open_strata[0]
        if counts[smallest] <= share:
            quotas[smallest] = counts[smallest]
            left -= counts[smallest]
            open_strata.pop(0)
            continue
        for index, stratum in enumerate(open_strata):
            quotas[stratum] = share + (1 if index < left - share * len(open_strata) else 0)
        break
    return quotas


def uniform_key(seed: int) -> F.Column:
    """A number in [0, 1) from a hash of (seed, entity_id): reproducible whatever the partitioning.

    Examples
    --------
    >>> ids = spark.createDataFrame([("a",), ("b",), ("c",)], "entity_id string")
    >>> [round(row.u, 3) for row in ids.select(uniform_key(seed=0).alias("u")).collect()]
    [0.925, 0.711, 0.318]
    """
    return F.pmod(F.xxhash64(F.lit(seed), F.col("entity_id")), F.lit(1 << 40)) / float(1 << 40)


def stratified_sample(
    df: DataFrame, stratum: str, size: int, seed: int, counts: dict[int, int] | None = None
) -> tuple[DataFrame, dict[int, int]]:
    """At most ``size`` rows of ``df`` shared between the values of the integer column ``stratum``.

    Each stratum's rows are those with the smallest hash keys (a uniform sample without
    replacement); a hash filter keeps the window that ranks them to about ``size`` rows.

    Parameters
    ----------
    df : DataFrame
        Has ``entity_id`` and the non-null integer column ``stratum``.
    stratum : str
    size : int
    seed : int
    counts : dict, optional
        Rows per stratum when the caller already knows them (saves a pass over ``df``).

    Returns
    -------
    (DataFrame, dict)
        The sample with a ``weight`` column (stratum population / stratum sample, to reweight to
        the population), and the population count of every stratum.

    Examples
    --------
    Group 0 has only 2 rows, taken whole; group 1 gets the other 2 of the 4 and weight 8 / 2:

    >>> population = spark.createDataFrame([(f"e{i}", 0 if i < 2 else 1) for i in range(10)],
    ...                                    "entity_id string, group int")
    >>> sample, counts = stratified_sample(population, "group", size=4, seed=0)
    >>> sorted((row.group, row.weight) for row in sample.collect()), counts
    ([(0, 1.0), (0, 1.0), (1, 4.0), (1, 4.0)], {0: 2, 1: 8})
    """
    if counts is None:
        counts = {int(r[0]): int(r[1]) for r in df.groupBy(stratum).count().collect()}
    quotas = allocate(counts, size)
    plan = []
    for value, count in counts.items():
        share = quotas[value] / count
        margin = 5 * math.sqrt(share * (1 - share) / count) + 20 / count
        plan.append((value, quotas[value], min(1.0, share + margin), count / max(quotas[value], 1)))
    spark = df.sparkSession
    plan_df = spark.createDataFrame(plan, f"`{stratum}` int, quota int, threshold double, weight double")
    keyed = (df.withColumn("_key", uniform_key(seed)).join(F.broadcast(plan_df), stratum)
             .where(F.col("_key") < F.col("threshold")))
    ranked = keyed.withColumn(
        "_rank", F.row_number().over(Window.partitionBy(stratum).orderBy("_key", "entity_id")))
    sample = ranked.where(F.col("_rank") <= F.col("quota")).drop("_key", "_rank", "quota", "threshold")
    return sample, counts


def grouped_population(
    spark: SparkSession, config: SeglakeConfig, run_id: str, entities: DataFrame, features: list[str]
) -> DataFrame:
    """``entity_id``, ``group`` and the features as doubles: group 0, or the run's KMeans segment."""
    columns = [F.col("entity_id").cast("string").alias("entity_id"),
               *[F.col(f).cast("double").alias(f) for f in features]]
    if config.density.group_by == "none":
        return entities.select(*columns, F.lit(0).alias("group"))
    tables = Tables.of(config)
    swept = load_swept(spark, tables, run_id)
    segments = label_segments(kept_entities(spark, tables, swept), swept).select(
        F.col("entity_id").cast("string").alias("entity_id"), F.col("segment").cast("int").alias("group"))
    return entities.select(*columns).join(segments, "entity_id")


# ---------------------------------------------------------------- one task per key (Spark)


def spark_partition_of(value: int, partitions: int) -> int:
    """The partition ``repartition(partitions, col)`` sends an int ``value`` of ``col`` to.

    Spark's hash partitioning is pmod(Murmur3 hash with seed 42, partitions), the hash of ``F.hash``;
    bucketed tables depend on it staying so.

    Examples
    --------
    >>> values = spark.range(6).select(F.col("id").cast("int").alias("v"))
    >>> spread = values.repartition(4, "v").select("v", F.spark_partition_id().alias("p")).collect()
    >>> all(spark_partition_of(row.v, 4) == row.p for row in spread)
    True
    """
    def rotate(x: int, bits: int) -> int:
        return ((x << bits) | (x >> (32 - bits))) & 0xFFFFFFFF

    k = rotate((value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
    h = (rotate(42 ^ k, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h ^= 4  # the input's length in bytes
    h = (h ^ (h >> 16)) * 0x85EBCA6B & 0xFFFFFFFF
    h = (h ^ (h >> 13)) * 0xC2B2AE35 & 0xFFFFFFFF
    h ^= h >> 16
    return (h - (1 << 32) if h >= 1 << 31 else h) % partitions


def plan_partitions(weights: dict[tuple, float], partitions: int) -> dict[tuple, int]:
    """Keys to partitions, heaviest key first onto the least loaded partition (ties: lowest key).

    Examples
    --------
    >>> plan_partitions({(0, 0): 10.0, (0, 1): 5.0}, 2)  # a main fit and its stability refit
    {(0, 0): 0, (0, 1): 1}
    >>> plan_partitions({(g,): w for g, w in enumerate([9, 5, 4, 3, 1])}, 2)
    {(0,): 0, (1,): 1, (2,): 1, (3,): 0, (4,): 1}
    """
    loads, planned = [0.0] * partitions, {}
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        target = min(range(partitions), key=lambda p: (loads[p], p))
        loads[target] += weights[key]
        planned[key] = target
    return planned


def _without_slot(rows: pd.DataFrame, body) -> pd.DataFrame:
    return body(rows.drop(columns=SLOT))


def apply_per_key(frame: DataFrame, keys: list[str], weights: dict[tuple, float], body,
                  schema) -> DataFrame:
    """``frame.groupBy(*keys).applyInPandas(body, schema)`` with the keys spread over the cores.

    With adaptive execution on, the shuffle before a grouped pandas UDF is coalesced into as few
    partitions as its size allows (no smaller than ``coalescePartitions.minPartitionSize``, 1 MB): a
    sample of a few MB becomes one partition or a few, each holding several keys whose model fits
    then run one after another in one task while other cores idle. Here each key is planned
    onto one of ``min(#keys, 2 × defaultParallelism)`` partitions (:func:`plan_partitions`, by
    ``weights``, the expected cost of each key), and a ``_slot`` column whose hash lands on that
    partition routes its rows there through an explicit ``repartition(n, _slot)``, which adaptive
    execution leaves alone. Grouping by (``_slot``, keys) then needs no other shuffle; ``body`` sees
    the rows without ``_slot``. Rows of a key missing from ``weights`` go to partition 0.

    ``body`` must not depend on the order of its rows (the bodies here sort by ``entity_id``).

    Examples
    --------
    >>> from pyspark import TaskContext
    >>> def where(rows):
    ...     return pd.DataFrame({"g": [int(rows["g"].iloc[0])],
    ...                          "partition": [TaskContext.get().partitionId()]})
    >>> frame = spark.createDataFrame([(g, float(i)) for g in range(3) for i in range(5)], "g int, v double")
    >>> done = apply_per_key(frame, ["g"], {(0,): 2.0, (1,): 1.0, (2,): 1.0}, where, "g int, partition int")
    >>> sorted(tuple(row) for row in done.collect())  # 2 cores: 3 keys on 3 partitions, g 0 first
    [(0, 0), (1, 1), (2, 2)]
    """
    spark = frame.sparkSession
    weights = {tuple(k.item() if hasattr(k, "item") else k for k in key): w for key, w in weights.items()}
    partitions = max(1, min(len(weights), spark.sparkContext.defaultParallelism * 2))
    route: dict[int, int] = {}  # partition → a _slot value that hashes to it
    value = 0
    while len(route) < partitions:
        route.setdefault(spark_partition_of(value, partitions), value)
        value += 1
    slots = spark.createDataFrame(
        [(*key, route[p]) for key, p in plan_partitions(weights, partitions).items()],
        T.StructType([*(frame.schema[k] for k in keys), T.StructField(SLOT, T.IntegerType())]))
    routed = (frame.join(F.broadcast(slots), keys, "left")
              .withColumn(SLOT, F.coalesce(F.col(SLOT), F.lit(route[0]))))
    return (routed.repartition(partitions, SLOT).groupBy(SLOT, *keys)
            .applyInPandas(functools.partial(_without_slot, body=body), schema))


# ---------------------------------------------------------------- clustering (pandas UDF body)


def clustering_space(values: np.ndarray) -> np.ndarray:
    """sign(x)·log1p(|x|), nulls to the column median, then standard scaling (constant columns → 0).

    The signed log1p tames heavy tails (followers span six orders of magnitude) and accepts
    negative values, where plain log1p would not.

    Examples
    --------
    >>> values = np.array([[0.0], [np.nan], [np.e - 1]])  # log1p: 0, the median 0.5, 1
    >>> clustering_space(values).round(3).ravel().tolist()
    [-1.225, 0.0, 1.225]
    >>> clustering_space(np.full((3, 1), 0.7)).ravel().tolist()  # constant, its spread float noise
    [0.0, 0.0, 0.0]
    """
    logged = np.sign(values) * np.log1p(np.abs(values))
    medians = np.nanmedian(np.where(np.isnan(logged).all(axis=0), 0.0, logged), axis=0)
    filled = np.where(np.isnan(logged), medians, logged)
    centred = filled - filled.mean(axis=0)
    spread = filled.std(axis=0)
    # a constant column's mean has rounding error, so its spread is ~1e-17, not 0: dividing by it
    # would turn the constant into ±1; relative to the column's size such a spread is zero
    constant = spread <= 1e-12 * np.maximum(np.abs(filled).max(axis=0, initial=0.0), 1.0)
    return np.where(constant, 0.0, centred / np.where(constant, 1.0, spread))


def _umap(space: np.ndarray, umap: dict, seed: int, n_components: int, min_dist: float,
          knn=(None, None, None)) -> tuple[np.ndarray, object]:
    from umap import UMAP

    reducer = UMAP(n_neighbors=min(umap["n_neighbors"], len(space) - 1), n_components=n_components,
                   min_dist=min_dist, metric=umap["metric"], n_epochs=umap.get("n_epochs"),
                   random_state=seed, precomputed_knn=knn)
    return reducer.fit_transform(space), reducer


def _hdbscan(embedding: np.ndarray, min_cluster_size: int, min_samples: int | None, method: str):
    from hdbscan import HDBSCAN

    # one thread: Spark already runs one task per core. The exact minimum spanning tree: hdbscan's
    # default approximate Boruvka tree merged the 26 clusters of the TikTok profiles into 2.
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                    cluster_selection_method=method, core_dist_n_jobs=1, approx_min_span_tree=False)
    model.fit(embedding)
    return model.labels_.astype(np.int32), model.probabilities_.astype(np.float64)


def _clusterable(n: int, umap: dict, hdbscan: dict) -> bool:
    """Whether a group's sample of ``n`` rows is large enough for UMAP + HDBSCAN (else all noise)."""
    return n >= max(hdbscan["min_cluster_size"], umap["n_components"] + 2, 10)


def cluster_group(
    sample: pd.DataFrame, features: list[str], umap: dict, hdbscan: dict, seed: int,
    stability_fraction: float, offset_by_group: bool,
) -> pd.DataFrame:
    """UMAP + HDBSCAN on one group's sample, with a 2-D map and a stability score.

    The stage runs the stability refit as a task of its own (:func:`cluster_task`); this function
    does both in one process, with the same results.

    Parameters
    ----------
    sample : DataFrame
        ``entity_id``, ``group`` and the raw ``features`` of one group.
    features : list of str
    umap : dict
        ``n_neighbors``, ``min_dist``, ``n_components``, ``metric``, ``map_min_dist``, ``n_epochs``.
    hdbscan : dict
        ``min_cluster_size``, ``min_samples``, ``cluster_selection_method``.
    seed : int
        UMAP's ``random_state`` (seed + 1 and a subsample drawn with ``seed`` for stability).
    stability_fraction : float
        Share of rows reclustered to measure stability; 0 skips it (``stability_ari`` NaN).
    offset_by_group : bool
        Make ids ``group * 1000 + c`` so clusters of different groups never share an id.

    Returns
    -------
    DataFrame
        ``CLUSTERS_SCHEMA`` columns followed by the input features, one row per sampled entity.
    """
    started = pd.Timestamp.now()
    sample = sample.sort_values("entity_id", kind="stable").reset_index(drop=True)
    n, group = len(sample), int(sample["group"].iloc[0])
    out = sample[["entity_id", "group"]].copy()
    labels, strength = np.full(n, NOISE, dtype=np.int32), np.zeros(n)
    xy, stability = np.full((n, 2), np.nan), np.nan
    mcs, min_samples = hdbscan["min_cluster_size"], hdbscan.get("min_samples")
    method = hdbscan.get("cluster_selection_method", "eom")
    if _clusterable(n, umap, hdbscan):
        space = clustering_space(sample[features].to_numpy(dtype=np.float64))
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": single-threaded is intended
            warnings.simplefilter("ignore")
            embedding, reducer = _umap(space, umap, seed, umap["n_components"], umap["min_dist"])
            labels, strength = _hdbscan(embedding, mcs, min_samples, method)
            if umap["n_components"] == 2:
                xy = embedding
            else:  # reuse the neighbour graph: the map then costs only its layout
                knn = ((None, None, None) if getattr(reducer, "_small_data", True) else
                       (reducer._knn_indices, reducer._knn_dists, reducer._knn_search_index))
                xy, _ = _umap(space, umap, seed, 2, umap["map_min_dist"], knn)
            refit = _refit(space, umap, hdbscan, seed, stability_fraction)
        if refit is not None:
            stability = stability_score(labels[refit[0]], refit[1])
    if labels.max() >= GROUP_STRIDE:
        raise ValueError(f"group {group}: {labels.max() + 1} clusters, more than ids allow; "
                         f"raise density.hdbscan.min_cluster_size")
    if offset_by_group:
        labels = np.where(labels == NOISE, NOISE, group * GROUP_STRIDE + labels)
    out["cluster"], out["cluster_probability"] = labels, strength
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    out["stability_ari"] = stability
    out["fit_seconds"] = (pd.Timestamp.now() - started).total_seconds()
    return pd.concat([out, sample[features].astype(np.float64)], axis=1)


def _refit(space, umap, hdbscan, seed, fraction) -> tuple[np.ndarray, np.ndarray] | None:
    """The stability refit: (rows of ``space`` reclustered, their new labels), None when skipped."""
    size = int(round(len(space) * fraction))
    if fraction <= 0 or size < max(10, umap["n_components"] + 2):
        return None
    rows = np.sort(np.random.default_rng(seed).choice(len(space), size=size, replace=False))
    embedding, _ = _umap(space[rows], umap, seed + 1, umap["n_components"], umap["min_dist"])
    scale, min_samples = size / len(space), hdbscan.get("min_samples")
    again, _ = _hdbscan(embedding, max(2, round(hdbscan["min_cluster_size"] * scale)),
                        None if min_samples is None else max(1, round(min_samples * scale)),
                        hdbscan.get("cluster_selection_method", "eom"))
    return rows, again


def stability_score(labels: np.ndarray, again: np.ndarray) -> float:
    """Adjusted Rand index of two labelings of the same rows, noise (−1) counted as a label.

    Renaming labels without changing their order (the ``group * 1000 + c`` ids) changes nothing.

    Examples
    --------
    >>> stability_score(np.array([-1, 0, 0, 1, 1]), np.array([-1, 4, 4, 2, 2]))
    1.0
    """
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(labels, again))


def stability_labels(sample: pd.DataFrame, features: list[str], umap: dict, hdbscan: dict, seed: int,
                     stability_fraction: float) -> pd.DataFrame:
    """The stability refit of one group alone: ``entity_id``, ``group`` and ``cluster`` (the refit's
    label) of the subsample rows, the same rows and labels as :func:`cluster_group` compares
    (none when the group is too small or the fraction 0).

    It needs the whole group's sample: the clustering space is fitted on all of it.
    """
    sample = sample.sort_values("entity_id", kind="stable").reset_index(drop=True)
    refit = None
    if _clusterable(len(sample), umap, hdbscan):
        space = clustering_space(sample[features].to_numpy(dtype=np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit = _refit(space, umap, hdbscan, seed, stability_fraction)
    rows, again = refit if refit is not None else (np.arange(0), np.zeros(0, dtype=np.int32))
    return pd.DataFrame({"entity_id": sample["entity_id"].to_numpy()[rows],
                         "group": sample["group"].to_numpy()[rows], "cluster": again})


def cluster_task(
    rows: pd.DataFrame, features: list[str], umap: dict, hdbscan: dict, seed: int,
    stability_fraction: float, offset_by_group: bool,
) -> pd.DataFrame:
    """The stage's pandas UDF body: one group's main fit (``task`` 0) or its stability refit (1).

    Both get the whole group's sample. Task 0 returns :func:`cluster_group` without stability
    (``stability_ari`` dropped), task 1 the refit's labels from :func:`stability_labels` with the other
    columns NaN: ``TASK_SCHEMA`` columns and the features, ``fit_seconds`` the task's own time.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sample = pd.DataFrame({"entity_id": [f"e{i:03d}" for i in range(120)], "group": 0,
    ...                        "f0": np.r_[rng.normal(0, 1, 60), rng.normal(50, 1, 60)]})
    >>> settings = dict(features=["f0"], umap={"n_neighbors": 10, "min_dist": 0.0, "n_components": 2,
    ...     "metric": "euclidean", "map_min_dist": 0.1, "n_epochs": 50},
    ...     hdbscan={"min_cluster_size": 20}, seed=0, stability_fraction=0.5, offset_by_group=False)
    >>> main = cluster_task(sample.assign(task=0), **settings)
    >>> refit = cluster_task(sample.assign(task=1), **settings)
    >>> len(main), len(refit), bool(refit[["cluster_probability", "x", "f0"]].isna().all().all())
    (120, 60, True)
    >>> pairs = main.merge(refit, on="entity_id")
    >>> together = cluster_group(sample, **settings)
    >>> stability_score(pairs.cluster_x.to_numpy(), pairs.cluster_y.to_numpy()) == float(together.stability_ari[0])
    True
    """
    started, task = pd.Timestamp.now(), int(rows["task"].iloc[0])
    sample = rows.drop(columns="task")
    if task == MAIN:
        out = cluster_group(sample, features, umap, hdbscan, seed, 0.0, offset_by_group).drop(
            columns="stability_ari")
    else:
        out = stability_labels(sample, features, umap, hdbscan, seed, stability_fraction)
        for column in ("cluster_probability", "x", "y", *features):
            out[column] = np.nan
    out["task"] = task
    out["fit_seconds"] = (pd.Timestamp.now() - started).total_seconds()
    return out


def cluster_sample(sample: DataFrame, features: list[str], settings: DensityConfig,
                   sizes: dict[int, int]) -> DataFrame:
    """Spark wrapper: ``groupBy(group, task).applyInPandas(cluster_task)``, each group's main fit
    and stability refit (when ``stability_fraction`` > 0) a task of its own (:func:`apply_per_key`).

    ``sizes`` (group → sample rows) weighs the tasks: the main fit runs two UMAP layouts (one when
    the clustering embedding is the 2-D map), the refit one on a ``stability_fraction`` of the rows.
    """
    umap = settings.umap.model_dump()
    body = functools.partial(
        cluster_task, features=features, umap=umap,
        hdbscan=settings.hdbscan.model_dump(), seed=settings.seed,
        stability_fraction=settings.stability_fraction,
        offset_by_group=settings.group_by != "none")
    tasks = [MAIN, REFIT] if settings.stability_fraction > 0 else [MAIN]
    layouts = 1 if umap["n_components"] == 2 else 2
    weights = {(group, task): rows * (layouts if task == MAIN else settings.stability_fraction)
               for group, rows in sizes.items() if rows for task in tasks}
    columns = sample.select("entity_id", "group", *features,
                            F.explode(F.array(*[F.lit(t) for t in tasks])).alias("task"))
    schema = TASK_SCHEMA + "".join(f", `{f}` double" for f in features)
    return apply_per_key(columns, ["group", "task"], weights, body, schema)


def stability_scores(clustered: DataFrame) -> dict[int, tuple[float, float]]:
    """group → (``stability_ari``, seconds of the refit task), from :func:`cluster_sample`'s rows.

    Only the refit's subsample rows, with the main fit's label of each, come to the driver.
    """
    main = clustered.where(F.col("task") == MAIN).select("entity_id", "group", "cluster")
    refit = clustered.where(F.col("task") == REFIT).select(
        "entity_id", "group", F.col("cluster").alias("again"), F.col("fit_seconds").alias("seconds"))
    pairs = main.join(refit, ["entity_id", "group"]).toPandas()
    scores = {}
    for group, rows in pairs.groupby("group"):
        rows = rows.sort_values("entity_id", kind="stable")
        scores[int(group)] = (stability_score(rows["cluster"].to_numpy(), rows["again"].to_numpy()),
                              float(rows["seconds"].max()))
    return scores


def fit_surrogates(labelled: DataFrame, features: list[str], settings: DensityConfig,
                   sizes: dict[int, int]) -> pd.DataFrame:
    """One surrogate per group, one task per group spread over the cores (:func:`apply_per_key`,
    weighed by ``sizes``: group → sample rows); returns the small table of models (one row each)."""
    body = functools.partial(
        fit_surrogate, features=features, trees=settings.surrogate_trees,
        max_depth=settings.surrogate_max_depth,
        holdout_fraction=settings.surrogate_holdout_fraction, seed=settings.seed)
    columns = labelled.select("entity_id", "group", "cluster", *features)
    weights = {(group,): rows for group, rows in sizes.items() if rows}
    return apply_per_key(columns, ["group"], weights, body, SURROGATE_SCHEMA).toPandas()


# ---------------------------------------------------------------- the stage


def density(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Cluster a bounded sample with UMAP + HDBSCAN and assign every entity with a surrogate.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
        Uses ``density`` (sample, UMAP, HDBSCAN, stability, surrogate) and the table layout.
    run_id : str
        Keys ``gold/clusters``, ``gold/cluster_quality`` and ``models/<run_id>/``; a re-run replaces
        this run's rows.

    Returns
    -------
    StageResult
        ``details``: ``groups`` (per-group quality rows), ``features``, ``model_files``,
        ``sample_rows`` and ``seconds`` per phase.
    """
    settings, tables = config.density, Tables.of(config)
    entities = read_delta(spark, tables.entities, "features")
    features = feature_columns(entities)
    if not features:
        raise SeglakeError(f"{tables.entities} has no numeric feature columns besides entity_id")
    population = grouped_population(spark, config, run_id, entities, features)
    sample, counts = stratified_sample(population, "group", settings.sample_size, settings.seed)
    sizes = allocate(counts, settings.sample_size)  # the sample's rows per group, to weigh its tasks
    clustered = cluster_sample(sample, features, settings, sizes).persist(StorageLevel.MEMORY_AND_DISK)
    labelled = clustered.where(F.col("task") == MAIN).drop("task")
    seconds, started = {}, time.monotonic()
    try:
        sampled_rows = labelled.count()
        stability = stability_scores(clustered) if settings.stability_fraction > 0 else {}
        seconds["sample_and_cluster"] = time.monotonic() - started
        surrogates = fit_surrogates(labelled, features, settings, sizes)
        seconds["surrogate"] = time.monotonic() - started - seconds["sample_and_cluster"]
        quality = _quality(labelled, surrogates, counts, stability)
        files, models, listed = _model_files(surrogates, settings.group_by)
        manifest = write_manifest(
            spark, tables.models(run_id),
            {"features": features, "group_by": settings.group_by, "models": listed,
             "groups": {str(g): classes for g, (_, classes) in models.items()},
             "settings": settings.model_dump(),
             "sweep_clustering_sha256": _sweep_checksum(spark, tables, run_id)},
            files=files, manifest=MANIFEST)
        assign_started = time.monotonic()
        clusters = label_population(assign(population, models, features), labelled, run_id)
        write_run(clusters, tables.gold("clusters"), run_id)
        seconds["assign_and_write"] = time.monotonic() - assign_started
        quality_rows = quality.assign(run_id=run_id)[[c.split()[0] for c in QUALITY_SCHEMA.split(", ")]]
        write_run(spark.createDataFrame(quality_rows, QUALITY_SCHEMA), tables.gold("cluster_quality"), run_id)
    finally:
        clustered.unpersist()
    population_rows = sum(counts.values())
    return StageResult(
        "density", population_rows, population_rows,
        details={"groups": quality.to_dict("records"), "features": features,
                 "model_files": manifest["files"], "sample_rows": sampled_rows, "seconds": seconds},
        message=_summary(quality, sampled_rows))


def _sweep_checksum(spark: SparkSession, tables: Tables, run_id: str) -> str | None:
    """The checksum of the run's saved clustering model (None before any sweep of the run)."""
    folder = tables.models(run_id)
    if not path_exists(spark, f"{folder}/{RUN_MANIFEST}"):
        return None
    return read_manifest(spark, folder)["files"].get(CLUSTERING)


def label_population(assigned: DataFrame, labelled: DataFrame, run_id: str) -> DataFrame:
    """``gold/clusters`` rows: sampled entities keep their HDBSCAN label, strength and map position;
    the rest keep the surrogate's label and class probability, with ``x, y`` null.

    Examples
    --------
    >>> assigned = spark.createDataFrame([("a", 0, 3, 0.8), ("b", 0, 4, 0.6)],
    ...     "entity_id string, group int, cluster int, cluster_probability double")
    >>> labelled = spark.createDataFrame([("a", 3, 0.95, 1.0, 2.0)],
    ...     "entity_id string, cluster int, cluster_probability double, x double, y double")
    >>> [tuple(row) for row in label_population(assigned, labelled, "r1").orderBy("entity_id").collect()]
    [('r1', 'a', 0, 3, 0.95, True, 1.0, 2.0), ('r1', 'b', 0, 4, 0.6, False, None, None)]
    """
    sampled = labelled.select("entity_id", F.col("cluster").alias("_cluster"),
                              F.col("cluster_probability").alias("_probability"), "x", "y")
    # the sample is bounded (density.sample_size rows), so broadcasting it avoids shuffling everyone
    return assigned.join(F.broadcast(sampled), "entity_id", "left").select(
        F.lit(run_id).alias("run_id"), "entity_id", "group",
        F.coalesce("_cluster", "cluster").alias("cluster"),
        F.coalesce("_probability", "cluster_probability").alias("cluster_probability"),
        F.col("_cluster").isNotNull().alias("in_sample"), "x", "y")


def _quality(labelled: DataFrame, surrogates: pd.DataFrame, counts: dict[int, int],
             stability: dict[int, tuple[float, float]]) -> pd.DataFrame:
    """One row per group; ``fit_seconds`` is the slower of the group's main fit and stability refit
    (they run side by side), ``stability_ari`` NaN where it was not measured."""
    per_group = labelled.groupBy("group").agg(
        F.count("*").alias("sample_rows"),
        F.countDistinct(F.when(F.col("cluster") != NOISE, F.col("cluster"))).alias("clusters"),
        F.avg((F.col("cluster") == NOISE).cast("double")).alias("noise_share"),
        F.max("fit_seconds").alias("fit_seconds")).toPandas()
    refit = per_group["group"].map(lambda g: stability.get(int(g), (np.nan, np.nan)))
    per_group.insert(4, "stability_ari", refit.map(lambda r: r[0]).astype("float64"))
    per_group["fit_seconds"] = np.fmax(per_group["fit_seconds"], refit.map(lambda r: r[1]).astype("float64"))
    quality = per_group.merge(surrogates[["group", "fidelity", "fidelity_clustered"]], on="group")
    quality.insert(1, "population", quality["group"].map(counts).astype("int64"))
    return quality.sort_values("group").reset_index(drop=True)


def _model_files(surrogates: pd.DataFrame, group_by: str):
    """Files to save (name → XGBoost JSON), models to broadcast (group → (bytes, classes)) and
    what the manifest says about each file."""
    files, models, listed = {}, {}, {}
    for row in surrogates.itertuples():
        raw = None if row.model is None else bytes(row.model)
        models[int(row.group)] = (raw, json.loads(row.classes))
        if raw is not None:
            name = "surrogate.json" if group_by == "none" else f"surrogate-{group_by}-{row.group}.json"
            files[name] = raw
            listed[name] = {"group": int(row.group), "classes": json.loads(row.classes)}
    return files, models, listed


def _summary(quality: pd.DataFrame, sampled_rows: int) -> str:
    weights = quality["sample_rows"] / quality["sample_rows"].sum()
    noise = float((quality["noise_share"] * weights).sum())
    worst = quality["stability_ari"].min()
    stability = "not measured" if np.isnan(worst) else f"{worst:.2f} (worst group)"
    return (f"{len(quality)} group(s), {int(quality['clusters'].sum())} clusters on a "
            f"{sampled_rows:,}-row sample, noise {noise:.1%}, stability ARI {stability}, "
            f"surrogate fidelity {quality['fidelity'].min():.3f} (worst group)")


def worker_numba_cache(spark: SparkSession) -> str | None:
    """The ``NUMBA_CACHE_DIR`` a Python worker sees (UMAP's compiled kernels are cached there)."""
    def probe(batches):
        for _ in batches:
            yield pd.DataFrame({"cache": [os.environ.get("NUMBA_CACHE_DIR")]})

    return spark.range(1).mapInPandas(probe, "cache string").head()[0]
