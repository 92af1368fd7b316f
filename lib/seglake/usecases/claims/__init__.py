"""Claims: the claim/opinion classifier (a Spark ML PipelineModel) and ``seglake classify``."""
