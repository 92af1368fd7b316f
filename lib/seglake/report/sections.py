"""What a report section is: a function from one run's tables to HTML sections and a chart count.

:func:`seglake.report.build_report` calls each :data:`Section` of its list in order with one
:class:`ReportRun` and concatenates what they return. Segmentation sections are in
:mod:`seglake.report.segmentation`; a use case writes its own next to its stages and passes the
list it wants, so the report package never imports a use case.

Every read goes through :mod:`seglake.core.tables` (:func:`~seglake.core.tables.read_run`,
:func:`~seglake.core.tables.read_delta`): a section never opens a Delta table itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from seglake.core.config import SeglakeConfig
from seglake.core.tables import Tables, delta_exists, read_delta, read_run, read_run_rows
from seglake.report.html import SMALL_ROWS


class Rendered(NamedTuple):
    """What one section function returns.

    Attributes
    ----------
    parts : list of str
        Complete ``<section>`` elements (usually from :func:`seglake.report.html.section`), in
        page order; empty for a check that only raises.
    charts : int
        How many plotly charts ``parts`` hold (summed into the stage's ``details['charts']``).

    Examples
    --------
    >>> Rendered(["<section><h2>Run record</h2></section>"], 0).charts
    0
    """

    parts: list[str]
    charts: int = 0


@dataclass
class ReportRun:
    """One run's tables as the report sections see them, each small gold table read once.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
    run_id : str

    Attributes
    ----------
    tables : Tables
        The config's table layout (:meth:`Tables.of`).
    """

    spark: SparkSession
    config: SeglakeConfig
    run_id: str
    tables: Tables = field(init=False)
    _gold: dict[tuple[str, int], pd.DataFrame | None] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.tables = Tables.of(self.config)

    def gold(self, name: str, limit: int = SMALL_ROWS) -> pd.DataFrame | None:
        """This run's rows of the small gold table ``gold/<name>`` as pandas (cached).

        Parameters
        ----------
        name : str
            A run-keyed gold table: ``sweep``, ``profiles``, ``runs``, ``als_metrics``, ...
        limit : int
            At most this many rows reach the driver (see :func:`seglake.report.html.small`).

        Returns
        -------
        pandas.DataFrame or None
            ``None`` when the table is absent or has no rows for the run: the section says so.
        """
        key = (name, limit)
        if key not in self._gold:
            self._gold[key] = read_run_rows(self.spark, self.tables.gold(name), self.run_id, limit)
        return self._gold[key]

    def rows(self, path: str, produced_by: str | None = None) -> DataFrame | None:
        """This run's rows of the run-keyed table at ``path`` as a Spark frame, to aggregate first.

        Parameters
        ----------
        path : str
            E.g. ``run.tables.gold("clusters")``.
        produced_by : str, optional
            The stage writing it: a missing table (or run) is then a one-line
            :class:`~seglake.core.errors.SeglakeError` instead of ``None``.

        Returns
        -------
        pyspark.sql.DataFrame or None
        """
        return read_run(self.spark, path, self.run_id, produced_by)

    def table(self, path: str, produced_by: str) -> DataFrame | None:
        """A whole table (bronze or an ingest log: not keyed by run), ``None`` when it is absent.

        Parameters
        ----------
        path : str
        produced_by : str
            The stage writing it (named by the error should the table vanish while read).

        Returns
        -------
        pyspark.sql.DataFrame or None
        """
        if not delta_exists(self.spark, path):
            return None
        return read_delta(self.spark, path, produced_by)


Section = Callable[[ReportRun], Rendered]
"""A report section: ``section(run) -> Rendered``. It may raise
:class:`~seglake.core.errors.SeglakeError` to refuse a run that lacks the tables it needs."""
