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


# `make test` runs two pytest workers (pytest-xdist, --dist loadgroup). Each test file is one group,
# so a module's fixtures (a whole pipeline run, often) are built once, on one worker; the cluster
# and fault tests share one group, so the standalone cluster and the local-mode reference run they
# compare against are started once too. Doctests are grouped by their module.
STANDALONE_GROUP = {"test_cluster.py", "test_faults.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("standalone" if name in STANDALONE_GROUP else name))
