"""MLflow tracking: a run shows up in the store with its params, metrics and artifacts, read back
through MLflow's own client; re-runs replace it; failures name the tracking URI."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from conftest import write_config
from seglake.cli import main
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.report import report_path
from seglake.core.tables import Tables, delta_exists
from seglake.core.tracking import TAG_RUN_ID, flat_params, open_experiment, run_tracked, tracking_target
from report_html import tables
from seglake.segmentation.names import NOISE_NAME, heading
from seglake.serving.segmenter import Segmenter
from test_sweep import blob_entities

SMALL = """
sweep: {k_min: 2, k_max: 4, silhouette_sample: 400, max_iter: 10}
density: {sample_size: 600, umap: {n_neighbors: 15, n_components: 2, n_epochs: 100},
          hdbscan: {min_cluster_size: 30}, stability_fraction: 0.3, surrogate_trees: 20}
explain: {sample_size: 600, trees: 20, min_cluster_size: 20, noun: accounts}
"""


def accounts_config(folder, lakehouse, extra: str = SMALL, overrides=()):
    """A CSV of 1,500 accounts in three planted groups, as an entities use case named 'accounts'."""
    csv = folder / "accounts.csv"
    if not csv.exists():
        blob_entities(3, 1500, seed=5).drop(columns=["truth"]).rename(
            columns={"entity_id": "account"}).to_csv(csv, index=False)
    text = f"name: accounts\nlakehouse: {lakehouse}\nentities: {{path: {csv}, id: account}}\n{extra}"
    return load_config(write_config(folder, text), list(overrides))


def mlflow_runs(config, run_id: str, view=ViewType.ACTIVE_ONLY):
    target = tracking_target(config)
    client = MlflowClient(tracking_uri=target.tracking_uri)
    experiment = client.get_experiment_by_name(target.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_RUN_ID}` = '{run_id}'",
                              run_view_type=view)
    return client, runs


def gold(spark, config, table: str, run_id: str):
    return (spark.read.format("delta").load(Tables.of(config).gold(table))
            .where(F.col("run_id") == run_id).toPandas())  # small gold tables


@pytest.fixture(scope="module")
def tracked(spark, tmp_path_factory):
    """Every stage of the accounts config, tracked as seglake run r1 into the default store."""
    folder = tmp_path_factory.mktemp("tracking")
    config = accounts_config(folder, folder / "lake")
    lines: list[str] = []
    results = run_tracked(spark, config, None, "r1", echo=lines.append)
    return folder, config, results, lines


@pytest.mark.slow
def test_run_is_in_the_default_store_with_config_params_and_tags(tracked):
    folder, config, results, lines = tracked
    assert (folder / "lake" / "mlflow.db").is_file()  # the default store sits beside the tables
    client, runs = mlflow_runs(config, "r1")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.info.artifact_uri.startswith((folder / "lake" / "mlflow-artifacts").as_uri())
    assert run.data.tags["seglake.use_case"] == "accounts"
    assert run.data.tags["seglake.stages"] == ",".join(r.stage for r in results)
    assert run.data.params == flat_params(config)
    assert run.data.params["sweep.k_max"] == "4" and run.data.params["entities.id"] == "account"
    assert run.data.params["explain.noun"] == "accounts"
    assert any(f"MLflow run {run.info.run_id}" in line for line in lines)


@pytest.mark.slow
def test_metrics_match_the_gold_tables(spark, tracked):
    _, config, results, _ = tracked
    client, (run,) = mlflow_runs(config, "r1")
    sweep = gold(spark, config, "sweep", "r1").set_index("k")
    history = client.get_metric_history(run.info.run_id, "sweep.wssse")
    assert sorted(m.step for m in history) == [2, 3, 4]  # one point per k, the k as the step
    for point in history:
        assert point.value == pytest.approx(sweep.loc[point.step, "wssse"])
    assert run.data.metrics["sweep.chosen_k"] == sweep.index[sweep["chosen"]][0]
    assert run.data.tags["seglake.k_reason"] == sweep.loc[sweep["chosen"], "reason"].iloc[0]

    quality = gold(spark, config, "cluster_quality", "r1").set_index("group")
    assert run.data.metrics["density.fidelity"] == pytest.approx(quality.loc[0, "fidelity"])
    assert 0.0 < run.data.metrics["density.fidelity"] <= 1.0

    explanations = gold(spark, config, "explanations", "r1").drop_duplicates(["kind", "target"])
    clusters = explanations[explanations["kind"] == "cluster"]
    assert len(clusters) >= 2
    for row in clusters.itertuples():
        name = "noise" if row.target == -1 else str(row.target)
        assert run.data.metrics[f"explain.cluster.{name}.f1"] == pytest.approx(row.f1)
    assert run.data.metrics["explain.cluster.macro_f1"] == pytest.approx(clusters["f1"].mean())
    for result in results:
        assert run.data.metrics[f"stage.{result.stage}.seconds"] == pytest.approx(result.seconds)
        assert run.data.metrics[f"stage.{result.stage}.rows_out"] == result.rows_out


@pytest.mark.slow
def test_artifacts_are_the_runs_models_report_and_config(tracked, tmp_path):
    _, config, _, _ = tracked
    client, (run,) = mlflow_runs(config, "r1")
    models = {item.path for item in client.list_artifacts(run.info.run_id, "models")}
    assert {"models/manifest.json", "models/transform", "models/kmeans",
            "models/manifest-density.json", "models/manifest-explain.json"} <= models
    manifest = client.download_artifacts(run.info.run_id, "models/manifest.json", str(tmp_path))
    lake_manifest = f"{Tables.of(config).models('r1')}/manifest.json"
    assert open(manifest, "rb").read() == open(lake_manifest, "rb").read()
    page = client.download_artifacts(run.info.run_id, "report/index.html", str(tmp_path))
    assert open(page, "rb").read() == report_path(config, "r1").read_bytes()
    logged = json.loads(open(client.download_artifacts(run.info.run_id, "config/config.json",
                                                       str(tmp_path))).read())
    assert logged == config.model_dump(mode="json")
    descriptions = json.loads(open(client.download_artifacts(
        run.info.run_id, "tables/descriptions.json", str(tmp_path))).read())
    assert any("accounts" in str(value) for value in descriptions["data"])


@pytest.mark.slow
def test_names_read_back_alike_from_the_table_report_summary_mlflow_and_segmenter(spark, tracked):
    _, config, _, lines = tracked
    descriptions = gold(spark, config, "descriptions", "r1").sort_values(["kind", "target"])
    names = {(r.kind, r.target): r.name for r in descriptions.itertuples()}
    assert {kind for kind, _ in names} == {"cluster", "segment"}
    assert len(set(names.values())) == len(names)  # unique within the run, segments and clusters together
    assert all(1 <= n.count(",") + 1 <= 3 for n in names.values())  # one to three features each
    titles = [heading(kind, target, name) for (kind, target), name in names.items()]

    page = report_path(config, "r1").read_text()
    assert [html.unescape(h) for h in re.findall(r"<h3 class='name'>(.*?)</h3>", page)] == titles
    (segments,) = [t for t in tables(page) if t[0][:2] == ["segment", "name"]]
    assert {(int(row[0]), row[1]) for row in segments[1:]} == {
        (target, name) for (kind, target), name in names.items() if kind == "segment"}

    (summary,) = [line for line in lines if line.startswith("[explain] done")]
    assert all(title in summary for title in titles[:8])
    _, (run,) = mlflow_runs(config, "r1")
    assert {k: v for k, v in run.data.tags.items() if k.startswith("seglake.name.")} == {
        f"seglake.name.{kind}.{target}": name for (kind, target), name in names.items()}
    segmenter = Segmenter.load(Path(Tables.of(config).models("r1")) / "segmenter" / "artifacts" / "segmenter")
    served = {(kind, int(target)): name for kind, by_id in segmenter.details["names"].items()
              for target, name in by_id.items()}
    assert served == {**names, ("cluster", -1): NOISE_NAME}


@pytest.mark.slow
def test_rerun_replaces_the_mlflow_run_without_duplicate_steps(spark, tracked):
    folder, _, results, _ = tracked
    client, (first,) = mlflow_runs(tracked[1], "r1")
    # The same seglake run id, one stage again, with a changed config (MLflow params are immutable).
    config = accounts_config(folder, folder / "lake", overrides=["explain.noun=profiles"])
    run_tracked(spark, config, ["report"], "r1", echo=lambda line: None)
    client, runs = mlflow_runs(config, "r1")
    assert len(runs) == 1 and runs[0].info.run_id != first.info.run_id
    run = runs[0]
    _, deleted = mlflow_runs(config, "r1", ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [first.info.run_id]
    assert run.data.params["explain.noun"] == "profiles"
    assert run.data.tags["seglake.stages"] == first.data.tags["seglake.stages"]
    assert len(client.get_metric_history(run.info.run_id, "sweep.wssse")) == 3
    # Stages not re-run keep their recorded seconds; the re-run stage has its new ones.
    assert run.data.metrics["stage.sweep.seconds"] == first.data.metrics["stage.sweep.seconds"]
    assert run.data.metrics["stage.report.seconds"] != first.data.metrics["stage.report.seconds"]
    assert "report/index.html" in {i.path for i in client.list_artifacts(run.info.run_id, "report")}


@pytest.mark.slow
def test_a_failing_stage_leaves_a_failed_run_and_raises_its_own_error(spark, tracked):
    folder, config, _, _ = tracked
    with pytest.raises(SeglakeError, match="run the .sweep. stage first"):
        run_tracked(spark, config, ["segment"], "r2", echo=lambda line: None)
    _, (run,) = mlflow_runs(config, "r2")
    assert run.info.status == "FAILED"
    assert run.data.tags["seglake.stages"] == ""


def test_unreachable_server_fails_before_any_stage(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = accounts_config(tmp_path, tmp_path / "lake", "tracking: {tracking_uri: 'http://127.0.0.1:9'}\n")
    with pytest.raises(SeglakeError, match=r"cannot open experiment 'seglake/accounts' at http://127\.0\.0\.1:9"):
        run_tracked(spark, config, ["features"], "r1", echo=lambda line: None)
    assert not delta_exists(spark, Tables.of(config).entities)


def test_logging_failure_after_the_stages_names_the_uri_and_keeps_the_tables(spark, tmp_path):
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    config = accounts_config(tmp_path, tmp_path / "lake", f"tracking: {{tracking_uri: '{store}', "
                             "artifact_location: 'file:///proc/seglake-artifacts'}\n")
    with pytest.raises(SeglakeError, match=r"logging run r1 to sqlite:///.*store/mlflow\.db failed.*"
                                           r"Delta outputs are written"):
        run_tracked(spark, config, ["features"], "r1", echo=lambda line: None)
    assert spark.read.format("delta").load(Tables.of(config).entities).count() == 1500


def test_no_tracking_flag_and_config_run_without_a_store(spark, tmp_path, capsys):
    config = accounts_config(tmp_path, tmp_path / "lake")
    assert main(["run", "--config", config.source_file, "--stages", "features", "--run-id", "c1",
                 "--no-tracking"]) == 0
    assert "[tracking] off: --no-tracking" in capsys.readouterr().out
    assert not (tmp_path / "lake" / "mlflow.db").exists()
    assert delta_exists(spark, Tables.of(config).entities)


def test_where_a_config_tracks(tmp_path, monkeypatch):
    local = accounts_config(tmp_path, tmp_path / "lake", "")
    target = tracking_target(local)
    assert target.tracking_uri == f"sqlite:///{(tmp_path / 'lake').resolve()}/mlflow.db"
    assert target.experiment == "seglake/accounts"
    assert target.artifact_location == (tmp_path / "lake" / "mlflow-artifacts").resolve().as_uri()
    databricks = accounts_config(tmp_path, tmp_path / "lake", "tracking: {tracking_uri: databricks}\n")
    assert tracking_target(databricks).tracking_uri == "databricks"  # passed through unchanged
    assert tracking_target(databricks).experiment == "/Shared/seglake-accounts"
    assert tracking_target(databricks).artifact_location is None  # the workspace decides
    named = accounts_config(tmp_path, tmp_path / "lake",
                            "tracking: {tracking_uri: 'http://mlflow:5000', experiment: team/x}\n")
    assert (tracking_target(named).tracking_uri, tracking_target(named).experiment) == (
        "http://mlflow:5000", "team/x")
    assert tracking_target(accounts_config(tmp_path, "s3a://bucket/lake", "")) is None
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "17.3")  # a job or notebook on a cluster
    assert tracking_target(local) == tracking_target(databricks)
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION")
    assert tracking_target(accounts_config(tmp_path, tmp_path, "tracking: {enabled: false}\n")) is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    unset = accounts_config(tmp_path, tmp_path / "lake", "tracking: {tracking_uri: '${MLFLOW_TRACKING_URI:-}'}\n")
    assert tracking_target(unset) == target  # an unset variable means the default store


def test_params_are_flat_mlflow_safe_and_cut_to_the_limit(tmp_path):
    many = ", ".join(f"feature_{i:03d}" for i in range(100))  # a 1,300-character list
    config = accounts_config(tmp_path, tmp_path / "lake",
                             "filter: {min: {'views(total)': 2}}\ntransform: {log1p: [%s]}\n" % many)
    params = flat_params(config)
    assert params["filter.min.views_total_"] == "2.0"
    assert len(params["transform.log1p"]) == 500 and params["transform.log1p"].endswith("…")
    assert params["transform.log1p"].startswith('["feature_000", "feature_001"')
    assert params["events"] == "null" and params["tracking.enabled"] == "true"
    assert params["spark.conf"] == "{}"
    assert all(len(value) <= 500 for value in params.values())
    with pytest.raises(SeglakeError, match=r"unknown key 'tracking.uri'"):
        accounts_config(tmp_path, tmp_path / "lake", "tracking: {uri: x}\n")


def test_open_experiment_restores_a_deleted_experiment(tmp_path):
    config = accounts_config(tmp_path, tmp_path / "lake", "")
    client, experiment_id = open_experiment(tracking_target(config))
    client.delete_experiment(experiment_id)
    client, again = open_experiment(tracking_target(config))
    assert again == experiment_id
    assert client.get_experiment(again).lifecycle_stage == "active"
