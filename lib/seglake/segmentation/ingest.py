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

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import EventsSource, SeglakeConfig, require_columns
from seglake.core.errors import SeglakeError, first_line
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, read_delta, delta_exists, replace_rows, sql_string

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
    """Read raw files: every configured column, ``_corrupt_record``, ``_ingest_file`` and ``_row``.

    CSV and JSON columns are read as text, so that a wrong type becomes a quarantined row with a
    reason instead of a failed job or a silent null. Parquet columns keep their own type where it is
    already the configured one (typing 100M values by printing and re-parsing them would cost more
    than the rest of ingest); any other Parquet column is read as text and typed like CSV.
    ``_row`` numbers rows within the scan (the same numbers each time the same files are scanned),
    so that "the first copy" of a duplicated row is well defined.
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
        types = {f.name: f.dataType for f in frame.schema.fields}
        frame = frame.select(*[
            F.col(c) if types[c] == SPARK_TYPES[t] else F.col(c).cast("string").alias(c)
            for c, t in source.columns.items()
        ])
        frame = frame.withColumn(CORRUPT, F.lit(None).cast("string"))
    return frame.select(*names, CORRUPT, F.col("_metadata.file_path").alias("_ingest_file"),
                        F.monotonically_increasing_id().alias("_row"))


def _raw_text(frame: DataFrame, names: list[str], fmt: str) -> Column:
    """The input row as text: the malformed line itself, or the row rebuilt from its columns."""
    if fmt == "csv":
        rebuilt = F.concat_ws(",", *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in names])
    else:
        rebuilt = F.to_json(F.struct(*names))
    return F.coalesce(F.col(CORRUPT), rebuilt)


def classify_events(raw: DataFrame, source: EventsSource) -> DataFrame:
    """Type raw rows and attach ``_reason`` (null for a valid row).

    Parameters
    ----------
    raw : DataFrame
        Output of :func:`read_raw`: the configured columns, ``_corrupt_record``, ``_ingest_file``
        and ``_row``.
    source : EventsSource
        Column types and value rules.

    Returns
    -------
    DataFrame
        Typed columns, ``_raw``, ``_ingest_file`` and ``_reason``. ``_raw`` (the input row as text) is
        only filled where ``_reason`` is set: rendering every valid row as text would cost more
        than typing it. With ``rules.dedupe`` two small Spark jobs run here to find the duplicates.
    """
    rules = source.rules
    kinds = {f.name: f.dataType for f in raw.schema.fields}
    text = {c: isinstance(kinds[c], T.StringType) for c in source.columns}
    typed = {c: F.col(c).try_cast(SPARK_TYPES[t]) for c, t in source.columns.items()}

    def present(name: str) -> Column:
        return F.col(name).isNotNull() & (F.trim(F.col(name)) != "") if text[name] else F.col(name).isNotNull()

    checks: list[Column] = [F.when(present(name) & value.isNull(), F.lit(f"bad_type:{name}"))
                            for name, value in typed.items() if text[name]]
    checks += [F.when(~present(c), F.lit(f"null:{c}")) for c in rules.not_null]
    checks += [F.when(typed[c] < 0, F.lit(f"negative:{c}")) for c in rules.non_negative]
    checks += [
        F.when(~typed[c].isin(allowed), F.lit(f"not_allowed:{c}")) for c, allowed in rules.allowed_values.items()
    ]
    reason = F.when(F.col(CORRUPT).isNotNull(), F.lit("malformed_line")).otherwise(
        F.nullif(F.concat_ws(";", *checks), F.lit(""))
    )
    names = list(source.columns)
    checked = raw.withColumn("_reason", reason)
    if rules.dedupe:
        checked = _mark_duplicates(checked, names)
    raw_text = _raw_text(checked, names, source.format)
    return checked.select(
        *[value.alias(name) for name, value in typed.items()],
        F.when(F.col("_reason").isNotNull(), raw_text).alias("_raw"), "_ingest_file", "_reason",
    )


# Largest number of repeated row values (and of later copies) that are broadcast to mark duplicates
# where each row is; past it one window over every row does the same (a sort of the whole batch).
BROADCAST_DUPLICATES = 2_000_000


def _mark_duplicates(checked: DataFrame, names: list[str]) -> DataFrame:
    """Quarantine every exact copy of a valid row but the first (by file, then position).

    Duplicates are rare, so the batch is not sorted with its payload. (1) One hash aggregation over
    two hashes of each valid row's values (96 bits) finds the values seen more than once. (2) Only
    rows carrying those hashes are compared by their values, in a window ordered by file and row
    number; a hash collision is therefore harmless. The later copies' row numbers are
    broadcast, so (3) every row is checked where it is. When the repeated values are too many to
    broadcast, a window over every valid row does the same.
    """
    values = [F.col(n) for n in names]
    hashed = checked.where(F.col("_reason").isNull()).select(
        "*", F.xxhash64(*values).alias("_h1"), F.hash(*values).alias("_h2"))
    repeated = (hashed.groupBy("_h1", "_h2").count().where(F.col("count") > 1).select("_h1", "_h2")
                .localCheckpoint(eager=True))
    repeats = repeated.count()
    if repeats == 0:
        return checked
    copies = None
    if repeats <= BROADCAST_DUPLICATES:
        first = Window.partitionBy(*names).orderBy("_ingest_file", "_row")
        copies = (hashed.join(F.broadcast(repeated), ["_h1", "_h2"], "left_semi")
                  .withColumn("_copy_number", F.row_number().over(first)).where(F.col("_copy_number") > 1)
                  .select("_row", F.lit(True).alias("_copy")).localCheckpoint(eager=True))
        if copies.count() > BROADCAST_DUPLICATES:
            copies = None
    if copies is None:  # too many to broadcast: one window over every row
        is_copy = F.col("_reason").isNull() & (F.row_number().over(
            Window.partitionBy(*names, F.col("_reason").isNull()).orderBy("_ingest_file", "_row")) > 1)
        return checked.withColumn("_reason", F.when(is_copy, F.lit("duplicate_row")).otherwise(F.col("_reason")))
    marked = checked.join(F.broadcast(copies), "_row", "left")  # _row is unique within the scan
    reason = F.when(F.col("_reason").isNull() & F.col("_copy"), F.lit("duplicate_row")).otherwise(F.col("_reason"))
    return marked.withColumn("_reason", reason).drop("_copy")


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
    rows = read_delta(spark, tables.ingest_log, "ingest").select("file", "size", "modified").collect()
    return {(r.file, r.size, r.modified) for r in rows}  # one row per file: small by construction


def _write_replacing_files(frame: DataFrame, path: str, files: list[str]) -> None:
    # Keyed by file: a concurrent ingest of the same files that commits first is replaced by the
    # same rows, never duplicated.
    replace_rows(frame, path, f"_ingest_file IN ({', '.join(sql_string(f) for f in files)})")


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
    names = list(source.columns)
    try:
        raw = read_raw(spark, paths, source)
        # Counted from the files alone, so that the check against what lands in the two tables
        # below is independent of the classification (a Parquet count reads only the footers).
        per_file = {r._ingest_file: r["count"] for r in raw.groupBy("_ingest_file").count().collect()}
        input_rows = sum(per_file.values())
        if input_rows == 0:
            listed_names = ", ".join(f.path.rsplit("/", 1)[-1] for f in new[:5]) + (", ..." if len(new) > 5 else "")
            raise SeglakeError(f"events.path: the {len(new)} file(s) at {source.path} hold no rows ({listed_names})")
        classified = classify_events(raw, source)
        classified = classified.withColumn("_ingest_ts", F.current_timestamp()).withColumn("_ingest_run", F.lit(run_id))
        valid = classified.where(F.col("_reason").isNull()).select(*names, "_ingest_file", "_ingest_ts", "_ingest_run")
        rejected = classified.where(F.col("_reason").isNotNull()).select(
            F.col("_raw").alias("raw"), F.col("_reason").alias("reason"), "_ingest_file", "_ingest_ts", "_ingest_run"
        )
        # Two passes over the files (rejected rows are few, so the first is cheap) instead of one
        # pass whose every row, with its text, is cached for the second.
        file_uris = sorted(set(per_file) | set(paths))
        _write_replacing_files(rejected, tables.quarantine, file_uris)
        _write_replacing_files(valid, tables.events, file_uris)
    except SeglakeError:
        raise
    except Exception as err:  # Spark's reader errors are Java stack traces: keep only the cause
        raise SeglakeError(f"events.path: could not read {source.path} as {source.format}: "
                           f"{read_failure(err)}") from err

    in_files = F.col("_ingest_file").isin(file_uris)
    bronze = {r._ingest_file: r["count"] for r in read_delta(spark, tables.events, "ingest")
              .where(in_files).groupBy("_ingest_file").count().collect()}
    quarantine = read_delta(spark, tables.quarantine, "ingest").where(in_files)
    reasons = {
        r.kind: r["count"]
        for r in quarantine.select(F.split("reason", ";")[0].alias("kind")).groupBy("kind").count().collect()
    }
    report = Reconciliation(len(new), skipped, input_rows, sum(bronze.values()), sum(reasons.values()), reasons)
    if not report.balanced:
        raise SeglakeError(f"ingest of {source.path} does not reconcile: {report.line()}")
    _log_files(spark, tables, new, per_file, bronze, run_id)
    return StageResult("ingest", input_rows, report.bronze_rows, time.monotonic() - started,
                       {"reconciliation": report}, report.line())


def _log_files(spark: SparkSession, tables: Tables, new: list[SourceFile], per_file: dict[str, int],
               bronze: dict[str, int], run_id: str) -> None:
    rows = []
    for f in new:
        input_rows, kept = per_file.get(f.path, 0), bronze.get(f.path, 0)
        rows.append((f.path, f.size, f.modified, run_id, input_rows, kept, input_rows - kept))
    log = spark.createDataFrame(
        rows, "file string, size long, modified long, run_id string, input_rows long, "
              "bronze_rows long, quarantined_rows long",
    ).withColumn("ingested_at", F.current_timestamp())

    # Keyed by file, like bronze: a file ingested again (it changed) replaces its row, in one commit.
    replace_rows(log, tables.ingest_log, f"file IN ({', '.join(sql_string(f.path) for f in new)})")


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
        return first_line(err)
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
