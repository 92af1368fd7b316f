"""The one module that knows where tables live and how they are written.

Layout: ``<lakehouse>/<name>/<layer>/<table>`` with layers ``bronze``, ``silver``, ``gold``, plus
``models/<run_id>/`` and ``reports/<run_id>/``. Every gold write is keyed by ``run_id`` with Delta's
``replaceWhere``: a re-run replaces its own rows atomically and never duplicates them, and a killed
write leaves the previous version readable.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from seglake.core.config import SeglakeConfig, check_run_id
from seglake.core.errors import SeglakeError


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

    def write() -> None:
        if delta_exists(spark, path):
            writer.mode("overwrite").option("replaceWhere", f"run_id = '{run_id}'").save(path)
        else:
            writer.mode("overwrite").partitionBy(*partition_by).save(path)

    retry_conflicts(write, path)


# Delta's optimistic concurrency: a commit that loses a race raises one of these. The Python classes
# do not share a base class, hence the list.
CONFLICTS = (
    DeltaConcurrentModificationException, ConcurrentWriteException, MetadataChangedException,
    ProtocolChangedException, ConcurrentAppendException, ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException, ConcurrentTransactionException,
)
CONFLICT_ATTEMPTS = 5
_CONFLICT_NAMES = {cls.__name__ for cls in CONFLICTS}

T = TypeVar("T")


def is_conflict(err: BaseException) -> bool:
    """True for a lost Delta commit race, whether raised as delta-spark's Python exception or as
    the Java one: ``DataFrameWriter.save`` surfaces ``io.delta.exceptions.*`` (e.g. two writers
    creating one table: ``ProtocolChangedException``) as a plain ``Py4JJavaError``."""
    if isinstance(err, CONFLICTS):
        return True
    java = getattr(err, "java_exception", None)
    while java is not None:
        name = java.getClass().getName()
        if name.startswith("io.delta.exceptions.") and name.rsplit(".", 1)[-1] in _CONFLICT_NAMES:
            return True
        java = java.getCause()
    return False


def retry_conflicts(write: Callable[[], T], path: str, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run an idempotent Delta write, again after a lost commit race, at most ``attempts`` times.

    Two runs writing one lakehouse at once (two run ids, or two ingests of the same new files) race
    for the same commit, or both try to create a table; the loser's write is keyed (by run id, by
    file) so repeating it gives the rows a lone writer would have. ``write`` must decide again
    whether the table exists: the winner may just have created it.

    Raises
    ------
    SeglakeError
        When every attempt lost a race: names the table and the last conflict.
    """
    for attempt in range(1, attempts):
        try:
            return write()
        except Exception as err:
            if not is_conflict(err):
                raise
            # Jittered backoff so that two losers do not collide again on the next attempt.
            time.sleep(random.uniform(0.5, 1.5) * attempt)
    try:
        return write()
    except Exception as err:
        if not is_conflict(err):
            raise
        cause = (str(err).strip().splitlines() or [""])[0][:300]
        raise SeglakeError(f"{path}: other writers kept committing to this table at the same time; "
                           f"gave up after {attempts} attempts ({type(err).__name__}: {cause})") from err


def sql_string(value: str) -> str:
    """A Spark SQL string literal for ``value`` (for Delta predicates that only take SQL text)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Small files (manifests, model JSON, metrics) next to the tables: local paths directly, any other
# Hadoop-compatible URI through the Hadoop file system, so the same call works on a cluster.


def _local(uri: str) -> Path | None:
    if uri.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", uri))
    return None if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", uri) else Path(uri)


def put_bytes(spark: SparkSession, uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` (a local path or any Hadoop-compatible URI), replacing it."""
    local = _local(uri)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()


def get_bytes(spark: SparkSession, uri: str) -> bytes:
    """Read the whole file at ``uri``; a missing file is a :class:`SeglakeError`."""
    local = _local(uri)
    if local is not None:
        if not local.is_file():
            raise SeglakeError(f"model file not found: {uri}")
        return local.read_bytes()
    rows = spark.read.format("binaryFile").load(uri).select("content").head(1)
    if not rows:
        raise SeglakeError(f"model file not found: {uri}")
    return bytes(rows[0][0])
