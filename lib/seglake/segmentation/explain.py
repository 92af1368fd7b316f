"""Explain each cluster and segment: one-vs-rest XGBoost + SHAP, then one plain-language sentence.

Steps of :func:`explain` (config section ``explain``):

1. Targets: every density cluster of the run (``gold/clusters``, noise −1 excluded) and every KMeans
   segment (``gold/segments``, when present). A target with fewer than ``min_cluster_size`` entities
   is skipped and named in the stage message.
2. A bounded sample of ``sample_size`` entities, stratified by cluster (by segment when there are no
   clusters) so that small clusters have enough rows; each row carries a design weight (stratum
   population / stratum sample) so that the rest of the population keeps its real mix.
3. The sample is crossed with the target ids and ``groupBy(kind, target).applyInPandas``, one task
   per target spread over the cores (:func:`seglake.segmentation.tasks.apply_per_key`), trains one
   binary XGBoost per target on the raw features, positives weighted by ``scale_pos_weight`` so both
   sides weigh the same. Precision, recall and F1 are measured (design-weighted) on a stratified
   ``holdout_fraction`` of the sample. A SHAP ``TreeExplainer`` is built inside the UDF (explainers do
   not pickle) on the binary model, so its output is a plain rows × features array in every version.
4. Per feature: ``mean_abs_shap`` (mean |SHAP| over the sample, members and the rest weighing the
   same), ``direction`` ("higher" when larger values push an entity into the target: the sign of the
   Spearman correlation between the feature and its SHAP value; the sign of the member-vs-rest median
   difference when that is undefined) and ``rank`` (1 = largest mean |SHAP|).
5. Names (2–4 words, unique within the run, ``explain.names`` overrides by id) come from the best
   ranked features and their direction by the rule of :mod:`seglake.segmentation.names`.
6. Descriptions use the ``top_features`` best-ranked features (leaving out those with under a tenth
   of the best feature's mean |SHAP|), each with the target's median in
   original units and its ratio to the overall median (population medians, ``percentile_approx``):
   ratio ≥ 4 "very high", ≥ 1.25 "high", < 0.25 "very low", < 0.8 "low", otherwise "typical"
   (a difference instead of a ratio when the overall median is not positive).
7. With ``density.depth`` above 1, every child of a kept split (``cluster_path`` ``"3.1"``) is a
   target too, explained against its siblings within its parent and described against its parent's
   medians (:mod:`seglake.segmentation.explain_levels`).

Writes ``gold/explanations``, ``gold/descriptions`` (a name and a sentence per target) and
``models/<run_id>/explain/<kind>-<target>.json`` (``cluster-<path>.json`` for a child)
with ``manifest-explain.json`` (sha256 per file).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import ExplainConfig, SeglakeConfig
from seglake.segmentation.density import feature_columns, stratified_sample
from seglake.segmentation.explain_levels import child_profile, member_of
from seglake.segmentation.tasks import apply_per_key
from seglake.segmentation.names import SUBCLUSTER, heading, name_targets, overrides, strong, title
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.artifacts import EXPLAIN_MANIFEST, write_manifest
from seglake.segmentation.surrogate import NOISE, train_test_indices
from seglake.core.run_cache import entity_snapshot
from seglake.core.tables import Tables, read_run, write_run

MANIFEST = EXPLAIN_MANIFEST
TARGET_SCHEMA = T.StructType([
    T.StructField("kind", T.StringType()), T.StructField("target", T.IntegerType()),
    T.StructField("precision", T.DoubleType()), T.StructField("recall", T.DoubleType()),
    T.StructField("f1", T.DoubleType()), T.StructField("positives", T.LongType()),
    T.StructField("model", T.BinaryType()),
    T.StructField("features", T.ArrayType(T.StringType())),
    T.StructField("mean_abs_shap", T.ArrayType(T.DoubleType())),
    T.StructField("direction", T.ArrayType(T.StringType())),
])
EXPLANATIONS_SCHEMA = ("run_id string, kind string, target int, feature string, mean_abs_shap double, "
                       "direction string, rank int, precision double, recall double, f1 double, "
                       "size long, share double, path string")
DESCRIPTIONS_SCHEMA = ("run_id string, kind string, target int, name string, size long, share double, "
                       "description string, path string")
WORDS = ((4.0, "very high"), (1.25, "high"), (0.8, "typical"), (0.25, "low"))


# ---------------------------------------------------------------- one target (pandas UDF body)


def explain_target(
    rows: pd.DataFrame, features: list[str], trees: int, max_depth: int,
    holdout_fraction: float, seed: int,
) -> pd.DataFrame:
    """Fit one one-vs-rest XGBoost and summarise its SHAP values (one output row).

    Parameters
    ----------
    rows : DataFrame
        ``kind``, ``target``, ``entity_id``, ``is_target`` (bool), ``weight`` (design weight) and the
        raw ``features``: the sample, labelled for this target.
    features : list of str
    trees, max_depth : int
    holdout_fraction : float
    seed : int

    Returns
    -------
    DataFrame
        One row of ``TARGET_SCHEMA``; ``model`` null and metrics NaN when the sample holds fewer
        than five members or five non-members of the target.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rows = pd.DataFrame({"kind": "cluster", "target": 1, "entity_id": [f"e{i}" for i in range(40)],
    ...                      "is_target": [False] * 20 + [True] * 20, "weight": 1.0,
    ...                      "likes": np.r_[rng.normal(0, 1, 20), rng.normal(10, 1, 20)]})
    >>> row = explain_target(rows, ["likes"], trees=10, max_depth=2, holdout_fraction=0.25,
    ...                      seed=0).iloc[0]
    >>> float(row.f1), int(row.positives), np.round(row.mean_abs_shap, 2).tolist(), row.direction
    (1.0, 20, [1.22], ['higher'])
    """
    import shap
    import xgboost as xgb
    from sklearn.metrics import precision_recall_fscore_support

    rows = rows.sort_values("entity_id", kind="stable").reset_index(drop=True)
    y = rows["is_target"].to_numpy().astype(np.int32)
    row = {"kind": rows["kind"].iloc[0], "target": int(rows["target"].iloc[0]),
           "precision": math.nan, "recall": math.nan, "f1": math.nan, "positives": int(y.sum()),
           "model": None, "features": features, "mean_abs_shap": None, "direction": None}
    if y.sum() < 5 or (1 - y).sum() < 5:
        return pd.DataFrame([row])
    x = rows[features].to_numpy(dtype=np.float64)
    weight = rows["weight"].to_numpy(dtype=np.float64)
    train, holdout = train_test_indices(y, holdout_fraction, seed)
    balance = weight[train][y[train] == 0].sum() / weight[train][y[train] == 1].sum()
    params = {"objective": "binary:logistic", "max_depth": max_depth, "eta": 0.1,
              "tree_method": "hist", "nthread": 1, "seed": seed, "scale_pos_weight": balance}
    booster = xgb.train(params, xgb.DMatrix(x[train], y[train], weight=weight[train],
                                            feature_names=features), trees)
    predicted = (booster.inplace_predict(x[holdout]) >= 0.5).astype(np.int32)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y[holdout], predicted, average="binary", sample_weight=weight[holdout], zero_division=0)
    values = np.asarray(shap.TreeExplainer(booster).shap_values(x))
    if values.ndim == 3:  # some versions return one slice per class even for binary models
        values = values[..., -1]
    balanced = weight * np.where(y == 1, balance, 1.0)
    mean_abs = (np.abs(values) * balanced[:, None]).sum(axis=0) / balanced.sum()
    row.update(precision=float(precision), recall=float(recall), f1=float(f1),
               model=bytes(booster.save_raw("json")), mean_abs_shap=mean_abs.tolist(),
               direction=[_direction(x[:, j], values[:, j], y) for j in range(len(features))])
    return pd.DataFrame([row])


def _direction(feature: np.ndarray, contribution: np.ndarray, members: np.ndarray) -> str:
    known = ~np.isnan(feature)
    if known.sum() > 2 and np.ptp(feature[known]) > 0 and np.ptp(contribution[known]) > 0:
        rho = pd.Series(feature[known]).corr(pd.Series(contribution[known]), method="spearman")
        if np.isfinite(rho) and rho != 0:
            return "higher" if rho > 0 else "lower"
    inside, rest = feature[known & (members == 1)], feature[known & (members == 0)]
    if len(inside) and len(rest):
        return "higher" if np.median(inside) >= np.median(rest) else "lower"
    return "higher"


def explain_targets(crossed: DataFrame, features: list[str], settings: ExplainConfig,
                    targets: list[tuple[str, int]]) -> pd.DataFrame:
    """Spark wrapper: ``groupBy(kind, target).applyInPandas(explain_target)``, one task per target
    of ``targets`` (``(kind, target)`` pairs) spread over the cores; one small row per target."""
    body = functools.partial(explain_target, features=features, trees=settings.trees,
                             max_depth=settings.max_depth,
                             holdout_fraction=settings.holdout_fraction, seed=settings.seed)
    columns = crossed.select("kind", "target", "entity_id", "is_target", "weight", *features)
    # every target is fitted on about as many rows (the sample, or its rows with a segment)
    weights = {(kind, int(target)): 1.0 for kind, target in targets}
    return apply_per_key(columns, ["kind", "target"], weights, body, TARGET_SCHEMA).toPandas()


# ---------------------------------------------------------------- tables and words (driver, small)


def explanation_rows(targets: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (kind, target, feature) with its rank, metrics, size and share (and
    ``path`` when ``sizes`` has it).

    Examples
    --------
    >>> targets = pd.DataFrame({"kind": ["cluster"], "target": [1], "precision": [0.9], "recall": [0.8],
    ...     "f1": [0.85], "positives": [20], "model": [b"{}"], "features": [["likes", "views"]],
    ...     "mean_abs_shap": [[0.2, 1.5]], "direction": [["higher", "lower"]]})
    >>> sizes = pd.DataFrame({"kind": ["cluster"], "target": [1], "size": [250], "share": [0.25]})
    >>> explanation_rows(targets, sizes)[["target", "feature", "mean_abs_shap", "direction", "rank"]]
       target feature  mean_abs_shap direction  rank
    0       1   views            1.5     lower     1
    1       1   likes            0.2    higher     2
    """
    long = targets.dropna(subset=["model"]).explode(["features", "mean_abs_shap", "direction"])
    long = long.rename(columns={"features": "feature"}).astype({"mean_abs_shap": "float64"})
    long["rank"] = (long.groupby(["kind", "target"])["mean_abs_shap"]
                    .rank(method="first", ascending=False).astype("int32"))
    long = long.merge(sizes, on=["kind", "target"])
    columns = ["kind", "target", "feature", "mean_abs_shap", "direction", "rank",
               "precision", "recall", "f1", "size", "share", *(["path"] if "path" in sizes else [])]
    return long[columns].sort_values(["kind", "target", "rank"]).reset_index(drop=True)


def human(value: float) -> str:
    """871234 → '871k', 1.2e6 → '1.2M', 0.00813 → '0.0081'.

    Examples
    --------
    >>> [human(v) for v in (871234, 1.2e6, 42, 0.00813, 0.00001234, float("nan"))]
    ['871k', '1.2M', '42', '0.00813', '1.23e-05', 'n/a']
    """
    if not np.isfinite(value):
        return "n/a"
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if size >= 0.001 or value == 0 else f"{value:.2e}"


def word(median: float, overall: float, against: str | None = None) -> tuple[str, str]:
    """The word for a target median against the overall median (or ``against``'s, a parent
    cluster's), and the comparison in brackets.

    Examples
    --------
    >>> word(300, 60)
    ('very high', 'median 300, 5× the overall 60')
    >>> word(1.0, 1.1)
    ('typical', 'median 1, 0.91× the overall 1.1')
    >>> word(5, 0)  # no ratio to a median that is not positive
    ('high', 'median 5 vs 0 overall')
    >>> word(300, 60, "cluster 3")
    ('very high', "median 300, 5× cluster 3's 60")
    """
    if overall > 0 and median >= 0:
        ratio = median / overall
        label = next((w for limit, w in WORDS if ratio >= limit), "very low")
        times = f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.2g}×"
        reference = f"{against}'s" if against else "the overall"
        return label, f"median {human(median)}, {times} {reference} {human(overall)}"
    label = "typical" if median == overall else ("high" if median > overall else "low")
    return label, f"median {human(median)} vs {human(overall)} {f'in {against}' if against else 'overall'}"


def compared_with(parents: dict[tuple[str, int], tuple[str, dict[str, float]]] | None, kind: str,
                  target: int, overall: dict[str, float]) -> tuple[str | None, dict[str, float]]:
    """What a target's medians are compared with: its parent's label and medians for a child of a
    density split, else no label and the overall medians.

    Examples
    --------
    >>> compared_with({("subcluster", 1): ("cluster 3", {"f": 2.0})}, "subcluster", 1, {"f": 1.0})
    ('cluster 3', {'f': 2.0})
    >>> compared_with(None, "cluster", 3, {"f": 1.0})
    (None, {'f': 1.0})
    """
    return (parents or {}).get((kind, int(target)), (None, overall))


def describe(ranked: pd.DataFrame, medians: pd.DataFrame, overall: dict[str, float],
             top_features: int, noun: str,
             parents: dict[tuple[str, int], tuple[str, dict[str, float]]] | None = None) -> pd.DataFrame:
    """One sentence per target from its ``top_features`` best-ranked features.

    Parameters
    ----------
    ranked : DataFrame
        :func:`explanation_rows` output.
    medians : DataFrame
        ``kind``, ``target``, ``feature``, ``median`` (population medians per target).
    overall : dict
        feature → overall median (over every entity with a cluster or a segment).
    top_features : int
    noun : str
        What an entity is called ("accounts").
    parents : dict, optional
        (kind, target) of a child → its parent's label ("cluster 3") and feature medians: its
        share and medians are then given against the parent's (its ``path`` names it).

    Returns
    -------
    DataFrame
        ``kind, target, size, share, description``.

    Examples
    --------
    >>> ranked = pd.DataFrame({"kind": "cluster", "target": 1, "feature": ["views", "likes"],
    ...     "mean_abs_shap": [1.5, 0.2], "rank": [1, 2], "size": 250, "share": 0.25})
    >>> medians = pd.DataFrame({"kind": "cluster", "target": 1, "feature": ["likes", "views"],
    ...     "median": [40.0, 120.0]})
    >>> print(describe(ranked, medians, {"likes": 10.0, "views": 1000.0}, 2, "accounts").description[0])
    ... # doctest: +NORMALIZE_WHITESPACE
    Cluster 1 — 25.0% of accounts: very low views (median 120, 0.12× the overall 1k);
    very high likes (median 40, 4× the overall 10)
    """
    merged = ranked.merge(medians, on=["kind", "target", "feature"], how="left")
    lines = []
    for (kind, target), rows in merged.groupby(["kind", "target"], sort=True):
        # a feature with under a tenth of the best one's mean |SHAP| barely moves the model: leave it out
        top = rows[(rows["rank"] <= top_features) & strong(rows["mean_abs_shap"])].sort_values("rank")
        against, reference = compared_with(parents, kind, target, overall)
        parts = []
        for item in top.itertuples():
            label, detail = word(float(item.median), float(reference[item.feature]), against)
            parts.append(f"{label} {item.feature} ({detail})")
        first = rows.iloc[0]
        what = "; ".join(parts) if parts else "no feature sets it apart"
        head = title(kind, int(target), first["path"] if "path" in rows else None)
        sentence = f"{head} — {first['share']:.1%} of {against or noun}: {what}"
        lines.append({"kind": kind, "target": int(target), "size": int(first["size"]),
                      "share": float(first["share"]), "description": sentence})
    return pd.DataFrame(lines, columns=["kind", "target", "size", "share", "description"])


# ---------------------------------------------------------------- the stage


def _run_labels(spark: SparkSession, tables: Tables, run_id: str) -> tuple[DataFrame | None, list[str]]:
    """``entity_id`` with ``cluster`` (and ``cluster_path``) and/or ``segment`` of this run, and
    which kinds exist."""
    labels, kinds = None, []
    for kind, table in (("cluster", "clusters"), ("segment", "segments")):
        found = read_run(spark, tables.gold(table), run_id)
        if found is None:
            continue
        levels = [F.col("cluster_path")] if kind == "cluster" and "cluster_path" in found.columns else []
        rows = found.select(F.col("entity_id").cast("string"), F.col(kind).cast("int"), *levels)
        kinds.append(kind)
        labels = rows if labels is None else labels.join(rows, "entity_id", "full")
    return labels, kinds


def _frame(spark: SparkSession, rows: pd.DataFrame, run_id: str, schema: str) -> DataFrame:
    """A small driver-side table as a Spark DataFrame with its columns in schema order."""
    names = [part.strip().split(" ")[0] for part in schema.split(",")]
    return spark.createDataFrame(rows.assign(run_id=run_id)[names], schema)


def profile(population: DataFrame, features: list[str]) -> pd.DataFrame:
    """Size and median of every feature per cluster, per segment and overall, in one pass.

    Returns
    -------
    DataFrame
        ``kind`` ("cluster", "segment" or "overall"), ``target`` (NaN for overall), ``size`` and
        one column per feature (approximate medians, ``percentile_approx`` with accuracy 10,000).

    Examples
    --------
    >>> population = spark.createDataFrame([("a", 0, 1, 1.0), ("b", 0, 1, 3.0), ("c", 1, 0, 10.0),
    ...     ("d", None, 0, 20.0)], "entity_id string, cluster int, segment int, likes double")
    >>> profile(population, ["likes"]).sort_values(["kind", "target"], ignore_index=True)
          kind  target  size  likes
    0  cluster     0.0     2    1.0
    1  cluster     1.0     1   10.0
    2  overall     NaN     4    3.0
    3  segment     0.0     2   10.0
    4  segment     1.0     2    1.0
    """
    stats = [F.percentile_approx(F.col(f), 0.5, 10_000).alias(f) for f in features]
    rows = (population.groupingSets([["cluster"], ["segment"], []], "cluster", "segment")
            .agg(F.grouping_id().alias("_set"), F.count("*").alias("size"), *stats).toPandas())
    kind = rows["_set"].map({1: "cluster", 2: "segment", 3: "overall"})
    target = np.where(kind == "cluster", rows["cluster"], rows["segment"])
    rows = rows.assign(kind=kind, target=target)
    rows = rows[(rows["kind"] == "overall") | rows["target"].notna()]
    return rows[["kind", "target", "size", *features]].reset_index(drop=True)


def _crossed_sample(population: DataFrame, sizes: pd.DataFrame, chosen: pd.DataFrame,
                    population_rows: int, settings: ExplainConfig) -> DataFrame:
    """The bounded sample, stratified by cluster (else segment), crossed with the chosen targets
    and labelled ``is_target``; rows without a label of the target's kind are left out, and a
    child's rows are its parent's members."""
    stratum = "cluster" if (sizes["kind"] == "cluster").any() else "segment"
    strata = sizes[sizes["kind"] == stratum].set_index("target")["size"].to_dict()
    unlabelled = population_rows - sum(strata.values())
    if unlabelled:  # entities with a segment but no cluster form a stratum of their own
        strata[-2] = unlabelled
    sample, _ = stratified_sample(population.withColumn("_stratum", F.coalesce(stratum, F.lit(-2))),
                                  "_stratum", settings.sample_size, settings.seed, strata)
    target_ids = population.sparkSession.createDataFrame(
        chosen[["kind", "target", "path", "parent"]].astype({"target": "int32"}),
        "kind string, target int, path string, parent string")
    child = F.col("kind") == SUBCLUSTER  # a child's rest is its parent's other members
    label = F.when(F.col("kind") == "cluster", F.col("cluster")).otherwise(F.col("segment"))
    return (sample.crossJoin(F.broadcast(target_ids))
            .where(F.when(child, F.coalesce(member_of(F.col("cluster_path"), F.col("parent")), F.lit(False)))
                   .otherwise(label.isNotNull()))
            .withColumn("is_target", F.when(child, member_of(F.col("cluster_path"), F.col("path")))
                        .otherwise(label == F.col("target"))))


def _first(items: list[str], shown: int = 8) -> str:
    """The first ``shown`` items, and how many more there are."""
    more = f", … ({len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _model_name(kind: str, target: int, path: str | None) -> str:
    """A target's model file under ``explain/``: ``cluster-3``, ``segment-0``, a child ``cluster-3.1``."""
    return f"cluster-{path}" if kind == SUBCLUSTER else f"{kind}-{target}"


def _children(population: DataFrame, features: list[str], profiles: pd.DataFrame, sizes: pd.DataFrame,
              medians: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``sizes`` and ``medians`` with the tree's children added (kind ``subcluster``, share of the
    parent), and each child's parent label and medians for :func:`describe`."""
    children = child_profile(population, features)
    if children.empty:
        return sizes, medians, {}
    clusters = profiles[profiles["kind"] == "cluster"]
    node_size = {**{str(int(t)): int(n) for t, n in zip(clusters["target"], clusters["size"])},
                 **dict(zip(children["path"], children["size"].astype("int64")))}
    node_medians = {**{str(int(r["target"])): r[features].astype("float64").to_dict() for _, r in clusters.iterrows()},
                    **{r["path"]: r[features].astype("float64").to_dict() for _, r in children.iterrows()}}
    kids = children[["target", "size", "path", "parent"]].assign(kind=SUBCLUSTER).astype(
        {"target": "int64", "size": "int64"})
    kids["share"] = kids["size"] / kids["parent"].map(node_size)
    parents = {(SUBCLUSTER, int(r.target)): (f"cluster {r.parent}", node_medians[r.parent])
               for r in kids.itertuples()}
    child_medians = (children[["target", *features]].assign(kind=SUBCLUSTER).astype({"target": "int64"})
                     .melt(id_vars=["kind", "target"], var_name="feature", value_name="median"))
    return (pd.concat([sizes, kids[sizes.columns]], ignore_index=True),
            pd.concat([medians, child_medians], ignore_index=True), parents)


def explain(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Explain every cluster and segment of a run with one-vs-rest XGBoost + SHAP.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
        Uses ``explain`` and the table layout.
    run_id : str
        Reads this run's ``gold/clusters`` and ``gold/segments``; replaces its rows in
        ``gold/explanations`` and ``gold/descriptions``.

    Returns
    -------
    StageResult
        ``details``: ``targets`` (metrics per target), ``skipped``, ``descriptions``, ``names``
        (``kind, target, name`` per target).

    Raises
    ------
    SeglakeError
        No clusters or segments for the run, none large enough, or an ``explain.names`` override
        of a segment or cluster the run does not explain.
    """
    settings, tables = config.explain, Tables.of(config)
    entities, _ = entity_snapshot(spark, tables.entities, "features")
    features = feature_columns(entities)
    labels, kinds = _run_labels(spark, tables, run_id)
    if labels is None:
        raise SeglakeError(f"no clusters or segments for run {run_id} under {tables.root}/gold: "
                           f"run the density or segment stage first")
    population = entities.select(F.col("entity_id").cast("string"),
                                 *[F.col(f).cast("double") for f in features]).join(labels, "entity_id")
    for kind in ("cluster", "segment"):
        if kind not in kinds:
            population = population.withColumn(kind, F.lit(None).cast("int"))
    levels = "cluster_path" in population.columns  # density.depth > 1: the tree's children too
    if not levels:
        population = population.withColumn("cluster_path", F.lit(None).cast("string"))
    profiles = profile(population, features)
    population_rows = int(profiles.loc[profiles["kind"] == "overall", "size"].iloc[0])
    sizes = (profiles.loc[profiles["kind"] != "overall", ["kind", "target", "size"]]
             .astype({"target": "int64", "size": "int64"}).sort_values(["kind", "target"]))
    sizes["share"] = sizes["size"] / sizes.groupby("kind")["size"].transform("sum")
    sizes["path"] = [str(t) if k == "cluster" else None for k, t in zip(sizes["kind"], sizes["target"])]
    sizes["parent"] = None
    medians = (profiles[profiles["kind"] != "overall"].drop(columns="size").astype({"target": "int64"})
               .melt(id_vars=["kind", "target"], var_name="feature", value_name="median"))
    overall = profiles.loc[profiles["kind"] == "overall", features].iloc[0].astype("float64").to_dict()
    sizes, medians, parents = _children(population, features, profiles, sizes, medians) if levels \
        else (sizes, medians, {})
    called = {(r.kind, int(r.target)): title(r.kind, int(r.target), r.path).lower() for r in sizes.itertuples()}
    chosen = sizes[(sizes["size"] >= settings.min_cluster_size)
                   & ~((sizes["kind"] == "cluster") & (sizes["target"] == NOISE))]
    skipped = [f"{called[r.kind, r.target]} ({r.size} < {settings.min_cluster_size})"
               for r in sizes.itertuples() if r.size < settings.min_cluster_size and r.target != NOISE]
    if chosen.empty:
        raise SeglakeError(f"run {run_id}: no cluster or segment has explain.min_cluster_size "
                           f"({settings.min_cluster_size}) entities; skipped {', '.join(skipped)}")
    overrides(settings, [(r.kind, int(r.target)) for r in chosen.itertuples()], run_id)  # before the fits

    crossed = _crossed_sample(population, sizes, chosen, population_rows, settings)
    targets = explain_targets(crossed, features, settings,
                              [(r.kind, int(r.target)) for r in chosen.itertuples()])
    failed = targets[targets["model"].isna()]
    skipped += [f"{called[r.kind, r.target]} (only {r.positives} in the sample)" for r in failed.itertuples()]
    targets = targets.dropna(subset=["model"])

    ranked = explanation_rows(targets, sizes)
    worded = ranked.merge(medians, on=["kind", "target", "feature"], how="left")
    worded["word"] = [word(float(m), float(compared_with(parents, k, t, overall)[1][f]))[0]
                      for k, t, f, m in zip(worded["kind"], worded["target"], worded["feature"],
                                            worded["median"])]  # the sentence's word steers the name's
    descriptions = (describe(ranked, medians, overall, settings.top_features, settings.noun, parents)
                    .merge(name_targets(worded, settings, run_id), on=["kind", "target"])
                    .merge(sizes[["kind", "target", "path"]], on=["kind", "target"]))
    files = {f"explain/{_model_name(r.kind, r.target, r.path)}.json": bytes(r.model)
             for r in targets.merge(sizes[["kind", "target", "path"]], on=["kind", "target"]).itertuples()}
    manifest = write_manifest(spark, tables.models(run_id),
                              {"features": features, "settings": settings.model_dump()},
                              files=files, manifest=MANIFEST)
    write_run(_frame(spark, ranked, run_id, EXPLANATIONS_SCHEMA), tables.gold("explanations"), run_id)
    write_run(_frame(spark, descriptions, run_id, DESCRIPTIONS_SCHEMA), tables.gold("descriptions"),
              run_id)
    headings = [heading(r.kind, r.target, r.name, r.path) for r in descriptions.itertuples()]
    for head, row in zip(headings, descriptions.itertuples()):
        print(head + row.description.removeprefix(title(row.kind, row.target, row.path)))

    explained = targets.groupby("kind").size().to_dict()
    message = ", ".join(f"explained {n} {k}(s)" for k, n in explained.items())
    message += f"; named {_first(headings)}"  # the full lists are in details["names"], ["skipped"]
    if skipped:
        message += f"; skipped {len(skipped)}: {_first(skipped)}"
    metrics = targets[["kind", "target", "precision", "recall", "f1", "positives"]]
    return StageResult("explain", population_rows, len(targets),
                       details={"targets": metrics.to_dict("records"), "skipped": skipped,
                                "descriptions": descriptions["description"].tolist(),
                                "names": descriptions[["kind", "target", "path", "name"]].to_dict("records"),
                                "model_files": manifest["files"]},
                       message=message)
