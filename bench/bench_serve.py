"""Benchmark the Spark-free segmenter: single-record latency over HTTP and in process, batch rows/s,
beside Spark's scoring of the same rows in the same process.

Usage: python bench/bench_serve.py [--train 50000] [--rows 100000] [--requests 2000] [--scratch DIR]

Run with the project's Python first on PATH (Spark's Python workers start ``python3``).

Trains run ``train`` on ``--train`` synthetic entities (8 heavy-tailed features in 6 groups; sweep
pinned to k=6, density on a 5k sample, segment: the set-up of ``bench_score.py``); the runner
exports the segmenter pyfunc to ``models/train/segmenter``. Then, on ``--rows`` new rows:

- Spark: :func:`seglake.segmentation.score.score_entities` (Parquet → transform → KMeans →
  surrogate UDF) into the no-op sink, best of 3: the baseline;
- the segmenter in process on the same rows in pandas: ``Segmenter.predict`` (1 and 2 XGBoost
  threads) and the MLflow pyfunc's ``predict`` (schema check included), best of 3;
- single records: ``--requests`` one-row predictions in process (pyfunc) and over HTTP (``seglake
  serve`` in a subprocess, one keep-alive connection), p50 / p99 latency.

Also checks that the segmenter's labels agree with Spark's on every row. Targets: p99 ≤ 10 ms per
record, ≥ 200k rows/s in batch. Prints markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
from _common import (
    best_of,
    machine,
    parser,
    print_measurements,
    scratch,
    session,
    timed_noop,
)
from bench_score import trained_run
from seglake.core.pipeline import run_stages
from seglake.core.tables import Tables
from seglake.segmentation.score import load_scoring_model, score_entities

def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    values = np.asarray(seconds) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def http_latencies(config_file, requests: int, records: list[dict]) -> list[float]:
    """Seconds per one-record POST to ``seglake serve`` (a subprocess), after 50 warm-up requests."""
    server = subprocess.Popen([sys.executable, "-m", "seglake.cli", "serve", "--config", str(config_file),
                               "--model-run", "train", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        bodies = [json.dumps({"dataframe_records": [r]}) for r in records]
        headers = {"Content-Type": "application/json"}
        took = []
        for i in range(requests + 50):
            started = time.perf_counter()
            connection.request("POST", "/invocations", bodies[i % len(bodies)], headers)
            answer = connection.getresponse().read()
            if i >= 50:
                took.append(time.perf_counter() - started)
        assert b'"segment"' in answer, answer[:300]
        connection.close()
        return took
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    args = parser(__doc__, scratch=True, train=50_000, rows=100_000, requests=2_000).parse_args()
    import mlflow.pyfunc
    from seglake.serving.segmenter import Segmenter

    measured: list[dict] = []
    latency: list[tuple[str, float, float]] = []
    with scratch("serve", args.scratch) as root, session("bench-serve") as spark:
        # the runner, not the stage functions: it exports the segmenter after segment
        config = trained_run(spark, root, args.train, args.rows, 2, lambda spark, config: run_stages(
            spark, config, ["sweep", "density", "segment"], "train",
            echo=lambda line: print(f"# {line.splitlines()[0]}", file=sys.stderr, flush=True)))
        tables = Tables.of(config)

        model = load_scoring_model(spark, tables, "train")
        entities = spark.read.parquet(str(root / "batch"))
        timed_noop(score_entities(entities.limit(20_000), model, "warm"), 1)  # start Python workers
        spark_seconds = timed_noop(score_entities(entities, model, "bench"))
        measured.append(dict(what="baseline: Spark `score_entities` (Parquet → transform → KMeans → "
                                  "surrogate UDF), no-op sink, best of 3", rows=args.rows, seconds=spark_seconds))
        spark_labels = (score_entities(entities, model, "check").select("entity_id", "segment", "cluster")
                        .toPandas().set_index("entity_id"))
        batch = entities.toPandas()

        folder = root / "lake" / "bench" / "models" / "train" / "segmenter"
        pyfunc = mlflow.pyfunc.load_model(str(folder))
        for threads in (2, 1):  # the single-thread one (the pyfunc's) is kept for the rest
            segmenter = Segmenter.load(folder / "artifacts" / "segmenter", threads=threads)
            seconds = best_of(3, lambda model=segmenter: model.predict(batch))[0]
            measured.append(dict(what=f"`Segmenter.predict` in process, pandas in memory, {threads} "
                                      f"XGBoost thread(s), best of 3", rows=args.rows, seconds=seconds,
                                 ratio=seconds / spark_seconds))
        seconds = best_of(3, lambda: pyfunc.predict(batch))[0]
        measured.append(dict(what="MLflow pyfunc `predict` (schema check + segmenter), best of 3",
                             rows=args.rows, seconds=seconds, ratio=seconds / spark_seconds))
        labelled = segmenter.predict(batch).set_index("entity_id").loc[spark_labels.index]
        agreement = ((labelled["segment"].to_numpy() == spark_labels["segment"].to_numpy()).mean(),
                     (labelled["cluster"].to_numpy() == spark_labels["cluster"].to_numpy()).mean())

        rows = [batch.iloc[[i]] for i in range(200)]
        for name, predict in (("`Segmenter.predict`, one row, in process", segmenter.predict),
                              ("MLflow pyfunc `predict`, one row, in process", pyfunc.predict)):
            for i in range(50):
                predict(rows[i % 200])
            took = []
            for i in range(args.requests):
                started = time.perf_counter()
                predict(rows[i % 200])
                took.append(time.perf_counter() - started)
            latency.append((name, *percentiles(took)))
        records = json.loads(batch.head(200).to_json(orient="records"))
        latency.append(("`seglake serve`: one-record POST /invocations over HTTP, keep-alive",
                        *percentiles(http_latencies(root / "bench.yaml", args.requests, records))))
    load = os.getloadavg()
    print(f"machine: {machine()}; load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"agreement with Spark on {len(spark_labels):,} rows: segment {agreement[0]:.5f}, "
          f"cluster {agreement[1]:.5f}")
    print_measurements(measured, no_ratio="1.00")
    print()
    print(f"| single record ({args.requests:,} requests) | p50 ms | p99 ms |")
    print("| --- | ---: | ---: |")
    for name, p50, p99 in latency:
        print(f"| {name} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
