"""The shared pieces of every config section: the strict base model, column-name checks, small models."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_()\-]*$")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
ColumnType = Literal["long", "int", "double", "string", "boolean", "timestamp"]


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain column name (letters, digits, ``_ ( ) -``), else raise ValueError."""
    if not IDENTIFIER.match(name):
        raise ValueError(f"'{name}' is not a plain column name (letters, digits, _ ( ) -)")
    return name


class KRange(Strict):
    """The range of k a clustering sweep tries: ``k_min`` to ``k_max``, both included.

    A section that sweeps k derives from this and, where its defaults differ, redeclares the field
    with its own default (the bounds and the check stay the same).
    """

    k_min: int = Field(2, ge=2)
    k_max: int = Field(9, ge=2)

    @field_validator("k_max")
    @classmethod
    def _range(cls, k_max: int, info: ValidationInfo) -> int:
        # Fields validate in order, so k_min is in info.data unless it failed on its own.
        k_min: Any = info.data.get("k_min")
        if isinstance(k_min, int) and k_max < k_min:
            raise ValueError(f"k_max ({k_max}) is below k_min ({k_min})")
        return k_max


class SparkSettings(Strict):
    """Where Spark runs; spark-submit flags win over these."""

    master: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)


class CatalogConfig(Strict):
    """Register a run's bronze, silver and gold tables by name in the Spark catalog.

    ``database`` is a database (``seglake``) or, on Databricks with Unity Catalog, a
    ``catalog.schema`` (``main.marketing``). Tables are named ``<layer>_<table>`` inside it, e.g.
    ``seglake.gold_segments``; each name points at the Delta table's own folder (an external
    table), so dropping the name never deletes data.

    Examples
    --------
    >>> CatalogConfig(database="main.marketing").database
    'main.marketing'
    >>> CatalogConfig(database="no spaces")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for CatalogConfig
    database
      String should match pattern ...
    """

    database: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
