"""Density clusters: UMAP + HDBSCAN on a bounded sample per group, a surrogate for everyone else.

Steps of :func:`density` (config section ``density``):

1. Groups: the whole population (``group_by: none``, group 0) or each KMeans segment of this run
   (``group_by: segment``: the entities the sweep kept, labelled by the clustering model it saved;
   the others are left out).
2. A stratified random sample of at most ``sample_size`` rows in total: the budget is shared
   equally between groups, a group smaller than its share is taken whole and its unused share goes
   to the others. Rows are chosen by a hash of ``(seed, entity_id)``, so the same table and seed
   give the same sample however Spark partitions it.
3. The settings to try per group (:func:`~seglake.segmentation.stability.grid_settings`): the
   pinned ``umap.n_neighbors`` / ``hdbscan.min_cluster_size``, or for each one left out its grid
   (``grid_neighbors``; ``grid_cluster_shares`` of the group's sample rows).
4. Embedding, one task per (group, ``n_neighbors``, task) spread over the cores
   (:func:`apply_per_key`, :func:`~seglake.segmentation.density_fit.embed_task`): the clustering
   space is sign(x)·log1p(|x|) of every numeric feature, nulls set to the group's median, then
   standard scaling, fitted on the group's sample inside the UDF (density runs without the prepare
   stage); UMAP (``density.umap``) embeds it, and the UMAP refit (seed + 1, on a
   ``stability_fraction`` subset) runs as a task of its own beside it. The picture's ``x, y`` (a
   2-D layout with ``map_min_dist``) is laid out in step 6, for the chosen ``n_neighbors`` only.
5. Stability, one task per (group, setting, chunk of refits)
   (:func:`~seglake.segmentation.density_fit.resample_task`): HDBSCAN (``density.hdbscan``) on the
   main embedding, then ``stability_resamples`` HDBSCAN refits on random ``stability_fraction``
   subsets of that embedding and one on the UMAP refit's; each cluster's stability is the mean
   over those refits of its best Jaccard (Hennig's cluster-wise stability,
   :mod:`seglake.segmentation.stability`); the UMAP refit also gives the setting's
   ``stability_ari``. Only a few rows per cluster reach the driver. With more than one setting,
   every setting first runs ``screen_resamples`` refits (and the UMAP refit), the rule chooses on
   them, and only the chosen setting's tasks run the remaining refits
   (:func:`~seglake.segmentation.density_fit.choose_by_screening`).
6. The choice (:func:`~seglake.segmentation.density_fit.decide`, one printed line per group): a
   pinned setting, or the rule of :func:`~seglake.segmentation.stability.choose_setting` (highest
   mean stability among settings with ``min_coverage`` of the sample in 2 to ``max_clusters``
   stable clusters). Clusters under ``min_stability`` are unstable: with ``unstable: merge`` they
   join the stable cluster with the nearest centroid in the embedding (noise when none is
   stable), with ``noise`` they become noise. HDBSCAN runs again per group at the chosen setting
   (:func:`~seglake.segmentation.density_fit.label_task`; beside it, in a task of its own, the 2-D
   map: :func:`~seglake.segmentation.density_fit.map_task`) and the merge is applied before anything
   learns the labels, so the surrogate, ``gold/clusters``, explain, ``seglake score`` and the
   served segmenter all see the same final clusters. With groups, cluster ids are
   ``group * 1000 + c`` (noise stays −1).
7. A surrogate XGBoost per group (:mod:`seglake.segmentation.surrogate`), one task per group again,
   learns the sample's final labels from the raw features, its held-out accuracy is the
   ``fidelity``, and a pandas UDF assigns every entity.
8. With ``density.depth`` above 1 (seed 004's recursion), steps 2-7 run again level by level with
   the stable clusters of more than ``density.min_split_size`` entities as the groups, each
   re-embedded on its own members; a split is kept only when stable and carried by its surrogate
   (:mod:`seglake.segmentation.density_levels`). At depth 1 (the default) nothing of it runs.

Writes ``gold/clusters`` (one row per entity; sampled rows keep their HDBSCAN label, membership
strength and ``x, y``; the others get the surrogate's label and class probability, ``x, y`` null;
``cluster_path`` is the cluster id as text, and with depth > 1 the deepest node, ``"3.1"``, beside
``cluster_2`` ..; the small tables below have ``level`` and ``parent``),
``gold/cluster_quality`` (one row per group), ``gold/cluster_stability`` (one row per HDBSCAN
cluster of the chosen setting: ``size``, ``jaccard``, ``stable``, ``merged_into``),
``gold/density_sweep`` (one row per group and setting tried: clusters, noise, coverage, mean and
lowest Jaccard, ``chosen`` and the rule's ``reason``) and ``models/<run_id>/surrogate*.json`` with
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
from dataclasses import dataclass

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
from seglake.core.run_cache import entity_snapshot
from seglake.core.tables import Tables, write_run
from seglake.segmentation.density_levels import at_level, grow
from seglake.segmentation.density_fit import (LABEL_SCHEMA, MAIN, MAP_SCHEMA, REFIT, choose_by_screening,
                                              embed_schema, embed_task, label_task, map_task, merges,
                                              resample_schema, resample_task)
from seglake.segmentation.segment import kept_entities, label_segments, load_swept
from seglake.segmentation.stability import chunks_for, grid_settings
from seglake.segmentation.tasks import apply_per_key
from seglake.segmentation.surrogate import NOISE, SURROGATE_SCHEMA, assign, fit_surrogate

MANIFEST = DENSITY_MANIFEST
NUMERIC = (T.DoubleType, T.FloatType, T.IntegerType, T.LongType, T.ShortType, T.DecimalType)
QUALITY_SCHEMA = ("run_id string, group int, population long, sample_rows long, clusters long, "
                  "noise_share double, stability_ari double, n_neighbors int, min_cluster_size int, "
                  "hdbscan_clusters long, unstable_clusters long, mean_jaccard double, min_jaccard double, "
                  "fit_seconds double, fidelity double, fidelity_clustered double, level int, parent string, "
                  "split_kept boolean, split_reason string")
STABILITY_SCHEMA = ("run_id string, group int, hdbscan_cluster int, size long, jaccard double, refits long, "
                    "stable boolean, merged_into int, n_neighbors int, min_cluster_size int, level int, "
                    "parent string")
DENSITY_SWEEP_SCHEMA = ("run_id string, group int, n_neighbors int, min_cluster_size int, sample_rows long, "
                        "clusters long, stable_clusters long, noise_share double, coverage double, "
                        "mean_jaccard double, min_jaccard double, stability_ari double, seconds double, "
                        "chosen boolean, reason string, level int, parent string, refits long")


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


# ---------------------------------------------------------------- clustering (Spark wiring)


def embed_sample(sample: DataFrame, features: list[str], settings: DensityConfig,
                 grids: dict[int, list[tuple[int, int]]], sizes: dict[int, int]) -> DataFrame:
    """Each group's main embedding and UMAP refit at each ``n_neighbors`` of its grid, one task each
    (:func:`~seglake.segmentation.density_fit.embed_task` through :func:`apply_per_key`)."""
    umap = settings.umap.model_dump()
    tasks = [MAIN, REFIT] if settings.stability_fraction > 0 else [MAIN]
    layouts = 1 if umap["n_components"] == 2 else 2
    neighbors = [(group, n) for group, grid in grids.items() for n in dict.fromkeys(n for n, _ in grid)]
    plan = sample.sparkSession.createDataFrame(
        [(g, n, t) for g, n in neighbors for t in tasks], "group int, n_neighbors int, task int")
    weights = {(g, n, t): sizes[g] * (layouts if t == MAIN else settings.stability_fraction)
               for g, n in neighbors for t in tasks}
    body = functools.partial(embed_task, features=features, umap=umap, seed=settings.seed,
                             stability_fraction=settings.stability_fraction)
    rows = sample.select("entity_id", "group", *features).join(F.broadcast(plan), "group")
    return apply_per_key(rows, ["group", "n_neighbors", "task"], weights, body,
                         embed_schema(umap["n_components"]))


def resample_settings(embedded: DataFrame, settings: DensityConfig, grids: dict[int, list[tuple[int, int]]],
                      sizes: dict[int, int], resamples: int, first: int = 1) -> pd.DataFrame:
    """Every setting's clusters and Jaccard sums of refits ``first`` .. ``resamples``
    (``resample_schema`` rows, small), each setting's refits split into
    :func:`~seglake.segmentation.stability.chunks_for` tasks."""
    spark = embedded.sparkSession
    points = [(g, n, m) for g, grid in grids.items() for n, m in grid]
    runs = resamples - first + 1
    chunks = chunks_for(len(points), runs, spark.sparkContext.defaultParallelism)
    plan = spark.createDataFrame([(*p, c) for p in points for c in range(chunks)],
                                 "group int, n_neighbors int, min_cluster_size int, chunk int")
    umap_refit = first == 1
    weights = {(g, n, m, c): sizes[g] * (1 + settings.stability_fraction * (runs / chunks + (umap_refit and c == 0)))
               for g, n, m in points for c in range(chunks)}
    body = functools.partial(resample_task, hdbscan=settings.hdbscan.model_dump(), seed=settings.seed,
                             stability_fraction=settings.stability_fraction,
                             resamples=resamples, chunks=chunks, first=first)
    rows = embedded.drop("x", "y", "seconds").join(F.broadcast(plan), ["group", "n_neighbors"])
    return apply_per_key(rows, ["group", "n_neighbors", "min_cluster_size", "chunk"], weights, body,
                         resample_schema(settings.umap.n_components)).toPandas()


def choose_settings(embedded: DataFrame, settings: DensityConfig, grids: dict[int, list[tuple[int, int]]],
                    sizes: dict[int, int], offset_by_group: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The settings' figures and each group's chosen setting and clusters (:func:`resample_settings`
    screened by :func:`~seglake.segmentation.density_fit.choose_by_screening`)."""
    def resample(some: dict[int, list[tuple[int, int]]], resamples: int, first: int) -> pd.DataFrame:
        return resample_settings(embedded, settings, some, sizes, resamples, first)

    return choose_by_screening(resample, grids, settings.model_dump(), offset_by_group)


def label_sample(embedded: DataFrame, sample: DataFrame, features: list[str], settings: DensityConfig,
                 sweep: pd.DataFrame, clusters: pd.DataFrame, sizes: dict[int, int],
                 offset_by_group: bool) -> DataFrame:
    """Each group's final labels at its chosen setting, with the raw features (for the surrogate)."""
    chosen = sweep[sweep["chosen"]]
    body = functools.partial(
        label_task, hdbscan=settings.hdbscan.model_dump(),
        chosen={int(r.group): int(r.min_cluster_size) for r in chosen.itertuples()},
        merged=merges(clusters, offset_by_group), offset_by_group=offset_by_group)
    picked = embedded.sparkSession.createDataFrame(
        [(int(r.group), int(r.n_neighbors)) for r in chosen.itertuples()], "group int, n_neighbors int")
    rows = embedded.where(F.col("task") == MAIN).join(F.broadcast(picked), ["group", "n_neighbors"])
    weights = {(g,): w for g, w in sizes.items() if w}
    labels = apply_per_key(rows, ["group"], weights, body, LABEL_SCHEMA)
    if settings.umap.n_components != 2:  # the picture's map, at the chosen n_neighbors only
        laid_out = apply_per_key(
            sample.select("entity_id", "group", *features).join(F.broadcast(picked), "group"), ["group"],
            weights, functools.partial(map_task, features=features, umap=settings.umap.model_dump(),
                                       seed=settings.seed), MAP_SCHEMA)
        labels = labels.drop("x", "y").join(laid_out, "entity_id")
    return labels.join(sample.select("entity_id", *features), "entity_id")


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


@dataclass
class LevelFit:
    """One level's clustering of its groups: the labelled sample (persisted, with the raw features)
    and the small tables of :func:`fit_level`."""

    labelled: DataFrame
    surrogates: pd.DataFrame
    sweep: pd.DataFrame
    stability: pd.DataFrame
    counts: dict[int, int]
    sampled_rows: int
    seconds: dict[str, float]


def fit_level(population: DataFrame, features: list[str], settings: DensityConfig, offset_by_group: bool,
              numbering=None) -> LevelFit:
    """Steps 2-7 of the stage for every group of ``population`` (``entity_id``, ``group``, features):
    sample, embed, resample, choose, label and fit one surrogate per group.

    ``numbering`` (clusters → clusters), when given, rewrites ``merged_into`` of the chosen
    settings' clusters before the labels are drawn (child levels number their clusters 1, 2, ...).
    The caller unpersists ``labelled``.
    """
    sample, counts = stratified_sample(population, "group", settings.sample_size, settings.seed)
    sizes = allocate(counts, settings.sample_size)  # the sample's rows per group, to weigh its tasks
    grids = {group: grid_settings(rows, settings.umap.n_neighbors, settings.hdbscan.min_cluster_size,
                                  settings.grid_neighbors, settings.grid_cluster_shares)
             for group, rows in sizes.items() if rows}
    sample = sample.persist(StorageLevel.MEMORY_AND_DISK)
    embedded = embed_sample(sample, features, settings, grids, sizes).persist(StorageLevel.MEMORY_AND_DISK)
    seconds, started = {}, time.monotonic()
    try:
        sweep, stability = choose_settings(embedded, settings, grids, sizes, offset_by_group)
        if numbering is not None:
            stability = numbering(stability)
        seconds["embed_and_resample"] = time.monotonic() - started
        labelled = label_sample(embedded, sample, features, settings, sweep, stability, sizes,
                                offset_by_group).persist(StorageLevel.MEMORY_AND_DISK)
        sampled_rows = labelled.count()
        surrogates = fit_surrogates(labelled, features, settings, sizes)
        seconds["label_and_surrogate"] = time.monotonic() - started - seconds["embed_and_resample"]
    finally:
        embedded.unpersist()
        sample.unpersist()
    return LevelFit(labelled, surrogates, sweep, stability, counts, sampled_rows, seconds)


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
    entities, _ = entity_snapshot(spark, tables.entities, "features")
    features = feature_columns(entities)
    if not features:
        raise SeglakeError(f"{tables.entities} has no numeric feature columns besides entity_id")
    population = grouped_population(spark, config, run_id, entities, features)
    fit = fit_level(population, features, settings, settings.group_by != "none")
    first = _quality(fit.labelled, fit.surrogates, fit.counts, fit.sweep, fit.stability)
    quality, stability, sweep, seconds = first, fit.stability, fit.sweep, dict(fit.seconds)
    files, models, listed = _model_files(fit.surrogates, settings.group_by)
    assign_started = time.monotonic()
    clusters = label_population(assign(population, models, features), fit.labelled, run_id)
    tree = None
    try:
        if settings.depth > 1:
            clusters = clusters.persist(StorageLevel.MEMORY_AND_DISK)  # the levels below read it again
            tree = grow(population, clusters, stability, features, settings, fit_level, _quality)
            clusters = tree.columns(clusters)
            files.update(tree.files)
            quality, stability, sweep = tree.tables(quality, stability, sweep)
            seconds["levels"] = tree.seconds
        else:
            clusters = clusters.withColumn("cluster_path", F.col("cluster").cast("string"))
            quality, stability, sweep = (at_level(table, 1) for table in (quality, stability, sweep))
        manifest = write_manifest(
            spark, tables.models(run_id),
            {"features": features, "group_by": settings.group_by, "models": listed,
             "groups": {str(g): classes for g, (_, classes) in models.items()},
             "settings": settings.model_dump(),
             "chosen": {str(int(r.group)): {"n_neighbors": int(r.n_neighbors),
                                            "min_cluster_size": int(r.min_cluster_size), "reason": r.reason}
                        for r in fit.sweep[fit.sweep["chosen"]].itertuples()},
             "depth": settings.depth, "levels": {} if tree is None else tree.manifest(),
             "sweep_clustering_sha256": _sweep_checksum(spark, tables, run_id)},
            files=files, manifest=MANIFEST)
        write_run(clusters, tables.gold("clusters"), run_id)
    finally:
        fit.labelled.unpersist()
        if tree is not None:
            tree.unpersist()
            clusters.unpersist()
    seconds["assign_and_write"] = time.monotonic() - assign_started
    _write_small(spark, quality, QUALITY_SCHEMA, tables.gold("cluster_quality"), run_id)
    _write_small(spark, stability, STABILITY_SCHEMA, tables.gold("cluster_stability"), run_id)
    _write_small(spark, sweep, DENSITY_SWEEP_SCHEMA, tables.gold("density_sweep"), run_id)
    population_rows = sum(fit.counts.values())
    reasons = [f"group {int(r.group)}: {r.reason}" if settings.group_by != "none" else r.reason
               for r in fit.sweep[fit.sweep["chosen"]].itertuples()]
    summary = [_summary(first, fit.sampled_rows), *(f"  settings: {r}" for r in reasons)]
    if tree is not None:
        summary += tree.summary()
    return StageResult(
        "density", population_rows, population_rows,
        details={"groups": quality.to_dict("records"), "features": features,
                 "clusters": stability.drop(columns=[c for c in stability if c[:1] == "c" and c[1:].isdigit()]
                                            ).to_dict("records"),
                 "sweep": sweep.to_dict("records"), "reasons": reasons,
                 "splits": [] if tree is None else tree.verdicts,
                 "model_files": manifest["files"], "sample_rows": fit.sampled_rows, "seconds": seconds},
        message="\n".join(summary))


def _write_small(spark: SparkSession, rows: pd.DataFrame, schema: str, table: str, run_id: str) -> None:
    """Write a driver-side table (a few rows per group) for ``run_id`` in the columns of ``schema``."""
    columns = [c.split()[0] for c in schema.split(", ")]
    plain = [tuple(None if v is None or (isinstance(v, float) and math.isnan(v)) else
                   (v.item() if hasattr(v, "item") else v) for v in row)
             for row in rows.assign(run_id=run_id).reindex(columns=columns).itertuples(index=False)]
    write_run(spark.createDataFrame(plain, schema), table, run_id)


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


def _quality(labelled: DataFrame, surrogates: pd.DataFrame, counts: dict[int, int], sweep: pd.DataFrame,
             stability: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its final clusters and noise, the chosen setting and its stability figures,
    ``fit_seconds`` (the chosen setting's clustering tasks: the slowest chunk of its refits and the
    final labelling) and the surrogate's fidelity."""
    per_group = labelled.groupBy("group").agg(
        F.count("*").alias("sample_rows"),
        F.countDistinct(F.when(F.col("cluster") != NOISE, F.col("cluster"))).alias("clusters"),
        F.avg((F.col("cluster") == NOISE).cast("double")).alias("noise_share"),
        F.max("seconds").alias("label_seconds")).toPandas()
    chosen = sweep[sweep["chosen"]][["group", "n_neighbors", "min_cluster_size", "stability_ari", "seconds",
                                     "mean_jaccard", "min_jaccard"]]
    raw = stability.groupby("group").agg(
        hdbscan_clusters=("hdbscan_cluster", "size"),
        unstable_clusters=("stable", lambda s: int(sum(v is False for v in s)))).reset_index()
    quality = (per_group.merge(chosen, on="group").merge(raw, on="group", how="left")
               .merge(surrogates[["group", "fidelity", "fidelity_clustered"]], on="group"))
    quality[["hdbscan_clusters", "unstable_clusters"]] = (
        quality[["hdbscan_clusters", "unstable_clusters"]].fillna(0).astype("int64"))
    quality["fit_seconds"] = quality["seconds"] + quality["label_seconds"]
    quality.insert(1, "population", quality["group"].map(counts).astype("int64"))
    return quality.drop(columns=["seconds", "label_seconds"]).sort_values("group").reset_index(drop=True)


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
    worst, jaccard = quality["stability_ari"].min(), quality["min_jaccard"].min()
    stability = ("not measured" if np.isnan(worst) else
                 f"ARI {worst:.2f}, lowest cluster Jaccard {jaccard:.2f} (worst group)")
    return (f"{len(quality)} group(s), {int(quality['clusters'].sum())} clusters on a "
            f"{sampled_rows:,}-row sample ({int(quality['unstable_clusters'].sum())} of "
            f"{int(quality['hdbscan_clusters'].sum())} HDBSCAN clusters unstable), noise {noise:.1%}, "
            f"stability {stability}, surrogate fidelity {quality['fidelity'].min():.3f} (worst group)")


def worker_numba_cache(spark: SparkSession) -> str | None:
    """The ``NUMBA_CACHE_DIR`` a Python worker sees (UMAP's compiled kernels are cached there)."""
    def probe(batches):
        for _ in batches:
            yield pd.DataFrame({"cache": [os.environ.get("NUMBA_CACHE_DIR")]})

    return spark.range(1).mapInPandas(probe, "cache string").head()[0]
