"""What separates the segments: the share of between-segment variance carried by each feature block.

Every column is standardized over the segmented users (mean 0, variance 1), so a column's
between-segment sum of squares, ``sum over segments of users * (segment mean)^2``, is ``users *``
the share of its variance that lies between segments (its eta squared). A block's ``between_ss`` sums
that over its columns; ``share`` is the block's part of the total over all blocks, and
``explained`` = between_ss / (users * columns) is the mean eta squared of its columns.

Blocks are measured on the users' raw attributes, whether or not the run clustered on them
(``clustered`` says which did): a run that clusters on tastes alone can still turn out to split
users by gender, and this table is where that shows. The blocks of a ratings run are ``tastes``
(the unit-length ALS factors), ``age`` (years), ``gender`` and ``occupation`` (one 0/1 column per
value, as in ``silver/entities``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

BLOCK_VARIANCE = ("run_id string, block string, columns int, clustered boolean, between_ss double, "
                  "share double, explained double")


def segment_moments(frame: DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per segment: ``users`` and the mean and mean square of each of ``columns``.

    One aggregation in Spark; k rows reach the driver.

    Parameters
    ----------
    frame : DataFrame
        ``segment`` and the numeric ``columns``.
    columns : list of str

    Returns
    -------
    pandas.DataFrame
        ``segment``, ``users``, ``mean:<column>``, ``square:<column>``.
    """
    value = {c: F.col(c).cast("double") for c in columns}
    return frame.groupBy("segment").agg(
        F.count(F.lit(1)).alias("users"),
        *[F.avg(value[c]).alias(f"mean:{c}") for c in columns],
        *[F.avg(value[c] * value[c]).alias(f"square:{c}") for c in columns],
    ).toPandas()


def between_ss(moments: pd.DataFrame, column: str) -> float:
    """Between-segment sum of squares of ``column`` once standardized (0 for a constant column).

    >>> moments = pd.DataFrame({"users": [2, 2], "mean:x": [1.0, 3.0], "square:x": [1.0, 9.0]})
    >>> between_ss(moments, "x")  # x = 1, 1, 3, 3: all of its variance is between the two segments
    4.0
    """
    users = moments["users"].to_numpy(dtype=float)
    means = moments[f"mean:{column}"].to_numpy(dtype=float)
    total = users.sum()
    mean = float((users * means).sum() / total)
    square = float((users * moments[f"square:{column}"].to_numpy(dtype=float)).sum() / total)
    variance = square - mean * mean
    if variance <= 1e-12 * max(1.0, square):
        return 0.0
    return float((users * (means - mean) ** 2).sum() / variance)


def block_variance(moments: pd.DataFrame, blocks: dict[str, list[str]], clustered: set[str]) -> pd.DataFrame:
    """The share of between-segment variance of each block (see the module docstring).

    Parameters
    ----------
    moments : pandas.DataFrame
        :func:`segment_moments` over every column of ``blocks``.
    blocks : dict of str to list of str
        Block name → its columns, in the order the table lists them.
    clustered : set of str
        The blocks that were in the clustered vector.

    Returns
    -------
    pandas.DataFrame
        ``block, columns, clustered, between_ss, share, explained``; ``share`` sums to 1 (all 0 if
        nothing differs between segments).

    Examples
    --------
    >>> moments = pd.DataFrame({"users": [2, 2], "mean:t": [1.0, 3.0], "square:t": [1.0, 9.0],
    ...                         "mean:g": [0.5, 0.5], "square:g": [0.5, 0.5]})
    >>> block_variance(moments, {"tastes": ["t"], "gender": ["g"]}, {"tastes"}).to_dict("records")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'block': 'tastes', 'columns': 1, 'clustered': True, 'between_ss': 4.0, 'share': 1.0, 'explained': 1.0},
     {'block': 'gender', 'columns': 1, 'clustered': False, 'between_ss': 0.0, 'share': 0.0, 'explained': 0.0}]
    """
    users = float(moments["users"].sum())
    rows = [{"block": name, "columns": len(columns), "clustered": name in clustered,
             "between_ss": sum(between_ss(moments, c) for c in columns)} for name, columns in blocks.items()]
    total = sum(r["between_ss"] for r in rows)
    for r in rows:
        r["share"] = r["between_ss"] / total if total > 0 else 0.0
        r["explained"] = r["between_ss"] / (users * r["columns"]) if r["columns"] else 0.0
    return pd.DataFrame(rows, columns=["block", "columns", "clustered", "between_ss", "share", "explained"])


def leading_block(blocks: pd.DataFrame) -> str:
    """One sentence: which block carries most of the separation, and whether that is a majority.

    >>> table = pd.DataFrame({"block": ["tastes", "gender"], "share": [0.3, 0.7], "clustered": [True, True]})
    >>> leading_block(table)
    'gender carries most of the separation between segments: 70% of the between-segment variance.'
    >>> leading_block(table.assign(share=[0.45, 0.35]))
    'No block carries most of the separation; the largest share is tastes, 45% of the between-segment variance.'
    """
    top = blocks.loc[int(np.argmax(blocks["share"].to_numpy()))]
    if top["share"] > 0.5:
        return (f"{top['block']} carries most of the separation between segments: {top['share']:.0%} of the "
                f"between-segment variance.")
    return (f"No block carries most of the separation; the largest share is {top['block']}, "
            f"{top['share']:.0%} of the between-segment variance.")


def ratings_blocks(entities: DataFrame, segments: DataFrame) -> tuple[DataFrame, dict[str, list[str]], set[str]]:
    """The blocks of a ratings run over ``silver/entities``, ready for :func:`segment_moments`.

    Parameters
    ----------
    entities : DataFrame
        ``silver/entities`` of the ratings stage: ``entity_id``, ``taste_*``, the clustered
        demographics (if any) and the raw ``_age``, ``_gender``, ``_occupation``.
    segments : DataFrame
        ``user_id``, ``segment`` of the run.

    Returns
    -------
    frame, blocks, clustered
        ``segment`` and one column per block column (tastes as they are, age in years, a 0/1 column
        per gender and occupation value); block name → columns; the blocks present in the
        clustered vector. (The gender and occupation values are collected: a handful.)
    """
    from seglake.segmentation.prepare import feature_columns
    from seglake.usecases.movielens.ratings import column_name

    features = feature_columns(entities)[0]
    people = entities.join(segments.select(F.col("user_id").cast("string").alias("entity_id"), "segment"),
                           "entity_id")
    tastes = [c for c in entities.columns if c.startswith("taste_")]
    columns = [F.col(c) for c in tastes] + [F.col("_age").cast("double").alias("age")]
    blocks = {"tastes": tastes, "age": ["age"]}
    for attribute in ("gender", "occupation"):
        values = [r[0] for r in entities.select(f"_{attribute}").distinct().orderBy(f"_{attribute}").collect()]
        names = [column_name(attribute, v) for v in values]
        columns += [F.when(F.col(f"_{attribute}") == v, 1.0).otherwise(0.0).alias(n)
                    for v, n in zip(values, names)]
        blocks[attribute] = names
    clustered = {"tastes"} if any(c in features for c in tastes) else set()
    clustered |= {"age"} if "age_scaled" in features else set()
    clustered |= {a for a in ("gender", "occupation") if any(f.startswith(f"{a}_") for f in features)}
    return people.select("segment", *columns), blocks, clustered
