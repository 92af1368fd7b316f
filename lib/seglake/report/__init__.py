"""The run report: one self-contained HTML file per run, built from the small gold tables only.

``<lakehouse>/<name>/reports/<run_id>/index.html`` (:meth:`seglake.core.tables.Tables.report`):
plotly charts with the plotly.js bundle embedded once, so the file opens offline and can be mailed.
Sections whose table a run did not produce say so instead of disappearing.

:func:`build_report` writes the page from a list of sections
(:data:`seglake.report.sections.Section`: ``section(run) -> Rendered``), by default
:data:`~seglake.report.segmentation.SEGMENTATION_SECTIONS`: it is the ``report`` stage of an events
or entities config. A use case with a page of its own (MovieLens ``ratings``, text-cluster
``texts``) has its own ``report`` stage function, which calls :func:`build_report` with its list,
mixing the segmentation sections with its own: the dependency points from the use case to this
package, never back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from seglake.core.config import SeglakeConfig
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import Tables
from seglake.report.html import page
from seglake.report.sections import Rendered, ReportRun, Section
from seglake.report.segmentation import SEGMENTATION_SECTIONS

__all__ = ["SEGMENTATION_SECTIONS", "Rendered", "ReportRun", "Section", "build_report", "report_path"]

# Config sections whose use case has its own report stage (and so its own list of sections).
OWN_REPORT = ("ratings", "texts")


def report_path(config: SeglakeConfig, run_id: str) -> Path:
    """Where a run's report is written: :meth:`seglake.core.tables.Tables.report`.

    Parameters
    ----------
    config : SeglakeConfig
    run_id : str

    Returns
    -------
    pathlib.Path
        ``<lakehouse>/<name>/reports/<run_id>/index.html``, a local path.

    Raises
    ------
    SeglakeError
        The lakehouse is not a local folder (reports are read by people, not Spark).
    """
    return Tables.of(config).report(run_id)


def build_report(
    spark: SparkSession,
    config: SeglakeConfig,
    run_id: str,
    sections: Sequence[Section] | None = None,
) -> StageResult:
    """Write the run's HTML report from its gold tables.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
    run_id : str
    sections : sequence of Section, optional
        The page's sections in order, each called once with one shared :class:`ReportRun`.
        Default: :data:`SEGMENTATION_SECTIONS` (choice of k, segments, density map, explanations,
        ingest reconciliation, run record), for an events or entities config.

    Returns
    -------
    StageResult
        ``details['path']`` is the written file; ``details['charts']`` the number of charts.

    Raises
    ------
    SeglakeError
        A section refused the run (e.g. no gold rows for it), or ``sections`` was left out for a
        ``ratings`` or ``texts`` config, whose report is its use case's own stage function.
    """
    started = time.monotonic()
    if sections is None:
        kind = next((k for k in OWN_REPORT if getattr(config, k, None) is not None), None)
        if kind is not None:
            raise SeglakeError(f"{config.source_file}: a '{kind}' config's report stage is the "
                               "report function of its use case, not the segmentation report")
        sections = SEGMENTATION_SECTIONS
    run = ReportRun(spark, config, run_id)
    parts, charts = [], 0
    for build in sections:
        rendered = build(run)
        parts.extend(rendered.parts)
        charts += rendered.charts
    path = report_path(config, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(config, run_id, "".join(parts)))
    return StageResult("report", 0, charts, time.monotonic() - started,
                       {"path": str(path), "charts": charts}, f"{charts} charts in {path}")
