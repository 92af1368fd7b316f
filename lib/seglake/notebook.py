"""Helpers that let the same notebook run on Databricks and locally (CI, a laptop).

On Databricks, widgets come from ``dbutils.widgets`` and the session is the cluster's; elsewhere a
widget falls back to the environment variable ``SEGLAKE_<NAME>`` and then to its default, and the
session comes from :func:`seglake.core.session.build_spark`.
"""

from __future__ import annotations

import os

from pyspark.sql import SparkSession


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
