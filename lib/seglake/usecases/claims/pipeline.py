"""The claims use case's stage as data: the function behind it, the tables it reads and writes.

Strings only, so that importing this module imports neither Spark nor the stage module. A table is
``<layer>/<table>`` under ``<lakehouse>/<name>/``; ``models/<x>`` is the folder
``models/<run_id>/<x>``.

Per stage: ``function`` (``module:function``, called with ``(spark, config, run_id)``), ``sources``
(config keys of the input files it reads, not tables), ``reads`` (tables other stages wrote, which it
needs), ``writes``, and ``reads_back`` (tables it reads again after writing them, to reconcile counts:
never an input from another stage). ``bronze/quarantine`` gets only this run's rows of this source
(replaced on a re-run); ``models/classifier`` holds the PipelineModel, ``inputs.json``,
``metrics.json`` and ``manifest.json``.
"""

from __future__ import annotations

STAGES: dict[str, dict[str, object]] = {
    "classify": {
        "function": "seglake.usecases.claims.train:train_classifier",
        "sources": ("entities.path",),
        "reads": (),
        "writes": ("bronze/quarantine", "models/classifier", "gold/classifier_metrics"),
        "reads_back": ("bronze/quarantine",),
    },
}

ORDER = ("classify",)
