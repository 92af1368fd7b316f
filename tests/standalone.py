"""A real Spark standalone cluster on 127.0.0.1 for the cluster and fault tests.

One master and two workers (1 core, 2 GiB each) are started from the installed pyspark's own
``spark-class``, on ports free at start-up (other Spark processes may share the machine), each in its
own process group with its own work and local dirs, and torn down by killing those groups. Jobs are
submitted through the repository's ``spark-submit.sh``, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyspark
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
SPARK_HOME = Path(pyspark.__file__).parent
SUBMIT = ROOT / "spark-submit.sh"
USERS_CONFIG = ROOT / "conf" / "tiktok_users.yaml"

# Small settings so that a whole run takes a minute or two on a loaded 2-core machine.
SMALL_RUN = ["sweep.k_max=3", "density.sample_size=1000", "density.hdbscan.min_cluster_size=15",
             "density.umap.n_neighbors=30", "density.stability_fraction=0", "density.surrogate_trees=20",
             "explain.trees=20", "sweep.stability_resamples=0"]
# The same Spark settings on every master, so that the master is the only thing that differs.
SUBMIT_CONF = {"spark.sql.shuffle.partitions": "4", "spark.ui.showConsoleProgress": "false",
               "spark.driver.memory": "2g", "spark.executor.memory": "1g",
               "spark.sql.session.timeZone": "UTC", "spark.task.maxFailures": "4",
               "spark.databricks.delta.snapshotPartitions": "2"}


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spark_env(work: Path) -> dict[str, str]:
    """Environment of every Spark process of a test: loopback, the venv's Python, private dirs."""
    env = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
               SPARK_LOCAL_DIRS=str(work / "local"), PYSPARK_PYTHON=str(PYTHON),
               SPARK_DAEMON_MEMORY="512m", SPARK_CONF_DIR=str(work / "conf"))
    (work / "local").mkdir(parents=True, exist_ok=True)
    (work / "conf").mkdir(parents=True, exist_ok=True)  # empty: no stray spark-defaults.conf
    return env


def _wait_for(condition, seconds: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}" for log in logs if log.exists())
    raise TimeoutError(f"{what} not ready after {seconds:.0f} s\n{tails}")


@dataclass
class Worker:
    process: subprocess.Popen
    work_dir: Path
    log: Path

    def kill(self) -> None:
        """SIGKILL the worker's process group: the Worker JVM, its executors and their Python workers."""
        _kill_group(self.process)


@dataclass
class StandaloneCluster:
    """A running master with its workers; :meth:`stop` kills every process it started."""

    work: Path
    master_port: int
    webui_port: int
    master: subprocess.Popen | None = None
    workers: list[Worker] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def state(self) -> dict:
        """The master's JSON status page (workers, active and completed applications)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as page:
            return json.load(page)

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.state()["workers"] if w["state"] == "ALIVE")
        except OSError:
            return 0

    def start(self, workers: int = 2) -> "StandaloneCluster":
        env = spark_env(self.work)
        spark_class = str(SPARK_HOME / "bin" / "spark-class")
        log = self.work / "master.log"
        self.master = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(self.master_port), "--webui-port", str(self.webui_port)],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for(lambda: self._master_up(), 120, "standalone master", [log])
        for index in range(workers):
            work_dir = self.work / f"worker{index}"
            work_dir.mkdir(parents=True, exist_ok=True)
            worker_log = self.work / f"worker{index}.log"
            process = subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--port", str(free_port()), "--webui-port", str(free_port()), "--cores", "1",
                 "--memory", "2g", "--work-dir", str(work_dir), self.url],
                env=dict(env, SPARK_LOCAL_DIRS=str(work_dir / "local")),
                stdout=worker_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            self.workers.append(Worker(process, work_dir, worker_log))
        _wait_for(lambda: self.alive_workers() >= workers, 120, f"{workers} workers",
                  [self.work / "master.log", *[w.log for w in self.workers]])
        return self

    def _master_up(self) -> bool:
        try:
            self.state()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Kill every process group this cluster started (also after a failed test)."""
        for worker in self.workers:
            _kill_group(worker.process)
        if self.master is not None:
            _kill_group(self.master)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def start_cluster(work: Path, workers: int = 2) -> StandaloneCluster:
    """Start a master and ``workers`` workers under ``work``; the caller must :meth:`stop` it."""
    cluster = StandaloneCluster(work, free_port(), free_port())
    try:
        return cluster.start(workers)
    except BaseException:
        cluster.stop()
        raise


def submit_args(master: str, events: Path, lakehouse: Path, run_id: str, work: Path,
                stages: str | None = None, extra: list[str] | None = None,
                conf: dict[str, str] | None = None) -> list[str]:
    """The ``spark-submit.sh ... jobs/run.py ...`` command line of a small users run."""
    settings = dict(SUBMIT_CONF, **{"spark.local.dir": str(work / "driver-local")}, **(conf or {}))
    command = [str(SUBMIT), "--master", master]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(ROOT / "jobs" / "run.py"), "--config", str(USERS_CONFIG), "--run-id", run_id,
                "--set", f"events.path={events}", "--set", f"lakehouse={lakehouse}"]
    for override in SMALL_RUN + (extra or []):
        command += ["--set", override]
    if stages:
        command += ["--stages", stages]
    return command


def submit_env(work: Path) -> dict[str, str]:
    """Environment of a ``spark-submit.sh`` driver in a test."""
    return spark_env(work)


def popen_submit(command: list[str], work: Path, log: Path) -> subprocess.Popen:
    """Start a driver in its own process group, output to ``log``."""
    return subprocess.Popen(command, cwd=work, env=submit_env(work), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_submit(command: list[str], work: Path, log: Path, timeout: float = 1800) -> str:
    """Run a driver to its end; a failure raises with the tail of its output."""
    process = popen_submit(command, work, log)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise
    output = log.read_text(errors="replace")
    if code != 0:
        raise AssertionError(f"spark-submit exited {code}:\n{output[-4000:]}")
    return output


def python_tracebacks(text: str) -> bool:
    """True when ``text`` holds a Python or Java stack trace."""
    return "Traceback (most recent call last)" in text or "\tat org.apache" in text or "\tat java." in text


LAKE_NAME = "tiktok_users"  # the users config's name: its tables live under <lakehouse>/tiktok_users


EVERY_TABLE = ("ingest_log", "quarantine", "sweep", "segments", "profiles", "clusters", "descriptions")
SEGMENT_TABLES = EVERY_TABLE[:5]  # what a run up to the segment stage writes


def run_outputs(spark, lakehouse: Path, run_id: str, names: tuple[str, ...] = EVERY_TABLE) -> dict:
    """A run's results as sorted pandas frames: what "the same results" means for these tests.

    Ingest counts per file and quarantine reasons; the sweep's metrics per k; every entity's segment
    and distance; the segment profiles; every entity's density cluster; the descriptions.
    """
    from pyspark.sql import functions as F

    root = f"{lakehouse}/{LAKE_NAME}"

    def table(layer: str, name: str, columns: list[str], where_run: bool = True):
        frame = spark.read.format("delta").load(f"{root}/{layer}/{name}")
        if where_run:
            frame = frame.where(F.col("run_id") == run_id)
        return frame.select(*columns).toPandas().sort_values(columns).reset_index(drop=True)

    def quarantine():
        frame = spark.read.format("delta").load(f"{root}/bronze/quarantine").groupBy("reason").count()
        return frame.toPandas().sort_values("reason").reset_index(drop=True)

    readers = {
        "ingest_log": lambda: table("bronze", "ingest_log",
                                    ["file", "input_rows", "bronze_rows", "quarantined_rows"], False),
        "quarantine": quarantine,
        "sweep": lambda: table("gold", "sweep", ["k", "wssse", "sse", "silhouette", "silhouette_exact",
                                                 "min_cluster_share", "chosen"]),
        "segments": lambda: table("gold", "segments", ["entity_id", "segment", "distance"]),
        "profiles": lambda: table("gold", "profiles", ["segment", "feature", "size", "share", "mean",
                                                       "median", "p10", "p90"]),
        "clusters": lambda: table("gold", "clusters", ["entity_id", "cluster", "in_sample"]),
        "descriptions": lambda: table("gold", "descriptions", ["kind", "target", "size", "description"]),
    }
    return {name: readers[name]() for name in names}


def assert_same_outputs(actual: dict, expected: dict) -> None:
    """Equal tables; floats within 1e-9 relative (sums may be added in another order)."""
    import pandas as pd

    for name, frame in expected.items():
        pd.testing.assert_frame_equal(actual[name], frame, check_exact=False, rtol=1e-9, atol=1e-12,
                                      obj=name)


def entity_duplicates(spark, lakehouse: Path, table: str) -> int:
    """Rows of a gold table beyond one per (run, entity): 0 when no run was written twice."""
    frame = spark.read.format("delta").load(f"{lakehouse}/{LAKE_NAME}/gold/{table}")
    return frame.count() - frame.select("run_id", "entity_id").distinct().count()


# --- fixtures (imported by conftest.py, so one of each per test session) -------------------------

def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test session, also when pytest-xdist runs the
    session in several workers: they share the session's temporary root, and a file lock lets the
    first one build while the others wait (the cluster and fault tests, in two files that may land
    on two workers, compare against the same reference run of the same input files)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():  # a worker whose build failed left no mark: build again
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def small_events(tmp_path_factory) -> Path:
    """20k synthetic events (1% corrupt) in Parquet: about 330 users, a run takes a minute or two."""
    from seglake.synth import generate

    folder = built_once(tmp_path_factory, "small-events",
                        lambda folder: generate(folder, 20_000, seed=5, corrupt_rate=0.01))
    return folder / "events"


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A master and two 1-core workers on 127.0.0.1 for the whole session, killed at its end."""
    cluster = start_cluster(tmp_path_factory.mktemp("standalone"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def local_reference(tmp_path_factory, small_events) -> Path:
    """The lakehouse of the whole pipeline run by ``spark-submit.sh --master local[2]``, run id ``ref``."""
    def run(work: Path) -> None:
        run_submit(submit_args("local[2]", small_events, work / "lake", "ref", work), work,
                   work / "driver.log")

    return built_once(tmp_path_factory, "local-reference", run) / "lake"


if __name__ == "__main__":  # start a cluster by hand: python tests/standalone.py /tmp/cluster/c
    started = start_cluster(Path(sys.argv[1]))
    print(started.url, f"http://127.0.0.1:{started.webui_port}", flush=True)
    try:
        signal.pause()
    finally:
        started.stop()
