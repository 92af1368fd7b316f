"""The ``tastes`` stage of a ratings config: what each segment watches, who it is, which genres it likes.

Three gold tables, keyed by ``run_id`` and built in Spark from ``bronze/ratings``, ``bronze/users``,
``bronze/items`` and the run's ``gold/segments``:

- ``gold/top_titles``: the seed's tables, the most frequent titles at each rating 5..1 with their
  counts (``segment``, ``rating``, ``rank``, ``item_id``, ``title``, ``count``), the top
  ``ratings.top_titles`` per segment and rating (fewer where fewer films got that rating). Segment
  ``-1`` is every user, the seed's first table. Ties in count go to the smaller ``item_id``, so the
  table is the same on every run. ml-100k has a few titles under two item ids: they are counted
  per item, as they are different catalogue entries.
- ``gold/segment_demographics``: per segment and attribute (``gender``, ``occupation``,
  ``age_band``, ``state``) and value, ``users``, ``share`` of the segment, ``overall_share`` among
  every segmented user, and ``index`` = share / overall_share (above 1: over-represented). The
  ``state`` of a user comes from their zip code (:mod:`~seglake.usecases.movielens.geography`); a
  foreign, unknown or malformed zip code is a value of its own, counted like a state.
- ``gold/genre_preference``: per segment and genre, the number of ``ratings`` of films of that
  genre, their ``share`` of the segment's ratings (a film in two genres counts in both),
  ``mean_rating``, the same two overall, ``lift`` = share / overall_share and ``rating_vs_overall``
  = mean_rating - overall_mean_rating.
- ``gold/block_variance``: per feature block (``tastes``, ``age``, ``gender``, ``occupation``) its
  share of the between-segment variance (:mod:`~seglake.usecases.movielens.separation`), from
  ``silver/entities``: whether the segments differ in taste or are a demographic split.
"""

from __future__ import annotations

import time

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, read_delta, write_run
from seglake.usecases.movielens.geography import UNMATCHED, with_state
from seglake.usecases.movielens.separation import (
    BLOCK_VARIANCE,
    block_variance,
    leading_block,
    ratings_blocks,
    segment_moments,
)

ALL_USERS = -1
AGE_BANDS = [(18, "under 18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54")]
OLDEST_BAND = "55+"


def run_segments(spark: SparkSession, tables: Tables, run_id: str) -> DataFrame:
    """``user_id`` (long) and ``segment`` of the run's ``gold/segments``.

    Raises
    ------
    SeglakeError
        No table, or no row for the run: names the segment stage.
    """
    segments = (read_delta(spark, tables.gold("segments"), "segment")
                .where(F.col("run_id") == run_id)
                .select(F.col("entity_id").cast("long").alias("user_id"), "segment"))
    if not segments.limit(1).count():
        raise SeglakeError(f"gold/segments has no rows for run '{run_id}': run the segment stage first")
    return segments


def bronze(spark: SparkSession, tables: Tables, table: str) -> DataFrame:
    """A bronze table of the ratings stage (``ratings``, ``users`` or ``items``)."""
    return read_delta(spark, tables.bronze(table), "ratings")


def top_titles(ratings: DataFrame, items: DataFrame, segments: DataFrame, top_n: int) -> DataFrame:
    """The most frequent titles per segment (and ``-1`` = everyone) and rating, with their counts.

    Parameters
    ----------
    ratings : DataFrame
        ``user_id``, ``item_id``, ``rating``.
    items : DataFrame
        ``item_id``, ``title``.
    segments : DataFrame
        ``user_id``, ``segment``.
    top_n : int
        Rows kept per segment and rating.

    Returns
    -------
    DataFrame
        ``segment, rating, rank, item_id, title, count``; rank 1 is the most frequent.
    """
    rated = ratings.join(segments, "user_id").select("segment", "rating", "item_id")
    everyone = ratings.select(F.lit(ALL_USERS).alias("segment"), "rating", "item_id")
    counts = rated.unionByName(everyone).groupBy("segment", "rating", "item_id").count()
    order = Window.partitionBy("segment", "rating").orderBy(F.desc("count"), "item_id")
    top = counts.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= top_n)
    return top.join(items.select("item_id", "title"), "item_id").select(
        "segment", "rating", "rank", "item_id", "title", "count")


def age_band(age: F.Column) -> F.Column:
    """The seed's age plot in bands: under 18, 18-24, 25-34, 35-44, 45-54, 55+.

    Parameters
    ----------
    age : Column
        Ages in years.

    Returns
    -------
    Column
        The band's label (``AGE_BANDS``, then ``OLDEST_BAND``); a null age would fall in
        ``55+``, but bronze users always have one.
    """
    band = F.when(F.lit(False), F.lit(None))
    for upper, label in AGE_BANDS:
        band = band.when(age < upper, F.lit(label))
    return band.otherwise(F.lit(OLDEST_BAND))


def demographics(users: DataFrame, segments: DataFrame) -> DataFrame:
    """Gender, occupation, age-band and state make-up of each segment against every segmented user.

    Parameters
    ----------
    users : DataFrame
        ``user_id``, ``gender``, ``occupation``, ``age``, ``state`` (:func:`with_state`).
    segments : DataFrame
        ``user_id``, ``segment``; users without a segment are left out of every share.

    Returns
    -------
    DataFrame
        ``segment, attribute, value, users, share, overall_share, index`` with ``attribute`` one of
        ``gender``, ``occupation``, ``age_band``, ``state``; ``share`` sums to 1 per segment and
        attribute.
    """
    people = users.join(segments, "user_id")
    pairs = people.select("segment", F.explode(F.array(
        F.struct(F.lit("gender").alias("attribute"), F.col("gender").alias("value")),
        F.struct(F.lit("occupation").alias("attribute"), F.col("occupation").alias("value")),
        F.struct(F.lit("age_band").alias("attribute"), age_band(F.col("age")).alias("value")),
        F.struct(F.lit("state").alias("attribute"), F.col("state").alias("value")),
    )).alias("p")).select("segment", "p.*")
    sizes = people.groupBy("segment").agg(F.count(F.lit(1)).alias("segment_users"))
    overall = pairs.groupBy("attribute", "value").agg(F.count(F.lit(1)).alias("all_users"))
    total = F.sum("all_users").over(Window.partitionBy("attribute"))
    overall = overall.select("attribute", "value", (F.col("all_users") / total).alias("overall_share"))
    per = pairs.groupBy("segment", "attribute", "value").agg(F.count(F.lit(1)).alias("users"))
    return (per.join(sizes, "segment").join(overall, ["attribute", "value"])
            .select("segment", "attribute", "value", "users",
                    (F.col("users") / F.col("segment_users")).alias("share"), "overall_share")
            .withColumn("index", F.col("share") / F.col("overall_share")))


def genre_preference(ratings: DataFrame, items: DataFrame, segments: DataFrame) -> DataFrame:
    """Share and mean rating of each genre within each segment, against every segmented user.

    Parameters
    ----------
    ratings : DataFrame
        ``user_id``, ``item_id``, ``rating``.
    items : DataFrame
        ``item_id``, ``genres`` (array of names): a film in two genres counts in both.
    segments : DataFrame
        ``user_id``, ``segment``.

    Returns
    -------
    DataFrame
        ``segment, genre, ratings, share, mean_rating, overall_share, overall_mean_rating, lift,
        rating_vs_overall``. (Counting every segmented rating for ``overall_share`` runs one job.)
    """
    rated = ratings.join(segments, "user_id")
    by_genre = rated.join(items.select("item_id", F.explode("genres").alias("genre")), "item_id")
    per = by_genre.groupBy("segment", "genre").agg(F.count(F.lit(1)).alias("ratings"),
                                                    F.avg("rating").alias("mean_rating"))
    totals = rated.groupBy("segment").agg(F.count(F.lit(1)).alias("segment_ratings"))
    overall = by_genre.groupBy("genre").agg(F.count(F.lit(1)).alias("all_ratings"),
                                            F.avg("rating").alias("overall_mean_rating"))
    all_rated = rated.count()
    return (per.join(totals, "segment").join(overall, "genre")
            .select("segment", "genre", "ratings",
                    (F.col("ratings") / F.col("segment_ratings")).alias("share"), "mean_rating",
                    (F.col("all_ratings") / F.lit(all_rated)).alias("overall_share"),
                    "overall_mean_rating")
            .withColumn("lift", F.col("share") / F.col("overall_share"))
            .withColumn("rating_vs_overall", F.col("mean_rating") - F.col("overall_mean_rating")))


def _summary(titles: list, people: list, genres: list) -> str:
    """One line per segment: size, its most frequent 5-star title, most over-represented
    occupation and most over-represented genre (rows of the three tables, as dicts or Rows).

    >>> people = [{"segment": 0, "attribute": "gender", "value": "F", "users": 3, "share": 0.75, "index": 1.5},
    ...           {"segment": 0, "attribute": "gender", "value": "M", "users": 1, "share": 0.25, "index": 0.5}]
    >>> print(_summary([{"segment": 0, "rating": 5, "rank": 1, "title": "Heat (1995)"}], people,
    ...                [{"segment": 0, "genre": "Crime", "lift": 1.25}]))
      segment 0: 4 users, 75% women; top 5-star: Heat (1995); genre Crime x1.25
    """
    lines = []
    for segment in sorted({r["segment"] for r in people}):
        mine = [r for r in people if r["segment"] == segment]
        size = sum(r["users"] for r in mine if r["attribute"] == "gender")
        women = sum(r["share"] for r in mine if r["attribute"] == "gender" and r["value"] == "F")
        job = max((r for r in mine if r["attribute"] == "occupation" and r["users"] >= 3),
                  key=lambda r: r["index"], default=None)
        liked = max((r for r in genres if r["segment"] == segment), key=lambda r: r["lift"], default=None)
        five = next((r["title"] for r in titles if r["segment"] == segment and r["rating"] == 5
                     and r["rank"] == 1), "-")
        lines.append(
            f"  segment {segment}: {size} users, {women:.0%} women; top 5-star: {five}; "
            + (f"occupation {job['value']} x{job['index']:.1f}; " if job else "")
            + (f"genre {liked['genre']} x{liked['lift']:.2f}" if liked else ""))
    return "\n".join(lines)


def tastes(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """The ``tastes`` stage: ``gold/top_titles``, ``gold/segment_demographics``, ``gold/genre_preference``.

    Returns
    -------
    StageResult
        ``rows_in`` segmented users, ``rows_out`` rows written over the three tables; the message
        has one line per segment (see :func:`_summary`); ``details`` holds the row counts.

    Raises
    ------
    SeglakeError
        Not a ratings config, or the ratings / segment stages have not run.
    """
    started = time.monotonic()
    if config.ratings is None:
        raise SeglakeError(f"{config.source_file}: the tastes stage needs a 'ratings' section")
    tables = Tables.of(config)
    segments = run_segments(spark, tables, run_id)
    ratings, users, items = (bronze(spark, tables, t) for t in ("ratings", "users", "items"))
    outputs = {
        "top_titles": top_titles(ratings, items, segments, config.ratings.top_titles),
        "segment_demographics": demographics(with_state(spark, users), segments),
        "genre_preference": genre_preference(ratings, items, segments),
    }
    written = {}
    for name, frame in outputs.items():
        write_run(frame.select(F.lit(run_id).alias("run_id"), "*"), tables.gold(name), run_id)
        written[name] = (read_delta(spark, tables.gold(name), "tastes")
                         .where(F.col("run_id") == run_id).drop("run_id"))
    # Per segment: 5 ratings x top_n titles, ~75 attribute values and 19 genres — small.
    rows = {name: frame.collect() for name, frame in written.items()}
    separation = separation_table(spark, tables, segments, run_id)
    rows["block_variance"] = separation.to_dict("records")
    people = rows["segment_demographics"]
    users_in = sum(r["users"] for r in people if r["attribute"] == "gender")
    message = (", ".join(f"{name} {len(r):,} rows" for name, r in rows.items()) + "\n"
               + _summary(rows["top_titles"], people, rows["genre_preference"]) + "\n"
               + f"  state: {unmatched_line(people)}\n  {leading_block(separation)} By block: "
               + ", ".join(f"{r['block']} {r['share']:.0%}" for r in rows["block_variance"]))
    return StageResult("tastes", users_in, sum(len(r) for r in rows.values()),
                       time.monotonic() - started, {n: len(r) for n, r in rows.items()}, message)


def separation_table(spark: SparkSession, tables: Tables, segments: DataFrame, run_id: str) -> pd.DataFrame:
    """Write the run's ``gold/block_variance`` from ``silver/entities`` and return it (a row per
    block; see :func:`~seglake.usecases.movielens.separation.block_variance`)."""
    entities = read_delta(spark, tables.entities, "ratings")
    frame, blocks, clustered = ratings_blocks(entities, segments)
    table = block_variance(segment_moments(frame, [c for columns in blocks.values() for c in columns]),
                           blocks, clustered)
    columns = [c.split()[0] for c in BLOCK_VARIANCE.split(", ")]
    rows = spark.createDataFrame(table.assign(run_id=run_id)[columns], BLOCK_VARIANCE)
    write_run(rows, tables.gold("block_variance"), run_id)
    return table


def unmatched_line(people: list) -> str:
    """How many segmented users have no US state, by reason (rows of ``gold/segment_demographics``).

    >>> rows = [{"attribute": "state", "value": "AZ", "users": 5},
    ...         {"attribute": "state", "value": "unknown US zip code", "users": 2},
    ...         {"attribute": "gender", "value": "F", "users": 7}]
    >>> unmatched_line(rows)
    '2 of 7 users have no US state (unknown US zip code 2)'
    """
    states = [r for r in people if r["attribute"] == "state"]
    counts = {reason: sum(r["users"] for r in states if r["value"] == reason) for reason in UNMATCHED}
    missing = sum(counts.values())
    detail = ", ".join(f"{reason} {n:,}" for reason, n in counts.items() if n)
    return (f"{missing:,} of {sum(r['users'] for r in states):,} users have no US state"
            + (f" ({detail})" if detail else ""))
