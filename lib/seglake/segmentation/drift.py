"""Population stability of each feature between a model's training entities and a scoring batch.

At sweep time :func:`training_bins` cuts every numeric feature of the kept training entities at its
quantiles (``drift.bins`` equal-count bins, ``approxQuantile`` with relative error 0.001) and stores
the cut points with the training share of each bin in the run's manifest. At scoring time
:func:`bin_counts` counts the batch into the same bins in one Spark pass and :func:`psi` compares
the two shares:

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

Bins are right-closed (``x <= edge``) and repeated cut points are merged, so a count feature whose
deciles tie (many users with exactly 1 like) still gets honest bins with their true training
shares rather than nominal tenths. Nulls are a bin of their own: a feature that suddenly goes
missing is drift too. Shares are floored at ``EPSILON`` so an empty bin gives a large finite PSI
instead of infinity. The usual reading: under 0.1 stable, 0.1-0.25 a moderate shift worth a look,
above 0.25 a shift large enough that the segments may no longer describe the batch.

Categorical features get the same treatment with categories for bins: the training share of each of
its ``MAX_CATEGORIES`` most frequent categories (ties by name), then one bin for every other value
(rarer training categories, and categories the batch brings that training never saw), then nulls.
Their manifest entry holds ``categories`` instead of ``edges``.
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

EPSILON = 1e-4
MAX_CATEGORIES = 50  # bins of a categorical feature's own; rarer and unseen values share one more
QUANTILE_ERROR = 0.001
DRIFT_COLUMNS = ("run_id string, model_run string, feature string, psi double, status string, "
                 "rows long, expected array<double>, actual array<double>")


def _col(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def _bin_index(name: str, edges: list[float]) -> Column:
    """0..len(edges) for a value (how many cut points it exceeds), -1 for null or NaN."""
    value = _col(name).cast("double")
    index = F.lit(0)
    for edge in edges:
        index = index + F.when(value > F.lit(float(edge)), 1).otherwise(0)
    return F.when(value.isNull() | F.isnan(value), F.lit(-1)).otherwise(index)


def _category_index(name: str, categories: list[str]) -> Column:
    """0..len(categories)-1 for a listed category, len(categories) for any other value, -1 for null."""
    value = _col(name).cast("string")
    position = F.array_position(F.array(*[F.lit(c) for c in categories]), value) if categories else F.lit(0)
    return (F.when(value.isNull(), F.lit(-1))
            .when(position == 0, F.lit(len(categories))).otherwise(position - 1))


def bin_counts(frame: DataFrame, edges: dict[str, list[float]],
               categories: dict[str, list[str]] | None = None) -> tuple[int, dict[str, list[int]]]:
    """Rows of ``frame`` per bin of each feature, in one aggregation pass.

    Parameters
    ----------
    frame : DataFrame
        Holds every feature named in ``edges`` and ``categories``.
    edges : dict
        Numeric feature → sorted distinct cut points.
    categories : dict, optional
        Categorical feature → its binned categories.

    Returns
    -------
    rows : int
    counts : dict
        Feature → ``len(edges) + 2`` counts (``len(categories) + 2``): one per bin in ascending order
        (in the order of the categories, then every other value), then the null count.

    Examples
    --------
    >>> batch = spark.createDataFrame([(0.5, "a"), (1.0, "b"), (1.5, "a"), (9.0, "z"), (None, None)],
    ...                               "likes double, country string")
    >>> bin_counts(batch, {"likes": [1.0, 2.0]})  # bins (-inf, 1], (1, 2], (2, inf), then nulls
    (5, {'likes': [2, 1, 1, 1]})
    >>> bin_counts(batch, {}, {"country": ["a", "b"]})  # a, b, any other value, then nulls
    (5, {'country': [2, 1, 1, 1]})
    """
    indexes = {name: (_bin_index(name, cuts), len(cuts) + 1) for name, cuts in edges.items()}
    indexes.update({name: (_category_index(name, listed), len(listed) + 1)
                    for name, listed in (categories or {}).items()})
    aggregates = [F.count(F.lit(1)).alias("_rows")]
    for i, (index, bins) in enumerate(indexes.values()):
        aggregates += [F.count(F.when(index == b, 1)).alias(f"_b{i}_{b}") for b in [*range(bins), -1]]
    row = frame.agg(*aggregates).first()
    counts = {name: [int(row[f"_b{i}_{b}"]) for b in [*range(bins), -1]]
              for i, (name, (_, bins)) in enumerate(indexes.items())}
    return int(row["_rows"]), counts


def training_bins(kept: DataFrame, features: list[str], bins: int,
                  categorical: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Quantile cut points of each feature on the training entities, with each bin's share; the
    most frequent categories of each ``categorical`` feature, with each one's share.

    Parameters
    ----------
    kept : DataFrame
        The entities the model was fitted on (after the filter).
    features : list of str
        Numeric features.
    bins : int
        Equal-count bins wanted (10: deciles); ties merge bins.
    categorical : list of str, optional
        Categorical features: up to ``MAX_CATEGORIES`` bins each, by training frequency.

    Returns
    -------
    dict
        Feature → ``{"edges": [...], "expected": [...]}`` (categorical: ``{"categories": [...],
        "expected": [...]}``); ``expected`` holds the training share of each bin (categorical: of each
        category, then of every other value) then of nulls, and is what :func:`psi` compares a batch with.

    Examples
    --------
    >>> kept = spark.createDataFrame([(1.0, "a"), (2.0, "b"), (3.0, "a"), (None, "a")],
    ...                              "likes double, country string")
    >>> training_bins(kept, ["likes"], bins=2)  # the median cuts; a quarter of the rows is null
    {'likes': {'edges': [2.0], 'expected': [0.5, 0.25, 0.25]}}
    >>> training_bins(kept, [], bins=2, categorical=["country"])  # a, b, others (none yet), nulls
    {'country': {'categories': ['a', 'b'], 'expected': [0.75, 0.25, 0.0, 0.0]}}
    """
    specs = _numeric_bins(kept, list(features), bins) if features else {}
    if categorical:
        specs.update(_category_bins(kept, list(categorical)))
    return specs


def _category_bins(kept: DataFrame, categorical: list[str]) -> dict[str, dict[str, Any]]:
    """Every categorical feature's category counts in one grouped pass; only each feature's
    ``MAX_CATEGORIES`` most frequent categories, its null count and its total reach the driver
    (a feature with millions of distinct values must not bring them all)."""
    pairs = F.explode(F.array(*[F.struct(F.lit(i).alias("f"), _col(c).cast("string").alias("v"))
                                for i, c in enumerate(categorical)]))
    by_feature = Window.partitionBy("f")
    counted = (kept.select(pairs.alias("p")).groupBy("p.f", "p.v").count()
               .withColumn("total", F.sum("count").over(by_feature))
               .withColumn("rank", F.row_number().over(
                   by_feature.orderBy(F.col("v").isNull(), F.desc("count"), F.asc("v"))))
               .where(F.col("v").isNull() | (F.col("rank") <= MAX_CATEGORIES)).toPandas())
    specs = {}
    for i, feature in enumerate(categorical):
        rows = counted[counted["f"] == i]
        total = int(rows["total"].iloc[0]) if len(rows) else 0
        nulls = int(rows.loc[rows["v"].isna(), "count"].sum())
        top = rows.dropna(subset=["v"]).sort_values("rank")
        others = total - nulls - int(top["count"].sum())
        shares = [int(c) / total for c in top["count"]] + [others / total, nulls / total] if total else []
        specs[feature] = {"categories": [str(v) for v in top["v"]], "expected": shares}
    return specs


def _numeric_bins(kept: DataFrame, features: list[str], bins: int) -> dict[str, dict[str, Any]]:
    probabilities = [i / bins for i in range(1, bins)]
    # Spark skips nulls and NaN in approxQuantile; one call computes every feature's quantiles.
    quantiles = kept.select(*[_col(f).cast("double").alias(f"_q{i}") for i, f in enumerate(features)]
                            ).approxQuantile([f"_q{i}" for i in range(len(features))],
                                             probabilities, QUANTILE_ERROR)
    edges = {f: sorted({float(v) for v in q if not math.isnan(v)}) for f, q in zip(features, quantiles)}
    rows, counts = bin_counts(kept, edges)
    return {f: {"edges": edges[f], "expected": [c / rows for c in counts[f]]} for f in features}


def psi(expected: list[float], actual: list[float], epsilon: float = EPSILON) -> float:
    """Population stability index of two share vectors over the same bins (each floored at ``epsilon``).

    Examples
    --------
    >>> psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0])  # the same shares: no shift
    0.0
    >>> round(psi([0.5, 0.5, 0.0], [0.3, 0.7, 0.0]), 4)  # moderate
    0.1695
    >>> round(psi([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]), 2)  # half the batch in the empty null bin
    4.6
    """
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected shares but {len(actual)} actual ones")
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, epsilon), max(a, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def status(value: float, warn: float, flag: float) -> str:
    """``ok`` below ``warn``, ``warn`` from it, ``flag`` from ``flag``.

    Examples
    --------
    >>> [status(value, warn=0.1, flag=0.25) for value in (0.05, 0.1, 0.25)]
    ['ok', 'warn', 'flag']
    """
    return "flag" if value >= flag else "warn" if value >= warn else "ok"


def drift_rows(
    batch: DataFrame, training: dict[str, dict[str, Any]], run_id: str, model_run: str,
    warn: float, flag: float,
) -> list[tuple]:
    """One ``gold/drift`` row per feature: PSI of ``batch`` against the training bins (numeric) or
    categories (categorical), and its status.

    Returns
    -------
    list of tuple
        ``(run_id, model_run, feature, psi, status, rows, expected, actual)`` in feature order
        (``DRIFT_COLUMNS``). When no entity of the batch passes the training filter, PSI is null and
        every feature is flagged: nothing in the batch resembles the population the model describes.

    Examples
    --------
    >>> training = {"likes": {"edges": [2.0], "expected": [0.5, 0.25, 0.25]}}
    >>> batch = spark.createDataFrame([(5.0,), (6.0,), (1.0,)], "likes double")
    >>> (run, model_run, feature, value, verdict, rows, expected, actual), = drift_rows(
    ...     batch, training, "s1", "r1", warn=0.1, flag=0.25)
    >>> feature, round(value, 2), verdict, rows, [round(a, 2) for a in actual]
    ('likes', 2.43, 'flag', 3, [0.33, 0.67, 0.0])
    """
    rows, counts = bin_counts(batch, {f: spec["edges"] for f, spec in training.items() if "edges" in spec},
                              {f: spec["categories"] for f, spec in training.items() if "categories" in spec})
    result = []
    for feature, spec in training.items():
        if rows == 0:
            result.append((run_id, model_run, feature, None, "flag", 0, spec["expected"], []))
            continue
        actual = [c / rows for c in counts[feature]]
        value = psi(spec["expected"], actual)
        result.append((run_id, model_run, feature, value, status(value, warn, flag), rows,
                       spec["expected"], actual))
    return result
