"""The density stage's pandas UDF bodies (UMAP, HDBSCAN, stability refits) and their one-process run.

:func:`seglake.segmentation.density.density` runs four kinds of Spark task, each a body here:

1. :func:`embed_task`, per (group, ``n_neighbors``, task): task 0 (``MAIN``) embeds the group's
   whole sample with UMAP (``density.umap``, ``random_state`` seed); task 1
   (``REFIT``) embeds a random ``stability_fraction`` subset again with seed + 1 (the UMAP refit).
2. :func:`resample_task`, per (group, ``n_neighbors``, ``min_cluster_size``, chunk): HDBSCAN on the
   main embedding gives the setting's clusters; then the refits of the chunk, each HDBSCAN on a
   random ``stability_fraction`` subset of the main embedding (``min_cluster_size`` and
   ``min_samples`` scaled by the fraction), and in chunk 0 also HDBSCAN on the UMAP refit's
   embedding. Every refit adds, for each cluster, its best Jaccard
   (:func:`seglake.segmentation.stability.cluster_jaccard`); the cluster's stability is the mean
   over the ``stability_resamples`` + 1 refits. The UMAP refit also gives the setting's adjusted
   Rand index (``stability_ari``, noise a label). With screening (``density.screen_resamples``,
   :func:`choose_by_screening`) every setting first runs only a few refits, and the tasks of the
   chosen setting then run the rest (``first`` past the screened ones).
3. :func:`label_task`, per group: HDBSCAN with the chosen setting again (the same labels: same
   embedding, deterministic) and each row's final cluster once unstable clusters are merged.
4. :func:`map_task`, per group beside the labels: the picture's 2-D map at the chosen
   ``n_neighbors`` (when the embedding itself is not 2-D), so a setting that was not chosen costs
   no map.

:func:`decide` turns the resample tasks' small table into the settings' figures, the chosen setting
of each group and what becomes of each of its clusters; :func:`cluster_group` runs all of it for
one group in one process, with the same results as the stage (the function a per-cluster re-embed
can call on a cluster's rows).
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np
import pandas as pd

from seglake.segmentation.stability import (NOISE, choose_setting, cluster_jaccard, grid_settings,
                                            refits_of_chunk, screen_refits, settle, subsample_rows)

GROUP_STRIDE = 1000
MAIN, REFIT = 0, 1


def embedding_columns(dims: int, prefix: str = "e") -> list[str]:
    """``e0 .. e{dims-1}``: the embedding's columns (``c`` for centroids)."""
    return [f"{prefix}{i}" for i in range(dims)]


def embed_schema(dims: int) -> str:
    """What :func:`embed_task` returns."""
    return ("entity_id string, group int, n_neighbors int, task int, "
            + "".join(f"{c} double, " for c in embedding_columns(dims)) + "x double, y double, seconds double")


def resample_schema(dims: int) -> str:
    """What :func:`resample_task` returns: one row per cluster of a setting (and one for its noise)."""
    return ("group int, n_neighbors int, min_cluster_size int, chunk int, cluster int, size long, "
            "jaccard_sum double, refits long, stability_ari double, seconds double"
            + "".join(f", {c} double" for c in embedding_columns(dims, "c")))


LABEL_SCHEMA = ("entity_id string, group int, cluster int, hdbscan_cluster int, cluster_probability double, "
                "x double, y double, seconds double")


# ---------------------------------------------------------------- the models


def clustering_space(values: np.ndarray) -> np.ndarray:
    """sign(x)·log1p(|x|), nulls to the column median, then standard scaling (constant columns → 0).

    The signed log1p tames heavy tails (followers span six orders of magnitude) and accepts
    negative values, where plain log1p would not.

    Examples
    --------
    >>> values = np.array([[0.0], [np.nan], [np.e - 1]])  # log1p: 0, the median 0.5, 1
    >>> clustering_space(values).round(3).ravel().tolist()
    [-1.225, 0.0, 1.225]
    >>> clustering_space(np.full((3, 1), 0.7)).ravel().tolist()  # constant, its spread float noise
    [0.0, 0.0, 0.0]
    """
    logged = np.sign(values) * np.log1p(np.abs(values))
    medians = np.nanmedian(np.where(np.isnan(logged).all(axis=0), 0.0, logged), axis=0)
    filled = np.where(np.isnan(logged), medians, logged)
    centred = filled - filled.mean(axis=0)
    spread = filled.std(axis=0)
    # a constant column's mean has rounding error, so its spread is ~1e-17, not 0: dividing by it
    # would turn the constant into ±1; relative to the column's size such a spread is zero
    constant = spread <= 1e-12 * np.maximum(np.abs(filled).max(axis=0, initial=0.0), 1.0)
    return np.where(constant, 0.0, centred / np.where(constant, 1.0, spread))


def exact_neighbours(space: np.ndarray, n_neighbors: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n_neighbors`` nearest rows (itself first) and their distances, exactly, in the
    layout UMAP takes as ``precomputed_knn``.

    UMAP finds neighbours with pynndescent from 4,096 rows up, and numba compiles pynndescent's
    kernels afresh in every Python process (they are not cacheable): 25-30 s before the first
    embedding of every Spark Python worker, against 0.1-2 s for scikit-learn's exact search at the
    density stage's sizes (tens of thousands of rows, a few dozen features). Exact neighbours are
    also what UMAP itself uses below 4,096 rows.

    Examples
    --------
    >>> indices, distances = exact_neighbours(np.array([[0.0], [1.0], [3.0]]), 2, "euclidean")
    >>> indices.tolist(), distances.tolist()
    ([[0, 1], [1, 0], [2, 1]], [[0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    """
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=n_neighbors, metric=metric).fit(space)
    distances, indices = search.kneighbors(space)
    # a duplicate of a row may come back before the row itself: UMAP expects each row first
    for row in np.flatnonzero(indices[:, 0] != np.arange(len(space))):
        others = indices[row] != row
        indices[row] = np.concatenate([[row], indices[row][others]])[:n_neighbors]
        distances[row] = np.concatenate([[0.0], distances[row][others]])[:n_neighbors]
    return indices.astype(np.int32), distances.astype(np.float32)


def umap_epochs(rows: int) -> int:
    """UMAP's own default number of epochs for an embedding of ``rows`` rows (500 up to 10,000,
    else 200). The stage fixes it from the whole sample, so the refit on a subset repeats the main
    fit's procedure instead of running 2.5 times as many epochs when the subset falls under 10,000.

    Examples
    --------
    >>> umap_epochs(4_931), umap_epochs(16_495)
    (500, 200)
    """
    return 500 if rows <= 10_000 else 200


def _umap(space: np.ndarray, umap: dict, n_neighbors: int, seed: int, n_components: int, min_dist: float,
          knn: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """UMAP's embedding of ``space`` on its exact neighbour graph (:func:`exact_neighbours`, or
    ``knn`` when given), and that graph for another layout of the same rows.

    The layout starts from PCA, not UMAP's spectral default: when the graph falls apart into
    components (repeated rows of sparse counts do that), the spectral start solves each with
    ARPACK, whose restarts draw from a seed kept between calls, so the same rows and seed gave
    another embedding in the next call (at 16,495 users, another density setting from run to run).
    """
    from umap import UMAP

    neighbors = min(n_neighbors, len(space) - 1)
    knn = knn if knn is not None else exact_neighbours(space, neighbors, umap["metric"])
    reducer = UMAP(n_neighbors=neighbors, n_components=n_components,
                   min_dist=min_dist, metric=umap["metric"], n_epochs=umap.get("n_epochs"),
                   random_state=seed, precomputed_knn=(*knn, None), init="pca")
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": single-threaded is intended;
        warnings.simplefilter("ignore")  # "transform unavailable": the surrogate assigns new rows
        return reducer.fit_transform(space), knn


def hdbscan_fit(embedding: np.ndarray, hdbscan: dict, min_cluster_size: int,
                scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN labels (−1 noise) and membership strengths; on a subset, ``scale`` (its share of the
    rows) scales ``min_cluster_size`` and ``min_samples`` so that the refit looks for the same
    clusters."""
    from hdbscan import HDBSCAN

    min_samples = hdbscan.get("min_samples")
    # one thread: Spark already runs one task per core. The exact minimum spanning tree: hdbscan's
    # default approximate Boruvka tree merged the 26 clusters of the TikTok profiles into 2.
    model = HDBSCAN(min_cluster_size=max(2, int(round(min_cluster_size * scale))),
                    min_samples=None if min_samples is None else max(1, int(round(min_samples * scale))),
                    cluster_selection_method=hdbscan.get("cluster_selection_method", "eom"),
                    core_dist_n_jobs=1, approx_min_span_tree=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(embedding)
    return model.labels_.astype(np.int32), model.probabilities_.astype(np.float64)


def clusterable(n: int, dims: int, min_cluster_size: int = 2) -> bool:
    """Whether ``n`` rows are enough for UMAP + HDBSCAN (else all noise)."""
    return n >= max(min_cluster_size, dims + 2, 10)


# ---------------------------------------------------------------- the task bodies


def embed_task(rows: pd.DataFrame, features: list[str], umap: dict, seed: int,
               stability_fraction: float) -> pd.DataFrame:
    """One group's main embedding (``task`` 0) or its UMAP refit (1) at one ``n_neighbors``.

    ``x, y`` are the embedding itself when it has 2 dimensions, else NaN: the picture's 2-D map is
    laid out by :func:`map_task`, once the setting is chosen, for the chosen ``n_neighbors`` only.

    ``rows``: the group's whole sample (``entity_id``, ``group``, the raw ``features``) with
    constant ``n_neighbors`` and ``task``; both tasks fit the clustering space on all of it. Task 1
    returns only its subset's rows. Too few rows: task 0 returns NaN coordinates, task 1 nothing.
    """
    started = pd.Timestamp.now()
    sample = rows.sort_values("entity_id", kind="stable").reset_index(drop=True)
    neighbors, task, dims = int(sample["n_neighbors"].iloc[0]), int(sample["task"].iloc[0]), umap["n_components"]
    n = len(sample)
    embedding, xy, kept = np.full((n, dims), np.nan), np.full((n, 2), np.nan), np.arange(n)
    if clusterable(n, dims):
        umap = {**umap, "n_epochs": umap.get("n_epochs") or umap_epochs(n)}
        space = clustering_space(sample[features].to_numpy(dtype=np.float64))
        if task == MAIN:
            embedding, _ = _umap(space, umap, neighbors, seed, dims, umap["min_dist"])
            if dims == 2:
                xy = embedding
        else:
            kept = subsample_rows(n, stability_fraction, seed, resample=0)
            embedding = (_umap(space[kept], umap, neighbors, seed + 1, dims, umap["min_dist"])[0]
                         if clusterable(len(kept), dims) else embedding[:0])
            kept = kept[:len(embedding)]
    elif task == REFIT:
        kept = kept[:0]
        embedding = embedding[:0]
    out = sample.loc[kept, ["entity_id", "group"]].reset_index(drop=True)
    out["n_neighbors"], out["task"] = neighbors, task
    for i, column in enumerate(embedding_columns(dims)):
        out[column] = embedding[:, i]
    out["x"], out["y"] = (xy[kept, 0], xy[kept, 1]) if task == MAIN else (np.nan, np.nan)
    out["seconds"] = (pd.Timestamp.now() - started).total_seconds()
    return out


MAP_SCHEMA = "entity_id string, x double, y double"


def map_task(rows: pd.DataFrame, features: list[str], umap: dict, seed: int) -> pd.DataFrame:
    """One group's 2-D map (``MAP_SCHEMA``): UMAP with ``map_min_dist`` at the chosen
    ``n_neighbors`` (constant in ``rows``: the group's sample with its raw ``features``), on the
    same clustering space, neighbours, epochs and seed as the main embedding. NaN when too few rows."""
    sample = rows.sort_values("entity_id", kind="stable").reset_index(drop=True)
    n = len(sample)
    xy = np.full((n, 2), np.nan)
    if clusterable(n, umap["n_components"]):
        settings = {**umap, "n_epochs": umap.get("n_epochs") or umap_epochs(n)}
        space = clustering_space(sample[features].to_numpy(dtype=np.float64))
        xy, _ = _umap(space, settings, int(sample["n_neighbors"].iloc[0]), seed, 2, umap["map_min_dist"])
    return pd.DataFrame({"entity_id": sample["entity_id"], "x": xy[:, 0], "y": xy[:, 1]})


def resample_task(rows: pd.DataFrame, hdbscan: dict, seed: int, stability_fraction: float,
                  resamples: int, chunks: int, first: int = 1) -> pd.DataFrame:
    """One setting's clusters and the Jaccard sums of one chunk of its refits ``first`` ..
    ``resamples`` (``resample_schema``); the UMAP refit counts in chunk 0 when ``first`` is 1.

    ``rows``: the main embedding (``task`` 0) and the UMAP refit's rows (``task`` 1) of a group at
    one ``n_neighbors``, with constant ``min_cluster_size`` and ``chunk``. One output row per
    cluster of the main fit (its size, centroid, the sum of its best Jaccards and how many refits
    saw it) and one for the noise (``cluster`` −1, its size, NaN centroid).
    """
    started = pd.Timestamp.now()
    head = rows.iloc[0]
    group, neighbors = int(head["group"]), int(head["n_neighbors"])
    size, chunk = int(head["min_cluster_size"]), int(head["chunk"])
    dims = embedding_columns(sum(1 for c in rows.columns if c[:1] == "e" and c[1:].isdigit()))
    main = rows[rows["task"] == MAIN].sort_values("entity_id", kind="stable")
    embedding = main[dims].to_numpy(dtype=np.float64)
    n = len(main)
    labels = np.full(n, NOISE, dtype=np.int32)
    if clusterable(n, len(dims), size) and not np.isnan(embedding).any():
        labels, _ = hdbscan_fit(embedding, hdbscan, size)
    sums, seen, ari = defaultdict(float), defaultdict(int), np.nan

    def add(subset: np.ndarray, again: np.ndarray) -> None:
        for cluster, jaccard in cluster_jaccard(labels, subset, again).items():
            sums[cluster] += jaccard
            seen[cluster] += 1

    if labels.max() > NOISE and stability_fraction > 0:
        for resample in refits_of_chunk(chunk, chunks, resamples, first):
            subset = subsample_rows(n, stability_fraction, seed, resample)
            if clusterable(len(subset), len(dims)):
                add(subset, hdbscan_fit(embedding[subset], hdbscan, size, len(subset) / n)[0])
        refit = rows[rows["task"] == REFIT].sort_values("entity_id", kind="stable")
        if chunk == 0 and first == 1 and len(refit):
            from sklearn.metrics import adjusted_rand_score

            subset = np.searchsorted(main["entity_id"].to_numpy(), refit["entity_id"].to_numpy())
            again, _ = hdbscan_fit(refit[dims].to_numpy(dtype=np.float64), hdbscan, size, len(subset) / n)
            add(subset, again)
            ari = float(adjusted_rand_score(labels[subset], again))
    clusters = [c for c in np.unique(labels) if c != NOISE]
    out = pd.DataFrame({
        "group": group, "n_neighbors": neighbors, "min_cluster_size": size, "chunk": chunk,
        "cluster": [*clusters, NOISE], "size": [*(int((labels == c).sum()) for c in clusters),
                                                 int((labels == NOISE).sum())],
        "jaccard_sum": [*(sums[c] for c in clusters), 0.0], "refits": [*(seen[c] for c in clusters), 0],
        "stability_ari": ari})
    for i, column in enumerate(embedding_columns(len(dims), "c")):
        out[column] = [*(embedding[labels == c, i].mean() for c in clusters), np.nan]
    out["seconds"] = (pd.Timestamp.now() - started).total_seconds()
    return out


def label_task(rows: pd.DataFrame, hdbscan: dict, chosen: dict[int, int], merged: dict[int, dict[int, int]],
               offset_by_group: bool) -> pd.DataFrame:
    """One group's final labels (``LABEL_SCHEMA``): HDBSCAN at the chosen ``min_cluster_size``
    (``chosen``: group → size) on its main embedding, then ``merged`` (group → {HDBSCAN cluster →
    final cluster}; absent clusters stay). ``hdbscan_cluster`` keeps HDBSCAN's own label.
    With ``offset_by_group`` both ids are ``group * 1000 + c`` (noise stays −1)."""
    started = pd.Timestamp.now()
    main = rows.sort_values("entity_id", kind="stable").reset_index(drop=True)
    group = int(main["group"].iloc[0])
    dims = [c for c in main.columns if c[:1] == "e" and c[1:].isdigit()]
    embedding = main[dims].to_numpy(dtype=np.float64)
    labels, strength = np.full(len(main), NOISE, dtype=np.int32), np.zeros(len(main))
    if clusterable(len(main), len(dims), chosen[group]) and not np.isnan(embedding).any():
        labels, strength = hdbscan_fit(embedding, hdbscan, chosen[group])
    if labels.max() >= GROUP_STRIDE:
        raise ValueError(f"group {group}: {labels.max() + 1} clusters, more than ids allow; "
                         f"raise density.hdbscan.min_cluster_size")
    mapping = merged.get(group, {})
    final = np.array([mapping.get(int(c), int(c)) for c in labels], dtype=np.int64)
    out = main[["entity_id", "group"]].copy()
    out["cluster"], out["hdbscan_cluster"] = offset(final, group, offset_by_group), offset(labels, group,
                                                                                         offset_by_group)
    out["cluster_probability"] = np.where(final == NOISE, 0.0, strength)
    out["x"], out["y"] = main["x"].to_numpy(), main["y"].to_numpy()
    out["seconds"] = (pd.Timestamp.now() - started).total_seconds()
    return out


def offset(labels: np.ndarray, group: int, by_group: bool) -> np.ndarray:
    """``group * 1000 + c`` for clusters when ``by_group`` (noise stays −1).

    Examples
    --------
    >>> offset(np.array([-1, 0, 3]), 2, True).tolist(), offset(np.array([-1, 0]), 2, False).tolist()
    ([-1, 2000, 2003], [-1, 0])
    """
    labels = np.asarray(labels)
    return np.where(labels == NOISE, NOISE, group * GROUP_STRIDE + labels) if by_group else labels


# ---------------------------------------------------------------- the choice (small tables)


def decide(resampled: pd.DataFrame, density: dict, offset_by_group: bool,
           picks: dict[int, tuple[int, int, str]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The settings' figures (``gold/density_sweep`` rows) and the chosen settings' clusters
    (``gold/cluster_stability`` rows), from :func:`resample_task`'s rows of every group.

    Parameters
    ----------
    resampled : DataFrame
        ``resample_schema`` rows of every chunk of every setting.
    density : dict
        ``density`` settings (``min_stability``, ``unstable``, ``min_coverage``, ``max_clusters``,
        ``umap``, ``hdbscan``).
    offset_by_group : bool
    picks : dict, optional
        group → ``(n_neighbors, min_cluster_size, reason)`` chosen beforehand (by screening): kept
        instead of applying the rule again.

    Returns
    -------
    (sweep, clusters)
        ``sweep``: per group and setting ``n_neighbors, min_cluster_size, sample_rows, clusters,
        stable_clusters, noise_share, coverage, mean_jaccard, min_jaccard, stability_ari, seconds,
        chosen, reason, refits`` (``reason`` the rule's line, on the chosen row; ``refits`` those
        behind the setting's Jaccards, the UMAP refit included). ``clusters``: per cluster of
        a chosen setting ``group, hdbscan_cluster, size, jaccard, refits, stable, merged_into`` (the
        final cluster, −1 noise) and the centroid.
    """
    centroid = [c for c in resampled.columns if c[:1] == "c" and c[1:].isdigit()]
    keys = ["group", "n_neighbors", "min_cluster_size"]
    per_cluster = resampled.groupby([*keys, "cluster"], as_index=False).agg(
        size=("size", "first"), jaccard_sum=("jaccard_sum", "sum"), refits=("refits", "sum"),
        stability_ari=("stability_ari", "max"), seconds=("seconds", "sum"),
        **{c: (c, "first") for c in centroid})
    per_cluster["jaccard"] = np.where(per_cluster["refits"] > 0,
                                      per_cluster["jaccard_sum"] / per_cluster["refits"].clip(lower=1), np.nan)
    settings, settled = [], {}
    for key, part in per_cluster.groupby(keys, sort=True):
        found = settle(part[part["cluster"] != NOISE].reset_index(drop=True), density["min_stability"],
                       density["unstable"])
        rows = int(part["size"].sum())
        stable = found["stable"].map(lambda s: s is not False)
        settings.append({
            **dict(zip(keys, key)), "sample_rows": rows, "clusters": len(found),
            "stable_clusters": int(stable.sum()),
            "noise_share": float(part.loc[part["cluster"] == NOISE, "size"].sum() / max(rows, 1)),
            "coverage": float(found.loc[stable, "size"].sum() / max(rows, 1)),
            "mean_jaccard": float(found["jaccard"].mean()) if found["jaccard"].notna().any() else np.nan,
            "min_jaccard": float(found["jaccard"].min()) if found["jaccard"].notna().any() else np.nan,
            "stability_ari": float(part["stability_ari"].max()), "seconds": float(part["seconds"].max()),
            "refits": int(part["refits"].max())})
        settled[tuple(int(k) for k in key)] = found.assign(**dict(zip(keys, key)))
    sweep = pd.DataFrame(settings)
    sweep["chosen"], sweep["reason"] = False, None
    chosen_clusters = []
    for group, part in sweep.groupby("group", sort=True):
        if picks is not None and group in picks:
            n, m, reason = picks[group]
            row = int(np.flatnonzero((part["n_neighbors"] == n) & (part["min_cluster_size"] == m))[0])
        elif len(part) == 1:
            row, reason = 0, (f"n_neighbors {int(part['n_neighbors'].iloc[0])}, min_cluster_size "
                              f"{int(part['min_cluster_size'].iloc[0])}: pinned in density.umap and density.hdbscan")
        else:
            row, reason = choose_setting(part.reset_index(drop=True), density["min_coverage"],
                                         density["max_clusters"], density["min_stability"])
        index = part.index[row]
        sweep.loc[index, ["chosen", "reason"]] = [True, reason]
        chosen_clusters.append(settled[tuple(int(k) for k in sweep.loc[index, keys])])
    clusters = pd.concat(chosen_clusters, ignore_index=True).rename(columns={"cluster": "hdbscan_cluster"})
    for column in ("hdbscan_cluster", "merged_into"):
        clusters[column] = [int(offset(np.array([c]), int(g), offset_by_group)[0])
                            for c, g in zip(clusters[column], clusters["group"])]
    columns = ["group", "n_neighbors", "min_cluster_size", "hdbscan_cluster", "size", "jaccard", "refits",
               "stable", "merged_into", *centroid]
    return sweep, clusters[columns].reset_index(drop=True)


def choose_by_screening(resample, grids: dict[int, list[tuple[int, int]]], density: dict,
                        offset_by_group: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`decide` on every setting's refits, screened when the grid allows (:func:`screen_refits`).

    ``resample(grids, resamples, first)`` runs :func:`resample_task` for every setting of ``grids``
    (group → settings) on refits ``first`` .. ``resamples`` and returns their rows. With screening
    the rule chooses on the first few refits of every setting (and the UMAP refit); then only the
    chosen setting of each group runs the rest, so its clusters' Jaccards are over every refit,
    exactly as without screening. The other settings' rows keep their screening figures
    (``refits`` in the sweep says how many), and the chosen row's reason says so.
    """
    resamples = density["stability_resamples"]
    screen = screen_refits(max(len(grid) for grid in grids.values()), resamples, density["screen_resamples"])
    screened = resample(grids, screen, 1)
    if screen == resamples:
        return decide(screened, density, offset_by_group)
    first_choice, _ = decide(screened, density, offset_by_group)
    picks = {int(r.group): (int(r.n_neighbors), int(r.min_cluster_size),
                            f"{r.reason}; chosen on {screen} subset refits and the UMAP refit of each "
                            f"setting, then its clusters ran all {resamples}")
             for r in first_choice[first_choice["chosen"]].itertuples()}
    rest = resample({group: [(n, m)] for group, (n, m, _) in picks.items()}, resamples, screen + 1)
    return decide(pd.concat([screened, rest], ignore_index=True), density, offset_by_group, picks)


def merges(clusters: pd.DataFrame, offset_by_group: bool) -> dict[int, dict[int, int]]:
    """group → {HDBSCAN cluster → final cluster}, ids without the group offset, for :func:`label_task`."""
    strip = (lambda c: c if c == NOISE else c % GROUP_STRIDE) if offset_by_group else (lambda c: c)
    mapping: dict[int, dict[int, int]] = defaultdict(dict)
    for row in clusters.itertuples():
        mapping[int(row.group)][strip(int(row.hdbscan_cluster))] = strip(int(row.merged_into))
    return dict(mapping)


# ---------------------------------------------------------------- one group in one process


def cluster_group(sample: pd.DataFrame, features: list[str], density: dict, offset_by_group: bool = False,
                  chunks: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """UMAP + HDBSCAN + stability + the choice of setting for one group, in one process.

    The stage runs the same bodies as Spark tasks (:mod:`seglake.segmentation.density`) and gets the
    same labels, stabilities and choice (refits do not depend on how they are chunked).

    Parameters
    ----------
    sample : DataFrame
        ``entity_id``, ``group`` and the raw ``features`` of one group.
    features : list of str
    density : dict
        ``DensityConfig.model_dump()``.
    offset_by_group : bool
        Make ids ``group * 1000 + c`` so clusters of different groups never share an id.
    chunks : int
        Tasks the refits of each setting are split into.

    Returns
    -------
    (labels, clusters, sweep)
        ``LABEL_SCHEMA`` rows; :func:`decide`'s clusters and sweep.
    """
    umap, hdbscan = density["umap"], density["hdbscan"]
    fraction = density["stability_fraction"]
    grid = grid_settings(len(sample), umap["n_neighbors"], hdbscan["min_cluster_size"],
                         density["grid_neighbors"], density["grid_cluster_shares"])
    tasks = [MAIN, REFIT] if fraction > 0 else [MAIN]
    embedded = pd.concat([  # a refit has no map: its x, y are left out (NaN once concatenated)
        embed_task(sample.assign(n_neighbors=n, task=t), features, umap, density["seed"], fraction).drop(
            columns=["x", "y"] if t == REFIT else []) for n in dict.fromkeys(n for n, _ in grid) for t in tasks],
        ignore_index=True)
    group = int(sample["group"].iloc[0])

    def resample(grids: dict[int, list[tuple[int, int]]], resamples: int, first: int) -> pd.DataFrame:
        return pd.concat([
            resample_task(embedded[embedded["n_neighbors"] == n].assign(min_cluster_size=m, chunk=c), hdbscan,
                          density["seed"], fraction, resamples, chunks, first)
            for n, m in grids[group] for c in range(chunks)], ignore_index=True)

    sweep, clusters = choose_by_screening(resample, {group: grid}, density, offset_by_group)
    chosen = sweep[sweep["chosen"]].iloc[0]
    main = embedded[(embedded["n_neighbors"] == chosen["n_neighbors"]) & (embedded["task"] == MAIN)]
    labels = label_task(main, hdbscan, {group: int(chosen["min_cluster_size"])},
                        merges(clusters, offset_by_group), offset_by_group)
    if umap["n_components"] != 2:
        laid_out = map_task(sample.assign(n_neighbors=int(chosen["n_neighbors"])), features, umap, density["seed"])
        labels = labels.drop(columns=["x", "y"]).merge(laid_out, on="entity_id")[list(labels.columns)]
    return labels, clusters, sweep
