"""The features stage: per-entity aggregations of events, and entity tables read as they are."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from conftest import shared_file, write_config
from seglake.core.config import FeaturesConfig, load_config
from seglake.core.errors import SeglakeError
from seglake.segmentation.features import aggregate_features, build_entities, rejected_path
from seglake.segmentation.ingest import ingest
from seglake.synth import generate
from seglake.core.tables import Tables

CONF = Path(__file__).resolve().parents[1] / "conf"
DAY = 86_400

EVENTS_SCHEMA = "uid long, item long, city string, like long, dur long, t long"
EVENTS = [
    (1, 10, "a", 1, 10, 0),
    (1, 10, "b", 0, 20, DAY - 1),    # same item again, same UTC day
    (1, 11, None, 1, 30, DAY),       # next day; no city
    (2, 12, "a", 0, 5, 2 * DAY),
    (3, None, None, None, None, None),  # an entity whose every value is null
    (None, 13, "c", 1, 7, 0),        # no entity: belongs to nobody
]
DEFINITIONS = {
    "views": {"agg": "count"},
    "cities_seen": {"agg": "count", "column": "city"},
    "liked": {"agg": "sum", "column": "like"},
    "dur_mean": {"agg": "mean", "column": "dur"},
    "dur_min": {"agg": "min", "column": "dur"},
    "dur_max": {"agg": "max", "column": "dur"},
    "items": {"agg": "count_distinct", "column": "item"},
    "cities": {"agg": "count_distinct", "column": "city"},
    "days": {"agg": "active_days", "column": "t"},
    "like_rate": {"agg": "ratio", "numerator": "liked", "denominator": "views"},
    "views_per_day": {"agg": "ratio", "numerator": "views", "denominator": "days"},
    "per_day_per_item": {"agg": "ratio", "numerator": "views_per_day", "denominator": "items"},
}
# Worked by hand from EVENTS. Distinct counts over only nulls are 0; sums/means/min/max over only
# nulls are null; a ratio with a zero or null operand is null (no honest value exists).
EXPECTED = {
    "1": dict(views=3, cities_seen=2, liked=2, dur_mean=20, dur_min=10, dur_max=30, items=2,
              cities=2, days=2, like_rate=2 / 3, views_per_day=1.5, per_day_per_item=0.75),
    "2": dict(views=1, cities_seen=1, liked=0, dur_mean=5, dur_min=5, dur_max=5, items=1,
              cities=1, days=1, like_rate=0.0, views_per_day=1.0, per_day_per_item=1.0),
    "3": dict(views=1, cities_seen=0, liked=None, dur_mean=None, dur_min=None, dur_max=None,
              items=0, cities=0, days=0, like_rate=None, views_per_day=None, per_day_per_item=None),
}


def _features(**extra) -> FeaturesConfig:
    return FeaturesConfig.model_validate({"entity": "uid", "definitions": DEFINITIONS, **extra})


@pytest.mark.parametrize("approximate", [False, True])
def test_every_aggregation_kind_gives_the_hand_computed_values(spark, approximate):
    events = spark.createDataFrame(EVENTS, EVENTS_SCHEMA)
    features = _features(approximate_distinct=approximate, approximate_rsd=0.05)
    result = aggregate_features(events, features)
    assert result.columns == ["entity_id", *DEFINITIONS]
    assert dict(result.dtypes) == {"entity_id": "string", **{n: "double" for n in DEFINITIONS}}
    got = {r.entity_id: {k: v for k, v in r.asDict().items() if k != "entity_id"}
           for r in result.collect()}
    assert got == EXPECTED  # HyperLogLog++ is exact at these tiny cardinalities


def test_exact_distinct_matches_count_distinct_and_approx_is_close(spark):
    # 20k events over 300 users and 4 partitions, so every value of a user is spread over tasks.
    events = spark.range(20_000, numPartitions=4).select(
        (F.col("id") % 300).alias("uid"),
        ((F.col("id") * 7919) % 5_003).alias("item"),
        F.concat(F.lit("c"), ((F.col("id") * 31) % 97).cast("string")).alias("city"),
        (F.col("id") * 3_600).alias("t"),
    )
    definitions = {"items": {"agg": "count_distinct", "column": "item"},
                   "cities": {"agg": "count_distinct", "column": "city"},
                   "days": {"agg": "active_days", "column": "t"}}
    exact = FeaturesConfig.model_validate({"entity": "uid", "definitions": definitions})
    approx = exact.model_copy(update={"approximate_distinct": True, "approximate_rsd": 0.05})
    truth = events.groupBy("uid").agg(
        F.countDistinct("item").alias("items"), F.countDistinct("city").alias("cities"),
        F.countDistinct(F.floor(F.col("t") / DAY)).alias("days"),
    ).toPandas().assign(entity_id=lambda d: d.uid.astype(str)).set_index("entity_id").drop(columns="uid")
    got = aggregate_features(events, exact).toPandas().set_index("entity_id")
    pd.testing.assert_frame_equal(got.sort_index(), truth.sort_index().astype(float), check_exact=True)
    estimated = aggregate_features(events, approx).toPandas().set_index("entity_id").sort_index()
    relative = (estimated - got.sort_index()).abs() / got.sort_index()
    assert relative.max().max() < 0.15  # 3 standard errors at rsd 0.05


def test_column_not_in_events_is_one_line_naming_key_and_column(spark, tmp_path):
    text = ("name: t\nlakehouse: lh\nevents: {path: raw, columns: {uid: long}}\nfeatures:\n  entity: uid\n"
            "  definitions:\n    Plays: {agg: sum, column: plays}\n")
    config = load_config(write_config(tmp_path, text))
    events = spark.createDataFrame(EVENTS, EVENTS_SCHEMA)
    with pytest.raises(SeglakeError) as err:
        aggregate_features(events, config.features)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "features.definitions.Plays.column" in message and "'plays'" in message
    with pytest.raises(SeglakeError, match="agg 'sum' needs a numeric column; 'city' is string"):
        aggregate_features(events, FeaturesConfig.model_validate(
            {"definitions": {"x": {"agg": "sum", "column": "city"}}}))
    cycle = {"n": {"agg": "count"}, "a": {"agg": "ratio", "numerator": "b", "denominator": "n"},
             "b": {"agg": "ratio", "numerator": "a", "denominator": "n"}}
    with pytest.raises(SeglakeError, match="ratios a, b refer to each other in a cycle"):
        aggregate_features(events, FeaturesConfig.model_validate({"definitions": cycle}))


def _users_frame(parquet: Path) -> pd.DataFrame:
    """The seed's nine user features computed by pandas straight from the Parquet."""
    events = pd.read_parquet(parquet)
    by_user = events.groupby("uid")
    expected = pd.DataFrame({
        "Page_view": by_user.size(),
        "Like_count": by_user["like"].sum(),
        "Number_of_authors_viewed": by_user["author_id"].nunique(),
        "Number_of_viewed_works": by_user["item_id"].nunique(),
        "Average_duration_of_viewing_works": by_user["duration_time"].mean(),
        "Number_of_background_music_views": by_user["music_id"].nunique(),
        "Complete_views": by_user["finish"].sum(),
        "Number_of_cities_visited": by_user["user_city"].nunique(),
        "Number_of_citzes_viewing_works": by_user["item_city"].nunique(),
    }).astype(float)
    expected.index = expected.index.astype(str)
    return expected.sort_index()


@pytest.fixture(scope="module")
def douyin(spark, tmp_path_factory):
    """20k synthetic events ingested once with conf/tiktok_users.yaml: (parquet folder, config)."""
    root = tmp_path_factory.mktemp("douyin")
    generate(root / "synth", 20_000, seed=3)
    config = load_config(CONF / "tiktok_users.yaml",
                         [f"events.path={root / 'synth' / 'events'}", f"lakehouse={root / 'lakehouse'}"])
    ingest(spark, config, "r1")
    return root / "synth" / "events", config


def test_tiktok_users_end_to_end_equals_pandas_for_every_user(spark, douyin):
    parquet, config = douyin
    result = build_entities(spark, config, "r1")
    expected = _users_frame(parquet)
    assert (result.rows_in, result.rows_out) == (20_000, len(expected))
    assert result.message.startswith("9 features for")
    silver = spark.read.format("delta").load(Tables.of(config).entities)
    assert silver.columns == ["entity_id", *expected.columns]
    got = silver.toPandas().set_index("entity_id").sort_index()
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_names=False)
    history = DeltaTable.forPath(spark, Tables.of(config).entities).history(1).first()
    assert history.userMetadata == "seglake run_id=r1"


def test_tiktok_authors_config_builds_its_nine_features(spark, douyin, lakehouse):
    parquet, users = douyin
    config = load_config(CONF / "tiktok_authors.yaml",
                         [f"events.path={parquet}", f"lakehouse={lakehouse}"])
    tables = Tables.of(config)
    # The same bronze as the users (a Delta table is a folder with relative paths: copy, not ingest).
    shutil.copytree(Tables.of(users).events, tables.events)
    # An older silver table without column mapping: "Creative_activity_(daily)" needs it, so the
    # stage upgrades the table in place before overwriting it.
    older = spark.createDataFrame([("x", 1.0)], "entity_id string, old double")
    older.write.format("delta").save(tables.entities)
    build_entities(spark, config, "r1")
    got = spark.read.format("delta").load(tables.entities).toPandas().set_index("entity_id")
    by_author = pd.read_parquet(parquet).groupby("author_id")
    days = by_author["time"].agg(lambda t: (t // DAY).nunique())
    works = by_author["item_id"].nunique()
    expected = pd.DataFrame({
        "Total_views": by_author.size(), "Total_likes": by_author["like"].sum(),
        "Total_complete_views": by_author["finish"].sum(), "Total_number_of_works": works,
        "Average_duration_of_works": by_author["duration_time"].mean(),
        "Number_of_background_music_used": by_author["music_id"].nunique(),
        "Number_of_days_since_the_publication_of_the_work": days,
        "Creative_activity_(daily)": works / days,
        "Number_of_cities_visited": by_author["item_city"].nunique(),
    }).astype(float)
    expected.index = expected.index.astype(str)
    pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index(), check_names=False)


def _profiles_config(lakehouse: Path, csv: Path):
    return load_config(CONF / "tiktok_profiles.yaml", [f"entities.path={csv}", f"lakehouse={lakehouse}"])


def test_tiktok_profiles_csv_keeps_every_account_and_multiline_bios(spark, lakehouse):
    csv = shared_file("tiktok_profiles.csv")
    config = _profiles_config(lakehouse, csv)
    result = build_entities(spark, config, "r1")
    tables = Tables.of(config)
    rejected = spark.read.format("delta").load(rejected_path(tables)).count()
    assert result.rows_in == 1_000 == result.rows_out + rejected
    assert result.message.startswith("7 features, 1 categorical; 1,000 rows = ")
    silver = spark.read.format("delta").load(tables.entities)
    assert dict(silver.dtypes) == {"entity_id": "string", "is_verified": "string",
                                   **{n: "double" for n in config.entities.features}}
    # pandas parses the quoted multi-line bios too: every account and value must agree.
    expected = pd.read_csv(csv).set_index("account_id")
    got = silver.toPandas().set_index("entity_id")
    assert set(got.index) == set(expected.index)
    for name in config.entities.features:
        pd.testing.assert_series_equal(got[name].sort_index(), expected[name].astype(float).sort_index(),
                                       check_names=False, check_index_type=False)
    assert got.is_verified.value_counts().to_dict() == {"false": 981, "true": 19}
    # A re-run replaces silver whole: still one row per account, the new run in the commit.
    build_entities(spark, config, "r2")
    assert spark.read.format("delta").load(tables.entities).count() == result.rows_out
    history = DeltaTable.forPath(spark, tables.entities).history(1).first()
    assert history.userMetadata == "seglake run_id=r2"


MESSY_CSV = '''account,bio,followers,rate,verified,joined
alice,"line one
line two, with a comma",100,0.5,TRUE,2023-01-01
bob,"says ""hi""",n/a,0.25,False,2023-01-02
,no id,5,0.1,true,2023-01-03
alice,second alice,7,0.2,FALSE,2023-01-04
carol,,1e3,NaN,,2023-01-05
dave,too,many,fields,on,this,line
'''


def test_entity_table_rejects_null_and_duplicate_ids_and_counts_unparseable(spark, tmp_path, lakehouse):
    (tmp_path / "accounts.csv").write_text(MESSY_CSV)
    text = (f"name: accounts\nlakehouse: {lakehouse}\nentities:\n  path: accounts.csv\n"
            f"  id: account\n  categorical: [verified]\n")
    config = load_config(write_config(tmp_path, text))
    result = build_entities(spark, config, "r1")
    assert (result.rows_in, result.rows_out) == (6, 3)
    # followers and rate parse; bio and joined do not, so they are left out and said so.
    assert result.details["features"] == ["followers", "rate"]
    assert result.details["skipped_columns"] == ["bio", "joined"]
    assert result.details["rejected"] == {"duplicate_id": 1, "malformed_line": 1, "null_id": 1}
    assert result.details["unparseable"] == {"followers": 1, "rate": 1}
    assert "unparseable values set to null: followers 1, rate 1" in result.message
    tables = Tables.of(config)
    got = {r.entity_id: r.asDict() for r in spark.read.format("delta").load(tables.entities).collect()}
    assert got["alice"] == dict(entity_id="alice", followers=100.0, rate=0.5, verified="true")
    assert got["bob"] == dict(entity_id="bob", followers=None, rate=0.25, verified="false")
    assert got["carol"] == dict(entity_id="carol", followers=1000.0, rate=None, verified=None)
    rejected = {r.reason: r for r in spark.read.format("delta").load(rejected_path(tables)).collect()}
    assert rejected["duplicate_id"].entity_id == "alice"
    assert "second alice" in rejected["duplicate_id"].raw
    assert rejected["null_id"].entity_id is None and "no id" in rejected["null_id"].raw
    assert rejected["malformed_line"].raw == "dave,too,many,fields,on,this,line"


def test_entity_table_column_not_found_is_one_line(spark, tmp_path, lakehouse):
    (tmp_path / "accounts.csv").write_text(MESSY_CSV)
    text = (f"name: accounts\nlakehouse: {lakehouse}\nentities:\n  path: accounts.csv\n"
            f"  id: account\n  features: [followers, folowing]\n")
    with pytest.raises(SeglakeError) as err:
        build_entities(spark, load_config(write_config(tmp_path, text)), "r1")
    assert len(str(err.value).splitlines()) == 1
    assert str(err.value).startswith("entities.features: column(s) 'folowing' not found")
