"""The benchmark (src/bench.py, rnnlab.bench): FLOP counts by hand and against the real
parameter shapes, the timing window's bookkeeping, and a smoke run of ``--quick`` that checks
every section of results.json holds finite positive numbers. No test asserts a speed or a
target ratio: those depend on the machine."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT, compose
from rnnlab import bench
from rnnlab.bench import timing
from rnnlab.bench.settings import TASKS
from rnnlab.cells import SPECS
from rnnlab.config import FUSED_CELLS, MODERN_CELLS


# -- FLOPs ----------------------------------------------------------------------------------
def test_lstm_char_lm_step_flops_by_hand():
    # B=64, T=50, E=64, H=128, vocabulary 65, one LSTM layer (G=4), embedding input, per-step head.
    recurrence = 2 * 64 * 50 * 4 * 128 * (64 + 128)  # = 629,145,600
    head = 2 * 64 * 50 * 128 * 65  # = 53,248,000
    assert recurrence == 629_145_600 and head == 53_248_000
    f = bench.forward_flops("lstm", 64, 50, 128, 64, 65, 65, "tokens", "seq")
    assert f == {"encoder": 0, "recurrence": 629_145_600, "head": 53_248_000, "forward": 682_393_600}
    assert bench.train_step_flops("lstm", 64, 50, 128, 64, 65, 65, "tokens", "seq") == 2_047_180_800


def test_rnn_adding_step_flops_by_hand():
    # B=64, T=200, 2 real inputs -> E=64 by a linear layer, H=128, one RNN layer (G=1), one
    # prediction of size 1 per sequence.
    encoder = 2 * 64 * 200 * 2 * 64  # = 3,276,800
    recurrence = 2 * 64 * 200 * 1 * 128 * (64 + 128)  # = 629,145,600
    head = 2 * 64 * 128 * 1  # = 16,384
    assert (encoder, recurrence, head) == (3_276_800, 629_145_600, 16_384)
    f = bench.forward_flops("rnn", 64, 200, 128, 64, 2, 1, "real", "last")
    assert (f["encoder"], f["recurrence"], f["head"]) == (3_276_800, 629_145_600, 16_384)
    assert bench.train_step_flops("rnn", 64, 200, 128, 64, 2, 1, "real", "last") == 3 * 632_438_784


def test_gru_two_layers_by_hand():
    # Layer 2 takes the hidden state as input: I = H.
    f = bench.forward_flops("gru", 2, 3, 4, 5, 7, 6, "tokens", "seq", num_layers=2)
    assert f["recurrence"] == 2 * 2 * 3 * 3 * 4 * (5 + 4) + 2 * 2 * 3 * 3 * 4 * (4 + 4)  # 1296 + 1152
    assert f["head"] == 2 * 2 * 3 * 4 * 6
    with pytest.raises(ValueError, match="unknown cell"):
        bench.forward_flops("transformer", 1, 1, 1, 1, 1, 1)


@pytest.mark.parametrize("cell", list(SPECS))
@pytest.mark.parametrize("task", TASKS)
def test_flops_match_the_model_parameter_shapes(cell, task):
    """Every matmul of the forward is (batch rows) x (a weight matrix): 2 FLOPs per weight
    entry per row, so the count follows from the real model's weights."""
    from rnnlab.run import build_model, build_task

    cfg = compose(f"cell={cell}", f"task={task}", "seq_len=12", "batch_size=3", "cell.hidden_size=10",
                  "model.embed_dim=6", "cell.num_layers=2")
    t = build_task(cfg)
    model = build_model(cfg, t, "x")
    B, T = 3, 12
    weights = {n: p.numel() for n, p in model.named_parameters() if n.endswith("weight") or "weight_" in n}
    rec = sum(p.numel() for p in model.rnn.parameters() if p.dim() >= 2)  # every matrix of the stack
    head = weights["head.weight"] * (T if t.readout == "seq" else 1)
    enc = weights["encoder.weight"] * T if t.input_kind == "real" else 0  # an embedding is a lookup
    assert bench.model_step_flops(cfg, t) == 3 * 2 * B * (T * rec + head + enc)


# -- timing bookkeeping ---------------------------------------------------------------------
def test_step_timer_window_excludes_warmup_and_validation(monkeypatch):
    # the clock at steps 2 and 3, validation start and end, steps 4 and 5
    clock = iter([10.0, 10.2, 10.5, 11.0, 11.1, 11.25])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    timer = bench.StepTimer(warmup=2, steps=3)
    module = SimpleNamespace(device=SimpleNamespace(type="cpu"),
                             task=SimpleNamespace(tokens=lambda b: 7))
    for i in range(6):  # steps 0..5: the window is the start of step 2 to the start of step 5
        timer.on_train_batch_start(None, module, None, i)
        if i == 3:
            timer.on_validation_start(None, module)  # 10.5
            timer.on_validation_end(None, module)  # 11.0
        timer.on_train_batch_end(None, module, None, None, i)
    # t_start = 10.0 (step 2), validation 0.5 s, t_end = 11.25 (step 5's start)
    assert timer.tokens == 3 * 7
    assert timer.train_s == pytest.approx(11.25 - 10.0 - 0.5)
    # the steps one by one, the one holding the validation left out; tokens/s at their median
    assert timer.step_s == pytest.approx([0.2, 0.15])
    assert timer.tokens_per_s == pytest.approx(7 / 0.175)


def test_step_timer_says_when_the_window_never_closed():
    timer = bench.StepTimer(warmup=1, steps=5)
    with pytest.raises(RuntimeError, match="never closed"):
        _ = timer.train_s


def test_stopwatch_splits_nested_phases_and_puts_every_function_back(monkeypatch):
    from rnnlab.bench.breakdown import Stopwatch

    clock = iter([0.0, 1.0, 1.5, 2.0, 2.25, 4.0])  # outer in; inner in, out; inner in, out; outer out
    monkeypatch.setattr("rnnlab.bench.breakdown.time.perf_counter", lambda: next(clock))

    class Loop:
        def inner(self):
            return "inner"

        def outer(self):
            return [self.inner(), self.inner()]

    original = Loop.outer
    watch = Stopwatch()
    with watch.watching([(Loop, "outer", "outer"), (Loop, "inner", "inner")]):
        assert Loop().outer() == ["inner", "inner"]
    assert Loop.outer is original and "inner" in vars(Loop)  # restored, not left wrapped
    assert watch.seconds == {("outer",): 4.0, ("outer", "inner"): 0.75}
    assert watch.calls == {("outer",): 1, ("outer", "inner"): 2}
    assert watch.own(("outer",)) == pytest.approx(3.25)

    with pytest.raises(RuntimeError, match="stopped"), Stopwatch().watching([(Loop, "inner", "inner")]):
        raise RuntimeError("stopped inside")
    assert Loop().inner() == "inner" and Loop.inner.__name__ == "inner" and not hasattr(Loop.inner, "__wrapped__")


def test_interleave_alternates_which_side_goes_first():
    order = []
    a, b = bench.interleave(3, lambda: order.append("a") or {"v": 1}, lambda: order.append("b") or {"v": 2})
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert len(a) == len(b) == 3


# -- the whole thing, at toy size -----------------------------------------------------------
def _numbers(x, path=""):
    """Every int/float leaf (not bools) with its path."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, x


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "bench.py"), "--quick", "--out", str(out),
                           "--tracking-uri", uri], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "## 1. Harness vs bare loop" in proc.stdout  # the table is printed

    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert md.startswith("# rnnlab benchmark") and "## 5c. One run, phase by phase" in md and "## 6. Memory" in md
    sections = ["harness_vs_bare", "attribution", "roofline", "fused_vs_reference", "scan", "diagnostics",
                "sweep", "sweep_efficiency", "run_breakdown", "memory", "duration"]
    for key in sections + ["machine", "settings", "gpu", "warnings", "targets"]:
        assert key in res, key
    for key in sections:
        found = list(_numbers(res[key]))
        assert found, f"section {key} holds no numbers"
        # a section that trains nothing (roofline, a missing GPU) is estimated at 0 s
        free = [p for p, _ in found if p.startswith(".sections_estimated_s.")]
        bad = [(p, v) for p, v in found if not (math.isfinite(v) and (v > 0 or p in free and v == 0))]
        assert not bad, f"section {key}: not finite and positive: {bad}"
    assert set(res["duration"]["sections_estimated_s"]) == set(res["duration"]["sections_s"]) >= set(sections[:-1])
    assert "by section, taken / estimated: harness_vs_bare " in md
    assert len(res["harness_vs_bare"]) == 3 * 2 * 1  # cells x tasks x seq_lens (quick: one)
    assert {r["cell"] for r in res["fused_vs_reference"]} == set(FUSED_CELLS)
    assert {r["cell"] for r in res["scan"]} == set(MODERN_CELLS)
    assert all(r["parallel_tokens_per_s"] > 0 and r["sequential_tokens_per_s"] > 0 for r in res["scan"])
    assert res["sweep"]["runs"] == 2 and res["sweep"]["faster"] in ("1x2", "2x1")
    # both sweeps ran through src/train.py -m, and the bare side priced every one of their runs
    eff = {r["case"]: r for r in res["sweep_efficiency"]["cases"]}
    assert set(eff) == {"six_runs", "long_range"} and eff["six_runs"]["runs"] == eff["long_range"]["runs"] == 2
    assert all(r["efficiency"] == pytest.approx(r["ideal_s"] / (r["wall_s"] * r["jobs"])) for r in eff.values())
    assert len(eff["six_runs"]["bare_ms_per_step"]) == 2  # lstm and gru: one bare measurement per configuration
    # six_runs is section 5's 2x1 sweep, priced rather than run again; long_range is run here
    assert eff["six_runs"]["timed_earlier"] and eff["six_runs"]["wall_s"] == res["sweep"]["wall_s_2x1"]
    assert not eff["long_range"]["timed_earlier"]
    # 5d's sweep on the warm launcher is section 5's 2x1 sweep, read again; joblib's is its own
    fixed = res["fixed_costs"]["sweeps"]
    assert fixed["warm"]["wall_s"] == res["sweep"]["wall_s_2x1"] != fixed["joblib"]["wall_s"]
    assert fixed["warm"]["warm_first_steps"] and fixed["warm"]["runs"] == 2
    for r in eff.values():  # every run validated (at least at its last step) and tested, counted from the store
        assert r["validations"] >= r["runs"] and r["tests"] == r["runs"]
        assert r["efficiency_with_eval"] == pytest.approx((r["ideal_s"] + r["bare_eval_s"]) / (r["wall_s"] * r["jobs"]))
    assert "## 5b. Sweep efficiency" in md
    assert res["machine"]["cpu"] and res["machine"]["cores"] >= 1 and res["machine"]["torch"]
    if not res["gpu"]["available"]:
        assert "No CUDA device" in md

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.info.run_id == res["mlflow_run_id"]
    assert run.data.params["machine.torch"] == res["machine"]["torch"]
    assert "harness_ratio/median" in run.data.metrics and "sweep/wall_s_2x1" in run.data.metrics
    assert run.data.metrics["sweep_efficiency/six_runs"] == pytest.approx(eff["six_runs"]["efficiency"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"results.md", "results.json"}


# -- a subset of sections (--sections), and the committed results ---------------------------
def test_a_section_brings_the_sections_it_reads_and_a_bad_key_names_the_valid_ones(tmp_path):
    from rnnlab.bench import output

    keys = [s.key for s in bench.SECTIONS]
    assert [s.key for s in bench.select(())] == keys == list(output.MARKDOWN)  # every section renders, in order
    assert set(output.METRICS) <= set(keys)
    assert [s.key for s in bench.select(("roofline",))] == ["harness_vs_bare", "roofline"]
    assert [s.key for s in bench.select(("gpu", "scan"))] == ["scan", "gpu"]  # the usual order
    assert [s.key for s in bench.select(("sweep_efficiency",))] == ["sweep", "sweep_efficiency"]
    assert [s.key for s in bench.select(("fixed_costs",))] == ["sweep", "fixed_costs"]
    with pytest.raises(ValueError, match=r"unknown section 'nope'; valid: harness_vs_bare, attribution, "):
        bench.select(("scan", "nope"))
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "bench.py"), "--sections", "scan,nope", "--no-log",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sections: unknown section 'nope'; valid: " in proc.stderr
    assert "gpu" in proc.stderr.splitlines()[-1]
    # a partial run must not overwrite the committed full results: it names its own folder
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "bench.py"), "--sections", "gpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sections gpu needs --out DIR" in proc.stderr


@pytest.mark.slow
def test_sections_run_alone_say_so_and_log_only_their_own_numbers(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = bench.run(bench.Settings.tiny(), tmp_path / "out", uri, log=lambda _: None, only=("scan",))
    assert set(res) & {s.key for s in bench.SECTIONS} == {"scan"}
    assert set(res["duration"]["sections_s"]) == set(res["duration"]["sections_estimated_s"]) == {"scan"}
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Sections run: scan (`--sections`); not run: harness_vs_bare, attribution, roofline" in md
    assert "## 3b. Modern cells" in md and "| mingru | 8 | 16 |" in md
    assert "## 1. " not in md and "## 6. Memory" not in md and "## GPU" not in md
    assert md.count("\n\n\n") == 0  # one blank line between parts
    from mlflow import MlflowClient

    run = MlflowClient(uri).get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["sections"] == "scan"
    assert {k.split("/")[0] for k in run.data.metrics} == {"duration_s", "scan"}
