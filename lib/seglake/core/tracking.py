"""MLflow tracking of a pipeline run: config as params, gold-table metrics, models and report.

:func:`run_tracked` wraps :func:`seglake.core.pipeline.run_stages` in one MLflow run tagged with the
seglake run id and use case. The experiment is opened before any stage starts, so a wrong or
unreachable ``tracking.tracking_uri`` fails in seconds, not after hours of Spark. Everything else is
logged once the stages have finished, from the run's small gold tables:

* params: the whole validated config, flattened to dotted keys (the full JSON is an artifact too);
* metrics: ``stage.<stage>.seconds|rows_in|rows_out|spark_jobs|spark_stages|delta_commits``; ``sweep.<metric>`` with step = k;
  ``segment.size|share`` with step = segment; ``density.<metric>`` with step = group (0 unless
  ``density.group_by: segment``); ``explain.<kind>.<target>.precision|recall|f1`` and
  ``explain.<kind>.macro_f1``; ``classify.<model>.<split>.<metric>``;
* tags: ``seglake.name.<kind>.<target>``, each segment's and cluster's name from the explain stage;
* artifacts: ``config/config.json``, ``models/`` (the run's model folder with its manifests),
  ``report/index.html``, ``tables/descriptions.json``;
* model: ``segmenter``, the run's Spark-free segmenter (an MLflow pyfunc saved under
  ``models/<run_id>/segmenter`` after the segment stage), registered as ``seglake-<name>`` when the
  store has a model registry.

A seglake run id maps to exactly one active MLflow run. MLflow cannot change a logged param or
delete a metric value, so each call creates a fresh MLflow run and deletes (MLflow's soft delete;
``mlflow gc`` purges) the earlier one with the same tag. The new run re-logs the gold metrics of every
stage the earlier run had recorded (the gold tables still hold them) and carries over their
``stage.*`` metrics, so a notebook that runs one stage per call ends with one complete MLflow run and
a re-run never piles up duplicate steps.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from seglake.core.config import SeglakeConfig, check_run_id
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import default_run_id, plan_stages, run_stages, stages_for
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, read_run, read_run_rows

# Open-source MLflow takes 6000-character param values, Databricks fewer: 500 is safe for both, and
# the untruncated config is logged as config/config.json anyway.
PARAM_VALUE_LIMIT = 500
TAG_RUN_ID = "seglake.run_id"
TAG_USE_CASE = "seglake.use_case"
TAG_STAGES = "seglake.stages"
MODEL_STAGES = {"sweep", "segment", "density", "explain", "classify", "assign"}
SWEEP_METRICS = ["wssse", "sse", "silhouette", "silhouette_exact", "min_cluster_share", "seconds"]
QUALITY_METRICS = ["population", "sample_rows", "clusters", "noise_share", "stability_ari",
                   "n_neighbors", "min_cluster_size", "hdbscan_clusters", "unstable_clusters",
                   "mean_jaccard", "min_jaccard", "fit_seconds", "fidelity", "fidelity_clustered"]
CLASSIFIER_METRICS = ["accuracy", "precision", "recall", "f1", "f1_macro"]


@dataclass(frozen=True)
class TrackingTarget:
    """Where a run is tracked: MLflow tracking URI, experiment name, artifact root (or the server's)."""

    tracking_uri: str
    experiment: str
    artifact_location: str | None


@dataclass
class Record:
    """What one MLflow run receives, gathered from the gold tables before anything is sent."""

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # key, value, step
    files: list[tuple[Path, str]] = field(default_factory=list)  # local file or folder, artifact path
    dicts: dict[str, dict] = field(default_factory=dict)  # artifact file → JSON object
    tables: dict[str, Any] = field(default_factory=dict)  # artifact file → pandas DataFrame
    models: dict[str, Path] = field(default_factory=dict)  # MLflow model name → saved pyfunc folder
    registered_name: str | None = None  # model registry name of the models (when the store has one)

    def metric(self, key: str, value: Any, step: int = 0) -> None:
        """Add a metric; a value the stage did not compute (null, NaN) is not logged."""
        if value is not None and math.isfinite(float(value)):
            self.metrics.append((key, float(value), int(step)))


def _local_folder(uri: str) -> Path | None:
    """A local path for ``uri``: plain paths, ``file:`` URIs and DBFS through its ``/dbfs`` mount."""
    if uri.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", uri))
    if uri.startswith("dbfs:/") and Path("/dbfs").is_dir():
        return Path("/dbfs") / uri.removeprefix("dbfs:/").lstrip("/")
    return None if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", uri) else Path(uri)


def tracking_target(config: SeglakeConfig) -> TrackingTarget | None:
    """The MLflow store a config tracks to, or None when tracking is off.

    Without ``tracking.tracking_uri`` a local lakehouse gets ``sqlite:///<lakehouse>/mlflow.db`` with
    artifacts in ``<lakehouse>/mlflow-artifacts`` (on a Databricks cluster: ``databricks``); a
    lakehouse URI gets no default (None). A given URI (``databricks``, ``http://...``) is used
    unchanged, with the server's artifact root unless ``tracking.artifact_location`` is set.
    """
    spec = config.tracking
    if not spec.enabled:
        return None
    uri = spec.tracking_uri
    if uri is None and os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        uri = "databricks"  # on a Databricks cluster the workspace's own tracking server is the store
    databricks = uri is not None and (uri == "databricks" or uri.startswith("databricks://"))
    # Databricks experiments are workspace paths whose parent folder must exist: /Shared always does.
    experiment = spec.experiment or (f"/Shared/seglake-{config.name}" if databricks
                                     else f"seglake/{config.name}")
    if uri is not None:
        return TrackingTarget(uri, experiment, spec.artifact_location)
    lakehouse = _local_folder(config.lakehouse)
    if lakehouse is None or config.lakehouse.startswith("dbfs:"):
        return None
    lakehouse = lakehouse.resolve()
    return TrackingTarget(f"sqlite:///{lakehouse / 'mlflow.db'}", experiment,
                          spec.artifact_location or (lakehouse / "mlflow-artifacts").as_uri())


def _off_reason(config: SeglakeConfig, enabled: bool) -> str:
    if not enabled:
        return "--no-tracking"
    if not config.tracking.enabled:
        return "tracking.enabled is false"
    return (f"lakehouse {config.lakehouse} is not a local folder and tracking.tracking_uri is not "
            "set (set it, e.g. to databricks, to track)")


def _cause(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


@contextmanager
def _store_lock(tracking_uri: str):
    """Hold an exclusive file lock while a local SQLite store is created or its experiment opened.

    Two runs starting at once on a fresh lakehouse would otherwise both create MLflow's schema
    ("table ... already exists") or both create the experiment; other stores need no lock.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_experiment(target: TrackingTarget):
    """An ``MlflowClient`` on ``target`` and the experiment id, created (or restored) if needed.

    Raises
    ------
    SeglakeError
        One line naming the tracking URI when the store cannot be reached or written.
    """
    from mlflow.tracking import MlflowClient

    # MLflow and alembic announce a new store's schema at INFO on stderr, which would bury the
    # one-line error a failing run ends with; their warnings still show.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with _store_lock(target.tracking_uri):
            client = MlflowClient(tracking_uri=target.tracking_uri)
            experiment = client.get_experiment_by_name(target.experiment)
            if experiment is None:
                return client, client.create_experiment(target.experiment,
                                                        artifact_location=target.artifact_location)
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return client, experiment.experiment_id
    except Exception as err:
        raise SeglakeError(f"tracking: cannot open experiment '{target.experiment}' at "
                           f"{target.tracking_uri}: {_cause(err)} (--no-tracking runs without it)") from err


def run_tracked(
    spark: SparkSession,
    config: SeglakeConfig,
    stages: list[str] | None = None,
    run_id: str | None = None,
    echo: Callable[[str], None] = print,
    enabled: bool = True,
) -> list[StageResult]:
    """Run stages like :func:`seglake.core.pipeline.run_stages`, tracked as one MLflow run.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
        Its ``tracking`` section says where (see :func:`tracking_target`).
    stages : list of str, optional
        Stage names (default: all the config supports).
    run_id : str, optional
        The seglake run id (default: a UTC timestamp); tagged ``seglake.run_id`` on the MLflow run.
    echo : callable
        Where progress lines go.
    enabled : bool
        False runs untracked (``seglake run --no-tracking``).

    Returns
    -------
    list of StageResult

    Raises
    ------
    SeglakeError
        When the store cannot be opened (before any stage runs) or logging fails (after the stages'
        Delta outputs are written); the line names the tracking URI. A failing stage marks the
        MLflow run FAILED, with the stages that finished, and its own error propagates.
    """
    run_id = check_run_id(run_id or default_run_id())
    planned = plan_stages(config, stages)
    target = tracking_target(config) if enabled else None
    if target is None:
        echo(f"[tracking] off: {_off_reason(config, enabled)}")
        return run_stages(spark, config, planned, run_id, echo)
    client, experiment_id = open_experiment(target)
    started_ms = int(time.time() * 1000)
    finished: list[StageResult] = []
    try:
        run_stages(spark, config, planned, run_id, echo, on_stage=finished.append)
    except Exception:
        try:
            _log_run(spark, config, run_id, client, experiment_id, target, planned, finished,
                     started_ms, "FAILED", echo)
        except Exception as tracking_error:  # the stage's error is the one to raise
            echo(f"[tracking] could not record failed run {run_id} at {target.tracking_uri}: "
                 f"{_cause(tracking_error)}")
        raise
    mlflow_run_id = _log_run(spark, config, run_id, client, experiment_id, target, planned,
                             finished, started_ms, "FINISHED", echo)
    echo(f"[tracking] run {run_id}: MLflow run {mlflow_run_id} in experiment '{target.experiment}' "
         f"at {target.tracking_uri}")
    return finished


def tracked_runs(client, experiment_id: str, run_id: str) -> list:
    """The active MLflow runs tagged with a seglake run id, newest first."""
    return client.search_runs([experiment_id], f"tags.`{TAG_RUN_ID}` = '{check_run_id(run_id)}'",
                              order_by=["attributes.start_time DESC"])


def _log_run(spark, config, run_id, client, experiment_id, target, planned, finished, started_ms,
             status, echo) -> str:
    try:
        previous = tracked_runs(client, experiment_id, run_id)
    except Exception as err:
        raise _logging_error(target, run_id, err) from err
    earlier = {s for run in previous for s in run.data.tags.get(TAG_STAGES, "").split(",") if s}
    ran = dict(zip(planned, finished))  # stage name → result, for the stages that finished
    recorded = [s for s in stages_for(config) if s in earlier or s in ran]
    record = collect(spark, config, run_id, recorded, ran, echo)
    if previous:  # stages not re-run keep the seconds and rows they were recorded with
        for key, value in previous[0].data.metrics.items():
            if key.startswith("stage.") and key.split(".")[1] not in ran:
                record.metric(key, value)
    try:
        return _send(client, experiment_id, run_id, record, started_ms, status, previous, target, echo)
    except Exception as err:
        raise _logging_error(target, run_id, err) from err


def _logging_error(target: TrackingTarget, run_id: str, err: BaseException) -> SeglakeError:
    return SeglakeError(f"tracking: logging run {run_id} to {target.tracking_uri} failed: {_cause(err)}; "
                        "the stages' Delta outputs are written (re-running with the same --run-id "
                        "replaces them and tracks the run)")


def _send(client, experiment_id: str, run_id: str, record: Record, started_ms: int, status: str,
          previous: list, target: TrackingTarget | None = None,
          echo: Callable[[str], None] = print) -> str:
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, start_time=started_ms, tags=record.tags, run_name=run_id)
    mlflow_run_id = run.info.run_id
    now = int(time.time() * 1000)
    try:
        # MlflowClient.log_batch splits into MLflow's per-request limits (100 params, 1000 metrics).
        client.log_batch(mlflow_run_id,
                         metrics=[Metric(key, value, now, step) for key, value, step in record.metrics],
                         params=[Param(key, value) for key, value in record.params.items()])
        for artifact_file, body in record.dicts.items():
            client.log_dict(mlflow_run_id, body, artifact_file)
        for local, artifact_path in record.files:
            if local.is_dir():
                client.log_artifacts(mlflow_run_id, str(local), artifact_path)
            else:
                client.log_artifact(mlflow_run_id, str(local), artifact_path)
        for artifact_file, frame in record.tables.items():
            client.log_table(mlflow_run_id, data=frame, artifact_file=artifact_file)
        for name, folder in record.models.items():
            log_saved_pyfunc(target, mlflow_run_id, folder, name, record.registered_name, echo)
    except Exception:
        client.set_terminated(mlflow_run_id, status="FAILED")  # not left RUNNING half-logged
        raise
    client.set_terminated(mlflow_run_id, status=status)
    # Deleted only once the new run is complete, so the run id is never left untracked.
    for stale in previous:
        client.delete_run(stale.info.run_id)
    return mlflow_run_id


def has_model_registry(tracking_uri: str) -> bool:
    """False for MLflow's file store (a folder or ``file:`` URI), which keeps no model registry.

    Examples
    --------
    >>> [has_model_registry(u) for u in ("sqlite:///lake/mlflow.db", "/lake/mlruns", "file:///lake/mlruns")]
    [True, False, False]
    """
    return _local_folder(tracking_uri) is None


@contextmanager
def _mlflow_uri(tracking_uri: str):
    """MLflow's fluent API (which ``Model.log`` uses) pointed at ``tracking_uri`` for a block.

    MLflow's own save-and-restore: an unset URI is unset again afterwards (``set_tracking_uri``
    with the default's value would export ``MLFLOW_TRACKING_URI`` to every later subprocess), and
    the model registry follows the tracking URI while no registry URI is set.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri):
        yield


def log_saved_pyfunc(target: TrackingTarget, mlflow_run_id: str, folder: Path, name: str,
                     registered_name: str | None, echo: Callable[[str], None] = print) -> str:
    """Log a pyfunc model saved as code at ``folder`` into an MLflow run; register it if asked.

    The run's segmenter is saved by :mod:`seglake.serving.export` (with Spark, before tracking);
    this re-logs that very folder through ``mlflow.models.Model.log`` (its code file, artifacts,
    signature, input example and requirements), so tracking imports no serving code. On a store
    without a model registry the model is logged and not registered, with a one-line note.

    Returns
    -------
    str
        The logged model's URI (``models:/<model_id>``).
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model

    saved = Model.load(str(folder))
    flavor = saved.flavors["python_function"]
    artifacts = {key: str(folder / spec["path"]) for key, spec in flavor.get("artifacts", {}).items()}
    # the run active for the block: MLflow files the logged model under the active run's
    # experiment (with only run_id it would go to the store's default experiment)
    with _mlflow_uri(target.tracking_uri), \
            mlflow.start_run(run_id=mlflow_run_id, nested=mlflow.active_run() is not None):
        info = Model.log(None, mlflow.pyfunc, name=name, run_id=mlflow_run_id,
                         python_model=str(folder / Path(flavor["model_code_path"]).name),
                         artifacts=artifacts, signature=saved.signature,
                         input_example=saved.load_input_example(str(folder)),
                         pip_requirements=str(folder / "requirements.txt"))
        if registered_name is None:
            return info.model_uri
        if not has_model_registry(target.tracking_uri):
            echo(f"[tracking] {name} not registered as {registered_name}: the file store at "
                 f"{target.tracking_uri} has no model registry")
            return info.model_uri
        try:
            version = mlflow.register_model(info.model_uri, registered_name)
        except Exception as err:  # a registry that refuses the name is a note, not a failed run
            echo(f"[tracking] {name} not registered as {registered_name}: {_cause(err)}")
        else:
            echo(f"[tracking] {name} registered as {registered_name} version {version.version}")
    return info.model_uri


# ---------------------------------------------------------------- what to log, from gold tables


def flat_params(config: SeglakeConfig) -> dict[str, str]:
    """The config as MLflow params: dotted keys, JSON values, cut to :data:`PARAM_VALUE_LIMIT`."""
    params: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > PARAM_VALUE_LIMIT:
            text = text[:PARAM_VALUE_LIMIT - 1] + "…"
        # MLflow keys take letters, digits, _ - . space / : only; feature names may hold ( ).
        params[re.sub(r"[^\w.\- /:]", "_", prefix)] = text

    walk("", config.model_dump(mode="json"))
    return params


def collect(
    spark: SparkSession,
    config: SeglakeConfig,
    run_id: str,
    recorded: list[str],
    ran: dict[str, StageResult],
    echo: Callable[[str], None] = print,
) -> Record:
    """Everything an MLflow run of ``run_id`` receives for the ``recorded`` stages.

    ``ran`` maps the stages of this call that finished to their results (seconds, rows). Only small
    gold tables are collected (a row per k, segment, group or target).
    """
    tables = Tables.of(config)
    record = Record(params=flat_params(config))
    record.tags = {TAG_RUN_ID: run_id, TAG_USE_CASE: config.name, TAG_STAGES: ",".join(recorded),
                   "seglake.config_hash": config.config_hash, "seglake.config_file": config.source_file}
    record.dicts["config/config.json"] = config.model_dump(mode="json")
    for name, result in ran.items():
        record.metric(f"stage.{name}.seconds", result.seconds)
        record.metric(f"stage.{name}.rows_in", result.rows_in)
        record.metric(f"stage.{name}.rows_out", result.rows_out)
        cost = result.cost
        if cost is not None:
            record.metric(f"stage.{name}.delta_commits", cost.commits)
            if cost.jobs is not None:
                record.metric(f"stage.{name}.spark_jobs", cost.jobs)
                record.metric(f"stage.{name}.spark_stages", cost.stages)

    def gold(name: str) -> pd.DataFrame | None:  # a small table: one row per k, segment, cluster ...
        return read_run_rows(spark, tables.gold(name), run_id)

    if "sweep" in recorded and (rows := gold("sweep")) is not None:
        for row in rows.to_dict("records"):  # one row per k
            for name in SWEEP_METRICS:
                record.metric(f"sweep.{name}", row[name], row["k"])
            if row["chosen"]:
                record.metric("sweep.chosen_k", row["k"])
                record.tags["seglake.k_reason"] = row["reason"][:5000]
        runs = gold("runs")
        if runs is not None:
            for fraction in runs.loc[runs["stage"] == "sweep", "kept_fraction"]:
                record.metric("sweep.kept_fraction", fraction)
    if "segment" in recorded and (rows := gold("profiles")) is not None:
        for row in rows[["segment", "size", "share"]].drop_duplicates().to_dict("records"):
            record.metric("segment.size", row["size"], row["segment"])
            record.metric("segment.share", row["share"], row["segment"])
    if "density" in recorded and (rows := gold("cluster_quality")) is not None:
        for row in rows.to_dict("records"):  # one row per group
            for name in QUALITY_METRICS:
                record.metric(f"density.{name}", row[name], row["group"])
        if (clusters := gold("cluster_stability")) is not None:
            for row in clusters.to_dict("records"):  # one row per HDBSCAN cluster of the chosen settings
                record.metric("density.cluster_jaccard", row["jaccard"], row["hdbscan_cluster"])
        if (tried := gold("density_sweep")) is not None:
            reasons = [f"group {row['group']}: {row['reason']}" for row in tried[tried["chosen"]].to_dict("records")]
            record.tags["seglake.density_reason"] = "; ".join(reasons)[:5000]
    if "explain" in recorded:
        _explain_metrics(spark, tables, run_id, record)
    if "classify" in recorded and (rows := gold("classifier_metrics")) is not None:
        for row in rows.to_dict("records"):  # one row per model and split
            for name in CLASSIFIER_METRICS:
                record.metric(f"classify.{row['model']}.{row['split']}.{name}", row[name])
            if row["chosen"]:
                record.tags["seglake.classifier_model"] = row["model"]
    _artifacts(config, run_id, recorded, record, echo)
    return record


def _explain_metrics(spark: SparkSession, tables: Tables, run_id: str, record: Record) -> None:
    rows = read_run(spark, tables.gold("explanations"), run_id)
    if rows is not None:
        path = F.col("path") if "path" in rows.columns else F.lit(None).cast("string")
        targets = rows.select("kind", "target", path.alias("path"), "precision", "recall", "f1").distinct().collect()
        for kind in sorted({row["kind"] for row in targets}):
            scores = [row for row in targets if row["kind"] == kind]
            for row in scores:  # a child of a density split by its path: explain.subcluster.3.1.f1
                name = "noise" if row["target"] == -1 else str(row["path"] if kind == "subcluster" else row["target"])
                for metric in ("precision", "recall", "f1"):
                    record.metric(f"explain.{kind}.{name}.{metric}", row[metric])
            f1 = [row["f1"] for row in scores if row["f1"] is not None]
            if f1:
                record.metric(f"explain.{kind}.macro_f1", sum(f1) / len(f1))
    descriptions = read_run_rows(spark, tables.gold("descriptions"), run_id)  # one row per target
    if descriptions is not None:
        record.tables["tables/descriptions.json"] = (
            descriptions.drop(columns="run_id").sort_values(["kind", "target"]).reset_index(drop=True))
        if "name" in descriptions.columns:  # absent from runs explained before names existed
            for row in record.tables["tables/descriptions.json"].itertuples():
                if isinstance(row.name, str):
                    key = row.path if row.kind == "subcluster" else row.target
                    record.tags[f"seglake.name.{row.kind}.{key}"] = row.name


def _artifacts(config: SeglakeConfig, run_id: str, recorded: list[str], record: Record,
               echo: Callable[[str], None]) -> None:
    models = _local_folder(Tables.of(config).models(run_id))
    wanted_models = any(s in MODEL_STAGES for s in recorded)
    if wanted_models and models is None:
        echo(f"[tracking] models of run {run_id} not logged as artifacts: "
             f"{Tables.of(config).models(run_id)} is not on a local file system")
    elif wanted_models and models.is_dir():
        record.files.append((models, "models"))
        # the run's Spark-free segmenter (seglake.core.pipeline.SEGMENTER_EXPORT), as an MLflow model
        if (models / "segmenter" / "MLmodel").is_file():
            record.models["segmenter"] = models / "segmenter"
            record.registered_name = f"seglake-{config.name}"
    if "report" in recorded:
        try:
            page = Tables.of(config).report(run_id)
        except SeglakeError:
            echo(f"[tracking] report of run {run_id} not logged: lakehouse is not a local folder")
        else:
            if page.is_file():
                record.files.append((page, "report"))
