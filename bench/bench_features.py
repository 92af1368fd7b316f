"""Benchmark the features stage's distinct counts against Spark's naive plan and DuckDB.

Usage: python bench/bench_features.py [--events 1000000 10000000] [--repeat 2] [--scratch /tmp]
                                      [--config conf/tiktok_users.yaml] [--approx-rsd 0.05 0.01]

For each size, synthetic Douyin events are generated once as Parquet (kept between runs in
``<scratch>/seglake-bench-features/<n>``), then the config's per-entity features are computed from
that Parquet in one process by:

* ``spark countDistinct``: one ``groupBy`` with ``countDistinct`` per distinct feature (Spark expands
  each event once per distinct column and shuffles the expansion twice);
* ``spark seglake plan``: :func:`seglake.segmentation.features.aggregate_features` (one shuffle by entity, then
  one aggregation with a set of values per entity and distinct column);
* ``spark expand + dedup, 1 shuffle``: the previous seglake plan (one shuffle by entity, each event
  expanded into (entity, column, value) rows, deduplicated and counted there, joined to a separate
  ``groupBy`` of the plain aggregates);
* ``spark expand + dedup, 2 shuffles``: the same deduplication left to Spark's own exchanges
  (map-side dedup, then a second shuffle to count);
* ``spark approx rsd=…``: ``approximate_distinct: true`` (HyperLogLog++ sketches; their size
  grows as 1/rsd², which is why 0.01 is slower than exact counting);
* ``duckdb``: ``COUNT(DISTINCT …)`` SQL over the same Parquet (the baseline).

Spark runs in ``local[2]``; each Spark variant is forced with the ``noop`` writer, DuckDB
materialises its result as Arrow. Wall time and CPU time are both reported (best of ``--repeat``):
on a shared machine wall time depends on the neighbours' load, CPU time (Spark: the tasks'
``executorCpuTime``; DuckDB: this process) far less. Ratios are to DuckDB at the same size. The
markdown table goes to stdout, progress to stderr.
"""
from __future__ import annotations

import json
import operator
import os
import platform
import sys
import tempfile
import time
from functools import reduce
from pathlib import Path

import duckdb
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from _common import ROOT, best_of, noop, parser, session, spark_cpu_seconds
from seglake.core.config import FeaturesConfig, load_config
from seglake.segmentation import features as feat
from seglake.synth import generate


def naive(events: DataFrame, features: FeaturesConfig) -> DataFrame:
    """The textbook plan: every aggregation, ``countDistinct`` included, in one ``groupBy``."""
    aggs = []
    for name, spec in features.definitions.items():
        kind = events.schema[spec.column].dataType if spec.column else None
        if spec.agg in feat.DISTINCT_AGGS:
            aggs.append(F.countDistinct(feat._distinct_value(spec, kind)).alias(name))
        elif spec.agg in feat.PLAIN_AGGS:
            aggs.append(feat._plain_agg(spec, kind).alias(name))
    return events.groupBy(features.entity).agg(*aggs)


def _expanded_distinct_counts(events: DataFrame, entity: str, values: dict) -> DataFrame:
    """Distinct counts by expansion: one (slot, value) row per event and counted column, deduplicated.

    The features stage's plan before the per-entity sets: kept here to be measured against them.
    """
    kind_of = {alias: events.select(value).schema.fields[0].dataType.simpleString()
               for alias, value in values.items()}
    kinds = sorted(set(kind_of.values()))
    rows = []
    for slot, (alias, value) in enumerate(values.items()):
        fields = [(value if k == kind_of[alias] else F.lit(None).cast(k)).alias(f"_v{i}")
                  for i, k in enumerate(kinds)]
        rows.append(F.struct(F.lit(slot).alias("_slot"), *fields))
    present = reduce(operator.or_, [F.col(f"_v{i}").isNotNull() for i in range(len(kinds))])
    pairs = events.select(F.col(entity), F.inline(F.array(*rows))).where(present).distinct()
    counts = [F.count(F.when(F.col("_slot") == slot, 1)).alias(alias)
              for slot, alias in enumerate(values)]
    return pairs.groupBy(entity).agg(*counts)


def expand_dedup(events: DataFrame, features: FeaturesConfig, shuffle_first: bool) -> DataFrame:
    """Plain aggregates in one ``groupBy``, distinct counts by expansion, joined by entity.

    ``shuffle_first`` repartitions the events by entity before the expansion (one exchange for
    the distinct side: the previous seglake plan); otherwise Spark places its own two exchanges.
    """
    distinct = {name: feat._distinct_value(spec, events.schema[spec.column].dataType)
                for name, spec in features.definitions.items() if spec.agg in feat.DISTINCT_AGGS}
    plain = [feat._plain_agg(spec, events.schema[spec.column].dataType if spec.column else None)
             .alias(name) for name, spec in features.definitions.items() if spec.agg in feat.PLAIN_AGGS]
    source = events.repartition(features.entity) if shuffle_first else events
    counted = _expanded_distinct_counts(source, features.entity, distinct)
    return events.groupBy(features.entity).agg(*plain).join(counted, features.entity, "left")


def duckdb_sql(features: FeaturesConfig, parquet_glob: str) -> str:
    """The same features as one DuckDB ``GROUP BY`` (ratios are not part of the users config)."""
    parts = []
    for name, spec in features.definitions.items():
        column = f'"{spec.column}"' if spec.column else None
        expression = {
            "count": f"COUNT({column or '*'})",
            "sum": f"SUM({column})",
            "mean": f"AVG({column})",
            "min": f"MIN({column})",
            "max": f"MAX({column})",
            "count_distinct": f"COUNT(DISTINCT {column})",
            "active_days": f"COUNT(DISTINCT FLOOR({column} / 86400))",
        }.get(spec.agg)
        if expression is None:
            raise SystemExit(f"bench: agg {spec.agg!r} has no DuckDB translation here")
        parts.append(f'{expression} AS "{name}"')
    return (f'SELECT "{features.entity}", {", ".join(parts)} FROM read_parquet(\'{parquet_glob}\') '
            f'WHERE "{features.entity}" IS NOT NULL GROUP BY "{features.entity}"')


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--scratch", default=tempfile.gettempdir())
    ap.add_argument("--config", default=str(ROOT / "conf" / "tiktok_users.yaml"))
    ap.add_argument("--approx-rsd", type=float, nargs="*", default=[0.05, 0.01],
                    help="HLL++ relative standard deviations to time (0.01 is slow)")
    args = ap.parse_args()
    features = load_config(args.config, ["events.path=/unused"]).features
    # The UI stays on: its REST API reports each stage's task CPU time.
    spark = session("bench-features", ui=True)
    exact = features.model_copy(update={"approximate_distinct": False})
    variants = {
        "spark countDistinct (naive)": lambda ev: naive(ev, exact),
        "spark seglake plan: per-entity sets (exact)": lambda ev: feat.aggregate_features(ev, exact),
        "spark expand + dedup, 1 shuffle (previous seglake plan)": lambda ev: expand_dedup(ev, exact, True),
        "spark expand + dedup, 2 shuffles (exact)": lambda ev: expand_dedup(ev, exact, False),
    }
    for rsd in args.approx_rsd:
        approx = features.model_copy(update={"approximate_distinct": True, "approximate_rsd": rsd})
        variants[f"spark approx rsd={rsd}"] = (
            lambda ev, approx=approx: feat.aggregate_features(ev, approx))
    load_before = os.getloadavg()[0]
    rows = []
    for n in args.events:
        folder = Path(args.scratch) / "seglake-bench-features" / str(n)
        if not (folder / "truth" / "manifest.json").exists():
            print(f"# generating {n:,} events into {folder}", file=sys.stderr, flush=True)
            generate(folder, n, workers=2)
        glob = str(folder / "events" / "*.parquet")
        events = spark.read.parquet(str(folder / "events"))
        noop(events.groupBy(features.entity).count())  # warm-up
        con = duckdb.connect()
        sql = duckdb_sql(features, glob)
        # DuckDB runs in this process: its CPU time is the process's (all threads).
        wall, cpu = best_of(args.repeat, lambda: con.sql(sql).to_arrow_table(), time.process_time)
        rows.append((n, "duckdb COUNT(DISTINCT) (baseline)", wall, cpu))
        print(f"# {n:,} duckdb: {wall:.2f} s, cpu {cpu:.2f} s", file=sys.stderr, flush=True)
        for label, build in variants.items():
            wall, cpu = best_of(args.repeat, lambda: noop(build(events)), lambda: spark_cpu_seconds(spark))
            rows.append((n, label, wall, cpu))
            print(f"# {n:,} {label}: {wall:.2f} s, cpu {cpu:.2f} s", file=sys.stderr, flush=True)
        con.close()
    spark.stop()
    baselines = {n: (wall, cpu) for n, label, wall, cpu in rows if label.startswith("duckdb")}
    distinct = sum(spec.agg in feat.DISTINCT_AGGS for spec in features.definitions.values())
    print(f"### features stage: {len(features.definitions)} features ({distinct} exact distinct "
          f"counts) per {features.entity}, Spark local[2] vs DuckDB, {platform.machine()}, "
          f"best of {args.repeat}; 1-minute load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end (the machine is shared)\n")
    print("| events | method | wall s | × DuckDB | CPU s | × DuckDB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for n, label, wall, cpu in rows:
        base_wall, base_cpu = baselines[n]
        print(f"| {n:,} | {label} | {wall:.2f} | {wall / base_wall:.1f} | {cpu:.1f} "
              f"| {cpu / base_cpu:.1f} |")


if __name__ == "__main__":
    main()
