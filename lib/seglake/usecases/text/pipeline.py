"""The text-cluster pipeline as data: embeddings, KMeans per group and keywords, then the report
with the text-cluster sections.

Strings only: importing this module imports neither Spark nor sentence-transformers or UMAP. The
input (``texts.path``) is a config key, not a table.
"""

from __future__ import annotations

from seglake.core.pipeline import Stage

TEXT = Stage("text", "seglake.usecases.text.clusters:text_clusters",
             writes=("gold/text_clusters", "gold/text_keywords", "gold/text_sweep"))
REPORT = Stage("report", "seglake.usecases.text.report:report", reads=("gold/text_sweep",),
               optional=("gold/text_clusters", "gold/text_keywords"))

PIPELINE = (TEXT, REPORT)
