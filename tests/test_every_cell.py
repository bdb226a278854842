"""What every registered cell must satisfy, parametrised over ``cells.SPECS``: a cell added as
CONTRIBUTING.md says is checked here without being named anywhere.

- its parameter count (the spec's closed form) equals what torch counts;
- its fast form (fused kernel or parallel scan) and its step-by-step reference agree to 1e-10
  in float64, outputs, final state and every gradient;
- its ``state_size`` is the floats of the final state its stack returns;
- the diagnostics' probe logs exactly the metrics its spec promises.
"""

from __future__ import annotations

import pytest
import torch

from rnnlab import diagnostics
from rnnlab.cells import SPECS
from rnnlab.cells.factory import build
from rnnlab.cells.params import count_params

CELLS = list(SPECS)
F64 = torch.float64


def _tensors(state) -> list[torch.Tensor]:
    """A final state as its tensors: h, (h, c) for the LSTM, complex for the LRU."""
    return list(state) if isinstance(state, (tuple, list)) else [state]


def _real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("input_size,hidden_size,num_layers", [(1, 1, 1), (5, 7, 2), (10, 16, 3)])
def test_the_spec_counts_the_parameters_torch_counts(cell, input_size, hidden_size, num_layers):
    for impl in SPECS[cell].impls:
        module = build(cell, input_size, hidden_size, num_layers, impl=impl)
        assert count_params(cell, input_size, hidden_size, num_layers) == sum(p.numel() for p in module.parameters())


def _pair(cell: str, num_layers: int):
    """The default (fast) form and the reference form of one stack, float64, same weights."""
    s = SPECS[cell]
    torch.manual_seed(0)
    fast = build(cell, 5, 7, num_layers, impl=s.default_impl).double()
    ref = build(cell, 5, 7, num_layers, impl="reference").double()
    ref.load_state_dict(fast.state_dict())
    return fast.eval(), ref.eval()


@pytest.mark.parametrize("cell", [c for c in CELLS if SPECS[c].default_impl != "reference"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
def test_the_fast_form_equals_the_reference_forward_and_backward(cell, num_layers, with_state):
    fast, ref = _pair(cell, num_layers)
    torch.manual_seed(1)
    state = None
    if with_state:  # a state the cell itself produced: every cell's own shape and dtype
        with torch.no_grad():
            _, state = fast(torch.randn(3, 4, 5, dtype=F64))
    x = torch.randn(3, 23, 5, dtype=F64, requires_grad=True)
    results = []
    for module in (fast, ref):
        out, final = module(x, state)
        w = torch.Generator().manual_seed(2)  # the same random readout of outputs and final state
        loss = (out * torch.randn(out.shape, generator=w, dtype=F64)).sum()
        for t in _tensors(final):
            loss = loss + (_real(t) * torch.randn(_real(t).shape, generator=w, dtype=F64)).sum()
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append((out, *[_real(t) for t in _tensors(final)], *grads))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_state_size_is_the_floats_of_the_final_state_per_sequence(cell, num_layers):
    """``state_size`` is what one sequence carries from step to step: the final state the
    stack returns (the state it would take to go on), in real floats, per sequence; for a cell
    whose state is its context (attention's keys and values), after the steps it read."""
    module = build(cell, 4, 6, num_layers)
    batch, steps = 3, 5
    with torch.no_grad():
        _, final = module(torch.randn(batch, steps, 4))
    floats = sum(_real(t).numel() for t in _tensors(final)) // batch
    assert SPECS[cell].state_size(6, num_layers, seq_len=steps) == floats
    if not SPECS[cell].context_state:  # a recurrence's state does not grow with the sequence
        assert SPECS[cell].state_size(6, num_layers) == floats


@pytest.mark.parametrize("cell", CELLS)
def test_the_probe_logs_what_the_spec_promises(cell):
    """The cell probe's metrics are the spec's ``metrics``, all finite; the true ‖∂L/∂h_t‖ has
    one entry per position; the model's own stack is left as it was."""
    from rnnlab.model import RecurrentModel
    from rnnlab.tasks.adding import Adding

    task = Adding(seq_len=12, batch_size=4, seed=0, val_size=4, test_size=4)
    torch.manual_seed(0)
    model = RecurrentModel(task, cell={"name": cell, "hidden_size": 6, "num_layers": 2},
                           optim={"name": "adam", "lr": 1e-3}, embed_dim=4).eval()
    before = {k: v.clone() for k, v in model.rnn.state_dict().items()}
    impl = getattr(model.rnn, "impl", None)
    out = diagnostics.cell_probe(model, task.val)
    grad_h = out.pop("grad_h")
    assert grad_h.shape == (12,) and torch.isfinite(grad_h).all() and grad_h.abs().sum() > 0
    assert set(out) == set(SPECS[cell].metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    assert getattr(model.rnn, "impl", None) == impl and not getattr(model.rnn, "record", False)
    assert all(torch.equal(before[k], v) for k, v in model.rnn.state_dict().items())


def test_an_unknown_cell_names_every_registered_one():
    with pytest.raises(ValueError) as e:
        build("mamba", 4, 4)
    assert f"valid: {', '.join(SPECS)}" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_the_cell_trains_through_hydra_and_mlflow_and_logs_what_its_spec_promises(store, cell):
    """The smoke test every config gets: a tiny run as a user starts it, FINISHED, with the
    diagnostics its spec names logged at validation."""
    store.train("task=adding", f"cell={cell}")
    run = store.only_run("adding")
    assert run.info.status == "FINISHED" and run.data.tags["cell"] == cell
    assert set(SPECS[cell].metrics) <= set(run.data.metrics), sorted(run.data.metrics)
    assert "grad_flow/hidden_horizon" in run.data.metrics
