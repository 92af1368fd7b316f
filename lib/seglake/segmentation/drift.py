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
"""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

EPSILON = 1e-4
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


def bin_counts(frame: DataFrame, edges: dict[str, list[float]]) -> tuple[int, dict[str, list[int]]]:
    """Rows of ``frame`` per bin of each feature, in one aggregation pass.

    Parameters
    ----------
    frame : DataFrame
        Holds every feature named in ``edges``.
    edges : dict
        Feature → sorted distinct cut points.

    Returns
    -------
    rows : int
    counts : dict
        Feature → ``len(edges) + 2`` counts: one per bin in ascending order, then the null count.

    Examples
    --------
    >>> batch = spark.createDataFrame([(0.5,), (1.0,), (1.5,), (9.0,), (None,)], "likes double")
    >>> bin_counts(batch, {"likes": [1.0, 2.0]})  # bins (-inf, 1], (1, 2], (2, inf), then nulls
    (5, {'likes': [2, 1, 1, 1]})
    """
    aggregates = [F.count(F.lit(1)).alias("_rows")]
    for i, (name, cuts) in enumerate(edges.items()):
        index = _bin_index(name, cuts)
        aggregates += [F.count(F.when(index == b, 1)).alias(f"_b{i}_{b}")
                       for b in [*range(len(cuts) + 1), -1]]
    row = frame.agg(*aggregates).first()
    counts = {name: [int(row[f"_b{i}_{b}"]) for b in [*range(len(cuts) + 1), -1]]
              for i, (name, cuts) in enumerate(edges.items())}
    return int(row["_rows"]), counts


def training_bins(kept: DataFrame, features: list[str], bins: int) -> dict[str, dict[str, Any]]:
    """Quantile cut points of each feature on the training entities, with each bin's share.

    Parameters
    ----------
    kept : DataFrame
        The entities the model was fitted on (after the filter).
    features : list of str
        Numeric features.
    bins : int
        Equal-count bins wanted (10: deciles); ties merge bins.

    Returns
    -------
    dict
        Feature → ``{"edges": [...], "expected": [...]}``; ``expected`` holds the training share of
        each bin then of nulls, and is what :func:`psi` compares a batch with.

    Examples
    --------
    >>> kept = spark.createDataFrame([(1.0,), (2.0,), (3.0,), (None,)], "likes double")
    >>> training_bins(kept, ["likes"], bins=2)  # the median cuts; a quarter of the rows is null
    {'likes': {'edges': [2.0], 'expected': [0.5, 0.25, 0.25]}}
    """
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
    """One ``gold/drift`` row per feature: PSI of ``batch`` against the training bins, and its status.

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
    rows, counts = bin_counts(batch, {f: spec["edges"] for f, spec in training.items()})
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
