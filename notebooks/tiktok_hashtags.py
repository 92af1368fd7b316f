# Databricks notebook source
# MAGIC %md
# MAGIC # TikTok transcripts and hashtags: topics per group with a packaged MiniLM
# MAGIC
# MAGIC The seed 002 analysis (hashtags → sentence embeddings → KMeans → a 2-D map) at scale: texts are cleaned
# MAGIC (`#` stripped, lower-cased, empty dropped), embedded with all-MiniLM-L6-v2 shipped inside a PyPI wheel
# MAGIC (the `text` extra; no model hub at run time), clustered per group with k chosen by silhouette, mapped
# MAGIC with UMAP and described by class-based TF-IDF keywords.
# MAGIC
# MAGIC Parameters (Databricks widgets; elsewhere the environment variables `SEGLAKE_CONFIG`, `SEGLAKE_RUN_ID`,
# MAGIC `SEGLAKE_OVERRIDES`): the config file (`tiktok_hashtags.yaml` for transcripts by claim status,
# MAGIC `tiktok_bios.yaml` for account biographies), the run id (the same id replaces that run's rows), and
# MAGIC `;`-separated `key=value` overrides such as `text_clusters.k_max=12;text_clusters.embedder=tfidf_svd`.

# COMMAND ----------

from seglake.core.pipeline import run_stages
from seglake.notebook import gold, show, start, widget

spark, config, run_id = start("../conf/tiktok_hashtags.yaml")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Embed and cluster every group
# MAGIC MiniLM embeddings in `mapInPandas` (the model is loaded once per Python worker), then per group a KMeans
# MAGIC sweep over k, the best silhouette, and a UMAP map of a sample.

# COMMAND ----------

run_stages(spark, config, ["text"], run_id)
show(gold(spark, config, "text_sweep", run_id).orderBy("group", "k")
     .select("group", "k", "silhouette", "inertia", "chosen", "reason"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## What each cluster is about
# MAGIC The top class-based TF-IDF terms of every cluster (English stop words left out), and cluster sizes.

# COMMAND ----------

from pyspark.sql import functions as F

keywords = (gold(spark, config, "text_keywords", run_id).groupBy("group", "cluster")
            .agg(F.array_join(F.array_sort(F.collect_list(F.struct("rank", "term"))).term, ", ")
                 .alias("keywords")))
sizes = gold(spark, config, "text_clusters", run_id).groupBy("group", "cluster").count()
show(sizes.join(keywords, ["group", "cluster"], "left").orderBy("group", "cluster"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The map
# MAGIC Sampled texts on the 2-D UMAP map, coloured by cluster (plotly on the driver: the sample is bounded by
# MAGIC `text_clusters.map_sample` per group).

# COMMAND ----------

import plotly.express as px

points = (gold(spark, config, "text_clusters", run_id).where(F.col("x").isNotNull())
          .select("group", "cluster", "x", "y", F.substring("text", 1, 80).alias("text")).toPandas())
figure = px.scatter(points, x="x", y="y", color=points["cluster"].astype(str), facet_col="group",
                    hover_data=["text"], title=f"{config.name}: texts by cluster")
figure.show() if widget("show_figures", "false") == "true" else print(f"{len(points):,} texts on the map")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Report
# MAGIC One self-contained HTML file: per group the silhouette sweep, the map, cluster sizes and keywords.

# COMMAND ----------

[report] = run_stages(spark, config, ["report"], run_id)
print(report.details["path"])
