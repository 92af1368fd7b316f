"""A fresh lakehouse per test (the session's one local ``spark`` fixture is in the root conftest.py,
shared with the doctests of lib/seglake)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The standalone cluster, its small input and the local-mode reference run, shared by the cluster
# and fault tests (session-scoped: started once).
from standalone import local_reference, small_events, standalone_cluster  # noqa: F401,E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def lakehouse(tmp_path: Path) -> Path:
    path = tmp_path / "lakehouse"
    path.mkdir()
    return path


def write_config(folder: Path, text: str, name: str = "case.yaml") -> Path:
    """Write a YAML config into ``folder`` and return its path."""
    path = folder / name
    path.write_text(text)
    return path


def shared_file(relative: str) -> Path:
    """A file of ../shared/data; the test skips with the reason when it is absent (CI has it)."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"reference data {path} is absent")
    return path
