"""What every stage returns, so `seglake run` can print one line per stage and reconcile counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageResult:
    """Summary of one stage run: rows in and out, seconds, and stage-specific details."""

    stage: str
    rows_in: int
    rows_out: int
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def line(self) -> str:
        """The one-line summary printed at the end of the stage."""
        extra = f" — {self.message}" if self.message else ""
        return (
            f"[{self.stage}] done: rows in {self.rows_in:,}, rows out {self.rows_out:,}, "
            f"{self.seconds:.1f} s{extra}"
        )
