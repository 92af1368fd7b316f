"""Ingest raw interaction logs into ``bronze/events``; every rejected row goes to ``bronze/quarantine``.

Each row is read as text (:mod:`seglake.segmentation.raw_files`, any layout), typed with
``try_cast`` (a timestamp with its ``events.timestamp_format``) and checked against the configured
rules; a row with any problem keeps its raw content and gets a reason (``malformed_line``,
``bad_type:<col>``, ``null:<col>``, ``negative:<col>``, ``not_allowed:<col>``,
``duplicate_key:<key>``, ``duplicate_row``). Input rows always equal bronze rows plus quarantined
rows, and the check is made against the written tables. Exact duplicate rows that no dedupe
applies to are kept and counted in the stage's line.

Re-ingesting a file that is already in ``bronze/ingest_log`` with the same size and modification time
adds nothing; a changed file replaces its own earlier rows (``replaceWhere`` on ``_ingest_file``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import EventsSource, SeglakeConfig
from seglake.core.errors import SeglakeError, first_line
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, delta_exists, read_delta, replace_rows, sql_string

# Also imported from here by scoring, which reads raw files exactly as ingest does.
from seglake.segmentation.raw_files import (
    CORRUPT, LINE, SPARK_TYPES, SourceFile, list_files, read_failure, read_raw,
)


def _raw_text(frame: DataFrame, names: list[str], source: EventsSource) -> Column:
    """The input row as text: the line itself where it was kept, or the row rebuilt from its columns."""
    if LINE in frame.columns:
        return F.col(LINE)
    if source.format == "csv":
        rebuilt = F.concat_ws(source.separator, *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in names])
    else:
        rebuilt = F.to_json(F.struct(*names))
    return F.coalesce(F.col(CORRUPT), rebuilt)


def typed_value(name: str, kind: str, pattern: str | None = None) -> Column:
    """A text column as its configured type, null where it does not parse.

    A ``timestamp`` with a pattern (``events.timestamp_format``) is parsed with it; without one,
    Spark's cast reads ISO forms (``2023-12-01``, ``2023-12-01 10:00:00``, with or without a zone).

    Examples
    --------
    >>> days = spark.createDataFrame([("20231201",), ("2023-12-01",), ("20231301",)], "day string")
    >>> [r.t for r in days.select(typed_value("day", "timestamp", "yyyyMMdd").alias("t")).collect()]
    [datetime.datetime(2023, 12, 1, 0, 0), None, None]
    """
    if kind == "timestamp" and pattern is not None:
        return F.try_to_timestamp(F.col(name), F.lit(pattern))
    return F.col(name).try_cast(SPARK_TYPES[kind])


def check_timestamp_formats(spark: SparkSession, source: EventsSource) -> None:
    """Fail naming the key when a ``timestamp_format`` is not a Spark datetime pattern.

    Spark rejects a bad pattern only when a row is parsed, deep in a job; one row here says which
    column's pattern is at fault before anything is read.
    """
    for name, pattern in source.timestamp_format.items():
        try:
            spark.range(1).select(F.try_to_timestamp(F.lit("2000-01-01"), F.lit(pattern))).collect()
        except PySparkException as err:
            raise SeglakeError(f"events.timestamp_format.{name}: '{pattern}' is not a Spark datetime "
                               f"pattern: {first_line(err)}") from None


def classify_events(raw: DataFrame, source: EventsSource) -> DataFrame:
    """Type raw rows and attach ``_reason`` (null for a valid row).

    Parameters
    ----------
    raw : DataFrame
        Output of :func:`read_raw`: the configured columns, ``_corrupt_record``, ``_ingest_file``
        and ``_row`` (and ``_line`` for a log split on a delimiter pattern).
    source : EventsSource
        Column types and value rules.

    Returns
    -------
    DataFrame
        Typed columns, ``_raw``, ``_ingest_file`` and ``_reason``. ``_raw`` (the input row as text) is
        only filled where ``_reason`` is set: rendering every valid row as text would cost more
        than typing it. When :attr:`EventsSource.dedupe_columns` names columns (``events.key``, or
        every column with ``rules.dedupe: true``), two small Spark jobs run here to find the
        duplicates: every copy but the first is ``duplicate_key:<key>`` / ``duplicate_row``.
    """
    rules = source.rules
    check_timestamp_formats(raw.sparkSession, source)
    kinds = {f.name: f.dataType for f in raw.schema.fields}
    text = {c: isinstance(kinds[c], T.StringType) for c in source.columns}
    typed = {c: typed_value(c, t, source.timestamp_format.get(c)) if text[c] else F.col(c)
             for c, t in source.columns.items()}

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
    if source.dedupe_columns:
        duplicate = f"duplicate_key:{source.key}" if source.key else "duplicate_row"
        checked = _mark_duplicates(checked, source.dedupe_columns, duplicate)
    raw_text = _raw_text(checked, names, source)
    return checked.select(
        *[value.alias(name) for name, value in typed.items()],
        F.when(F.col("_reason").isNotNull(), raw_text).alias("_raw"), "_ingest_file", "_reason",
    )


# Largest number of repeated row values (and of later copies) that are broadcast to mark duplicates
# where each row is; past it one window over every row does the same (a sort of the whole batch).
BROADCAST_DUPLICATES = 2_000_000


def _mark_duplicates(checked: DataFrame, names: list[str], duplicate: str) -> DataFrame:
    """Mark every valid row whose ``names`` values repeat an earlier one's (by file, then position).

    ``duplicate`` is the reason given to the later copies (``duplicate_row`` when ``names`` are
    every column, ``duplicate_key:<key>`` for an event id).

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
        return checked.withColumn("_reason", F.when(is_copy, F.lit(duplicate)).otherwise(F.col("_reason")))
    marked = checked.join(F.broadcast(copies), "_row", "left")  # _row is unique within the scan
    reason = F.when(F.col("_reason").isNull() & F.col("_copy"), F.lit(duplicate)).otherwise(F.col("_reason"))
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
    duplicates_kept: int = 0

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
            + (f"; {self.duplicates_kept:,} exact duplicate rows kept" if self.duplicates_kept else "")
        )


def count_exact_duplicates(frame: DataFrame, names: list[str]) -> int:
    """Rows that repeat an earlier row's values exactly: every copy beyond the first.

    Like :func:`_mark_duplicates`, one hash aggregation finds the values seen more than once and
    only the rows carrying them are compared by value, so a hash collision is not counted.

    Examples
    --------
    >>> orders = spark.createDataFrame([(1, 9.5), (1, 9.5), (1, 9.5), (2, 9.5)], "customer long, amount double")
    >>> count_exact_duplicates(orders, ["customer", "amount"])
    2
    """
    values = [F.col(n) for n in names]
    hashed = frame.select(*values, F.xxhash64(*values).alias("_h1"), F.hash(*values).alias("_h2"))
    repeated = hashed.groupBy("_h1", "_h2").count().where(F.col("count") > 1).select("_h1", "_h2")
    copies = (hashed.join(repeated, ["_h1", "_h2"], "left_semi").groupBy(*values).count()
              .agg(F.sum(F.col("count") - 1).alias("copies")).first())
    return int(copies["copies"] or 0)


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
        ``details['reconciliation']`` is a :class:`Reconciliation`; its ``duplicates_kept`` counts
        the exact duplicate rows that landed in bronze because no dedupe applied (also in the line).

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
        # below is independent of the classification (a Parquet count reads only the footers, a
        # CSV count does not parse the columns: about 1% of the stage, bench/bench_ingest.py). An
        # observed metric of the first write would save the pass, but in Spark 4.0.1 a session
        # that has used an Observation no longer serializes, and MLlib models that keep the
        # session (LogisticRegression's training summary) then fail with "Task not serializable".
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
    # Without dedupe, exact copies are kept as real events (two identical purchases on one day);
    # they are counted, from what was written, so that the choice is visible in the stage's line.
    kept = (0 if source.dedupe_columns else
            count_exact_duplicates(read_delta(spark, tables.events, "ingest").where(in_files), names))
    report = Reconciliation(len(new), skipped, input_rows, sum(bronze.values()), sum(reasons.values()),
                            reasons, kept)
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
