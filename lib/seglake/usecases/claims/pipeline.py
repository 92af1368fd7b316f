"""The claims pipeline as data: one stage that trains, evaluates and saves the classifier.

Strings only: importing this module imports no Spark ML. The input (``entities.path``) is a config
key; ``bronze/quarantine`` gets only this run's rows of this source, ``models/classifier`` the
PipelineModel with ``inputs.json``, ``metrics.json`` and their sha256 manifest.
"""

from __future__ import annotations

from seglake.core.pipeline import Stage

CLASSIFY = Stage("classify", "seglake.usecases.claims.train:train_classifier",
                 writes=("bronze/quarantine", "models/classifier", "gold/classifier_metrics"))

PIPELINE = (CLASSIFY,)
