"""Tests for seglake.synth: determinism, schema, planted archetypes, corruption counts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from seglake import synth  # noqa: E402

COLUMNS = list(synth.COLUMNS)


def _read_bytes(out: Path) -> dict[str, bytes]:
    """All generated files (data and truth) keyed by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _load(out: Path) -> pd.DataFrame:
    """Valid-only datasets as int64 frames."""
    parts = sorted((out / "events").glob("part-*"))
    if parts[0].suffix == ".csv":
        return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


def validate(out: Path) -> tuple[int, int]:
    """Independent validator: return (input rows, rejected rows).

    Rejects rows that do not parse into 12 integer fields, null ids,
    negative durations, flags outside {0, 1}, and exact duplicates beyond
    the first occurrence among otherwise-valid rows.
    """
    parts = sorted((out / "events").glob("part-*"))
    if parts[0].suffix == ".csv":
        raw = pd.concat([pd.read_csv(p, dtype=str, header=0) for p in parts], ignore_index=True)
        assert list(raw.columns) == COLUMNS
        is_int = raw.apply(lambda c: c.str.fullmatch(r"-?\d+", na=False))
        ok = is_int.all(axis=1)
        df = raw[ok].astype("int64")
    else:
        raw = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
        ok = raw.notna().all(axis=1)
        df = raw[ok].astype("int64")
    good = (df["duration_time"] >= 0) & df["finish"].isin([0, 1]) & df["like"].isin([0, 1])
    df = df[good]
    dups = int(df.duplicated(keep="first").sum())
    return len(raw), len(raw) - len(df) + dups


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """~200k clean events with 4 chunks, shared by the archetype tests."""
    out = tmp_path_factory.mktemp("big")
    synth.generate(out, 200_000, seed=7, chunk_events=50_000)
    return out, _load(out)


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    kw = dict(fmt="csv", corrupt_rate=0.02, chunk_events=3_000)
    synth.generate(tmp_path / "a", 10_000, seed=3, **kw)
    synth.generate(tmp_path / "b", 10_000, seed=3, **kw)
    synth.generate(tmp_path / "c", 10_000, seed=4, **kw)
    a, b, c = (_read_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert a["events/part-00000.csv"] != c["events/part-00000.csv"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_workers_do_not_change_bytes(tmp_path, fmt):
    kw = dict(fmt=fmt, seed=11, corrupt_rate=0.01, chunk_events=4_000)
    s1 = synth.generate(tmp_path / "w1", 20_000, workers=1, **kw)
    s2 = synth.generate(tmp_path / "w2", 20_000, workers=2, **kw)
    assert _read_bytes(tmp_path / "w1") == _read_bytes(tmp_path / "w2")
    assert (s1.users, s1.authors, s1.items, s1.corrupt_rows) == \
        (s2.users, s2.authors, s2.items, s2.corrupt_rows)


def test_schema_dtypes_and_chunks(tmp_path):
    s = synth.generate(tmp_path, 25_000, seed=1, chunk_events=10_000)
    assert s.events == 25_000 and s.corrupt_rows == 0
    assert [Path(f).name for f in s.files] == [f"part-0000{i}.parquet" for i in range(3)]
    assert [pq.read_metadata(f).num_rows for f in s.files] == [10_000, 10_000, 5_000]
    schema = pq.read_schema(s.files[0])
    assert schema.names == COLUMNS
    assert all(str(t) == "int64" for t in schema.types)
    df = _load(tmp_path)
    assert df.notna().all().all() and (df[COLUMNS] >= 0).all().all()
    assert set(df["finish"]) <= {0, 1} and set(df["like"]) <= {0, 1}
    assert df["duration_time"].between(5, 60).all()
    assert 9 <= df["duration_time"].mean() <= 14
    assert df["channel"].nunique() <= 5 and df["device"].nunique() <= 10
    assert df["time"].is_monotonic_increasing and df["time"].is_unique
    assert df["time"].max() - df["time"].min() < 30 * 86_400
    # each item has exactly one author, music and city
    assert (df.groupby("item_id")[["author_id", "music_id", "item_city"]].nunique() == 1).all().all()
    csv = synth.generate(tmp_path / "csv", 2_500, fmt="csv", seed=1, chunk_events=1_000)
    first = Path(csv.files[0]).read_text().splitlines()
    assert first[0] == ",".join(COLUMNS) and len(first) == 1_001
    assert Path(csv.files[-1]).read_text().splitlines()[0] == first[0]


def test_small_dataset_is_valid(tmp_path):
    s = synth.generate(tmp_path, 1_000, seed=0, fmt="csv", corrupt_rate=0.5, chunk_events=300)
    assert validate(tmp_path) == (1_000, 500) and s.corrupt_rows == 500


def test_truth_covers_exactly_present_entities(big):
    out, df = big
    users = pd.read_csv(out / "truth" / "users.csv")
    authors = pd.read_csv(out / "truth" / "authors.csv")
    assert list(users.columns) == ["uid", "archetype"]
    assert list(authors.columns) == ["author_id", "archetype"]
    assert set(users["uid"]) == set(df["uid"]) and users["uid"].is_unique
    assert set(authors["author_id"]) == set(df["author_id"])
    assert set(users["archetype"]) == set(synth.USER_ARCHETYPES)
    assert set(authors["archetype"]) == set(synth.AUTHOR_ARCHETYPES)
    assert (out / "truth" / "corrupt_rows.txt").read_text().strip() == "0"


def _user_features(out: Path, df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("uid")
    f = pd.DataFrame({
        "events": g.size(), "likes": g["like"].sum(), "finishes": g["finish"].sum(),
        "authors": g["author_id"].nunique(), "music": g["music_id"].nunique(),
        "user_cities": g["user_city"].nunique(), "item_cities": g["item_city"].nunique()})
    f["like_rate"] = f["likes"] / f["events"]
    f["finish_rate"] = f["finishes"] / f["events"]
    f["author_div"] = f["authors"] / f["events"]
    truth = pd.read_csv(out / "truth" / "users.csv").set_index("uid")
    return f.join(truth)


def test_user_archetypes_are_separable(big):
    out, df = big
    f = _user_features(out, df)
    med = f.groupby("archetype").median()
    assert med.loc["heavy", "events"] > 5 * med.loc["casual", "events"]
    assert med.loc["binge_watcher", "events"] > 5 * med.loc["casual", "events"]
    active = f[f["events"] >= 20]
    amed = active.groupby("archetype").median()
    assert amed.loc["binge_watcher", "author_div"] < 0.3 * amed.loc["explorer", "author_div"]
    others = amed.drop(["explorer", "casual"])["author_div"].max()
    assert amed.loc["explorer", "author_div"] > 1.3 * others
    assert amed.loc["binge_watcher", "finish_rate"] > 0.75
    assert amed.loc["binge_watcher", "finish_rate"] > amed.drop("binge_watcher")["finish_rate"].max() + 0.2
    rate = f.groupby("archetype")["likes"].sum() / f.groupby("archetype")["events"].sum()
    assert rate["liker"] > 3 * rate.drop("liker").max()
    assert amed.loc["explorer", "user_cities"] > 3 * amed.drop("explorer")["user_cities"].max()
    casual_fin = f[f["archetype"] == "casual"]["finishes"].sum() / f[f["archetype"] == "casual"]["events"].sum()
    assert casual_fin < 0.3


def test_author_archetypes_are_separable(big):
    out, df = big
    g = df.groupby("author_id")
    f = pd.DataFrame({"views": g.size(), "works": g["item_id"].nunique(),
                      "finish_rate": g["finish"].mean()})
    f = f.join(pd.read_csv(out / "truth" / "authors.csv").set_index("author_id"))
    med = f.groupby("archetype").median()
    assert med.loc["star", "views"] > 10 * med.loc["hobbyist", "views"]
    assert med.loc["star", "works"] > 5 * med.loc["hobbyist", "works"]
    assert med.loc["star", "finish_rate"] > med.loc["hobbyist", "finish_rate"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_corruption_count_matches_independent_validator(tmp_path, fmt):
    s = synth.generate(tmp_path, 60_000, fmt=fmt, seed=5, corrupt_rate=0.01, chunk_events=25_000)
    recorded = int((tmp_path / "truth" / "corrupt_rows.txt").read_text())
    manifest = json.loads((tmp_path / "truth" / "manifest.json").read_text())
    assert recorded == s.corrupt_rows == manifest["corrupt_rows"] == 600
    assert sum(manifest["corruption"].values()) == 600
    assert all(v > 0 for v in manifest["corruption"].values())
    expected = set(synth.CSV_KINDS if fmt == "csv" else synth.PARQUET_KINDS)
    assert set(manifest["corruption"]) == expected
    assert validate(tmp_path) == (60_000, 600)


def test_duplicates_are_single_copies_of_valid_rows(tmp_path):
    synth.generate(tmp_path, 30_000, seed=2, corrupt_rate=0.1, chunk_events=10_000)
    df = _load(tmp_path)
    n_dup = json.loads((tmp_path / "truth" / "manifest.json").read_text())["corruption"]["duplicate"]
    counts = df.groupby(COLUMNS, dropna=False).size()
    assert (counts <= 2).all() and int((counts == 2).sum()) == n_dup
    pairs = counts[counts == 2].reset_index()
    assert pairs[COLUMNS].notna().all().all() and (pairs["duration_time"] > 0).all()


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        synth.generate(tmp_path, 1_000, fmt="json")
    with pytest.raises(ValueError):
        synth.generate(tmp_path, 1_000, corrupt_rate=0.9)
    with pytest.raises(ValueError):
        synth.generate(tmp_path, 0)
