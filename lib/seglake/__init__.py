"""seglake: explainable audience segmentation at scale on Apache Spark and Delta Lake."""

from seglake import pipelines  # noqa: F401 — registers the pipeline table with seglake.core.pipeline
from seglake.core.errors import SeglakeError

__all__ = ["SeglakeError", "__version__"]
__version__ = "0.1.0"
