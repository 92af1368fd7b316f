"""Fixtures shared by ``tests/`` and the doctests of ``lib/seglake`` (``pytest --doctest-modules``).

One local SparkSession serves the whole test session, whichever of the two asks for it first.
Doctests see it as the name ``spark``; only a doctest whose examples use that name starts it, so
the examples of pure helpers (``choose_k``, ``psi``, ...) run without a JVM.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

_JVM_PID: int | None = None  # the session's JVM, once a test has started it


@pytest.fixture(scope="session")
def spark():
    from seglake.core.session import build_spark

    session = build_spark(
        "seglake-tests",
        "local[2]",
        {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
         "spark.ui.showConsoleProgress": "false"},
    )
    global _JVM_PID
    _JVM_PID = int(session.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def _spark_in_doctests(request: pytest.FixtureRequest) -> None:
    """Put the session's ``spark`` into ``doctest_namespace`` for doctests that use it."""
    item = request.node
    if not isinstance(item, pytest.DoctestItem):
        return
    if any("spark" in example.source for example in item.dtest.examples):
        request.getfixturevalue("doctest_namespace")["spark"] = request.getfixturevalue("spark")



# A test that runs this long is probably stuck in the JVM (a CI run once waited 30 min on a
# GaussianMixture fit that takes 3 s alone). Then the JVM's own view is what the next reader needs:
# its threads are dumped to a file and the ones that say why are printed into the test's captured
# output, which the failure report shows.
STUCK_AFTER = float(os.environ.get("SEGLAKE_STUCK_AFTER", "600"))
TELLING_THREADS = ("dag-scheduler-event-loop", "Executor task launch worker", "Thread-")
TELLING_FRAMES = ("org.apache.spark.ml.", "JobWaiter", "DAGScheduler.runJob", "AdaptiveSparkPlanExec",
                  "SparkContext.runJob")


def telling_threads(dump: str, frames: int = 14) -> str:
    """The threads of a ``jcmd Thread.print`` dump that show where a stuck job waits (the
    scheduler's loop, running tasks, the py4j threads that called into Spark), cut to ``frames``.

    Examples
    --------
    >>> dump = ('"main" #1 prio=5\\n   java.lang.Thread.State: RUNNABLE\\n\\n'
    ...         '"dag-scheduler-event-loop" #40\\n   java.lang.Thread.State: WAITING\\n\\tat x.y\\n')
    >>> print(telling_threads(dump))
    "dag-scheduler-event-loop" #40
       java.lang.Thread.State: WAITING
    \tat x.y
    """
    kept = []
    for block in dump.split("\n\n"):
        head = block.lstrip("\n").split("\n", 1)[0]
        if any(name in head for name in TELLING_THREADS) or any(f in block for f in TELLING_FRAMES):
            kept.append("\n".join(block.strip("\n").split("\n")[:frames]))
    return "\n".join(kept)


def _dump_jvm(pid: int, test: str) -> None:
    import subprocess
    import tempfile

    try:
        dump = subprocess.run(["jcmd", str(pid), "Thread.print"], capture_output=True, text=True,
                              timeout=60).stdout
        heap = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        print(f"[stuck test] {test}: could not dump the JVM ({error})", flush=True)
        return
    path = Path(tempfile.gettempdir()) / f"seglake-jvm-threads-{pid}.txt"
    path.write_text(dump)
    print(f"[stuck test] {test} has run {STUCK_AFTER:.0f} s; JVM {pid} threads in {path}\n{heap}\n"
          f"{telling_threads(dump)}", flush=True)


@pytest.fixture(autouse=True)
def _stuck_jvm_watchdog(request: pytest.FixtureRequest):
    """Dump the test session's JVM threads when a test runs past :data:`STUCK_AFTER` seconds."""
    if _JVM_PID is None:
        yield
        return
    timer = threading.Timer(STUCK_AFTER, _dump_jvm, (_JVM_PID, request.node.nodeid))
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
