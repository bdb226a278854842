"""CONTRIBUTING.md's recipe, followed blind in a copy of the repository: a new cell is three
files (its module, its yaml, one ``CellSpec`` row), a new task two (its module, its yaml), and
the generic tests, which name no cell and no task, check both without another file touched:
counts, forms, state size, diagnostics, configs, and a run of each through Hydra and MLflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

# 1. the cell's module: an IndRNN (Li et al. 2018), h_t = tanh(W x_t + b + u ⊙ h_{t-1}), one
# class for both forms (like the scan cells), recording what the diagnostics read.
INDRNN = '''
"""IndRNN: every unit its own recurrence, h_t = tanh(W x_t + b + u * h_{t-1})."""

import torch
from torch import nn


class IndRNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, batch_first=True, impl="loop"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.impl = input_size, hidden_size, num_layers, impl
        self.layers = nn.ModuleList(nn.Linear(input_size if k == 0 else hidden_size, hidden_size)
                                    for k in range(num_layers))
        self.u = nn.ParameterList(nn.Parameter(torch.rand(hidden_size)) for _ in range(num_layers))
        self.record, self.recorded = False, {}

    def forward(self, x, state=None):
        finals, states, probe = [], [], None
        for k, (layer, u) in enumerate(zip(self.layers, self.u)):
            pre = layer(x)
            h = pre.new_zeros(pre.shape[0], self.hidden_size) if state is None else state[k]
            if self.record and k == self.num_layers - 1 and torch.is_grad_enabled():
                probe = pre.new_zeros(pre.shape[0], pre.shape[1], self.hidden_size, requires_grad=True)
            out = []
            for t in range(pre.shape[1]):
                h = torch.tanh(pre[:, t] + u * h)
                if probe is not None:
                    h = h + probe[:, t]
                out.append(h)
            x = torch.stack(out, 1)
            states.append(x)
            finals.append(h)
        if self.record:
            self.recorded = {"h": states, "h_probe": probe}
        return x, torch.stack(finals)
'''
# 2. its row in SPECS
INDRNN_SPEC = '''    CellSpec("indrnn", False,
             {"loop": "rnnlab.cells.indrnn:IndRNN", "reference": "rnnlab.cells.indrnn:IndRNN"},
             layer_params=lambda i, h, nb: h * (i + 2), step_flops=lambda i, h: 2 * h * i,
             color="tab:olive", saturates=True),
'''
# 3. its yaml
INDRNN_YAML = "name: indrnn\nimpl: loop\nhidden_size: 64\nnum_layers: 1\ndropout: 0.0\n"

# 1. the task's module: recall the first value at the end of the sequence
FIRST = '''
"""Recall the first of seq_len uniform values at the end (baseline: predict 0.5, MSE 1/12)."""

import torch

from rnnlab.tasks.base import RegressionTask
from rnnlab.tasks.synthetic import GeneratedTask


class First(RegressionTask, GeneratedTask):
    name = "first"
    input_kind, main_metric, mode, readout = "real", "val/mse", "min", "last"
    input_size = output_size = 1

    def generate(self, n, g):
        x = torch.rand(n, self.seq_len, 1, generator=g)
        return {"x": x, "y": x[:, 0]}

    def baselines(self, split="test"):
        return {"mse": 1 / 12}
'''
# 2. its yaml
FIRST_YAML = ("_target_: rnnlab.tasks.first.First\nseq_len: ${seq_len}\nbatch_size: ${batch_size}\n"
              "seed: ${seed}\nval_size: 64\ntest_size: 64\n")

GENERIC = ["tests/test_every_cell.py", "tests/test_every_task.py", "tests/test_foundation.py",
           "tests/test_params.py"]


@pytest.mark.slow
def test_a_toy_cell_and_a_toy_task_added_by_the_recipe_pass_the_generic_tests(tmp_path):
    repo = tmp_path / "repo"
    tracked = subprocess.run(["git", "ls-files", "src", "conf", "tests", "pyproject.toml"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)

    (repo / "src/rnnlab/cells/indrnn.py").write_text(INDRNN)
    specs = repo / "src/rnnlab/cells/__init__.py"
    text = specs.read_text()
    anchor = "SPECS: dict[str, CellSpec] = {s.name: s for s in (\n"
    assert anchor in text, "the recipe's step 2 (a row in SPECS) no longer matches the code"
    specs.write_text(text.replace(anchor, anchor + INDRNN_SPEC))
    (repo / "conf/cell/indrnn.yaml").write_text(INDRNN_YAML)
    (repo / "src/rnnlab/tasks/first.py").write_text(FIRST)
    (repo / "conf/task/first.yaml").write_text(FIRST_YAML)
    added = ["conf/cell/indrnn.yaml", "conf/task/first.yaml", "src/rnnlab/cells/indrnn.py",
             "src/rnnlab/tasks/first.py"]
    touched = sorted(rel for rel in [*tracked, *added]
                     if not (ROOT / rel).exists() or (ROOT / rel).read_bytes() != (repo / rel).read_bytes())
    assert touched == sorted([*added, "src/rnnlab/cells/__init__.py"])  # three files a cell, two a task

    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "RNNLAB_ROOT": str(repo)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-k", "indrnn or first", *GENERIC],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 25 and "failed" not in summary, summary  # the toy cell and task were really tested
