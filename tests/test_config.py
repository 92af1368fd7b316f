from pathlib import Path

import pytest

from conftest import write_config
from seglake import synth
from seglake.core.config import check_run_id, load_config, require_columns
from seglake.core.errors import SeglakeError

CONF = Path(__file__).resolve().parents[1] / "conf"
MINIMAL = """
name: demo
lakehouse: lh
events:
  columns: {user: string, plays: long}
  path: raw/events
"""


def test_minimal_config_gets_defaults_and_paths_relative_to_the_file(tmp_path: Path):
    config = load_config(write_config(tmp_path, MINIMAL))
    assert config.name == "demo"
    assert config.lakehouse == str(tmp_path / "lh")
    assert config.events.path == str(tmp_path / "raw" / "events")
    assert config.events.format == "parquet"
    assert config.events.columns == {"user": "string", "plays": "long"}
    # No schema-specific rule by default: the config names the columns each rule applies to.
    rules = config.events.rules
    assert (rules.not_null, rules.non_negative, rules.allowed_values, rules.dedupe) == ([], [], {}, None)
    # No events.key and dedupe unset: exact duplicate rows are kept (and counted by ingest).
    assert config.events.dedupe_columns == []
    assert config.sweep.k_min == 2 and config.sweep.k_max == 9
    assert config.text_clusters.k_min == 2 and config.text_clusters.k_max == 8


def test_events_columns_are_required(tmp_path: Path):
    text = MINIMAL.replace("  columns: {user: string, plays: long}\n", "")
    with pytest.raises(SeglakeError, match="missing key 'events.columns'"):
        load_config(write_config(tmp_path, text))


@pytest.mark.parametrize("section", ["sweep", "text_clusters"])
def test_k_range_below_its_minimum_is_one_line_naming_the_key(tmp_path: Path, section: str):
    path = write_config(tmp_path, MINIMAL + f"{section}: {{k_min: 5, k_max: 3}}\n")
    with pytest.raises(SeglakeError) as err:
        load_config(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"key '{section}.k_max': k_max (3) is below k_min (5)" in message
    assert load_config(path, [f"{section}.k_max=5"]).model_dump()[section]["k_max"] == 5


def test_uris_are_left_alone(tmp_path: Path):
    text = MINIMAL.replace("lakehouse: lh", "lakehouse: s3a://bucket/lake")
    assert load_config(write_config(tmp_path, text)).lakehouse == "s3a://bucket/lake"


def test_unknown_key_names_key_and_file(tmp_path: Path):
    path = write_config(tmp_path, MINIMAL + "  colums: {uid: long}\n")
    with pytest.raises(SeglakeError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "unknown key 'events.colums'" in str(err.value)


def test_missing_key_is_named(tmp_path: Path):
    with pytest.raises(SeglakeError, match="missing key 'lakehouse'"):
        load_config(write_config(tmp_path, "name: x\nevents: {path: a}\n"))


def test_wrong_type_is_named(tmp_path: Path):
    text = MINIMAL + "sweep:\n  k_min: many\n"
    with pytest.raises(SeglakeError, match=r"key 'sweep.k_min'.*'many'"):
        load_config(write_config(tmp_path, text))


def test_exactly_one_source(tmp_path: Path):
    with pytest.raises(SeglakeError, match="exactly one source"):
        load_config(write_config(tmp_path, "name: x\nlakehouse: y\n"))


def test_column_names_cannot_carry_expressions(tmp_path: Path):
    text = MINIMAL.replace("user: string", "'uid; DROP TABLE x': string")
    with pytest.raises(SeglakeError, match="not a plain column name"):
        load_config(write_config(tmp_path, text))


def test_rules_must_name_configured_columns(tmp_path: Path):
    text = MINIMAL + "  rules: {not_null: [user_id]}\n"
    with pytest.raises(SeglakeError, match="user_id"):
        load_config(write_config(tmp_path, text))
    text = MINIMAL + "  rules: {not_null: [user], allowed_values: {plays: [0, 1]}}\n"
    rules = load_config(write_config(tmp_path, text)).events.rules
    assert rules.not_null == ["user"] and rules.allowed_values == {"plays": [0, 1]}


def test_overrides_and_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RAW_DIR", "/data/raw")
    text = MINIMAL.replace("path: raw/events", "path: ${RAW_DIR}/events")
    config = load_config(write_config(tmp_path, text), ["sweep.k_max=12", "events.format=csv"])
    assert config.events.path == "/data/raw/events"
    assert config.sweep.k_max == 12
    assert config.events.format == "csv"


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(SeglakeError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(SeglakeError, match="not valid YAML"):
        load_config(write_config(tmp_path, "name: [unclosed\n"))


def test_run_id_and_required_columns():
    assert check_run_id("2026-11-24_a") == "2026-11-24_a"
    with pytest.raises(SeglakeError):
        check_run_id("x' OR 1=1 --")
    with pytest.raises(SeglakeError, match="'likes' not found in events"):
        require_columns(["uid", "like"], ["uid", "likes"], "features.definitions", "events")


def test_every_shipped_config_validates():
    for path in sorted(CONF.glob("*.yaml")):
        assert load_config(path).name == path.stem


@pytest.mark.parametrize("name", ["tiktok_users", "tiktok_authors"])
def test_events_configs_name_the_schema_seglake_synth_writes(name: str):
    events = load_config(CONF / f"{name}.yaml").events
    assert list(events.columns) == list(synth.COLUMNS)
    assert set(events.columns.values()) == {"long"}   # synth's Parquet columns are int64
    assert events.rules.not_null == ["uid", "item_id", "author_id"]
    assert events.rules.non_negative == ["duration_time", "time"]
    assert events.rules.allowed_values == {"finish": [0, 1], "like": [0, 1]}
