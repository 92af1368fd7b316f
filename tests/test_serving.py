"""The Spark-free segmenter: the same labels as ``seglake score`` without Spark, per row, from a
fresh process, through MLflow and over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F
from seglake.cli import main
from seglake.core.config import TransformConfig, load_config
from seglake.core.tables import Tables
from seglake.core.tracking import TAG_RUN_ID, run_tracked, tracking_target
from seglake.segmentation.prepare import fit_transform_pipeline
from seglake.segmentation.score import score
from seglake.serving.export import transform_details
from seglake.serving.segmenter import Segmenter, SegmenterError

from conftest import write_config

ROWS = 12_000
PLANS = ["free", "pro", "team"]
COLUMNS = ["segment", "distance", "cluster", "cluster_probability", "in_training_filter"]
# A fresh interpreter in which pyspark cannot be imported: MLflow imports it whenever it is
# installed (mlflow.types.schema), so blocking it is what proves serving never needs it.
NO_SPARK = """
import sys
class _NoSpark:
    def find_spec(self, name, path=None, target=None):
        if name == "pyspark" or name.startswith(("pyspark.", "py4j")):
            raise ImportError(f"{name} is blocked: serving must not need Spark")
sys.meta_path.insert(0, _NoSpark())
"""


def accounts_frame(rows: int, seed: int) -> pd.DataFrame:
    """Accounts in four overlapping groups (many rows near a segment boundary), two categoricals."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, rows)
    centers = np.array([[1.0, 4.0, 2.0], [3.0, 1.5, 3.5], [2.0, 2.5, 5.0], [4.0, 4.0, 1.0]])
    logged = centers[group] + rng.normal(0, 0.7, size=(rows, 3))
    frame = pd.DataFrame(np.expm1(np.clip(logged, 0, None)).round(3), columns=["followers", "likes", "videos"])
    frame.insert(0, "account", [f"a{i:06d}" for i in range(rows)])
    frame["plan"] = np.array(PLANS)[np.minimum(group, 2)]
    frame["verified"] = np.where(rng.random(rows) < 0.3, "TRUE", "false")
    return frame


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """12,000 accounts through features .. explain (density per segment), tracked as run 'train';
    the runner exports the segmenter, tracking logs and registers it."""
    folder = tmp_path_factory.mktemp("serving")
    accounts_frame(ROWS, seed=1).to_csv(folder / "accounts.csv", index=False)
    text = textwrap.dedent(f"""\
        name: acc
        lakehouse: {folder / 'lake'}
        entities: {{path: {folder / 'accounts.csv'}, id: account, categorical: [plan, verified]}}
        filter: {{min: {{videos: 1}}}}
        sweep: {{k_min: 3, k_max: 5, silhouette_sample: 500, max_iter: 20}}
        density: {{group_by: segment, sample_size: 1500, stability_fraction: 0, surrogate_trees: 20,
                   umap: {{n_neighbors: 15, n_components: 2, n_epochs: 100}}, hdbscan: {{min_cluster_size: 30}}}}
        explain: {{sample_size: 1000, trees: 20, min_cluster_size: 20, noun: accounts}}
        """)
    config_file = write_config(folder, text)
    config = load_config(config_file)
    lines: list[str] = []
    run_tracked(spark, config, ["features", "sweep", "density", "segment", "explain"], "train",
                echo=lines.append)
    return folder, config_file, config, lines


@pytest.fixture(scope="module")
def batch(spark, trained):
    """12,000 other accounts with unseen plans, null features and plans, scored by Spark as 's1'."""
    folder, _, config, _ = trained
    frame = accounts_frame(ROWS, seed=2)
    frame["account"] = "b" + frame["account"].str[1:]
    frame.loc[frame.index[:150], "plan"] = "enterprise"      # never seen in training
    frame.loc[frame.index[150:300], "likes"] = None          # imputed with the training median
    frame.loc[frame.index[300:400], "plan"] = None           # null category: the "keep" bucket
    frame["followers"] = frame["followers"].astype(object)
    frame.loc[frame.index[400:450], "followers"] = "n/a"     # unparseable: null, then imputed
    frame.to_csv(folder / "batch.csv", index=False)
    score(spark, config, "train", str(folder / "batch.csv"), "s1")
    scored = (spark.read.format("delta").load(Tables.of(config).gold("segments"))
              .where(F.col("run_id") == "s1").toPandas().set_index("entity_id"))
    rows = pd.read_csv(folder / "batch.csv").rename(columns={"account": "entity_id"})
    return rows, scored


def model_folder(config) -> Path:
    return Path(Tables.of(config).models("train")) / "segmenter"


# ---------------------------------------------------------------- the transform itself


@pytest.mark.parametrize("scaling", ["standard", "minmax", "none"])
def test_transform_equals_the_spark_pipeline_with_unseen_and_null_values(spark, scaling):
    kept = spark.createDataFrame(
        [(1.0, 5.0, -2.0, "fr"), (3.0, 5.0, 4.0, "de"), (None, 5.0, 0.5, "fr"), (40.0, 5.0, float("nan"), None)],
        "plays double, constant double, balance double, country string")
    model = fit_transform_pipeline(kept, ["plays", "constant", "balance"], ["country"],
                                   TransformConfig(log1p=["plays", "balance"], scaling=scaling))
    rows = pd.DataFrame({"plays": [2.0, None, 7.0, 1.0], "constant": [5.0, 9.0, None, 5.0],
                         "balance": [-30.0, 1.0, None, 2.0], "country": ["de", "jp", None, "fr"]})
    expected = np.array([r.features.toArray() for r in model.transform(spark.createDataFrame(
        rows.astype(object).where(rows.notna(), None),
        "plays double, constant double, balance double, country string")).select("features").collect()])
    details, scale = transform_details(model, ["plays", "constant", "balance"], ["country"], "t")
    details.update({"run_id": "t", "features": ["plays", "constant", "balance"], "categorical": ["country"],
                    "filter": {}, "density": None, "names": {}})
    segmenter = Segmenter(details, np.zeros((1, expected.shape[1])), scale)
    assert details["categories"]["country"]["drop_last"] and details["logged"] == ["plays", "balance"]
    got = segmenter.transform(*segmenter.typed(rows))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    if scaling == "none":  # unseen 'jp' and null: the all-zero one-hot vector (before any scaling)
        assert got[:, 3:].tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]


# ---------------------------------------------------------------- export and agreement with Spark


def test_the_run_saves_logs_and_registers_its_segmenter(trained):
    _, _, config, lines = trained
    folder = model_folder(config)
    assert (folder / "MLmodel").is_file() and (folder / "segmenter.py").is_file()
    assert (folder.parent / "manifest-segmenter.json").is_file()
    assert any(line.startswith("[segmenter] run train") for line in lines)
    assert "pyspark" not in (folder / "requirements.txt").read_text()
    target = tracking_target(config)
    client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    run = client.search_runs([experiment.experiment_id], f"tags.`{TAG_RUN_ID}` = 'train'")[0]
    version = client.get_model_version("seglake-acc", "1")
    assert version.run_id == run.info.run_id
    logged = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert [(m.name, m.source_run_id) for m in logged] == [("segmenter", run.info.run_id)]
    assert any("registered as seglake-acc version 1" in line for line in lines)
    details = Segmenter.load(folder / "artifacts" / "segmenter").details
    assert details["density"]["group_by"] == "segment" and details["names"]["segment"]
    assert details["manifest"]["run_id"] == "train"


def test_segmenter_agrees_with_seglake_score_on_every_entity_row(trained, batch):
    import mlflow.pyfunc

    _, _, config, _ = trained
    rows, scored = batch
    assert len(rows) >= 10_000 and len(scored) == len(rows)
    model = mlflow.pyfunc.load_model(str(model_folder(config)))
    served = model.predict(rows).set_index("entity_id").loc[scored.index]
    assert (served["segment"].to_numpy() == scored["segment"].to_numpy()).mean() >= 0.999
    assert (served["cluster"].to_numpy() == scored["cluster"].to_numpy()).mean() >= 0.999
    same = (served["segment"] == scored["segment"]).to_numpy()
    np.testing.assert_allclose(served["distance"][same], scored["distance"][same], rtol=1e-9)
    np.testing.assert_allclose(served["cluster_probability"][same], scored["cluster_probability"][same],
                               rtol=1e-6)
    assert (served["in_training_filter"] == scored["in_training_filter"]).all()
    # the rows with an unseen or null plan, a null or unparseable feature, label like Spark's too
    odd = rows["entity_id"].head(450)
    assert (served.loc[odd, "segment"] == scored.loc[odd, "segment"]).mean() >= 0.99
    assert served["segment"].nunique() == scored["segment"].nunique() >= 3
    names = Segmenter.load(model_folder(config) / "artifacts" / "segmenter").details["names"]["segment"]
    assert set(served["segment_name"]) == {names.get(str(s), str(s)) for s in served["segment"]}


def test_a_row_gets_the_same_answer_alone_and_in_any_batch(trained, batch):
    _, _, config, _ = trained
    rows, _ = batch
    segmenter = Segmenter.load(model_folder(config) / "artifacts" / "segmenter")
    sample = rows.sample(300, random_state=0)
    together = segmenter.predict(sample).set_index("entity_id")
    alone = pd.concat([segmenter.predict(sample.iloc[[i]]) for i in range(len(sample))]).set_index("entity_id")
    shuffled = segmenter.predict(pd.concat([sample.iloc[::-1], rows.head(1000)])).set_index("entity_id")
    for other in (alone, shuffled.loc[~shuffled.index.duplicated()].loc[together.index]):
        pd.testing.assert_frame_equal(together[COLUMNS], other.loc[together.index, COLUMNS])


def test_unseen_category_and_null_feature_score_like_spark(trained, batch):
    _, _, config, _ = trained
    rows, scored = batch
    segmenter = Segmenter.load(model_folder(config) / "artifacts" / "segmenter")
    unseen = rows.head(150)  # plan 'enterprise'
    assert (segmenter.predict(unseen)["segment"].to_numpy() == scored.loc[unseen["entity_id"], "segment"]).all()
    # null, NaN and unparseable features are the same row: each imputed with the training median
    one = rows.iloc[[160]]
    variants = [one.assign(likes=v) for v in (None, np.nan, "n/a", "")]
    labelled = pd.concat([segmenter.predict(v) for v in variants])
    assert labelled["segment"].nunique() == 1 and labelled["distance"].nunique() == 1
    assert labelled["segment"].iloc[0] == scored.loc[one["entity_id"].iloc[0], "segment"]
    with pytest.raises(SegmenterError, match=r"no column\(s\) 'likes': model run train needs"):
        segmenter.predict(rows.drop(columns="likes").head(2))


# ---------------------------------------------------------------- without Spark, over HTTP


def test_a_fresh_process_loads_and_predicts_without_spark(trained, batch, tmp_path):
    _, _, config, _ = trained
    rows, _ = batch
    sample = rows.head(500)
    sample.to_csv(tmp_path / "rows.csv", index=False)
    code = NO_SPARK + textwrap.dedent(f"""
        import json, mlflow.pyfunc, pandas as pd
        rows = pd.read_csv({str(tmp_path / 'rows.csv')!r})
        by_folder = mlflow.pyfunc.load_model({str(model_folder(config))!r}).predict(rows)
        registered = mlflow.pyfunc.load_model("models:/seglake-acc/1").predict(rows)
        assert by_folder.equals(registered)
        by_folder.to_json({str(tmp_path / 'out.json')!r}, orient="records", double_precision=15)
        print(json.dumps({{"pyspark": "pyspark" in sys.modules, "py4j": "py4j" in sys.modules,
                           "seglake": sorted(m for m in sys.modules if m.startswith("seglake"))}}))
        """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_target(config).tracking_uri}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"pyspark": False, "py4j": False, "seglake": []}
    fresh = pd.read_json(tmp_path / "out.json", orient="records")
    here = Segmenter.load(model_folder(config) / "artifacts" / "segmenter").predict(sample)
    assert (fresh["segment"].to_numpy() == here["segment"].to_numpy()).all()
    assert (fresh["cluster"].to_numpy() == here["cluster"].to_numpy()).all()
    np.testing.assert_allclose(fresh["distance"], here["distance"], rtol=1e-12)


def test_seglake_serve_answers_one_json_request(trained, batch):
    _, config_file, config, _ = trained
    rows, _ = batch
    records = json.loads(rows.head(3).to_json(orient="records"))
    server = subprocess.Popen([sys.executable, "-m", "seglake.cli", "serve", "--config", str(config_file),
                               "--model-run", "train", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, f"no address in {line!r}"
        request = urllib.request.Request(f"http://127.0.0.1:{found[1]}/invocations",
                                         data=json.dumps({"dataframe_records": records}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode == 0 and "[serve] stopped" in server.stdout.read()
    expected = Segmenter.load(model_folder(config) / "artifacts" / "segmenter").predict(rows.head(3))
    assert [p["entity_id"] for p in answer["predictions"]] == list(rows["entity_id"].head(3))
    assert [p["segment"] for p in answer["predictions"]] == expected["segment"].tolist()
    assert [p["cluster"] for p in answer["predictions"]] == expected["cluster"].tolist()


def test_serve_refuses_a_run_without_a_segmenter(trained, capsys):
    _, config_file, _, _ = trained
    assert main(["serve", "--config", str(config_file), "--model-run", "nope", "--port", "0"]) == 2
    assert re.search(r"model run nope has no segmenter at .*nope/segmenter: run its segment stage",
                     capsys.readouterr().err)
