import numpy as np
import pytest
from delta.tables import DeltaTable
from pyspark.ml import PipelineModel
from pyspark.ml.clustering import KMeansModel
from pyspark.ml.functions import vector_to_array
from sklearn.metrics import adjusted_rand_score

from conftest import write_config
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.segmentation.prepare import vectors
from seglake.segmentation.segment import segment
from seglake.segmentation.sweep import sweep
from seglake.core.tables import Tables
from test_sweep import FEATURES, blob_entities, write_entities

SWEEP = "sweep: {k_min: 2, k_max: 6, silhouette_sample: 400}\n"


def _config(folder, lakehouse, extra: str = SWEEP, name: str = "case.yaml"):
    text = f"name: t\nlakehouse: {lakehouse}\nentities: {{path: x, id: id}}\nfilter: {{min: {{views: 1}}}}\n"
    return load_config(write_config(folder, text + extra, name))


@pytest.fixture(scope="module")
def segmented(spark, tmp_path_factory):
    """4 planted blobs (10% inactive, filtered out), swept and segmented as run r1."""
    folder = tmp_path_factory.mktemp("segment")
    (folder / "lakehouse").mkdir()
    config = _config(folder, folder / "lakehouse")
    frame = blob_entities(4, 2000, seed=3)
    frame.loc[frame.index[::10], "views"] = 0.5
    write_entities(spark, config, frame)
    swept = sweep(spark, config, "r1")
    result = segment(spark, config, "r1")
    kept = frame[frame["views"] >= 1].set_index("entity_id")
    return folder, config, kept, swept, result


def _segments(spark, config, run_id="r1"):
    table = spark.read.format("delta").load(Tables.of(config).gold("segments"))
    return table.where(f"run_id = '{run_id}'").toPandas().set_index("entity_id")  # test data: small


def test_segments_recover_planted_blobs_with_distances(spark, segmented):
    _, config, kept, swept, result = segmented
    assert swept.details["chosen_k"] == 4 and result.details["k"] == 4
    labels = _segments(spark, config)
    assert len(labels) == len(kept) == result.rows_out and labels.index.is_unique
    assert adjusted_rand_score(kept["truth"], labels.loc[kept.index, "segment"]) >= 0.95

    folder = Tables.of(config).models("r1")
    model = KMeansModel.load(f"{folder}/kmeans")
    transform = PipelineModel.load(f"{folder}/transform")
    entities = spark.read.format("delta").load(Tables.of(config).entities).where("views >= 1")
    points = vectors(transform, entities).select("entity_id", vector_to_array("features").alias("x"))
    points = points.toPandas()  # a test table of 1,800 rows
    x = np.stack(points["x"].to_numpy())
    centers = np.array(model.clusterCenters())
    segment_of = labels.loc[points["entity_id"], "segment"].to_numpy()
    expected = np.linalg.norm(x - centers[segment_of], axis=1)
    np.testing.assert_allclose(labels.loc[points["entity_id"], "distance"].to_numpy(), expected, rtol=1e-9)

    # the refit is the sweep's model: same cost at the chosen k
    chosen = [m for m in swept.details["metrics"] if m.k == 4][0]
    assert result.details["wssse"] == pytest.approx(chosen.wssse, rel=1e-9)
    assert "segment 0:" in result.message and "mean views" in result.message


def test_each_planted_segment_is_stable_over_kmeans_refits(spark, segmented):
    _, config, kept, _, result = segmented
    stability = spark.read.format("delta").load(Tables.of(config).gold("segment_stability")).toPandas()
    assert sorted(stability["segment"]) == [0, 1, 2, 3]
    assert stability["sample_rows"].sum() == len(kept)  # 1,747 kept: all under sweep.stability_sample
    assert (stability["refits"] == config.sweep.stability_resamples).all()
    assert (stability["jaccard"] >= 0.95).all() and stability["stable"].all()
    assert f"segment stability (mean Jaccard over 20 KMeans refits of {len(kept):,} entities)" in result.message


def test_profiles_are_in_original_units(spark, segmented):
    _, config, kept, _, _ = segmented
    labels = _segments(spark, config)
    joined = kept.join(labels["segment"])
    profiles = spark.read.format("delta").load(Tables.of(config).gold("profiles")).toPandas()
    assert set(profiles.columns) == {"run_id", "segment", "size", "share", "feature", "mean", "median",
                                     "p10", "p90"}
    assert len(profiles) == 4 * len(FEATURES) and set(profiles["feature"]) == set(FEATURES)
    for row in profiles.itertuples():
        rows = joined[joined["segment"] == row.segment][row.feature]
        assert row.size == len(rows) and row.share == pytest.approx(len(rows) / len(kept))
        assert row.mean == pytest.approx(rows.mean(), rel=1e-9)
        assert row.median == pytest.approx(rows.median(), rel=0.01)
        assert row.p10 <= row.median <= row.p90
        assert row.p10 == pytest.approx(rows.quantile(0.1), rel=0.02)


def test_rerun_replaces_rows_and_another_run_adds_a_partition(spark, segmented):
    folder, config, kept, _, _ = segmented
    tables = Tables.of(config)
    segment(spark, config, "r1")
    assert len(_segments(spark, config)) == len(kept)  # replaced, not duplicated
    other = _config(folder, folder / "lakehouse", "sweep: {k_min: 3, k_max: 5, silhouette_sample: 400}\n",
                    "other.yaml")
    sweep(spark, other, "r2")
    segment(spark, other, "r2")
    table = spark.read.format("delta").load(tables.gold("segments"))
    counts = {r.run_id: r["count"] for r in table.groupBy("run_id").count().collect()}
    assert counts == {"r1": len(kept), "r2": len(kept)}
    detail = DeltaTable.forPath(spark, tables.gold("segments")).detail().first()
    assert detail.partitionColumns == ["run_id", "segment"]
    assert (folder / "lakehouse" / "t" / "gold" / "segments" / "run_id=r2" / "segment=0").is_dir()
    runs = spark.read.format("delta").load(tables.gold("runs"))
    assert sorted((r.run_id, r.stage) for r in runs.collect()) == [
        ("r1", "segment"), ("r1", "sweep"), ("r2", "segment"), ("r2", "sweep")]
    profiles = spark.read.format("delta").load(tables.gold("profiles"))
    assert profiles.where("run_id = 'r1'").count() == 4 * len(FEATURES)


def test_segment_before_sweep_says_which_stage_to_run(spark, segmented):
    _, config, _, _, _ = segmented
    with pytest.raises(SeglakeError, match="run the sweep stage first for run never-swept"):
        segment(spark, config, "never-swept")
