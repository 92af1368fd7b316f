import json
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score

from conftest import write_config
from seglake.core.config import FilterConfig, TransformConfig, load_config
from seglake.core.errors import SeglakeError
from seglake.segmentation.prepare import apply_filter, feature_columns, fit_transform_pipeline, vectors
from seglake.segmentation.sweep import center_metrics, choose_k, cluster_centers, fit_clustering, silhouette_sample, sweep
from seglake.core.tables import Tables

FEATURES = ["views", "likes", "minutes", "cities"]


def blob_entities(truth: int, rows: int, seed: int = 0) -> pd.DataFrame:
    """Well-separated blobs in log space, returned as heavy-tailed counts (what log1p undoes)."""
    rng = np.random.default_rng(seed)
    while True:  # centres at least 2.5 log-units apart, so the planted k is unambiguous
        centres = rng.uniform(0.5, 7.0, size=(truth, len(FEATURES)))
        if cdist(centres, centres)[np.triu_indices(truth, 1)].min() > 2.5:
            break
    logged, labels = make_blobs(n_samples=rows, centers=centres, cluster_std=0.25, random_state=seed)
    frame = pd.DataFrame(np.expm1(np.clip(logged, 0.0, None)), columns=FEATURES)
    frame.insert(0, "entity_id", [f"e{i:05d}" for i in range(rows)])
    frame["truth"] = labels  # stays in pandas only: never written to silver
    return frame


def case_config(folder, lakehouse, extra: str = ""):
    text = f"name: t\nlakehouse: {lakehouse}\nentities: {{path: x, id: id}}\n{extra}"
    return load_config(write_config(folder, text))


def write_entities(spark, config, frame: pd.DataFrame) -> None:
    spark.createDataFrame(frame.drop(columns=["truth"], errors="ignore")).write.format("delta").save(
        Tables.of(config).entities
    )


def as_matrix(frame) -> np.ndarray:
    rows = frame.select("entity_id", vector_to_array("features").alias("x")).orderBy("entity_id").collect()
    return np.array([r.x for r in rows])


def sklearn_curves(points: np.ndarray, ks: list[int]):
    sse, silhouette, shares = [], [], []
    for k in ks:
        model = KMeans(n_clusters=k, n_init=4, random_state=0).fit(points)
        sse.append(np.min(cdist(points, model.cluster_centers_), axis=1).mean())
        silhouette.append(silhouette_score(points, model.labels_))
        shares.append(np.bincount(model.labels_).min() / len(points))
    return sse, silhouette, shares


# --- prepare ---------------------------------------------------------------------------------------

def test_filter_keeps_inclusive_bounds_and_reports_exact_fraction(spark):
    entities = spark.createDataFrame(
        [("a", 0.0, 9.0), ("b", 1.0, 5.0), ("c", 3.0, 5.5), ("d", 5.0, 1.0), ("e", None, 2.0),
         ("f", 2.0, 2.0), ("g", 1.0, 6.0), ("h", 7.0, 0.0)],
        "entity_id string, complete_views double, page_view double",
    )
    bounds = FilterConfig(min={"complete_views": 1}, max={"page_view": 5.5})
    kept, kept_fraction = apply_filter(entities, bounds)
    assert sorted(r.entity_id for r in kept.collect()) == ["b", "c", "d", "f", "h"]  # null "e" is out
    assert kept_fraction == 5 / 8


def test_unknown_filter_feature_is_one_error_naming_key_and_column(spark):
    entities = spark.createDataFrame([("a", 1.0)], "entity_id string, page_view double")
    with pytest.raises(SeglakeError) as caught:
        apply_filter(entities, FilterConfig(min={"Page_views": 5}))
    message = str(caught.value)
    assert message.startswith("filter.min:") and "'Page_views'" in message and "page_view" in message


def test_feature_columns_split_numeric_and_categorical(spark):
    entities = spark.createDataFrame(
        [("a", 1, 2.0, "x", True, "stamp")],
        "entity_id string, views long, minutes double, city string, verified boolean, _built string",
    )
    assert feature_columns(entities) == (["views", "minutes"], ["city", "verified"])


def test_log1p_and_standard_scaling_match_numpy(spark):
    frame = blob_entities(3, 300)
    entities = spark.createDataFrame(frame.drop(columns=["truth"]))
    model = fit_transform_pipeline(entities, FEATURES, [], TransformConfig())
    got = as_matrix(vectors(model, entities))
    logged = np.log1p(frame.sort_values("entity_id")[FEATURES].to_numpy())
    expected = (logged - logged.mean(axis=0)) / logged.std(axis=0, ddof=1)  # Spark: sample std
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_listed_log1p_minmax_and_median_imputation(spark):
    entities = spark.createDataFrame(
        [("a", 0.0, 1.0), ("b", 3.0, None), ("c", 9.0, 3.0), ("d", None, 10.0)],
        "entity_id string, views double, minutes double",
    )
    model = fit_transform_pipeline(entities, ["views", "minutes"], [],
                                   TransformConfig(log1p=["views"], scaling="minmax"))
    got = as_matrix(vectors(model, entities))
    views = np.log1p([0.0, 3.0, 9.0, 3.0])  # d's null -> median of log1p(views) = log1p(3)
    minutes = np.array([1.0, 3.0, 3.0, 10.0])  # b's null -> median 3 (minutes is not logged)
    expected = np.column_stack([(v - v.min()) / (v.max() - v.min()) for v in (views, minutes)])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_saved_transform_reloads_and_gives_identical_vectors(spark, tmp_path, lakehouse):
    config = case_config(tmp_path, lakehouse)
    entities = spark.createDataFrame(
        [("a", 1.0, "paris", True), ("b", 40.0, "lyon", False), ("c", 7.0, "paris", None),
         ("d", None, None, True)],
        "entity_id string, views double, city string, verified boolean",
    )
    model = fit_transform_pipeline(entities, ["views"], ["city", "verified"], TransformConfig())
    path = f"{Tables.of(config).models('r1')}/transform"
    model.write().overwrite().save(path)
    reloaded = PipelineModel.load(path)
    np.testing.assert_array_equal(as_matrix(vectors(model, entities)), as_matrix(vectors(reloaded, entities)))
    unseen = spark.createDataFrame([("z", 2.0, "nice", False)], "entity_id string, views double, "
                                   "city string, verified boolean")
    # one-hot drops the last slot (unseen or null): views + 2 cities + 2 booleans
    assert as_matrix(vectors(reloaded, unseen)).shape == (1, 1 + 2 + 2)


# --- choice of k -------------------------------------------------------------------------------------

@pytest.mark.parametrize("truth", [4, 6])
def test_choose_k_finds_planted_blobs(truth):
    points = np.log1p(blob_entities(truth, 900, seed=truth)[FEATURES].to_numpy())
    ks = list(range(2, 10))
    sse, silhouette, shares = sklearn_curves(points, ks)
    k, reason = choose_k(ks, sse, silhouette, shares=shares, min_share=0.005)
    assert k == truth, reason
    assert reason.startswith(f"k={truth}: SSE knee at") and "(kneed)" in reason and "\n" not in reason


def test_choose_k_without_knee_takes_best_silhouette_of_all():
    ks = list(range(2, 10))
    silhouette = [0.30, 0.35, 0.31, 0.52, 0.40, 0.33, 0.31, 0.30]
    flat_noise = [10.0, 10.5, 9.8, 10.2, 9.9, 10.1, 9.7, 10.0]  # kneed alone reports a knee at 2 here
    k, reason = choose_k(ks, flat_noise, silhouette)
    assert (k, reason.split(",")[0]) == (5, "k=5: no SSE knee (SSE falls only 0% from k=2 to k=9)")
    straight = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]
    k, reason = choose_k(ks, straight, silhouette)
    assert k == 5 and "no SSE knee (kneed found none)" in reason and "best of k=2..9" in reason


def test_choose_k_pinned_and_small_segments():
    ks = [2, 3, 4, 5, 6]
    sse = [5.0, 3.0, 1.2, 1.1, 1.0]
    silhouette = [0.5, 0.6, 0.7, 0.8, 0.4]
    k, reason = choose_k(ks, sse, silhouette, pinned=3)
    assert k == 3 and reason.startswith("k=3: pinned by sweep.k (silhouette 0.60); the rule would pick k=5")
    k, reason = choose_k(ks, sse, silhouette, shares=[0.4, 0.2, 0.1, 0.001, 0.05], min_share=0.005)
    assert k == 4 and "skipped k=5 (smallest segment 0.1%)" in reason


# --- the stage ---------------------------------------------------------------------------------------

def test_sweep_on_planted_blobs_chooses_k_and_writes_gold(spark, tmp_path, lakehouse):
    frame = blob_entities(4, 2400, seed=1)
    frame.loc[frame.index[:240], "views"] = 0.0  # 10% inactive: filtered out
    config = case_config(tmp_path, lakehouse, "filter: {min: {views: 1}}\n"
                         "sweep: {k_min: 2, k_max: 6, silhouette_sample: 500}\n")
    write_entities(spark, config, frame)
    result = sweep(spark, config, "r1")

    kept_rows = int((frame["views"] >= 1).sum())
    assert result.details["kept_fraction"] == kept_rows / len(frame)
    assert result.details["chosen_k"] == 4, result.message
    tables = Tables.of(config)
    gold = spark.read.format("delta").load(tables.gold("sweep")).orderBy("k").toPandas()
    assert gold["k"].tolist() == list(range(2, 7)) and set(gold["run_id"]) == {"r1"}
    # Both costs fall steeply to the planted k, then flatten; past it the mean distance may even
    # tick up (KMeans minimises squared distances, and k-means|| lands in local optima).
    up_to_truth, beyond = gold[gold["k"] <= 4], gold[gold["k"] >= 4]
    assert up_to_truth["sse"].is_monotonic_decreasing and up_to_truth["wssse"].is_monotonic_decreasing
    assert (beyond["sse"] <= 1.1 * beyond["sse"].iloc[0]).all(), gold[["k", "sse", "wssse"]]
    assert gold["sse"].iloc[0] > 3 * gold["sse"].iloc[2]
    assert gold["chosen"].tolist() == [k == 4 for k in range(2, 7)]
    chosen = gold[gold["chosen"]].iloc[0]
    assert chosen["reason"] == result.details["reason"] and chosen["reason"].startswith("k=4:")
    assert sum(chosen["cluster_sizes"]) == kept_rows and chosen["min_cluster_share"] > 0.2

    # silhouette_exact: sklearn on the same seeded sample agrees
    model = PipelineModel.load(f"{tables.models('r1')}/transform")
    entities = spark.read.format("delta").load(tables.entities).where("views >= 1")
    sample = silhouette_sample(vectors(model, entities), 500, kept_rows, 0)
    points = as_matrix(sample)
    assert 400 <= len(points) <= 500
    labels = KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(points)
    assert math.isclose(chosen["silhouette_exact"], silhouette_score(points, labels), abs_tol=0.01)
    assert chosen["silhouette"] > chosen["silhouette_exact"]  # squared distances separate more

    runs = spark.read.format("delta").load(tables.gold("runs")).collect()
    assert [(r.run_id, r.stage, r.rows_in, r.rows_out, r.chosen_k) for r in runs] == [
        ("r1", "sweep", 2400, 5, 4)]
    assert runs[0].kept_fraction == kept_rows / 2400 and runs[0].reason == chosen["reason"]
    written = json.loads((lakehouse / "t" / "models" / "r1" / "manifest.json").read_text())
    assert sorted(written["files"]) == ["kmeans", "transform"]  # one sha256 per saved model folder
    assert all(len(digest) == 64 for digest in written["files"].values())
    manifest = written["details"]
    assert manifest["features"] == FEATURES and manifest["chosen_k"] == 4


def test_sweep_past_fit_sample_fits_a_seeded_sample_and_still_finds_k(spark, tmp_path, lakehouse):
    frame = blob_entities(4, 3000, seed=2)
    config = case_config(tmp_path, lakehouse, "sweep: {k_min: 2, k_max: 6, silhouette_sample: 400, "
                         "fit_sample: 1000}\n")
    write_entities(spark, config, frame)
    result = sweep(spark, config, "r1")
    fit_rows = result.details["fit_rows"]
    assert 850 <= fit_rows <= 1150, fit_rows  # a hash share, not an exact count
    assert result.details["chosen_k"] == 4, result.message
    assert f"each k fitted on a seeded sample of {fit_rows:,}" in result.message
    gold = spark.read.format("delta").load(Tables.of(config).gold("sweep")).toPandas()
    assert (gold["cluster_sizes"].map(sum) == fit_rows).all()
    manifest = json.loads((lakehouse / "t" / "models" / "r1" / "manifest.json").read_text())["details"]
    assert manifest["kept"] == 3000 and manifest["fit_rows"] == fit_rows
    assert manifest["clustering"] == {"algorithm": "kmeans", "k": 4, "seed": manifest["sweep"]["seed"],
                                      "max_iter": manifest["sweep"]["max_iter"], "fit_rows": 3000}
    # The same seed picks the same entities: a re-run measures the very same curves.
    again = sweep(spark, config, "r2")
    assert again.details["fit_rows"] == fit_rows
    assert [m.sse for m in again.details["metrics"]] == [m.sse for m in result.details["metrics"]]


def test_sweep_needs_entities_and_enough_rows(spark, tmp_path, lakehouse):
    config = case_config(tmp_path, lakehouse, "sweep: {k_max: 9}\n")
    with pytest.raises(SeglakeError, match="run the 'features' stage first"):
        sweep(spark, config, "r1")
    write_entities(spark, config, blob_entities(2, 8))
    with pytest.raises(SeglakeError, match="only 8 entities pass the filter"):
        sweep(spark, config, "r1")


@pytest.mark.parametrize("algorithm", ["kmeans", "bisecting_kmeans", "gaussian_mixture"])
def test_costs_computed_from_centers_match_numpy(spark, algorithm):
    frame = blob_entities(3, 400, seed=2)
    entities = spark.createDataFrame(frame.drop(columns=["truth"]))
    assembler = VectorAssembler(inputCols=FEATURES, outputCol="features")
    data = assembler.transform(entities.select("entity_id", *[F.log1p(f).alias(f) for f in FEATURES]))
    data = data.select("entity_id", "features").cache()
    model = fit_clustering(data, algorithm, 3, seed=0, max_iter=20)
    sizes, wssse, sse = center_metrics(model.transform(data), cluster_centers(model))
    points = as_matrix(data)
    nearest = np.min(cdist(points, np.array(cluster_centers(model))), axis=1)
    assert math.isclose(wssse, float((nearest ** 2).sum()), rel_tol=1e-9)
    assert math.isclose(sse, float(nearest.mean()), rel_tol=1e-9)
    assert sum(sizes) == 400 and min(sizes) > 100
    if algorithm == "kmeans":  # MLlib's own cost, where the model has one, agrees
        assert math.isclose(wssse, model.summary.trainingCost, rel_tol=1e-6)
    data.unpersist()
