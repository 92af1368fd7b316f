"""The catalog: the one module that knows where tables live and reads and writes Delta.

Layout: ``<lakehouse>/<name>/<layer>/<table>`` with layers ``bronze``, ``silver``, ``gold``, plus
``models/<run_id>/`` (written by :mod:`seglake.core.artifacts`) and ``reports/<run_id>/``. Every gold
write is keyed by ``run_id`` with Delta's ``replaceWhere``: a re-run replaces its own rows atomically
and never duplicates them, and a killed write leaves the previous version readable. Stage bodies
never call ``spark.read`` or ``DataFrame.write`` on a table themselves: they call the functions here.
"""

from __future__ import annotations

import random
import re
import time
from datetime import datetime, timezone
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
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import SeglakeConfig, check_run_id
from seglake.core.costs import committed
from seglake.core.errors import SeglakeError, first_line


@dataclass(frozen=True)
class Tables:
    """Paths of one use case's tables.

    Examples
    --------
    >>> tables = Tables("/lake", "users")
    >>> tables.root, tables.entities, tables.gold("sweep")
    ('/lake/users', '/lake/users/silver/entities', '/lake/users/gold/sweep')
    >>> tables.events, tables.quarantine, tables.ingest_log
    ('/lake/users/bronze/events', '/lake/users/bronze/quarantine', '/lake/users/bronze/ingest_log')
    """

    lakehouse: str
    name: str

    @classmethod
    def of(cls, config: SeglakeConfig) -> "Tables":
        """The layout for a config.

        Examples
        --------
        >>> config = SeglakeConfig.model_validate(
        ...     {"name": "users", "lakehouse": "/lake/", "entities": {"path": "e.csv", "id": "uid"}})
        >>> Tables.of(config)
        Tables(lakehouse='/lake', name='users')
        """
        return cls(config.lakehouse.rstrip("/"), config.name)

    @property
    def root(self) -> str:
        """``<lakehouse>/<name>``."""
        return f"{self.lakehouse}/{self.name}"

    def path(self, layer: str, table: str) -> str:
        """``<lakehouse>/<name>/<layer>/<table>``.

        Examples
        --------
        >>> Tables("s3a://bucket/lake", "users").path("gold", "profiles")
        's3a://bucket/lake/users/gold/profiles'
        """
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

    def bronze(self, table: str) -> str:
        """A bronze table: events, quarantine, ingest_log, ratings, users, items, ..."""
        return self.path("bronze", table)

    def silver(self, table: str) -> str:
        """A silver table: entities, rejected."""
        return self.path("silver", table)

    def gold(self, table: str) -> str:
        """A gold table: sweep, segments, profiles, runs, explanations, ..."""
        return self.path("gold", table)

    def models(self, run_id: str) -> str:
        """Folder of a run's fitted models and manifest.

        Examples
        --------
        >>> Tables("/lake", "users").models("r1")
        '/lake/users/models/r1'
        >>> Tables("/lake", "users").models("../r1")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        seglake.core.errors.SeglakeError: run id '../r1' must be 1-64 characters of letters, digits,
        '_', '.', '-'
        """
        return f"{self.root}/models/{check_run_id(run_id)}"

    def report(self, run_id: str) -> Path:
        """Where a run's report is written: a local path (reports are read by people, not Spark).

        >>> str(Tables("/tmp/lake", "users").report("r1"))
        '/tmp/lake/users/reports/r1/index.html'
        >>> str(Tables("file:///tmp/lake", "users").report("r1"))
        '/tmp/lake/users/reports/r1/index.html'
        """
        root = self.lakehouse
        if "://" in root or root.startswith(("dbfs:", "file:")):
            root = root.split(":", 1)[1].lstrip("/") if root.startswith("file:") else ""
            if not root:
                raise SeglakeError(f"lakehouse {self.lakehouse} is not a local folder; reports are "
                                   "written locally — run the report from a machine with the "
                                   "lakehouse mounted")
            root = "/" + root
        return Path(root) / self.name / "reports" / check_run_id(run_id) / "index.html"


def delta_exists(spark: SparkSession, path: str) -> bool:
    """True when ``path`` holds a Delta table.

    Examples
    --------
    >>> import tempfile
    >>> delta_exists(spark, tempfile.gettempdir())  # a folder, not a Delta table
    False
    """
    return DeltaTable.isDeltaTable(spark, path)


def read_delta(spark: SparkSession, path: str, produced_by: str) -> DataFrame:
    """Read a Delta table, or fail with one line saying which stage produces it.

    Examples
    --------
    >>> read_delta(spark, "/nonexistent/users/silver/entities", "features")
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: no Delta table at /nonexistent/users/silver/entities:
    run the 'features' stage first
    """
    if not delta_exists(spark, path):
        raise SeglakeError(f"no Delta table at {path}: run the '{produced_by}' stage first")
    return spark.read.format("delta").load(path)


def read_run_rows(spark: SparkSession, path: str, run_id: str, limit: int = 10_000):
    """One run's rows of a small run-keyed table (per k, segment, cluster ...) on the driver as
    pandas, at most ``limit`` of them; None when the table is absent or has no rows for the run.

    One Spark job, where :func:`read_run` followed by a collect is two (its check for rows, then
    the rows): the report and the tracking read a dozen such tables per run.

    Examples
    --------
    >>> import shutil, tempfile
    >>> path = tempfile.mkdtemp() + "/gold/sweep"
    >>> write_run(spark.createDataFrame([("r1", 2), ("r1", 3)], "run_id string, k int"), path, "r1")
    >>> sorted(read_run_rows(spark, path, "r1")["k"]), read_run_rows(spark, path, "r2")
    ([2, 3], None)
    >>> shutil.rmtree(path.removesuffix("/gold/sweep"))
    """
    if not delta_exists(spark, path):
        return None
    rows = spark.read.format("delta").load(path).where(F.col("run_id") == run_id).limit(limit).toPandas()
    return rows if len(rows) else None


def read_run(spark: SparkSession, path: str, run_id: str, produced_by: str | None = None) -> DataFrame | None:
    """One run's rows of a run-keyed table.

    With ``produced_by``, a missing table or a run without rows is a :class:`SeglakeError` naming
    the stage to run; without it (an optional input, e.g. for a report section) both give ``None``.

    Examples
    --------
    >>> read_run(spark, "/nonexistent/users/gold/clusters", "r1") is None
    True
    >>> read_run(spark, "/nonexistent/users/gold/clusters", "r1", "density")
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: no Delta table at /nonexistent/users/gold/clusters:
    run the 'density' stage first
    """
    if not delta_exists(spark, path):
        if produced_by is None:
            return None
        raise SeglakeError(f"no Delta table at {path}: run the '{produced_by}' stage first")
    rows = spark.read.format("delta").load(path).where(F.col("run_id") == run_id)
    if rows.limit(1).count():
        return rows
    if produced_by is None:
        return None
    raise SeglakeError(f"{path} has no rows for run {run_id}: run the '{produced_by}' stage first")


def read_version(spark: SparkSession, path: str, version: int) -> DataFrame:
    """A Delta table as of ``version`` (time travel), resolved now so a vacuumed version fails here."""
    frame = spark.read.format("delta").option("versionAsOf", version).load(path)
    frame.schema  # noqa: B018 — resolves the snapshot
    return frame


def latest_version(spark: SparkSession, path: str) -> int:
    """The table's current version number (to pin later reads to the same snapshot)."""
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def write_run(
    df: DataFrame, path: str, run_id: str, partition_by: tuple[str, ...] = ("run_id",)
) -> None:
    """Write ``df`` (whose ``run_id`` column is ``run_id`` everywhere) replacing that run's rows.

    The first write creates the table partitioned by ``partition_by``; later writes replace exactly
    the rows of this run in one atomic commit, leaving other runs untouched.

    Examples
    --------
    >>> import shutil, tempfile
    >>> path = tempfile.mkdtemp() + "/gold/sweep"
    >>> write_run(spark.createDataFrame([("r1", 2), ("r1", 3)], "run_id string, k int"), path, "r1")
    >>> write_run(spark.createDataFrame([("r1", 4)], "run_id string, k int"), path, "r1")  # a re-run
    >>> [row.k for row in read_run(spark, path, "r1").collect()]
    [4]
    >>> shutil.rmtree(path.removesuffix("/gold/sweep"))
    """
    check_run_id(run_id)
    # Always a replaceWhere, also for the write that creates the table (as in replace_rows): a
    # plain overwrite chosen after seeing no table replaced every run's rows when another run
    # created the table in between (two runs at once on one lakehouse lost one run's gold/sweep).
    writer = (df.write.format("delta").option("mergeSchema", "true").mode("overwrite")
              .option("replaceWhere", f"run_id = '{run_id}'").partitionBy(*partition_by))
    retry_conflicts(lambda: writer.save(path), path)


# Characters Delta refuses in column names unless the table uses column mapping.
DELTA_RESERVED = re.compile(r"[ ,;{}()\n\t=]")
COLUMN_MAPPING = {"delta.columnMapping.mode": "name", "delta.minReaderVersion": "2",
                  "delta.minWriterVersion": "5"}


def overwrite_table(frame: DataFrame, path: str, run_id: str) -> None:
    """Replace a whole (bronze or silver) table in one atomic commit: the current state, not a history.

    The schema follows the frame (the config may have changed); the commit's ``userMetadata`` names
    the run. Column names Delta only stores with column mapping (the seed's
    ``Creative_activity_(daily)``) switch it on, upgrading an existing table in place first. A
    concurrent run that overwrites first wrote from the same input, so writing again is safe.
    """
    writer = (frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
              .option("userMetadata", f"seglake run_id={run_id}"))
    if any(DELTA_RESERVED.search(name) for name in frame.columns):
        spark = frame.sparkSession
        existing = delta_exists(spark, path) and DeltaTable.forPath(spark, path).detail().first()
        if existing and "delta.columnMapping.mode" not in existing.properties:
            spark.sql(f"ALTER TABLE delta.`{path.replace('`', '``')}` SET TBLPROPERTIES ("
                      + ", ".join(f"'{k}' = '{v}'" for k, v in COLUMN_MAPPING.items()) + ")")
            committed()
        writer = writer.options(**COLUMN_MAPPING)
    retry_conflicts(lambda: writer.save(path), path)


def create_empty(frame: DataFrame, path: str) -> None:
    """Create the Delta table at ``path`` with ``frame``'s schema unless it exists (or another
    writer created it meanwhile: then its creation conflict is not an error).

    Examples
    --------
    >>> import shutil, tempfile
    >>> path = tempfile.mkdtemp() + "/bronze/ingest_log"
    >>> create_empty(spark.createDataFrame([], "file string, rows long"), path)
    >>> read_delta(spark, path, "ingest").count(), delta_exists(spark, path)
    (0, True)
    >>> shutil.rmtree(path.removesuffix("/bronze/ingest_log"))
    """
    spark = frame.sparkSession
    if delta_exists(spark, path):
        return
    try:
        DeltaTable.createIfNotExists(spark).location(path).addColumns(frame.schema).execute()
        committed()
    except Exception:
        # Another writer may be between creating the folder and its first commit (Delta then says
        # DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION): wait for that commit rather than fail.
        deadline = time.monotonic() + 60
        while not delta_exists(spark, path):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def replace_rows(frame: DataFrame, path: str, predicate: str) -> None:
    """Replace the rows matching ``predicate`` (SQL text) with ``frame``, in one commit.

    A ``replaceWhere`` reads the rows it replaces, so the later of two racing commits conflicts and
    is retried, giving the rows a lone writer would have; on a new table the same write creates it
    (two racing creators conflict on the protocol, and the loser retries). One commit either way.

    Examples
    --------
    >>> import shutil, tempfile
    >>> path = tempfile.mkdtemp() + "/bronze/events"
    >>> rows = spark.createDataFrame([("f1", 1), ("f1", 2)], "_ingest_file string, v int")
    >>> replace_rows(rows, path, "_ingest_file IN ('f1')")
    >>> replace_rows(rows.limit(1), path, "_ingest_file IN ('f1')")  # f1 again: replaced, not added
    >>> read_delta(spark, path, "ingest").count(), latest_version(spark, path)
    (1, 1)
    >>> shutil.rmtree(path.removesuffix("/bronze/events"))
    """
    writer = frame.write.format("delta")

    def write() -> None:
        writer.mode("overwrite").option("replaceWhere", predicate).save(path)

    retry_conflicts(write, path)


def upsert(frame: DataFrame, path: str, keys: list[str]) -> None:
    """MERGE ``frame`` into ``path`` on ``keys``: matched rows updated, new ones inserted."""
    spark = frame.sparkSession
    condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)

    def write() -> None:
        create_empty(frame, path)  # a MERGE reads the table: concurrent ones conflict and retry
        (DeltaTable.forPath(spark, path).alias("t").merge(frame.alias("s"), condition)
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())

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

Result = TypeVar("Result")


def is_conflict(err: BaseException) -> bool:
    """True for a lost Delta commit race, whether raised as delta-spark's Python exception or as
    the Java one: ``DataFrameWriter.save`` surfaces ``io.delta.exceptions.*`` (e.g. two writers
    creating one table: ``ProtocolChangedException``) as a plain ``Py4JJavaError``.

    Examples
    --------
    >>> is_conflict(ConcurrentAppendException("lost the race")), is_conflict(ValueError("bad value"))
    (True, False)
    """
    if isinstance(err, CONFLICTS):
        return True
    java = getattr(err, "java_exception", None)
    while java is not None:
        name = java.getClass().getName()
        if name.startswith("io.delta.exceptions.") and name.rsplit(".", 1)[-1] in _CONFLICT_NAMES:
            return True
        java = java.getCause()
    return False


def retry_conflicts(write: Callable[[], Result], path: str, attempts: int = CONFLICT_ATTEMPTS) -> Result:
    """Run an idempotent Delta write, again after a lost commit race, at most ``attempts`` times.

    Two runs writing one lakehouse at once (two run ids, or two ingests of the same new files) race
    for the same commit, or both try to create a table; the loser's write is keyed (by run id, by
    file) so repeating it gives the rows a lone writer would have. ``write`` must decide again
    whether the table exists: the winner may just have created it.

    Raises
    ------
    SeglakeError
        When every attempt lost a race: names the table and the last conflict.

    Examples
    --------
    A write that loses its first race, then commits:

    >>> attempts = []
    >>> def write():
    ...     attempts.append(1)
    ...     if len(attempts) == 1:
    ...         raise ConcurrentAppendException("another run committed first")
    ...     return "committed"
    >>> retry_conflicts(write, "/lake/users/gold/runs"), len(attempts)
    ('committed', 2)
    """
    for attempt in range(1, attempts):
        try:
            result = write()
            committed()
            return result
        except Exception as err:
            if not is_conflict(err):
                raise
            # Jittered backoff so that two losers do not collide again on the next attempt.
            time.sleep(random.uniform(0.5, 1.5) * attempt)
    try:
        result = write()
        committed()
        return result
    except Exception as err:
        if not is_conflict(err):
            raise
        cause = (str(err).strip().splitlines() or [""])[0][:300]
        raise SeglakeError(f"{path}: other writers kept committing to this table at the same time; "
                           f"gave up after {attempts} attempts ({type(err).__name__}: {cause})") from err


def sql_string(value: str) -> str:
    """A Spark SQL string literal for ``value`` (for Delta predicates that only take SQL text).

    Examples
    --------
    >>> print(sql_string("it's"))
    'it\\'s'
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


RUN_COLUMNS = (
    "run_id string, stage string, use_case string, config_hash string, rows_in long, rows_out long, "
    "kept_fraction double, chosen_k int, reason string, recorded_at timestamp, seconds double, "
    "spark_jobs long, spark_stages long, spark_tasks long, delta_commits long"
)
_RUN_NAMES = [c.split()[0] for c in RUN_COLUMNS.split(", ")]
_COST_NAMES = ("seconds", "spark_jobs", "spark_stages", "spark_tasks", "delta_commits")


def _write_runs(spark: SparkSession, config: SeglakeConfig, run_id: str, update) -> None:
    """Read this run's few ``gold/runs`` rows as dicts keyed by stage, let ``update`` change them,
    and write them back in one commit (columns a table written by an older seglake lacks are null)."""
    path = Tables.of(config).gold("runs")
    rows: dict[str, dict] = {}
    existing = read_run(spark, path, run_id)
    if existing is not None:
        present = set(existing.columns)
        for row in existing.collect():  # one row per stage
            rows[row["stage"]] = {c: (row[c] if c in present else None) for c in _RUN_NAMES}
    update(rows)
    values = [tuple(row[c] for c in _RUN_NAMES) for row in rows.values()]
    write_run(spark.createDataFrame(values, RUN_COLUMNS), path, run_id)


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
    passing the filter), ``chosen_k`` and ``reason`` (the one-line choice of k), ``recorded_at``,
    and what the stage cost (``seconds``, ``spark_jobs``, ``spark_stages``, ``spark_tasks``,
    ``delta_commits``: filled by the runner, :func:`record_costs`). A column that does not apply to a
    stage is null.

    ``write_run`` replaces a whole run, so the run's rows of other stages (a few, one per stage)
    are read back and written again with this one: re-running a stage replaces only its own row.
    """
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    fields = {"run_id": run_id, "stage": stage, "use_case": config.name,
              "config_hash": config.config_hash, "rows_in": int(rows_in), "rows_out": int(rows_out),
              "kept_fraction": None if kept_fraction is None else float(kept_fraction),
              "chosen_k": None if chosen_k is None else int(chosen_k), "reason": reason,
              "recorded_at": now}

    def update(rows: dict[str, dict]) -> None:
        costs = {c: rows.get(stage, {}).get(c) for c in _COST_NAMES}
        rows[stage] = {**fields, **costs}

    _write_runs(spark, config, run_id, update)


def record_costs(spark: SparkSession, config: SeglakeConfig, run_id: str, results: list) -> None:
    """Add each finished stage's seconds, Spark jobs, stages, tasks and Delta commits to its
    ``gold/runs`` row (creating the row, with rows in and out, for a stage that records none itself),
    all in one commit. ``results`` are :class:`seglake.core.stages.StageResult` with a ``cost``.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from seglake.core.costs import Cost
    >>> from seglake.core.stages import StageResult
    >>> config = SeglakeConfig.model_validate({"name": "demo", "lakehouse": tempfile.mkdtemp(),
    ...     "source_file": "demo.yaml", "entities": {"path": "e.csv", "id": "uid"}})
    >>> record_run(spark, config, "r1", "sweep", 100, 8, 0.9, 4, "k=4: ...")
    >>> result = StageResult("sweep", 100, 8, 3.5, cost=Cost(jobs=40, stages=60, tasks=70, commits=3))
    >>> record_costs(spark, config, "r1", [result, StageResult("report", 0, 12, 1.0, cost=Cost())])
    >>> rows = read_run(spark, Tables.of(config).gold("runs"), "r1").orderBy("stage").collect()
    >>> [(r.stage, r.chosen_k, r.spark_stages, r.delta_commits) for r in rows]
    [('report', None, None, 0), ('sweep', 4, 60, 3)]
    >>> shutil.rmtree(config.lakehouse)
    """
    now = datetime.now(timezone.utc).replace(tzinfo=None)

    def update(rows: dict[str, dict]) -> None:
        for result in results:
            cost = result.cost
            row = rows.get(result.stage) or {
                "run_id": run_id, "stage": result.stage, "use_case": config.name,
                "config_hash": config.config_hash, "rows_in": int(result.rows_in),
                "rows_out": int(result.rows_out), "kept_fraction": None, "chosen_k": None,
                "reason": None, "recorded_at": now}
            row.update(seconds=float(result.seconds), spark_jobs=cost.jobs, spark_stages=cost.stages,
                       spark_tasks=cost.tasks, delta_commits=int(cost.commits))
            rows[result.stage] = row

    if results:
        _write_runs(spark, config, run_id, update)


CORRUPT = "_corrupt_record"


def read_source(
    spark: SparkSession,
    path: str,
    fmt: str,
    options: dict[str, str],
    key: str,
    *,
    as_text: bool = False,
    corrupt: bool = False,
) -> DataFrame:
    """Read a user's input (CSV, JSON lines, Parquet or Delta; file, folder or glob) as a DataFrame.

    Parameters
    ----------
    spark : SparkSession
    path, fmt, options :
        Where, in which format, and the Spark reader options (already merged with the caller's
        defaults, e.g. ``header``).
    key : str
        The config key that named the input (``entities.path``), for the one-line error.
    as_text : bool
        Every column as a string, so that a value of the wrong type becomes a quarantined row with
        a reason instead of a failed job or a silent null (CSV/JSON are read with a text schema;
        typed formats are cast).
    corrupt : bool
        Add ``_corrupt_record``: for CSV/JSON, a line Spark cannot split into the header's columns
        is kept whole there (``PERMISSIVE`` mode); for typed formats it is null.

    Raises
    ------
    SeglakeError
        The input cannot be read; the message names ``key``, the path and Spark's first line.

    Examples
    --------
    >>> import pathlib, shutil, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "e.csv").write_text("uid,plays\\na,3\\nb,3,extra\\n")
    >>> table = read_source(spark, str(folder / "e.csv"), "csv", {"header": "true"}, "entities.path",
    ...                     as_text=True, corrupt=True)
    >>> [tuple(row) for row in table.collect()]  # the line with a third field is kept whole
    [('a', '3', None), ('b', '3', 'b,3,extra')]
    >>> shutil.rmtree(folder)
    """
    try:
        if fmt in ("csv", "json") and (as_text or corrupt):
            reader = spark.read.options(**options)
            header = (reader.csv(path) if fmt == "csv" else reader.json(path)).columns
            header = [c for c in header if c != CORRUPT]
            fields = [T.StructField(c, T.StringType()) for c in header]
            if corrupt:
                fields.append(T.StructField(CORRUPT, T.StringType()))
            reader = spark.read.schema(T.StructType(fields)).options(**options).option("mode", "PERMISSIVE")
            if corrupt:
                reader = reader.option("columnNameOfCorruptRecord", CORRUPT)
            return reader.csv(path) if fmt == "csv" else reader.json(path)
        frame = spark.read.format(fmt).options(**options).load(path)
        if as_text:
            frame = frame.select(*[frame[c].cast("string").alias(c) for c in frame.columns])
        if corrupt:
            frame = frame.withColumn(CORRUPT, F.lit(None).cast("string"))
        return frame
    except Exception as err:  # Spark reader errors are Java stack traces: keep the first line
        raise SeglakeError(f"{key}: could not read {path} as {fmt}: {first_line(err)}") from err
