"""Open a committed study in ``mlflow ui``: ``python src/open_study.py long_range_study``.

Loads ``experiments/<study>/data/`` into a local MLflow store (``.studies/<study>/mlflow.db``,
built once per version of the data; see :mod:`rnnlab.studies`), prints the link of each
saved comparison view, and with ``--ui`` serves the store (``make open-study EXP=<study>``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works without `pip install -e .` too


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Load a committed study's runs into a local MLflow store and print "
                                            "its comparison views' links (--ui: then serve it).")
    p.add_argument("study", help="a study under experiments/ with data/ (e.g. long_range_study), or its folder")
    p.add_argument("--store", type=Path, default=None, help="the sqlite file (default .studies/<study>/mlflow.db)")
    p.add_argument("--ui", action="store_true", help="then run `mlflow ui` on the store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from rnnlab import studies, views

    t0 = time.time()
    try:
        folder = studies.study_dir(args.study)
        opened = studies.load(folder, args.store)
    except studies.StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ui = f"http://{args.host}:{args.port}"
    how = "reused (the data has not changed)" if opened.reused else f"loaded in {time.time() - t0:.1f} s"
    print(f"{folder.name}: {opened.runs} runs in {opened.store} ({how})")
    if not opened.complete:
        print("  (a snapshot of the study while it ran: its report is not yet re-issued from these runs)")
    for key, name in opened.views:
        print(f"  {name}:\n    table:  {views.url(ui, opened.experiment_id, key)}\n"
              f"    charts: {views.url(ui, opened.experiment_id, key, charts=True)}")
    if not args.ui:
        return 0
    print(f"serving {opened.store} on {ui} (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execve(str(mlflow), [str(mlflow), "ui", "--backend-store-uri", opened.store, "--host", args.host,
                            "--port", str(args.port)], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
