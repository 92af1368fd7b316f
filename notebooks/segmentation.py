# Databricks notebook source
# MAGIC %md
# MAGIC # TikTok segmentation: users, creators or accounts
# MAGIC
# MAGIC One set of cells for the three segmentation use cases; the `config` widget chooses which:
# MAGIC
# MAGIC - `../conf/tiktok_users.yaml` (the default): the seed 000 analysis at any scale, nine per-user features
# MAGIC   from the short-video interaction log and the seed's activity filter;
# MAGIC - `../conf/tiktok_authors.yaml`: the seed 000 author analysis on the same log, nine per-author features
# MAGIC   and the seed's filter (at least one complete view and three views);
# MAGIC - `../conf/tiktok_profiles.yaml`: the seed 004 analysis (Spotify-style explainable clustering) on a ready
# MAGIC   entity table, one row per account: nothing to ingest.
# MAGIC
# MAGIC Then, for each, a KMeans sweep with SSE and silhouette and the choice of k explained, UMAP + HDBSCAN
# MAGIC density clusters on a sample with a surrogate classifier for everyone, segment centers in original units,
# MAGIC per-cluster and per-segment XGBoost + SHAP in plain language, and a report.
# MAGIC
# MAGIC Parameters (Databricks widgets; elsewhere the environment variables `SEGLAKE_CONFIG`, `SEGLAKE_RUN_ID`,
# MAGIC `SEGLAKE_OVERRIDES`): the config file, the run id (the same id replaces that run's rows), and
# MAGIC `;`-separated `key=value` overrides such as `lakehouse=/dbfs/seglake;sweep.k_max=12`.

# COMMAND ----------

from seglake.core.pipeline import stages_for
from seglake.core.tracking import run_tracked
from seglake.notebook import gold, show, start

spark, config, run_id = start("../conf/tiktok_users.yaml")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Ingest raw events
# MAGIC With an `events` config (users, authors): typed, validated rows to `bronze/events`; every rejected row to
# MAGIC `bronze/quarantine` with its reason; input = bronze + quarantine. An `entities` config (profiles) has no
# MAGIC raw events: the next stage reads its table.

# COMMAND ----------

if "ingest" in stages_for(config):
    run_tracked(spark, config, ["ingest"], run_id)
else:
    print(f"{config.name}: an entity table, no ingest")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Per-entity features
# MAGIC Into `silver/entities`, one row per entity: declarative aggregations of the events from the config, or
# MAGIC the entity table's feature columns (unusable rows to `silver/rejected` with the reason).

# COMMAND ----------

run_tracked(spark, config, ["features"], run_id)

# COMMAND ----------

# MAGIC %md
# MAGIC ## KMeans sweep and the choice of k
# MAGIC MLlib KMeans for every k in the range; SSE, MLlib and exact silhouettes; k chosen from the SSE knee weighed with silhouette, and the reason.
# MAGIC The chosen k, fitted on every kept entity, is the run's model (`models/<run_id>/kmeans`).

# COMMAND ----------

run_tracked(spark, config, ["sweep"], run_id)
show(gold(spark, config, "sweep", run_id).select("k", "sse", "silhouette", "silhouette_exact", "chosen", "reason"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Density clusters on a sample
# MAGIC UMAP + HDBSCAN on a bounded sample, each cluster's stability (mean Jaccard over refits; unstable clusters
# MAGIC merged into the nearest stable one), the settings tried and the one the rule chose; a surrogate XGBoost
# MAGIC assigns everyone, with its fidelity on held-out sample rows.

# COMMAND ----------

run_tracked(spark, config, ["density"], run_id)
show(gold(spark, config, "cluster_quality", run_id))
show(gold(spark, config, "density_sweep", run_id).drop("reason"))
show(gold(spark, config, "cluster_stability", run_id))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Segments in original units
# MAGIC Every kept entity labelled by the sweep's model in `gold/segments`, with its density cluster from the previous
# MAGIC stage; sizes, shares and feature means, medians and p10/p90 per segment.

# COMMAND ----------

run_tracked(spark, config, ["segment"], run_id)
show(gold(spark, config, "profiles", run_id))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Why each group exists
# MAGIC One-vs-rest XGBoost + SHAP per cluster and per segment: a short name and a plain-language line each.

# COMMAND ----------

run_tracked(spark, config, ["explain"], run_id)
show(gold(spark, config, "descriptions", run_id).select("kind", "target", "name", "description"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Report
# MAGIC One self-contained HTML file with every chart, built from the gold tables.

# COMMAND ----------

run_tracked(spark, config, ["report"], run_id)
