"""The one module that knows where tables live and how they are written.

Layout: ``<lakehouse>/<name>/<layer>/<table>`` with layers ``bronze``, ``silver``, ``gold``, plus
``models/<run_id>/`` and ``reports/<run_id>/``. Every gold write is keyed by ``run_id`` with Delta's
``replaceWhere``: a re-run replaces its own rows atomically and never duplicates them, and a killed
write leaves the previous version readable.
"""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from seglake.config import SeglakeConfig, check_run_id
from seglake.errors import SeglakeError


@dataclass(frozen=True)
class Tables:
    """Paths of one use case's tables."""

    lakehouse: str
    name: str

    @classmethod
    def of(cls, config: SeglakeConfig) -> "Tables":
        """The layout for a config."""
        return cls(config.lakehouse.rstrip("/"), config.name)

    @property
    def root(self) -> str:
        """``<lakehouse>/<name>``."""
        return f"{self.lakehouse}/{self.name}"

    def path(self, layer: str, table: str) -> str:
        """``<lakehouse>/<name>/<layer>/<table>``."""
        return f"{self.root}/{layer}/{table}"

    @property
    def events(self) -> str:
        return self.path("bronze", "events")

    @property
    def quarantine(self) -> str:
        return self.path("bronze", "quarantine")

    @property
    def ingest_log(self) -> str:
        return self.path("bronze", "ingest_log")

    @property
    def entities(self) -> str:
        return self.path("silver", "entities")

    def gold(self, table: str) -> str:
        """A gold table: sweep, segments, profiles, runs, explanations, ..."""
        return self.path("gold", table)

    def models(self, run_id: str) -> str:
        """Folder of a run's fitted models and manifest."""
        return f"{self.root}/models/{check_run_id(run_id)}"


def delta_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table."""
    return DeltaTable.isDeltaTable(spark, path)


def read_delta(spark: SparkSession, path: str, produced_by: str) -> DataFrame:
    """Read a Delta table, or fail with one line saying which stage produces it."""
    if not delta_exists(spark, path):
        raise SeglakeError(f"no Delta table at {path}: run the '{produced_by}' stage first")
    return spark.read.format("delta").load(path)


def write_run(
    df: DataFrame, path: str, run_id: str, partition_by: tuple[str, ...] = ("run_id",)
) -> None:
    """Write ``df`` (whose ``run_id`` column is ``run_id`` everywhere) replacing that run's rows.

    The first write creates the table partitioned by ``partition_by``; later writes replace exactly
    the rows of this run in one atomic commit, leaving other runs untouched.
    """
    check_run_id(run_id)
    writer = df.write.format("delta").option("mergeSchema", "true")
    spark = df.sparkSession
    if delta_exists(spark, path):
        writer.mode("overwrite").option("replaceWhere", f"run_id = '{run_id}'").save(path)
    else:
        writer.mode("overwrite").partitionBy(*partition_by).save(path)


def sql_string(value: str) -> str:
    """A Spark SQL string literal for ``value`` (for Delta predicates that only take SQL text)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
