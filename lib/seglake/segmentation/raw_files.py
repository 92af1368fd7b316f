"""Raw event files in any layout: list them, read them as text columns, name the file when a read fails.

:func:`read_raw` gives ingest (and scoring) one frame whatever the layout: CSV by header name or by
position, any fixed separator or a delimiter pattern (runs of whitespace, a regex), JSON lines or
Parquet; ``\\n``, ``\\r\\n`` or ``\\r`` line ends; ``.gz`` / ``.bz2`` files decompressed by extension.
A line that does not fit the configured columns becomes a ``_corrupt_record`` (ingest quarantines it
as ``malformed_line``), never a failed job or a silently shifted row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import EventsSource, require_columns
from seglake.core.errors import SeglakeError, first_line

CORRUPT = "_corrupt_record"
LINE = "_line"  # the raw line of a log split on a delimiter pattern
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

    A CSV log with a fixed separator goes through Spark's CSV reader (quotes work, columns by
    header name or, with ``header: false``, by position). A log split on a pattern (``delimiter:
    whitespace`` or ``{regex: ...}``) is read one line per row and split in Spark: the line is kept
    as ``_line`` (the quarantine's raw text), and a line with another number of fields than
    ``events.columns`` becomes a ``_corrupt_record`` like a malformed CSV line. Either way line ends
    may be ``\\n``, ``\\r\\n`` or ``\\r``, blank lines are skipped, and ``.gz`` / ``.bz2`` files are
    decompressed by their extension.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "log.txt").write_bytes(b"7  20231201\\t9.5\\r\\n8 20231202\\r\\n")
    >>> source = EventsSource(path=str(folder), format="csv", header=False, delimiter="whitespace",
    ...                       columns={"customer": "long", "day": "timestamp", "amount": "double"})
    >>> rows = read_raw(spark, [str(folder / "log.txt")], source).orderBy("_row").collect()
    >>> [(r.customer, r.day, r.amount, r._corrupt_record) for r in rows]
    [('7', '20231201', '9.5', None), (None, None, None, '8 20231202')]
    """
    names = list(source.columns)
    if source.format == "csv" and source.field_pattern is not None:
        frame = _split_lines(_read_lines(spark, paths, source), names, source.field_pattern)
    elif source.format in ("csv", "json"):
        schema = T.StructType(
            [T.StructField(c, T.StringType()) for c in names] + [T.StructField(CORRUPT, T.StringType())]
        )
        reader = spark.read.schema(schema).option("mode", "PERMISSIVE")
        reader = reader.option("columnNameOfCorruptRecord", CORRUPT)
        if source.format == "csv":
            reader = reader.option("sep", source.separator)
            if source.header:
                # Check each file's header against the configured names: columns are then taken by
                # name, and a file written with another delimiter or encoding fails naming the file
                # instead of landing every row in the wrong column or in quarantine.
                reader = reader.option("header", "true").option("enforceSchema", "false")
            else:
                reader = reader.option("header", "false")
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
    line = [LINE] if LINE in frame.columns else []
    return frame.select(*names, CORRUPT, *line, F.col("_metadata.file_path").alias("_ingest_file"),
                        F.monotonically_increasing_id().alias("_row"))


# What Spark's CSV reader never meets in a text line: with it as the separator and quoting off,
# each line is one field, while the reader still skips headers and blank lines, decodes
# `options.encoding` and handles every line end (the text reader has no header and reads UTF-8 only).
_NO_SEPARATOR = "\u0000"


def _read_lines(spark: SparkSession, paths: list[str], source: EventsSource) -> DataFrame:
    if source.header:
        check_headers(spark, paths, source)
    schema = T.StructType([T.StructField(LINE, T.StringType()), T.StructField(CORRUPT, T.StringType())])
    reader = (spark.read.schema(schema).options(**source.options).option("mode", "PERMISSIVE")
              .option("columnNameOfCorruptRecord", CORRUPT).option("sep", _NO_SEPARATOR).option("quote", "")
              .option("header", str(source.header).lower()).option("enforceSchema", "true"))
    return reader.format("csv").load(paths)


def _split_lines(lines: DataFrame, names: list[str], pattern: str) -> DataFrame:
    """Columns by position from each line split on ``pattern``; a line that does not fit is corrupt."""
    stripped = F.regexp_replace(F.col(LINE), r"^\s+|\s+$", "")
    fields = F.split(stripped, pattern)
    fits = F.coalesce(F.size(fields) == len(names), F.lit(False))
    corrupt = F.when(F.col(CORRUPT).isNotNull() | ~fits, F.coalesce(F.col(CORRUPT), F.col(LINE)))
    return lines.select(
        *[F.when(fits, F.try_element_at(fields, F.lit(i + 1))).alias(name) for i, name in enumerate(names)],
        corrupt.alias(CORRUPT), F.coalesce(F.col(LINE), F.col(CORRUPT)).alias(LINE),
        "_metadata")  # the scan's hidden file column, carried past this projection


# What Java's String.trim (and so Spark's CSV reader, when it skips blank lines) strips.
_BLANK = "".join(chr(c) for c in range(33))


def check_headers(spark: SparkSession, paths: list[str], source: EventsSource) -> None:
    """Each file's first non-blank line, split on ``events.delimiter``, names ``events.columns`` in order.

    A pattern-delimited log is read by position, so a header naming other columns (or the same in
    another order) means every row would land in the wrong column: an error naming the file. The
    line is read on the driver through Hadoop (decompressed by extension, in ``options.encoding``),
    one short read per file.
    """
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    codecs = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(hadoop_conf)
    splitter = jvm.java.util.regex.Pattern.compile(source.field_pattern)
    encoding = source.options.get("encoding", source.options.get("charset", "UTF-8"))
    names = list(source.columns)
    for path in paths:
        file = jvm.org.apache.hadoop.fs.Path(path)
        stream = file.getFileSystem(hadoop_conf).open(file)
        codec = codecs.getCodec(file)
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(
            codec.createInputStream(stream) if codec is not None else stream, encoding))
        try:
            line = reader.readLine()
            while line is not None and not line.strip(_BLANK):
                line = reader.readLine()
        finally:
            reader.close()
        if line is None:
            continue  # no rows: the reconciliation says so
        found = list(splitter.split(line.strip(_BLANK), -1))
        if found != names:
            raise SeglakeError(
                f"events.columns: the header of {path} is {' '.join(found)!r}, not the configured "
                f"{' '.join(names)!r} (a file split on a delimiter pattern is read by position; with "
                f"no header line set events.header: false)")


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
