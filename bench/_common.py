"""What every benchmark in ``bench/`` sets up the same way.

Importing this module puts ``lib/`` first on ``sys.path`` (the benchmarks run from a checkout, with
or without the package installed), so a benchmark imports it before any ``seglake`` module:

* :func:`parser`, :func:`scratch`: the command line and a temporary folder removed at the end;
* :func:`session`: the benchmark's ``local[2]`` SparkSession, UI and progress bar off by default;
* :func:`entities_config`, :func:`blob_entities`: a synthetic entity table and a config around it;
* :func:`noop`, :func:`best_of`, :func:`timed_noop`, :func:`spark_cpu_seconds`: timing, best of a
  few runs, and the CPU time of Spark's tasks;
* :class:`TreeSampler`: the peak memory of a process tree;
* :func:`machine`, :func:`print_measurements`, :func:`append_section`: what the tables print.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
GIB = 2**30


# --- command line, scratch folder, session --------------------------------------------------------

def parser(doc: str, scratch: bool = False, **sizes: int) -> argparse.ArgumentParser:
    """The benchmark's argument parser, described by the first line of its docstring ``doc``;
    ``scratch`` adds ``--scratch`` (the parent of the temporary folder, see :func:`scratch`), and
    each of ``sizes`` an integer option with its default (``entities=1_000_000``: ``--entities``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in sizes.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    if scratch:
        ap.add_argument("--scratch", default=None, help="scratch directory (default: a temp dir)")
    return ap


@contextmanager
def scratch(name: str, parent: str | None = None) -> Iterator[Path]:
    """A fresh ``seglake-bench-<name>-*`` folder under ``parent`` (default: the temp dir), removed
    on exit however the benchmark ends."""
    root = Path(tempfile.mkdtemp(prefix=f"seglake-bench-{name}-", dir=parent))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def session(app_name: str, master: str | None = "local[2]", conf: dict[str, str] | None = None, *,
            ui: bool = False, progress: bool = False):
    """The benchmark's SparkSession (Delta enabled); use it in ``with`` to stop it at the end.

    ``master=None`` keeps :func:`seglake.core.session.build_spark`'s choice (``local[*]``). ``ui``
    is the Spark UI (its REST API reports task CPU time), unless ``conf`` sets it; ``progress`` the
    console progress bar, whatever ``conf`` says.
    """
    from seglake.core.session import build_spark

    settings = {"spark.ui.enabled": str(ui).lower(), **(conf or {}),
                "spark.ui.showConsoleProgress": str(progress).lower()}
    return build_spark(app_name, master, settings)


# --- synthetic entities ---------------------------------------------------------------------------

def entities_config(folder: Path, name: str, lakehouse: Path,
                    entities: str = "{path: unused, id: entity_id}", **sections: str):
    """Write ``<folder>/<name>.yaml``, an ``entities`` config with the given YAML flow ``sections``
    (``sweep="{k_min: 2, k_max: 9}"``), and load it."""
    from seglake.core.config import load_config

    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nlakehouse: {lakehouse}\nentities: {entities}\n"
                    + "".join(f"{key}: {value}\n" for key, value in sections.items()))
    return load_config(path)


def blob_entities(spark, rows: int, centers, spread: float, seed: int, id_format: str,
                  raw: Callable, skewed: bool = False):
    """``rows`` entities (``entity_id``, ``f0`` ..) around ``centers`` (one row a blob, one column a
    feature): blob ``b`` at ``centers[b] + N(0, spread²)``, turned into a raw feature by ``raw`` (a
    Column function, e.g. ``F.expm1``: heavy-tailed values that the log1p transform brings back).

    Blobs are drawn uniformly, or with ``skewed`` as ``floor(u² · blobs)``: unequal sizes, the first
    blob largest. Ids are ``id_format`` of 0, 1, ... (``"u%09d"``); ``seed`` seeds every column.
    """
    from pyspark.sql import functions as F

    blobs, features = centers.shape
    draw = F.rand(seed)
    blob = F.least(F.floor((draw * draw if skewed else draw) * blobs), F.lit(blobs - 1)).cast("int")
    frame = spark.range(rows).select(F.format_string(id_format, "id").alias("entity_id"),
                                     blob.alias("_blob"))
    for j in range(features):
        center = F.element_at(F.array(*[F.lit(float(v)) for v in centers[:, j]]), F.col("_blob") + 1)
        frame = frame.withColumn(f"f{j}", raw(center + F.randn(seed + j + 1) * spread))
    return frame.drop("_blob")


# --- timing ---------------------------------------------------------------------------------------

def noop(df) -> None:
    """Compute ``df`` in full into Spark's no-op sink (nothing written)."""
    df.write.format("noop").mode("overwrite").save()


def best_of(repeat: int, run: Callable[[], object],
            cpu_seconds: Callable[[], float] = time.process_time) -> tuple[float, float]:
    """Smallest wall and CPU time of ``repeat`` runs of ``run`` (on a shared machine the minimum is
    the run least disturbed by other work); ``cpu_seconds`` is the CPU clock to read."""
    walls, cpus = [], []
    for _ in range(repeat):
        cpu_before, started = cpu_seconds(), time.perf_counter()
        run()
        walls.append(time.perf_counter() - started)
        cpus.append(cpu_seconds() - cpu_before)
    return min(walls), min(cpus)


def timed_noop(df, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs of ``df`` into the no-op sink."""
    return best_of(repeat, lambda: noop(df))[0]


def spark_cpu_seconds(spark) -> float:
    """CPU seconds of all finished Spark tasks so far (``executorCpuTime`` from the UI's REST API).

    On a shared machine wall time depends on what the neighbours run; task CPU time much less so.
    """
    url = f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}/stages"
    with urllib.request.urlopen(url + "?status=complete") as response:
        stages = json.load(response)
    return sum(stage["executorCpuTime"] for stage in stages) / 1e9


# --- memory ---------------------------------------------------------------------------------------

class TreeSampler(threading.Thread):
    """Every ``interval`` s: (time, driver RSS, worker RSS, 1-min load) of a process tree.

    Workers are the Python processes Spark forks (``pyspark.daemon``, ``pyspark.worker``); the
    driver is every other process of the tree (the Python driver, the launcher and the JVM).
    """

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        super().__init__(daemon=True)
        self.root, self.interval, self.samples = psutil.Process(pid), interval, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._stop_event.is_set():
            driver = workers = 0
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    is_worker = any("pyspark.daemon" in part or "pyspark.worker" in part
                                    for part in process.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if is_worker:
                    workers += rss
                else:
                    driver += rss
            self.samples.append((time.time(), driver, workers, os.getloadavg()[0]))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def peaks(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, float]:
        """Peak driver and worker RSS in GiB between two wall-clock times."""
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-1:]
        return (max((s[1] for s in inside), default=0) / GIB,
                max((s[2] for s in inside), default=0) / GIB)


# --- what the tables print ------------------------------------------------------------------------

def machine(memory: bool = True, arch: bool = True) -> str:
    """``"2 cores, 24 GiB, x86_64, Python 3.11.9"``; ``memory`` and ``arch`` leave their part out."""
    parts = [f"{os.cpu_count()} cores"]
    if memory:
        import psutil

        parts.append(f"{psutil.virtual_memory().total / GIB:.0f} GiB")
    if arch:
        parts.append(platform.machine())
    return ", ".join(parts + [f"Python {platform.python_version()}"])


def print_measurements(rows: list[dict], no_ratio: str = "") -> None:
    """The markdown table of ``dict(what, rows, seconds[, ratio])`` rows: seconds, rows/s and the
    time over the baseline's (``no_ratio`` where a row has none)."""
    print("| measurement | rows | seconds | rows/s | × baseline time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else no_ratio
        print(f"| {row['what']} | {row['rows']:,} | {row['seconds']:.1f} | "
              f"{row['rows'] / row['seconds']:,.0f} | {ratio} |")


def append_section(markdown: str | Path, section: str) -> None:
    """Append a dated section to ``markdown`` (``BENCHMARKS.md``) after a blank line."""
    with open(markdown, "a") as out:
        out.write("\n" + section)
