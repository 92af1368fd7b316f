"""Time-aware features (recency, tenure, timestamp min/max, events per active day, windows, as_of)
against hand-computed values, and the RFM use case end to end on a synthetic purchase log."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from seglake.core.config import FeaturesConfig, load_config
from seglake.core.errors import SeglakeError
from seglake.core.pipeline import run_stages
from seglake.core.tables import Tables
from seglake.segmentation.event_time import event_time
from seglake.segmentation.features import aggregate_features
from seglake.synth_purchases import generate_purchases
from sklearn.metrics import adjusted_rand_score

from conftest import write_config

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHEMA = "customer string, paid timestamp, quantity long, amount double"
at = datetime
# The latest order is c's, 2024-03-10 00:00 UTC: the default as_of.
ORDERS = [
    ("a", at(2024, 1, 1), 1, 10.0),        # 69 days before 2024-03-10 (2024 is a leap year)
    ("a", at(2024, 2, 15, 12), 2, 20.0),   # 23.5 days before
    ("a", at(2024, 3, 1), 3, 30.0),        # 9 days before
    ("a", at(2024, 3, 1, 18), 1, 5.0),     # 8.25 days before, the same day as the previous one
    ("b", at(2023, 12, 1), 1, 100.0),      # 100 days before
    ("c", at(2024, 3, 9, 12), 1, 8.0),     # 0.5 days before
    ("c", at(2024, 3, 10), None, None),    # the latest event; no quantity, no amount
]
DEFINITIONS = {
    "recency": {"agg": "recency_days"},
    "tenure": {"agg": "tenure_days"},
    "first": {"agg": "min", "column": "paid"},
    "last": {"agg": "max", "column": "paid"},
    "per_day": {"agg": "events_per_active_day"},
    "days": {"agg": "active_days", "column": "paid"},
    "orders": {"agg": "count"},
    "orders_30d": {"agg": "count", "window": "30d"},
    "spend_30d": {"agg": "sum", "column": "amount", "window": "30d"},
    "mean_30d": {"agg": "mean", "column": "amount", "window": "30d"},
    "sizes_30d": {"agg": "count_distinct", "column": "quantity", "window": "30d"},
    "days_10d": {"agg": "active_days", "column": "paid", "window": "10d"},
    "per_day_30d": {"agg": "events_per_active_day", "window": "30d"},
    "recency_30d": {"agg": "recency_days", "window": "30d"},
    "spend_per_order_30d": {"agg": "ratio", "numerator": "spend_30d", "denominator": "orders_30d"},
}
# Worked by hand from ORDERS as of 2024-03-10. No event in a window: counts and sums 0, others null.
EXPECTED = {
    "a": dict(recency=8.25, tenure=69.0, first=69.0, last=8.25, per_day=4 / 3, days=3.0, orders=4.0,
              orders_30d=3.0, spend_30d=55.0, mean_30d=55 / 3, sizes_30d=3.0, days_10d=1.0,
              per_day_30d=1.5, recency_30d=8.25, spend_per_order_30d=55 / 3),
    "b": dict(recency=100.0, tenure=100.0, first=100.0, last=100.0, per_day=1.0, days=1.0, orders=1.0,
              orders_30d=0.0, spend_30d=0.0, mean_30d=None, sizes_30d=0.0, days_10d=0.0,
              per_day_30d=None, recency_30d=None, spend_per_order_30d=None),
    "c": dict(recency=0.0, tenure=0.5, first=0.5, last=0.0, per_day=1.0, days=2.0, orders=2.0,
              orders_30d=2.0, spend_30d=8.0, mean_30d=8.0, sizes_30d=1.0, days_10d=2.0,
              per_day_30d=1.0, recency_30d=0.0, spend_per_order_30d=4.0),
}


def _features(definitions=DEFINITIONS, **extra) -> FeaturesConfig:
    return FeaturesConfig.model_validate({"entity": "customer", "definitions": definitions, **extra})


def _by_entity(frame) -> dict:
    return {r.entity_id: {k: v for k, v in r.asDict().items() if k != "entity_id"} for r in frame.collect()}


@pytest.mark.parametrize("approximate", [False, True])
def test_time_aware_aggregations_as_of_the_latest_event(spark, approximate):
    orders = spark.createDataFrame(ORDERS, SCHEMA)
    features = _features(approximate_distinct=approximate)
    basis = event_time(orders, features)
    assert (basis.column, basis.as_of, basis.from_config) == (
        "paid", at(2024, 3, 10, tzinfo=timezone.utc), False)
    got = _by_entity(aggregate_features(orders, features))
    assert got.keys() == EXPECTED.keys()
    for entity, values in EXPECTED.items():
        for name, value in values.items():
            assert got[entity][name] == (pytest.approx(value) if value is not None else None), (entity, name)


def test_explicit_as_of_measures_from_it_and_leaves_later_events_out(spark):
    orders = spark.createDataFrame(ORDERS, SCHEMA)
    # A date is that day's UTC midnight: a's order at 2024-03-01 00:00 counts, its 18:00 one and
    # both of c's do not, so c has no events and no row.
    features = _features({"recency": {"agg": "recency_days"}, "tenure": {"agg": "tenure_days"},
                          "orders": {"agg": "count"}, "orders_30d": {"agg": "count", "window": "30d"},
                          "spend_30d": {"agg": "sum", "column": "amount", "window": "30d"}},
                         as_of="2024-03-01")
    assert event_time(orders, features).as_of == at(2024, 3, 1, tzinfo=timezone.utc)
    got = _by_entity(aggregate_features(orders, features))
    assert got == {
        "a": dict(recency=0.0, tenure=60.0, orders=3.0, orders_30d=2.0, spend_30d=50.0),
        "b": dict(recency=91.0, tenure=91.0, orders=1.0, orders_30d=0.0, spend_30d=0.0),
    }


def test_unix_seconds_time_column_comes_from_active_days(spark):
    # No timestamp column: the column active_days counts days of is the event time.
    events = spark.createDataFrame([(1, 0), (1, 2 * 86_400), (2, 3 * 86_400)], "uid long, t long")
    features = FeaturesConfig.model_validate({"definitions": {
        "days": {"agg": "active_days", "column": "t"}, "recency": {"agg": "recency_days"},
        "t_max": {"agg": "max", "column": "t"}}})  # a numeric max stays the number itself
    assert _by_entity(aggregate_features(events, features)) == {
        "1": dict(days=2.0, recency=1.0, t_max=172_800.0),
        "2": dict(days=1.0, recency=0.0, t_max=259_200.0)}


def test_features_without_time_run_no_extra_job(spark):
    orders = spark.createDataFrame(ORDERS, SCHEMA)
    assert event_time(orders, _features({"orders": {"agg": "count"}})) is None


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_bad_window_is_one_line_naming_the_key(tmp_path):
    text = ("name: t\nlakehouse: lh\nevents: {path: raw, columns: {uid: long, t: timestamp}}\n"
            "features:\n  definitions:\n    recent: {agg: count, window: 1w}\n")
    with pytest.raises(SeglakeError) as err:
        load_config(write_config(tmp_path, text))
    message = _one_line(err)
    assert "features.definitions.recent.window" in message and "'30d'" in message and "'1w'" in message
    text = text.replace("recent: {agg: count, window: 1w}",
                        "n: {agg: count}\n    r: {agg: ratio, numerator: n, denominator: n, window: 7d}")
    with pytest.raises(SeglakeError, match="features.definitions.r.*a ratio has no window of its own"):
        load_config(write_config(tmp_path, text))


def test_type_and_time_column_errors_are_one_line_naming_the_key(spark):
    events = spark.createDataFrame([("a", "x", at(2024, 1, 1), at(2024, 1, 2))],
                                   "customer string, city string, paid timestamp, shipped timestamp")
    with pytest.raises(SeglakeError) as err:
        aggregate_features(events, _features({"top": {"agg": "max", "column": "city"}}))
    assert _one_line(err) == ("features.definitions.top.column: agg 'max' needs a numeric or "
                              "timestamp column; 'city' is string")
    with pytest.raises(SeglakeError) as err:
        aggregate_features(events, _features({"r": {"agg": "recency_days"}}))
    assert _one_line(err).startswith("features.time_column: the events have several time columns "
                                     "(paid, shipped)")
    got = _by_entity(aggregate_features(events, _features({"r": {"agg": "recency_days"}},
                                                          time_column="shipped")))
    assert got == {"a": {"r": 0.0}}
    with pytest.raises(SeglakeError) as err:
        aggregate_features(events, _features({"r": {"agg": "recency_days"}}, time_column="city"))
    assert _one_line(err).startswith("features.time_column: 'city' is string")
    with pytest.raises(SeglakeError) as err:
        aggregate_features(events, _features({"r": {"agg": "recency_days"}}, time_column="paied"))
    assert _one_line(err).startswith("features.time_column: column(s) 'paied' not found")
    no_time = spark.createDataFrame([("a", 1.0)], "customer string, amount double")
    with pytest.raises(SeglakeError) as err:
        aggregate_features(no_time, _features({"n": {"agg": "count", "window": "7d"}}))
    assert _one_line(err).startswith("features.time_column: the events have no timestamp or date column")


def test_synth_purchases_is_deterministic_and_plants_every_archetype(tmp_path):
    one, two = generate_purchases(tmp_path / "one", 400, seed=5), generate_purchases(tmp_path / "two", 400, seed=5)
    assert Path(one.files[0]).read_bytes() == Path(two.files[0]).read_bytes()
    truth = pd.read_csv(tmp_path / "one" / "truth" / "customers.csv")
    orders = pd.read_parquet(tmp_path / "one" / "events")
    assert sorted(truth.customer_id) == sorted(orders.customer_id.unique()) == list(range(1, 401))
    manifest = json.loads((tmp_path / "one" / "truth" / "manifest.json").read_text())
    assert manifest["orders"] == len(orders) and sum(manifest["archetypes"].values()) == 400
    assert min(manifest["archetypes"].values()) > 40
    # The archetypes differ where they were planted: lapsed customers ordered last long ago.
    last = (orders.time.max() - orders.groupby("customer_id").time.max()).dt.days
    by_type = last.groupby(truth.set_index("customer_id").archetype).median()
    assert by_type["lapsed"] > 150 and by_type["loyal_big_spender"] < 15


@pytest.fixture(scope="module")
def rfm_run(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rfm")
    summary = generate_purchases(folder / "data", 3_000, seed=2)
    config = load_config(CONF / "rfm.yaml", [f"events.path={folder / 'data' / 'events'}",
                                             f"lakehouse={folder / 'lake'}"])
    results = run_stages(spark, config, ["ingest", "features", "sweep", "segment"], "rfm",
                         echo=lambda line: None)
    return config, folder, summary, {r.stage: r for r in results}


@pytest.mark.slow
def test_rfm_features_are_measured_as_of_the_latest_order(rfm_run):
    _, _, summary, results = rfm_run
    features = results["features"]
    assert features.rows_out == 3_000
    assert features.details["as_of"] == summary.latest.isoformat()
    assert (features.details["as_of_from"], features.details["time_column"]) == ("latest event", "time")
    assert "latest event, time 'time'" in features.message


@pytest.mark.slow
def test_rfm_segments_recover_the_planted_archetypes(spark, rfm_run):
    config, folder, _, results = rfm_run
    segments = (spark.read.format("delta").load(Tables.of(config).gold("segments"))
                .where("run_id = 'rfm'").select("entity_id", "segment").toPandas())
    truth = pd.read_csv(folder / "data" / "truth" / "customers.csv", dtype={"customer_id": str})
    joined = segments.merge(truth, left_on="entity_id", right_on="customer_id")
    assert len(joined) == len(segments) == 3_000
    assert results["sweep"].details["chosen_k"] == 4 == joined.segment.nunique()
    assert adjusted_rand_score(joined["archetype"], joined["segment"]) >= 0.9
