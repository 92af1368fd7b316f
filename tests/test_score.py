"""Scoring new users with a trained run: same segments for the same users, quarantine accounting,
drift flagged on shifted data and not on fresh data of the same distribution, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyspark
import pytest
from pyspark.sql import functions as F

from conftest import write_config
from seglake.cli import DRIFT_EXIT, main
from seglake.core.config import load_config
from seglake.segmentation.drift import bin_counts, psi, status, training_bins
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import run_stages
from seglake.segmentation.score import quarantine_path, score
from seglake.segmentation.segment import segment
from seglake.segmentation.sweep import sweep
from seglake.synth import generate
from seglake.core.tables import Tables

ROOT = Path(__file__).resolve().parents[1]
USERS = ROOT / "conf" / "tiktok_users.yaml"
EVENTS = 30_000


def _table(spark, path: str, run_id: str) -> pd.DataFrame:
    """One run's rows of a Delta table (test data: a few thousand rows)."""
    return spark.read.format("delta").load(path).where(F.col("run_id") == run_id).toPandas()


# ---------------------------------------------------------------- PSI and bins (no model needed)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    expected = (0.4 - 0.25) * np.log(0.4 / 0.25) + (0.1 - 0.25) * np.log(0.1 / 0.25)
    assert psi([0.25] * 4, [0.4, 0.1, 0.25, 0.25]) == pytest.approx(expected)
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0  # an empty bin on both sides is no drift
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))  # floored, not infinite
    assert [status(v, 0.1, 0.25) for v in (0.05, 0.1, 0.2, 0.25, 3.0)] == ["ok", "warn", "warn", "flag", "flag"]


def test_bins_merge_tied_quantiles_and_count_nulls(spark):
    # 60% of the values are 1 (a count feature): several deciles tie and must merge into one bin
    values = [1.0] * 60 + [float(v) for v in range(2, 41)] + [None]
    frame = spark.createDataFrame([(v,) for v in values], "likes double")
    bins = training_bins(frame, ["likes"], 10)["likes"]
    assert bins["edges"] == sorted(set(bins["edges"])) and bins["edges"][0] == 1.0
    assert len(bins["expected"]) == len(bins["edges"]) + 2
    assert bins["expected"][0] == pytest.approx(60 / 100) and bins["expected"][-1] == pytest.approx(1 / 100)
    assert sum(bins["expected"]) == pytest.approx(1.0)
    rows, counts = bin_counts(frame, {"likes": bins["edges"]})
    assert rows == 100 and [c / rows for c in counts["likes"]] == pytest.approx(bins["expected"])


# ---------------------------------------------------------------- users: events in, segments out


def _overrides(folder: Path, **extra: str) -> list[str]:
    settings = {
        "events.path": str(folder / "train" / "events"), "lakehouse": str(folder / "lake"),
        "sweep.k_min": "3", "sweep.k_max": "6", "sweep.silhouette_sample": "600",
        "density.sample_size": "300", "density.hdbscan.min_cluster_size": "15",
        "density.stability_fraction": "0", "density.umap.n_components": "2",
        "density.umap.n_neighbors": "15",
    }
    settings.update(extra)
    return [f"{key}={value}" for key, value in settings.items()]


@pytest.fixture(scope="module")
def users(spark, tmp_path_factory):
    """Synthetic users (Parquet, 1% corrupt) through ingest .. density as run 'train'."""
    folder = tmp_path_factory.mktemp("score")
    generate(folder / "train", EVENTS, seed=11, corrupt_rate=0.01)
    config = load_config(USERS, _overrides(folder))
    run_stages(spark, config, ["ingest", "features", "sweep", "segment", "density"], "train",
               echo=lambda line: None)
    return folder, config


def test_training_segments_gain_density_clusters(spark, users):
    _, config = users
    tables = Tables.of(config)
    segments = _table(spark, tables.gold("segments"), "train").set_index("entity_id")
    clusters = _table(spark, tables.gold("clusters"), "train").set_index("entity_id")
    assert segments["model_run"].eq("train").all() and segments["in_training_filter"].all()
    joined = segments.join(clusters, rsuffix="_c", how="inner")
    assert len(joined) == len(segments)  # density (group_by none) covers every segmented entity
    assert (joined["cluster"] == joined["cluster_c"]).all()
    assert np.allclose(joined["cluster_probability"], joined["cluster_probability_c"])
    sampled = joined["in_sample"]
    assert joined.loc[sampled, "x"].notna().all() and joined.loc[~sampled, "x"].isna().all()


def test_manifest_has_versions_types_bins_and_k(spark, users):
    _, config = users
    manifest = json.loads((Path(Tables.of(config).models("train")) / "manifest.json").read_text())["details"]
    features = list(config.features.definitions)
    assert manifest["features"] == features and manifest["config_hash"] == config.config_hash
    assert manifest["feature_types"] == {f: "double" for f in features}
    assert manifest["versions"]["pyspark"] == pyspark.__version__ and "delta-spark" in manifest["versions"]
    assert manifest["chosen_k"] == manifest["clustering"]["k"]
    assert set(manifest["drift_bins"]) == set(features)
    for spec in manifest["drift_bins"].values():
        assert spec["edges"] == sorted(set(spec["edges"])) and len(spec["edges"]) <= 9
        assert len(spec["expected"]) == len(spec["edges"]) + 2 and sum(spec["expected"]) == pytest.approx(1)


@pytest.fixture(scope="module")
def rescored(spark, users):
    """The same users' events delivered again as CSV with different (and more) corruption."""
    folder, config = users
    generate(folder / "again", EVENTS, seed=11, fmt="csv", corrupt_rate=0.02)
    events_before = spark.read.format("delta").load(Tables.of(config).events).count()
    csv_config = load_config(USERS, _overrides(folder, **{"events.format": "csv"}))
    result = score(spark, csv_config, "train", str(folder / "again" / "events"), "s1")
    return folder, csv_config, result, events_before


def test_rescored_users_get_their_training_segments(spark, users, rescored):
    _, config = users
    _, _, result, _ = rescored
    tables = Tables.of(config)
    training = _table(spark, tables.gold("segments"), "train").set_index("entity_id")
    clusters = _table(spark, tables.gold("clusters"), "train").set_index("entity_id")
    scored = _table(spark, tables.gold("segments"), "s1").set_index("entity_id")
    assert scored.index.is_unique and len(scored) == result.rows_out
    assert scored["model_run"].eq("train").all() and scored["cluster"].notna().all()
    both = training.join(scored, rsuffix="_s", how="inner")
    assert len(both) >= 0.99 * len(training)
    assert (both["segment"] == both["segment_s"]).mean() >= 0.99
    # surrogate labels for entities outside the density sample are the training surrogate's own
    outside = both.index[~clusters.loc[both.index, "in_sample"].to_numpy()]
    assert len(outside) > 0.3 * len(both)
    assert (both.loc[outside, "cluster"] == both.loc[outside, "cluster_s"]).mean() >= 0.99
    # no silent filter: inactive users are scored too, and marked
    assert (~scored["in_training_filter"]).sum() > 0
    assert abs(int(scored["in_training_filter"].sum()) - len(training)) <= 0.02 * len(training)
    assert result.details["flagged"] == []


def test_rescoring_accounts_for_every_event_and_leaves_training_bronze_alone(spark, users, rescored):
    _, config = users
    folder, _, result, events_before = rescored
    corrupt = int((folder / "again" / "truth" / "corrupt_rows.txt").read_text())
    quarantine = _table(spark, quarantine_path(Tables.of(config)), "s1")
    assert result.rows_in == EVENTS and len(quarantine) == corrupt == result.details["quarantined"]
    assert {r.split(":")[0] for r in quarantine["reason"]} >= {"malformed_line", "duplicate_row"}
    assert spark.read.format("delta").load(Tables.of(config).events).count() == events_before
    runs = _table(spark, Tables.of(config).gold("runs"), "s1")
    assert list(runs["stage"]) == ["score"] and runs["rows_in"].iloc[0] == EVENTS
    assert "reconciled" in result.message


def test_rescoring_the_same_run_id_replaces_its_rows(spark, users, rescored):
    folder, csv_config, result, _ = rescored
    score(spark, csv_config, "train", str(folder / "again" / "events"), "s1")
    tables = Tables.of(csv_config)
    assert len(_table(spark, tables.gold("segments"), "s1")) == result.rows_out
    assert len(_table(spark, tables.gold("drift"), "s1")) == len(csv_config.features.definitions)
    assert len(_table(spark, quarantine_path(tables), "s1")) == result.details["quarantined"]


def test_fresh_users_pass_and_shifted_users_are_flagged_with_exit_code(spark, users, tmp_path):
    folder, config = users
    # New events from the same synthetic world (items, authors, users): another chunking draws other
    # events. Another seed is *not* the same distribution: it draws another item world, and the
    # users' mean viewing duration then shifts enough to be flagged (PSI >= 0.25 with seed 5).
    generate(tmp_path / "fresh", EVENTS, seed=11, chunk_events=7_000)
    fresh = score(spark, config, "train", str(tmp_path / "fresh" / "events"), "fresh")
    assert fresh.details["flagged"] == []

    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for part in sorted((tmp_path / "fresh" / "events").glob("part-*.parquet")):
        events = pq.read_table(part).to_pandas()
        events["duration_time"] *= 4   # everyone watches four times longer ...
        events["like"] = 0             # ... and nobody likes anything any more
        events.to_parquet(shifted / part.name, index=False)
    code = main(["score", "--config", str(USERS), "--model-run", "train", "--input", str(shifted),
                 "--run-id", "shifted", "--fail-on-drift",
                 *[arg for o in _overrides(folder) for arg in ("--set", o)]])
    assert code == DRIFT_EXIT
    drift = _table(spark, Tables.of(config).gold("drift"), "shifted").set_index("feature")
    assert drift.loc["Average_duration_of_viewing_works", "status"] == "flag"
    assert drift.loc["Like_count", "status"] == "flag"
    assert drift.loc["Number_of_authors_viewed", "psi"] < drift.loc["Like_count", "psi"]
    assert (drift["model_run"] == "train").all() and (drift["rows"] > 0).all()


def test_scoring_refuses_what_it_cannot_score(spark, users, tmp_path):
    folder, config = users
    events = str(folder / "train" / "events")
    with pytest.raises(SeglakeError, match="is the model run"):
        score(spark, config, "train", events, "train")
    with pytest.raises(SeglakeError, match="run the sweep stage first for run nope"):
        score(spark, config, "nope", events, "s9")
    changed = load_config(USERS, _overrides(folder, **{"features.definitions.Like_count.agg": "max"}))
    with pytest.raises(SeglakeError, match="differ from those of model run train for Like_count"):
        score(spark, changed, "train", events, "s9")
    assert main(["score", "--config", str(USERS), "--model-run", "train", "--input", str(tmp_path),
                 "--run-id", "s9", *[a for o in _overrides(folder) for a in ("--set", o)]]) == 2


# ---------------------------------------------------------------- an entity table without density


@pytest.fixture(scope="module")
def accounts(spark, tmp_path_factory):
    """600 accounts in 3 planted groups (CSV with a categorical), swept and segmented as 'acc'."""
    folder = tmp_path_factory.mktemp("accounts")
    rng = np.random.default_rng(4)
    group = np.repeat([0, 1, 2], 200)
    centers = np.array([[1.0, 6.0, 2.0], [5.0, 1.0, 4.0], [3.0, 3.0, 7.0]])
    logged = centers[group] + rng.normal(0, 0.3, size=(600, 3))
    frame = pd.DataFrame(np.expm1(logged).round(3), columns=["followers", "likes", "videos"])
    frame.insert(0, "account", [f"a{i:04d}" for i in range(600)])
    frame["verified"] = np.where(group == 2, "TRUE", "false")
    frame.to_csv(folder / "accounts.csv", index=False)
    text = (f"name: acc\nlakehouse: {folder / 'lake'}\n"
            f"entities: {{path: accounts.csv, id: account, categorical: [verified]}}\n"
            "filter: {min: {videos: 1}}\nsweep: {k_min: 2, k_max: 4, silhouette_sample: 300}\n")
    config = load_config(write_config(folder, text))
    run_stages(spark, config, ["features"], "acc", echo=lambda line: None)
    sweep(spark, config, "acc")
    segment(spark, config, "acc")
    return folder, config, frame


def test_entity_rows_score_like_training_with_unseen_categories(spark, accounts):
    folder, config, frame = accounts
    batch = frame.head(300).copy()
    batch.loc[batch.index[:5], "verified"] = "pending"      # a category never seen in training
    batch.loc[batch.index[5], "likes"] = None                # imputed with the training median
    batch = pd.concat([batch, batch.head(2)])                # two duplicate ids: quarantined
    batch.to_csv(folder / "batch.csv", index=False)
    result = score(spark, config, "acc", str(folder / "batch.csv"), "b1")
    tables = Tables.of(config)
    scored = _table(spark, tables.gold("segments"), "b1").set_index("entity_id")
    training = _table(spark, tables.gold("segments"), "acc").set_index("entity_id")
    assert result.rows_in == 302 and len(scored) == 300 and result.details["quarantined"] == 2
    changed = set(batch["account"].head(6))                   # unseen category or null likes
    same = training.index.intersection(scored.index).difference(sorted(changed))
    assert (training.loc[same, "segment"] == scored.loc[same, "segment"]).all()
    assert np.allclose(training.loc[same, "distance"], scored.loc[same, "distance"])
    assert scored["cluster"].isna().all() and "no density stage" in result.message
    reasons = _table(spark, quarantine_path(tables), "b1")["reason"]
    assert list(reasons) == ["duplicate_id", "duplicate_id"]


def test_categorical_features_drift_by_their_categories(spark, accounts):
    folder, config, frame = accounts
    manifest = json.loads((Path(Tables.of(config).models("acc")) / "manifest.json").read_text())["details"]
    spec = manifest["drift_bins"]["verified"]  # categories by training frequency, then others, nulls
    assert spec == {"categories": ["false", "true"], "expected": [pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0, 0.0]}
    frame.to_csv(folder / "same.csv", index=False)
    score(spark, config, "acc", str(folder / "same.csv"), "same")
    same = _table(spark, Tables.of(config).gold("drift"), "same").set_index("feature")
    assert same.loc["verified", "psi"] == pytest.approx(0.0) and same.loc["verified", "status"] == "ok"
    # a batch of the two unverified groups, a tenth of it with a status training never saw
    shifted = frame.head(400).copy()
    shifted.loc[shifted.index[:40], "verified"] = "pending"
    shifted.to_csv(folder / "shifted.csv", index=False)
    score(spark, config, "acc", str(folder / "shifted.csv"), "shifted")
    drift = _table(spark, Tables.of(config).gold("drift"), "shifted").set_index("feature")
    assert list(drift.loc["verified", "actual"]) == [pytest.approx(0.9), 0.0, pytest.approx(0.1), 0.0]
    assert drift.loc["verified", "status"] == "flag"


def test_missing_or_mistyped_feature_column_is_one_line_naming_it(spark, accounts):
    folder, config, frame = accounts
    frame.drop(columns="likes").to_csv(folder / "no_likes.csv", index=False)
    with pytest.raises(SeglakeError, match=r"'likes' not found in .*no_likes.csv"):
        score(spark, config, "acc", str(folder / "no_likes.csv"), "b2")
    frame.assign(videos="many").to_csv(folder / "words.csv", index=False)
    with pytest.raises(SeglakeError, match=r"feature column 'videos' in .*words.csv is not numeric"):
        score(spark, config, "acc", str(folder / "words.csv"), "b2")
    events_config = load_config(USERS, [f"lakehouse={folder / 'lake'}", "name=acc"])
    with pytest.raises(SeglakeError, match="was trained on an entity table"):
        score(spark, events_config, "acc", str(folder / "batch.csv"), "b2")
