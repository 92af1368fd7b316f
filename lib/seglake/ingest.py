"""Ingest raw interaction logs into ``bronze/events``; every rejected row goes to ``bronze/quarantine``.

Each row is read as text, typed with ``try_cast`` and checked against the configured rules; a row
with any problem keeps its raw content and gets a reason (``malformed_line``, ``bad_type:<col>``,
``null:<col>``, ``negative:<col>``, ``not_allowed:<col>``, ``duplicate_row``). Input rows always
equal bronze rows plus quarantined rows, and the check is made against the written tables.

Re-ingesting a file that is already in ``bronze/ingest_log`` with the same size and modification time
adds nothing; a changed file replaces its own earlier rows (``replaceWhere`` on ``_ingest_file``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.config import EventsSource, SeglakeConfig, require_columns
from seglake.errors import SeglakeError
from seglake.stages import StageResult
from seglake.tables import Tables, delta_exists, retry_conflicts, sql_string

CORRUPT = "_corrupt_record"
SPARK_TYPES = {
    "long": T.LongType(), "int": T.IntegerType(), "double": T.DoubleType(),
    "string": T.StringType(), "boolean": T.BooleanType(), "timestamp": T.TimestampType(),
}


@dataclass(frozen=True)
class SourceFile:
    """One raw file as the file system lists it."""

    path: str
    size: int
    modified: int


def list_files(spark: SparkSession, pattern: str) -> list[SourceFile]:
    """Files under a path, folder or glob (Hadoop file systems, so URIs work on clusters).

    Hidden and bookkeeping files (names starting with ``.`` or ``_``) are skipped.
    """
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    glob = jvm.org.apache.hadoop.fs.Path(pattern)
    fs = glob.getFileSystem(hadoop_conf)
    statuses = fs.globStatus(glob) or []
    found: list[SourceFile] = []
    for status in statuses:
        if status.isDirectory():
            files = fs.listFiles(status.getPath(), True)
            while files.hasNext():
                found.append(_source_file(files.next()))
        else:
            found.append(_source_file(status))
    return sorted(
        (f for f in found if not f.path.rsplit("/", 1)[-1].startswith((".", "_"))),
        key=lambda f: f.path,
    )


def _source_file(status) -> SourceFile:
    return SourceFile(str(status.getPath().toString()), int(status.getLen()),
                      int(status.getModificationTime()))


def read_raw(spark: SparkSession, paths: list[str], source: EventsSource) -> DataFrame:
    """Read raw files with every configured column as text, plus ``_ingest_file`` and ``_raw``.

    Text first so that a wrong type becomes a quarantined row with a reason instead of a failed job
    or a silent null.
    """
    names = list(source.columns)
    if source.format in ("csv", "json"):
        schema = T.StructType(
            [T.StructField(c, T.StringType()) for c in names] + [T.StructField(CORRUPT, T.StringType())]
        )
        reader = spark.read.schema(schema).option("mode", "PERMISSIVE")
        reader = reader.option("columnNameOfCorruptRecord", CORRUPT)
        if source.format == "csv":
            # Check each file's header against the configured names: columns are then taken by
            # name, and a file written with another delimiter or encoding fails naming the file
            # instead of landing every row in the wrong column or in quarantine.
            reader = reader.option("header", "true").option("enforceSchema", "false")
        frame = reader.options(**source.options).format(source.format).load(paths)
    else:
        frame = spark.read.options(**source.options).parquet(*paths)
        require_columns(frame.columns, names, "events.columns", f"the Parquet files under {source.path}")
        frame = frame.select(*[F.col(c).cast("string").alias(c) for c in names])
        frame = frame.withColumn(CORRUPT, F.lit(None).cast("string"))
    raw_text = _raw_text(frame, names, source.format)
    return frame.select(
        *names, CORRUPT, raw_text.alias("_raw"), F.col("_metadata.file_path").alias("_ingest_file")
    )


def _raw_text(frame: DataFrame, names: list[str], fmt: str) -> Column:
    if fmt == "csv":
        rebuilt = F.concat_ws(",", *[F.coalesce(F.col(c), F.lit("")) for c in names])
    else:
        rebuilt = F.to_json(F.struct(*names))
    return F.coalesce(F.col(CORRUPT), rebuilt)


def classify_events(raw: DataFrame, source: EventsSource) -> DataFrame:
    """Type raw rows and attach ``_reason`` (null for a valid row).

    Parameters
    ----------
    raw : DataFrame
        Output of :func:`read_raw`: text columns, ``_corrupt_record``, ``_raw``, ``_ingest_file``.
    source : EventsSource
        Column types and value rules.

    Returns
    -------
    DataFrame
        Typed columns, ``_raw``, ``_ingest_file`` and ``_reason``.
    """
    rules = source.rules
    typed = {c: F.col(c).try_cast(SPARK_TYPES[t]) for c, t in source.columns.items()}
    checks: list[Column] = []
    for name, value in typed.items():
        present = F.col(name).isNotNull() & (F.trim(F.col(name)) != "")
        checks.append(F.when(present & value.isNull(), F.lit(f"bad_type:{name}")))
    checks += [F.when(F.col(c).isNull() | (F.trim(F.col(c)) == ""), F.lit(f"null:{c}")) for c in rules.not_null]
    checks += [F.when(typed[c] < 0, F.lit(f"negative:{c}")) for c in rules.non_negative]
    checks += [
        F.when(~typed[c].isin(allowed), F.lit(f"not_allowed:{c}")) for c, allowed in rules.allowed_values.items()
    ]
    reason = F.when(F.col(CORRUPT).isNotNull(), F.lit("malformed_line")).otherwise(
        F.nullif(F.concat_ws(";", *checks), F.lit(""))
    )
    classified = raw.select(
        *[value.alias(name) for name, value in typed.items()],
        "_raw", "_ingest_file", reason.alias("_reason"), F.monotonically_increasing_id().alias("_row"),
    )
    if rules.dedupe:
        # The first copy (by file, then position) stays; every later exact copy is quarantined.
        names = list(source.columns)
        order = Window.partitionBy(*names, F.col("_reason").isNull()).orderBy("_ingest_file", "_row")
        copy_number = F.row_number().over(order)
        classified = classified.withColumn(
            "_reason",
            F.when(F.col("_reason").isNull() & (copy_number > 1), F.lit("duplicate_row")).otherwise(
                F.col("_reason")
            ),
        )
    return classified.drop("_row")


@dataclass(frozen=True)
class Reconciliation:
    """Counts of one ingest: input rows must equal bronze rows plus quarantined rows."""

    files: int
    skipped_files: int
    input_rows: int
    bronze_rows: int
    quarantined_rows: int
    reasons: dict[str, int]

    @property
    def balanced(self) -> bool:
        return self.input_rows == self.bronze_rows + self.quarantined_rows

    def line(self) -> str:
        """One printable line."""
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:6])
        verdict = "reconciled" if self.balanced else "DOES NOT RECONCILE"
        return (
            f"input {self.input_rows:,} = bronze {self.bronze_rows:,} + quarantine "
            f"{self.quarantined_rows:,} ({verdict}); files {self.files} new, {self.skipped_files} "
            f"already ingested" + (f"; reasons: {top}" if top else "")
        )


def _already_ingested(spark: SparkSession, tables: Tables) -> set[tuple[str, int, int]]:
    if not delta_exists(spark, tables.ingest_log):
        return set()
    rows = spark.read.format("delta").load(tables.ingest_log).select("file", "size", "modified").collect()
    return {(r.file, r.size, r.modified) for r in rows}  # one row per file: small by construction


def _create_empty(frame: DataFrame, path: str) -> None:
    """Create the Delta table at ``path`` with ``frame``'s schema unless it exists (or another
    writer created it meanwhile: then its creation conflict is not an error)."""
    spark = frame.sparkSession
    if delta_exists(spark, path):
        return
    try:
        DeltaTable.createIfNotExists(spark).location(path).addColumns(frame.schema).execute()
    except Exception:
        if not delta_exists(spark, path):
            raise


def _write_replacing_files(frame: DataFrame, path: str, files: list[str]) -> None:
    writer = frame.write.format("delta")

    def write() -> None:
        # Keyed by file: a concurrent ingest of the same files that commits first is replaced by
        # the same rows, never duplicated. The table is created empty first because two blind
        # appends into an empty folder can both land; a replaceWhere over files reads them, so the
        # later of two commits conflicts and is retried.
        _create_empty(frame, path)
        predicate = f"_ingest_file IN ({', '.join(sql_string(f) for f in files)})"
        writer.mode("overwrite").option("replaceWhere", predicate).save(path)

    retry_conflicts(write, path)


def ingest(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Ingest new raw files of ``config.events`` into bronze and quarantine, and reconcile.

    Returns
    -------
    StageResult
        ``details['reconciliation']`` is a :class:`Reconciliation`.

    Raises
    ------
    SeglakeError
        Missing path, no files, files without rows, or a schema mismatch; or counts that do not
        reconcile.
    """
    started = time.monotonic()
    source = config.events
    if source is None:
        raise SeglakeError(f"{config.source_file}: the ingest stage needs an 'events' source")
    tables = Tables.of(config)
    listed = list_files(spark, source.path)
    if not listed:
        raise SeglakeError(f"events.path: no files found at {source.path}")
    seen = _already_ingested(spark, tables)
    new = [f for f in listed if (f.path, f.size, f.modified) not in seen]
    skipped = len(listed) - len(new)
    if not new:
        report = Reconciliation(0, skipped, 0, 0, 0, {})
        return StageResult("ingest", 0, 0, time.monotonic() - started,
                           {"reconciliation": report}, "nothing new: " + report.line())
    paths = [f.path for f in new]
    try:
        classified = classify_events(read_raw(spark, paths, source), source)
        classified = classified.withColumn("_ingest_ts", F.current_timestamp())
        classified = classified.withColumn("_ingest_run", F.lit(run_id)).persist(StorageLevel.MEMORY_AND_DISK)
        per_file = (
            classified.groupBy("_ingest_file")
            .agg(F.count("*").alias("input_rows"), F.count("_reason").alias("quarantined_rows"))
            .collect()
        )
    except SeglakeError:
        raise
    except Exception as err:  # Spark's reader errors are Java stack traces: keep only the cause
        raise SeglakeError(f"events.path: could not read {source.path} as {source.format}: "
                           f"{read_failure(err)}") from err
    input_rows = sum(r.input_rows for r in per_file)
    if input_rows == 0:
        classified.unpersist()
        names = ", ".join(f.path.rsplit("/", 1)[-1] for f in new[:5]) + (", ..." if len(new) > 5 else "")
        raise SeglakeError(f"events.path: the {len(new)} file(s) at {source.path} hold no rows ({names})")
    names = list(source.columns)
    valid = classified.where(F.col("_reason").isNull()).select(*names, "_ingest_file", "_ingest_ts", "_ingest_run")
    rejected = classified.where(F.col("_reason").isNotNull()).select(
        F.col("_raw").alias("raw"), F.col("_reason").alias("reason"), "_ingest_file", "_ingest_ts", "_ingest_run"
    )
    file_uris = sorted({r._ingest_file for r in per_file} | set(paths))
    _write_replacing_files(rejected, tables.quarantine, file_uris)
    _write_replacing_files(valid, tables.events, file_uris)
    classified.unpersist()

    in_files = F.col("_ingest_file").isin(file_uris)
    bronze_rows = spark.read.format("delta").load(tables.events).where(in_files).count()
    quarantine = spark.read.format("delta").load(tables.quarantine).where(in_files)
    reasons = {
        r.kind: r["count"]
        for r in quarantine.select(F.split("reason", ";")[0].alias("kind")).groupBy("kind").count().collect()
    }
    report = Reconciliation(len(new), skipped, input_rows, bronze_rows, sum(reasons.values()), reasons)
    if not report.balanced:
        raise SeglakeError(f"ingest of {source.path} does not reconcile: {report.line()}")
    _log_files(spark, tables, new, per_file, run_id)
    return StageResult("ingest", input_rows, bronze_rows, time.monotonic() - started,
                       {"reconciliation": report}, report.line())


def _log_files(spark: SparkSession, tables: Tables, new: list[SourceFile], per_file, run_id: str) -> None:
    counts = {r._ingest_file: (r.input_rows, r.quarantined_rows) for r in per_file}
    rows = []
    for f in new:
        input_rows, quarantined = counts.get(f.path, (0, 0))
        rows.append((f.path, f.size, f.modified, run_id, input_rows, input_rows - quarantined, quarantined))
    log = spark.createDataFrame(
        rows, "file string, size long, modified long, run_id string, input_rows long, "
              "bronze_rows long, quarantined_rows long",
    ).withColumn("ingested_at", F.current_timestamp())

    def write() -> None:
        _create_empty(log, tables.ingest_log)  # a MERGE reads the log: concurrent ones conflict
        (
            DeltaTable.forPath(spark, tables.ingest_log).alias("log")
            .merge(log.alias("new"), "log.file = new.file")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    retry_conflicts(write, tables.ingest_log)


READ_FILE = re.compile(r"Encountered error while reading file (\S+?)\.?\s")
CAUSE = re.compile(r"^Caused by: [\w.$]+: (.*)$")


def read_failure(err: Exception) -> str:
    """One line from a failed read of raw files: the file Spark names and the innermost cause.

    Spark wraps a reader's error in job, stage and task exceptions, each with its Java frames; what a
    user needs is the file (``FAILED_READ_FILE``) and the last ``Caused by`` message.
    """
    text = str(err)
    lines = text.splitlines()
    causes = [i for i, line in enumerate(lines) if CAUSE.match(line)]
    if not causes:
        return _first_line(err)
    parts = [CAUSE.match(lines[causes[-1]]).group(1).strip()]
    for line in lines[causes[-1] + 1:]:
        if line.startswith(("\tat ", "\t...", "Caused by")):
            break
        if line.strip() and not line.startswith("CSV file:"):
            parts.append(line.strip())
    cause = " ".join(parts).rstrip(":")
    if "CSV header" in cause:
        cause += " (check events.columns, and sep and encoding in events.options)"
    found = READ_FILE.search(text)
    if found and found.group(1) not in cause:
        cause = f"{found.group(1)}: {cause}"
    # A header read in the wrong encoding quotes NULs and control bytes: keep the line printable.
    return re.sub(r"[\x00-\x1f\x7f]", "", cause)[:600]


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:400] if text else type(err).__name__
