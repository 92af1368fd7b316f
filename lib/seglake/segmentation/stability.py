"""Cluster-wise stability (Hennig 2007), what becomes of unstable clusters, and the density rule.

Plain numpy / pandas, no Spark: :mod:`seglake.segmentation.density` runs these inside its pandas UDF
tasks and on the driver's small tables, and :mod:`seglake.segmentation.segment` uses
:func:`cluster_jaccard` for the KMeans segments.

Hennig's cluster-wise stability (``fpc::clusterboot``, its ``subset`` scheme): draw a random
subset of the rows, cluster it again, and give each original cluster A the Jaccard similarity
|A ∩ B| / |A ∪ B| with the refit cluster B that matches it best, counted on the rows present in both
clusterings; a cluster's stability is the mean of that over the refits. Subsets rather than
bootstrap draws with replacement: repeated rows would be artificial density peaks for HDBSCAN.
Hennig reads a mean Jaccard under 0.6 as "not a valid, stable cluster" and over 0.85 as "highly
stable".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NOISE = -1
STABILITY_TIE = 0.05  # mean Jaccards closer than this count as equal when choosing a setting


def subsample_rows(n: int, fraction: float, seed: int, resample: int) -> np.ndarray:
    """The sorted row indices of refit ``resample``: ``round(n × fraction)`` rows without replacement.

    Drawn from ``(seed, resample)`` alone, so a refit's rows do not depend on which task runs it.

    Examples
    --------
    >>> subsample_rows(10, 0.5, seed=0, resample=3).tolist()
    [3, 6, 7, 8, 9]
    >>> bool((subsample_rows(10, 0.5, 0, 3) == subsample_rows(10, 0.5, 0, 3)).all())
    True
    """
    size = int(round(n * fraction))
    return np.sort(np.random.default_rng([seed, resample]).choice(n, size=size, replace=False))


def refits_of_chunk(chunk: int, chunks: int, resamples: int, first: int = 1) -> list[int]:
    """The subset refits (``first`` .. ``resamples``) a chunk runs; refit 0 is the UMAP refit
    (chunk 0 of the tasks that start at refit 1).

    Examples
    --------
    >>> [refits_of_chunk(c, 3, 7) for c in range(3)]
    [[1, 4, 7], [2, 5], [3, 6]]
    >>> [refits_of_chunk(c, 2, 7, first=5) for c in range(2)]  # the rest after 4 screening refits
    [[5, 7], [6]]
    """
    return [b for b in range(first, resamples + 1) if (b - first) % chunks == chunk]


def screen_refits(settings: int, resamples: int, screen: int) -> int:
    """Subset refits every setting of a grid runs before the choice (``density.screen_resamples``).

    The rule compares settings on these few; only the chosen setting then runs the rest, up to
    ``resamples``, so its clusters' stability is measured as if there had been no screening. No
    screening (every setting runs them all) for a single setting, ``screen`` 0, or ``screen`` at
    least ``resamples``.

    Examples
    --------
    >>> screen_refits(8, 20, 5), screen_refits(1, 20, 5), screen_refits(8, 20, 0), screen_refits(8, 4, 5)
    (5, 20, 20, 4)
    """
    return screen if settings > 1 and 0 < screen < resamples else resamples


def chunks_for(settings: int, resamples: int, cores: int) -> int:
    """How many tasks share one setting's refits: enough to keep ``2 × cores`` tasks busy.

    Examples
    --------
    >>> chunks_for(1, 20, 2), chunks_for(8, 20, 2), chunks_for(1, 0, 2)
    (4, 1, 1)
    """
    return max(1, min(resamples, -(-2 * cores // max(settings, 1))))


def cluster_jaccard(labels: np.ndarray, rows: np.ndarray, again: np.ndarray) -> dict[int, float]:
    """Each cluster of ``labels`` → its best Jaccard with a cluster of ``again`` (one refit).

    Parameters
    ----------
    labels : array of int
        The original labels of all rows (``-1`` noise, which is not a cluster).
    rows : array of int
        Indices (into ``labels``) of the rows the refit clustered.
    again : array of int
        The refit's labels of those rows, in the same order.

    Returns
    -------
    dict
        Only clusters with a row among ``rows`` (others were not seen by this refit); 0.0 when the
        refit found no cluster at all.

    Examples
    --------
    Cluster 0 split in two by the refit, cluster 1 found again whole, cluster 2 not in the subset:

    >>> labels = np.array([0, 0, 0, 0, 1, 1, -1, 2])
    >>> cluster_jaccard(labels, np.arange(7), np.array([5, 5, 6, 6, 7, 7, -1]))
    {0: 0.5, 1: 1.0}
    """
    from sklearn.metrics.cluster import contingency_matrix

    original = labels[rows]
    classes, refit_classes = np.unique(original), np.unique(again)
    table = contingency_matrix(original, again).astype(np.float64)
    union = table.sum(axis=1)[:, None] + table.sum(axis=0)[None, :] - table
    jaccard = np.where(union > 0, table / np.maximum(union, 1.0), 0.0)[:, refit_classes != NOISE]
    best = jaccard.max(axis=1) if jaccard.shape[1] else np.zeros(len(classes))
    return {int(c): float(best[i]) for i, c in enumerate(classes) if c != NOISE}


def settle(clusters: pd.DataFrame, min_stability: float, unstable: str) -> pd.DataFrame:
    """Mark each cluster stable or not and say what each becomes: ``stable`` and ``merged_into``.

    Parameters
    ----------
    clusters : DataFrame
        One row per cluster: ``cluster``, ``jaccard`` (NaN: not measured) and its centroid in the
        clustering embedding, columns ``c0, c1, ...``.
    min_stability : float
        Clusters with a lower mean Jaccard are unstable.
    unstable : {"merge", "noise"}
        ``merge``: an unstable cluster joins the stable cluster whose centroid is nearest to its own
        (noise when no cluster is stable); ``noise``: it becomes noise (−1).

    Returns
    -------
    DataFrame
        ``clusters`` with ``stable`` (bool; None when not measured: the cluster stays) and
        ``merged_into`` (its final label: its own id when it stays).

    Examples
    --------
    >>> clusters = pd.DataFrame({"cluster": [0, 1, 2], "jaccard": [0.9, 0.3, 0.8],
    ...                          "c0": [0.0, 9.0, 10.0], "c1": [0.0, 0.0, 0.0]})
    >>> settle(clusters, 0.6, "merge")[["cluster", "stable", "merged_into"]].values.tolist()
    [[0, True, 0], [1, False, 2], [2, True, 2]]
    >>> settle(clusters, 0.6, "noise")["merged_into"].tolist()
    [0, -1, 2]
    """
    out = clusters.copy()
    measured = out["jaccard"].notna().to_numpy()
    stable = np.where(measured, out["jaccard"].fillna(0.0).to_numpy() >= min_stability, True)
    centroid = [c for c in out.columns if c.startswith("c") and c[1:].isdigit()]
    points = out[centroid].to_numpy(dtype=np.float64)
    ids = out["cluster"].to_numpy(dtype=np.int64)
    merged = ids.copy()
    for index in np.flatnonzero(~stable):
        if unstable == "noise" or not stable.any():
            merged[index] = NOISE
        else:
            distance = ((points[stable] - points[index]) ** 2).sum(axis=1)
            merged[index] = ids[stable][int(np.argmin(distance))]
    out["stable"] = [bool(s) if m else None for s, m in zip(stable, measured)]
    out["merged_into"] = merged
    return out


def grid_settings(rows: int, n_neighbors: int | None, min_cluster_size: int | None,
                  grid_neighbors: list[int], grid_cluster_shares: list[float]) -> list[tuple[int, int]]:
    """The (n_neighbors, min_cluster_size) settings to try on a group of ``rows`` sample rows.

    A pinned value is the only one tried; otherwise ``n_neighbors`` comes from ``grid_neighbors``
    and ``min_cluster_size`` is each share of ``grid_cluster_shares`` of the rows (at least 5).

    Examples
    --------
    >>> grid_settings(1000, None, None, [15, 30], [0.01, 0.04])
    [(15, 10), (15, 40), (30, 10), (30, 40)]
    >>> grid_settings(1000, 10, None, [15, 30], [0.002, 0.004])  # 2 and 4 rows: both 5
    [(10, 5)]
    >>> grid_settings(1000, None, 25, [15], [0.01])
    [(15, 25)]
    """
    neighbors = [n_neighbors] if n_neighbors is not None else sorted(set(grid_neighbors))
    sizes = ([min_cluster_size] if min_cluster_size is not None else
             sorted({max(5, int(round(share * rows))) for share in grid_cluster_shares}))
    return [(n, m) for n in neighbors for m in sizes]


def choose_setting(candidates: pd.DataFrame, min_coverage: float, max_clusters: int,
                   min_stability: float) -> tuple[int, str]:
    """The row of ``candidates`` (one per setting) to keep, and the rule's one-line reason.

    Rule: among settings whose stable clusters cover at least ``min_coverage`` of the sample and
    number 2 to ``max_clusters``, those within :data:`STABILITY_TIE` of the highest mean per-cluster
    Jaccard count as equally stable, and of them the one with the fewest stable clusters wins (then
    the higher mean, more coverage, the earlier row). Fewer clusters are easier to act on, and
    differences of a few hundredths are within the spread of 20 refits. When none qualifies the
    line says so and the bound on coverage is dropped, then the lower bound of 2, and at last the
    setting with the fewest stable clusters is taken.

    Parameters
    ----------
    candidates : DataFrame
        ``n_neighbors``, ``min_cluster_size``, ``stable_clusters``, ``coverage`` (share of the sample
        in stable clusters) and ``mean_jaccard``.

    Examples
    --------
    >>> candidates = pd.DataFrame({"n_neighbors": [15, 15, 30, 30], "min_cluster_size": [10, 40, 10, 40],
    ...     "stable_clusters": [30, 6, 5, 4], "coverage": [0.9, 0.7, 0.4, 0.8],
    ...     "mean_jaccard": [0.5, 0.9, 0.95, 0.86]})
    >>> row, reason = choose_setting(candidates, 0.5, 20, 0.6)  # 30 clusters: too many; 40%: too few rows
    >>> row
    3
    >>> print(reason)
    n_neighbors 30, min_cluster_size 40: the fewest stable clusters (4) within 0.05 of the highest mean cluster stability (0.90), among 2 of 4 settings with 2-20 stable clusters (Jaccard >= 0.6) covering >= 50% of the sample
    """
    stable, coverage = candidates["stable_clusters"], candidates["coverage"]
    wanted = f"2-{max_clusters} stable clusters (Jaccard >= {min_stability:g})"
    covering = f"covering >= {min_coverage:.0%} of the sample"
    tiers = [((stable >= 2) & (stable <= max_clusters) & (coverage >= min_coverage), f"{wanted} {covering}"),
             ((stable >= 2) & (stable <= max_clusters), f"{wanted} (none also {covering})"),
             (stable <= max_clusters, f"<= {max_clusters} stable clusters (none had {wanted} {covering})")]
    for eligible, criteria in tiers:
        if eligible.any():
            pool = candidates[eligible].assign(_row=np.arange(len(candidates))[eligible.to_numpy()])
            best = pool["mean_jaccard"].max()
            if not np.isnan(best):
                pool = pool[pool["mean_jaccard"] >= best - STABILITY_TIE]
            row = int(pool.sort_values(["stable_clusters", "mean_jaccard", "coverage", "_row"],
                                       ascending=[True, False, False, True], na_position="last").iloc[0]["_row"])
            chosen = candidates.iloc[row]
            return row, (f"{_setting(chosen)}: the fewest stable clusters ({int(chosen['stable_clusters'])}) "
                         f"within {STABILITY_TIE:g} of the highest mean cluster stability ({best:.2f}), among "
                         f"{int(eligible.sum())} of {len(candidates)} settings with {criteria}")
    row = int(np.argmin(stable.to_numpy()))
    chosen = candidates.iloc[row]
    return row, (f"{_setting(chosen)}: every setting had more than {max_clusters} stable clusters; "
                 f"this one has the fewest ({int(chosen['stable_clusters'])})")


def _setting(row: pd.Series) -> str:
    return f"n_neighbors {int(row['n_neighbors'])}, min_cluster_size {int(row['min_cluster_size'])}"


def kmeans_refit_task(rows: pd.DataFrame, k: int, seed: int, fraction: float, resamples: int,
                      chunks: int) -> pd.DataFrame:
    """One chunk of the KMeans segments' refits: per segment, the sum of its best Jaccards and refits.

    ``rows``: ``entity_id``, ``x`` (the prepared feature vector), ``segment`` (the saved model's
    label) of a bounded sample, with a constant ``chunk``. Each refit is scikit-learn KMeans with the
    same k on a random ``fraction`` subset (:func:`subsample_rows`), seeded by the refit's number.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rows = pd.DataFrame({"entity_id": [f"e{i:03d}" for i in range(60)], "chunk": 0,
    ...                      "x": list(np.r_[rng.normal(0, 1, (30, 2)), rng.normal(9, 1, (30, 2))]),
    ...                      "segment": [0] * 30 + [1] * 30})
    >>> kmeans_refit_task(rows, k=2, seed=0, fraction=0.5, resamples=3, chunks=1).to_dict("records")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'chunk': 0, 'segment': 0, 'sample_rows': 30, 'jaccard_sum': 3.0, 'refits': 3},
     {'chunk': 0, 'segment': 1, 'sample_rows': 30, 'jaccard_sum': 3.0, 'refits': 3}]
    """
    from sklearn.cluster import KMeans

    rows = rows.sort_values("entity_id", kind="stable")
    chunk = int(rows["chunk"].iloc[0])
    x, labels = np.stack(rows["x"].to_numpy()), rows["segment"].to_numpy(dtype=np.int64)
    sums: dict[int, float] = {int(s): 0.0 for s in np.unique(labels)}
    seen = dict.fromkeys(sums, 0)
    for resample in refits_of_chunk(chunk, chunks, resamples):
        subset = subsample_rows(len(x), fraction, seed, resample)
        if len(subset) < k:
            continue
        again = KMeans(n_clusters=k, n_init=3, random_state=seed + resample).fit_predict(x[subset])
        for segment, jaccard in cluster_jaccard(labels, subset, again).items():
            sums[segment] += jaccard
            seen[segment] += 1
    return pd.DataFrame({"chunk": chunk, "segment": list(sums),
                         "sample_rows": [int((labels == s).sum()) for s in sums], "jaccard_sum": list(sums.values()),
                         "refits": list(seen.values())})
