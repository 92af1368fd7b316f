# Databricks notebook source
# MAGIC %md
# MAGIC # TikTok claims: a claim-or-opinion classifier
# MAGIC
# MAGIC The seed 003 analysis: counts, statuses and transcript text → one Spark ML PipelineModel that takes raw
# MAGIC records, with a seeded train/validation/test split and accuracy, F1 and the confusion matrix on test.
# MAGIC
# MAGIC Parameters (Databricks widgets; elsewhere the environment variables `SEGLAKE_CONFIG`, `SEGLAKE_RUN_ID`,
# MAGIC `SEGLAKE_OVERRIDES`): the config file, the run id (the same id replaces that run's rows), and
# MAGIC `;`-separated `key=value` overrides such as `lakehouse=/dbfs/seglake;sweep.k_max=12`.

# COMMAND ----------

from seglake.core.tracking import run_tracked
from seglake.notebook import gold, show, start

spark, config, run_id = start("../conf/tiktok_claims.yaml")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Train and evaluate
# MAGIC Unusable rows go to `bronze/quarantine`; metrics to `gold/classifier_metrics`; the model to `models/<run_id>/classifier`.

# COMMAND ----------

run_tracked(spark, config, ["classify"], run_id)
show(gold(spark, config, "classifier_metrics", run_id))
