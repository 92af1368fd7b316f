"""The claim/opinion classifier: record checks, quarantine reasons, splits, training on the real data
and the ``seglake classify`` command.

One model is trained per module (on the real CSV plus a few broken rows appended) and reused by every
test that scores.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from conftest import shared_file
from seglake.usecases.claims.train import Scores, assign_split, check_videos, train_classifier
from seglake.usecases.claims.classify import ModelInputs, check_record, read_records
from seglake.cli import main
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "tiktok_claims.yaml"
INPUTS = ModelInputs(
    text="video_transcription_text",
    categorical=("verified_status", "author_ban_status"),
    numeric=("video_view_count", "video_like_count", "video_share_count", "video_download_count",
             "video_comment_count"),
    id="video_id",
    classes=("opinion", "claim"),
)
CLAIM = {
    "video_id": 7017666017, "video_transcription_text": "someone shared with me that drone deliveries "
    "are already happening and will become common by 2025", "verified_status": "not verified",
    "author_ban_status": "under review", "video_view_count": 343296, "video_like_count": 19425,
    "video_share_count": 241, "video_download_count": 1, "video_comment_count": 0,
}
OPINION = {
    "video_id": 1, "video_transcription_text": "my colleagues feel that the new bridge looks too modern",
    "verified_status": "verified", "author_ban_status": "active", "video_view_count": 4810,
    "video_like_count": 902, "video_share_count": 35, "video_download_count": 4, "video_comment_count": 1,
}
HEADER = ("#,claim_status,video_id,video_duration_sec,video_transcription_text,verified_status,"
          "author_ban_status,video_view_count,video_like_count,video_share_count,video_download_count,"
          "video_comment_count")
# Appended to the real CSV: each must land in quarantine with this reason, nothing else may.
BROKEN_ROWS = {
    "90001,,90000000001,30,i think that this has no label,verified,active,10,1,1,0,0": "null:claim_status",
    "90002,rumour,90000000002,30,i think so,verified,active,10,1,1,0,0": "not_allowed:claim_status",
    "90003,claim,90000000003,30,someone said,not verified,active,abc,1,1,0,0": "bad_type:video_view_count",
    "90004,opinion,90000000004,30,i feel,verified,active,10,-1,1,0,0": "negative:video_like_count",
    "90005,opinion,90000000005,30,,verified,active,10,1,1,0,0": "null:video_transcription_text",
    "90006,claim,7017666017,59,a second copy of video 1,not verified,active,1,1,1,1,1": "duplicate_id",
    "90007,claim,90000000007,30": "malformed_line",
}


# --- record checks (plain Python, no Spark) ---------------------------------------------------------

def test_a_good_record_passes_with_numbers_as_floats():
    clean, error = check_record({**CLAIM, "video_view_count": "343296"}, INPUTS)
    assert error is None
    assert clean["video_view_count"] == 343296.0 and clean["verified_status"] == "not verified"
    assert "video_id" not in clean  # the id is passed through, never fed to the model


def test_every_problem_of_a_record_is_named():
    record = {**CLAIM, "video_view_count": "abc", "video_like_count": True, "video_share_count": -3,
              "author_ban_status": 5}
    del record["video_comment_count"]
    clean, error = check_record(record, INPUTS)
    assert clean is None
    assert error.split("; ") == [
        "field 'author_ban_status': expected text, got int 5",
        "field 'video_view_count': expected a number, got 'abc'",
        "field 'video_like_count': expected a number, got bool True",
        "field 'video_share_count': must not be negative, got int -3",
        "missing field 'video_comment_count'",
    ]


def test_blank_text_and_non_objects_are_errors():
    assert check_record({**CLAIM, "video_transcription_text": "  "}, INPUTS)[1] == (
        "missing field 'video_transcription_text'")
    assert check_record([1, 2], INPUTS) == (None, "record is not an object (got list)")


def test_read_records_single_object_json_lines_and_csv(tmp_path: Path):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(CLAIM, indent=2))
    assert [(r.row, r.values["video_id"]) for r in read_records(str(single))] == [(1, 7017666017)]

    lines = tmp_path / "batch.jsonl"
    lines.write_text(json.dumps(CLAIM) + "\n\n{not json\n" + json.dumps(OPINION) + "\n")
    records = read_records(str(lines))
    assert [r.row for r in records] == [1, 2, 3]
    assert records[1].error.startswith("not valid JSON") and records[2].values["video_id"] == 1

    table = tmp_path / "batch.csv"
    table.write_text("video_id,video_view_count\n7,12\n8,\n")
    assert [r.values for r in read_records(str(table))] == [
        {"video_id": "7", "video_view_count": "12"}, {"video_id": "8", "video_view_count": ""}]


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b"[1, 2"])
def test_unreadable_inputs_raise_one_error(tmp_path: Path, content: bytes):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    with pytest.raises(SeglakeError, match="--input"):
        read_records(str(path))
    with pytest.raises(SeglakeError, match="cannot read"):
        read_records(str(tmp_path / "absent.csv"))


def test_scores_from_confusion_counts():
    scores = Scores(true_positive=8, false_positive=2, true_negative=9, false_negative=1)
    assert scores.rows == 20 and scores.accuracy == pytest.approx(0.85)
    assert scores.precision == pytest.approx(0.8) and scores.recall == pytest.approx(8 / 9)
    assert scores.f1 == pytest.approx(16 / 19)
    assert scores.f1_macro == pytest.approx((16 / 19 + 18 / 21) / 2)
    assert scores.as_dict(("opinion", "claim"))["confusion_matrix"]["counts"] == [[9, 2], [1, 8]]


def test_classifier_config_is_checked(tmp_path: Path):
    config = load_config(CONFIG)
    assert config.classifier.positive_class == "claim"
    assert config.entities.id == "video_id" and config.entities.path.endswith("data/tiktok_claims.csv")
    with pytest.raises(SeglakeError, match="add up to 1"):
        load_config(CONFIG, ["classifier.test_fraction=0.3"])
    with pytest.raises(SeglakeError, match="distinct columns"):
        load_config(CONFIG, ["classifier.numeric=[claim_status]"])


# --- Spark transforms on tiny frames ----------------------------------------------------------------

def test_check_videos_gives_each_unusable_row_its_reason(spark):
    config = load_config(CONFIG)
    columns = HEADER.split(",")
    rows = [dict(zip(columns, line.split(","))) for line in [
        "1,claim,11,59,someone said,not verified,active,100,10,1,1,0",
        "2,opinion,12,30,i think,verified,banned,100,10,1,1,0",
        *[line for line in BROKEN_ROWS if not line.startswith(("90006", "90007"))],
        "3,opinion,12,30,a repeat of video 12,verified,active,1,1,1,1,1",
    ]]
    frame = spark.createDataFrame(rows, ", ".join(f"`{c}` string" for c in columns))
    checked = check_videos(frame, config.classifier, "video_id").orderBy("_raw").collect()
    reasons = {json.loads(r["_raw"])["#"]: r["_reason"] for r in checked}
    assert reasons == {"1": None, "2": None, "3": "duplicate_id", "90001": "null:claim_status",
                       "90002": "not_allowed:claim_status", "90003": "bad_type:video_view_count",
                       "90004": "negative:video_like_count", "90005": "null:video_transcription_text"}
    labels = {json.loads(r["_raw"])["#"]: r["label"] for r in checked}
    assert labels["1"] == 1.0 and labels["2"] == 0.0


def test_split_depends_only_on_id_and_seed(spark):
    config = load_config(CONFIG)
    everyone = assign_split(spark.range(5000).selectExpr("CAST(id AS STRING) AS video_id"),
                            "video_id", config.classifier)
    some = assign_split(spark.range(0, 5000, 7).selectExpr("CAST(id AS STRING) AS video_id"),
                        "video_id", config.classifier)
    split_of = {r.video_id: r.split for r in everyone.collect()}
    assert all(split_of[r.video_id] == r.split for r in some.collect())
    shares = {s: n / 5000 for s, n in
              ((s, sum(1 for v in split_of.values() if v == s)) for s in ("train", "validation", "test"))}
    assert shares["train"] == pytest.approx(0.6, abs=0.03)
    assert shares["validation"] == pytest.approx(0.2, abs=0.03)


def test_training_needs_the_sections_and_the_columns(spark, tmp_path: Path):
    without = load_config(CONFIG, [f"lakehouse={tmp_path}", "classifier=null"])
    with pytest.raises(SeglakeError, match="needs 'entities' and 'classifier'"):
        train_classifier(spark, without, "r1")
    data = tmp_path / "videos.csv"
    data.write_text(HEADER + "\n1,claim,11,59,someone said,not verified,active,100,10,1,1,0\n")
    renamed = load_config(CONFIG, [f"lakehouse={tmp_path}", f"entities.path={data}",
                                   "classifier.text=transcript"])
    with pytest.raises(SeglakeError, match="'transcript' not found"):
        train_classifier(spark, renamed, "r1")


# --- end to end on the real data --------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """The shipped config on the real CSV with BROKEN_ROWS appended; GBT kept small for time."""
    folder = tmp_path_factory.mktemp("claims")
    data = folder / "tiktok_claims.csv"
    real = shared_file("tiktok_claims.csv").read_text()
    data.write_text(real.rstrip("\n") + "\n" + "\n".join(BROKEN_ROWS) + "\n")
    config = load_config(CONFIG, [f"lakehouse={folder / 'lakehouse'}", f"entities.path={data}",
                                  "classifier.gbt.trees=5", "classifier.gbt.max_depth=4"])
    result = train_classifier(spark, config, "test-run")
    return config, result, len(real.strip().splitlines()) - 1


@pytest.mark.slow
def test_training_on_real_data_reaches_the_seed_and_reconciles(spark, trained):
    config, result, real_rows = trained
    metrics = result.details["metrics"]
    rows = metrics["rows"]
    assert rows["input"] == real_rows + len(BROKEN_ROWS) == result.rows_in
    assert rows["input"] == rows["train"] + rows["validation"] + rows["test"] + rows["quarantined"]
    assert rows["quarantined"] == len(BROKEN_ROWS)
    assert metrics["test"]["accuracy"] >= 0.99 and metrics["test"]["f1"] >= 0.99
    assert metrics["validation"]["accuracy"] >= 0.99
    assert sum(map(sum, metrics["test"]["confusion_matrix"]["counts"])) == rows["test"]
    assert metrics["label"]["mapping"] == {"0": "opinion", "1": "claim"}
    assert metrics["chosen_model"] in ("logistic_regression", "gbt")

    lakehouse = config.lakehouse + "/tiktok_claims"
    quarantine = spark.read.format("delta").load(f"{lakehouse}/bronze/quarantine")
    assert {r.reason for r in quarantine.collect()} == set(BROKEN_ROWS.values())
    gold = spark.read.format("delta").load(f"{lakehouse}/gold/classifier_metrics")
    chosen_test = gold.where("chosen AND split = 'test'").collect()
    assert len(chosen_test) == 1 and chosen_test[0].accuracy == metrics["test"]["accuracy"]
    assert gold.where("split = 'validation'").count() == len(config.classifier.models)
    saved = json.loads(Path(result.details["model_path"], "metrics.json").read_text())
    assert saved["test"] == metrics["test"]


@pytest.mark.slow
def test_classify_batch_scores_good_rows_and_names_bad_fields(trained, tmp_path: Path):
    _, result, _ = trained
    batch = tmp_path / "batch.csv"
    missing = {k: v for k, v in OPINION.items() if k != "author_ban_status"}
    wrong = {**CLAIM, "video_view_count": "abc"}
    with batch.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(CLAIM))
        writer.writeheader()
        writer.writerows([CLAIM, OPINION, missing, wrong])
    output = tmp_path / "scored.csv"
    code = main(["classify", "--model", result.details["model_path"], "--input", str(batch),
                 "--output", str(output)])
    assert code == 0
    rows = list(csv.DictReader(output.open()))
    assert [r["row"] for r in rows] == ["1", "2", "3", "4"]
    assert list(rows[0]) == ["row", "video_id", "prediction", "probability_claim",
                             "probability_opinion", "error"]
    assert [r["prediction"] for r in rows] == ["claim", "opinion", "", ""]
    assert float(rows[0]["probability_claim"]) > 0.5 > float(rows[1]["probability_claim"])
    assert float(rows[0]["probability_claim"]) + float(rows[0]["probability_opinion"]) == pytest.approx(1)
    assert rows[2]["error"] == "missing field 'author_ban_status'" and rows[2]["video_id"] == "1"
    assert rows[3]["error"] == "field 'video_view_count': expected a number, got 'abc'"


@pytest.mark.slow
def test_classify_one_json_record_from_stdin_matches_the_batch(trained, tmp_path, monkeypatch, capsys):
    _, result, _ = trained
    run_folder = str(Path(result.details["model_path"]).parent)  # the run folder works too
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(CLAIM)))
    assert main(["classify", "--model", run_folder, "--input", "-"]) == 0
    (alone,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert alone["row"] == 1 and alone["video_id"] == CLAIM["video_id"] and alone["error"] is None
    assert alone["prediction"] == "claim"

    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(json.dumps(r) for r in [OPINION, CLAIM]))
    assert main(["classify", "--model", run_folder, "--input", str(batch)]) == 0
    in_batch = [json.loads(line) for line in capsys.readouterr().out.splitlines()][1]
    assert in_batch["probability_claim"] == alone["probability_claim"]  # batch-independent


@pytest.mark.slow
def test_classify_exit_code_2_for_unreadable_input_or_model(trained, tmp_path: Path, capsys):
    _, result, _ = trained
    binary = tmp_path / "broken.json"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    assert main(["classify", "--model", result.details["model_path"], "--input", str(binary)]) == 2
    assert "--input: cannot read" in capsys.readouterr().err
    good = tmp_path / "one.json"
    good.write_text(json.dumps(CLAIM))
    assert main(["classify", "--model", str(tmp_path / "nowhere"), "--input", str(good)]) == 2
    assert "--model: no classifier" in capsys.readouterr().err
