"""The text-cluster use case's stage as data: the function behind it, the tables it reads and writes.

Strings only, so that importing this module imports neither Spark nor the stage module
(sentence-transformers, UMAP). A table is ``<layer>/<table>`` under ``<lakehouse>/<name>/``.

Per stage: ``function`` (``module:function``, called with ``(spark, config, run_id)``), ``sources``
(config keys of the input files it reads, not tables), ``reads`` (tables other stages wrote, which it
needs), ``writes``, and ``reads_back`` (tables it reads again after writing them). The run order,
:data:`ORDER`, ends with the shared ``report`` stage, declared elsewhere.
"""

from __future__ import annotations

STAGES: dict[str, dict[str, object]] = {
    "text": {
        "function": "seglake.usecases.text.clusters:text_clusters",
        "sources": ("texts.path",),
        "reads": (),
        "writes": ("gold/text_clusters", "gold/text_keywords", "gold/text_sweep"),
        "reads_back": (),
    },
}

ORDER = ("text", "report")
