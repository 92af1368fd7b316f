"""What one run reads in several stages, read once and kept until the run ends.

:func:`seglake.core.pipeline.run_stages` opens :func:`run_cache` around a run's stages. Inside it:

* :func:`entity_snapshot` reads a Delta table (the entity table, which sweep, segment, density and
  explain all read) once per version and keeps it persisted (memory, spilling to disk) for the later
  stages, instead of each stage scanning Delta again and building the same rows;
* :func:`remember_model` / :func:`remembered_model` hand a model saved by one stage (the sweep's
  transform and clustering model) to a later stage of the same run (segment), which would otherwise
  load it back from storage with a dozen small Spark jobs. The later stage still verifies the saved
  files' checksums against the manifest first, so what it uses is what the run wrote.

Outside a run (a stage function called alone, a notebook) nothing is kept: every read goes to
storage, as it does when each stage runs as its own ``seglake run``. The results are the same either
way; ``tests/test_run_cache.py`` checks that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from seglake.core.tables import latest_version, read_delta, read_version


@dataclass
class RunCache:
    """The frames and models one run keeps: frames by (path, version), models by folder."""

    frames: dict[tuple[str, int], DataFrame] = field(default_factory=dict)
    models: dict[str, object] = field(default_factory=dict)

    def release(self) -> None:
        for frame in self.frames.values():
            frame.unpersist()
        self.frames.clear()
        self.models.clear()


_current: ContextVar[RunCache | None] = ContextVar("seglake_run_cache", default=None)


@contextmanager
def run_cache() -> Iterator[RunCache]:
    """Keep what the stages inside read more than once; release it (unpersist) at the end.

    Examples
    --------
    >>> with run_cache() as cache:
    ...     current() is cache
    True
    >>> current() is None
    True
    """
    cache = RunCache()
    token = _current.set(cache)
    try:
        yield cache
    finally:
        _current.reset(token)
        cache.release()


def current() -> RunCache | None:
    """The open run's cache, or None outside a run."""
    return _current.get()


def entity_snapshot(spark: SparkSession, path: str, produced_by: str,
                    version: int | None = None) -> tuple[DataFrame, int]:
    """A Delta table as of ``version`` (default: its latest) and that version; inside a run, the
    first read of a version is persisted and later reads of it return the same frame.

    Raises
    ------
    SeglakeError
        No Delta table at ``path`` (naming ``produced_by``, the stage that writes it).

    Examples
    --------
    >>> import shutil, tempfile
    >>> path = tempfile.mkdtemp() + "/silver/entities"
    >>> spark.range(3).write.format("delta").save(path)
    >>> with run_cache():
    ...     first, version = entity_snapshot(spark, path, "features")
    ...     again, _ = entity_snapshot(spark, path, "features", version)
    ...     first is again, first.is_cached, version, again.count()
    (True, True, 0, 3)
    >>> first.is_cached  # released with the run
    False
    >>> entity_snapshot(spark, path, "features")[0] is entity_snapshot(spark, path, "features")[0]
    False
    >>> shutil.rmtree(path.removesuffix("/silver/entities"))
    """
    if version is None:
        read_delta(spark, path, produced_by)  # fails with the stage to run when absent
        version = latest_version(spark, path)
    cache = current()
    key = (path, int(version))
    if cache is not None and key in cache.frames:
        return cache.frames[key], key[1]
    frame = read_version(spark, path, key[1])
    if cache is not None:
        for stale in [k for k in cache.frames if k[0] == path]:  # an older version of the table
            cache.frames.pop(stale).unpersist()
        frame = cache.frames[key] = frame.persist(StorageLevel.MEMORY_AND_DISK)
    return frame, key[1]


def remember_model(folder: str, model) -> None:
    """Keep ``model``, just saved to ``folder``, for later stages of the open run (if any)."""
    cache = current()
    if cache is not None:
        cache.models[folder] = model


def remembered_model(folder: str, model_class):
    """The model this run saved to ``folder``, if it is a ``model_class``; else None.

    Examples
    --------
    >>> from pyspark.ml.feature import SQLTransformer
    >>> with run_cache():
    ...     remember_model("/lake/models/r1/transform", SQLTransformer())
    ...     type(remembered_model("/lake/models/r1/transform", SQLTransformer)).__name__
    'SQLTransformer'
    >>> remembered_model("/lake/models/r1/transform", SQLTransformer) is None  # outside the run
    True
    """
    cache = current()
    model = cache.models.get(folder) if cache is not None else None
    return model if isinstance(model, model_class) else None
