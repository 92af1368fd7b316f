# Databricks notebook source
# MAGIC %md
# MAGIC # TikTok profiles: explainable clusters of accounts
# MAGIC
# MAGIC The seed 004 analysis (Spotify-style explainable clustering) on a ready entity table: scaling, a KMeans
# MAGIC sweep, UMAP + HDBSCAN on a sample, a surrogate classifier for everyone, and per-cluster XGBoost + SHAP.
# MAGIC
# MAGIC Parameters (Databricks widgets; elsewhere the environment variables `SEGLAKE_CONFIG`, `SEGLAKE_RUN_ID`,
# MAGIC `SEGLAKE_OVERRIDES`): the config file, the run id (the same id replaces that run's rows), and
# MAGIC `;`-separated `key=value` overrides such as `lakehouse=/dbfs/seglake;sweep.k_max=12`.

# COMMAND ----------

from seglake.core.config import load_config
from seglake.notebook import gold, session, show, widget
from seglake.core.tracking import run_tracked

config = load_config(widget("config", "../conf/tiktok_profiles.yaml"),
                     [o for o in widget("overrides", "").split(";") if o.strip()])
run_id = widget("run_id", "notebook")
spark = session("seglake-tiktok_profiles")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Per-entity features
# MAGIC Declarative aggregations from the config into `silver/entities`, one row per entity.

# COMMAND ----------

run_tracked(spark, config, ["features"], run_id)

# COMMAND ----------

# MAGIC %md
# MAGIC ## KMeans sweep and the choice of k
# MAGIC MLlib KMeans for every k in the range; SSE, MLlib and exact silhouettes; k chosen from the SSE knee weighed with silhouette, and the reason.

# COMMAND ----------

run_tracked(spark, config, ["sweep"], run_id)
show(gold(spark, config, "sweep", run_id).select("k", "sse", "silhouette", "silhouette_exact", "chosen", "reason"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Segments in original units
# MAGIC The chosen k fitted and every kept entity labelled in `gold/segments`; sizes, shares and feature means, medians and p10/p90 per segment.

# COMMAND ----------

run_tracked(spark, config, ["segment"], run_id)
show(gold(spark, config, "profiles", run_id))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Density clusters on a sample
# MAGIC UMAP + HDBSCAN on a bounded sample; a surrogate XGBoost assigns everyone, with its fidelity on held-out sample rows.

# COMMAND ----------

run_tracked(spark, config, ["density"], run_id)
show(gold(spark, config, "cluster_quality", run_id))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Why each group exists
# MAGIC One-vs-rest XGBoost + SHAP per cluster and per segment, in plain language.

# COMMAND ----------

run_tracked(spark, config, ["explain"], run_id)
show(gold(spark, config, "descriptions", run_id).select("kind", "target", "description"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Report
# MAGIC One self-contained HTML file with every chart, built from the gold tables.

# COMMAND ----------

run_tracked(spark, config, ["report"], run_id)
