"""The ``assign`` stage of a ratings config: a multi-class XGBoost that puts (new) users in segments.

The seed's last step: a classifier that scores new users from their film ratings and demographics,
judged on a 30% holdout. Its inputs per user, built in Spark by :func:`user_features`:

- the rating of every catalogue film the user rated (a sparse row; films not rated are *missing*,
  which XGBoost routes down each split's learned default branch, not zero stars);
- per genre, the user's mean rating (missing when they rated none) and the share of their ratings;
- age, and the one-hot demographics of ``ratings.demographics``.

It needs no ALS: a new user's ratings and demographics are enough, so the model is usable on users
the run never saw. ml-100k has 943 users, so the per-user table is collected and the model fitted
on the driver; scoring runs in a ``mapInPandas`` over any number of users with the saved model.
Files: ``models/<run_id>/assigner/assigner.json`` (XGBoost JSON), ``assigner_spec.json`` (feature
layout and classes) and ``manifest.json`` with their sha256, checked before loading.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.artifacts import verified_bytes, write_manifest
from seglake.core.tables import Tables, read_delta, write_run
from seglake.usecases.movielens.tastes import bronze, run_segments

MODEL, SPEC, MANIFEST = "assigner.json", "assigner_spec.json", "manifest.json"
SCORES = "user_id long, assigned_segment int, probability double"
METRICS = (
    "run_id string, k int, users long, train_users long, holdout_users long, features int, "
    "accuracy double, majority_rate double, macro_f1 double, trees int, max_depth int, seconds double"
)


def user_features(ratings: DataFrame, users: DataFrame, items: DataFrame, genres: list[str],
                  demographics: list[str]) -> DataFrame:
    """One row per user: ``user_id``, ``rated`` (array of ``item_id``, ``rating`` structs),
    ``genre_mean_<i>`` / ``genre_share_<i>`` per genre index, ``age`` and the demographics.

    A user with demographics but no rating gets an empty ``rated`` and missing genre means.

    Parameters
    ----------
    ratings : DataFrame
        ``user_id``, ``item_id``, ``rating``.
    users : DataFrame
        ``user_id``, ``age`` and the ``demographics`` columns: one output row per user.
    items : DataFrame
        ``item_id``, ``genres`` (array of names); a film not in it counts in no genre.
    genres : list of str
        The genre names, in the order of the ``<i>`` suffixes.
    demographics : list of str
        Columns of ``users`` copied as they are.

    Returns
    -------
    DataFrame
        The per-user rows described above (lazy).
    """
    rated = ratings.join(items.select("item_id", "genres"), "item_id", "left")
    per_genre = []
    for i, genre in enumerate(genres):
        has = F.coalesce(F.array_contains("genres", genre), F.lit(False))
        per_genre += [F.avg(F.when(has, F.col("rating").cast("double"))).alias(f"genre_mean_{i}"),
                      F.avg(F.when(has, 1.0).otherwise(0.0)).alias(f"genre_share_{i}")]
    aggregated = rated.groupBy("user_id").agg(
        F.collect_list(F.struct("item_id", F.col("rating").cast("double").alias("rating"))).alias("rated"),
        *per_genre)
    return users.select("user_id", "age", *demographics).join(aggregated, "user_id", "left")


def feature_spec(frame: pd.DataFrame, items: list[int], genres: list[str], demographics: list[str]) -> dict:
    """The column layout of :func:`design_matrix`, fixed from the training users.

    Parameters
    ----------
    frame : pandas.DataFrame
        Training users (rows of :func:`user_features`): the demographic values seen here are the
        one-hot columns.
    items : list of int
        The catalogue's item ids: one rating column each.
    genres : list of str
        Genre names, in the order of the ``genre_*_<i>`` columns.
    demographics : list of str
        Categorical columns to one-hot encode.

    Returns
    -------
    dict
        ``items``, ``genres``, ``demographics`` (column → sorted values) and ``feature_names``.
        (The stage adds ``classes`` before saving it.)

    >>> spec = feature_spec(pd.DataFrame({"gender": ["M", "F", None]}), [10, 20], ["Drama"], ["gender"])
    >>> spec["feature_names"]
    ['item_10', 'item_20', 'genre_mean_0', 'genre_share_0', 'age', 'gender=F', 'gender=M']
    """
    values = {d: sorted(str(v) for v in frame[d].dropna().unique()) for d in demographics}
    names = ([f"item_{i}" for i in items] + [f"genre_mean_{i}" for i in range(len(genres))]
             + [f"genre_share_{i}" for i in range(len(genres))] + ["age"]
             + [f"{d}={v}" for d in demographics for v in values[d]])
    return {"items": [int(i) for i in items], "genres": list(genres), "demographics": values,
            "feature_names": names}


def design_matrix(frame: pd.DataFrame, spec: dict) -> sp.csr_matrix:
    """Users (rows of :func:`user_features` as pandas) as a sparse matrix in ``spec``'s layout.

    Absent entries are missing to XGBoost: films not rated, and genre means of genres not rated.
    Explicit zeros (shares, one-hot) are values. Films or categories unknown to ``spec`` are ignored.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``rated`` (list of ``item_id``/``rating`` mappings, or None), ``genre_mean_<i>``,
        ``genre_share_<i>``, ``age`` and the demographic columns of ``spec``.
    spec : dict
        :func:`feature_spec`.

    Returns
    -------
    scipy.sparse.csr_matrix
        One row per user, ``len(spec["feature_names"])`` columns.

    >>> spec = {"items": [10, 20], "genres": ["Drama"], "demographics": {"gender": ["F", "M"]},
    ...         "feature_names": ["item_10", "item_20", "genre_mean_0", "genre_share_0", "age",
    ...                           "gender=F", "gender=M"]}
    >>> users = pd.DataFrame({"rated": [[{"item_id": 20, "rating": 4.0}, {"item_id": 99, "rating": 1.0}], None],
    ...                       "genre_mean_0": [4.0, None], "genre_share_0": [1.0, 0.0], "age": [30, 41],
    ...                       "gender": ["F", "M"]})
    >>> matrix = design_matrix(users, spec)
    >>> matrix.toarray().tolist()
    [[0.0, 4.0, 4.0, 1.0, 30.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 41.0, 0.0, 1.0]]
    >>> [sorted(matrix[r].indices.tolist()) for r in range(2)]  # stored: every entry but the missing
    [[1, 2, 3, 4, 5, 6], [3, 4, 5, 6]]
    """
    item_column = {item: j for j, item in enumerate(spec["items"])}
    n_items, n_genres = len(spec["items"]), len(spec["genres"])
    rows, cols, vals = [], [], []
    for r, rated in enumerate(frame["rated"]):
        for entry in (rated if rated is not None else []):
            j = item_column.get(int(entry["item_id"]))
            if j is not None:
                rows.append(r), cols.append(j), vals.append(float(entry["rating"]))
    dense = [frame[f"genre_mean_{i}"] for i in range(n_genres)]
    dense += [frame[f"genre_share_{i}"] for i in range(n_genres)] + [frame["age"]]
    for d, values in spec["demographics"].items():
        dense += [(frame[d].astype(str) == v).astype(float).where(frame[d].notna()) for v in values]
    block = np.column_stack([pd.to_numeric(c, errors="coerce").to_numpy(dtype=float) for c in dense])
    present = ~np.isnan(block)
    r_dense, c_dense = np.nonzero(present)
    rows = np.concatenate([np.asarray(rows, dtype=np.int64), r_dense])
    cols = np.concatenate([np.asarray(cols, dtype=np.int64), c_dense + n_items])
    vals = np.concatenate([np.asarray(vals, dtype=float), block[present]])
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(frame), len(spec["feature_names"])))


def predict(booster, frame: pd.DataFrame, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Segment and its probability for each user row, with a loaded XGBoost booster.

    Parameters
    ----------
    booster : xgboost.Booster
        The assigner (``multi:softprob``).
    frame : pandas.DataFrame
        Rows of :func:`user_features`.
    spec : dict
        :func:`feature_spec` plus ``classes`` (segment of each output column).

    Returns
    -------
    (ndarray, ndarray)
        The most probable segment per row, and its probability.
    """
    import xgboost as xgb

    matrix = xgb.DMatrix(design_matrix(frame, spec), feature_names=_safe(spec["feature_names"]))
    probabilities = booster.predict(matrix)  # multi:softprob: one column per class, even for two
    best = probabilities.argmax(axis=1)
    return np.asarray(spec["classes"])[best], probabilities[np.arange(len(best)), best]


def _safe(names: list[str]) -> list[str]:
    """Feature names XGBoost accepts: it refuses ``[``, ``]`` and ``<`` (values come from data).

    >>> _safe(["occupation=a[b]", "age<18"])
    ['occupation=a(b)', 'agelt18']
    """
    return [n.replace("[", "(").replace("]", ")").replace("<", "lt") for n in names]


def _score_batches(batches: Iterator[pd.DataFrame], model: bytes, spec: dict) -> Iterator[pd.DataFrame]:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(model))
    for frame in batches:
        segment, probability = predict(booster, frame, spec)
        yield pd.DataFrame({"user_id": frame["user_id"].astype("int64"),
                            "assigned_segment": segment.astype("int32"), "probability": probability})


def load_assigner(spark: SparkSession, config: SeglakeConfig, run_id: str) -> tuple[bytes, dict]:
    """A run's assigner model bytes and spec, each checked against its sha256."""
    folder = f"{Tables.of(config).models(run_id)}/assigner"
    return verified_bytes(spark, folder, MODEL, MANIFEST), json.loads(verified_bytes(spark, folder, SPEC, MANIFEST))


def assign_users(spark: SparkSession, config: SeglakeConfig, run_id: str, ratings: DataFrame,
                 users: DataFrame) -> DataFrame:
    """Assign users (new or not) to the run's segments from their ratings and demographics.

    Parameters
    ----------
    ratings : DataFrame
        ``user_id``, ``item_id``, ``rating`` (1-5).
    users : DataFrame
        ``user_id``, ``age`` and the config's demographics columns.

    Returns
    -------
    DataFrame
        ``user_id``, ``assigned_segment``, ``probability`` (lazy; scored in a ``mapInPandas``).
    """
    model, spec = load_assigner(spark, config, run_id)
    items = bronze(spark, Tables.of(config), "items")
    features = user_features(ratings, users, items, spec["genres"], list(spec["demographics"]))
    return score_features(features, model, spec)


def score_features(features: DataFrame, model: bytes, spec: dict) -> DataFrame:
    """Score rows of :func:`user_features` with an assigner's XGBoost JSON and spec.

    Parameters
    ----------
    features : DataFrame
        :func:`user_features` built with ``spec``'s genres and demographics.
    model : bytes
        The booster as saved (``assigner.json``).
    spec : dict
        :func:`feature_spec` plus ``classes``.

    Returns
    -------
    DataFrame
        ``user_id``, ``assigned_segment``, ``probability`` (lazy; scored in a ``mapInPandas``).
    """
    return features.mapInPandas(functools.partial(_score_batches, model=model, spec=spec), SCORES)


def holdout_scores(result: pd.DataFrame, majority: int) -> dict[str, float]:
    """Accuracy of the assigner on held-out users, beside always answering ``majority``.

    Parameters
    ----------
    result : pandas.DataFrame
        ``segment`` (the run's) and ``assigned_segment`` (the assigner's) per held-out user.
    majority : int
        The most common segment of the training users.

    Returns
    -------
    dict
        ``accuracy``, ``majority_rate`` (the accuracy of answering ``majority``) and ``macro_f1``.

    >>> result = pd.DataFrame({"segment": [0, 0, 1, 1], "assigned_segment": [0, 1, 1, 1]})
    >>> {name: round(value, 4) for name, value in holdout_scores(result, majority=0).items()}
    {'accuracy': 0.75, 'majority_rate': 0.5, 'macro_f1': 0.7333}
    """
    return {"accuracy": float((result["segment"] == result["assigned_segment"]).mean()),
            "majority_rate": float((result["segment"] == majority).mean()),
            "macro_f1": float(f1_score(result["segment"], result["assigned_segment"], average="macro"))}


def fit_assigner(labelled: pd.DataFrame, catalogue: list[int], genres: list[str],
                 demographics: list[str], settings) -> tuple[bytes, dict, pd.DataFrame, pd.DataFrame]:
    """Split segmented users (seeded), fix the feature layout on the training share, fit XGBoost.

    Parameters
    ----------
    labelled : pandas.DataFrame
        Rows of :func:`user_features` with the run's ``segment``, sorted by ``user_id`` (the split
        is then the same on every run).
    catalogue : list of int
        Every item id.
    genres, demographics : list of str
        As given to :func:`user_features`.
    settings
        ``ratings.assigner``: ``holdout_fraction``, ``seed``, ``trees``, ``max_depth``,
        ``learning_rate``.

    Returns
    -------
    (bytes, dict, pandas.DataFrame, pandas.DataFrame)
        The booster as XGBoost JSON, the spec (:func:`feature_spec` plus ``classes``), and the
        training and held-out users.
    """
    import xgboost as xgb

    train, holdout = train_test_split(labelled, test_size=settings.holdout_fraction,
                                      random_state=settings.seed)
    spec = feature_spec(train, catalogue, genres, demographics)
    classes = sorted(int(s) for s in train["segment"].unique())
    spec["classes"] = classes
    target = train["segment"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    params = {"objective": "multi:softprob", "num_class": len(classes), "max_depth": settings.max_depth,
              "eta": settings.learning_rate, "tree_method": "hist", "seed": settings.seed,
              "nthread": 1}  # one thread: 943 rows, and the machine's cores belong to Spark
    matrix = xgb.DMatrix(design_matrix(train, spec), label=target, feature_names=_safe(spec["feature_names"]))
    booster = xgb.train(params, matrix, num_boost_round=settings.trees)
    return bytes(booster.save_raw("json")), spec, train, holdout


def assign(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """The ``assign`` stage: fit the assigner on 70% of segmented users, score everyone, measure.

    Writes ``models/<run_id>/assigner/``, ``gold/assignments`` (``entity_id``, ``segment``,
    ``assigned_segment``, ``probability``, ``holdout``) and ``gold/assigner_metrics`` (holdout
    ``accuracy`` beside ``majority_rate``, the accuracy of always answering the training set's
    most common segment, and ``macro_f1``).

    Raises
    ------
    SeglakeError
        Not a ratings config, the earlier stages have not run, or fewer than two segments.
    """
    started = time.monotonic()
    if config.ratings is None:
        raise SeglakeError(f"{config.source_file}: the assign stage needs a 'ratings' section")
    settings, tables = config.ratings.assigner, Tables.of(config)
    demographics = list(config.ratings.demographics)
    segments = run_segments(spark, tables, run_id)
    ratings, users, items = (bronze(spark, tables, t) for t in ("ratings", "users", "items"))
    genre_rows = items.select(F.explode("genres").alias("genre")).distinct().orderBy("genre").collect()
    genres = [r["genre"] for r in genre_rows]  # 19 for ml-100k
    catalogue = sorted(int(r[0]) for r in items.select("item_id").collect())  # 1,682 ids

    features = user_features(ratings, users, items, genres, demographics)
    # 943 users: the per-user table is small, so the fit happens on the driver (for millions of
    # users, xgboost.spark would fit on the executors with the same features).
    labelled = features.join(segments, "user_id").orderBy("user_id").toPandas()
    if labelled["segment"].nunique() < 2:
        raise SeglakeError(f"assign: run '{run_id}' has fewer than two segments: nothing to tell apart")
    raw, spec, train, holdout = fit_assigner(labelled, catalogue, genres, demographics, settings)
    classes = spec["classes"]
    held = sorted(int(u) for u in holdout["user_id"])
    # Everyone is scored with the model as saved (the same bytes and spec) on the features above.
    scored = score_features(features, raw, spec).join(segments, "user_id")
    assignments = scored.select(
        F.lit(run_id).alias("run_id"), F.col("user_id").cast("string").alias("entity_id"), "segment",
        "assigned_segment", "probability", F.col("user_id").isin(held).alias("holdout"))

    folder = f"{tables.models(run_id)}/assigner"
    write_manifest(spark, folder, {"classes": classes, "train_users": len(train), "seed": settings.seed},
                   files={MODEL: raw, SPEC: json.dumps(spec).encode()}, manifest=MANIFEST)
    write_run(assignments, tables.gold("assignments"), run_id)
    # Measured on the written table: the holdout, ~30% of users.
    result = (read_delta(spark, tables.gold("assignments"), "assign")
              .where((F.col("run_id") == run_id) & F.col("holdout"))
              .select("segment", "assigned_segment").toPandas())
    scores = holdout_scores(result, int(train["segment"].mode().iloc[0]))
    accuracy, majority_rate, macro_f1 = scores["accuracy"], scores["majority_rate"], scores["macro_f1"]
    metrics = (run_id, len(classes), len(labelled), len(train), len(result), len(spec["feature_names"]),
               accuracy, majority_rate, macro_f1, settings.trees, settings.max_depth,
               time.monotonic() - started)
    write_run(spark.createDataFrame([metrics], METRICS), tables.gold("assigner_metrics"), run_id)
    message = (f"holdout accuracy {accuracy:.3f} on {len(result)} users (always the largest segment: "
               f"{majority_rate:.3f}; macro F1 {macro_f1:.3f}); {len(classes)} segments, "
               f"{len(spec['feature_names']):,} features, model in {folder}")
    details = dict(zip([c.split()[0] for c in METRICS.split(", ")], metrics))
    return StageResult("assign", len(labelled), len(result), time.monotonic() - started, details, message)
