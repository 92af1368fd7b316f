"""The ``seglake`` command: set-up, synthetic data, pipeline runs, scoring and serving.

Errors a user can cause print as one line on stderr with exit code 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from seglake.core.errors import SeglakeError

DRIFT_EXIT = 3  # `score --fail-on-drift` found a flagged feature: distinct from user errors (2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglake", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("setup", help="fetch the Delta Lake jars into the cache (once, needs Maven Central)")

    synth = commands.add_parser("synth", help="write synthetic short-video interaction logs or purchase logs")
    synth.add_argument("--log", choices=["video", "purchases"], default="video",
                       help="video: Douyin-style views (--events); purchases: orders with RFM archetypes (--customers)")
    synth.add_argument("--events", type=int, help="number of event rows (--log video)")
    synth.add_argument("--customers", type=int, help="number of customers (--log purchases)")
    synth.add_argument("--out", required=True, help="output folder (events/ and truth/ inside)")
    synth.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--corrupt-rate", type=float, default=0.0, help="fraction of corrupt rows")
    synth.add_argument("--workers", type=int, default=1, help="processes writing chunks")
    synth.add_argument("--chunk-events", type=int, default=1_000_000, help="rows per file")

    run = commands.add_parser("run", help="run pipeline stages of a config")
    run.add_argument("--config", required=True, help="a conf/*.yaml file")
    run.add_argument("--stages", help="comma-separated stages (default: all the config supports)")
    run.add_argument("--run-id", help="keys gold writes; the same id replaces that run's rows")
    run.add_argument("--master", help="Spark master URL (default: config, then local[*])")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set sweep.k_max=12 (repeatable)")
    run.add_argument("--no-tracking", action="store_true",
                     help="do not log this run to MLflow (default: the config's tracking section)")

    score = commands.add_parser("score", help="segment new events or entity rows with a trained run")
    score.add_argument("--config", required=True, help="the conf/*.yaml the model run was trained with")
    score.add_argument("--model-run", required=True, help="run id whose sweep and segment stages ran")
    score.add_argument("--input", required=True,
                       help="file, folder or glob of raw events or entity rows (the config's format)")
    score.add_argument("--run-id", help="keys the scoring run's rows (default: a UTC timestamp)")
    score.add_argument("--fail-on-drift", action="store_true",
                       help=f"exit {DRIFT_EXIT} when a feature's PSI reaches drift.flag")
    score.add_argument("--master", help="Spark master URL (default: config, then local[*])")
    score.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set drift.flag=0.3 (repeatable)")

    serve = commands.add_parser("serve", help="answer JSON requests on 127.0.0.1 with a run's Spark-free segmenter")
    serve.add_argument("--config", required=True, help="the conf/*.yaml the model run was trained with")
    serve.add_argument("--model-run", required=True, help="run id whose segment stage ran")
    serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0: a free port)")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set lakehouse=/data/lake (repeatable)")

    classify = commands.add_parser("classify", help="score records with a saved claim classifier")
    classify.add_argument("--model", required=True,
                          help="a classifier folder (models/<run_id>/classifier) or its run folder")
    classify.add_argument("--input", required=True,
                          help="one JSON object, a JSON array, JSON lines or CSV; '-' reads stdin")
    classify.add_argument("--output", help="CSV or JSON-lines file (default: stdout)")
    classify.add_argument("--format", choices=["csv", "jsonl"],
                          help="output format (default: csv for a .csv --output, else jsonl)")
    classify.add_argument("--master", help="Spark master URL (default: local[*])")
    return parser


def _classify(args: argparse.Namespace) -> None:
    from seglake.usecases.claims.classify import classify_records, load_classifier, read_records, write_predictions
    from seglake.core.session import build_spark

    records = read_records(args.input)  # before Spark starts: an unreadable file fails in a moment
    spark = build_spark("seglake-classify", args.master, {"spark.ui.showConsoleProgress": "false"})
    model, inputs = load_classifier(spark, args.model)
    rows = classify_records(spark, model, inputs, records)
    fmt = write_predictions(rows, args.output, args.format)
    errors = sum(1 for row in rows if row["error"])
    print(f"[classify] {len(rows):,} records: {len(rows) - errors:,} scored, {errors:,} with errors "
          f"({fmt} to {args.output or 'stdout'})", file=sys.stderr)


def _score(args: argparse.Namespace) -> int:
    from seglake.core.config import load_config
    from seglake.core.pipeline import default_run_id
    from seglake.segmentation.score import score
    from seglake.core.session import build_spark

    config = load_config(args.config, args.set)
    run_id = args.run_id or default_run_id()
    spark = build_spark(f"seglake-{config.name}-score", args.master or config.spark.master, config.spark.conf)
    print(f"[score] start: {config.name}, run {run_id}, model run {args.model_run}")
    result = score(spark, config, args.model_run, args.input, run_id)
    print(result.line())
    if args.fail_on_drift and result.details["flagged"]:
        print(f"seglake: drift flagged for {', '.join(result.details['flagged'])} "
              f"(PSI >= drift.flag {config.drift.flag}); see gold/drift run {run_id}", file=sys.stderr)
        return DRIFT_EXIT
    return 0


def _synth_purchases(args: argparse.Namespace) -> None:
    from seglake.synth_purchases import generate_purchases

    if args.customers is None or args.customers < 4:
        raise SeglakeError(f"--customers: --log purchases needs at least 4 customers (got {args.customers})")
    if args.events is not None or args.format != "parquet" or args.corrupt_rate:
        raise SeglakeError("--log purchases: --events, --format and --corrupt-rate apply to --log video only")
    summary = generate_purchases(args.out, args.customers, seed=args.seed)
    print(f"[synth] {summary.orders:,} orders of {summary.customers:,} customers (latest "
          f"{summary.latest:%Y-%m-%d %H:%M}Z) in {args.out}/events, truth in {args.out}/truth/customers.csv, "
          f"{summary.seconds:.1f} s")


def _serve(args: argparse.Namespace) -> None:
    from pathlib import Path

    from seglake.core.config import check_run_id, load_config
    from seglake.core.tables import Tables
    from seglake.serving.server import serve

    config = load_config(args.config, args.set)
    models = Tables.of(config).models(check_run_id(args.model_run))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", models) and not models.startswith("file:"):
        raise SeglakeError(f"serve loads a model from a local folder; {models} is not one (copy "
                           f"its segmenter folder here and load it with mlflow.pyfunc.load_model)")
    folder = Path(re.sub(r"^file:(//)?", "", models)) / "segmenter"
    if not (folder / "MLmodel").is_file():
        raise SeglakeError(f"model run {args.model_run} has no segmenter at {folder}: run its segment "
                           f"stage again (seglake run --stages segment --run-id {args.model_run})")
    if not 0 <= args.port <= 65535:
        raise SeglakeError(f"--port must be in 0..65535 (got {args.port})")
    serve(folder, args.port, echo=lambda line: print(line, flush=True))


def _synth(args: argparse.Namespace) -> None:
    from seglake.synth import generate

    if args.log == "purchases":
        _synth_purchases(args)
        return
    if args.events is None:
        raise SeglakeError("--events: --log video needs the number of event rows")
    if args.events < 1:
        raise SeglakeError(f"--events must be positive (got {args.events})")
    if not 0.0 <= args.corrupt_rate <= 0.5:
        # Duplicates copy clean rows, so at least half the rows must stay clean.
        raise SeglakeError(f"--corrupt-rate must be in [0, 0.5] (got {args.corrupt_rate})")
    summary = generate(args.out, args.events, fmt=args.format, seed=args.seed,
                       corrupt_rate=args.corrupt_rate, chunk_events=args.chunk_events,
                       workers=args.workers)
    print(f"[synth] {summary.events:,} events ({summary.corrupt_rows:,} corrupt), {summary.users:,} users, "
          f"{summary.authors:,} authors, {len(summary.files)} files in {args.out}/events, "
          f"{summary.seconds:.1f} s")


def _run(args: argparse.Namespace) -> None:
    from seglake.core.config import load_config
    from seglake.core.session import build_spark
    from seglake.core.tracking import run_tracked

    config = load_config(args.config, args.set)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    spark = build_spark(f"seglake-{config.name}", args.master or config.spark.master, config.spark.conf)
    run_tracked(spark, config, stages, args.run_id, enabled=not args.no_tracking)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seglake`` console command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "setup":
            from seglake.core.jars import delta_jars

            for path in delta_jars(download=True):
                print(f"[setup] {path}")
        elif args.command == "synth":
            _synth(args)
        elif args.command == "run":
            _run(args)
        elif args.command == "score":
            return _score(args)
        elif args.command == "serve":
            _serve(args)
        elif args.command == "classify":
            _classify(args)
    except SeglakeError as err:
        print(f"seglake: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # A Spark/JVM failure is a wall of Java frames; lead with one line that says what failed.
        if os.environ.get("SEGLAKE_DEBUG") or not _is_spark_error(err):
            raise
        print(f"seglake: error: Spark failed: {_cause(err)[:500]} (SEGLAKE_DEBUG=1 shows the trace)",
              file=sys.stderr)
        return 1
    return 0


def _cause(err: Exception) -> str:
    """The most telling line of a Spark error: a Python worker's exception line if there is one,
    else the innermost Java cause (the first line of a Py4J error only names the JVM call)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    worker = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)
              and not line.startswith(("org.apache", "java.", "py4j"))]
    causes = [line.split(": ", 2)[-1] for line in lines if line.startswith("Caused by: ")]
    return worker[-1] if worker else causes[-1] if causes else lines[0] if lines else type(err).__name__


def _is_spark_error(err: Exception) -> bool:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(err, (Py4JError, PySparkException))


if __name__ == "__main__":
    sys.exit(main())
