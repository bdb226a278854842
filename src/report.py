"""Write the comparison report of an experiment: ``python src/report.py --experiment long_range``.

A thin command line over :mod:`rnnlab.report`: reads the experiment's runs from MLflow and
writes ``experiments/<experiment>/REPORT.md`` with its figures beside it, then logs those files
to the sweep's parent run (artifact folder ``report/``) when the runs came from a sweep.
``--export`` also writes the runs beside the page as the study's data (``data/``), and
``--from experiments/<study>`` rewrites the page from that data alone, with no store.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works without `pip install -e .` too

from rnnlab import paths  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Write experiments/<experiment>/REPORT.md and its figures from the "
                                            "experiment's MLflow runs, and log them to the sweep's parent run.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="MLflow experiment name, e.g. long_range")
    src.add_argument("--from", dest="saved", type=Path, metavar="STUDY_DIR",
                     help="a committed study's folder (e.g. experiments/long_range_study): the report from its "
                          "data/ alone, written into that folder (or --out)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri(),
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else the repo's mlflow.db)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: experiments/<experiment> in the repository)")
    p.add_argument("--sweep-id", default=None,
                   help="only this sweep's runs (its parent run id); default: every run of the "
                        "experiment, the most recent finished or diverged one per configuration and seed "
                        "(prefer it after a resumed sweep: the new parent holds only the runs it re-ran)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    p.add_argument("--export", action="store_true",
                   help="with --experiment: also write the runs as the study's data beside the report (<out>/data/: "
                        "Parquet), so that --from regenerates it and `make open-study` opens it in mlflow ui")
    p.add_argument("--partial", action="store_true",
                   help="with --experiment: the study is still running; write only its data, marked incomplete "
                        "(<out>/data/), leaving the report: another machine can continue the study from it "
                        "(src/open_study.py <out> --store <new store>, then rerun its sweeps or tuning)")
    p.add_argument("--with", dest="also", action="append", default=[], metavar="EXPERIMENT[@URI]",
                   help="a tuned report only: add the arms of another tuning experiment (in the store at URI, "
                        "default --tracking-uri), e.g. the classic cells tuned by another preset; repeatable")
    p.add_argument("--protocols", dest="compare", action="append", default=[], metavar="EXPERIMENT[@URI]",
                   help="a tuned report only: another tuning experiment of the same arms, space and budget whose "
                        "trials were scored on other tuning seeds (tune.seed); the page compares the protocols. "
                        "Repeatable. With --export, that experiment's study must be exported beside --out first "
                        "(its folder is linked in data/study.json, and --from reads it)")
    return p.parse_args(argv)


def also(args: argparse.Namespace, specs: list[str] | None = None) -> list[tuple[str, str]]:
    """The --with (or --protocols) sources as (experiment, tracking URI)."""
    pairs = [spec.split("@", 1) if "@" in spec else [spec, args.tracking_uri]
             for spec in (args.also if specs is None else specs)]
    return [(experiment, uri) for experiment, uri in pairs]


def check_protocols(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The --protocols sources, each a tuning experiment other than the page's own."""
    from rnnlab import report
    from rnnlab.report import tuning

    sources = also(args, args.compare)
    for experiment, uri in sources:
        report.check_store(uri)
        if (experiment, uri) == (args.experiment, args.tracking_uri):
            raise report.ReportError(f"--protocols {experiment}: the page's own study; name another tuning of its arms")
        if not tuning.is_tuned(uri, experiment):
            from mlflow import MlflowClient

            tuned = sorted(e.name for e in MlflowClient(uri).search_experiments() if tuning.is_tuned(uri, e.name)
                           and e.name != args.experiment)
            raise report.ReportError(f"--protocols {experiment}: no tuning study in experiment '{experiment}' of {uri} "
                                     f"(tuning experiments there: {', '.join(tuned) or 'none'})")
    if sources and not tuning.is_tuned(args.tracking_uri, args.experiment):
        raise report.ReportError(f"--protocols compares tunings; '{args.experiment}' holds no tuning study")
    return sources


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from rnnlab import report

    if args.saved is not None:
        return from_saved(args)
    out = args.out or paths.repo_root() / "experiments" / args.experiment
    from rnnlab.report import tuning

    try:
        report.check_store(args.tracking_uri)  # before any client: one would create a missing sqlite store
        sources = also(args)
        for experiment, uri in sources:
            report.check_store(uri)
            if not tuning.is_tuned(uri, experiment):
                raise report.ReportError(f"--with {experiment}: no tuning study in experiment '{experiment}' of {uri}")
        compare = check_protocols(args)
        if tuning.is_tuned(args.tracking_uri, args.experiment) and args.partial:
            files = tuning.export_(args.tracking_uri, args.experiment, out, complete=False)
            print(f"wrote {len(files)} files of the tuning study's data, marked incomplete, to {files[0].parent}; "
                  "the report was left as it is")
            return 0
        if tuning.is_tuned(args.tracking_uri, args.experiment):  # a tuning experiment: the tuned report
            path = tuning.build(args.experiment, args.tracking_uri, out, also=sources, export=args.export,
                                compare=compare)
            joined = "".join(f" with '{e}'" for e, _ in sources) + "".join(
                f", its protocol compared with '{e}'" for e, _ in compare)
            print(f"wrote {path} (the tuned report of experiment '{args.experiment}'{joined})")
            return 0
        if sources:
            raise report.ReportError(f"--with joins tuning experiments; '{args.experiment}' holds no tuning study")
    except report.ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = report.build(args.experiment, args.tracking_uri, out, sweep_id=args.sweep_id,
                              log_to_parent=not args.no_log, export=args.export, partial=args.partial)
        if args.partial:
            print(f"wrote {len(result.files)} files of the study's data, marked incomplete, to {out / report.DATA} "
                  f"({result.n_runs} runs); the report was left as it is")
            return 0
    except report.ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = [f for f in result.files if f.parent.name == report.DATA]
    print(f"wrote {result.report} ({result.n_runs} runs, {figures(result)} figures)"
          + (f" and the study's data, {sum(f.stat().st_size for f in data) / 1e6:.2f} MB in {data[0].parent}"
             if data else ""))
    if result.logged_to:
        print(f"logged {len(result.files)} files to the sweep's parent run {result.logged_to} under report/")
        from mlflow import MlflowClient

        from rnnlab import sweep, tracking

        client = MlflowClient(args.tracking_uri)
        parent = client.get_run(result.logged_to)
        ui = args.tracking_uri.rstrip("/") if args.tracking_uri.startswith("http") else tracking.DEFAULT_UI
        sweep.print_links(client, ui, parent.info.experiment_id, parent.info.run_id, parent.info.run_name)
    for note in result.notes:
        print(f"note: {note}")
    return 0


def figures(result) -> int:
    return sum(f.suffix == ".png" for f in result.files)


def from_saved(args: argparse.Namespace) -> int:
    """The report of a committed study, from its data folder alone."""
    from rnnlab import report

    for flag, value in (("--sweep-id", args.sweep_id), ("--export", args.export), ("--with", args.also),
                        ("--protocols", args.compare)):
        if value:
            print(f"error: {flag} goes with --experiment (a store), not --from", file=sys.stderr)
            return 2
    folder = args.saved
    if not folder.is_dir():
        runs = (paths.repo_root() / "experiments").glob(f"*/{report.DATA}/{report.RUNS}")
        known = sorted(p.parent.parent.name for p in runs)
        print(f"error: no study folder {folder}; studies with data: {', '.join(known) or 'none'}", file=sys.stderr)
        return 2
    from rnnlab.report import tuning

    try:
        if (folder / report.DATA / tuning.TRIALS).is_file():  # a tuning study: the tuned report
            path = tuning.build_saved(folder, args.out)
            print(f"wrote {path} (the tuned report) from {folder}/{report.DATA}")
            return 0
        result = report.build_from(report.Saved(folder), args.out or folder)
    except report.ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {result.report} ({result.n_runs} runs, {figures(result)} figures) from {folder}/data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
