"""Recursive embedding and clustering (seed 004): the density stage's levels below the first.

With ``density.depth`` above 1, :func:`grow` runs after the first level's clusters are assigned to
everyone (:func:`seglake.segmentation.density.density`):

1. Parents: every stable cluster of the level above (at level 2 the stable clusters of
   ``gold/clusters``; below, the children a kept split made) with more than
   ``density.min_split_size`` entities in the population. Each is a group of its own.
2. The same machinery as the first level (:func:`~seglake.segmentation.density.fit_level`) on the
   parents' members only: a stratified sample within ``density.sample_size`` shared between the
   parents, a UMAP embedding fitted on each parent's own members, the grid of settings, the
   per-cluster Jaccard stability, the rule, unstable clusters merged or made noise, one surrogate
   per parent. A parent's clusters are numbered 1, 2, ... (in the order of HDBSCAN's ids), noise −1.
3. The verdict (:func:`judge`): a parent keeps its split only when its chosen setting has at least
   2 stable clusters, they cover ``density.min_coverage`` of its sample, and its surrogate's
   held-out accuracy is at least ``density.min_split_fidelity``. Otherwise it stays a leaf.
4. Assignment, level by level: a member of a kept parent gets its child (``cluster_<level>``) from
   the parent's child surrogate, a sampled member keeps its HDBSCAN label; a member of a refused
   parent, or of a cluster that was no parent, gets null. A member the child clustering calls noise
   gets −1 and stays at its parent's path.

``gold/clusters`` gains ``cluster_2`` .. ``cluster_<depth>`` and ``cluster_path`` (``"3"``,
``"3.1"``, ``"3.1.2"``: the deepest node each entity reached). ``gold/cluster_quality`` (one row per
parent tried, with ``split_kept`` and ``split_reason``), ``gold/cluster_stability`` and
``gold/density_sweep`` gain their rows for each level, told apart by ``level`` and ``parent`` (the
parent's path; ``group`` stays the first level's group). The manifest's ``levels`` lists each kept
parent's surrogate file and classes, which :func:`assign_levels` (``seglake score``) and the served
segmenter follow to assign new rows the same way.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from seglake.core.config import DensityConfig
from seglake.segmentation.density_fit import GROUP_STRIDE
from seglake.segmentation.surrogate import NOISE, assign, predicted_cluster


def path_key(path: str) -> tuple[int, ...]:
    """Sort key of a cluster path: numeric per level, so ``"3.10"`` comes after ``"3.2"``.

    Examples
    --------
    >>> sorted(["3.10", "12", "3.2", "3"], key=path_key)
    ['3', '3.2', '3.10', '12']
    """
    return tuple(int(part) for part in path.split("."))


def surrogate_file(level: int, parent: str) -> str:
    """The model file of ``parent``'s child surrogate at ``level``.

    Examples
    --------
    >>> surrogate_file(2, "1003")
    'surrogate-level2-1003.json'
    """
    return f"surrogate-level{level}-{parent}.json"


def number_children(clusters: pd.DataFrame) -> pd.DataFrame:
    """``merged_into`` as child numbers 1, 2, ... per group, in the order of the final HDBSCAN id
    (noise stays −1), so that a child's path is ``<parent>.<number>``.

    Examples
    --------
    >>> clusters = pd.DataFrame({"group": [0, 0, 0, 1], "hdbscan_cluster": [0, 1, 2, 0],
    ...                          "merged_into": [2, 2, -1, 0]})
    >>> number_children(clusters)["merged_into"].tolist()
    [1, 1, -1, 1]
    """
    out = clusters.copy()
    for _, part in out.groupby("group"):
        finals = sorted({int(c) for c in part["merged_into"]} - {NOISE})
        number = {c: i + 1 for i, c in enumerate(finals)}
        out.loc[part.index, "merged_into"] = [number.get(int(c), NOISE) for c in part["merged_into"]]
    return out


def judge(sweep: pd.DataFrame, surrogates: pd.DataFrame, settings: DensityConfig) -> dict[int, tuple[bool, str]]:
    """group → (split kept, why) from each parent's chosen setting and child surrogate.

    A split is kept when the chosen setting has at least 2 stable clusters, covering
    ``min_coverage`` of the parent's sample, and the surrogate's held-out accuracy is at least
    ``min_split_fidelity``: a split the refits do not find again, or one that leaves most members
    unclustered, or one the surrogate cannot carry to the population, is refused.

    Examples
    --------
    >>> sweep = pd.DataFrame({"group": [0, 1, 2], "chosen": True, "stable_clusters": [2, 4, 1],
    ...                       "coverage": [0.97, 0.2, 1.0], "min_jaccard": [0.99, 0.6, 0.9]})
    >>> surrogates = pd.DataFrame({"group": [0, 1, 2], "fidelity": [0.98, 0.9, 1.0]})
    >>> for group, verdict in judge(sweep, surrogates, DensityConfig(depth=2)).items():
    ...     print(group, verdict)
    0 (True, '2 stable children (lowest Jaccard 0.99) covering 97% of its sample, surrogate fidelity 0.980')
    1 (False, 'its 4 stable clusters cover 20% of its sample, under density.min_coverage 50%')
    2 (False, '1 stable cluster in its members: a split needs 2')
    """
    fidelity = dict(zip(surrogates["group"].astype(int), surrogates["fidelity"]))
    verdicts = {}
    for row in sweep[sweep["chosen"]].sort_values("group").itertuples():
        group, stable, coverage = int(row.group), int(row.stable_clusters), float(row.coverage)
        accuracy = float(fidelity.get(group, math.nan))
        if stable < 2:
            verdicts[group] = (False, f"{stable} stable cluster{'s' * (stable != 1)} in its members: "
                                      f"a split needs 2")
        elif coverage < settings.min_coverage:
            verdicts[group] = (False, f"its {stable} stable clusters cover {coverage:.0%} of its sample, "
                                      f"under density.min_coverage {settings.min_coverage:.0%}")
        elif not accuracy >= settings.min_split_fidelity:
            verdicts[group] = (False, f"surrogate fidelity {accuracy:.3f} under density.min_split_fidelity "
                                      f"{settings.min_split_fidelity}")
        else:
            verdicts[group] = (True, f"{stable} stable children (lowest Jaccard {row.min_jaccard:.2f}) "
                                     f"covering {coverage:.0%} of its sample, surrogate fidelity {accuracy:.3f}")
    return verdicts


def root_group(path: str, offset_by_group: bool) -> int:
    """The first level's group of a cluster path (its id's ``group * 1000`` part, or 0).

    Examples
    --------
    >>> root_group("1003.2", True), root_group("3.2", False)
    (1, 0)
    """
    return int(path_key(path)[0]) // GROUP_STRIDE if offset_by_group else 0


@dataclass
class Tree:
    """What :func:`grow` found: per level the child columns, the small tables and the models."""

    depth: int
    offset_by_group: bool
    children: dict[int, DataFrame] = field(default_factory=dict)  # level → entity_id, cluster_<level>
    leaves: DataFrame | None = None  # entity_id, cluster_path
    files: dict[str, bytes] = field(default_factory=dict)
    levels: dict[str, dict[str, dict]] = field(default_factory=dict)
    quality: list[pd.DataFrame] = field(default_factory=list)
    stability: list[pd.DataFrame] = field(default_factory=list)
    sweep: list[pd.DataFrame] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def columns(self, clusters: DataFrame) -> DataFrame:
        """``gold/clusters`` rows with ``cluster_path`` and ``cluster_2`` .. ``cluster_<depth>``."""
        out = clusters.join(self.leaves, "entity_id", "left")
        for level in range(2, self.depth + 1):
            if level in self.children:
                out = out.join(self.children[level], "entity_id", "left")
            else:
                out = out.withColumn(f"cluster_{level}", F.lit(None).cast("int"))
        return out.select(*clusters.columns, "cluster_path",
                          *(f"cluster_{level}" for level in range(2, self.depth + 1)))

    def tables(self, quality: pd.DataFrame, stability: pd.DataFrame,
               sweep: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The first level's small tables with every other level's rows below them."""
        def stacked(first: pd.DataFrame, rest: list[pd.DataFrame]) -> pd.DataFrame:
            return pd.concat([at_level(first, 1), *rest], ignore_index=True)

        return stacked(quality, self.quality), stacked(stability, self.stability), stacked(sweep, self.sweep)

    def manifest(self) -> dict[str, dict[str, dict]]:
        """level → parent path → ``file`` (None: a single child) and ``classes``."""
        return self.levels

    def summary(self) -> list[str]:
        """One line per level: splits kept and refused, with the reasons."""
        lines = []
        for level in range(2, self.depth + 1):
            here = [v for v in self.verdicts if v["level"] == level]
            if not here:
                continue
            kept = [v for v in here if v["kept"]]
            refused = [v for v in here if v["kept"] is False]
            small = [v for v in here if v["kept"] is None]
            lines.append(f"  level {level}: {len(kept)} split(s) kept, {len(refused)} refused, "
                         f"{len(small)} cluster(s) too small to split")
            lines += [f"    {v['parent']}: {'kept' if v['kept'] else 'refused' if v['kept'] is False else 'not split'}"
                      f": {v['reason']}" for v in here]
        return lines

    def unpersist(self) -> None:
        for frame in [*self.children.values(), self.leaves]:
            if frame is not None:
                frame.unpersist()


def at_level(frame: pd.DataFrame, level: int, parents: dict[int, str] | None = None,
             offset_by_group: bool = False) -> pd.DataFrame:
    """``frame`` with ``level`` and ``parent`` (the parent path by its group key; None at level 1);
    below the first level ``group`` becomes the first level's group of the parent."""
    out = frame.copy()
    out["level"] = level
    if parents is None:
        out["parent"] = None
        return out
    out["parent"] = [parents[int(g)] for g in out["group"]]
    out["group"] = [root_group(p, offset_by_group) for p in out["parent"]]
    return out


def grow(population: DataFrame, clusters: DataFrame, stability: pd.DataFrame, features: list[str],
         settings: DensityConfig, fit_level: Callable, quality_of: Callable) -> Tree:
    """Split the stable clusters of ``clusters`` (the first level's ``gold/clusters`` rows) down to
    ``settings.depth`` levels; see the module docstring.

    Parameters
    ----------
    population : DataFrame
        ``entity_id``, ``group`` and the raw features of everyone.
    clusters : DataFrame
        The first level's rows (``entity_id``, ``cluster``).
    stability : DataFrame
        The first level's ``gold/cluster_stability`` rows (which clusters are stable).
    features : list of str
    settings : DensityConfig
    fit_level, quality_of : callable
        The first level's machinery (:func:`seglake.segmentation.density.fit_level` and its
        quality table), passed in because the density stage imports this module.

    Returns
    -------
    Tree
        Persisted child columns (the caller calls :meth:`Tree.unpersist` once written).
    """
    started = time.monotonic()
    tree = Tree(settings.depth, settings.group_by != "none")
    leaves = clusters.select("entity_id", F.col("cluster").cast("string").alias("cluster_path")).persist(
        StorageLevel.MEMORY_AND_DISK)
    candidates = sorted({str(int(c)) for c in stability.loc[stability["stable"] == True, "merged_into"]  # noqa: E712
                         if int(c) != NOISE}, key=path_key)
    features_only = population.select("entity_id", *features)
    for level in range(2, settings.depth + 1):
        if not candidates:
            break
        counted = leaves.where(F.col("cluster_path").isin(candidates)).groupBy("cluster_path").count().collect()
        sizes = {row[0]: int(row[1]) for row in counted}
        parents = [p for p in candidates if sizes.get(p, 0) > settings.min_split_size]
        tree.verdicts += [{"level": level, "parent": p, "kept": None, "population": sizes.get(p, 0),
                           "reason": f"{sizes.get(p, 0)} entities, not more than density.min_split_size "
                                     f"{settings.min_split_size}"} for p in candidates if p not in parents]
        if not parents:
            break
        keys = dict(enumerate(parents))
        key_frame = population.sparkSession.createDataFrame([(p, k) for k, p in keys.items()],
                                                            "cluster_path string, group int")
        members = features_only.join(leaves.join(F.broadcast(key_frame), "cluster_path"), "entity_id").drop(
            "cluster_path")
        fit = fit_level(members, features, settings, offset_by_group=False, numbering=number_children)
        verdicts = judge(fit.sweep, fit.surrogates, settings)
        models = {int(row.group): (None if row.model is None else bytes(row.model), json.loads(row.classes))
                  for row in fit.surrogates.itertuples()}
        kept = {k: models[k] for k, (ok, _) in verdicts.items() if ok}
        for k, (ok, reason) in verdicts.items():
            tree.verdicts.append({"level": level, "parent": keys[k], "kept": ok, "population": sizes[keys[k]],
                                  "reason": reason})
        for k, (raw, classes) in kept.items():
            name = None if raw is None else surrogate_file(level, keys[k])
            if raw is not None:
                tree.files[name] = raw
            tree.levels.setdefault(str(level), {})[keys[k]] = {"file": name, "classes": classes}
        sampled = fit.labelled.select("entity_id", F.col("cluster").alias("_sampled"))
        assigned = assign(members.where(F.col("group").isin(list(kept))), kept, features)
        child = (assigned.join(F.broadcast(sampled), "entity_id", "left")
                 .select("entity_id", F.coalesce("_sampled", "cluster").alias(f"cluster_{level}"))
                 .persist(StorageLevel.MEMORY_AND_DISK))
        child.count()
        column = F.col(f"cluster_{level}")
        deeper = (leaves.join(child, "entity_id", "left")
                  .select("entity_id", F.when(column > 0, F.concat_ws(".", "cluster_path", column.cast("string")))
                          .otherwise(F.col("cluster_path")).alias("cluster_path"))
                  .persist(StorageLevel.MEMORY_AND_DISK))
        deeper.count()
        leaves.unpersist()
        leaves = deeper
        tree.children[level] = child
        quality = quality_of(fit.labelled, fit.surrogates, fit.counts, fit.sweep, fit.stability)
        quality["split_kept"] = [verdicts[int(g)][0] for g in quality["group"]]
        quality["split_reason"] = [verdicts[int(g)][1] for g in quality["group"]]
        fit.labelled.unpersist()
        tree.quality.append(at_level(quality, level, keys, tree.offset_by_group))
        tree.stability.append(at_level(fit.stability, level, keys, tree.offset_by_group))
        tree.sweep.append(at_level(fit.sweep, level, keys, tree.offset_by_group))
        candidates = sorted((f"{keys[k]}.{number}" for k in kept
                             for number in range(1, len([c for c in kept[k][1] if c != NOISE]) + 1)),
                            key=path_key)
    tree.leaves = leaves
    tree.seconds = time.monotonic() - started
    return tree


def assign_levels(frame: DataFrame, cluster: Column, levels: dict[str, dict[str, dict]],
                  models: dict[str, bytes], features: list[str], depth: int) -> DataFrame:
    """``frame`` (with the raw ``features``) with ``cluster_2`` .. ``cluster_<depth>`` and
    ``cluster_path`` from the saved child surrogates, ``cluster`` being the first level's label.

    A row reaches a child only through its parent: at each level the row's path so far picks the
    parent's surrogate (``levels``: the manifest's level → parent path → ``file``, ``classes``;
    ``models``: file → XGBoost JSON bytes); a row whose path is no kept parent gets null.

    Examples
    --------
    Parent 3's children are told apart by ``likes``; cluster 4 was not split:

    >>> from seglake.segmentation.surrogate import fit_surrogate
    >>> sample = pd.DataFrame({"entity_id": [f"e{i:02d}" for i in range(40)], "group": 0,
    ...                        "cluster": [1] * 20 + [2] * 20, "likes": [0.0] * 20 + [10.0] * 20})
    >>> fitted = fit_surrogate(sample, ["likes"], trees=10, max_depth=2, holdout_fraction=0.25, seed=0)
    >>> levels = {"2": {"3": {"file": "surrogate-level2-3.json", "classes": [1, 2]}}}
    >>> models = {"surrogate-level2-3.json": bytes(fitted.model[0])}
    >>> rows = spark.createDataFrame([("a", 3, 0.0), ("b", 3, 10.0), ("c", 4, 10.0), ("d", -1, 0.0)],
    ...                              "entity_id string, cluster int, likes double")
    >>> out = assign_levels(rows, F.col("cluster"), levels, models, ["likes"], depth=2)
    >>> [(r.entity_id, r.cluster_2, r.cluster_path) for r in out.orderBy("entity_id").collect()]
    [('a', 1, '3.1'), ('b', 2, '3.2'), ('c', None, '4'), ('d', None, '-1')]
    """
    spark = frame.sparkSession
    path: Column = cluster.cast("string")
    out = frame
    for level in range(2, depth + 1):
        parents = sorted(levels.get(str(level), {}), key=path_key)
        column = f"cluster_{level}"
        if not parents:
            out = out.withColumn(column, F.lit(None).cast("int"))
            continue
        specs = levels[str(level)]
        by_key = {k: (None if specs[p]["file"] is None else models[specs[p]["file"]], specs[p]["classes"])
                  for k, p in enumerate(parents)}
        lookup = F.create_map(*[item for k, p in enumerate(parents) for item in (F.lit(p), F.lit(k))])
        out = out.withColumn("_path", path).withColumn("_parent", F.coalesce(lookup[F.col("_path")], F.lit(-1)))
        predicted = predicted_cluster(spark, by_key, F.col("_parent"), features)
        out = out.withColumn(column, F.when(F.col("_parent") >= 0, predicted.getField("cluster")))
        path = (F.when(F.col(column) > 0, F.concat_ws(".", F.col("_path"), F.col(column).cast("string")))
                .otherwise(F.col("_path")))
        out = out.withColumn("_path", path).drop("_parent")
        path = F.col("_path")
    return out.withColumn("cluster_path", path).drop("_path")
