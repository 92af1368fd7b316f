"""Score new entities with a trained run: its saved transform, KMeans model and density surrogate.

``seglake score --config FILE --model-run RUN --input PATH`` reads one batch, either

- raw events (a config with an ``events`` source): every row through ingest's validation
  (:func:`seglake.segmentation.ingest.classify_events`), the valid ones through the same feature definitions
  (:func:`seglake.segmentation.features.aggregate_features`, refused unless they equal the model's), or
- entity rows (an ``entities`` source): typed like the features stage does
  (:func:`seglake.segmentation.features.prepare_entities`), after checking every feature the model was trained on
  is present and numeric,

then applies the model run's saved transform (unseen categories map to the all-zero one-hot vector,
nulls to the training medians), its clustering model (``segment``, ``distance``) and, when the run
has a density stage, its surrogate (``cluster``, ``cluster_probability``). Nothing is refitted.

Every entity is scored: the training filter is *not* applied, ``in_training_filter`` says whether
the entity would have passed it. Rows go to ``gold/segments`` under the scoring run's id (with
``model_run``), rejected input rows to ``bronze/scoring_quarantine`` with their reason (training's
bronze tables are never written), one PSI per feature to ``gold/drift`` (:mod:`seglake.segmentation.drift`,
computed on the entities that pass the training filter, the population the training quantiles
describe), and a ``score`` row to ``gold/runs``. Every write replaces the scoring run's own rows,
so re-running a run id never duplicates anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import EntitiesSource, FilterConfig, SeglakeConfig, check_run_id, require_columns
from seglake.segmentation.drift import DRIFT_COLUMNS, drift_rows
from seglake.core.errors import SeglakeError, first_line
from seglake.segmentation.features import aggregate_features, prepare_entities, read_entity_table
from seglake.segmentation.ingest import classify_events, list_files, read_raw
from seglake.core.artifacts import DENSITY_MANIFEST, path_exists
from seglake.segmentation.prepare import ENTITY_ID, FEATURES, filter_condition
from seglake.segmentation.segment import assigned_distance, load_swept
from seglake.core.stages import StageResult
from seglake.segmentation.density_levels import assign_levels
from seglake.segmentation.surrogate import predicted_cluster, saved_levels, saved_models
from seglake.segmentation.sweep import PREDICTION, cluster_centers
from seglake.core.tables import Tables, read_run, record_run, write_run

SEGMENT_COLUMNS = ["run_id", ENTITY_ID, "segment", "distance", "cluster", "cluster_probability",
                   "x", "y", "model_run", "in_training_filter"]
QUARANTINE_COLUMNS = "run_id string, raw string, reason string, source string"
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


def quarantine_path(tables: Tables) -> str:
    """``bronze/scoring_quarantine``: input rows a scoring run could not use, with the reason.

    Examples
    --------
    >>> quarantine_path(Tables("/lake", "users"))
    '/lake/users/bronze/scoring_quarantine'
    """
    return tables.path("bronze", "scoring_quarantine")


@dataclass(frozen=True)
class ScoringModel:
    """Everything a trained run saved that scoring applies (loaded once, on the driver)."""

    run_id: str
    manifest: dict[str, Any]
    transform: PipelineModel
    clustering: Any
    centers: list[list[float]]
    surrogates: dict | None  # group → (XGBoost JSON bytes or None, classes); None: no density stage
    surrogate_features: list[str]
    group_by: str
    depth: int = 1  # density levels (seed 004's recursion); the ones below the first:
    levels: dict = field(default_factory=dict)  # level → parent path → file, classes
    level_models: dict = field(default_factory=dict)  # file → XGBoost JSON bytes

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def categorical(self) -> list[str]:
        return list(self.manifest.get("categorical", []))


def load_scoring_model(spark: SparkSession, tables: Tables, model_run: str) -> ScoringModel:
    """Load a run's manifest, transform, clustering model and (if any) density surrogates.

    Raises
    ------
    SeglakeError
        The run has no manifest or clustering model (sweep stage not run) or a manifest written
        before scoring existed (no drift bins); a surrogate file fails its sha256 check.
    """
    folder = tables.models(model_run)
    swept = load_swept(spark, tables, model_run)
    manifest, transform, clustering = swept.details, swept.transform, swept.clustering
    missing = [key for key in ("drift_bins", "feature_types") if key not in manifest]
    if missing:
        raise SeglakeError(f"{folder}/manifest.json has no {', '.join(missing)}: model run {model_run} "
                           f"predates scoring; run its sweep stage again")
    surrogates, surrogate_features, group_by = None, [], "none"
    depth, levels, level_models = 1, {}, {}
    if path_exists(spark, f"{folder}/{DENSITY_MANIFEST}"):
        surrogates, surrogate_features, group_by = saved_models(spark, folder, DENSITY_MANIFEST)
        depth, levels, level_models = saved_levels(spark, folder, DENSITY_MANIFEST)
    return ScoringModel(model_run, manifest, transform, clustering, cluster_centers(clustering),
                        surrogates, surrogate_features, group_by, depth, levels, level_models)


# ---------------------------------------------------------------- reading a batch


@dataclass(frozen=True)
class Batch:
    """One scoring input: its entities, the rows rejected on the way, and how many rows came in."""

    entities: DataFrame   # entity_id, the model's features (double) and categoricals (string)
    rejected: DataFrame   # raw, reason, source
    rows_in: int          # events, or entity-table rows
    rejected_rows: int    # of them, rows sent to quarantine
    unit: str             # "events" or "rows"
    source: Any           # persisted frame to release when done


def check_definitions(config: SeglakeConfig, model: ScoringModel) -> None:
    """Refuse a config whose source or feature definitions are not the ones the model was trained on.

    Examples
    --------
    A config scoring an entity table with a model trained on events (the models are not needed):

    >>> config = SeglakeConfig.model_validate({"name": "demo", "lakehouse": "/lake",
    ...     "source_file": "demo.yaml", "entities": {"path": "e.csv", "id": "uid"}})
    >>> manifest = {"features": ["plays"], "feature_definitions": {"plays": {"agg": "count"}}}
    >>> check_definitions(config, ScoringModel("r1", manifest, None, None, [], None, [], "none"))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: demo.yaml: model run r1 was trained on events: score it with ...
    """
    trained = model.manifest.get("feature_definitions")
    run = model.run_id
    if config.events is not None:
        if trained is None:
            raise SeglakeError(f"{config.source_file}: model run {run} was trained on an entity table, "
                               f"not on events: score it with a config whose source is 'entities'")
        current = {name: spec.model_dump() for name, spec in config.features.definitions.items()}
        differ = sorted(n for n in {*trained, *current} if trained.get(n) != current.get(n))
        if differ:
            raise SeglakeError(f"{config.source_file}: features.definitions differ from those of model "
                               f"run {run} for {', '.join(differ)}: the model scores only the features "
                               f"it was trained on")
        trained_entity = model.manifest.get("entity_id_column")
        if config.features.entity != trained_entity:
            raise SeglakeError(f"{config.source_file}: features.entity is '{config.features.entity}' "
                               f"but model run {run} was trained per '{trained_entity}'")
        return
    if trained is not None:
        raise SeglakeError(f"{config.source_file}: model run {run} was trained on events: score it with "
                           f"a config whose source is 'events' and the same features.definitions")
    listed = config.entities.features if config.entities is not None else []
    if listed and set(listed) != set(model.features):
        raise SeglakeError(f"{config.source_file}: entities.features ({', '.join(listed)}) differ from "
                           f"the features of model run {run} ({', '.join(model.features)})")


def events_batch(spark: SparkSession, config: SeglakeConfig, path: str) -> Batch:
    """Validate raw events like ingest does, then aggregate the valid ones into entities."""
    source = config.events.model_copy(update={"path": path})
    files = list_files(spark, path)
    if not files:
        raise SeglakeError(f"--input: no files found at {path}")
    try:
        classified = classify_events(read_raw(spark, [f.path for f in files], source), source)
        classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
        counts = classified.agg(F.count(F.lit(1)).alias("rows"), F.count("_reason").alias("rejected")).first()
    except SeglakeError:
        raise
    except Exception as err:  # Spark reader errors are Java stack traces: keep the first line
        raise SeglakeError(f"--input: could not read {path} as {source.format}: {first_line(err)}") from err
    valid = classified.where(F.col("_reason").isNull()).select(*source.columns)
    rejected = classified.where(F.col("_reason").isNotNull()).select(
        F.col("_raw").alias("raw"), F.col("_reason").alias("reason"), F.col("_ingest_file").alias("source"))
    return Batch(aggregate_features(valid, config.features), rejected, int(counts["rows"]),
                 int(counts["rejected"]), "events", classified)


def check_numeric(table: DataFrame, features: list[str], path: str) -> None:
    """Every feature column is numeric, or text of which at least half the values parse as numbers.

    The same rule the features stage infers features with: a column with a few bad cells is still
    the feature (its bad cells become null, which the transform imputes), a column of words is not.

    Examples
    --------
    >>> table = spark.createDataFrame([("a", "3", "x"), ("b", "4", "y"), ("c", "n/a", "z")],
    ...                               "uid string, plays string, word string")
    >>> check_numeric(table, ["plays"], "batch.csv")  # 2 of 3 values parse: a feature
    >>> check_numeric(table, ["word"], "batch.csv")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: --input: feature column 'word' in batch.csv is not numeric:
    only 0 of 3 values parse as numbers
    """
    types = {f.name: f.dataType for f in table.schema.fields}
    for name in features:
        if not isinstance(types[name], (*_NUMERIC, T.StringType)):
            raise SeglakeError(f"--input: feature column '{name}' in {path} is "
                               f"{types[name].simpleString()}; the model expects a number")
    texts = [n for n in features if isinstance(types[n], T.StringType)]
    if not texts:
        return
    column = {n: F.col("`" + n.replace("`", "``") + "`") for n in texts}
    checks = table.agg(*[F.struct(F.count(column[n]).alias("present"),
                                  F.count(column[n].try_cast("double")).alias("parsed")).alias(f"_{i}")
                         for i, n in enumerate(texts)]).first()
    for i, name in enumerate(texts):
        present, parsed = checks[f"_{i}"].present, checks[f"_{i}"].parsed
        if present and 2 * parsed < present:
            raise SeglakeError(f"--input: feature column '{name}' in {path} is not numeric: only "
                               f"{parsed:,} of {present:,} values parse as numbers")


def table_batch(spark: SparkSession, config: SeglakeConfig, model: ScoringModel, path: str) -> Batch:
    """Read entity rows, check the model's columns are there and numeric, and type them."""
    configured = config.entities
    source = EntitiesSource(path=path, format=configured.format, id=configured.id,
                            features=model.features, categorical=model.categorical,
                            options=configured.options)
    table = read_entity_table(spark, source)
    require_columns(table.columns, [configured.id], "entities.id", path)
    require_columns(table.columns, model.features + model.categorical,
                    f"--input (features of model run {model.run_id})", path)
    check_numeric(table, model.features, path)
    classified = prepare_entities(table, source, model.features).persist(StorageLevel.MEMORY_AND_DISK)
    counts = classified.agg(F.count(F.lit(1)).alias("rows"), F.count("_reason").alias("rejected")).first()
    entities = classified.where(F.col("_reason").isNull()).select(
        ENTITY_ID, *[F.col(f"`{n}`") for n in model.features + model.categorical])
    rejected = classified.where(F.col("_reason").isNotNull()).select(
        F.col("_raw").alias("raw"), F.col("_reason").alias("reason"), F.lit(path).alias("source"))
    return Batch(entities, rejected, int(counts["rows"]), int(counts["rejected"]), "rows", classified)


# ---------------------------------------------------------------- scoring (pure)


def score_entities(entities: DataFrame, model: ScoringModel, run_id: str) -> DataFrame:
    """``gold/segments`` rows for ``entities`` under the scoring run ``run_id`` (lazy, no action).

    Parameters
    ----------
    entities : DataFrame
        ``entity_id``, the model's features and categoricals.
    model : ScoringModel
    run_id : str
        The scoring run.

    Returns
    -------
    DataFrame
        ``SEGMENT_COLUMNS``: ``segment`` and ``distance`` (to its center in the transformed space)
        from the clustering model; ``cluster``, ``cluster_probability`` from the surrogate (null
        when the model run has no density stage); ``x``, ``y`` null (the map is not extended);
        ``model_run``; ``in_training_filter``.

    Examples
    --------
    A model run's transform and clustering fitted here (:func:`load_scoring_model` loads saved ones),
    without a density stage; its filter kept ``likes >= 2``:

    >>> from seglake.segmentation.prepare import fit_transform_pipeline, vectors
    >>> from seglake.segmentation.sweep import fit_clustering
    >>> from seglake.core.config import TransformConfig
    >>> entities = spark.createDataFrame([("a", 1.0), ("b", 2.0), ("c", 50.0), ("d", 60.0)],
    ...                                  "entity_id string, likes double")
    >>> transform = fit_transform_pipeline(entities, ["likes"], [], TransformConfig())
    >>> kmeans = fit_clustering(vectors(transform, entities), "kmeans", k=2, seed=0, max_iter=10)
    >>> model = ScoringModel("r1", {"features": ["likes"], "filter": {"min": {"likes": 2}}}, transform,
    ...                      kmeans, cluster_centers(kmeans), None, [], "none")
    >>> scored = score_entities(entities, model, "s1").collect()
    >>> [(r.entity_id, r.segment, round(r.distance, 2), r.cluster, r.in_training_filter) for r in scored]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('a', 0, 0.11, None, False), ('b', 0, 0.11, None, True), ('c', 1, 0.05, None, True),
     ('d', 1, 0.05, None, True)]
    """
    keep = filter_condition(entities, FilterConfig(**model.manifest["filter"]))
    labelled = model.clustering.transform(model.transform.transform(entities.withColumn("_keep", keep)))
    segment = F.col(PREDICTION).cast("int")
    if model.surrogates is None:
        predicted = F.struct(F.lit(None).cast("int").alias("cluster"),
                             F.lit(None).cast("double").alias("cluster_probability"))
    else:
        group = F.lit(0) if model.group_by == "none" else segment
        predicted = predicted_cluster(entities.sparkSession, model.surrogates, group,
                                      model.surrogate_features)
    distance = assigned_distance(vector_to_array(F.col(FEATURES)), F.col(PREDICTION), model.centers)
    labelled = labelled.withColumn("_p", predicted)
    levels = [f"cluster_{level}" for level in range(2, model.depth + 1)]
    if levels:  # the levels below follow the first level's label, parent by parent
        labelled = assign_levels(labelled, F.col("_p.cluster"), model.levels, model.level_models,
                                 model.surrogate_features, model.depth)
    return labelled.select(
        F.lit(run_id).alias("run_id"), ENTITY_ID, segment.alias("segment"), distance.alias("distance"),
        "_p", F.col("_keep").alias("in_training_filter"), *(["cluster_path", *levels] if levels else []),
    ).select("run_id", ENTITY_ID, "segment", "distance", "_p.cluster", "_p.cluster_probability",
             F.lit(None).cast("double").alias("x"), F.lit(None).cast("double").alias("y"),
             F.lit(model.run_id).alias("model_run"), "in_training_filter",
             *(["cluster_path", *levels] if levels else []))


# ---------------------------------------------------------------- the stage


def _check_run_ids(spark: SparkSession, tables: Tables, run_id: str, model_run: str) -> None:
    check_run_id(run_id)
    check_run_id(model_run)
    if run_id == model_run:
        raise SeglakeError(f"--run-id {run_id} is the model run: a scoring run needs its own id "
                           f"(it would replace the training run's segments)")
    runs = tables.gold("runs")
    recorded = read_run(spark, runs, run_id)
    if recorded is not None:
        stages = {r.stage for r in recorded.select("stage").collect()}
        if stages - {"score"}:
            raise SeglakeError(f"--run-id {run_id} is a training run (stages {', '.join(sorted(stages))} "
                               f"in {runs}): choose another id for scoring")


def _drift_line(rows: list[tuple]) -> str:
    worst = sorted((r for r in rows if r[4] != "ok"), key=lambda r: -(r[3] if r[3] is not None else 1e9))
    if not worst:
        return f"drift ok (largest PSI {max(r[3] for r in rows):.3f})"
    listed = ", ".join(f"{r[2]} {r[4]} (PSI {'-' if r[3] is None else f'{r[3]:.3f}'})" for r in worst[:5])
    return f"drift: {listed}" + (f" and {len(worst) - 5} more" if len(worst) > 5 else "")


def score(spark: SparkSession, config: SeglakeConfig, model_run: str, input_path: str,
          run_id: str) -> StageResult:
    """Score a batch with model run ``model_run``; write segments, drift, quarantine and the run row.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
        The use case: its source type (events or entities) and reader settings, ``features``, and
        ``drift`` thresholds. Tables are written under its ``lakehouse`` and ``name``.
    model_run : str
        A run whose sweep stage ran (density optional).
    input_path : str
        File, folder or glob of the batch, in the config's source format.
    run_id : str
        The scoring run; re-running it replaces its rows.

    Returns
    -------
    StageResult
        ``rows_in`` input rows (events or entity rows), ``rows_out`` entities scored; ``details``:
        ``model_run``, ``entities``, ``in_training_filter``, ``quarantined``, ``drift`` (rows),
        ``flagged`` (features whose PSI reached ``drift.flag``), ``warned``.

    Raises
    ------
    SeglakeError
        Bad run ids, a model run that cannot score, features that do not match it, an unreadable
        input, a missing or non-numeric feature column, or counts that do not reconcile.
    """
    started = time.monotonic()
    tables = Tables.of(config)
    _check_run_ids(spark, tables, run_id, model_run)
    if config.events is None and config.entities is None:
        raise SeglakeError(f"{config.source_file}: scoring needs an 'events' or 'entities' source")
    model = load_scoring_model(spark, tables, model_run)
    check_definitions(config, model)
    batch = (events_batch(spark, config, input_path) if config.events is not None
             else table_batch(spark, config, model, input_path))
    entities = batch.entities.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        write_run(batch.rejected.select(F.lit(run_id).alias("run_id"), "raw", "reason", "source"),
                  quarantine_path(tables), run_id)
        scored_rows = entities.count()
        if scored_rows == 0:
            raise SeglakeError(f"--input: no usable entity in {input_path} ({batch.rows_in:,} {batch.unit}, "
                               f"see {quarantine_path(tables)} for run {run_id})")
        write_run(score_entities(entities, model, run_id), tables.gold("segments"), run_id,
                  partition_by=("run_id", "segment"))
        training = model.manifest["drift_bins"]
        kept = entities.where(filter_condition(entities, FilterConfig(**model.manifest["filter"])))
        drift = drift_rows(kept, training, run_id, model_run, config.drift.warn, config.drift.flag)
        write_run(spark.createDataFrame(drift, DRIFT_COLUMNS), tables.gold("drift"), run_id)
    finally:
        entities.unpersist()
        batch.source.unpersist()
    written = read_run(spark, tables.gold("segments"), run_id, "score").agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("in_training_filter").cast("long")).alias("kept")).first()
    rejected = read_run(spark, quarantine_path(tables), run_id)
    quarantined = 0 if rejected is None else rejected.count()
    in_filter = int(written["kept"] or 0)
    # events: input = valid + quarantined; entity rows: input = entities + quarantined
    reconciled = quarantined == batch.rejected_rows and written["rows"] == scored_rows and (
        batch.unit == "events" or batch.rows_in == scored_rows + quarantined)
    if not reconciled:
        raise SeglakeError(f"scoring run {run_id} does not reconcile: {batch.rows_in:,} {batch.unit} in, "
                           f"{quarantined:,} quarantined, {scored_rows:,} entities, {written['rows']:,} "
                           f"rows written to gold/segments")
    k = int(model.manifest["clustering"]["k"])
    record_run(spark, config, run_id, "score", batch.rows_in, scored_rows, in_filter / scored_rows, k,
               f"scored with model run {model_run}")
    flagged = [r[2] for r in drift if r[4] == "flag"]
    warned = [r[2] for r in drift if r[4] == "warn"]
    clusters = ("clusters from the density surrogate" if model.surrogates is not None
                else f"no density stage in model run {model_run}: cluster left null")
    message = (f"{scored_rows:,} entities scored with model run {model_run} (k={k}), "
               f"{in_filter:,} pass its training filter; {batch.rows_in:,} {batch.unit} in = "
               f"{batch.rows_in - quarantined:,} valid + {quarantined:,} quarantined (reconciled); "
               f"{clusters}; {_drift_line(drift)}")
    details = {"model_run": model_run, "entities": scored_rows, "in_training_filter": in_filter,
               "quarantined": quarantined, "drift": drift, "flagged": flagged, "warned": warned}
    return StageResult("score", batch.rows_in, scored_rows, time.monotonic() - started, details, message)
