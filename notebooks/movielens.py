# Databricks notebook source
# MAGIC %md
# MAGIC # MovieLens: taste segments of film raters
# MAGIC
# MAGIC The seed 001 analysis on `ml-100k`: user embeddings from the rating matrix (Spark ALS, with its held-out
# MAGIC MAE), a KMeans sweep k = 2..12 with the elbow on those tastes (demographics join the vector only with
# MAGIC `ratings.demographics_weight` > 0), per-segment top-10 titles for each rating 5..1, demographics, US
# MAGIC states and genre preference, and a multi-class XGBoost that assigns new users from their ratings and
# MAGIC demographics, judged on a 30% holdout.
# MAGIC
# MAGIC Parameters (Databricks widgets; elsewhere the environment variables `SEGLAKE_CONFIG`, `SEGLAKE_RUN_ID`,
# MAGIC `SEGLAKE_OVERRIDES`): the config file, the run id (the same id replaces that run's rows), and
# MAGIC `;`-separated `key=value` overrides such as `lakehouse=/dbfs/seglake;ratings.als.rank=30`.

# COMMAND ----------

from pyspark.sql import functions as F

from seglake.core.pipeline import run_stages
from seglake.notebook import gold, show, start

spark, config, run_id = start("../conf/movielens.yaml")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Ratings, users and films; ALS taste embeddings
# MAGIC The three files into `bronze/` (bad lines to `bronze/quarantine` with a reason), ALS fitted on a seeded
# MAGIC 80% of ratings to measure MAE on the other 20%, then on every rating for the embeddings in `silver/entities`.
# MAGIC The seed's autoencoder reported 0.24, but as a reconstruction error of the whole user x film matrix with
# MAGIC unrated films as 0: a different target from ALS's error on 1-5 star ratings.

# COMMAND ----------

run_stages(spark, config, ["ratings"], run_id)
show(gold(spark, config, "als_metrics", run_id).select(
    "rank", "scored_ratings", "mae", "rmse", "baseline_mae", "seed_autoencoder_mae"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## KMeans sweep and the elbow
# MAGIC MLlib KMeans for every k in the range; SSE (the elbow), MLlib and exact silhouettes; k chosen from the SSE
# MAGIC knee weighed with silhouette, and the reason.

# COMMAND ----------

run_stages(spark, config, ["sweep"], run_id)
show(gold(spark, config, "sweep", run_id).orderBy("k").select("k", "sse", "silhouette_exact", "min_cluster_share",
                                                                "chosen", "reason"), 30)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Segments
# MAGIC The chosen k fitted and every user labelled in `gold/segments`.

# COMMAND ----------

run_stages(spark, config, ["segment"], run_id)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tastes: top titles per rating, demographics, states, genres, what separates the segments
# MAGIC The seed's tables (segment -1 is every user), then who is over-represented in each segment (gender,
# MAGIC occupation, age band and US state by zip code, with the zip codes that give no state), which genres it
# MAGIC rates more often than everyone else, and the share of the between-segment variance of each feature block.

# COMMAND ----------

run_stages(spark, config, ["tastes"], run_id)
titles = gold(spark, config, "top_titles", run_id)
wide = (titles.groupBy("segment", "rank").pivot("rating", [5, 4, 3, 2, 1])
        .agg(F.first(F.concat("title", F.lit(" ("), F.col("count").cast("string"), F.lit(")"))))
        .orderBy("segment", "rank"))
show(wide, 60)
show(gold(spark, config, "segment_demographics", run_id).where("index >= 1.5 AND users >= 5")
     .orderBy("segment", F.desc("index")), 60)
show(gold(spark, config, "genre_preference", run_id).orderBy("segment", F.desc("lift")), 60)
show(gold(spark, config, "segment_demographics", run_id).where("attribute = 'state' AND length(value) > 2")
     .orderBy("segment", "value"), 60)
show(gold(spark, config, "block_variance", run_id).orderBy(F.desc("share")))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Assigning new users
# MAGIC Multi-class XGBoost on ratings + demographics, fitted on 70% of users and scored on the other 30%, beside
# MAGIC the accuracy of always answering the largest segment.

# COMMAND ----------

run_stages(spark, config, ["assign"], run_id)
show(gold(spark, config, "assigner_metrics", run_id))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Report
# MAGIC One self-contained HTML file: ALS error, the sweep and segments, what separates them (block variance), top
# MAGIC titles per rating, demographics, states, genre lift and the assigner's holdout accuracy with its confusion matrix.

# COMMAND ----------

run_stages(spark, config, ["report"], run_id)
