"""A sweep's comparison report, made after the sweep's command returned:
``python -m rnnlab.sweep_report <sweep dir>`` (started by :mod:`rnnlab.sweep` under
``sweep.report=background``, the default). The report imports matplotlib and pandas and draws
its figures: seconds the user no longer waits for. It reads the sweep from ``sweep.json``, logs
the report to the parent run as ``sweep.report=wait`` would, and writes its exit code to
``report.done`` beside its log, last, so that whoever waits for it (``sweep.wait_for_report``)
knows it ended either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(sweep_dir: str) -> int:
    from rnnlab.multirun import SWEEP_FILE
    from rnnlab.sweep import REPORT_DONE, _attach_comparison

    folder = Path(sweep_dir)
    code = 1
    try:
        info = json.loads((folder / SWEEP_FILE).read_text())
        code = 0 if _attach_comparison(info) else 1
    finally:
        (folder / REPORT_DONE).write_text(f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
