"""The whole pipeline on a real Spark standalone cluster (a master and two 1-core workers on
127.0.0.1), submitted with ``spark-submit.sh``, gives the same results as local mode."""

from __future__ import annotations

import pytest

from standalone import assert_same_outputs, entity_duplicates, run_outputs, run_submit, submit_args

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_run(standalone_cluster, small_events, tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster-run")
    output = run_submit(submit_args(standalone_cluster.url, small_events, work / "lake", "ref", work),
                        work, work / "driver.log")
    return work / "lake", output


def test_the_run_used_both_workers(standalone_cluster, cluster_run):
    finished = standalone_cluster.state()["completedapps"]
    assert [app["state"] for app in finished if app["name"] == "seglake-tiktok_users"] == ["FINISHED"]
    for worker in standalone_cluster.workers:  # each worker ran an executor of the app
        assert list(worker.work_dir.glob("app-*/*/stderr")), worker.work_dir
    _, output = cluster_run
    for stage in ("ingest", "features", "sweep", "segment", "density", "explain", "report"):
        assert f"[{stage}] done" in output


def test_cluster_results_equal_local_mode(spark, cluster_run, local_reference):
    lakehouse, _ = cluster_run
    on_cluster = run_outputs(spark, lakehouse, "ref")
    assert len(on_cluster["segments"]) > 200  # about 330 users, the filter keeps about 80%
    assert_same_outputs(on_cluster, run_outputs(spark, local_reference, "ref"))


def test_report_written_and_no_duplicate_entities(spark, cluster_run):
    lakehouse, _ = cluster_run
    assert (lakehouse / "tiktok_users" / "reports" / "ref" / "index.html").stat().st_size > 100_000
    assert entity_duplicates(spark, lakehouse, "segments") == 0
    assert entity_duplicates(spark, lakehouse, "clusters") == 0
