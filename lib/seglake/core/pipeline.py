"""Pipelines as data: per source kind, the ordered stages, each declaring the tables it reads and
writes; and the runner, which checks the plan before any Spark job and prints one line per stage.

A table name is ``<layer>/<table>`` under the use case's root (``bronze/events``,
``silver/entities``, ``gold/sweep``) or ``models/<file or folder>`` in the run's model folder
(``models/manifest.json``). ``a|b`` reads either. The pipeline table itself lives in
:mod:`seglake.pipelines`, which registers it here, so this module imports no stage.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import SparkSession

from seglake.core.catalog import register as register_tables
from seglake.core.config import SeglakeConfig, check_run_id
from seglake.core.costs import counting
from seglake.core.errors import SeglakeError, first_line
from seglake.core.run_cache import run_cache
from seglake.core.stages import StageResult
from seglake.core.tables import record_costs

StageFunction = Callable[[SparkSession, SeglakeConfig, str], StageResult]


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline: the function that runs it and the tables it reads and writes.

    >>> Stage("sweep", "seglake.segmentation.sweep:sweep", reads=("silver/entities",)).module
    'seglake.segmentation.sweep'
    """

    name: str
    function: str                  # "module:function", imported only when the stage runs
    reads: tuple[str, ...] = ()    # every one must exist or be written by an earlier stage
    writes: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # read when present (documented, not checked)

    @property
    def module(self) -> str:
        return self.function.split(":")[0]

    def load(self) -> StageFunction:
        """The callable behind the stage (imports its module, and its heavy libraries, now).

        Examples
        --------
        >>> Stage("drift", "seglake.segmentation.drift:psi").load().__name__
        'psi'
        """
        module, function = self.function.split(":")
        return getattr(importlib.import_module(module), function)


# source kind → ordered stages; filled by seglake.pipelines, which the package imports first.
PIPELINES: dict[str, tuple[Stage, ...]] = {}
KINDS = ("classifier", "ratings", "texts", "events", "entities")


def register(kind: str, stages: tuple[Stage, ...]) -> None:
    """Declare the ordered stages of a source kind (one of :data:`KINDS`).

    Examples
    --------
    >>> register("logs", ())
    Traceback (most recent call last):
    ValueError: unknown source kind 'logs'; known: classifier, ratings, texts, events, entities
    >>> register("events", (Stage("sweep", "m:f"), Stage("sweep", "m:g")))
    Traceback (most recent call last):
    ValueError: events: a stage name appears twice in ['sweep', 'sweep']
    """
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(KINDS)}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"{kind}: a stage name appears twice in {names}")
    PIPELINES[kind] = tuple(stages)


def source_kind(config: SeglakeConfig) -> str:
    """Which pipeline a config runs: the first of its sections ``classifier``, ``ratings``,
    ``texts``, ``events``, ``entities`` that is set.

    Examples
    --------
    >>> source_kind(SeglakeConfig.model_validate(
    ...     {"name": "demo", "lakehouse": "/lake", "entities": {"path": "e.csv", "id": "uid"}}))
    'entities'
    """
    for kind in KINDS:
        if getattr(config, kind, None) is not None:
            return kind
    raise SeglakeError(f"{config.source_file}: no source section (one of {', '.join(KINDS)})")


def pipeline_for(config: SeglakeConfig) -> tuple[Stage, ...]:
    """The ordered stages of the config's source kind.

    Examples
    --------
    >>> config = SeglakeConfig.model_validate(
    ...     {"name": "demo", "lakehouse": "/lake", "entities": {"path": "e.csv", "id": "uid"}})
    >>> pipeline_for(config)[1].name, pipeline_for(config)[1].reads
    ('sweep', ('silver/entities',))
    """
    return PIPELINES[source_kind(config)]


def known_stages() -> list[str]:
    """Every stage name of every pipeline, in first-seen order.

    Examples
    --------
    >>> known_stages()[:3]
    ['ingest', 'features', 'sweep']
    """
    return list(dict.fromkeys(s.name for stages in PIPELINES.values() for s in stages))


def stages_for(config: SeglakeConfig) -> list[str]:
    """The names of the stages a config supports, in order.

    Examples
    --------
    >>> stages_for(SeglakeConfig.model_validate(
    ...     {"name": "demo", "lakehouse": "/lake", "entities": {"path": "e.csv", "id": "uid"}}))
    ['features', 'sweep', 'density', 'segment', 'explain', 'report']
    """
    return [s.name for s in pipeline_for(config)]


def plan_stages(config: SeglakeConfig, stages: list[str] | None = None) -> list[str]:
    """The stages to run, in pipeline order: ``stages`` (default: all the config supports).

    Raises
    ------
    SeglakeError
        For an unknown stage name or a stage the config's source does not support.

    Examples
    --------
    >>> config = SeglakeConfig.model_validate({"name": "demo", "lakehouse": "/lake",
    ...     "source_file": "demo.yaml", "entities": {"path": "e.csv", "id": "uid"}})
    >>> plan_stages(config, ["segment", "sweep"])  # pipeline order, whatever the order asked
    ['sweep', 'segment']
    >>> plan_stages(config, ["ingest"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: demo.yaml: stage(s) ingest do not apply to this config ...
    """
    supported = stages_for(config)
    wanted = stages or supported
    known = known_stages()
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise SeglakeError(f"--stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(known)}")
    unsupported = [s for s in wanted if s not in supported]
    if unsupported:
        raise SeglakeError(
            f"{config.source_file}: stage(s) {', '.join(unsupported)} do not apply to this config "
            f"(it supports: {', '.join(supported)})"
        )
    return [s for s in supported if s in wanted]


def missing_input(planned: list[Stage], exists: Callable[[str], bool]) -> tuple[Stage, str] | None:
    """The first (stage, table) of the plan whose input neither exists nor is written by an earlier
    planned stage; None when every input is there.

    >>> sweep = Stage("sweep", "m:f", reads=("silver/entities",), writes=("gold/sweep",))
    >>> segment = Stage("segment", "m:f", reads=("gold/sweep",))
    >>> missing_input([sweep, segment], lambda table: table == "silver/entities") is None
    True
    >>> stage, table = missing_input([segment], lambda table: False)
    >>> stage.name, table
    ('segment', 'gold/sweep')
    """
    written: set[str] = set()
    for stage in planned:
        for table in stage.reads:
            if not any(c in written or exists(c) for c in table.split("|")):
                return stage, table
        written.update(stage.writes)
    return None


def check_inputs(spark: SparkSession, config: SeglakeConfig, names: list[str], run_id: str) -> None:
    """Fail before any Spark job when a planned stage would read a table nothing provides.

    Raises
    ------
    SeglakeError
        One line naming the stage, the missing table and the stage that writes it.

    Examples
    --------
    >>> config = SeglakeConfig.model_validate({"name": "demo", "lakehouse": "/nonexistent/lake",
    ...     "source_file": "demo.yaml", "entities": {"path": "e.csv", "id": "uid"}})
    >>> check_inputs(spark, config, ["features", "sweep"], "r1")  # features writes what sweep reads
    >>> check_inputs(spark, config, ["sweep"], "r1")  # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    seglake.core.errors.SeglakeError: demo.yaml: stage 'sweep' of run r1 reads silver/entities
    under ..., which does not exist: run the 'features' stage first
    """
    from seglake.core.artifacts import path_exists
    from seglake.core.tables import Tables, delta_exists

    tables, pipeline = Tables.of(config), pipeline_for(config)

    def exists(table: str) -> bool:
        layer, _, name = table.partition("/")
        if layer == "models":
            return path_exists(spark, f"{tables.models(run_id)}/{name}")
        return delta_exists(spark, tables.path(layer, name))

    found = missing_input([s for s in pipeline if s.name in names], exists)
    if found is None:
        return
    stage, table = found
    choices = table.split("|")
    writers = [s.name for s in pipeline if any(c in s.writes for c in choices)]
    hint = (f"run the '{writers[0]}' stage first" if writers
            else "this pipeline does not write it")
    raise SeglakeError(f"{config.source_file}: stage '{stage.name}' of run {run_id} reads "
                       f"{' or '.join(choices)} under {tables.root}, which does not exist: {hint}")


# After any of these stages of an events or entities run, the run's Spark-free segmenter is
# exported again into models/<run_id>/segmenter: it carries the sweep's transform and centers,
# the density surrogates and the explain stage's descriptions. Named like a stage function, so this
# module imports no serving code (and its MLflow) until a run needs it.
SEGMENTER_STAGES = ("segment", "density", "explain")
SEGMENTER_EXPORT = "seglake.serving.export:save_run_segmenter"


def export_segmenter_after(spark: SparkSession, config: SeglakeConfig, names: list[str], run_id: str,
                           echo: Callable[[str], None]) -> str | None:
    """Export the run's segmenter when a segmenter stage ran; the folder, or None.

    Runs when ``segment`` ran in this call, or ``density``/``explain`` re-ran on a run whose
    segmenter exists already (so it gains the new surrogates or names). A run the segmenter cannot
    serve (another clustering algorithm) gets a one-line note, not a failure.
    """
    from seglake.core.artifacts import path_exists
    from seglake.core.tables import Tables

    if source_kind(config) not in ("events", "entities") or not set(names) & set(SEGMENTER_STAGES):
        return None
    folder = f"{Tables.of(config).models(run_id)}/segmenter"
    if "segment" not in names and not path_exists(spark, f"{folder}/MLmodel"):
        return None
    module, function = SEGMENTER_EXPORT.split(":")
    try:
        saved = getattr(importlib.import_module(module), function)(spark, config, run_id)
    except SeglakeError as err:
        echo(f"[segmenter] not exported: {err}")
        return None
    echo(f"[segmenter] run {run_id}: Spark-free segmenter (MLflow pyfunc) saved to {saved}")
    return saved


def default_run_id() -> str:
    """A sortable UTC timestamp; pass an explicit run id to make a re-run replace its rows.

    Examples
    --------
    >>> import re
    >>> bool(re.fullmatch("[0-9]{8}T[0-9]{6}Z", default_run_id()))  # e.g. 20260301T120000Z
    True
    """
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def run_stages(
    spark: SparkSession,
    config: SeglakeConfig,
    stages: list[str] | None = None,
    run_id: str | None = None,
    echo: Callable[[str], None] = print,
    on_stage: Callable[[StageResult], None] | None = None,
) -> list[StageResult]:
    """Run the named stages (default: all the config supports) in pipeline order.

    This runs without MLflow; :func:`seglake.core.tracking.run_tracked` wraps it in a tracked run.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
    stages : list of str, optional
        Stage names; unknown names and stages the source does not support are errors.
    run_id : str, optional
        Keys every gold write; defaults to a UTC timestamp.
    echo : callable
        Where progress lines go.
    on_stage : callable, optional
        Called with each stage's result as soon as the stage finishes (so a caller keeps the
        results of the stages that finished when a later one fails).

    Returns
    -------
    list of StageResult
    """
    run_id = check_run_id(run_id or default_run_id())
    names = plan_stages(config, stages)
    check_inputs(spark, config, names, run_id)
    by_name = {s.name: s for s in pipeline_for(config)}
    results = []
    failed = True
    try:
        # The entity table and the models the stages pass on are read once per run (run_cache).
        with run_cache():
            for name in names:
                echo(f"[{name}] start: {config.name}, run {run_id}")
                started = time.monotonic()
                with counting(spark, name) as cost:
                    result = by_name[name].load()(spark, config, run_id)
                result.seconds, result.cost = time.monotonic() - started, cost
                echo(result.line())
                results.append(result)
                if on_stage is not None:
                    on_stage(result)
            export_segmenter_after(spark, config, names, run_id, echo)
        failed = False
    finally:
        # What each finished stage cost, in gold/runs: one commit for the run, after its stages.
        try:
            record_costs(spark, config, run_id, results)
        except Exception as err:
            if not failed:
                raise
            echo(f"[run] could not record the finished stages' costs in gold/runs: {first_line(err)}")
    registered = register_tables(spark, config, {t for name in names for t in by_name[name].writes})
    if registered:
        echo(f"[catalog] {config.catalog.database}: "
             + ", ".join(name.rsplit(".", 1)[1] for name in registered))
    return results
