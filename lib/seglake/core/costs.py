"""What a stage cost: the Spark jobs, stages and tasks it ran and the Delta commits it made.

Spark's fixed cost is per job and per stage (scheduling, task launch, a shuffle's files), so these
counts, not the seconds alone, say whether a stage pays for its data or for overhead.

- Jobs are tagged with a job tag for the duration of :func:`counting` (``SparkContext.addJobTag``;
  threads started through :func:`inheritable` carry the tag too) and read back from Spark's status
  tracker (``getJobIdsForTag``): only this stage's jobs, even when another run shares the session.
  A stage is counted when at least one of its tasks ran; stages whose shuffle output was reused
  (Spark's "skipped" stages) cost nothing and are not counted.
- Delta commits are counted where seglake commits: :mod:`seglake.core.tables` calls
  :func:`committed` after every successful commit, and every Delta write goes through it.

The status tracker keeps the last ``spark.ui.retainedJobs`` / ``retainedStages`` (1,000 by default);
:data:`RETAINED` raises both in the sessions seglake builds so that a long stage is counted whole.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import SparkSession

# Spark settings that keep enough finished jobs and stages for a whole stage to be counted.
RETAINED = {"spark.ui.retainedJobs": "20000", "spark.ui.retainedStages": "50000"}

_commit_lock = threading.Lock()
_committed = 0


def committed(count: int = 1) -> None:
    """Record ``count`` Delta commits (called by :mod:`seglake.core.tables` after each one)."""
    global _committed
    with _commit_lock:
        _committed += count


def commits_so_far() -> int:
    """Delta commits made by this process so far.

    Examples
    --------
    >>> before = commits_so_far()
    >>> committed()
    >>> commits_so_far() - before
    1
    """
    with _commit_lock:
        return _committed


@dataclass
class Cost:
    """Spark jobs, stages (that ran at least one task) and tasks, and Delta commits, of one stage.

    ``jobs`` is None when the session has no status tracker (Spark Connect).
    """

    jobs: int | None = None
    stages: int | None = None
    tasks: int | None = None
    commits: int = 0

    def text(self) -> str:
        """The part of a stage's one-line summary that says what it cost.

        Examples
        --------
        >>> Cost(jobs=12, stages=20, tasks=31, commits=2).text()
        '12 Spark jobs, 20 stages, 31 tasks, 2 Delta commits'
        >>> Cost(commits=1).text()
        'Spark jobs not counted (no status tracker), 1 Delta commit'
        """
        commits = f"{self.commits} Delta commit{'' if self.commits == 1 else 's'}"
        if self.jobs is None:
            return f"Spark jobs not counted (no status tracker), {commits}"
        return f"{self.jobs} Spark jobs, {self.stages} stages, {self.tasks} tasks, {commits}"


def _job_costs(spark: SparkSession, tag: str) -> tuple[int, int, int] | None:
    try:
        tracker = spark.sparkContext._jsc.sc().statusTracker()
    except Exception:  # Spark Connect: no SparkContext on the client
        return None
    python_tracker = spark.sparkContext.statusTracker()
    jobs = list(tracker.getJobIdsForTag(tag))
    stage_ids: set[int] = set()
    for job in jobs:
        info = python_tracker.getJobInfo(job)
        if info is not None:
            stage_ids.update(info.stageIds)
    stages = tasks = 0
    for stage in stage_ids:
        info = python_tracker.getStageInfo(stage)
        if info is not None and info.numCompletedTasks + info.numFailedTasks > 0:
            stages += 1
            tasks += info.numCompletedTasks + info.numFailedTasks
    return len(jobs), stages, tasks


@contextmanager
def counting(spark: SparkSession, label: str) -> Iterator[Cost]:
    """Count the Spark jobs and Delta commits made inside the block; the yielded :class:`Cost` is
    filled in when the block ends (also when it raises).

    Examples
    --------
    >>> with counting(spark, "doctest") as cost:
    ...     _ = spark.range(10).count()
    >>> cost.jobs >= 1 and cost.stages >= 1 and cost.commits
    0
    """
    tag = f"seglake-{label}-{uuid.uuid4().hex[:12]}"
    cost, context = Cost(), spark.sparkContext
    before = commits_so_far()
    context.addJobTag(tag)
    try:
        yield cost
    finally:
        context.removeJobTag(tag)
        cost.commits = commits_so_far() - before
        found = _job_costs(spark, tag)
        if found is not None:
            cost.jobs, cost.stages, cost.tasks = found


def inheritable(spark: SparkSession, function: Callable) -> Callable:
    """``function`` wrapped so that a thread running it carries the caller's Spark job tags and
    local properties (pinned-thread mode): jobs it starts are counted with the caller's stage.

    Every call gets its own copy of the caller's local properties. pyspark's
    ``inheritable_thread_target`` hands one ``Properties`` object to every thread, and Spark SQL sets
    and clears ``spark.sql.execution.id`` on it around each query, so two threads running queries at
    once read each other's half-cleared id (``NumberFormatException: Cannot parse null string`` in a
    KMeans fit of the concurrent sweep).

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with counting(spark, "threads") as cost:
    ...     with ThreadPoolExecutor(2) as pool:
    ...         counted = list(pool.map(inheritable(spark, lambda n: spark.range(n).count()),
    ...                                 range(1, 25)))
    >>> counted == list(range(1, 25)), cost.jobs >= 24
    (True, True)
    """
    context = spark.sparkContext._jsc.sc()
    properties = context.getLocalProperties().clone()
    tags = set(spark.getTags())

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        context.setLocalProperties(properties.clone())
        for tag in tags:
            spark.addTag(tag)
        return function(*args, **kwargs)

    return wrapped
