"""Faults: a worker killed mid-stage, a driver killed during a gold write, two runs on one lakehouse.

Each ends with the rows a quiet run would have written (the local-mode reference of the same input),
no duplicates and every Delta table readable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from standalone import (
    LAKE_NAME,
    ROOT,
    SEGMENT_TABLES,
    SMALL_RUN,
    USERS_CONFIG,
    assert_same_outputs,
    entity_duplicates,
    free_port,
    popen_submit,
    run_outputs,
    spark_env,
    start_cluster,
    submit_args,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEGMENTING = "ingest,features,sweep,segment"


def _json(url: str):
    with urllib.request.urlopen(url, timeout=30) as page:
        return json.load(page)


def _active_tasks(ui_port: int) -> int:
    """Tasks running right now in the driver's application (its REST API), 0 when unreachable."""
    try:
        base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
        app = _json(base)[0]["id"]
        return sum(stage["numActiveTasks"] for stage in _json(f"{base}/{app}/stages?status=active"))
    except (OSError, ValueError, IndexError, KeyError):
        return 0


def _kill(process: subprocess.Popen | None) -> None:
    """SIGKILL a driver's process group if it still runs (a failed test leaves nothing behind)."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def _wait_for_text(log: Path, text: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"'{text}' never appeared (exit {process.poll()}):\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(1)


def test_killed_worker_mid_stage_gives_identical_output(spark, small_events, local_reference, tmp_path):
    cluster = start_cluster(tmp_path / "cluster")
    driver = None
    try:
        ui_port = free_port()
        command = submit_args(cluster.url, small_events, tmp_path / "lake", "ref", tmp_path,
                              stages=SEGMENTING, conf={"spark.ui.port": str(ui_port)})
        log = tmp_path / "driver.log"
        driver = popen_submit(command, tmp_path, log)
        # The sweep fits one KMeans per k on data cached on both executors: a killed worker loses
        # running tasks, cached blocks and shuffle files, which Spark must recompute from lineage.
        _wait_for_text(log, "[sweep] start", driver, 900)
        deadline = time.monotonic() + 300
        while _active_tasks(ui_port) == 0:
            assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        cluster.workers[0].kill()
        code = driver.wait(timeout=1200)
        output = log.read_text(errors="replace")
        assert code == 0, output[-4000:]
        assert cluster.alive_workers() == 1  # the kill happened while the job ran on
        assert "[segment] done" in output
    finally:
        _kill(driver)
        cluster.stop()
    assert_same_outputs(run_outputs(spark, tmp_path / "lake", "ref", SEGMENT_TABLES),
                        run_outputs(spark, local_reference, "ref", SEGMENT_TABLES))


def seglake_run(lakehouse: Path, events: Path, run_id: str, stages: str, work: Path,
                tracking: bool = True) -> list[str]:
    """A ``seglake run`` command line (local mode, one core) for the small users run."""
    command = [str(ROOT / ".venv" / "bin" / "seglake"), "run", "--config", str(USERS_CONFIG),
               *([] if tracking else ["--no-tracking"]),
               "--run-id", run_id, "--stages", stages, "--master", "local[1]",
               "--set", f"events.path={events}", "--set", f"lakehouse={lakehouse}",
               "--set", "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false'}"]
    for override in SMALL_RUN:
        command += ["--set", override]
    return command


def _data_files(table: Path) -> set[Path]:
    return {p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def _latest_version(spark, table: Path) -> int:
    return DeltaTable.forPath(spark, str(table)).history(1).select("version").first()[0]


def test_driver_killed_during_a_gold_write_leaves_the_previous_version(spark, small_events,
                                                                        local_reference, tmp_path):
    expected = run_outputs(spark, local_reference, "ref", SEGMENT_TABLES)
    caught = False
    for attempt in range(3):  # the write lasts a moment: try again if the kill came too late
        lakehouse = tmp_path / f"lake{attempt}"
        shutil.copytree(local_reference, lakehouse)
        segments = lakehouse / LAKE_NAME / "gold" / "segments"
        before_version = _latest_version(spark, segments)
        before_files = _data_files(segments)
        work = tmp_path / f"work{attempt}"
        work.mkdir()
        log = work / "driver.log"
        driver = subprocess.Popen(seglake_run(lakehouse, small_events, "ref", "segment", work),
                                  cwd=work, env=spark_env(work), stdout=log.open("w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # New data files under the table before a new commit: the write is under way.
            deadline = time.monotonic() + 900
            while (driver.poll() is None and time.monotonic() < deadline
                   and not (_data_files(segments) - before_files)):
                time.sleep(0.02)
        finally:
            _kill(driver)  # kill -9 the driver: Python and its JVM
        after_version = _latest_version(spark, segments)
        assert after_version in (before_version, before_version + 1)
        # Committed or not, the table reads, and the run's rows are whole: the old or the new ones.
        assert_same_outputs(run_outputs(spark, lakehouse, "ref", ("segments",)),
                            {"segments": expected["segments"]})
        if after_version == before_version and _data_files(segments) - before_files:
            caught = True
            break
    assert caught, "the driver was never killed between writing data files and committing them"

    rerun = subprocess.run(seglake_run(lakehouse, small_events, "ref", "segment", work), cwd=work,
                           env=spark_env(work), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _latest_version(spark, segments) > before_version
    assert_same_outputs(run_outputs(spark, lakehouse, "ref", SEGMENT_TABLES), expected)
    assert entity_duplicates(spark, lakehouse, "segments") == 0


def test_two_runs_at_once_on_one_lakehouse_both_succeed(spark, small_events, local_reference, tmp_path):
    lakehouse = tmp_path / "lake"
    drivers = {}
    for run_id in ("a", "b"):
        work = tmp_path / run_id
        work.mkdir()
        log = work / "driver.log"
        drivers[run_id] = (subprocess.Popen(
            # Tracked: both create <lakehouse>/mlflow.db (SQLite) at once, which tracking serialises.
            seglake_run(lakehouse, small_events, run_id, SEGMENTING, work), cwd=work,
            env=spark_env(work), stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True), log)
    try:
        for run_id, (driver, log) in drivers.items():
            code = driver.wait(timeout=1500)
            assert code == 0, f"run {run_id}: " + log.read_text(errors="replace")[-3000:]
    finally:
        for driver, _ in drivers.values():
            _kill(driver)

    expected = run_outputs(spark, local_reference, "ref", SEGMENT_TABLES)
    for run_id in ("a", "b"):
        # Both ingested the same new files at once: bronze holds them once, the log one row each.
        assert_same_outputs(run_outputs(spark, lakehouse, run_id, SEGMENT_TABLES), expected)
        assert entity_duplicates(spark, lakehouse, "segments") == 0
    root = lakehouse / LAKE_NAME
    bronze = spark.read.format("delta").load(str(root / "bronze" / "events"))
    reference_bronze = spark.read.format("delta").load(f"{local_reference}/{LAKE_NAME}/bronze/events")
    assert bronze.count() == reference_bronze.count()
    runs = spark.read.format("delta").load(str(root / "gold" / "runs"))
    assert {(r.run_id, r.stage) for r in runs.collect()} == {
        (run_id, stage) for run_id in ("a", "b") for stage in SEGMENTING.split(",")}
