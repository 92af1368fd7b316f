"""Build ``silver/entities``: one row per entity, from events or from a ready entity table.

The table is ``entity_id`` (string) + one double column per feature + string categorical columns,
overwritten whole on every run (silver is the current state; the run id goes into the Delta
commit's ``userMetadata``).

*From events*, features are declarative per-entity aggregations (``features.definitions``).
Exact distinct counts are what makes this slow in Spark: ``countDistinct`` over several columns
expands every event once per distinct column *and* once for the other aggregates, then shuffles
that expansion twice. Here the events are shuffled once by entity, and one aggregation then
computes every feature where the entity lives, the distinct counts as the sizes of per-entity
sets: no expansion, no second exchange, no join (2.6× less task CPU at 1M events than expanding
each event into (entity, column, value) rows and deduplicating them, see BENCHMARKS.md;
``bench/bench_features.py`` measures the alternatives).

*From a table* (``entities``), rows keep their values: features are cast to double (a value that
does not parse becomes null and is counted), categoricals to string; rows with no id, a duplicate
id or a malformed line are dropped from ``silver/entities`` and written to ``silver/rejected`` with
the reason, so input rows always equal entities plus rejected rows.

*Time-aware* features (``recency_days``, ``tenure_days``, ``events_per_active_day``, ``min`` /
``max`` of a timestamp, any feature with a ``window``) are measured at one moment, ``as_of``: the
configured ``features.as_of``, else the latest event time (one small aggregate before the pass).
Windows are conditional aggregates inside the same single pass, not one pass per window.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import (
    IDENTIFIER, EntitiesSource, FeatureDef, FeaturesConfig, SeglakeConfig, require_columns,
)
from seglake.core.config.stages import TIME_AGGS
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import CORRUPT, Tables, overwrite_table, read_delta, read_source
from seglake.segmentation.event_time import NUMERIC_TYPES as _NUMERIC
from seglake.segmentation.event_time import TIME_TYPES as _TIME
from seglake.segmentation.event_time import EventTime, event_time

ENTITY_ID = "entity_id"
SECONDS_PER_DAY = 86_400
PLAIN_AGGS = {"count", "sum", "mean", "min", "max", "recency_days", "tenure_days"}
DISTINCT_AGGS = {"count_distinct", "active_days", "events_per_active_day"}


def _col(name: str) -> Column:
    """A column by its exact name: backticks stop Spark from reading dots or ``#`` as syntax."""
    return F.col("`" + name.replace("`", "``") + "`")


# --- from events -------------------------------------------------------------------------------

def _check_columns(events: DataFrame, features: FeaturesConfig) -> dict[str, T.DataType]:
    """Every configured column exists with a type its aggregation can use; else one-line errors."""
    if not features.definitions:
        raise SeglakeError("features.definitions: no features defined for the events source")
    types = {f.name: f.dataType for f in events.schema.fields}
    where = "bronze/events"
    require_columns(events.columns, [features.entity], "features.entity", where)
    for name, spec in features.definitions.items():
        if spec.column is None:
            continue
        key = f"features.definitions.{name}.column"
        require_columns(events.columns, [spec.column], key, where)
        kind = types[spec.column]
        numeric = isinstance(kind, (*_NUMERIC, T.BooleanType))
        if spec.agg in {"sum", "mean"} and not numeric:
            raise SeglakeError(f"{key}: agg '{spec.agg}' needs a numeric column; "
                               f"'{spec.column}' is {kind.simpleString()}")
        if spec.agg in {"min", "max"} and not (numeric or isinstance(kind, _TIME)):
            raise SeglakeError(f"{key}: agg '{spec.agg}' needs a numeric or timestamp column; "
                               f"'{spec.column}' is {kind.simpleString()}")
        if spec.agg in {"active_days", *TIME_AGGS} and not isinstance(kind, (*_NUMERIC, *_TIME)):
            raise SeglakeError(f"{key}: agg '{spec.agg}' needs unix seconds or a timestamp; "
                               f"'{spec.column}' is {kind.simpleString()}")
    return types


def _every(value: Column) -> Column:
    return value


def _plain_agg(spec: FeatureDef, kind: T.DataType | None, kept: Callable[[Column], Column] = _every,
               basis: EventTime | None = None) -> Column:
    """One aggregate over the events ``kept`` lets through (all of them, or a window's)."""
    if spec.agg == "count":  # rows per entity, or non-null values when a column is named
        return F.count(kept(_col(spec.column) if spec.column else F.lit(1)))
    column = spec.column or basis.column
    if spec.agg in ("recency_days", "tenure_days") or isinstance(kind, _TIME):
        # The latest time is the fewest days before as_of: max and recency take the smallest age.
        age = basis.days_before(_col(column), kind)
        return (F.min if spec.agg in ("recency_days", "max") else F.max)(kept(age))
    value = _col(column)
    if isinstance(kind, T.BooleanType):
        value = value.cast("long")
    total = {"sum": F.sum, "mean": F.avg, "min": F.min, "max": F.max}[spec.agg](kept(value))
    if spec.agg == "sum" and spec.window:
        # Nothing bought in the window is a spend of 0; a window of only null values stays null.
        return F.when(F.count(kept(F.lit(1))) == 0, F.lit(0)).otherwise(total)
    return total


def _distinct_value(spec: FeatureDef, kind: T.DataType, column: str | None = None) -> Column:
    """What is counted distinctly: the column itself, or its calendar day (UTC for unix seconds)."""
    value = _col(column or spec.column)
    if spec.agg in ("active_days", "events_per_active_day"):
        return F.to_date(value) if isinstance(kind, _TIME) else F.floor(value / SECONDS_PER_DAY)
    return value


def _distinct_set(value: Column, kind: T.DataType) -> Column:
    """The set of distinct non-null values whose size is the exact count.

    Floating values are counted as text after folding -0.0 into 0.0: the text of a double is
    unique to it and every NaN has the same one, which is how Spark's grouping compares them.
    """
    if isinstance(kind, (T.FloatType, T.DoubleType)):
        value = F.when(value == 0, F.lit(0.0)).otherwise(value.cast("double")).cast("string")
    return F.collect_set(value)


def _ratio_columns(definitions: dict[str, FeatureDef], values: dict[str, Column]) -> None:
    """Add every ratio to ``values`` once both operands are there (ratios may use ratios)."""
    pending = [name for name, spec in definitions.items() if spec.agg == "ratio"]
    while pending:
        ready = [n for n in pending
                 if definitions[n].numerator in values and definitions[n].denominator in values]
        if not ready:
            raise SeglakeError(f"features.definitions: ratios {', '.join(pending)} "
                               "refer to each other in a cycle")
        for name in ready:
            spec = definitions[name]
            # try_divide: a zero denominator gives null instead of failing the job (ANSI mode)
            values[name] = F.try_divide(values[spec.numerator].cast("double"), values[spec.denominator])
            pending.remove(name)


def aggregate_features(events: DataFrame, features: FeaturesConfig,
                       basis: EventTime | None = None) -> DataFrame:
    """Aggregate events into one row per entity with the configured features.

    Parameters
    ----------
    events : DataFrame
        One row per event; must hold ``features.entity`` and every configured column.
    features : FeaturesConfig
        ``entity`` and ``definitions``. Aggregations: ``count`` (rows, or non-null values of a
        named column), ``sum``, ``mean``, ``min``, ``max``, ``count_distinct`` (non-null values),
        ``active_days`` (distinct UTC calendar days of unix seconds, or days of a timestamp) and
        ``ratio`` (``numerator / denominator``, two other features; null when the denominator is
        0 or null, since no value is honest there and the prepare stage imputes nulls).
        ``approximate_distinct: true`` counts with HyperLogLog++ sketches (``approximate_rsd``).
        Time-aware, measured in days before ``as_of``: ``recency_days`` (since the entity's last
        event), ``tenure_days`` (since its first), ``min`` / ``max`` of a timestamp or date column
        (its earliest / latest value), and ``events_per_active_day`` (events / distinct days).
        Their ``column`` defaults to the time column. ``window: Nd`` on any feature but a ratio
        keeps only the events less than N days before ``as_of``.
    basis : EventTime, optional
        The time column and ``as_of``, as :func:`event_time` gives them (computed here when
        omitted and some feature is time-aware).

    Returns
    -------
    DataFrame
        ``entity_id`` (string) then one double column per feature, in definition order. Events
        whose entity is null belong to no entity and are left out; with a configured ``as_of``,
        so are events after it (an entity with only later events is absent). A distinct count over
        only nulls is 0; a sum/mean/min/max over only nulls is null. An entity with no event in a
        feature's window gets 0 for counts, distinct counts and sums, null for the others.

    Raises
    ------
    SeglakeError
        A configured column is missing or has a type its aggregation cannot use, the time column
        is missing or ambiguous, or ratios form a cycle.

    Examples
    --------
    >>> events = spark.createDataFrame([("u1", "v1", 10.0), ("u1", "v2", 30.0), ("u1", "v1", None),
    ...     ("u2", "v3", 5.0), (None, "v4", 1.0)], "uid string, video string, watch double")
    >>> features = FeaturesConfig(entity="uid", definitions={
    ...     "plays": {"agg": "count"}, "videos": {"agg": "count_distinct", "column": "video"},
    ...     "watch": {"agg": "sum", "column": "watch"},
    ...     "per_play": {"agg": "ratio", "numerator": "watch", "denominator": "plays"}})
    >>> [tuple(row) for row in aggregate_features(events, features).orderBy(ENTITY_ID).collect()]
    [('u1', 3.0, 2.0, 40.0, 13.333333333333334), ('u2', 1.0, 1.0, 5.0, 5.0)]

    Recency, tenure and a 7-day spend, as of the latest purchase (2024-03-10):

    >>> from datetime import datetime as at
    >>> purchases = spark.createDataFrame([("a", at(2024, 3, 1), 5.0), ("a", at(2024, 3, 9), 7.0),
    ...     ("b", at(2024, 3, 10), 2.0)], "customer string, paid timestamp, amount double")
    >>> rfm = FeaturesConfig(entity="customer", definitions={
    ...     "recency": {"agg": "recency_days"}, "tenure": {"agg": "tenure_days"},
    ...     "spend_7d": {"agg": "sum", "column": "amount", "window": "7d"}})
    >>> [tuple(row) for row in aggregate_features(purchases, rfm).orderBy(ENTITY_ID).collect()]
    [('a', 1.0, 9.0, 7.0), ('b', 0.0, 0.0, 2.0)]
    """
    types = _check_columns(events, features)
    if basis is None:
        basis = event_time(events, features)
    definitions = features.definitions
    entity = features.entity
    events = events.where(_col(entity).isNotNull())
    if basis is not None and basis.from_config:
        events = events.where(basis.not_after())
    aggregates: list[Column] = []
    distinct: dict[str, Column] = {}   # internal name -> value whose distinct non-nulls are counted
    values: dict[str, Column] = {}     # feature name -> its value after the aggregation
    for i, (name, spec) in enumerate(definitions.items()):
        # Internal names keep feature names from ever colliding with the entity or event columns.
        alias = f"_f{i}"
        if spec.agg == "ratio":
            continue
        in_window = basis.within(spec.window_days) if spec.window else None

        def kept(value: Column, in_window: Column | None = in_window) -> Column:
            return value if in_window is None else F.when(in_window, value)

        column = spec.column or (basis.column if spec.agg in TIME_AGGS else None)
        kind = types.get(column)
        values[name] = F.col(alias)
        if spec.agg in PLAIN_AGGS:
            aggregates.append(_plain_agg(spec, kind, kept, basis).alias(alias))
            continue
        distinct[alias] = kept(_distinct_value(spec, kind, column))
        if spec.agg == "events_per_active_day":
            aggregates.append(F.count(kept(_col(column))).alias(f"{alias}_events"))
            values[name] = F.try_divide(F.col(f"{alias}_events").cast("double"), F.col(alias))
    if features.approximate_distinct:
        aggregates += [F.approx_count_distinct(value, features.approximate_rsd).alias(alias)
                       for alias, value in distinct.items()]
    else:
        aggregates += [F.size(_distinct_set(value, events.select(value).schema.fields[0].dataType))
                       .alias(alias) for alias, value in distinct.items()]
        if distinct:
            # One shuffle of the events by entity; every set is then built where its entity lives.
            events = events.repartition(_col(entity))
    # The row count keeps every entity present even when it has no other aggregate.
    per_entity = events.groupBy(_col(entity)).agg(F.count(F.lit(1)).alias("_rows"), *aggregates)
    _ratio_columns(definitions, values)
    return per_entity.select(
        _col(entity).cast("string").alias(ENTITY_ID),
        *[values[name].cast("double").alias(name) for name in definitions],
    )


def _from_events(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    tables = Tables.of(config)
    events = read_delta(spark, tables.events, "ingest")
    _check_columns(events, config.features)  # before event_time's job: a bad column costs none
    basis = event_time(events, config.features)
    entities = aggregate_features(events, config.features, basis)
    overwrite_table(entities, tables.entities, run_id)
    later = (F.count(F.when(~basis.not_after(), 1)) if basis is not None and basis.from_config
             else F.lit(0))
    counts = events.agg(F.count(F.lit(1)).alias("rows"), F.count(_col(config.features.entity)).alias("named"),
                        later.alias("later")).first()
    rows_in, no_entity = counts.rows, counts.rows - counts.named
    rows_out = read_delta(spark, tables.entities, "features").count()
    method = "approximate (HLL++)" if config.features.approximate_distinct else "exact"
    message = (f"{len(config.features.definitions)} features for {rows_out:,} entities "
               f"({method} distinct counts)")
    if basis is not None:
        message += f", {basis.describe()}"
    if no_entity:
        message += f"; {no_entity:,} events without {config.features.entity} belong to no entity"
    if counts.later:
        message += f"; {counts.later:,} events after features.as_of left out"
    details = {"features": list(config.features.definitions), "events_without_entity": no_entity,
               # A rerun of the same config on more events moves a default as_of: say which was used.
               "as_of": basis.as_of.isoformat() if basis else None,
               "as_of_from": ("features.as_of" if basis.from_config else "latest event") if basis else None,
               "time_column": basis.column if basis else None, "events_after_as_of": counts.later}
    return StageResult("features", rows_in, rows_out, details=details, message=message)


# --- from an entity table ----------------------------------------------------------------------

def read_entity_table(spark: SparkSession, source: EntitiesSource) -> DataFrame:
    """Read the configured table; CSV values stay text (typed later) with malformed lines kept.

    CSV defaults: a header line, quoted fields that may span lines (``multiLine``), ``"`` escaping
    ``"``; ``entities.options`` override them. A CSV line that does not fit the header's columns
    lands in ``_corrupt_record``.

    Examples
    --------
    A quoted bio spanning two lines, with quotes inside; every value is still text:

    >>> import pathlib, shutil, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "bios.csv").write_text('uid,plays,bio\\na,3,"likes ""jazz""\\nand cats"\\nb,x,plain\\n')
    >>> table = read_entity_table(spark, EntitiesSource(path=str(folder / "bios.csv"), id="uid"))
    >>> [tuple(row) for row in table.collect()]
    [('a', '3', 'likes "jazz"\\nand cats', None), ('b', 'x', 'plain', None)]
    >>> shutil.rmtree(folder)
    """
    options = source.options
    if source.format == "csv":
        options = {"header": "true", "multiLine": "true", "escape": '"', **source.options}
    text = source.format == "csv"
    return read_source(spark, source.path, source.format, options, "entities.path", as_text=text, corrupt=text)


def infer_features(table: DataFrame, source: EntitiesSource) -> tuple[list[str], list[str]]:
    """The numeric columns of a table when ``entities.features`` is empty.

    A column qualifies if it is numeric, or text of which at least half the non-null values parse
    as numbers (one pass over the table): a numeric column with a few bad cells stays a feature,
    its bad cells become nulls and are counted. The id, categorical columns and names that are not
    plain identifiers never qualify.

    Returns
    -------
    (features, skipped) : tuple of list of str
        Chosen columns and the other non-id, non-categorical columns, both in table order.

    Examples
    --------
    ``plays`` parses in 2 of 3 rows, ``note`` in 1 of 3:

    >>> table = spark.createDataFrame(
    ...     [("a", "3", "fr", "word"), ("b", "x", "de", "word"), ("c", "4", "fr", "3")],
    ...     "uid string, plays string, country string, note string")
    >>> infer_features(table, EntitiesSource(path="t.csv", id="uid", categorical=["country"]))
    (['plays'], ['note'])
    """
    features, texts, skipped = [], [], []
    for field in table.schema.fields:
        name = field.name
        if name in (source.id, CORRUPT) or name in source.categorical:
            continue
        if not IDENTIFIER.match(name):
            skipped.append(name)
        elif isinstance(field.dataType, _NUMERIC):
            features.append(name)
        elif isinstance(field.dataType, T.StringType):
            texts.append(name)
        else:
            skipped.append(name)
    if texts:
        checks = table.agg(*[
            F.struct(F.count(_col(n)).alias("present"),
                     F.count(_col(n).try_cast("double")).alias("parsed")).alias(n) for n in texts
        ]).first()
        numeric_text = {n for n in texts
                        if 0 < checks[n].parsed and 2 * checks[n].parsed >= checks[n].present}
        features += list(numeric_text)
        skipped += [n for n in texts if n not in numeric_text]
    order = {n: i for i, n in enumerate(table.columns)}
    return sorted(features, key=order.get), sorted(skipped, key=order.get)


def _as_category(name: str, kind: T.DataType) -> Column:
    text = F.trim(_col(name).cast("string"))
    if isinstance(kind, T.BooleanType):
        return text
    # TRUE/False/true from spreadsheets mean the same thing as a boolean column's "true"/"false".
    lowered = F.lower(text)
    return F.when(lowered.isin("true", "false"), lowered).otherwise(text)


def prepare_entities(table: DataFrame, source: EntitiesSource, features: list[str]) -> DataFrame:
    """Type an entity table and mark the rows that cannot be entities.

    Parameters
    ----------
    table : DataFrame
        As read by :func:`read_entity_table`.
    source : EntitiesSource
        ``id`` and ``categorical`` columns.
    features : list of str
        Feature columns (checked to exist).

    Returns
    -------
    DataFrame
        ``entity_id``, each feature as double (null when the value does not parse or is NaN or
        infinite), each categorical as string, ``_reason`` (null for a kept row, else
        ``malformed_line``, ``null_id`` or ``duplicate_id``; the first row of an id, in input
        order, is kept), ``_raw`` (the input row as JSON) and ``_bad_<i>`` (feature ``i`` did not
        parse).

    Examples
    --------
    >>> table = spark.createDataFrame([("a", "3"), ("b", "x"), ("a", "4"), (None, "1")],
    ...                               "uid string, plays string")
    >>> typed = prepare_entities(table, EntitiesSource(path="t.csv", id="uid"), ["plays"])
    >>> [(r.entity_id, r.plays, r._reason, r._bad_0) for r in typed.orderBy("_raw").collect()]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(None, 1.0, 'null_id', False), ('a', 3.0, None, False), ('a', 4.0, 'duplicate_id', False),
     ('b', None, None, True)]
    """
    require_columns(table.columns, [source.id], "entities.id", source.path)
    require_columns(table.columns, features, "entities.features", source.path)
    require_columns(table.columns, source.categorical, "entities.categorical", source.path)
    both = sorted(set(features) & set(source.categorical))
    if both:
        raise SeglakeError(f"entities.categorical: {', '.join(both)} also listed in entities.features")
    if ENTITY_ID in (*features, *source.categorical):
        raise SeglakeError(f"entities: a feature or categorical column may not be named '{ENTITY_ID}'")
    types = {f.name: f.dataType for f in table.schema.fields}
    originals = [n for n in table.columns if n != CORRUPT]
    corrupt = _col(CORRUPT) if CORRUPT in table.columns else F.lit(None).cast("string")
    entity = F.nullif(F.trim(_col(source.id).cast("string")), F.lit(""))
    columns, flags = [], []
    for i, name in enumerate(features):
        parsed = _col(name).try_cast("double")
        usable = parsed.isNotNull() & ~F.isnan(parsed) & (F.abs(parsed) != float("inf"))
        columns.append(F.when(usable, parsed).alias(name))
        flags.append((_col(name).isNotNull() & ~usable).alias(f"_bad_{i}"))
    columns += [_as_category(n, types[n]).alias(n) for n in source.categorical]
    raw = F.coalesce(corrupt, F.to_json(F.struct(*[_col(n) for n in originals])))
    typed = table.select(
        entity.alias(ENTITY_ID), *columns, *flags, raw.alias("_raw"),
        corrupt.isNotNull().alias("_malformed"), F.monotonically_increasing_id().alias("_row"),
    )
    copy_number = F.row_number().over(Window.partitionBy(ENTITY_ID, "_malformed").orderBy("_row"))
    reason = (F.when(F.col("_malformed"), F.lit("malformed_line"))
              .when(F.col(ENTITY_ID).isNull(), F.lit("null_id"))
              .when(copy_number > 1, F.lit("duplicate_id")))
    return typed.withColumn("_reason", reason).drop("_malformed", "_row")


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counts.items())


def _from_table(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    source = config.entities
    if config.features.definitions:
        raise SeglakeError("features.definitions: aggregations apply to an 'events' source; "
                           "list a table's columns in entities.features")
    tables = Tables.of(config)
    table = read_entity_table(spark, source)
    inferred = not source.features
    features, skipped = infer_features(table, source) if inferred else (source.features, [])
    if not features:
        raise SeglakeError(f"entities.features: no numeric column found in {source.path} "
                           f"(it has: {', '.join(table.columns)})")
    classified = prepare_entities(table, source, features).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # One pass: rows per reason, and unparseable cells per feature (kept rows: reason null).
        by_reason = classified.groupBy("_reason").agg(
            F.count(F.lit(1)).alias("_rows"),
            *[F.sum(F.col(f"_bad_{i}").cast("long")).alias(f"_bad_{i}") for i in range(len(features))],
        ).collect()
        kept = classified.where(F.col("_reason").isNull())
        overwrite_table(kept.select(ENTITY_ID, *[_col(n) for n in (*features, *source.categorical)]),
                   tables.entities, run_id)
        rejected = classified.where(F.col("_reason").isNotNull()).select(
            F.col(ENTITY_ID), F.col("_reason").alias("reason"), F.col("_raw").alias("raw"),
            F.lit(run_id).alias("run_id"))
        overwrite_table(rejected, rejected_path(tables), run_id)
    finally:
        classified.unpersist()
    rows_in = sum(r._rows for r in by_reason)
    rows_out = read_delta(spark, tables.entities, "features").count()
    rejected_rows = read_delta(spark, rejected_path(tables), "features").count()
    dropped = {r._reason: r._rows for r in sorted(by_reason, key=lambda r: r._reason or "") if r._reason}
    kept_row = next((r for r in by_reason if r._reason is None), None)
    unparseable = {n: kept_row[f"_bad_{i}"] for i, n in enumerate(features)
                   if kept_row and kept_row[f"_bad_{i}"]}
    if rows_in != rows_out + rejected_rows:
        raise SeglakeError(f"features of {source.path} do not reconcile: {rows_in:,} rows in, "
                           f"{rows_out:,} entities + {rejected_rows:,} rejected")
    message = (f"{len(features)} features{' (inferred)' if inferred else ''}, "
               f"{len(source.categorical)} categorical; {rows_in:,} rows = {rows_out:,} entities + "
               f"{rejected_rows:,} rejected" + (f" ({_listing(dropped)})" if dropped else "")
               + (f"; unparseable values set to null: {_listing(unparseable)}" if unparseable else "")
               + (f"; not numeric, left out: {', '.join(skipped)}" if skipped else ""))
    details = {"features": features, "categorical": list(source.categorical), "rejected": dropped,
               "unparseable": unparseable, "skipped_columns": skipped}
    return StageResult("features", rows_in, rows_out, details=details, message=message)


# --- stage -------------------------------------------------------------------------------------

def rejected_path(tables: Tables) -> str:
    """``silver/rejected``: entity-table rows left out of ``silver/entities``, with the reason.

    Examples
    --------
    >>> rejected_path(Tables("/lake", "users"))
    '/lake/users/silver/rejected'
    """
    return tables.path("silver", "rejected")


def build_entities(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """The ``features`` stage: write ``silver/entities`` from the config's source.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
        ``events`` + ``features`` (aggregate ``bronze/events``), or ``entities`` (a ready table).
    run_id : str
        Recorded in the Delta commit's ``userMetadata``; silver holds no run column.

    Returns
    -------
    StageResult
        ``rows_in`` events (or table rows), ``rows_out`` entities; the message gives the feature
        count and, for tables, the rejected and unparseable counts (also in ``details``).

    Raises
    ------
    SeglakeError
        Missing input, a configured column not in the data, or counts that do not reconcile.
    """
    started = time.monotonic()
    result = (_from_events if config.events is not None else _from_table)(spark, config, run_id)
    result.seconds = time.monotonic() - started
    return result
