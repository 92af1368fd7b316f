from pathlib import Path

import pytest

from conftest import write_config
from seglake.core.config import check_run_id, load_config, require_columns
from seglake.core.errors import SeglakeError

MINIMAL = """
name: demo
lakehouse: lh
events:
  path: raw/events
"""


def test_minimal_config_gets_defaults_and_paths_relative_to_the_file(tmp_path: Path):
    config = load_config(write_config(tmp_path, MINIMAL))
    assert config.name == "demo"
    assert config.lakehouse == str(tmp_path / "lh")
    assert config.events.path == str(tmp_path / "raw" / "events")
    assert config.events.format == "parquet"
    assert config.events.columns["uid"] == "long"
    assert config.events.rules.allowed_values == {"finish": [0, 1], "like": [0, 1]}
    assert config.sweep.k_min == 2 and config.sweep.k_max == 9


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
    text = MINIMAL + "  columns: {'uid; DROP TABLE x': long}\n"
    with pytest.raises(SeglakeError, match="not a plain column name"):
        load_config(write_config(tmp_path, text))


def test_rules_must_name_configured_columns(tmp_path: Path):
    text = MINIMAL + "  rules: {not_null: [user_id]}\n"
    with pytest.raises(SeglakeError, match="user_id"):
        load_config(write_config(tmp_path, text))


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
    for path in sorted(Path(__file__).resolve().parents[1].glob("conf/*.yaml")):
        assert load_config(path).name == path.stem
