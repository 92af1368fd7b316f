"""Density stage: UMAP + HDBSCAN on a sample, surrogate assignment, stability, idempotent writes."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from scipy.spatial.distance import cdist
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from conftest import write_config
from seglake.core.config import DensityConfig, load_config
from seglake.segmentation.density import allocate, density, worker_numba_cache
from seglake.segmentation import density_fit
from seglake.segmentation.density_fit import cluster_group, clustering_space, exact_neighbours
from seglake.core.errors import SeglakeError
from seglake.report.sections import ReportRun
from seglake.report.segmentation import density_section, explain_section
from seglake.segmentation.score import score
from seglake.segmentation.explain import explain
from seglake.segmentation.segment import segment
from seglake.segmentation.surrogate import load_booster
from seglake.segmentation.sweep import sweep
from seglake.core.tables import Tables, read_run
from seglake.serving.export import export_segmenter

BLOB_SIZES = [700, 500, 400, 350, 250, 200]  # unequal groups, 2,400 entities
FAST_UMAP = "n_neighbors: 15, n_components: 2, n_epochs: 200"


def blob_entities(sizes=BLOB_SIZES, features: int = 8, seed: int = 3) -> pd.DataFrame:
    """Entities whose signed-log1p features form Gaussian blobs: heavy-tailed in raw units, like
    follower counts, and exactly the blobs in the clustering space."""
    points, truth = make_blobs(n_samples=sizes, n_features=features, cluster_std=1.0,
                               center_box=(-8, 8), random_state=seed)
    raw = np.sign(points) * np.expm1(np.abs(points))
    frame = pd.DataFrame(raw, columns=[f"f{i}" for i in range(features)])
    frame.insert(0, "entity_id", [f"e{i:05d}" for i in range(len(frame))])
    frame["truth"] = truth
    return frame


def density_config(tmp_path: Path, lakehouse: Path, density: str, explain: str = "", sweep: str = ""):
    text = (f"name: t\nlakehouse: {lakehouse}\nentities: {{path: unused.csv, id: entity_id}}\n"
            f"density: {density}\n" + (f"explain: {explain}\n" if explain else "")
            + (f"sweep: {sweep}\n" if sweep else ""))
    return load_config(write_config(tmp_path, text))


def write_entities(spark, config, frame: pd.DataFrame) -> None:
    """The silver/entities contract: entity_id + double features (truth columns are not features)."""
    columns = [c for c in frame.columns if c not in ("truth", "segment")]
    spark.createDataFrame(frame[columns]).write.format("delta").mode("overwrite").save(
        Tables.of(config).entities)


def read_clusters(spark, config, run_id: str) -> pd.DataFrame:
    """The run's gold/clusters rows (test data is small, so collecting it is fine here)."""
    table = spark.read.format("delta").load(Tables.of(config).gold("clusters"))
    return table.where(f"run_id = '{run_id}'").toPandas().sort_values("entity_id").reset_index(drop=True)


def test_allocate_shares_the_budget_equally_and_takes_small_strata_whole():
    assert allocate({0: 10, 1: 1000, 2: 1000}, 300) == {0: 10, 1: 145, 2: 145}
    assert allocate({0: 50, 1: 60}, 500) == {0: 50, 1: 60}
    assert sum(allocate({0: 999, 1: 998, 2: 5}, 1001).values()) == 1001


def test_clustering_space_takes_negatives_nulls_and_constants():
    values = np.array([[-100.0, 1.0, 5.0], [0.0, np.nan, 5.0], [1e6, 3.0, 5.0], [10.0, 2.0, 5.0]])
    space = clustering_space(values)
    assert np.isfinite(space).all()
    assert np.allclose(space.mean(axis=0), 0.0) and np.allclose(space[:, 2], 0.0)
    assert space[1, 1] == pytest.approx(space[3, 1])  # the null took the median (log1p 2)


def test_tiny_group_is_all_noise_without_failing():
    frame = blob_entities([6], features=3).drop(columns="truth").assign(group=4)
    settings = DensityConfig(umap={"n_neighbors": 15}, hdbscan={"min_cluster_size": 5}).model_dump()
    out, clusters, sweep = cluster_group(frame, ["f0", "f1", "f2"], settings, offset_by_group=True)
    assert (out["cluster"] == -1).all() and out["x"].isna().all() and len(out) == 6
    assert clusters.empty and sweep["chosen"].tolist() == [True] and sweep["noise_share"].tolist() == [1.0]


def test_embeddings_above_umaps_small_data_size_use_exact_neighbours_and_repeat():
    # from 4,096 rows UMAP would search neighbours with pynndescent (approximate, and compiled anew
    # in every Python worker); the stage hands it the exact graph, so a refit sees the same graph
    rng = np.random.default_rng(0)
    space = rng.normal(size=(4500, 5))
    space[:1500] += 4
    indices, distances = exact_neighbours(space, 10, "euclidean")
    brute = np.sort(cdist(space[:50], space), axis=1)[:, :10]
    assert (indices[:, 0] == np.arange(4500)).all() and np.allclose(distances[:50], brute, atol=1e-5)
    settings = {"metric": "euclidean", "n_epochs": 50}
    first, graph = density_fit._umap(space, settings, 10, 0, 2, 0.0)
    again, _ = density_fit._umap(space, settings, 10, 0, 2, 0.0)
    assert graph[0] is not None and np.array_equal(first, again)


def test_embedding_repeats_when_the_neighbour_graph_falls_apart():
    # Sparse counts repeat whole rows, and the neighbour graph of such rows falls apart into dozens
    # of components. UMAP's spectral start lays each out with ARPACK, whose restarts draw from a
    # seed kept between calls: two identical fits in one process gave other embeddings (and at
    # 16,495 users, other density settings from run to run). The stage starts from PCA instead.
    rng = np.random.default_rng(0)
    space = density_fit.clustering_space(rng.poisson(0.5, size=(3000, 6)).astype(float))
    settings = {"metric": "euclidean", "n_epochs": 10}
    first, graph = density_fit._umap(space, settings, 15, 0, 5, 0.0)
    again = [density_fit._umap(space, settings, 15, 0, 5, 0.0, graph)[0] for _ in range(2)]
    assert all(np.array_equal(first, other) for other in again)


def test_python_workers_share_the_numba_cache(spark):
    # every worker compiles UMAP's numba kernels into the same folder, so later ones load them
    assert worker_numba_cache(spark) == os.environ["NUMBA_CACHE_DIR"]


def test_density_matches_umap_hdbscan_and_assigns_everyone(spark, tmp_path, lakehouse):
    config = density_config(tmp_path, lakehouse, "{sample_size: 1500, seed: 7, umap: {%s}, "
                            "hdbscan: {min_cluster_size: 40}, stability_resamples: 4}" % FAST_UMAP)
    frame = blob_entities()
    write_entities(spark, config, frame)
    result = density(spark, config, "r1")
    clusters = read_clusters(spark, config, "r1").merge(frame[["entity_id", "truth"]], on="entity_id")

    assert len(clusters) == 2400 and clusters["entity_id"].is_unique
    sampled = clusters[clusters["in_sample"]]
    assert len(sampled) == 1500
    assert clusters.loc[~clusters["in_sample"], ["x", "y"]].isna().all().all()
    assert sampled[["x", "y"]].notna().all().all()
    # the same matrix, rows in the same order, straight into umap-learn and hdbscan
    import hdbscan
    import umap

    features = [f"f{i}" for i in range(8)]
    rows = frame.set_index("entity_id").loc[sampled["entity_id"], features].to_numpy()
    embedding = umap.UMAP(n_neighbors=15, n_components=2, min_dist=0.0, n_epochs=200,
                          random_state=7).fit_transform(clustering_space(rows))
    direct = hdbscan.HDBSCAN(min_cluster_size=40, approx_min_span_tree=False).fit(embedding).labels_
    ours = adjusted_rand_score(sampled["truth"], sampled["cluster"])
    assert ours == pytest.approx(adjusted_rand_score(sampled["truth"], direct), abs=0.03)
    assert ours > 0.9

    group = result.details["groups"][0]
    assert group["fidelity"] >= 0.97 and group["clusters"] == 6
    assert group["stability_ari"] > 0.8
    assert adjusted_rand_score(clusters["truth"], clusters["cluster"]) > 0.9  # surrogate rows too

    again = density(spark, config, "r1")  # same seed, same run: same labels, rows replaced
    assert again.details["groups"][0]["stability_ari"] == group["stability_ari"]
    rerun = read_clusters(spark, config, "r1")
    assert len(rerun) == 2400
    assert (rerun["cluster"].to_numpy() == clusters.sort_values("entity_id")["cluster"].to_numpy()).all()
    quality = spark.read.format("delta").load(Tables.of(config).gold("cluster_quality"))
    assert quality.where("run_id = 'r1'").count() == 1


def test_grouped_density_keeps_cluster_ids_apart_and_checks_model_files(spark, tmp_path, lakehouse):
    config = density_config(tmp_path, lakehouse, "{sample_size: 1000, group_by: segment, umap: "
                            "{n_neighbors: 15, n_components: 3, n_epochs: 100}, "
                            "hdbscan: {min_cluster_size: 25}, stability_fraction: 0}",
                            sweep="{k: 2, k_min: 2, k_max: 3, silhouette_sample: 400}")
    frame = blob_entities([300, 250, 200, 200, 150, 100], features=6)
    write_entities(spark, config, frame)
    with pytest.raises(SeglakeError, match="run the sweep stage first"):
        density(spark, config, "g1")
    sweep(spark, config, "g1")

    result = density(spark, config, "g1")
    segment(spark, config, "g1")  # the segment stage owns the KMeans labels: groups must be them
    segments = spark.read.format("delta").load(Tables.of(config).gold("segments")).where(
        "run_id = 'g1'").select("entity_id", "segment").toPandas()
    clusters = read_clusters(spark, config, "g1").merge(segments, on="entity_id").merge(
        frame[["entity_id", "truth"]], on="entity_id")
    assert len(clusters) == len(frame) and set(clusters["segment"]) == {0, 1}
    assert (clusters["group"] == clusters["segment"]).all()
    assert (clusters.groupby("truth")["group"].nunique() == 1).all()  # KMeans keeps each blob whole
    clustered = clusters[clusters["cluster"] != -1]
    assert (clustered["cluster"] // 1000 == clustered["group"]).all()
    assert clustered["cluster"].nunique() == 6
    assert clusters.loc[clusters["in_sample"], ["x", "y"]].notna().all().all()
    assert sorted(result.details["model_files"]) == ["surrogate-segment-0.json", "surrogate-segment-1.json"]

    folder = Tables.of(config).models("g1")
    booster = load_booster(spark, folder, "surrogate-segment-1.json", "manifest-density.json")
    assert json.loads(booster.attr("classes"))[-1] >= 1000
    with open(f"{folder}/surrogate-segment-1.json", "a") as model_file:
        model_file.write(" ")
    with pytest.raises(SeglakeError, match="sha256"):
        load_booster(spark, folder, "surrogate-segment-1.json", "manifest-density.json")


def planted_groups(sizes=(300, 300, 300, 300, 300), noise: int = 120, features: int = 6,
                   split: float = 0.0) -> pd.DataFrame:
    """Five well-separated Gaussian groups and uniform noise over a wider box (``truth`` −1), in the
    same heavy-tailed raw units as :func:`blob_entities`.

    With ``split`` > 0 the last group is two sub-groups (``truth`` 4 and 5, half each) whose centres
    are ``split`` apart along a random direction: apart by about 4 of their standard deviations (0.6)
    at 2.5, yet close beside the other groups (centres 10-20 apart).
    """
    points, truth = make_blobs(n_samples=list(sizes), n_features=features, cluster_std=0.6,
                               center_box=(-10, 10), random_state=1)
    if split:
        rows = np.flatnonzero(truth == len(sizes) - 1)
        direction = np.random.default_rng(2).normal(size=features)
        direction /= np.linalg.norm(direction)
        points[rows] -= direction * split / 2
        points[rows[: len(rows) // 2]] += direction * split
        truth[rows[: len(rows) // 2]] = len(sizes)
    scattered = np.random.default_rng(0).uniform(-15, 15, size=(noise, features))
    values = np.vstack([points, scattered])
    frame = pd.DataFrame(np.sign(values) * np.expm1(np.abs(values)), columns=[f"f{i}" for i in range(features)])
    frame.insert(0, "entity_id", [f"p{i:05d}" for i in range(len(frame))])
    frame["truth"] = np.r_[truth, np.full(noise, -1)]
    return frame


def test_planted_groups_are_the_stable_clusters_the_rule_chooses(spark, tmp_path, lakehouse):
    # automatic settings: n_neighbors 15 or 30, min_cluster_size 0.5% to 4% of the rows. UMAP packs
    # the uniform noise into a blob HDBSCAN finds again in every refit at n_neighbors 15 (a stable
    # sixth cluster, 80 rows): the rule's preference for fewer clusters among equally stable
    # settings is what leaves it out
    config = density_config(tmp_path, lakehouse, "{sample_size: 5000, umap: {n_components: 2, "
                            "n_epochs: 200}, stability_resamples: 8}")
    frame = planted_groups()
    write_entities(spark, config, frame)
    result = density(spark, config, "p1")
    tables = Tables.of(config)
    stability = spark.read.format("delta").load(tables.gold("cluster_stability")).toPandas()
    sweep = spark.read.format("delta").load(tables.gold("density_sweep")).toPandas()
    clusters = read_clusters(spark, config, "p1").merge(frame[["entity_id", "truth"]], on="entity_id")

    assert len(sweep) == 8 and sweep["chosen"].sum() == 1  # 2 n_neighbors x 4 shares of 1,620 rows
    chosen = sweep[sweep["chosen"]].iloc[0]
    assert chosen["reason"] in result.message and "highest mean cluster stability" in chosen["reason"]
    stable = stability[stability["stable"]]
    assert len(stable) == 5 and (stable["jaccard"] >= 0.85).all()
    assert (stability["refits"] == 9).all()  # 8 subset refits + the UMAP refit
    # the rule chose on 5 refits of each setting (screening); only the chosen one ran all 8
    assert chosen["refits"] == 9 and (sweep.loc[~sweep["chosen"], "refits"] == 6).all()
    assert "chosen on 5 subset refits and the UMAP refit of each setting, then its clusters ran all 8" in chosen["reason"]
    # every stable cluster is mostly one planted group (noise rows aside), each group in one cluster
    planted = clusters[clusters["cluster"].isin(stable["merged_into"])]
    majority = planted.groupby("cluster")["truth"].agg(lambda t: t.mode()[0])
    assert sorted(majority) == [0, 1, 2, 3, 4]
    found = clusters[clusters["truth"] >= 0].groupby("truth")["cluster"].agg(
        lambda c: c.value_counts(normalize=True).iloc[0])
    assert (found >= 0.95).all()
    assert set(clusters.loc[clusters["cluster"] != -1, "cluster"]) == set(stable["merged_into"])

    # the stage's tasks (refits split over chunks) give what one process gives
    features = [f"f{i}" for i in range(6)]
    labels, alone, alone_sweep = cluster_group(frame[features + ["entity_id"]].assign(group=0), features,
                                               config.density.model_dump())
    ours = clusters.sort_values("entity_id")
    assert (labels.sort_values("entity_id")["cluster"].to_numpy() == ours["cluster"].to_numpy()).all()
    assert alone["jaccard"].to_numpy() == pytest.approx(stability.sort_values("hdbscan_cluster")["jaccard"].to_numpy())
    assert alone_sweep["mean_jaccard"].to_numpy() == pytest.approx(
        sweep.sort_values(["n_neighbors", "min_cluster_size"])["mean_jaccard"].to_numpy())


def test_unstable_clusters_join_the_nearest_stable_one_or_become_noise():
    # min_cluster_size 8 splits off small pieces that the refits do not find again
    frame = planted_groups()
    features = [f"f{i}" for i in range(6)]
    sample = frame[features + ["entity_id"]].assign(group=0)
    settings = DensityConfig(umap={"n_neighbors": 15, "n_components": 2, "n_epochs": 200},
                             hdbscan={"min_cluster_size": 8}, stability_resamples=8).model_dump()
    labels, clusters, _ = cluster_group(sample, features, settings)
    unstable, stable = clusters[clusters["stable"] == False], clusters[clusters["stable"] == True]  # noqa: E712
    assert len(unstable) >= 1 and (unstable["jaccard"] < 0.6).all() and (stable["jaccard"] >= 0.6).all()
    centroids = stable[["c0", "c1"]].to_numpy()
    for row in unstable.itertuples():
        nearest = stable["hdbscan_cluster"].iloc[np.argmin(((centroids - [row.c0, row.c1]) ** 2).sum(axis=1))]
        assert row.merged_into == nearest
        assert (labels.loc[labels["hdbscan_cluster"] == row.hdbscan_cluster, "cluster"] == nearest).all()
    assert set(labels["cluster"]) - {-1} == set(stable["hdbscan_cluster"])

    settings["unstable"] = "noise"
    labels, clusters, _ = cluster_group(sample, features, settings)
    lost = clusters.loc[clusters["stable"] == False, "hdbscan_cluster"]  # noqa: E712
    assert (labels.loc[labels["hdbscan_cluster"].isin(lost), "cluster"] == -1).all()
    assert (clusters.loc[clusters["hdbscan_cluster"].isin(lost), "merged_into"] == -1).all()


def test_depth_2_splits_the_planted_group_of_two_sub_groups_and_only_it(spark, tmp_path, lakehouse):
    # four groups of 300 and one of 1,200 made of two sub-groups of 600; no uniform noise here (a
    # level-1 cluster that absorbed a blob of it splits it off as a stable child of its own)
    frame = planted_groups(sizes=(300, 300, 300, 300, 1200), noise=0, split=2.5)
    text = ("{sample_size: 2000, umap: {n_components: 2, n_epochs: 200}, stability_resamples: 8, "
            "min_split_size: 200%s}")
    shallow = density_config(tmp_path, lakehouse, text % "")
    write_entities(spark, shallow, frame)
    density(spark, shallow, "d1")
    deep = density_config(tmp_path, lakehouse, text % ", depth: 2", sweep="{k: 2, k_min: 2, k_max: 3}")
    sweep(spark, deep, "d2")  # scoring and serving need the run's KMeans model
    result = density(spark, deep, "d2")
    tables = Tables.of(deep)
    one = read_clusters(spark, shallow, "d1").merge(frame[["entity_id", "truth"]], on="entity_id")
    two = read_clusters(spark, deep, "d2").merge(frame[["entity_id", "truth"]], on="entity_id")

    # depth 1: the two sub-groups are one cluster; depth 2 keeps every level-1 label as it was
    parent = one.loc[one["truth"] == 4, "cluster"].mode()[0]
    assert (one.loc[one["truth"].isin([4, 5]), "cluster"] == parent).mean() >= 0.95
    assert one["cluster_path"].tolist() == one["cluster"].astype(str).tolist()
    assert (two["cluster"].to_numpy() == one["cluster"].to_numpy()).all()

    # depth 2: that cluster has two children, each one sub-group (Jaccard against the planted truth)
    members = two[two["cluster"] == parent]
    assert set(members["cluster_2"].dropna()) - {-1} == {1, 2}
    for sub_group in (4, 5):
        child = members.loc[members["truth"] == sub_group, "cluster_2"].mode()[0]
        path = two["cluster_path"] == f"{parent}.{int(child)}"
        truth = two["truth"] == sub_group
        assert (path & truth).sum() / (path | truth).sum() >= 0.9
    # the surrogate carried level 2 to the rows the level-2 sample left out
    quality = spark.read.format("delta").load(tables.gold("cluster_quality")).where("run_id = 'd2'").toPandas()
    split = quality[(quality["level"] == 2) & (quality["parent"] == str(parent))].iloc[0]
    assert split["split_kept"] and split["population"] > split["sample_rows"]
    # every other planted group is tried and refused, with the reason
    others = quality[(quality["level"] == 2) & (quality["parent"] != str(parent))]
    assert len(others) == 4 and not others["split_kept"].any() and others["split_reason"].str.len().min() > 0
    assert two.loc[two["cluster"] != parent, "cluster_2"].isna().all()
    assert "level 2: 1 split(s) kept, 4 refused" in result.message

    stability = spark.read.format("delta").load(tables.gold("cluster_stability")).where("run_id = 'd2'").toPandas()
    children = stability[(stability["level"] == 2) & (stability["parent"] == str(parent)) & stability["stable"]]
    assert sorted(children["merged_into"]) == [1, 2] and (children["jaccard"] >= 0.85).all()
    manifest = json.loads((Path(tables.models("d2")) / "manifest-density.json").read_text())
    assert manifest["details"]["levels"]["2"][str(parent)]["classes"][-2:] == [1, 2]

    # each child is explained against its sibling within the parent, named, and described against
    # the parent's medians; names are unique among the clusters and children of the run
    explained = explain(spark, deep, "d2")
    described = read_run(spark, tables.gold("descriptions"), "d2").toPandas()
    kids = described[described["kind"] == "subcluster"].set_index("path")
    assert sorted(kids.index) == [f"{parent}.1", f"{parent}.2"]
    assert described["name"].is_unique and kids["name"].str.len().min() > 0
    for path, row in kids.iterrows():
        assert row["description"].startswith(f"Cluster {path} — ") and f"of cluster {parent}:" in row["description"]
        assert f"cluster {parent}'s" in row["description"] or f"in cluster {parent}" in row["description"]
        assert 0.3 <= row["share"] <= 0.7  # the two sub-groups are halves of the parent
    f1 = read_run(spark, tables.gold("explanations"), "d2").where("kind = 'subcluster'").groupBy("path").agg(
        F.max("f1").alias("f1")).toPandas()
    assert len(f1) == 2 and (f1["f1"] >= 0.9).all()
    assert any(name["path"] == f"{parent}.1" for name in explained.details["names"])
    assert (Path(tables.models("d2")) / "explain" / f"cluster-{parent}.1.json").exists()

    # new rows follow the tree level by level: `seglake score` (Spark) and the Spark-free segmenter
    # give the same path, and it is the training path wherever the surrogates carried the labels
    batch = tmp_path / "batch.csv"
    frame.drop(columns="truth").to_csv(batch, index=False)
    score(spark, deep, "d2", str(batch), "s2")
    scored = spark.read.format("delta").load(tables.gold("segments")).where("run_id = 's2'").toPandas()
    scored = scored.sort_values("entity_id").reset_index(drop=True)
    served = export_segmenter(spark, tables, "d2").predict(frame.drop(columns="truth"))
    served = served.sort_values("entity_id").reset_index(drop=True)
    assert scored["entity_id"].tolist() == served["entity_id"].tolist() == two["entity_id"].tolist()
    assert (scored["cluster_path"] == served["cluster_path"]).mean() >= 0.999
    assert (scored["cluster_2"].fillna(-9) == served["cluster_2"].fillna(-9)).mean() >= 0.999
    assert (scored["cluster_path"] == two["cluster_path"]).mean() >= 0.97
    assert set(served["cluster_path"]) >= {f"{parent}.1", f"{parent}.2"}
    for path, row in kids.iterrows():  # the served rows carry the children's names
        assert set(served.loc[served["cluster_path"] == path, "cluster_path_name"]) == {row["name"]}
    # the report draws the tree: the parent, its two children with their sizes, and its verdict
    page = "".join(density_section(ReportRun(spark, deep, "d2")).parts)
    for child in (1, 2):
        size = int((two["cluster_path"] == f"{parent}.{child}").sum())
        assert f"<td>\u2514 {parent}.{child}</td><td>{size:,}</td>" in page
    assert html.escape(split["split_reason"]) in page
    page = "".join(explain_section(ReportRun(spark, deep, "d2")).parts)
    for path, row in kids.iterrows():
        assert html.escape(f'Cluster {path} "{row["name"]}"') in page
