"""The one place a SparkSession is built. Only entry points (jobs, CLI, notebooks, tests) call it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from seglake.core.costs import RETAINED
from seglake.core.jars import delta_jars

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

# Defaults for a laptop or a 2-core / 24 GiB box; a cluster overrides them with spark-submit flags or
# the config's `spark.conf`. Shuffle partitions stay small because AQE coalesces and local mode has
# few cores; Arrow makes pandas UDFs and toPandas of small tables cheap.
LOCAL_DEFAULTS = {
    "spark.driver.memory": "6g",
    "spark.sql.shuffle.partitions": "16",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "20000",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "true",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.partitionOverwriteMode": "static",
}


def numba_cache_dir() -> str:
    """Where numba caches compiled UMAP/HDBSCAN kernels, shared by every Python worker."""
    root = os.environ.get("SEGLAKE_CACHE") or str(Path.home() / ".cache" / "seglake")
    return str(Path(root) / "numba")


def _launched_by_spark_submit() -> bool:
    # spark-submit (and Databricks) start the JVM first and hand Python its gateway port; then
    # jars and driver memory were fixed on the command line and cannot be set from here.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_spark(
    app_name: str = "seglake",
    master: str | None = None,
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """Build (or join) the SparkSession with Delta Lake enabled.

    Parameters
    ----------
    app_name : str
        Shown in the Spark UI and logs.
    master : str, optional
        Spark master URL. ``None`` keeps what spark-submit set, else ``local[*]``.
    conf : dict, optional
        Extra Spark settings; they win over the local defaults.

    Returns
    -------
    SparkSession
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("NUMBA_CACHE_DIR", numba_cache_dir())
    # Bind to loopback unless told otherwise: a laptop's public interface is not needed in local mode.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    settings = dict(DELTA_CONF)
    if not _launched_by_spark_submit():
        # Python workers must run the driver's interpreter (its venv has seglake, UMAP, XGBoost...),
        # not whatever `python3` is first on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(master or os.environ.get("SEGLAKE_MASTER") or "local[*]")
        settings.update(LOCAL_DEFAULTS)
        if os.environ.get("SEGLAKE_DRIVER_MEMORY"):
            settings["spark.driver.memory"] = os.environ["SEGLAKE_DRIVER_MEMORY"]
        settings["spark.jars"] = ",".join(str(p) for p in delta_jars())
        log_config = Path(__file__).with_name("log4j2.properties")
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j.configurationFile=file:{log_config}"
    elif master:
        builder = builder.master(master)
    settings["spark.executorEnv.NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    settings.update(RETAINED)  # so that each stage's Spark jobs can be counted whole
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
