"""Tables by name: a run with ``catalog.database`` registers its tables so SQL can query them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_file

from seglake.core.catalog import register_existing
from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import run_stages
from seglake.core.tables import Tables

CONF = Path(__file__).resolve().parents[1] / "conf"


def _profiles(lakehouse, name="tiktok_profiles", database="lake_sql"):
    return load_config(CONF / "tiktok_profiles.yaml", [
        f"entities.path={shared_file('tiktok_profiles.csv')}", f"lakehouse={lakehouse}",
        f"name={name}", f"catalog.database={database}", "sweep.k=2", "sweep.k_min=2", "sweep.k_max=3",
        "tracking.enabled=false"])


def test_a_run_registers_its_tables_and_sql_reads_them_by_name(spark, lakehouse):
    config = _profiles(lakehouse)
    lines: list[str] = []
    run_stages(spark, config, ["features", "sweep"], "r1", echo=lines.append)
    assert "[catalog] lake_sql: gold_runs, gold_sweep, silver_entities, silver_rejected" in lines

    counted = spark.sql("select count(*) as n from lake_sql.silver_entities").first().n
    assert counted == spark.read.format("delta").load(Tables.of(config).entities).count() == 1000
    swept = spark.sql("select k from lake_sql.gold_sweep where run_id = 'r1' order by k").collect()
    assert [row.k for row in swept] == [2, 3]
    # the name is an external table over seglake's folder: a later run's rows show without re-registering
    assert not (Path(lakehouse) / "spark-warehouse").exists()
    run_stages(spark, config, ["sweep"], "r2", echo=lambda line: None)
    assert spark.sql("select count(distinct run_id) as n from lake_sql.gold_sweep").first().n == 2
    # a fresh session's empty catalog: register what the lakehouse holds
    spark.sql("drop table lake_sql.gold_sweep")
    assert "lake_sql.gold_sweep" in register_existing(spark, config)
    assert spark.read.format("delta").load(Tables.of(config).gold("sweep")).count() == 4  # drop deleted nothing


def test_a_name_owned_by_another_use_case_is_an_error_not_repointed(spark, lakehouse):
    run_stages(spark, _profiles(lakehouse, database="shared_sql"), ["features"], "r1", echo=lambda line: None)
    other = _profiles(lakehouse, name="other_profiles", database="shared_sql")
    with pytest.raises(SeglakeError, match=r"catalog table shared_sql.silver_entities already points at .*"
                                           r"tiktok_profiles/silver/entities.*own catalog.database"):
        run_stages(spark, other, ["features"], "r1", echo=lambda line: None)
