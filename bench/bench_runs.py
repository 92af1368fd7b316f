"""Whole `seglake run`s at the sizes a user starts with: the demo's users, the 1,000-row profiles
table, the MovieLens sweep. Issue 14's small-run targets, per stage: seconds, Spark jobs and
stages, Delta commits.

Usage: python bench/bench_runs.py [--cases users,profiles,movielens] [--scratch /tmp/bench-runs]
                                  [--markdown BENCHMARKS.md | --markdown -]

Each case runs in its own child process and ``local[2]`` SparkSession on a fresh lakehouse, as one
``seglake run`` would (the JVM's start-up is not counted: the stages' own seconds are):

* ``users``: ``make demo``'s 300,000 synthetic events (seed 7, corrupt rate 0.01), every stage of
  ``conf/tiktok_users.yaml``. Target: at most 200 Spark stages for the whole run.
* ``profiles``: ``tiktok_profiles.csv`` (1,000 rows) through every stage of
  ``conf/tiktok_profiles.yaml`` (features → report). Target: at most 45 s.
* ``movielens``: ml-100k's ratings and the sweep of ``conf/movielens.yaml`` (k = 2..12), then the
  sweep again at k = 2..29, the range the target was set on. Target: that sweep in at most 30 s.

The real data sets come from ``$SEGLAKE_SHARED/data`` (default ``../shared/data`` beside the
checkout; see its README); a case whose data is absent is reported as not run, never downloaded.
``make bench`` runs this after ``bench_pipeline.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from _common import ROOT, append_section, machine, parser, session

SHARED = Path(os.environ.get("SEGLAKE_SHARED") or ROOT.parent / "shared")
DEMO_EVENTS, DEMO_SEED, DEMO_CORRUPT = 300_000, 7, 0.01
CASES = {
    # case: (config, the data it needs, the runs: (run id, stages or None for all, overrides))
    "users": ("tiktok_users.yaml", None, [("bench", None, [])]),
    "profiles": ("tiktok_profiles.yaml", "data/tiktok_profiles.csv", [("bench", None, [])]),
    "movielens": ("movielens.yaml", "data/ml-100k", [("bench", ["ratings", "sweep"], []),
                                                     ("bench-k29", ["sweep"], ["sweep.k_max=29"])]),
}
# Issue 14's targets for these runs.
TARGETS = {"users_stages": 200, "profiles_seconds": 45.0, "movielens_k29_sweep_seconds": 30.0}


def child(args: argparse.Namespace) -> dict:
    """The case's runs, one after another in one SparkSession; per stage its result and costs."""
    from seglake.core.config import load_config
    from seglake.core.pipeline import run_stages

    name, _, runs = CASES[args.child]
    base = [f"lakehouse={args.lakehouse}"] + ([f"events.path={args.events}"] if args.events else [])
    spark = None
    out = []
    for run_id, stages, overrides in runs:
        config = load_config(str(ROOT / "conf" / name), base + overrides)
        if spark is None:
            spark = session(f"seglake-bench-{args.child}", conf=config.spark.conf)
        results = run_stages(spark, config, stages, run_id, lambda line: print(line, file=sys.stderr))
        out += [{"run": run_id, "overrides": overrides, "stage": r.stage, "seconds": r.seconds,
                 "jobs": r.cost.jobs, "spark_stages": r.cost.stages, "commits": r.cost.commits,
                 "rows_in": r.rows_in, "rows_out": r.rows_out} for r in results]
    spark.stop()
    return {"stages": out}


def demo_events(scratch: Path) -> Path:
    """``make demo``'s events, generated once under ``scratch`` (a second or two)."""
    folder = scratch / f"demo-{DEMO_EVENTS}-seed{DEMO_SEED}"
    if not (folder / "events").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([str(Path(sys.executable).with_name("seglake")), "synth", "--events", str(DEMO_EVENTS),
                        "--out", str(folder), "--corrupt-rate", str(DEMO_CORRUPT), "--seed",
                        str(DEMO_SEED)], check=True)
    return folder / "events"


def run_case(case: str, args: argparse.Namespace) -> dict | None:
    """One case in a child process; None when its real data set is absent."""
    needs = CASES[case][1]
    if needs and not (SHARED / needs).exists():
        print(f"# {case}: not run, {SHARED / needs} is absent", file=sys.stderr, flush=True)
        return None
    scratch = Path(args.scratch)
    lakehouse = scratch / f"lakehouse-{case}"
    shutil.rmtree(lakehouse, ignore_errors=True)
    result = scratch / f"result-{case}-{os.getpid()}.json"
    command = [sys.executable, __file__, "--child", case, "--lakehouse", str(lakehouse),
               "--result", str(result)]
    if case == "users":
        command += ["--events", str(demo_events(scratch))]
    started = time.perf_counter()
    # The child's output (the stages' lines, the descriptions) goes to stderr: stdout is the section.
    subprocess.run(command, check=True, stdout=sys.stderr, env=dict(os.environ, SEGLAKE_SHARED=str(SHARED)))
    print(f"# {case}: {time.perf_counter() - started:.0f} s with start-up", file=sys.stderr, flush=True)
    shutil.rmtree(lakehouse, ignore_errors=True)
    return json.loads(result.read_text())


def report(measured: dict[str, dict | None]) -> str:
    """The dated markdown section: per case and stage, then the targets."""
    lines = [f"## Whole runs at a user's first sizes — `bench/bench_runs.py` ({date.today()})", "",
             f"Machine: {machine()}, Spark local[2], one child process and session per case, "
             "seconds of the stages (not the JVM's start-up).", "",
             "| case | run | stage | seconds | Spark jobs | Spark stages | Delta commits | rows in | rows out |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for case, result in measured.items():
        if result is None:
            lines.append(f"| {case} | – | not run: its data set is absent | | | | | | |")
            continue
        for run in dict.fromkeys(s["run"] for s in result["stages"]):
            rows = [s for s in result["stages"] if s["run"] == run]
            label = run + "".join(f" ({o})" for o in rows[0]["overrides"])
            for s in rows:
                lines.append(f"| {case} | {label} | {s['stage']} | {s['seconds']:.1f} | {s['jobs']:,} "
                             f"| {s['spark_stages']:,} | {s['commits']:,} | {s['rows_in']:,} | {s['rows_out']:,} |")
            lines.append(f"| {case} | {label} | **all** | **{sum(s['seconds'] for s in rows):.1f}** "
                         f"| **{sum(s['jobs'] for s in rows):,}** | **{sum(s['spark_stages'] for s in rows):,}** "
                         f"| **{sum(s['commits'] for s in rows):,}** | | |")
    lines += ["", "Targets (2 cores):", ""] + targets(measured)
    return "\n".join(lines) + "\n"


def targets(measured: dict[str, dict | None]) -> list[str]:
    """One line per small-run target of issue 14, met or missed and by how much."""
    from bench_pipeline import _missed

    def stages_of(case: str, run: str) -> list[dict] | None:
        result = measured.get(case)
        return None if result is None else [s for s in result["stages"] if s["run"] == run]

    out = []
    users = stages_of("users", "bench")
    out.append(f"- Spark stages of the users run on the demo's {DEMO_EVENTS:,} events ≤ "
               f"{TARGETS['users_stages']}: "
               + (_missed(sum(s["spark_stages"] for s in users), TARGETS["users_stages"], " stages", 0)
                  if users else "not run"))
    profiles = stages_of("profiles", "bench")
    out.append("- the 1,000-row profiles table, features → report ≤ 45 s: "
               + (_missed(sum(s["seconds"] for s in profiles), TARGETS["profiles_seconds"], " s")
                  if profiles else "not run"))
    sweep = stages_of("movielens", "bench-k29")
    out.append("- the MovieLens sweep at k = 2..29 ≤ 30 s: "
               + (_missed(sweep[0]["seconds"], TARGETS["movielens_k29_sweep_seconds"], " s")
                  if sweep else "not run"))
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--scratch", default="/tmp/bench-runs")
    ap.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"), help="file to append to; - for none")
    ap.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--lakehouse", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        Path(args.result).write_text(json.dumps(child(args)))
        return
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        ap.error(f"--cases: unknown {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    measured = {case: run_case(case, args) for case in args.cases.split(",")}
    section = report(measured)
    print(section)
    if args.markdown != "-":
        append_section(args.markdown, section)


if __name__ == "__main__":
    main()
