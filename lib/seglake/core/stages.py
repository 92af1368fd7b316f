"""What every stage returns, so `seglake run` can print one line per stage and reconcile counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seglake.core.costs import Cost


@dataclass
class StageResult:
    """Summary of one stage run: rows in and out, seconds, and stage-specific details."""

    stage: str
    rows_in: int
    rows_out: int
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    cost: Cost | None = None  # filled by the runner (seglake.core.pipeline.run_stages)

    def line(self) -> str:
        """The one-line summary printed at the end of the stage.

        Examples
        --------
        >>> result = StageResult("sweep", 4931, 8, 12.34, message="k=4: ...",
        ...                      cost=Cost(jobs=60, stages=90, tasks=95, commits=3))
        >>> result.line()
        '[sweep] done: rows in 4,931, rows out 8, 12.3 s, 60 Spark jobs, 90 stages, 95 tasks, 3 Delta commits — k=4: ...'
        """
        extra = f" — {self.message}" if self.message else ""
        cost = f", {self.cost.text()}" if self.cost is not None else ""
        return (
            f"[{self.stage}] done: rows in {self.rows_in:,}, rows out {self.rows_out:,}, "
            f"{self.seconds:.1f} s{cost}{extra}"
        )
