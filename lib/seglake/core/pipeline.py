"""The ordered stages of a run and the loop that runs them, printing one line per stage."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from datetime import datetime, timezone

from pyspark.sql import SparkSession

from seglake.core.config import SeglakeConfig, check_run_id
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult

Stage = Callable[[SparkSession, SeglakeConfig, str], StageResult]

# Every stage, in run order, as "module:function" so that importing the pipeline does not import
# every stage's heavy libraries (UMAP, SHAP, ...). A config runs those that apply to its source.
STAGES: dict[str, str] = {
    "ingest": "seglake.segmentation.ingest:ingest",
    "ratings": "seglake.usecases.movielens.ratings:ingest_ratings",
    "features": "seglake.segmentation.features:build_entities",
    "sweep": "seglake.segmentation.sweep:sweep",
    "segment": "seglake.segmentation.segment:segment",
    "tastes": "seglake.usecases.movielens.tastes:tastes",
    "assign": "seglake.usecases.movielens.assigner:assign",
    "density": "seglake.segmentation.density:density",
    "explain": "seglake.segmentation.explain:explain",
    "classify": "seglake.usecases.claims.train:train_classifier",
    "text": "seglake.usecases.text.clusters:text_clusters",
    "report": "seglake.report:build_report",
}
EVENTS_ONLY = {"ingest"}
# A config with a `classifier` section trains a classifier instead of segmenting.
CLASSIFIER_STAGES = ["classify"]
# A config with a `ratings` section (MovieLens layout) embeds users with ALS, then segments them.
RATINGS_STAGES = ["ratings", "sweep", "segment", "tastes", "assign", "report"]
RATINGS_ONLY = {"ratings", "tastes", "assign"}
# A config with a `texts` section clusters short texts (embeddings, KMeans per group, keywords).
TEXT_STAGES = ["text", "report"]
TEXT_ONLY = {"text"}


def stage_function(name: str) -> Stage:
    """The callable behind a stage name."""
    module, function = STAGES[name].split(":")
    return getattr(importlib.import_module(module), function)


def stages_for(config: SeglakeConfig) -> list[str]:
    """The stages a config supports, in order.

    ``ingest`` only applies to an events source; a config with a ``classifier`` section runs the
    classifier stage only; a ``ratings`` config runs :data:`RATINGS_STAGES`, a ``texts`` config
    :data:`TEXT_STAGES`; every other config runs the segmentation stages.
    """
    if config.classifier is not None:
        return list(CLASSIFIER_STAGES)
    if config.ratings is not None:
        return list(RATINGS_STAGES)
    if config.texts is not None:
        return list(TEXT_STAGES)
    return [s for s in STAGES
            if s not in CLASSIFIER_STAGES and s not in RATINGS_ONLY and s not in TEXT_ONLY
            and (config.events is not None or s not in EVENTS_ONLY)]


def default_run_id() -> str:
    """A sortable UTC timestamp; pass an explicit run id to make a re-run replace its rows."""
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
    results = []
    for name in plan_stages(config, stages):
        echo(f"[{name}] start: {config.name}, run {run_id}")
        started = time.monotonic()
        result = stage_function(name)(spark, config, run_id)
        result.seconds = time.monotonic() - started
        echo(result.line())
        results.append(result)
        if on_stage is not None:
            on_stage(result)
    return results


def plan_stages(config: SeglakeConfig, stages: list[str] | None = None) -> list[str]:
    """The stages to run, in pipeline order: ``stages`` (default: all the config supports).

    Raises
    ------
    SeglakeError
        For an unknown stage name or a stage the config's source does not support.
    """
    supported = stages_for(config)
    wanted = stages or supported
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise SeglakeError(f"--stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    unsupported = [s for s in wanted if s not in supported]
    if unsupported:
        raise SeglakeError(
            f"{config.source_file}: stage(s) {', '.join(unsupported)} do not apply to this config "
            f"(it supports: {', '.join(supported)})"
        )
    return [s for s in STAGES if s in wanted]
