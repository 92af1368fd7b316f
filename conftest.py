"""Fixtures shared by ``tests/`` and the doctests of ``lib/seglake`` (``pytest --doctest-modules``).

One local SparkSession serves the whole test session, whichever of the two asks for it first.
Doctests see it as the name ``spark``; only a doctest whose examples use that name starts it, so
the examples of pure helpers (``choose_k``, ``psi``, ...) run without a JVM.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    from seglake.core.session import build_spark

    session = build_spark(
        "seglake-tests",
        "local[2]",
        {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
         "spark.ui.showConsoleProgress": "false"},
    )
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

