"""The ``ratings`` stage: ingest MovieLens-style files, embed users with ALS, build ``silver/entities``.

Input (the ``ml-100k`` layout, ``ratings:`` in the config): a ratings file ``user_id item_id rating
timestamp`` (tab-separated), users ``user_id|age|gender|occupation|zip_code``, items ``item_id|title|
release_date|video_release_date|imdb_url|<one 0/1 flag per genre>`` (latin-1) and the genre names
``name|index``. Every line is read as text and split here, so a line with the wrong number of fields
or a value that does not parse becomes a quarantined row with its raw text and a reason instead of a
failed job or a silent null; input lines always equal bronze rows plus quarantined rows, checked on
the written tables.

Users are then embedded with Spark MLlib ALS (explicit ratings). Its held-out MAE is measured on a
seeded split before the final fit on every rating; the seed's autoencoder reported a "validation
MAE of ~0.24", but that is the reconstruction error of the whole user x film matrix with unrated
films filled with 0 (about 94% of the cells) and a sigmoid output capped at 1: it is not an error on
ratings and cannot be compared with a rating-prediction MAE on the 1-5 scale.

``silver/entities`` holds what the existing ``sweep`` and ``segment`` stages cluster: each user's
ALS factors scaled to unit length (``taste_*``, the seed's row normalisation; squared distances
between users then lie in 0..4), age min-max scaled and the one-hot demographics, both multiplied by
``ratings.demographics_weight`` (and left out at weight 0, the default: segments by taste alone,
profiled by demographics afterwards). Raw demographics are kept in ``_``-prefixed columns, which
are never clustered on.
"""

from __future__ import annotations

import math
import re
import time

from pyspark import StorageLevel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.recommendation import ALS
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from seglake.core.config import RatingsSource, SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, overwrite_table, read_delta, read_source, write_run

RATING_FIELDS = {"user_id": "long", "item_id": "long", "rating": "int", "timestamp": "long"}
USER_FIELDS = {"user_id": "long", "age": "int", "gender": "string", "occupation": "string",
               "zip_code": "string"}
ITEM_FIELDS = {"item_id": "long", "title": "string", "release_date": "string",
               "video_release_date": "string", "imdb_url": "string"}
GENDERS = ["F", "M"]
MAX_AGE = 120
# The seed's autoencoder "validation MAE", printed beside ALS's with the caveat in the docstring.
SEED_AUTOENCODER_MAE = 0.24
ALS_METRICS = (
    "run_id string, rank int, reg_param double, max_iter int, seed int, holdout_fraction double, "
    "train_ratings long, test_ratings long, scored_ratings long, mae double, rmse double, "
    "baseline_mae double, seed_autoencoder_mae double, seconds double"
)


def bronze_path(tables: Tables, table: str) -> str:
    """``bronze/ratings``, ``bronze/users``, ``bronze/items`` or ``bronze/quarantine``.

    A thin alias of :meth:`Tables.bronze`, kept for the report and the tests that import it.

    >>> bronze_path(Tables("/lake", "ml"), "ratings")
    '/lake/ml/bronze/ratings'
    """
    return tables.bronze(table)


# --- reading and validating lines ---------------------------------------------------------------

# The CSV reader is used only because it decodes the configured encoding (latin-1 titles): a
# separator and a quote that never occur keep each line whole, so splitting and typing happen here.
LINE_OPTIONS = {"sep": "\u0001", "quote": "", "header": "false"}


def read_lines(spark: SparkSession, path: str, encoding: str, key: str = "ratings") -> DataFrame:
    """Every line of a text file as ``_raw``, with ``_ingest_file`` and ``_row`` (file order).

    Read by :func:`seglake.core.tables.read_source`, so a missing or unreadable file is a one-line
    :class:`SeglakeError` naming ``key`` (the config key of the file) and the path.
    """
    frame = read_source(spark, path, "csv", {**LINE_OPTIONS, "encoding": encoding}, key)
    # The one column Spark finds (`_c0`); an empty file has none, and no rows.
    line = frame[frame.columns[0]] if frame.columns else F.lit(None).cast("string")
    return frame.select(line.alias("_raw"), F.col("_metadata.file_path").alias("_ingest_file"),
                        F.monotonically_increasing_id().alias("_row"))


def split_fields(
    lines: DataFrame, separator: str, fields: dict[str, str], optional: tuple[str, ...] = ()
) -> DataFrame:
    """Split ``_raw`` on ``separator`` into typed ``fields`` and start the ``_reasons`` array.

    A line whose field count differs from ``len(fields)`` is ``malformed_line``; an empty value is
    ``null:<col>`` (or null, for ``optional`` fields); a value that does not parse as its type is
    ``bad_type:<col>``.

    Parameters
    ----------
    lines : DataFrame
        ``_raw``, ``_ingest_file`` and ``_row``, as :func:`read_lines` gives.
    separator : str
        The field separator (taken literally, not as a regular expression).
    fields : dict
        Column name → Spark SQL type, in file order.
    optional : tuple of str
        Fields that may be empty (null without a reason).

    Returns
    -------
    DataFrame
        The typed ``fields`` (null where the line does not fit), ``_raw``, ``_ingest_file``,
        ``_row`` and ``_reasons`` (an array, empty for a usable line).
    """
    parts = F.split(F.col("_raw"), re.escape(separator), -1)
    fits = F.size(parts) == len(fields)
    text = {name: F.nullif(F.trim(parts[i]), F.lit("")) for i, name in enumerate(fields)}
    checks = [F.when(~fits, F.lit("malformed_line"))]
    for name, kind in fields.items():
        empty = F.lit(None) if name in optional else F.lit(f"null:{name}")
        checks.append(F.when(fits, F.when(text[name].isNull(), empty)
                             .when(text[name].try_cast(kind).isNull(), F.lit(f"bad_type:{name}"))))
    return lines.select(
        *[F.when(fits, text[name].try_cast(kind)).alias(name) for name, kind in fields.items()],
        "_raw", "_ingest_file", "_row", F.array_compact(F.array(*checks)).alias("_reasons"),
    )


def add_reason(frame: DataFrame, condition: Column, reason: str) -> DataFrame:
    """Append ``reason`` to ``_reasons`` where ``condition`` holds (a null condition adds nothing).

    Parameters
    ----------
    frame : DataFrame
        Any frame with a ``_reasons`` array column.
    condition : Column
        A boolean column; null counts as false.
    reason : str
        The text appended, e.g. ``not_allowed:rating``.

    Returns
    -------
    DataFrame
        ``frame`` with ``_reasons`` extended.
    """
    return frame.withColumn("_reasons", F.when(F.coalesce(condition, F.lit(False)),
                                               F.array_append("_reasons", F.lit(reason)))
                            .otherwise(F.col("_reasons")))


def first_copy_only(frame: DataFrame, keys: list[str], reason: str) -> DataFrame:
    """Among otherwise valid rows sharing ``keys``, keep the first (file order); flag the rest.

    Parameters
    ----------
    frame : DataFrame
        With ``_reasons``, ``_ingest_file`` and ``_row``.
    keys : list of str
        The columns a row must be unique on.
    reason : str
        Given to every later copy (``duplicate_id``, ``duplicate_rating``).

    Returns
    -------
    DataFrame
        ``frame`` with ``reason`` added to the later copies.
    """
    valid = F.size("_reasons") == 0
    order = Window.partitionBy(*keys, valid).orderBy("_ingest_file", "_row")
    return add_reason(frame, valid & (F.row_number().over(order) > 1), reason)


def genre_order(pairs: list[tuple[str, int]], path: str) -> list[str]:
    """Genre names in flag order from ``(name, index)`` pairs; indices must be 0..n-1, each once.

    Parameters
    ----------
    pairs : list of (str, int)
        The lines of the genre file.
    path : str
        The file, for the error message.

    Returns
    -------
    list of str
        Name of flag 0, flag 1, ...

    Raises
    ------
    SeglakeError
        No pair, or indices that are not 0..n-1 each once.

    >>> genre_order([("Action", 1), ("unknown", 0), ("Comedy", 2)], "u.genre")
    ['unknown', 'Action', 'Comedy']
    >>> genre_order([("Action", 1)], "u.genre")
    Traceback (most recent call last):
    ...
    seglake.core.errors.SeglakeError: ratings.genres: u.genre: indices must be 0..n-1, each once (got [1])
    """
    by_index = {index: genre for genre, index in pairs}
    if sorted(by_index) != list(range(len(pairs))) or not pairs:
        raise SeglakeError(f"ratings.genres: {path}: indices must be 0..n-1, each once "
                           f"(got {sorted(by_index)})")
    return [by_index[i] for i in range(len(pairs))]


def read_genres(spark: SparkSession, source: RatingsSource) -> list[str]:
    """Genre names in flag order from ``name|index`` lines (19 for ml-100k); a tiny file, collected."""
    rows = split_fields(read_lines(spark, source.genres, source.encoding, "ratings.genres"),
                        source.separator, {"genre": "string", "index": "int"}).collect()
    bad = [r["_raw"] for r in rows if r["_reasons"]]
    if bad:
        raise SeglakeError(f"ratings.genres: {source.genres}: line {bad[0]!r} is not 'name|index'")
    return genre_order([(r["genre"], r["index"]) for r in rows], source.genres)


def parse_users(lines: DataFrame, separator: str) -> DataFrame:
    """Users with ``_reasons``: bad age (outside 1..120), gender not F/M, repeated ``user_id``.

    Parameters
    ----------
    lines : DataFrame
        The lines of the users file (:func:`read_lines`).
    separator : str
        ``ratings.separator``.

    Returns
    -------
    DataFrame
        ``USER_FIELDS`` typed, ``_raw``, ``_ingest_file``, ``_row`` and ``_reasons``.
    """
    users = split_fields(lines, separator, USER_FIELDS)
    users = add_reason(users, (F.col("age") < 1) | (F.col("age") > MAX_AGE), "out_of_range:age")
    users = add_reason(users, ~F.col("gender").isin(GENDERS), "not_allowed:gender")
    return first_copy_only(users, ["user_id"], "duplicate_id")


def parse_items(lines: DataFrame, separator: str, genres: list[str]) -> DataFrame:
    """Items with a ``genres`` array built from the 0/1 flags; a flag other than 0/1 is rejected.

    Parameters
    ----------
    lines : DataFrame
        The lines of the items file (:func:`read_lines`).
    separator : str
        ``ratings.separator``.
    genres : list of str
        Genre names in flag order (:func:`read_genres`).

    Returns
    -------
    DataFrame
        ``ITEM_FIELDS`` typed, ``genres`` (array of names), ``_raw``, ``_ingest_file``, ``_row``
        and ``_reasons`` (``not_allowed:genre_flag``, ``duplicate_id`` and those of
        :func:`split_fields`).
    """
    flags = {f"_genre_{i}": "int" for i in range(len(genres))}
    items = split_fields(lines, separator, {**ITEM_FIELDS, **flags},
                         optional=("release_date", "video_release_date", "imdb_url"))
    for flag in flags:
        items = add_reason(items, ~F.col(flag).isin(0, 1), "not_allowed:genre_flag")
    items = first_copy_only(items, ["item_id"], "duplicate_id")
    genre_list = F.array_compact(F.array(*[F.when(F.col(f) == 1, F.lit(g)) for f, g in zip(flags, genres)]))
    return items.withColumn("genres", genre_list).drop(*flags)


def parse_ratings(lines: DataFrame, separator: str, users: DataFrame, items: DataFrame) -> DataFrame:
    """Ratings with ``_reasons``: stars outside 1..5, a user or item not among the valid ones, and
    a repeated (user, item) pair.

    Parameters
    ----------
    lines : DataFrame
        The lines of the ratings file (:func:`read_lines`).
    separator : str
        ``ratings.ratings_separator``.
    users, items : DataFrame
        :func:`parse_users` and :func:`parse_items`: only their rows without a reason are known.

    Returns
    -------
    DataFrame
        ``RATING_FIELDS`` typed, ``_raw``, ``_ingest_file``, ``_row`` and ``_reasons``.
    """
    ratings = split_fields(lines, separator, RATING_FIELDS)
    ratings = add_reason(ratings, ~F.col("rating").between(1, 5), "not_allowed:rating")
    known_users = users.where(F.size("_reasons") == 0).select("user_id", F.lit(True).alias("_known_user"))
    known_items = items.where(F.size("_reasons") == 0).select("item_id", F.lit(True).alias("_known_item"))
    ratings = (ratings.join(F.broadcast(known_users), "user_id", "left")
               .join(F.broadcast(known_items), "item_id", "left"))
    ratings = add_reason(ratings, F.col("user_id").isNotNull() & F.col("_known_user").isNull(), "unknown_user")
    ratings = add_reason(ratings, F.col("item_id").isNotNull() & F.col("_known_item").isNull(), "unknown_item")
    return first_copy_only(ratings.drop("_known_user", "_known_item"), ["user_id", "item_id"],
                           "duplicate_rating")


def _quarantine_rows(frame: DataFrame, table: str, run_id: str) -> DataFrame:
    # The columns of ingest.py's quarantine, plus the bronze table the line was meant for.
    return frame.where(F.size("_reasons") > 0).select(
        F.col("_raw").alias("raw"), F.concat_ws(";", F.array_distinct("_reasons")).alias("reason"), "_ingest_file",
        F.current_timestamp().alias("_ingest_ts"), F.lit(run_id).alias("_ingest_run"),
        F.lit(table).alias("table"))


def _valid(frame: DataFrame, columns: list[str]) -> DataFrame:
    return frame.where(F.size("_reasons") == 0).select(*columns, "_ingest_file")


def write_bronze(spark: SparkSession, config: SeglakeConfig, run_id: str, genres: list[str]) -> dict:
    """Write ``bronze/{users,items,ratings,quarantine}`` and reconcile lines per file.

    Returns
    -------
    dict
        Per file: ``input``, ``bronze``, ``quarantined`` and the quarantine ``reasons`` counts.
    """
    source, tables = config.ratings, Tables.of(config)
    lines = {name: read_lines(spark, path, source.encoding, f"ratings.{name}")
             for name, path in (("users", source.users), ("items", source.items), ("ratings", source.ratings))}
    users = parse_users(lines["users"], source.separator).persist(StorageLevel.MEMORY_AND_DISK)
    items = parse_items(lines["items"], source.separator, genres).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        ratings = parse_ratings(lines["ratings"], source.ratings_separator, users, items)
        parsed = {"users": (users, list(USER_FIELDS)),
                  "items": (items, [*ITEM_FIELDS, "genres"]),
                  "ratings": (ratings, list(RATING_FIELDS))}
        quarantine = None
        for name, (frame, columns) in parsed.items():
            overwrite_table(_valid(frame, columns), tables.bronze(name), run_id)
            rows = _quarantine_rows(frame, name, run_id)
            quarantine = rows if quarantine is None else quarantine.unionByName(rows)
        overwrite_table(quarantine, tables.bronze("quarantine"), run_id)
        inputs = {name: frame.count() for name, (frame, _) in parsed.items()}
    finally:
        users.unpersist()
        items.unpersist()
    # Reconcile on the written tables: every input line is a bronze row or a quarantined one.
    counts = {}
    rejected = read_delta(spark, tables.bronze("quarantine"), "ratings")
    for name, path in (("users", source.users), ("items", source.items), ("ratings", source.ratings)):
        written = read_delta(spark, tables.bronze(name), "ratings").count()
        reasons = {r["reason"]: r["count"] for r in
                   rejected.where(F.col("table") == name).groupBy("reason").count().collect()}
        # (a handful of distinct reasons per table)
        counts[name] = {"input": inputs[name], "bronze": written,
                        "quarantined": sum(reasons.values()), "reasons": reasons}
        if inputs[name] != written + counts[name]["quarantined"]:
            raise SeglakeError(f"ratings: {path} does not reconcile: {inputs[name]:,} lines != bronze "
                               f"{written:,} + quarantine {counts[name]['quarantined']:,}")
        if written == 0:
            raise SeglakeError(f"ratings: no valid row in {path} (reasons: {reasons})")
    return counts


# --- ALS and the entities table -----------------------------------------------------------------

def _als(config: SeglakeConfig) -> ALS:
    settings = config.ratings.als
    return ALS(rank=settings.rank, regParam=settings.reg_param, maxIter=settings.max_iter,
               seed=settings.seed, userCol="user_id", itemCol="item_id", ratingCol="rating",
               coldStartStrategy="drop", nonnegative=False)


def als_holdout(ratings: DataFrame, config: SeglakeConfig) -> dict:
    """Fit ALS on a seeded share of ratings and measure MAE / RMSE on the rest.

    Ratings whose user or item is absent from the training share cannot be predicted and are
    dropped (``coldStartStrategy="drop"``); ``scored_ratings`` says how many were scored.
    ``baseline_mae`` predicts the training mean for every rating: ALS must beat it to mean anything.

    Parameters
    ----------
    ratings : DataFrame
        ``user_id``, ``item_id``, ``rating`` (float).
    config : SeglakeConfig
        ``ratings.als``: rank, regularisation, iterations, seed and ``holdout_fraction``.

    Returns
    -------
    dict
        ``train_ratings``, ``test_ratings``, ``scored_ratings``, ``mae``, ``rmse``, ``baseline_mae``.
    """
    settings = config.ratings.als
    train, test = ratings.randomSplit([1.0 - settings.holdout_fraction, settings.holdout_fraction],
                                      seed=settings.seed)
    train = train.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        model = _als(config).fit(train)
        scored = model.transform(test).persist(StorageLevel.MEMORY_AND_DISK)
        evaluate = {m: RegressionEvaluator(metricName=m, labelCol="rating", predictionCol="prediction")
                    .evaluate(scored) for m in ("mae", "rmse")}
        mean = train.agg(F.avg("rating")).first()[0]
        baseline = test.agg(F.avg(F.abs(F.col("rating") - F.lit(mean)))).first()[0]
        counts = {"train_ratings": train.count(), "test_ratings": test.count(),
                  "scored_ratings": scored.count()}
        scored.unpersist()
    finally:
        train.unpersist()
    return {**counts, "mae": float(evaluate["mae"]), "rmse": float(evaluate["rmse"]),
            "baseline_mae": float(baseline)}


def column_name(prefix: str, value: str) -> str:
    """A one-hot column name Delta stores without column mapping.

    >>> column_name("occupation", "lawyer / judge"), column_name("gender", "?")
    ('occupation_lawyer_judge', 'gender_blank')
    """
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9]+', '_', value).strip('_') or 'blank'}"


def entities_frame(factors: DataFrame, users: DataFrame, config: SeglakeConfig) -> DataFrame:
    """``silver/entities``: unit-length ALS factors + weighted demographics (see module docstring).

    ``factors`` is ALS's ``userFactors`` (``id``, ``features``); users without a rating have no
    factors and are not entities. One-hot values are ``weight / sqrt(2)`` so that two users who
    differ in one demographic are ``weight**2`` apart in squared distance, like an age gap over the
    whole range.

    Parameters
    ----------
    factors : DataFrame
        ``id``, ``features`` (array of ``ratings.als.rank`` floats).
    users : DataFrame
        ``bronze/users``: ``user_id``, ``age``, ``gender``, ``occupation``, ...
    config : SeglakeConfig
        ``ratings.als.rank``, ``ratings.demographics`` and ``ratings.demographics_weight``.

    Returns
    -------
    DataFrame
        ``entity_id``, ``taste_00``.., ``age_scaled``, one column per demographic value (neither
        when ``ratings.demographics_weight`` is 0: tastes alone are clustered), and the raw
        ``_age``, ``_gender``, ``_occupation``. (The age range and the demographic values are
        collected: a handful of rows.)
    """
    source = config.ratings
    rank, weight = source.als.rank, source.demographics_weight
    norm = F.sqrt(F.aggregate("features", F.lit(0.0), lambda acc, x: acc + x * x))
    taste = [(F.col("features")[i] / norm).cast("double").alias(f"taste_{i:02d}") for i in range(rank)]
    joined = factors.join(users, factors["id"] == users["user_id"])
    bounds = users.agg(F.min("age"), F.max("age")).first()
    low, span = bounds[0], max(1, bounds[1] - bounds[0])
    columns = [F.col("user_id").cast("string").alias("entity_id"), *taste]
    # Weight 0 clusters on tastes alone: columns of zeros would only clutter the vector and profiles.
    if weight > 0:
        columns.append((F.lit(weight) * (F.col("age") - F.lit(low)) / F.lit(span)).cast("double")
                       .alias("age_scaled"))
        one_hot = weight / math.sqrt(2.0)
        for attribute in source.demographics:
            values = [r[0] for r in users.select(attribute).distinct().orderBy(attribute).collect()]  # few
            columns += [F.when(F.col(attribute) == v, F.lit(one_hot)).otherwise(F.lit(0.0))
                        .alias(column_name(attribute, v)) for v in values]
    columns += [F.col("age").alias("_age"), F.col("gender").alias("_gender"),
                F.col("occupation").alias("_occupation")]
    return joined.select(*columns)


def ingest_ratings(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """The ``ratings`` stage: bronze tables + quarantine, ALS held-out MAE, ``silver/entities``.

    Writes ``bronze/{ratings,users,items,quarantine}`` and ``silver/entities`` (whole-table
    overwrites: the current state) and the run's row of ``gold/als_metrics`` (``replaceWhere`` on
    ``run_id``).

    Returns
    -------
    StageResult
        ``rows_in`` rating lines, ``rows_out`` entities; ``details`` holds ``files`` (per-file
        reconciliation), ``als`` (the metrics row as a dict) and ``genres``.

    Raises
    ------
    SeglakeError
        A missing file, a genre file that is not ``name|index``, a file without one valid row, or
        counts that do not reconcile.
    """
    started = time.monotonic()
    if config.ratings is None:
        raise SeglakeError(f"{config.source_file}: the ratings stage needs a 'ratings' section")
    tables = Tables.of(config)
    genres = read_genres(spark, config.ratings)
    files = write_bronze(spark, config, run_id, genres)
    # ALS learns from the bronze tables as committed, not from the parsed frames.
    ratings = read_delta(spark, tables.bronze("ratings"), "ratings").select(
        "user_id", "item_id", F.col("rating").cast("float").alias("rating"))
    users = read_delta(spark, tables.bronze("users"), "ratings")
    ratings = ratings.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        fit_started = time.monotonic()
        holdout = als_holdout(ratings, config)
        # The embeddings come from a fit on every rating: the held-out fit exists to measure error.
        factors = _als(config).fit(ratings).userFactors
        overwrite_table(entities_frame(factors, users, config), tables.entities, run_id)
        als_seconds = time.monotonic() - fit_started
    finally:
        ratings.unpersist()
    settings = config.ratings.als
    metrics = {"run_id": run_id, "rank": settings.rank, "reg_param": settings.reg_param,
               "max_iter": settings.max_iter, "seed": settings.seed,
               "holdout_fraction": settings.holdout_fraction, **holdout,
               "seed_autoencoder_mae": SEED_AUTOENCODER_MAE, "seconds": als_seconds}
    row = [tuple(metrics[c.split()[0]] for c in ALS_METRICS.split(", "))]
    write_run(spark.createDataFrame(row, ALS_METRICS), tables.gold("als_metrics"), run_id)
    entities = read_delta(spark, tables.entities, "ratings").count()
    quarantined = ", ".join(f"{name} {c['quarantined']:,} ({', '.join(f'{r} {n}' for r, n in c['reasons'].items())})"
                            for name, c in files.items() if c["quarantined"])
    message = (
        f"bronze: ratings {files['ratings']['bronze']:,}, users {files['users']['bronze']:,}, items "
        f"{files['items']['bronze']:,}; quarantined: {quarantined or 'none'}; ALS rank {settings.rank} "
        f"held-out MAE {holdout['mae']:.3f} (RMSE {holdout['rmse']:.3f}, predicting the mean: "
        f"{holdout['baseline_mae']:.3f}) on {holdout['scored_ratings']:,} ratings, 1-5 stars — the seed's "
        f"autoencoder reported {SEED_AUTOENCODER_MAE} but on a different target (reconstruction of the "
        f"whole user x film matrix, ~94% unrated cells filled with 0); {entities:,} users embedded"
    )
    return StageResult("ratings", files["ratings"]["input"], entities, time.monotonic() - started,
                       {"files": files, "als": metrics, "genres": genres}, message)
