"""The pipeline table: per source kind, the ordered stages a config of that kind runs.

| kind (config section) | stages |
| --- | --- |
| ``events``     | ingest, features, sweep, density, segment, explain, report |
| ``entities``   | features, sweep, density, segment, explain, report |
| ``ratings``    | ratings, sweep, segment, tastes, assign, report (MovieLens sections) |
| ``texts``      | text, report (text-cluster sections) |
| ``classifier`` | classify |

Imported by the package, it registers the table with :mod:`seglake.core.pipeline`; each stage
declares what it reads and writes (see ``segmentation/pipeline.py`` and each use case's
``pipeline.py``), and the runner checks every input before any Spark job.
"""

from __future__ import annotations

from seglake.core.pipeline import register
from seglake.segmentation import pipeline as segmentation
from seglake.usecases.claims import pipeline as claims
from seglake.usecases.movielens import pipeline as movielens
from seglake.usecases.text import pipeline as text

register("events", segmentation.EVENTS)
register("entities", segmentation.ENTITIES)
register("ratings", movielens.PIPELINE)
register("texts", text.PIPELINE)
register("classifier", claims.PIPELINE)
