"""A fresh lakehouse per test (the session's one local ``spark`` fixture is in the root conftest.py,
shared with the doctests of lib/seglake)."""

from __future__ import annotations

from contextlib import contextmanager
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


@contextmanager
def jvm_console(spark):
    """Collect what the JVM logs to its console (stderr) while the block runs; yields a StringWriter.

    The JVM is a child process that got its stderr when the session started, so ``os.dup2`` or
    ``capfd`` in this process cannot see what it prints. This adds a second appender beside
    ``console`` on log4j's root logger (``core/log4j2.properties``): it receives the same events,
    the Janino "Failed to compile" traces among them, whatever pytest's capture mode.
    """
    jvm = spark._jvm
    log4j = jvm.org.apache.logging.log4j
    context = log4j.LogManager.getContext(False)
    config = context.getConfiguration()
    layout = log4j.core.layout.PatternLayout.newBuilder().withPattern("%p %c: %m%n%ex").build()
    writer = jvm.java.io.StringWriter()
    appender = log4j.core.appender.WriterAppender.createAppender(
        layout, None, writer, "test-console-copy", False, True)
    appender.start()
    config.addAppender(appender)
    config.getRootLogger().addAppender(appender, None, None)
    context.updateLoggers()
    try:
        yield writer
    finally:
        config.getRootLogger().removeAppender("test-console-copy")
        context.updateLoggers()
        appender.stop()
