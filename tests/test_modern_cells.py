"""minGRU, minLSTM and the LRU: the parallel scans against the step-by-step equations (float64,
outputs and every gradient), known cases, parameter counts and budgets, bad values, and a
short adding run each that must solve."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rnnlab.cells import SPECS
from rnnlab.cells.factory import build
from rnnlab.cells.modern import LRU, MinGRU, MinLSTM, associative_scan, g, log_scan
from rnnlab.cells.params import count_params, hidden_for_budget

# Every cell a parallel scan trains, from the specs: a new one cannot miss the equivalence test.
MODERN_CELLS = [name for name, s in SPECS.items() if s.linear]


def pair(name: str, num_layers: int, **kw):
    torch.manual_seed(0)
    par = SPECS[name].cls("parallel")(5, 7, num_layers=num_layers, impl="parallel", **kw).double()
    ref = copy.deepcopy(par)
    ref.impl = "reference"
    return par, ref


@pytest.mark.parametrize("name", MODERN_CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
def test_the_parallel_scan_equals_the_sequential_equations_forward_and_backward(name, num_layers, with_state):
    par, ref = pair(name, num_layers)
    x = torch.randn(3, 37, 5, dtype=torch.float64, requires_grad=True)
    state = None
    if with_state:
        state = torch.rand(num_layers, 3, 7, dtype=torch.float64) + 0.1
        if name == "lru":
            state = torch.complex(state, torch.rand_like(state))
    outs = []
    for m in (par, ref):
        y, last = m(x, state)
        loss = (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).pow(2).sum() + last.abs().pow(2).sum()
        outs.append((y, last, torch.autograd.grad(loss, [x, *m.parameters()])))
    (y1, l1, g1), (y2, l2, g2) = outs
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(l1, l2, rtol=1e-10, atol=1e-10)
    names = ["input", *(n for n, _ in par.named_parameters())]
    for n, a, b in zip(names, g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {n}")


def test_mingru_with_its_update_gate_at_one_outputs_its_candidate():
    cell = MinGRU(4, 3, impl="parallel").double()
    with torch.no_grad():
        cell.layers[0].bias[:3] = 50.0  # z = σ(50) = 1 to within 2e-22
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    h, _ = cell(x, torch.full((1, 2, 3), 9.0, dtype=torch.float64))
    candidate = g(x @ cell.layers[0].weight[3:].T + cell.layers[0].bias[3:])
    torch.testing.assert_close(h, candidate, rtol=1e-12, atol=1e-12)  # the state is forgotten


def test_minlstm_normalises_its_gates_to_sum_to_one():
    cell = MinLSTM(4, 3).double()
    gates = cell.gates(torch.randn(2, 5, 4, dtype=torch.float64))
    torch.testing.assert_close(gates["keep"] + gates["write"], torch.ones_like(gates["keep"]))


def test_lru_with_a_fixed_eigenvalue_reproduces_a_hand_computed_sequence():
    lam = torch.tensor([0.5 + 0.5j], dtype=torch.complex128)
    b = torch.tensor([[[1.0 + 0j], [2.0 + 0j], [0.0 + 1j]]], dtype=torch.complex128)  # (B=1, T=3, N=1)
    # x1 = 1; x2 = λ + 2 = 2.5 + 0.5i; x3 = λ x2 + i = (0.5+0.5i)(2.5+0.5i) + i = 1 + 2.5i
    want = torch.tensor([[[1 + 0j], [2.5 + 0.5j], [1.0 + 2.5j]]], dtype=torch.complex128)
    torch.testing.assert_close(associative_scan(lam, b, None), want)
    # from x0 = 2: every step adds λ^t x0
    x0 = torch.tensor([[2.0 + 0j]], dtype=torch.complex128)
    powers = torch.tensor([[[0.5 + 0.5j], [0.5j], [-0.25 + 0.25j]]], dtype=torch.complex128)
    torch.testing.assert_close(associative_scan(lam, b, x0), want + 2 * powers)


def test_the_log_space_scan_is_the_linear_recurrence():
    a = torch.rand(2, 9, 3, dtype=torch.float64)
    b = torch.rand(2, 9, 3, dtype=torch.float64)
    h0 = torch.rand(2, 3, dtype=torch.float64)
    h, want = h0, []
    for t in range(9):
        h = a[:, t] * h + b[:, t]
        want.append(h)
    torch.testing.assert_close(log_scan(a.log(), b.log(), h0), torch.stack(want, 1), rtol=1e-12, atol=1e-12)


def test_lru_eigenvalues_start_on_the_ring_and_gamma_normalises():
    torch.manual_seed(1)
    lru = LRU(8, 256, r_min=0.9, r_max=0.99)
    moduli = lru.eigenvalue_moduli()
    assert 0.9 <= moduli.min() and moduli.max() <= 0.99
    layer = lru.layers[0]
    torch.testing.assert_close(torch.exp(layer.gamma_log) ** 2 + layer.lam().abs() ** 2,
                               torch.ones(256), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, want", [("mingru", 2 * 7 * (5 + 1)), ("minlstm", 3 * 7 * (5 + 1)),
                                        ("lru", 3 * 7 * 5 + 3 * 7 * 7 + 4 * 7)])
def test_parameter_counts_match_the_modules(name, want):
    for layers in (1, 3):
        module = build(name, input_size=5, hidden_size=7, num_layers=layers)
        n = sum(p.numel() for p in module.parameters())
        assert n == count_params(name, 5, 7, layers)
    assert count_params(name, 5, 7) == want


@pytest.mark.parametrize("name", MODERN_CELLS)
def test_a_parameter_budget_is_met_within_two_percent(name):
    from rnnlab.model import RecurrentModel
    from rnnlab.tasks.adding import Adding

    task = Adding(seq_len=20, batch_size=8, seed=0, val_size=8, test_size=8)
    hidden = hidden_for_budget(20_000, name, task.input_kind, task.input_size, 64, 1, task.output_size)
    model = RecurrentModel(task=task, cell={"name": name, "hidden_size": hidden}, optim={"name": "adam", "lr": 1e-3},
                           clip=None, embed_dim=64, max_steps=1, run_label="x")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 20_000) / 20_000 <= 0.02, (hidden, n)


@pytest.mark.parametrize("overrides, says", [
    (["cell=lru", "cell.r_min=0.9", "cell.r_max=0.5"], "r_min < r_max"),
    (["cell=lru", "cell.r_max=1.0"], "r_max"),
    (["cell=mingru", "cell.impl=fused"], "parallel, reference"),
])
def test_bad_modern_cell_values_are_one_line_naming_what_is_valid(overrides, says):
    from conftest import compose
    from rnnlab.config import ConfigError, validate

    with pytest.raises(ConfigError) as e:
        validate(compose("task=adding", *overrides))
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name, key", [("lru", "spectral_radius"), ("mingru", "forget_bias"), ("gru", "r_min")])
def test_a_key_the_cell_does_not_have_is_rejected_by_name(name, key):
    """Not silently dropped: a spectral radius means nothing without a recurrent matrix."""
    with pytest.raises(ValueError) as e:
        build(name, 4, 4, **{key: 0.5})
    assert f"cell {name} has no {key}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODERN_CELLS)
def test_each_modern_cell_learns_the_adding_problem_at_length_20(store, name):
    """A short run through Hydra and MLflow, with the diagnostics on: skill >= 0.9, the run
    ending once solved (validation every 100 steps, up to 400)."""
    store.train("task=adding", f"cell={name}", "seq_len=20", "cell.hidden_size=64", "batch_size=32",
                "trainer.max_steps=400", "trainer.val_check_interval=100", "solve.early_stop=true",
                "task.val_size=256", "task.test_size=256", "optim.lr=3e-3", tiny=False, timeout=600)
    run = store.only_run("adding")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/skill"] >= 0.9, run.data.metrics["test/skill"]
    assert math.isfinite(run.data.metrics["grad_flow/horizon"])
    if name == "lru":
        assert 0 < run.data.metrics["lru/abs_lambda_min"] <= run.data.metrics["lru/abs_lambda_max"] < 1
    if name == "mingru":
        assert 0 < run.data.metrics["gates/update_mean"] < 1
