"""Label every kept entity with its segment at the chosen k, and describe each segment.

The segment stage applies the model the sweep chose and saved (to the same rows of
``silver/entities`` at the version the sweep read, through its filter and saved transform), joins
the run's density clusters when the density stage ran on that very sweep, and writes:

- ``gold/segments`` (partitioned by ``run_id``, ``segment``): ``run_id, entity_id, segment,
  distance, cluster, cluster_probability, x, y, model_run, in_training_filter`` — ``distance`` is
  the Euclidean distance to the segment's center in the transformed (log1p, scaled) space, a "how
  typical" score; ``cluster`` .. ``y`` come from the density stage's ``gold/clusters`` (null
  without one); ``model_run``
  is the run itself and ``in_training_filter`` true (scoring runs, :mod:`seglake.segmentation.score`, write
  the same columns with the model's run and the filter's verdict);
- ``gold/profiles`` (partitioned by ``run_id``), long format so any feature set fits: ``run_id,
  segment, size, share, feature, mean, median, p10, p90`` — the seed's centers table with its
  "Number of people", in original units (before log1p and scaling). Quantiles are
  ``percentile_approx`` with accuracy 100,000 (rank error at most 0.001% of the segment); nulls are
  left out of a feature's statistics (they describe observed values, not imputed ones);
- ``gold/segment_stability`` (``run_id, segment, sample_rows, jaccard, refits, stable``): each
  segment's cluster-wise stability over scikit-learn KMeans refits (:func:`segment_stability`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import BisectingKMeansModel, GaussianMixtureModel, KMeansModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from seglake.core.artifacts import (
    CLUSTERING,
    DENSITY_MANIFEST,
    MANIFEST,
    TRANSFORM,
    load_model,
    path_exists,
    read_manifest,
)
from seglake.core.config import FilterConfig, SeglakeConfig, SweepConfig
from seglake.core.errors import SeglakeError, first_line
from seglake.core.stages import StageResult
from seglake.core.run_cache import entity_snapshot
from seglake.core.tables import Tables, read_run, record_run, write_run
from seglake.segmentation.prepare import ENTITY_ID, FEATURES, filter_condition
from seglake.segmentation.stability import chunks_for, kmeans_refit_task
from seglake.segmentation.sweep import PREDICTION, cluster_centers, stable_layout
from seglake.segmentation.tasks import apply_per_key

QUANTILE_ACCURACY = 100_000
PROFILE_COLUMNS = ["run_id", "segment", "size", "share", "feature", "mean", "median", "p10", "p90"]
REFIT_SCHEMA = "chunk int, segment int, sample_rows long, jaccard_sum double, refits long"
STABILITY_SCHEMA = "run_id string, segment int, sample_rows long, jaccard double, refits long, stable boolean"


def assigned_distance(x: Column, prediction: Column, centers: list[list[float]]) -> Column:
    """Euclidean distance from array column ``x`` to the center of its assigned segment.

    A pandas UDF (numpy on Arrow batches), so ``x`` (usually ``vector_to_array`` of the features) is
    evaluated once per row and nothing is generated per center or dimension: the plan's size no
    longer grows with k x d (the sweep's term-by-term distances stopped compiling at MovieLens' 44
    features from k = 16), and a ``CASE WHEN`` per center evaluated ``x`` k x d times.

    Examples
    --------
    >>> rows = spark.createDataFrame([([3.0, 4.0], 0), ([1.0, 1.0], 1)],
    ...                              "x array<double>, prediction int")
    >>> distance = assigned_distance(F.col("x"), F.col("prediction"), [[0.0, 0.0], [1.0, 2.0]])
    >>> [row.d for row in rows.select(distance.alias("d")).collect()]
    [5.0, 1.0]
    """
    table = np.asarray(centers, dtype=np.float64)

    @F.pandas_udf("double")
    def distance(arrays: pd.Series, assigned: pd.Series) -> pd.Series:
        if not len(arrays):
            return pd.Series([], dtype="float64")
        points = np.stack(arrays.to_numpy())
        nearest = table[assigned.to_numpy(dtype=np.int64)]
        return pd.Series(np.sqrt(((points - nearest) ** 2).sum(axis=1)), index=arrays.index)

    return distance(x, prediction.cast("int"))


def profile(labelled: DataFrame, features: list[str], kept: int) -> DataFrame:
    """Per segment and raw feature: ``size, share, feature, mean, median, p10, p90`` (long format).

    Parameters
    ----------
    labelled : DataFrame
        Kept entities with their raw feature columns and ``segment``.
    features : list of str
        Raw numeric features to describe.
    kept : int
        Entities labelled, the denominator of ``share``.

    Returns
    -------
    DataFrame
        ``segment, size, share, feature, mean, median, p10, p90``; one row per segment and feature.

    Examples
    --------
    >>> labelled = spark.createDataFrame([(0, 1.0), (0, 3.0), (1, 10.0), (0, 2.0)],
    ...                                  "segment int, likes double")
    >>> [tuple(row) for row in profile(labelled, ["likes"], kept=4).orderBy("segment").collect()]
    [(0, 3, 0.75, 'likes', 2.0, 2.0, 1.0, 3.0), (1, 1, 0.25, 'likes', 10.0, 10.0, 10.0, 10.0)]
    """
    aggregates = [F.count(F.lit(1)).alias("size")]
    for index, name in enumerate(features):
        value = F.col(name).cast("double")
        aggregates += [F.avg(value).alias(f"mean_{index}"),
                       F.percentile_approx(value, [0.1, 0.5, 0.9], QUANTILE_ACCURACY).alias(f"q_{index}")]
    wide = labelled.groupBy("segment").agg(*aggregates)
    per_feature = F.array(*[
        F.struct(F.lit(name).alias("feature"), F.col(f"mean_{i}").alias("mean"),
                 F.col(f"q_{i}")[1].alias("median"), F.col(f"q_{i}")[0].alias("p10"),
                 F.col(f"q_{i}")[2].alias("p90"))
        for i, name in enumerate(features)
    ])
    return wide.select(
        "segment", "size", (F.col("size") / F.lit(kept)).alias("share"), F.explode(per_feature).alias("p")
    ).select("segment", "size", "share", "p.*")


def profile_lines(rows: list, features: list[str]) -> str:
    """The seed's centers table as text: one line per segment with its size and feature means.

    Examples
    --------
    >>> rows = [{"segment": 1, "size": 250, "share": 0.25, "feature": "likes", "mean": 12.5},
    ...         {"segment": 0, "size": 750, "share": 0.75, "feature": "likes", "mean": None}]
    >>> print(profile_lines(rows, ["likes"]))
      segment 0: 750 (75.0%) — mean likes -
      segment 1: 250 (25.0%) — mean likes 12.5
    """
    by_segment: dict[int, dict] = {}
    for row in rows:
        entry = by_segment.setdefault(row["segment"],
                                      {"size": row["size"], "share": row["share"], "mean": {}})
        entry["mean"][row["feature"]] = row["mean"]
    lines = []
    for segment in sorted(by_segment):
        entry = by_segment[segment]
        means = ", ".join(f"{f} {entry['mean'][f]:.4g}" if entry["mean"].get(f) is not None else f"{f} -"
                          for f in features)
        lines.append(f"  segment {segment}: {entry['size']:,} ({entry['share']:.1%}) — mean {means}")
    return "\n".join(lines)


MODEL_CLASSES = {
    "kmeans": KMeansModel,
    "bisecting_kmeans": BisectingKMeansModel,
    "gaussian_mixture": GaussianMixtureModel,
}


@dataclass(frozen=True)
class SweptModel:
    """What the sweep of a run saved: its manifest details, checksums, transform and clustering."""

    run_id: str
    details: dict
    files: dict
    transform: PipelineModel
    clustering: object

    @property
    def k(self) -> int:
        return int(self.details["clustering"]["k"])

    @property
    def algorithm(self) -> str:
        return str(self.details["clustering"]["algorithm"])

    @property
    def features(self) -> list[str]:
        return list(self.details["features"])


def load_swept(spark: SparkSession, tables: Tables, run_id: str) -> SweptModel:
    """Load a run's manifest, transform and clustering model, each checked against its sha256.

    Raises
    ------
    SeglakeError
        The sweep has not run for ``run_id``, or ran before it fitted the chosen k (run it again).
    """
    folder = tables.models(run_id)
    if not path_exists(spark, f"{folder}/{MANIFEST}"):
        raise SeglakeError(f"no manifest at {folder}/{MANIFEST}: run the sweep stage first for run {run_id}")
    body = read_manifest(spark, folder)
    details = body["details"]
    if "clustering" not in details or CLUSTERING not in body["files"]:
        raise SeglakeError(f"{folder}/manifest.json has no clustering model: run the sweep stage "
                           f"again for run {run_id}")
    transform = load_model(spark, folder, TRANSFORM, PipelineModel)
    clustering = load_model(spark, folder, CLUSTERING, MODEL_CLASSES[details["clustering"]["algorithm"]])
    return SweptModel(run_id, details, body["files"], transform, clustering)


def kept_entities(spark: SparkSession, tables: Tables, swept: SweptModel) -> DataFrame:
    """The rows the sweep kept: ``silver/entities`` at the version it read, through its own filter
    (not today's config: the labels must describe the rows it measured), in its layout."""
    version = swept.details["entities_version"]
    try:
        entities, _ = entity_snapshot(spark, tables.entities, "features", version)
    except Exception as err:
        raise SeglakeError(f"silver/entities version {version} read by the sweep of run {swept.run_id} "
                           f"is no longer readable at {tables.entities} ({first_line(err, 200)}): "
                           f"run the sweep stage again") from err
    kept = entities.where(filter_condition(entities, FilterConfig(**swept.details["filter"])))
    return stable_layout(kept, swept.details["kept"])


def label_segments(kept: DataFrame, swept: SweptModel) -> DataFrame:
    """``entity_id``, the raw features, ``segment`` and ``distance`` (to the segment's center in the
    transformed space) for each kept entity, from the saved transform and clustering model.

    Examples
    --------
    A sweep's models fitted here rather than loaded (:func:`load_swept` loads the saved ones):

    >>> from seglake.core.config import TransformConfig
    >>> from seglake.segmentation.prepare import fit_transform_pipeline, vectors
    >>> from seglake.segmentation.sweep import fit_clustering
    >>> kept = spark.createDataFrame([("a", 1.0), ("b", 2.0), ("c", 50.0), ("d", 60.0)],
    ...                              "entity_id string, likes double")
    >>> transform = fit_transform_pipeline(kept, ["likes"], [], TransformConfig())
    >>> swept = SweptModel("r1", {"features": ["likes"]}, {}, transform,
    ...                    fit_clustering(vectors(transform, kept), "kmeans", k=2, seed=0, max_iter=10))
    >>> [(r.entity_id, r.segment, round(r.distance, 2)) for r in label_segments(kept, swept).collect()]
    [('a', 0, 0.11), ('b', 0, 0.11), ('c', 1, 0.05), ('d', 1, 0.05)]
    """
    features = swept.features
    prepared = swept.transform.transform(kept).select(ENTITY_ID, *features, FEATURES)
    x = vector_to_array(F.col(FEATURES))
    return swept.clustering.transform(prepared).select(
        ENTITY_ID, *features, F.col(PREDICTION).alias("segment"),
        assigned_distance(x, F.col(PREDICTION), cluster_centers(swept.clustering)).alias("distance"))


def segment_rows(labelled: DataFrame, clusters: DataFrame | None, run_id: str) -> DataFrame:
    """``gold/segments`` rows: each labelled entity with its density cluster when the run has one.

    ``clusters`` (``entity_id, cluster, cluster_probability, x, y`` of the density stage for this
    sweep) is left-joined: entities the density stage did not label keep nulls, as do all rows of a
    run without a density stage.

    Examples
    --------
    >>> labelled = spark.createDataFrame([("a", 0, 0.5), ("b", 1, 1.5)],
    ...                                  "entity_id string, segment int, distance double")
    >>> clusters = spark.createDataFrame([("a", 7, 0.9, 1.0, 2.0)],
    ...     "entity_id string, cluster int, cluster_probability double, x double, y double")
    >>> [tuple(row) for row in segment_rows(labelled, clusters, "r1").orderBy(ENTITY_ID).collect()]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('r1', 'a', 0, 0.5, 7, 0.9, 1.0, 2.0, 'r1', True),
     ('r1', 'b', 1, 1.5, None, None, None, None, 'r1', True)]
    """
    if clusters is None:
        columns = [F.lit(None).cast("int").alias("cluster"),
                   F.lit(None).cast("double").alias("cluster_probability"),
                   F.lit(None).cast("double").alias("x"), F.lit(None).cast("double").alias("y")]
        joined = labelled.select("*", *columns)
    else:
        joined = labelled.join(clusters.select(ENTITY_ID, "cluster", "cluster_probability", "x", "y"),
                               ENTITY_ID, "left")
    return joined.select(
        F.lit(run_id).alias("run_id"), ENTITY_ID, "segment", "distance", "cluster",
        "cluster_probability", "x", "y", F.lit(run_id).alias("model_run"),
        F.lit(True).alias("in_training_filter"))


def segment_stability(kept: DataFrame, swept: SweptModel, settings: SweepConfig, kept_rows: int,
                      min_stability: float) -> pd.DataFrame | None:
    """Each segment's cluster-wise stability: ``segment, sample_rows, jaccard, refits, stable``.

    A hash sample of about ``sweep.stability_sample`` kept entities, in the saved transform's space
    and labelled by the saved model, goes to ``2 × cores`` pandas UDF tasks that together run
    ``sweep.stability_resamples`` scikit-learn KMeans refits with the same k, each on a random
    ``stability_fraction`` subset (:func:`~seglake.segmentation.stability.kmeans_refit_task`); a
    segment's ``jaccard`` is the mean of its best Jaccard over the refits, ``stable`` whether it
    reaches ``density.min_stability``. None when ``stability_resamples`` is 0.
    """
    if settings.stability_resamples == 0 or kept_rows == 0:
        return None
    spark = kept.sparkSession
    share = min(1.0, settings.stability_sample / kept_rows)
    key = F.pmod(F.xxhash64(F.lit(settings.seed), F.col(ENTITY_ID)), F.lit(1 << 40)) / float(1 << 40)
    prepared = swept.transform.transform(kept.where(key < share))
    labelled = swept.clustering.transform(prepared).select(
        F.col(ENTITY_ID).cast("string").alias("entity_id"), vector_to_array(F.col(FEATURES)).alias("x"),
        F.col(PREDICTION).cast("int").alias("segment"))
    chunks = chunks_for(1, settings.stability_resamples, spark.sparkContext.defaultParallelism)
    plan = spark.range(chunks).select(F.col("id").cast("int").alias("chunk"))
    body = functools.partial(kmeans_refit_task, k=swept.k, seed=settings.seed,
                             fraction=settings.stability_fraction, resamples=settings.stability_resamples,
                             chunks=chunks)
    refits = apply_per_key(labelled.crossJoin(F.broadcast(plan)), ["chunk"],
                           {(c,): 1.0 for c in range(chunks)}, body, REFIT_SCHEMA).toPandas()
    per_segment = refits.groupby("segment", as_index=False).agg(
        sample_rows=("sample_rows", "first"), jaccard_sum=("jaccard_sum", "sum"), refits=("refits", "sum"))
    per_segment["jaccard"] = np.where(per_segment["refits"] > 0,
                                      per_segment["jaccard_sum"] / per_segment["refits"].clip(lower=1), np.nan)
    per_segment["stable"] = [None if np.isnan(j) else bool(j >= min_stability) for j in per_segment["jaccard"]]
    return per_segment.drop(columns="jaccard_sum").sort_values("segment").reset_index(drop=True)


def density_clusters(spark: SparkSession, tables: Tables, swept: SweptModel) -> DataFrame | None:
    """The run's ``gold/clusters`` rows when its density stage ran on this very sweep, else None.

    The density manifest records the checksum of the clustering model it saw; a sweep run again
    since (another model, maybe other entities) makes those clusters stale, so they are not joined.
    """
    folder = tables.models(swept.run_id)
    if not path_exists(spark, f"{folder}/{DENSITY_MANIFEST}"):
        return None
    density = read_manifest(spark, folder, DENSITY_MANIFEST, produced_by="density")["details"]
    if density.get("sweep_clustering_sha256") != swept.files[CLUSTERING]:
        return None
    return read_run(spark, tables.gold("clusters"), swept.run_id)


def segment(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Label every kept entity with the chosen model and its density cluster; profile the segments.

    Returns
    -------
    StageResult
        ``rows_in`` entities read, ``rows_out`` entities labelled; ``details`` holds ``k``,
        ``algorithm``, ``wssse`` (equal to the sweep's at this k: same model), ``profiles`` (rows)
        and ``clusters`` (whether density clusters were joined).
        The message carries the profile table (sizes and means in original units).

    Raises
    ------
    SeglakeError
        The sweep has not run for ``run_id`` (no manifest, transform or clustering model).
    """
    started = time.monotonic()
    tables = Tables.of(config)
    swept = load_swept(spark, tables, run_id)
    k, algorithm, features = swept.k, swept.algorithm, swept.features
    kept = kept_entities(spark, tables, swept)
    labelled = label_segments(kept, swept).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        kept_rows = labelled.count()
        stability = segment_stability(kept, swept, config.sweep, kept_rows, config.density.min_stability)
        if stability is not None:
            rows = [(run_id, int(r.segment), int(r.sample_rows), None if np.isnan(r.jaccard) else float(r.jaccard),
                     int(r.refits), r.stable) for r in stability.itertuples()]
            write_run(spark.createDataFrame(rows, STABILITY_SCHEMA), tables.gold("segment_stability"), run_id)
        clusters = density_clusters(spark, tables, swept)
        write_run(segment_rows(labelled.drop(*features), clusters, run_id), tables.gold("segments"),
                  run_id, partition_by=("run_id", "segment"))
        wssse = labelled.agg(F.sum(F.col("distance") * F.col("distance"))).first()[0]
        profiles = profile(labelled, features, kept_rows).select(F.lit(run_id).alias("run_id"), "*")
        # segments x features rows: collected once, written from the driver, not read back
        profile_rows = profiles.select(*PROFILE_COLUMNS).orderBy("segment", "feature").collect()
        write_run(spark.createDataFrame(profile_rows, profiles.select(*PROFILE_COLUMNS).schema),
                  tables.gold("profiles"), run_id)
    finally:
        labelled.unpersist()
    record_run(spark, config, run_id, "segment", swept.details["entities"], kept_rows,
               swept.details["kept_fraction"], k, f"k={k} from gold/sweep ({algorithm})")
    joined = ("density clusters joined" if clusters is not None
              else "no density clusters for this sweep: cluster columns null")
    message = (f"{kept_rows:,} entities in {k} segments ({algorithm}, wssse {wssse:.6g}); {joined}\n"
               + profile_lines(profile_rows, features))
    details = {"k": k, "algorithm": algorithm, "wssse": float(wssse), "profiles": profile_rows,
               "clusters": clusters is not None,
               "stability": None if stability is None else stability.to_dict("records")}
    if stability is not None:
        jaccards = ", ".join(f"{int(r.segment)}: {r.jaccard:.2f}" for r in stability.itertuples())
        message += (f"\n  segment stability (mean Jaccard over {config.sweep.stability_resamples} KMeans "
                    f"refits of {int(stability['sample_rows'].sum()):,} entities): {jaccards}")
    return StageResult("segment", swept.details["entities"], kept_rows, time.monotonic() - started,
                       details, message)
