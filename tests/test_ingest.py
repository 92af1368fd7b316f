from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable

from conftest import write_config
from seglake.cli import main
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.segmentation.ingest import ingest
from seglake.core.tables import Tables

HEADER = "uid,user_city,item_id,author_id,item_city,channel,finish,like,music_id,device,time,duration_time"
GOOD = [
    "1,10,100,1000,20,0,1,0,5,2,1700000000,12",
    "1,10,101,1001,20,0,0,1,6,2,1700000060,9",
    "2,11,100,1000,20,1,1,1,5,3,1700000120,12",
]
BAD = {
    "1,10,102": "malformed_line",                                      # too few fields
    "1,10,103,1000,20,0,1,0,5,2,1700000000,12,99": "malformed_line",   # too many fields
    "3,10,104,1000,20,0,1,0,5,2,1700000000,abc": "bad_type:duration_time",
    ",10,105,1000,20,0,1,0,5,2,1700000000,7": "null:uid",
    "4,10,106,1000,20,0,1,0,5,2,1700000000,-3": "negative:duration_time",
    "5,10,107,1000,20,0,2,0,5,2,1700000000,8": "not_allowed:finish",
    GOOD[0]: "duplicate_row",                                          # exact copy of a good row
}


def _events_config(folder: Path, lakehouse: Path, fmt: str = "csv") -> Path:
    text = (f"name: t\nlakehouse: {lakehouse}\nevents:\n  path: {folder}\n  format: {fmt}\n"
            f"  columns: {{{', '.join(f'{c}: long' for c in HEADER.split(','))}}}\n"
            "  rules: {not_null: [uid, item_id, author_id], non_negative: [duration_time, time],\n"
            "          allowed_values: {finish: [0, 1], like: [0, 1]}, dedupe: true}\n")
    return write_config(folder.parent, text, f"{folder.name}.yaml")


def _write_csv(folder: Path, name: str, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join([HEADER, *lines]) + "\n")


def test_clean_and_corrupt_rows_reconcile_with_reasons(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    _write_csv(raw, "a.csv", GOOD)
    _write_csv(raw, "b.csv", list(BAD))
    config = load_config(_events_config(raw, lakehouse))
    result = ingest(spark, config, "r1")
    report = result.details["reconciliation"]
    assert (report.input_rows, report.bronze_rows, report.quarantined_rows) == (10, 3, 7)
    assert report.balanced
    tables = Tables.of(config)
    quarantine = spark.read.format("delta").load(tables.quarantine)
    got = {r.raw: r.reason for r in quarantine.collect()}
    assert got == BAD
    bronze = spark.read.format("delta").load(tables.events)
    assert {"_ingest_file", "_ingest_ts", "_ingest_run"} <= set(bronze.columns)
    assert dict(bronze.dtypes)["duration_time"] == "bigint"
    assert sorted(r.item_id for r in bronze.collect()) == [100, 100, 101]


def test_reingest_adds_nothing_and_new_file_adds_only_its_rows(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    _write_csv(raw, "a.csv", GOOD)
    config = load_config(_events_config(raw, lakehouse))
    ingest(spark, config, "r1")
    tables = Tables.of(config)
    before = spark.read.format("delta").load(tables.events)
    before_rows = before.drop("_ingest_ts", "_ingest_run").collect()

    again = ingest(spark, config, "r2")
    assert again.rows_in == 0 and again.details["reconciliation"].skipped_files == 1
    after = spark.read.format("delta").load(tables.events).drop("_ingest_ts", "_ingest_run")
    assert_df_equality(after, spark.createDataFrame(before_rows, after.schema),
                       ignore_row_order=True, ignore_nullable=True)

    _write_csv(raw, "c.csv", ["9,10,200,1000,20,0,1,0,5,2,1700000500,12"])
    third = ingest(spark, config, "r3")
    assert third.details["reconciliation"].files == 1
    assert spark.read.format("delta").load(tables.events).count() == 4


def test_bronze_is_a_delta_table_with_history(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    _write_csv(raw, "a.csv", GOOD)
    config = load_config(_events_config(raw, lakehouse))
    ingest(spark, config, "r1")
    _write_csv(raw, "b.csv", GOOD[:1])
    ingest(spark, config, "r2")
    history = DeltaTable.forPath(spark, Tables.of(config).events).history().collect()
    # One commit per ingest, the first creating the table (two concurrent first ingests conflict on
    # it and the loser replaces the winner's rows of the same files: test_faults).
    assert [h.operation for h in sorted(history, key=lambda h: h.version)] == ["WRITE", "WRITE"]


def test_changed_file_replaces_its_own_rows(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    _write_csv(raw, "a.csv", GOOD)
    config = load_config(_events_config(raw, lakehouse))
    ingest(spark, config, "r1")
    _write_csv(raw, "a.csv", GOOD[:2])  # the producer rewrote the file with fewer rows
    ingest(spark, config, "r2")
    assert spark.read.format("delta").load(Tables.of(config).events).count() == 2


def test_json_lines_with_a_broken_line(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = '{"uid":1,"user_city":1,"item_id":2,"author_id":3,"item_city":1,"channel":0,"finish":1,"like":0,"music_id":4,"device":1,"time":1700000000,"duration_time":10}'
    (raw / "e.json").write_text(good + "\n{not json\n" + good.replace('"uid":1', '"uid":"x"') + "\n")
    config = load_config(_events_config(raw, lakehouse, "json"))
    report = ingest(spark, config, "r1").details["reconciliation"]
    assert (report.input_rows, report.bronze_rows) == (3, 1)
    assert report.reasons == {"malformed_line": 1, "bad_type:uid": 1}


def test_missing_path_and_empty_source_fail_in_one_line(spark, tmp_path, lakehouse, capsys):
    config_path = _events_config(tmp_path / "nowhere", lakehouse)
    with pytest.raises(SeglakeError, match="no files found"):
        ingest(spark, load_config(config_path), "r1")
    empty = tmp_path / "empty"
    _write_csv(empty, "a.csv", [])
    with pytest.raises(SeglakeError, match="hold no rows"):
        ingest(spark, load_config(_events_config(empty, lakehouse)), "r1")
    # Through the CLI: exit code 2 and a single line on stderr.
    code = main(["run", "--config", str(config_path), "--stages", "ingest"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seglake: error: events.path: no files found")


def test_parquet_missing_column_is_a_schema_mismatch(spark, tmp_path, lakehouse):
    raw = tmp_path / "raw"
    spark.createDataFrame([(1, 2)], "uid long, item_id long").write.parquet(str(raw))
    with pytest.raises(SeglakeError, match="events.columns: column\\(s\\) 'user_city'"):
        ingest(spark, load_config(_events_config(raw, lakehouse, "parquet")), "r1")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_synth_with_corruption_reconciles_to_the_row(spark, tmp_path, lakehouse, fmt):
    out = tmp_path / "synth"
    assert main(["synth", "--events", "20000", "--out", str(out), "--format", fmt,
                 "--corrupt-rate", "0.01", "--seed", "5"]) == 0
    corrupt = int((out / "truth" / "corrupt_rows.txt").read_text())
    assert corrupt == 200
    config = load_config(_events_config(out / "events", lakehouse, fmt))
    report = ingest(spark, config, "r1").details["reconciliation"]
    assert report.input_rows == 20000
    assert report.quarantined_rows == corrupt
    assert report.bronze_rows == 20000 - corrupt
