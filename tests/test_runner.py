"""The pipeline table and the runner's check of every stage's inputs before any Spark job."""

from __future__ import annotations

import pytest
from conftest import write_config

from seglake.core.config import load_config
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import PIPELINES, run_stages, stages_for
from seglake.core.tables import Tables


def _entities_config(tmp_path, lakehouse):
    (tmp_path / "accounts.csv").write_text("id,followers\na,1\nb,2\n")
    text = f"name: t\nlakehouse: {lakehouse}\nentities: {{path: {tmp_path / 'accounts.csv'}, id: id}}\n"
    return load_config(write_config(tmp_path, text))


def test_every_source_kind_has_its_ordered_stages(tmp_path, lakehouse):
    assert {kind: [s.name for s in stages] for kind, stages in PIPELINES.items()} == {
        "events": ["ingest", "features", "sweep", "density", "segment", "explain", "report"],
        "entities": ["features", "sweep", "density", "segment", "explain", "report"],
        "ratings": ["ratings", "sweep", "segment", "tastes", "assign", "report"],
        "texts": ["text", "report"],
        "classifier": ["classify"],
    }
    assert stages_for(_entities_config(tmp_path, lakehouse)) == [s.name for s in PIPELINES["entities"]]


def test_one_table_has_one_writing_stage_per_pipeline():
    # gold/runs is the run log every model stage appends its own row to; everything else has one owner
    for kind, stages in PIPELINES.items():
        owners: dict[str, list[str]] = {}
        for stage in stages:
            for table in stage.writes:
                owners.setdefault(table, []).append(stage.name)
        shared = {t: o for t, o in owners.items() if len(o) > 1 and t != "gold/runs"}
        assert not shared, f"{kind}: {shared}"


def test_every_read_is_written_earlier_in_its_pipeline():
    # Apart from the source files each pipeline starts from, a full run provides all its own inputs.
    for kind, stages in PIPELINES.items():
        written: set[str] = set()
        for stage in stages:
            for table in stage.reads:
                assert any(t in written for t in table.split("|")), f"{kind}: {stage.name} reads {table}"
            written.update(stage.writes)


def test_a_missing_input_fails_in_one_line_before_any_spark_job(spark, tmp_path, lakehouse):
    config = _entities_config(tmp_path, lakehouse)
    spark.sparkContext.setJobGroup("runner-check", "the runner's input check")
    try:
        with pytest.raises(SeglakeError) as err:
            run_stages(spark, config, ["segment"], "r1", echo=lambda line: None)
        jobs = spark.sparkContext.statusTracker().getJobIdsForGroup("runner-check")
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    message = str(err.value)
    assert "\n" not in message and "stage 'segment' of run r1 reads models/manifest.json" in message
    assert "run the 'sweep' stage first" in message
    assert jobs == []


def test_inputs_written_by_an_earlier_planned_stage_pass_the_check(spark, tmp_path, lakehouse):
    config = _entities_config(tmp_path, lakehouse)
    [features] = run_stages(spark, config, ["features"], "r1", echo=lambda line: None)
    assert features.rows_out == 2
    with pytest.raises(SeglakeError) as err:  # silver exists now; the model files still do not
        run_stages(spark, config, ["density", "segment"], "r1", echo=lambda line: None)
    assert "stage 'segment'" in str(err.value) and "models/manifest.json" in str(err.value)


def test_each_stage_says_and_records_the_spark_jobs_stages_and_delta_commits_it_cost(
        spark, tmp_path, lakehouse):
    config = _entities_config(tmp_path, lakehouse)
    lines: list[str] = []
    [features] = run_stages(spark, config, ["features"], "r1", echo=lines.append)
    cost = features.cost
    assert cost.jobs >= 1 and cost.stages >= 1 and cost.tasks >= cost.stages
    assert cost.commits == 2  # silver/entities and silver/rejected, each replaced in one commit
    assert f"{cost.jobs} Spark jobs, {cost.stages} stages, {cost.tasks} tasks, 2 Delta commits" in lines[-1]
    # Not counted: jobs of this session outside the stage.
    spark.range(5).count()
    [row] = spark.read.format("delta").load(Tables.of(config).gold("runs")).collect()
    assert (row.stage, row.spark_jobs, row.spark_stages, row.spark_tasks, row.delta_commits) == (
        "features", cost.jobs, cost.stages, cost.tasks, 2)
    assert row.rows_out == 2 and row.seconds == features.seconds

    again = run_stages(spark, config, ["features"], "r1", echo=lambda line: None)  # re-run: replaced
    runs = spark.read.format("delta").load(Tables.of(config).gold("runs")).collect()
    assert len(runs) == 1 and runs[0].seconds == again[0].seconds
