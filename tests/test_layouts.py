"""Logs as users bring them: no header, whitespace or pattern delimiters, CRLF, gzip / bz2, compact
dates and event ids. Each case ingests small files written here and checks, from the written
tables, that rows read = bronze rows + quarantined rows and what each quarantined row says."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import write_config
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.core.tables import Tables
from seglake.segmentation.ingest import ingest

PURCHASES = "{customer: long, day: timestamp, amount: double, shop: string}"


def _config(tmp_path: Path, lakehouse: Path, raw: Path, events: str, columns: str = PURCHASES) -> Path:
    text = (f"name: t\nlakehouse: {lakehouse}\nevents:\n  path: {raw}\n  format: csv\n"
            f"  columns: {columns}\n" + "".join(f"  {line}\n" for line in events.strip().splitlines()))
    return write_config(tmp_path, text, "layout.yaml")


def _ingest(spark, config_path: Path):
    """Ingest, then read back (report, bronze rows sorted, {raw: reason}, quarantine rows)."""
    config = load_config(config_path)
    report = ingest(spark, config, "r1").details["reconciliation"]
    tables = Tables.of(config)
    bronze = spark.read.format("delta").load(tables.events)
    bronze_rows = sorted(bronze.select(
        *[c for c in config.events.columns if c != "day"],
        *([F.date_format("day", "yyyy-MM-dd").alias("day")] if "day" in config.events.columns else []),
        "_ingest_file").collect(), key=lambda r: tuple(str(v) for v in r))
    quarantine = spark.read.format("delta").load(tables.quarantine).collect()
    # Exact reconciliation, from the tables written (not from the report alone).
    assert report.balanced
    assert report.input_rows == len(bronze_rows) + len(quarantine)
    assert (report.bronze_rows, report.quarantined_rows) == (len(bronze_rows), len(quarantine))
    return report, bronze_rows, {r.raw: r.reason for r in quarantine}, quarantine


def test_headerless_csv_takes_columns_by_position(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "orders.csv").write_text("7,2023-12-01,9.5,north\n8,2023-12-02,3.0,south\n9,2023-12-03\n")
    config = _config(tmp_path, lakehouse, raw, "header: false")
    report, bronze, quarantined, rows = _ingest(spark, config)
    assert report.input_rows == 3
    assert [(r.customer, r.day, r.amount, r.shop) for r in bronze] == [
        (7, "2023-12-01", 9.5, "north"), (8, "2023-12-02", 3.0, "south")]
    assert quarantined == {"9,2023-12-03": "malformed_line"}  # too few fields
    assert rows[0]._ingest_file.endswith("/orders.csv")


def test_whitespace_delimited_crlf_without_header(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [
        "7  2023-12-01\t9.5   north",         # runs of spaces and a tab
        "\t8 2023-12-02 3.0 south  ",         # leading and trailing whitespace
        "9 2023-12-03 1.0",                   # too few fields
        "10 2023-12-04 2.0 east extra",       # too many fields
        "11 2023-12-05 abc west",             # not a number
    ]
    (raw / "orders.log").write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode())  # and a blank line
    config = _config(tmp_path, lakehouse, raw, "header: false\ndelimiter: whitespace")
    report, bronze, quarantined, rows = _ingest(spark, config)
    assert report.input_rows == 5
    # No stray \r in the last column: the shop strings are exact.
    assert [(r.customer, r.day, r.amount, r.shop) for r in bronze] == [
        (7, "2023-12-01", 9.5, "north"), (8, "2023-12-02", 3.0, "south")]
    # Quarantine keeps each line as it was read (without its line end).
    assert quarantined == {"9 2023-12-03 1.0": "malformed_line",
                           "10 2023-12-04 2.0 east extra": "malformed_line",
                           "11 2023-12-05 abc west": "bad_type:amount"}
    assert {r._ingest_file.rsplit("/", 1)[-1] for r in rows} == {"orders.log"}


def test_whitespace_header_is_checked_and_dropped(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.log").write_bytes(b"customer  day\tamount shop\r\n7 2023-12-01 9.5 north\r\n")
    config = _config(tmp_path, lakehouse, raw, "delimiter: whitespace")
    report, bronze, quarantined, _ = _ingest(spark, config)
    assert (report.input_rows, len(bronze), quarantined) == (1, 1, {})

    other = tmp_path / "other"
    other.mkdir()
    (other / "b.log").write_bytes(b"\r\ncustomer amount day shop\r\n7 9.5 2023-12-01 north\r\n")
    lake = tmp_path / "lake2"
    with pytest.raises(SeglakeError, match=r"the header of \S*/b.log is 'customer amount day shop', "
                                           r"not the configured 'customer day amount shop'"):
        ingest(spark, load_config(_config(tmp_path, lake, other, "delimiter: whitespace")), "r1")


def test_regex_delimiter(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("7 | 2023-12-01|9.5 |  north\n8|2023-12-02|3.0\n")
    config = _config(tmp_path, lakehouse, raw, "header: false\ndelimiter: {regex: '\\s*\\|\\s*'}")
    report, bronze, quarantined, _ = _ingest(spark, config)
    assert report.input_rows == 2
    assert [(r.customer, r.amount, r.shop) for r in bronze] == [(7, 9.5, "north")]
    assert quarantined == {"8|2023-12-02|3.0": "malformed_line"}


def test_gzip_and_bz2_files(spark, tmp_path, lakehouse):
    lines = ["7 2023-12-01 9.5 north", "8 2023-12-02 3.0 south", "9 2023-12-03 -"]
    data = ("\r\n".join(lines) + "\r\n").encode()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.log.gz").write_bytes(gzip.compress(data))
    (raw / "b.log.bz2").write_bytes(bz2.compress(data))
    config_path = _config(tmp_path, lakehouse, raw, "header: false\ndelimiter: whitespace")
    report, bronze, _, rows = _ingest(spark, config_path)
    assert (report.files, report.input_rows) == (2, 6)
    assert sorted((r.customer, r._ingest_file.rsplit("/", 1)[-1]) for r in bronze) == [
        (7, "a.log.gz"), (7, "b.log.bz2"), (8, "a.log.gz"), (8, "b.log.bz2")]
    # The raw column holds the decompressed line, and each row names its compressed file.
    assert sorted((r.raw, r.reason, r._ingest_file.rsplit("/", 1)[-1]) for r in rows) == [
        ("9 2023-12-03 -", "malformed_line", "a.log.gz"), ("9 2023-12-03 -", "malformed_line", "b.log.bz2")]
    config = load_config(config_path)
    log = {r.file.rsplit("/", 1)[-1]: (r.input_rows, r.bronze_rows, r.quarantined_rows)
           for r in spark.read.format("delta").load(Tables.of(config).ingest_log).collect()}
    assert log == {"a.log.gz": (3, 2, 1), "b.log.bz2": (3, 2, 1)}
    assert ingest(spark, config, "r2").details["reconciliation"].skipped_files == 2  # listed by size, mtime

    # A gzipped CSV with a header goes through Spark's CSV reader the same way.
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "a.csv.gz").write_bytes(gzip.compress(b"customer,day,amount,shop\r\n7,2023-12-01,9.5,north\r\n7,x\r\n"))
    report, bronze, quarantined, _ = _ingest(spark, _config(tmp_path, tmp_path / "lake2", csv, ""))
    assert [(r.customer, r.shop) for r in bronze] == [(7, "north")]
    assert quarantined == {"7,x": "malformed_line"}


def test_compact_dates_and_an_unparseable_one(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("7 20231201 9.5 north\n8 20231231 3.0 south\n9 20231301 1.0 west\n"
                               "10 2023-12-04 1.0 east\n11 - 1.0 east\n")
    config = _config(tmp_path, lakehouse, raw, "header: false\ndelimiter: whitespace\n"
                                                "timestamp_format: {day: yyyyMMdd}")
    report, bronze, quarantined, _ = _ingest(spark, config)
    assert report.input_rows == 5
    assert [(r.customer, r.day) for r in bronze] == [(7, "2023-12-01"), (8, "2023-12-31")]
    # Not silently null: each value that does not fit the pattern is quarantined naming the column.
    assert quarantined == {"9 20231301 1.0 west": "bad_type:day", "10 2023-12-04 1.0 east": "bad_type:day",
                           "11 - 1.0 east": "bad_type:day"}

    seconds = tmp_path / "seconds"
    seconds.mkdir()
    (seconds / "a.csv").write_text("customer,day,amount,shop\n7,2023-12-01 10:30:00,9.5,n\n8,2023-12-01,1.0,n\n")
    config = _config(tmp_path, tmp_path / "lake2", seconds, "timestamp_format: {day: 'yyyy-MM-dd HH:mm:ss'}")
    report, bronze, quarantined, _ = _ingest(spark, config)
    assert [(r.customer, r.day) for r in bronze] == [(7, "2023-12-01")]
    assert quarantined == {"8,2023-12-01,1.0,n": "bad_type:day"}


def test_bad_timestamp_pattern_is_one_line_naming_the_key(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("customer,day,amount,shop\n7,20231201,9.5,n\n")
    config = load_config(_config(tmp_path, lakehouse, raw, "timestamp_format: {day: yyyyMMddqqqqqqbb}"))
    with pytest.raises(SeglakeError) as err:
        ingest(spark, config, "r1")
    message = str(err.value)
    assert message.startswith("events.timestamp_format.day: 'yyyyMMddqqqqqqbb' is not a Spark datetime pattern")
    assert "\n" not in message


ORDERS = "{order_id: string, customer: long, amount: double}"
ORDER_LINES = ["A1,7,9.5", "A2,7,9.5", "A2,8,1.0", "A3,9,2.0", "A3,9,2.0"]


@pytest.mark.parametrize("events, bronze_ids, quarantined, kept", [
    # An event id: a repeated id is quarantined, even when the rest of the row differs.
    ("key: order_id\nheader: false", ["A1", "A2", "A3"],
     {"A2,8,1.0": "duplicate_key:order_id", "A3,9,2.0": "duplicate_key:order_id"}, 0),
    # No id: exact duplicate rows are real events (two identical purchases), kept and counted.
    ("header: false", ["A1", "A2", "A2", "A3", "A3"], {}, 1),
    # An explicit dedupe wins over the default, either way.
    ("header: false\nrules: {dedupe: true}", ["A1", "A2", "A2", "A3"], {"A3,9,2.0": "duplicate_row"}, 0),
    ("key: order_id\nheader: false\nrules: {dedupe: false}", ["A1", "A2", "A2", "A3", "A3"], {}, 1),
])
def test_dedupe_follows_the_key(spark, tmp_path, lakehouse, events, bronze_ids, quarantined, kept):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("\n".join(ORDER_LINES) + "\n")
    report, bronze, got, _ = _ingest(spark, _config(tmp_path, lakehouse, raw, events, ORDERS))
    assert report.input_rows == 5
    assert sorted(r.order_id for r in bronze) == bronze_ids
    assert got == quarantined
    assert report.duplicates_kept == kept
    assert ("1 exact duplicate rows kept" in report.line()) == bool(kept)


@pytest.mark.parametrize("events, message", [
    ("format: parquet\n  header: false", "header apply to format csv only"),
    ("format: csv\n  delimiter: ';'\n  options: {sep: ','}", "delimiter and options.sep both set"),
    ("format: csv\n  timestamp_format: {amount: yyyyMMdd}", "not timestamp columns of events.columns: amount"),
    ("format: csv\n  key: order", "not in events.columns: order"),
    ("format: csv\n  delimiter: {regex: '('}", "is not a regular expression"),
])
def test_layout_keys_are_checked_when_the_config_loads(tmp_path, events, message):
    text = f"name: t\nlakehouse: lh\nevents:\n  path: raw\n  {events}\n  columns: {PURCHASES}\n"
    with pytest.raises(SeglakeError, match=message):
        load_config(write_config(tmp_path, text))
