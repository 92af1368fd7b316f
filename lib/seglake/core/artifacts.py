"""Fitted artefacts of a run: MLlib-native model folders plus a JSON manifest, and the run record.

Layout under ``<lakehouse>/<name>/models/<run_id>/``::

    manifest.json   what was fitted on what: entities table version, filter, features and their
                    types, training quantile bins per feature (drift), library versions, k, seed
    transform/      the prepare PipelineModel (MLlib persistence)
    kmeans/         the chosen clustering model (MLlib persistence, whatever the algorithm)

Everything goes through Hadoop file systems (never Python ``open``), so the same code writes to a
local folder, HDFS, S3 or DBFS. Nothing is pickled: a model saved by one Spark version loads in the
next, and scoring needs no Python objects from the training process.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.ml.clustering import BisectingKMeansModel, GaussianMixtureModel, KMeansModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.tables import Tables, delta_exists, put_bytes, write_run

MANIFEST = "manifest.json"
TRANSFORM = "transform"
CLUSTERING = "kmeans"
_MODEL_CLASSES = {
    "kmeans": KMeansModel,
    "bisecting_kmeans": BisectingKMeansModel,
    "gaussian_mixture": GaussianMixtureModel,
}


def _filesystem(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def path_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` exists on its (Hadoop-compatible) file system."""
    fs, hadoop_path = _filesystem(spark, path)
    return bool(fs.exists(hadoop_path))


def save_model(model, folder: str) -> str:
    """Save an MLlib model or PipelineModel to ``folder``, replacing what was there; return it."""
    model.write().overwrite().save(folder)
    return folder


def load_transform(spark: SparkSession, folder: str, run_id: str) -> PipelineModel:
    """Load a run's prepare transform, or fail naming the stage that writes it."""
    path = f"{folder}/{TRANSFORM}"
    if not path_exists(spark, path):
        raise SeglakeError(f"no transform at {path}: run the sweep stage first for run {run_id}")
    return PipelineModel.load(path)


def load_clustering(spark: SparkSession, folder: str, algorithm: str, run_id: str):
    """Load a run's fitted clustering model (KMeans, BisectingKMeans or GaussianMixture)."""
    path = f"{folder}/{CLUSTERING}"
    if not path_exists(spark, path):
        raise SeglakeError(f"no clustering model at {path}: run the segment stage first for run {run_id}")
    return _MODEL_CLASSES[algorithm].load(path)


# Distributions whose versions decide whether a saved model loads and scores the same way.
LIBRARIES = ("seglake", "pyspark", "delta-spark", "numpy", "pandas", "pyarrow", "scikit-learn",
             "xgboost-cpu", "xgboost")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a run's models depend on, and Python's (for manifests)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # xgboost ships as xgboost-cpu or xgboost: record the one present
            continue
    return found


def write_manifest(spark: SparkSession, folder: str, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (sorted keys, ``written_at`` in UTC) into a run's model folder."""
    body = dict(manifest, written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    put_bytes(spark, f"{folder}/{MANIFEST}", json.dumps(body, indent=2, sort_keys=True).encode())


def read_manifest(spark: SparkSession, folder: str, run_id: str) -> dict[str, Any]:
    """Read a run's manifest, or fail saying the sweep stage writes it."""
    path = f"{folder}/{MANIFEST}"
    if not path_exists(spark, path):
        raise SeglakeError(f"no manifest at {path}: run the sweep stage first for run {run_id}")
    text = spark.read.text(path, wholetext=True).first()[0]
    return json.loads(text)


RUN_COLUMNS = (
    "run_id string, stage string, use_case string, config_hash string, rows_in long, rows_out long, "
    "kept_fraction double, chosen_k int, reason string, recorded_at timestamp"
)


def record_run(
    spark: SparkSession,
    config: SeglakeConfig,
    run_id: str,
    stage: str,
    rows_in: int,
    rows_out: int,
    kept_fraction: float | None = None,
    chosen_k: int | None = None,
    reason: str | None = None,
) -> None:
    """Upsert this stage's row of ``gold/runs`` (one row per ``run_id`` and ``stage``).

    Columns: ``run_id``, ``stage``, ``use_case`` (config name), ``config_hash``, ``rows_in``,
    ``rows_out`` (entities in and rows written by the stage), ``kept_fraction`` (share of entities
    passing the filter), ``chosen_k`` and ``reason`` (the one-line choice of k), ``recorded_at``.
    A column that does not apply to a stage is null.

    ``write_run`` replaces a whole run, so the run's rows of other stages (a few, one per stage)
    are read back and written again with this one: re-running a stage replaces only its own row.
    """
    path = Tables.of(config).gold("runs")
    others = []
    if delta_exists(spark, path):
        others = (
            spark.read.format("delta").load(path)
            .where((F.col("run_id") == run_id) & (F.col("stage") != stage))
            .select(*[c.split()[0] for c in RUN_COLUMNS.split(", ")])
            .collect()
        )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    row = (run_id, stage, config.name, config.config_hash, int(rows_in), int(rows_out),
           None if kept_fraction is None else float(kept_fraction),
           None if chosen_k is None else int(chosen_k), reason, now)
    write_run(spark.createDataFrame([*map(tuple, others), row], RUN_COLUMNS), path, run_id)
