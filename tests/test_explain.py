"""Explain stage: one-vs-rest XGBoost + SHAP finds the features that generate each group."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import shared_file
from seglake.segmentation.density import density
from seglake.core.config import ExplainConfig, NameOverrides
from seglake.core.errors import SeglakeError
from seglake.segmentation.explain import describe, explain, human, word
from seglake.segmentation.names import candidates, name_targets, phrase, unique_names
from seglake.segmentation.surrogate import load_booster
from seglake.core.tables import Tables
from test_density import density_config, write_entities

# cluster → the features that generate it and their direction (0 is the plain background)
ARCHETYPES = {1: {"f0": "higher", "f1": "lower"}, 2: {"f2": "higher"}, 3: {"f3": "lower", "f4": "higher"}}
SIZES = {0: 800, 1: 400, 2: 300, 3: 300, 5: 12, -1: 50}


def archetype_entities(seed: int = 11) -> pd.DataFrame:
    """Six heavy-tailed features of noise; each archetype multiplies its features by 8 or 1/8."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in SIZES.items()])
    values = rng.lognormal(mean=3.0, sigma=0.4, size=(len(labels), 6))
    for cluster, rules in {**ARCHETYPES, 5: {"f5": "higher"}}.items():
        for feature, direction in rules.items():
            values[labels == cluster, int(feature[1])] *= 8.0 if direction == "higher" else 1 / 8.0
    frame = pd.DataFrame(values, columns=[f"f{i}" for i in range(6)])
    frame.insert(0, "entity_id", [f"a{i:05d}" for i in range(len(frame))])
    frame["cluster"] = labels
    frame["segment"] = (labels == 1).astype(int)  # a KMeans segment that is archetype 1
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_labels(spark, config, frame: pd.DataFrame, run_id: str) -> None:
    tables = Tables.of(config)
    clusters = frame[["entity_id", "cluster"]].assign(run_id=run_id, group=0, cluster_probability=1.0,
                                                      in_sample=True, x=0.0, y=0.0)
    spark.createDataFrame(clusters).write.format("delta").partitionBy("run_id").save(tables.gold("clusters"))
    segments = frame[["entity_id", "segment"]].assign(run_id=run_id, distance=0.0)
    spark.createDataFrame(segments).write.format("delta").partitionBy("run_id", "segment").save(
        tables.gold("segments"))


def test_words_and_numbers_read_like_a_person_wrote_them():
    assert human(871_234) == "871k" and human(1_234_567) == "1.23M" and human(0.00813) == "0.00813"
    assert word(160.0, 20.0) == ("very high", "median 160, 8× the overall 20")
    assert word(2.5, 20.0)[0] == "very low" and word(21.0, 20.0)[0] == "typical"
    assert word(-1.0, 0.0) == ("low", "median -1 vs 0 overall")


def test_describe_uses_top_features_with_medians_and_ratios():
    ranked = pd.DataFrame({"kind": "cluster", "target": 3, "feature": ["followers", "rate", "likes"],
                           "mean_abs_shap": [2.0, 1.0, 0.0], "rank": [1, 2, 3], "size": 41,
                           "share": 0.041})
    medians = ranked[["kind", "target", "feature"]].assign(median=[871_000.0, 0.008, 5.0])
    overall = {"followers": 21_000.0, "rate": 0.027, "likes": 5.0}
    (line,) = describe(ranked, medians, overall, top_features=4, noun="accounts")["description"]
    assert line == ("Cluster 3 — 4.1% of accounts: "
                    "very high followers (median 871k, 41× the overall 21k); "
                    "low rate (median 0.008, 0.3× the overall 0.027)")  # likes: zero SHAP, left out


def test_each_archetype_is_explained_by_the_features_that_generate_it(spark, tmp_path, lakehouse, capsys):
    config = density_config(tmp_path, lakehouse, "{}", "{sample_size: 1000, top_features: 3, noun: accounts}")
    frame = archetype_entities()
    write_entities(spark, config, frame.drop(columns=["cluster", "segment"]))
    write_labels(spark, config, frame, "x1")
    result = explain(spark, config, "x1")

    tables = Tables.of(config)
    rows = spark.read.format("delta").load(tables.gold("explanations")).where("run_id = 'x1'").toPandas()
    for (kind, target), generating in [*((("cluster", c), r) for c, r in ARCHETYPES.items()),
                                       (("segment", 1), ARCHETYPES[1])]:
        ranked = rows[(rows["kind"] == kind) & (rows["target"] == target)].sort_values("rank")
        top = ranked.head(len(generating))
        assert dict(zip(top["feature"], top["direction"])) == generating, (kind, target, ranked)
        assert ranked["f1"].iloc[0] > 0.9 and ranked["size"].iloc[0] == frame[kind].eq(target).sum()
    assert any("cluster 5 (12 < 30)" in s for s in result.details["skipped"])
    assert set(rows.loc[rows["kind"] == "cluster", "target"]) == {0, 1, 2, 3}  # noise is not a target

    descriptions = spark.read.format("delta").load(tables.gold("descriptions")).toPandas()
    text = descriptions.set_index(["kind", "target"])["description"]
    assert text[("cluster", 1)].startswith("Cluster 1 — 21.5% of accounts: very ")
    assert "very high f0" in text[("cluster", 1)] and "very low f1" in text[("cluster", 1)]
    printed = capsys.readouterr().out
    assert text[("cluster", 2)].removeprefix("Cluster 2") in printed

    # names: from the generating features and their direction, unique within the run, printed
    names = descriptions.set_index(["kind", "target"])["name"]
    assert names.is_unique and names.notna().all() and set(names.index) == set(text.index)
    for (kind, target), generating in [*((("cluster", c), r) for c, r in ARCHETYPES.items()),
                                       (("segment", 1), ARCHETYPES[1])]:
        phrases = re.sub(r" \(\d+\)$", "", names[(kind, target)]).split(", ")  # segment 1 is cluster 1
        assert set(phrases[:len(generating)]) == {f"{d[:-2]} {f}" for f, d in generating.items()}, names
    assert f'Cluster 2 "{names[("cluster", 2)]}" — ' in printed, names
    assert f'Cluster 1 "{names[("cluster", 1)]}"' in result.message
    assert result.details["names"][0] == {"kind": "cluster", "target": 0, "path": "0", "name": names[("cluster", 0)]}

    folder = tables.models("x1")
    manifest = json.loads(open(f"{folder}/manifest-explain.json").read())
    assert "explain/cluster-1.json" in manifest["files"] and "explain/segment-1.json" in manifest["files"]
    booster = load_booster(spark, folder, "explain/cluster-2.json", "manifest-explain.json")
    assert booster.feature_names == [f"f{i}" for i in range(6)]

    # a re-run replaces its rows; this one names two targets by hand, the others keep their rule
    chosen = names[("cluster", 2)]
    named = renamed(config, NameOverrides(segments={1: "loyal fans"}, clusters={0: chosen}))
    explain(spark, named, "x1")
    again = spark.read.format("delta").load(tables.gold("explanations")).where("run_id = 'x1'")
    assert again.count() == len(rows)
    renamed_rows = spark.read.format("delta").load(tables.gold("descriptions")).toPandas()
    second = renamed_rows.set_index(["kind", "target"])["name"]
    assert len(renamed_rows) == len(descriptions) and second.is_unique
    assert second[("segment", 1)] == "loyal fans" and second[("cluster", 0)] == chosen
    assert second[("cluster", 2)] != chosen and second[("cluster", 2)].startswith("high f2")
    assert second[("cluster", 1)] == names[("cluster", 1)]

    with pytest.raises(SeglakeError, match=r"^explain\.names\.clusters\.5: run x1 explains no cluster 5 "
                                           r"\(its clusters: 0, 1, 2, 3\)$"):
        explain(spark, renamed(config, NameOverrides(clusters={5: "tiny"})), "x1")  # 5 was skipped


def renamed(config, names: NameOverrides):
    """``config`` with ``explain.names`` set to ``names``."""
    return config.model_copy(update={"explain": config.explain.model_copy(update={"names": names})})


def ranking(rows: list[tuple[str, int, str, float, str]]) -> pd.DataFrame:
    """Hand-built gold/explanations rows: (kind, target, feature, mean |SHAP|, direction)."""
    frame = pd.DataFrame(rows, columns=["kind", "target", "feature", "mean_abs_shap", "direction"])
    frame["rank"] = frame.groupby(["kind", "target"])["mean_abs_shap"].rank(ascending=False).astype(int)
    return frame


def test_a_name_is_two_to_four_words_from_the_strongest_features_and_their_direction():
    assert phrase("n_authors", False) == "few authors" and phrase("distinct_hashtags", True) == "many hashtags"
    assert phrase("completionRate", True) == "high completion rate" and phrase("likes_cnt", True) == "many likes"
    assert phrase("watch_time", False) == "low watch time"
    ranked = ranking([("cluster", 0, "finish_rate", 2.0, "higher"), ("cluster", 0, "n_authors", 1.0, "lower"),
                      ("cluster", 0, "likes", 0.9, "higher"),
                      ("cluster", 1, "mean_watch_seconds", 2.0, "lower"), ("cluster", 1, "n_authors", 1.5, "higher"),
                      ("segment", 0, "likes", 3.0, "higher"), ("segment", 0, "views", 0.1, "higher")])
    found = candidates(ranked)
    assert found[("cluster", 0)] == ["high finish rate", "few authors", "high likes"]
    assert found[("segment", 0)] == ["high likes"]  # views: under a tenth of the best |SHAP|
    names = unique_names(found, "users")
    assert names == {("cluster", 0): "high finish rate",  # with "few authors" it would be 5 words
                     ("cluster", 1): "low mean watch seconds", ("segment", 0): "high likes"}
    two = unique_names({("cluster", 0): ["high f0", "low f1", "low f2"]}, "users")
    assert two == {("cluster", 0): "high f0, low f1"}
    # the sentence's word (the median against the overall) wins over the SHAP sign when not typical
    worded = ranked.assign(word=["low", "typical", "high", "very high", "low", "typical", "high"])
    assert candidates(worded)[("cluster", 0)][:2] == ["low finish rate", "few authors"]
    assert candidates(worded)[("cluster", 1)] == ["high mean watch seconds", "few authors"]


def test_shared_names_take_the_next_feature_then_a_number():
    ranked = ranking([("cluster", 0, "likes", 2.0, "higher"), ("cluster", 0, "views", 1.0, "higher"),
                      ("cluster", 0, "shares", 0.5, "lower"),
                      ("cluster", 1, "likes", 2.0, "higher"), ("cluster", 1, "views", 1.0, "higher"),
                      ("cluster", 1, "shares", 0.5, "higher"),
                      ("segment", 0, "likes", 2.0, "higher"), ("segment", 0, "views", 1.0, "higher"),
                      ("segment", 0, "shares", 0.5, "higher"),
                      ("segment", 1, "likes", 0.0, "higher"), ("segment", 2, "likes", 0.0, "higher")])
    names = name_targets(ranked, renamed_explain(), "r1").set_index(["kind", "target"])["name"]
    assert names.to_dict() == {("cluster", 0): "high likes, high views, low shares",
                               ("cluster", 1): "high likes, high views, high shares",
                               ("segment", 0): "high likes, high views, high shares (2)",
                               ("segment", 1): "typical accounts", ("segment", 2): "typical accounts (2)"}
    # an override is kept as given and the rule steers clear of it
    fixed = name_targets(ranked, renamed_explain(segments={1: "high likes, high views"}), "r1")
    fixed = fixed.set_index(["kind", "target"])["name"]
    assert fixed[("segment", 1)] == "high likes, high views" and fixed.is_unique
    with pytest.raises(SeglakeError, match=r"^explain\.names\.segments\.7: run r1 explains no segment 7 "
                                           r"\(its segments: 0, 1, 2\)$"):
        name_targets(ranked, renamed_explain(segments={7: "ghosts"}), "r1")


def renamed_explain(**names) -> ExplainConfig:
    """The explain settings of an 'accounts' use case with ``names`` as its overrides."""
    return ExplainConfig(noun="accounts", names=NameOverrides(**names))


def test_name_overrides_are_checked_when_the_config_loads(tmp_path, lakehouse):
    config = density_config(tmp_path, lakehouse, "{}", "{names: {segments: {0: ' big spenders '}, clusters: {3: owls}}}")
    assert config.explain.names.segments == {0: "big spenders"} and config.explain.names.clusters == {3: "owls"}
    for bad, message in [("{names: {segments: {0: owls}, clusters: {3: owls}}}",
                          "key 'explain.names': the name 'owls' is given twice (segments 0, clusters 3)"),
                         ("{names: {groups: {0: owls}}}", "unknown key 'explain.names.groups'"),
                         ("{names: {clusters: {3: ''}}}", "key 'explain.names.clusters.3': String should have at least 1")]:
        with pytest.raises(SeglakeError, match=re.escape(message)):
            density_config(tmp_path, lakehouse, "{}", bad)


def tiktok_entities(spark, path) -> "DataFrame":
    """silver/entities from the TikTok profiles CSV: account_id as entity_id, counts and rates as
    doubles."""
    raw = (spark.read.option("header", True).option("multiLine", True).option("quote", '"')
           .option("escape", '"').csv(str(path)))
    numbers = ["awg_engagement_rate", "comment_engagement_rate", "like_engagement_rate",
               "followers", "following", "likes", "videos_count"]
    # is_verified stays a categorical string, as in the entity contract: not a clustering feature
    return raw.select(F.col("account_id").alias("entity_id"),
                      *[F.col(c).cast("double").alias(c) for c in numbers], "is_verified")


@pytest.mark.slow
def test_tiktok_profiles_clusters_are_explained_by_the_seed_features(spark, tmp_path, lakehouse):
    path = shared_file("tiktok_profiles.csv")
    config = density_config(
        tmp_path, lakehouse,
        "{sample_size: 1000, umap: {n_neighbors: 10, n_components: 2, min_dist: 0.1}, "
        "hdbscan: {min_cluster_size: 10}}", "{noun: accounts}")
    tiktok_entities(spark, path).write.format("delta").save(Tables.of(config).entities)
    found = density(spark, config, "tt")
    result = explain(spark, config, "tt")

    group = found.details["groups"][0]
    assert group["population"] == 1000 and group["clusters"] >= 10
    rows = spark.read.format("delta").load(Tables.of(config).gold("explanations")).toPandas()
    top = rows[(rows["kind"] == "cluster") & (rows["rank"] <= 4)]
    seed_features = {"videos_count", "following", "followers", "awg_engagement_rate"}
    assert len(seed_features & set(top["feature"])) >= 3
    assert result.rows_out >= 5
