"""Benchmark the harness against hand-written PyTorch: ``python src/bench.py [--quick]``.

A thin command line over :mod:`rnnlab.bench`: runs every section (harness vs bare loop,
roofline, fused vs reference cells, diagnostics cost, sweep parallelism, memory; GPU if
present), writes ``results.md`` and ``results.json`` to ``--out``, logs them to MLflow
(experiment ``bench``) and prints the table. See ``experiments/bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works without `pip install -e .` too
os.environ.setdefault("MPLBACKEND", "Agg")

from rnnlab import paths  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="every section at toy sizes (a smoke test, < 1 minute); the numbers mean nothing")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for results.md and results.json (default: experiments/bench; "
                        "with --sections, required: a partial run must not replace the full results)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed training steps per measurement (default: 30, quick: 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every in-process measurement (default: torch's, "
                        "i.e. $OMP_NUM_THREADS or the core count)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri(),
                   help="MLflow store for the results run (default: $MLFLOW_TRACKING_URI, else the repo's mlflow.db)")
    p.add_argument("--no-log", action="store_true", help="do not log the results to MLflow")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder with the benchmark's runs")
    p.add_argument("--sections", default="",
                   help="comma-separated sections to run, by their keys in results.json (default: all), "
                        "e.g. gpu or scan,memory")
    args = p.parse_args(argv)
    args.sections = tuple(k.strip() for k in args.sections.split(",") if k.strip())
    if args.sections and args.out is None:
        p.error(f"--sections {','.join(args.sections)} needs --out DIR: a partial run must not replace "
                "the full results in experiments/bench")
    if args.out is None:
        args.out = paths.repo_root() / "experiments" / "bench"
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from rnnlab import bench

    try:
        bench.select(args.sections)
    except ValueError as e:
        print(f"bench.py: error: --sections: {e}", file=sys.stderr)
        return 2
    make = bench.Settings.tiny if args.quick else bench.Settings.full
    settings = make(steps=args.steps, threads=args.threads)
    res = bench.run(settings, args.out, None if args.no_log else args.tracking_uri, keep=args.keep,
                    only=args.sections)
    print()
    print((args.out / "results.md").read_text())
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}"
          f" in {res['duration']['actual_s']:.0f} s (estimated {res['duration']['estimated_s']:.0f} s)")
    if res.get("mlflow_run_id"):
        print(f"MLflow run {res['mlflow_run_id']} in experiment 'bench' at {args.tracking_uri}")
    for w in res["warnings"]:
        banner = "!" * 8
        print(f"{banner} {w} {banner}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
