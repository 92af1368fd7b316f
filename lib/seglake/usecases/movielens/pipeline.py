"""The MovieLens use case's stages as data: the function behind each, the tables it reads and writes.

Strings only, so that importing this module imports neither Spark nor the stage modules (ALS,
XGBoost): a runner can order and check stages without loading them. A table is ``<layer>/<table>``
under ``<lakehouse>/<name>/``; ``models/<x>`` is the folder ``models/<run_id>/<x>``.

Per stage: ``function`` (``module:function``, called with ``(spark, config, run_id)``), ``sources``
(config keys of the input files it reads, not tables), ``reads`` (tables other stages wrote, which it
needs), ``writes``, and ``reads_back`` (tables it reads again after writing them, to reconcile counts
or measure what was committed: never an input from another stage).

The run order of a ``ratings`` config, :data:`ORDER`, also holds the shared stages ``sweep`` and
``segment`` (``silver/entities`` → ``gold/segments``) and ``report``, declared elsewhere.
"""

from __future__ import annotations

STAGES: dict[str, dict[str, object]] = {
    "ratings": {
        "function": "seglake.usecases.movielens.ratings:ingest_ratings",
        "sources": ("ratings.genres", "ratings.users", "ratings.items", "ratings.ratings"),
        "reads": (),
        "writes": ("bronze/users", "bronze/items", "bronze/ratings", "bronze/quarantine",
                   "silver/entities", "gold/als_metrics"),
        "reads_back": ("bronze/quarantine", "bronze/users", "bronze/items", "bronze/ratings",
                       "silver/entities"),
    },
    "tastes": {
        "function": "seglake.usecases.movielens.tastes:tastes",
        "sources": (),
        "reads": ("gold/segments", "bronze/ratings", "bronze/users", "bronze/items"),
        "writes": ("gold/top_titles", "gold/segment_demographics", "gold/genre_preference"),
        "reads_back": ("gold/top_titles", "gold/segment_demographics", "gold/genre_preference"),
    },
    "assign": {
        "function": "seglake.usecases.movielens.assigner:assign",
        "sources": (),
        "reads": ("gold/segments", "bronze/ratings", "bronze/users", "bronze/items"),
        "writes": ("models/assigner", "gold/assignments", "gold/assigner_metrics"),
        "reads_back": ("gold/assignments",),
    },
}

ORDER = ("ratings", "sweep", "segment", "tastes", "assign", "report")
