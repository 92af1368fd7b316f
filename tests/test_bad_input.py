"""Broken raw files (see ``corpus.py``) through ``seglake run --stages ingest`` as a user runs it:
each ends in quarantined rows that reconcile, or in one error line naming the file and exit code 2;
never a Python or Java stack trace.

Two cases (one quarantined, one refused) run the installed ``seglake`` command in a new process,
exactly as a user does; the others call the same CLI entry point in the tests' session (a JVM start
per case was most of this file's time), with Python's output captured by pytest and the JVM's log
by :func:`conftest.jvm_console`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import jvm_console
from corpus import build
from seglake.cli import main
from standalone import ROOT, USERS_CONFIG, python_tracebacks, spark_env

pytestmark = [pytest.mark.faults]

CASES = ("truncated_csv", "semicolon_delimiter", "binary_garbage", "ten_mb_line", "latin1_text",
         "utf16_encoded", "wrong_types", "zero_bytes", "truncated_parquet", "mixed_folder")
# What the JVM and Spark print on every start; anything else on stderr must be seglake's own line.
START_UP_NOISE = re.compile(r"^(WARNING: Using incubator modules|Setting default log level|To adjust "
                            r"logging level)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"))


IN_A_NEW_PROCESS = ("wrong_types", "binary_garbage")


def _arguments(folder: Path, fmt: str, lakehouse: Path) -> list[str]:
    return ["run", "--config", str(USERS_CONFIG), "--stages", "ingest", "--run-id", "bad",
            "--master", "local[1]", "--no-tracking",
            "--set", f"events.path={folder}", "--set", f"events.format={fmt}",
            "--set", f"lakehouse={lakehouse}",
            "--set", "spark.conf={spark.ui.enabled: 'false', spark.ui.showConsoleProgress: 'false', "
                     "spark.sql.shuffle.partitions: '2'}"]


def ingest(spark, capsys, name: str, folder: Path, fmt: str, lakehouse: Path, work: Path):
    """``seglake run --stages ingest`` on ``folder``: (exit code, stdout, stderr)."""
    arguments = _arguments(folder, fmt, lakehouse)
    if name in IN_A_NEW_PROCESS:
        result = subprocess.run([str(ROOT / ".venv" / "bin" / "seglake"), *arguments], cwd=work,
                                env=spark_env(work), capture_output=True, text=True, timeout=600)
        return result.returncode, result.stdout, result.stderr
    capsys.readouterr()
    with jvm_console(spark) as console:
        code = main(arguments)
    captured = capsys.readouterr()
    jvm = str(console.toString())
    return code, captured.out, captured.err + jvm


@pytest.mark.parametrize("name", CASES)
def test_broken_input_is_quarantined_or_named(spark, capsys, corpus, name, tmp_path):
    case, folder = corpus[name]
    lakehouse = tmp_path / "lake"
    code, out, err = ingest(spark, capsys, name, folder, case.format, lakehouse, tmp_path)
    stderr = [line for line in err.splitlines() if line.strip()]
    assert not python_tracebacks(err + out), err[-3000:]
    ours = [line for line in stderr if not START_UP_NOISE.match(line)]
    if case.outcome == "error":
        assert code == 2, out[-2000:] + err[-2000:]
        assert len(ours) == 1 and ours[0].startswith("seglake: error: "), stderr
        assert case.names_file in ours[0], ours[0]
        return
    assert code == 0, err[-3000:]
    assert ours == [], ours
    assert "(reconciled)" in out
    root = lakehouse / "tiktok_users" / "bronze"
    log = spark.read.format("delta").load(str(root / "ingest_log"))
    totals = log.agg(F.sum("input_rows"), F.sum("bronze_rows"), F.sum("quarantined_rows")).first()
    assert totals[0] == case.rows  # every data row of every file is counted, none lost
    bronze = spark.read.format("delta").load(str(root / "events")).count()
    quarantine = spark.read.format("delta").load(str(root / "quarantine"))
    assert (totals[1], totals[2]) == (bronze, quarantine.count())
    assert bronze + quarantine.count() == case.rows
    reasons = {r.reason.split(":")[0] for r in quarantine.select(F.split("reason", ";")[0].alias("reason")).collect()}
    assert set(case.reasons) <= reasons, reasons
