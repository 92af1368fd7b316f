"""Helpers that let the same notebook run on Databricks and locally (CI, a laptop).

On Databricks, widgets come from ``dbutils.widgets`` and the session is the cluster's; elsewhere a
widget falls back to the environment variable ``SEGLAKE_<NAME>`` and then to its default, and the
session comes from :func:`seglake.core.session.build_spark`. Every notebook starts with
:func:`start`, which reads the three common widgets and returns the session, config and run id.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

if TYPE_CHECKING:
    from seglake.core.config import SeglakeConfig


def _dbutils():
    try:  # only defined inside a Databricks notebook
        from IPython import get_ipython

        return get_ipython().user_ns["dbutils"]  # type: ignore[union-attr]
    except Exception:
        return None


def widget(name: str, default: str) -> str:
    """A notebook parameter: Databricks widget, else ``SEGLAKE_<NAME>``, else ``default``."""
    dbutils = _dbutils()
    if dbutils is not None:
        dbutils.widgets.text(name, default)
        return dbutils.widgets.get(name)
    return os.environ.get(f"SEGLAKE_{name.upper()}", default)


def session(app_name: str) -> SparkSession:
    """The running session on Databricks, or a local one with Delta enabled."""
    from seglake.core.session import build_spark

    return build_spark(app_name)


def start(default_config: str) -> tuple[SparkSession, SeglakeConfig, str]:
    """The first cell of every notebook: the session, the config and the run id from the widgets.

    Reads the ``config``, ``run_id`` and ``overrides`` widgets (outside Databricks:
    ``SEGLAKE_CONFIG``, ``SEGLAKE_RUN_ID`` and ``SEGLAKE_OVERRIDES``, see :func:`widget`), loads
    and validates the config with the overrides applied, and builds (or joins) the session named
    ``seglake-<config name>``.

    Parameters
    ----------
    default_config : str
        The config file when the ``config`` widget is not set, e.g. ``"../conf/tiktok_users.yaml"``
        (relative to the notebook's folder, a Databricks notebook's working directory).

    Returns
    -------
    spark : SparkSession
        The cluster's session on Databricks, else a local one with Delta enabled.
    config : SeglakeConfig
        The validated config.
    run_id : str
        The ``run_id`` widget, ``"notebook"`` by default; the same id replaces that run's rows.

    Raises
    ------
    SeglakeError
        For a missing or invalid config file or a bad override, naming the file and key.

    Examples
    --------
    >>> spark, config, run_id = start("../conf/tiktok_users.yaml")  # doctest: +SKIP

    With ``SEGLAKE_OVERRIDES="lakehouse=/tmp/lake;sweep.k_max=12"`` (or the same text in the
    ``overrides`` widget) both keys are overridden: overrides are ``;``-separated ``key=value``.
    """
    from seglake.core.config import load_config

    overrides = [o for o in widget("overrides", "").split(";") if o.strip()]
    config = load_config(widget("config", default_config), overrides)
    run_id = widget("run_id", "notebook")
    return session(f"seglake-{config.name}"), config, run_id


def show(frame, rows: int = 20) -> None:
    """``display`` on Databricks, a plain table elsewhere (for small gold tables only)."""
    ipython_display = None
    try:
        from IPython import get_ipython

        ipython_display = get_ipython().user_ns.get("display")  # type: ignore[union-attr]
    except Exception:
        pass
    if ipython_display is not None and _dbutils() is not None:
        ipython_display(frame)
    else:
        frame.show(rows, truncate=80)


def gold(spark: SparkSession, config, table: str, run_id: str):
    """One run's rows of a gold table (small tables: sweep, profiles, descriptions, ...)."""
    from pyspark.sql import functions as F

    from seglake.core.tables import Tables, read_delta

    return read_delta(spark, Tables.of(config).gold(table), table).where(F.col("run_id") == run_id)
