"""A run reads its entity table once and hands the sweep's models to the segment stage in memory:
the same results as stages run one `seglake run` at a time, fewer Spark jobs, and a tampered model
file is still refused."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.linalg import Vectors

from conftest import write_config
from seglake.core.artifacts import CLUSTERING, load_model, put_bytes, save_model, write_manifest
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import run_stages
from seglake.core.run_cache import run_cache
from seglake.core.tables import Tables
from test_sweep import blob_entities, write_entities

CONFIG = ("name: t\nlakehouse: {lakehouse}\nentities: {{path: x, id: id}}\nfilter: {{min: {{views: 1}}}}\n"
          "sweep: {{k_min: 2, k_max: 5, silhouette_sample: 400, stability_resamples: 2}}\n")


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    """Run "apart": sweep, then segment in another call (nothing kept between them); run "one":
    both stages in one call."""
    folder = tmp_path_factory.mktemp("run-cache")
    config = load_config(write_config(folder, CONFIG.format(lakehouse=folder / "lakehouse")))
    write_entities(spark, config, blob_entities(3, 1200, seed=11))
    quiet = lambda line: None  # noqa: E731
    apart = {r.stage: r for stage in ("sweep", "segment")
             for r in run_stages(spark, config, [stage], "apart", quiet)}
    together = {r.stage: r for r in run_stages(spark, config, ["sweep", "segment"], "one", quiet)}
    return config, apart, together


def _rows(spark, config, table: str, run_id: str, columns: list[str]) -> pd.DataFrame:
    frame = spark.read.format("delta").load(Tables.of(config).gold(table)).where(f"run_id = '{run_id}'")
    return frame.select(*columns).toPandas().sort_values(columns).reset_index(drop=True)


def test_one_run_gives_the_results_of_stages_run_apart(spark, runs):
    config, apart, together = runs
    assert together["sweep"].details["chosen_k"] == apart["sweep"].details["chosen_k"] == 3
    for table, columns in (("sweep", ["k", "wssse", "sse", "silhouette", "min_cluster_share"]),
                           ("segments", ["entity_id", "segment", "distance"]),
                           ("profiles", ["segment", "feature", "size", "mean", "median"])):
        pd.testing.assert_frame_equal(_rows(spark, config, table, "one", columns),
                                      _rows(spark, config, table, "apart", columns), obj=table)


def test_segment_in_the_sweeps_run_costs_fewer_spark_jobs(runs):
    _, apart, together = runs
    # Apart, segment loads the transform and the k-means model back (MLlib reads their metadata
    # and data with Spark jobs) and scans silver/entities again.
    assert together["segment"].cost.jobs < apart["segment"].cost.jobs
    assert together["segment"].cost.stages < apart["segment"].cost.stages


def test_a_model_saved_in_the_run_is_handed_on_but_a_changed_file_is_refused(spark, tmp_path):
    points = spark.createDataFrame([(Vectors.dense([float(i % 3), 0.0]),) for i in range(30)], ["features"])
    folder = str(tmp_path / "models" / "r1")
    with run_cache():
        model = KMeans(k=3, seed=0).fit(points)
        save_model(model, f"{folder}/{CLUSTERING}")
        write_manifest(spark, folder, {}, saved=(CLUSTERING,))
        assert load_model(spark, folder, CLUSTERING, KMeansModel) is model  # not read back
        put_bytes(spark, f"{folder}/{CLUSTERING}/metadata/part-00000", b'{"tampered": true}')
        with pytest.raises(SeglakeError, match="does not match its sha256"):
            load_model(spark, folder, CLUSTERING, KMeansModel)
    save_model(model, f"{folder}/{CLUSTERING}")  # outside a run nothing is kept: loaded from storage
    write_manifest(spark, folder, {}, saved=(CLUSTERING,))
    loaded = load_model(spark, folder, CLUSTERING, KMeansModel)
    assert loaded is not model
    assert sorted(map(list, loaded.clusterCenters())) == sorted(map(list, model.clusterCenters()))
