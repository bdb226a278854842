"""The training path imports what training needs: no module of rnnlab's on it imports the
report, figures' libraries or statistics (matplotlib, pandas, scipy, statsmodels) at import.
Lightning and MLflow import some of them themselves (torchmetrics: scipy.signal, matplotlib;
torch._dynamo: sympy; MLflow: pandas, pyarrow); the probe names who imported each first."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

WATCHED = ("matplotlib", "pandas", "scipy", "statsmodels", "sympy", "pyarrow")

# Every import statement run while src/train.py's modules, rnnlab.run and what a warm worker
# preloads (rnnlab.warm) are imported: who imported a watched package, first and at all.
PROBE = """
import builtins, json, sys
WATCHED = %r
first, by_rnnlab = {}, []
real = builtins.__import__

def spy(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "?")
    top = name.split(".")[0] if level == 0 else ""
    if top in WATCHED:
        if top not in sys.modules:
            first.setdefault(top, importer)
        if importer.startswith("rnnlab"):
            by_rnnlab.append((importer, name))
    return real(name, globals, locals, fromlist, level)

builtins.__import__ = spy
sys.path.insert(0, %r)
import hydra, omegaconf
import rnnlab.paths, rnnlab.interrupts, rnnlab.multirun, rnnlab.sweep, rnnlab.config  # src/train.py's
import rnnlab.run, rnnlab.warm
import rnnlab.tasks.char_lm, rnnlab.tasks.forecast, rnnlab.tasks.sentiment  # the other tasks a job may build
rnnlab_modules = sorted(m for m in sys.modules if m.startswith("rnnlab"))
print(json.dumps({"first": first, "by_rnnlab": by_rnnlab, "rnnlab": rnnlab_modules}))
"""


def test_the_training_path_imports_no_report_figures_or_statistics_of_its_own():
    out = subprocess.run([sys.executable, "-c", PROBE % (WATCHED, str(ROOT / "src"))], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    seen = json.loads(out.splitlines()[-1])
    assert seen["by_rnnlab"] == [], f"rnnlab imports these on the training path: {seen['by_rnnlab']}"
    assert not {"rnnlab.report", "rnnlab.stats", "rnnlab.studies", "rnnlab.views"} & set(seen["rnnlab"]), \
        seen["rnnlab"]
    # what the libraries bring in themselves, today: if one of these goes, the training path is lighter
    for package, importer in seen["first"].items():
        assert not importer.startswith("rnnlab"), (package, importer)
