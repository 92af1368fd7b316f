"""Text clusters: cleaning, the packaged MiniLM, and end-to-end runs on real transcripts and bios."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from conftest import shared_file, write_config
from report_html import check_in_browser, figures, tables, title
from seglake.core.config import TextsSource, load_config
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import run_stages, stages_for
from seglake.report import report_path
from seglake.core.tables import Tables
from seglake.usecases.text.clusters import clean_column, embed_minilm, embed_tfidf_svd, prepare_texts


CONF = Path(__file__).resolve().parents[1] / "conf"


def gold(spark, config, table, run_id):
    path = Tables.of(config).gold(table)
    return spark.read.format("delta").load(path).where(F.col("run_id") == run_id)


def test_cleaning_strips_hashes_lowercases_and_drops_empty(spark):
    rows = [("a", "#Cats  and #DOGS "), ("b", "   "), ("c", None), ("d", "#"), ("", "no id")]
    table = spark.createDataFrame(rows, "vid string, caption string")
    source = TextsSource(path="inline", id="vid", text="caption")
    got = sorted(tuple(r) for r in prepare_texts(table, source).collect())
    assert got == [("all", "a", 0, "cats and dogs")]


def test_hashtag_lists_become_one_row_per_cleaned_item(spark):
    rows = [("u1", "news", "['#FYP', ' #Breaking News', '', '#']"), ("u2", None, "#Sport #f1"),
            ("u3", "news", "[]")]
    table = spark.createDataFrame(rows, "user string, topic string, tags string")
    source = TextsSource(path="inline", id="user", text="tags", group="topic", items="list")
    got = sorted(tuple(r) for r in prepare_texts(table, source).collect())
    assert got == [("(none)", "u2", 0, "sport"), ("(none)", "u2", 1, "f1"),
                   ("news", "u1", 0, "fyp"), ("news", "u1", 1, "breaking news")]
    arrays = spark.createDataFrame([("u1", ["#A", " b "])], "user string, tags array<string>")
    assert [r["text"] for r in prepare_texts(arrays, source.model_copy(
        update={"group": None})).orderBy("item").collect()] == ["a", "b"]


def test_clean_column_is_plain_spark(spark):
    frame = spark.createDataFrame([("'#Hello\tWorld'",)], "t string")
    assert frame.select(clean_column(F.col("t"), strip_quotes=True)).first()[0] == "hello world"


def test_minilm_gives_unit_384_vectors_and_sees_meaning_without_shared_words():
    pytest.importorskip("sentence_transformers")
    texts = ["the physician treated the patient", "a doctor cured someone who was sick",
             "stock prices fell sharply today"]
    vectors = embed_minilm(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    # The paraphrase shares no word with its sentence (after stop words the bag of words is
    # orthogonal for both pairs), yet MiniLM puts it much closer than the unrelated sentence.
    words = [set(re.findall(r"\w+", t)) - {"the", "a", "who", "was"} for t in texts]
    assert not words[0] & words[1] and not words[0] & words[2]
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
    # the same text gives the same vector, up to float rounding that depends on the batch's padding
    assert np.allclose(embed_minilm(texts[:1]), vectors[:1], atol=1e-6)


def test_tfidf_svd_rows_are_unit_length():
    vectors = embed_tfidf_svd(["a cat sat", "a dog ran", "cats and dogs", "stocks fell"], 100, 0)
    assert vectors.shape == (4, 3)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def _config(tmp_path, lakehouse, data: str, body: str, name: str):
    return load_config(write_config(tmp_path, f"name: {name}\nlakehouse: {lakehouse}\n"
                                    f"texts:\n  path: {data}\n{body}", f"{name}.yaml"))


def test_config_rejects_two_sources_and_unknown_columns(spark, tmp_path, lakehouse):
    data = shared_file("tiktok_profiles.csv")
    with pytest.raises(SeglakeError, match="exactly one source"):
        _config(tmp_path, lakehouse, data, f"  id: account_id\n  text: biography\nentities:\n"
                f"  path: {data}\n  id: account_id\n", "both")
    config = _config(tmp_path, lakehouse, data, "  id: account_id\n  text: bio\n", "typo")
    assert stages_for(config) == ["text", "report"]
    with pytest.raises(SeglakeError, match="'bio' not found"):
        run_stages(spark, config, run_id="r1", echo=lambda line: None)


@pytest.mark.slow
def test_claim_transcripts_cluster_per_status_with_keywords_from_their_texts(
        spark, lakehouse, monkeypatch, capsys):
    # Through the notebook, the way CI runs every notebook: all 15,267 transcripts, fewer k.
    overrides = [f"lakehouse={lakehouse}", "text_clusters.k_max=5", "text_clusters.map_sample=1500",
                 "text_clusters.silhouette_sample=2000"]
    monkeypatch.setenv("SEGLAKE_CONFIG", str(CONF / "tiktok_hashtags.yaml"))
    monkeypatch.setenv("SEGLAKE_RUN_ID", "t1")
    monkeypatch.setenv("SEGLAKE_OVERRIDES", ";".join(overrides))
    runpy.run_path(str(CONF.parent / "notebooks" / "tiktok_hashtags.py"), run_name="__main__")
    assert "[text] done: rows in 15,267, rows out 15,267" in capsys.readouterr().out
    config = load_config(CONF / "tiktok_hashtags.yaml", overrides)
    clusters = gold(spark, config, "text_clusters", "t1")
    counts = {r["group"]: r["count"] for r in clusters.groupBy("group").count().collect()}
    assert counts == {"claim": 7_723, "opinion": 7_544}
    sweep = gold(spark, config, "text_sweep", "t1").toPandas()
    chosen = sweep[sweep["chosen"]].set_index("group")
    assert set(chosen.index) == {"claim", "opinion"} and chosen["k"].between(2, 5).all()
    best = sweep.groupby("group")["silhouette"].max()
    assert np.allclose(chosen.loc[best.index, "silhouette"], best)
    # the map covers exactly the sampled rows
    mapped = clusters.where(F.col("x").isNotNull()).groupBy("group").count().collect()
    assert sorted(r["count"] for r in mapped) == [1500, 1500]

    texts = clusters.select("group", "cluster", "text").toPandas()
    keywords = gold(spark, config, "text_keywords", "t1").toPandas()
    assert set(keywords["group"]) == {"claim", "opinion"}
    for (group, cluster), terms in keywords.groupby(["group", "cluster"]):
        assert list(terms.sort_values("rank")["score"]) == sorted(terms["score"], reverse=True)
        words = set(" ".join(texts[(texts["group"] == group) & (texts["cluster"] == cluster)]["text"])
                    .replace(",", " ").replace(".", " ").split())
        assert set(terms["term"]) <= words, (group, cluster)
    top = {g: set(k[k["rank"] <= 10]["term"]) for g, k in keywords.groupby("group")}
    # Opinions are phrased as beliefs, claims as things heard or read: their keywords say so.
    assert top["opinion"] & {"think", "believe", "feel", "view", "opinion"}, top["opinion"]
    assert not top["claim"] & {"think", "believe", "feel"}, top["claim"]
    check_report(report_path(config, "t1").read_text(), sweep, clusters.toPandas(), keywords, mapped=1500)


def check_report(page, sweep, clusters, keywords, mapped):
    """Per group the report plots the gold sweep, maps real texts coloured by their gold cluster,
    and lists each cluster's size and its gold keywords in rank order."""
    groups = dict(re.findall(r"<section class='text-group' data-group='([^']+)'>(.*?)</section>", page, re.S))
    assert sorted(groups) == sorted(sweep["group"].unique())
    for group, body in groups.items():
        mine, texts = sweep[sweep["group"] == group].sort_values("k"), clusters[clusters["group"] == group]
        charts = figures(body)
        silhouette = next(f for f in charts if title(f) == f"{group}: silhouette per k")["data"][0]
        assert list(silhouette["x"]) == list(mine["k"]) and np.allclose(silhouette["y"], mine["silhouette"])
        assert f"chosen k={int(mine.loc[mine['chosen'], 'k'].iloc[0])}" in body
        [points] = [f for f in charts if "on the 2-D map" in title(f)]
        assert sum(len(t["x"]) for t in points["data"]) == mapped
        for trace in points["data"]:  # every point is a mapped text of the cluster it is drawn in
            cluster = int(trace["name"].split()[-1])
            on_map = texts[(texts["cluster"] == cluster) & texts["x"].notna()]
            assert set(np.round(trace["x"], 9)) <= set(np.round(on_map["x"], 9))
        [rows] = tables(body.split("<div class='keywords'>", 1)[1])
        assert rows[0] == ["cluster", "texts", "share", "keywords"]
        sizes = texts.groupby("cluster").size()
        ranked = keywords[keywords["group"] == group].sort_values("rank")
        terms = ranked.groupby("cluster")["term"].apply(", ".join)
        assert [(int(r[0]), int(r[1].replace(",", "")), r[3]) for r in rows[1:]] == [
            (int(c), int(n), terms.get(c, "")) for c, n in sizes.items()]
        assert all(r[3] for r in rows[1:])  # every cluster has keywords


@pytest.mark.slow
def test_bios_cluster_reproducibly_and_a_rerun_replaces_its_rows(spark, lakehouse):
    config = load_config(CONF / "tiktok_bios.yaml", [f"lakehouse={lakehouse}", "text_clusters.k_max=6"])
    first_run, report = run_stages(spark, config, run_id="a", echo=lambda line: None)
    assert first_run.rows_in == 1_000 and first_run.rows_out == 997  # three bios are "null"
    assert report.stage == "report" and report.details["charts"] == 2  # one group: sweep and map
    first = gold(spark, config, "text_clusters", "a").toPandas().sort_values("id")
    run_stages(spark, config, run_id="a", echo=lambda line: None)
    second = gold(spark, config, "text_clusters", "a").toPandas().sort_values("id")
    assert len(second) == 997 and second["id"].is_unique  # replaced, not appended
    assert list(first["cluster"]) == list(second["cluster"])
    assert np.allclose(first["x"], second["x"], equal_nan=True)
    assert first["x"].notna().all()  # 997 bios are under map_sample: everyone is on the map
    sweep = gold(spark, config, "text_sweep", "a").toPandas()
    assert sorted(sweep["k"]) == [2, 3, 4, 5, 6] and sweep["chosen"].sum() == 1
    keywords = gold(spark, config, "text_keywords", "a").toPandas()
    # the report, rewritten by the second run, shows that run's tables
    check_report(report_path(config, "a").read_text(), sweep, second, keywords, mapped=997)
    check_in_browser(report_path(config, "a"), "bios", min_charts=2)  # both charts draw, no JS error


def test_pinned_k_and_tfidf_svd_on_bios(spark, lakehouse):
    config = load_config(CONF / "tiktok_bios.yaml", [f"lakehouse={lakehouse}", "text_clusters.k=4",
                         "text_clusters.k_max=5", "text_clusters.embedder=tfidf_svd"])
    [result] = run_stages(spark, config, ["text"], run_id="p", echo=lambda line: None)
    assert "pinned by text_clusters.k" in result.message
    clusters = gold(spark, config, "text_clusters", "p").toPandas()
    assert sorted(clusters["cluster"].unique()) == [0, 1, 2, 3]
    keywords = gold(spark, config, "text_keywords", "p").toPandas()
    assert keywords.groupby("cluster")["rank"].max().le(8).all()
