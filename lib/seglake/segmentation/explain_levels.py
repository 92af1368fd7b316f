"""The explain stage's targets below the first density level (``density.depth`` above 1).

A child of a kept split (``gold/clusters``' ``cluster_path`` ``"3.1"``) is explained against its
siblings, not against everyone: its one-vs-rest model is trained on the sampled members of its
parent only (the parent's other children and the members its child clustering called noise are the
rest), so its SHAP features say what sets ``3.1`` apart *within* cluster ``3``. Its sentence compares
its medians with its parent's ("5× cluster 3's 60") and gives its share of the parent.

Children are the kind :data:`seglake.segmentation.names.SUBCLUSTER` in ``gold/explanations`` and
``gold/descriptions``, with a ``path`` column (``"3.1"``) beside ``target``, which numbers them 1, 2,
... in path order within the run (``target`` stays an integer in every table). Model files are
``explain/cluster-<path>.json``. Names are unique among the run's segments, clusters and children
together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from seglake.segmentation.density_levels import path_key


def nodes(path: Column) -> Column:
    """The nodes below the first level that an entity's ``cluster_path`` passes through.

    Examples
    --------
    >>> frame = spark.createDataFrame([("3.1.2",), ("3",), ("-1",)], "cluster_path string")
    >>> [row.n for row in frame.select(nodes(F.col("cluster_path")).alias("n")).collect()]
    [['3.1', '3.1.2'], [], []]
    """
    parts = F.split(path, r"\.")
    return F.when(F.size(parts) < 2, F.array().cast("array<string>")).otherwise(
        F.transform(F.sequence(F.lit(2), F.size(parts)), lambda i: F.array_join(F.slice(parts, 1, i), ".")))


def parent_of(path: str) -> str:
    """``"3.1.2"`` → ``"3.1"``.

    Examples
    --------
    >>> parent_of("3.1.2"), parent_of("3.1")
    ('3.1', '3')
    """
    return path.rsplit(".", 1)[0]


def child_profile(population: DataFrame, features: list[str]) -> pd.DataFrame:
    """Size and median of every feature for every node below the first level, in one pass.

    ``population`` has ``cluster_path`` and the features. Returns ``path``, ``parent``, ``size``
    and one column per feature (``percentile_approx`` with accuracy 10,000, as for the clusters),
    in path order, ``target`` numbering them from 1.
    """
    stats = [F.percentile_approx(F.col(f), 0.5, 10_000).alias(f) for f in features]
    rows = (population.select(F.explode(nodes(F.col("cluster_path"))).alias("path"), *features)
            .groupBy("path").agg(F.count("*").alias("size"), *stats).toPandas())
    rows = rows.iloc[sorted(range(len(rows)), key=lambda i: path_key(rows["path"].iloc[i]))]
    rows.insert(1, "parent", [parent_of(p) for p in rows["path"]])
    rows.insert(0, "target", np.arange(1, len(rows) + 1))
    return rows.reset_index(drop=True)


def member_of(path: Column, node: Column) -> Column:
    """True where an entity's ``path`` is ``node`` or below it.

    Examples
    --------
    >>> frame = spark.createDataFrame([("3.1.2", "3.1"), ("3.10", "3.1"), ("3.1", "3.1")], "p string, n string")
    >>> [row.m for row in frame.select(member_of(F.col("p"), F.col("n")).alias("m")).collect()]
    [True, False, True]
    """
    return (path == node) | path.startswith(F.concat(node, F.lit(".")))
