"""The MovieLens pipeline as data: ALS tastes from the ratings, the shared sweep and segment
stages, segment profiles and an assigner, then the report with the MovieLens sections.

Strings only: importing this module imports neither Spark nor the stage modules (ALS, XGBoost).
Table names as in :mod:`seglake.core.pipeline`; the input files (``ratings.ratings``, ``.users``,
``.items``, ``.genres``) are config keys, not tables.
"""

from __future__ import annotations

from seglake.core.pipeline import Stage
from seglake.segmentation.pipeline import SEGMENT, SWEEP

BRONZE = ("bronze/ratings", "bronze/users", "bronze/items")

RATINGS = Stage("ratings", "seglake.usecases.movielens.ratings:ingest_ratings",
                writes=(*BRONZE, "bronze/quarantine", "silver/entities", "gold/als_metrics"))
TASTES = Stage("tastes", "seglake.usecases.movielens.tastes:tastes",
               reads=("gold/segments", "silver/entities", *BRONZE),
               writes=("gold/top_titles", "gold/segment_demographics", "gold/genre_preference",
                       "gold/block_variance"))
ASSIGN = Stage("assign", "seglake.usecases.movielens.assigner:assign", reads=("gold/segments", *BRONZE),
               writes=("models/assigner", "gold/assignments", "gold/assigner_metrics"))
REPORT = Stage("report", "seglake.usecases.movielens.report:report", reads=("gold/sweep",),
               optional=("gold/als_metrics", "gold/block_variance", "gold/top_titles", "gold/segment_demographics",
                         "gold/genre_preference", "gold/assigner_metrics", "gold/assignments"))

PIPELINE = (RATINGS, SWEEP, SEGMENT, TASTES, ASSIGN, REPORT)
