"""Broken raw event files, generated from good synthetic ones (nothing binary is committed).

Each case is a folder holding what a user might point ``events.path`` at, and the outcome the ingest
stage must reach: ``"quarantine"`` (exit 0, every row accounted for, the bad rows quarantined with a
reason) or ``"error"`` (exit 2, one line naming the file).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from seglake.synth import generate

HEADER = "uid,user_city,item_id,author_id,item_city,channel,finish,like,music_id,device,time,duration_time"


@dataclass(frozen=True)
class Case:
    """One corpus folder and what must come of ingesting it."""

    name: str
    format: str  # csv or parquet
    outcome: str  # quarantine or error
    rows: int | None = None  # data rows in the input, when the outcome is quarantine
    reasons: tuple[str, ...] = ()  # quarantine reasons (their first part) that must appear
    names_file: str | None = None  # the file the error line must name


def good_csv(folder: Path, events: int = 300, seed: int = 1) -> bytes:
    """Clean synthetic events as CSV bytes (header + ``events`` lines)."""
    generate(folder, events, fmt="csv", seed=seed)
    (path,) = sorted((folder / "events").glob("*.csv"))
    return path.read_bytes()


def good_parquet(folder: Path, events: int = 300, seed: int = 1) -> bytes:
    """Clean synthetic events as Parquet bytes."""
    generate(folder, events, fmt="parquet", seed=seed)
    (path,) = sorted((folder / "events").glob("*.parquet"))
    return path.read_bytes()


def with_field(line: str, index: int, value: str) -> str:
    """A CSV line with field ``index`` replaced by ``value``."""
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def build(root: Path) -> dict[str, tuple[Case, Path]]:
    """Write every case under ``root``; returns case name → (case, folder)."""
    seeds = root / "_good"
    csv = good_csv(seeds / "csv")
    parquet = good_parquet(seeds / "parquet")
    lines = csv.decode().splitlines()
    assert lines[0] == HEADER
    data_rows = len(lines) - 1
    rng = random.Random(7)
    cases: dict[str, tuple[Case, Path]] = {}

    def add(case: Case, files: dict[str, bytes]) -> None:
        folder = root / case.name
        for name, data in files.items():
            _write(folder, name, data)
        cases[case.name] = (case, folder)

    # A copy cut in the middle of its last line, as by a writer that died.
    cut = len(csv) - len(lines[-1]) // 2 - 1
    add(Case("truncated_csv", "csv", "quarantine", data_rows, ("malformed_line",)),
        {"events.csv": csv[:cut]})
    # Written with ';': the header does not name the configured columns.
    add(Case("semicolon_delimiter", "csv", "error", names_file="events.csv"),
        {"events.csv": csv.replace(b",", b";")})
    # Random bytes under a .csv name.
    add(Case("binary_garbage", "csv", "error", names_file="garbage.csv"),
        {"garbage.csv": bytes(rng.getrandbits(8) for _ in range(64 * 1024))})
    # One 10 MB line between good ones: it is quarantined whole, the rest ingested.
    huge = ",".join(["9" * (10 * 1024 * 1024 // 12)] * 12)
    add(Case("ten_mb_line", "csv", "quarantine", data_rows + 1, ("bad_type",)),
        {"events.csv": "\n".join([*lines, huge, ""]).encode()})
    # Latin-1 text where the numbers should be: not UTF-8, not numbers.
    latin = [*lines[:-3], *[with_field(line, 1, "Zürich") for line in lines[-3:]]]
    add(Case("latin1_text", "csv", "quarantine", data_rows, ("bad_type",)),
        {"events.csv": "\n".join([*latin, ""]).encode("latin-1")})
    # UTF-16 (with its byte-order mark), as some spreadsheet exports write it.
    add(Case("utf16_encoded", "csv", "error", names_file="events.csv"),
        {"events.csv": csv.decode().encode("utf-16")})
    # Words and decimals in integer columns.
    typed = [lines[0], *[with_field(line, 0, "abc") if i % 10 == 0 else line
                         for i, line in enumerate(lines[1:])]]
    typed[2] = with_field(typed[2], 11, "1.5")
    add(Case("wrong_types", "csv", "quarantine", data_rows, ("bad_type",)),
        {"events.csv": "\n".join([*typed, ""]).encode()})
    # Nothing at all.
    add(Case("zero_bytes", "csv", "error", names_file="empty.csv"), {"empty.csv": b""})
    # A Parquet file cut in half (its footer is gone).
    add(Case("truncated_parquet", "parquet", "error", names_file="part-0.parquet"),
        {"part-0.parquet": parquet[: len(parquet) // 2]})
    # Good and bad together: the good files' rows land, the bad ones' are quarantined.
    other = good_csv(seeds / "csv2", seed=2)
    add(Case("mixed_folder", "csv", "quarantine", 3 * data_rows + len(other.splitlines()) - 1,
             ("malformed_line", "bad_type")),
        {"a_good.csv": csv, "b_truncated.csv": csv[:cut],
         "c_wrong_types.csv": "\n".join([*typed, ""]).encode(), "d_empty.csv": b"",
         "e_good_again.csv": other})
    return cases
