"""The step-by-step reference cells against PyTorch's fused nn.RNN / nn.LSTM / nn.GRU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnlab.cells import SPECS
from rnnlab.cells.factory import build
from rnnlab.cells.reference import (
    ReferenceGRU,
    ReferenceLSTM,
    ReferenceRNN,
    hidden_grad_norms,
    mean_gate,
)
from rnnlab.config import NONLINEARITIES

F64 = torch.float64
TOL = 1e-10

# (kind, nonlinearity): every cell PyTorch fuses, against its reference twin, once per
# nonlinearity where the cell has that option.
FUSED_CELLS = [name for name, s in SPECS.items() if s.torch_fused]
CELLS = [(name, nl) for name in FUSED_CELLS
         for nl in (NONLINEARITIES if "nonlinearity" in SPECS[name].options else (None,))]
FUSED = {name: SPECS[name].cls("fused") for name in FUSED_CELLS}
REFERENCE = {name: SPECS[name].cls("reference") for name in FUSED_CELLS}
CELL_IDS = [name if nl is None else f"{name}-{nl}" for name, nl in CELLS]


def make_pair(kind, nonlinearity, input_size, hidden_size, num_layers, dropout=0.0, seed=0):
    """A fused module and a reference module with the same (copied) float64 weights."""
    kwargs = dict(num_layers=num_layers, dropout=dropout, batch_first=True, dtype=F64)
    if kind == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    torch.manual_seed(seed)
    fused = FUSED[kind](input_size, hidden_size, **kwargs)
    ref = REFERENCE[kind](input_size, hidden_size, **kwargs)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def initial_state(kind, num_layers, batch, hidden_size, nonzero):
    if not nonzero:
        return None
    h0 = torch.randn(num_layers, batch, hidden_size, dtype=F64)
    if kind == "lstm":
        return h0, torch.randn(num_layers, batch, hidden_size, dtype=F64)
    return h0


def state_tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def run_and_grad(module, x, state, out_weight, state_weights):
    """Forward, a loss that reaches outputs AND final states, backward; returns everything."""
    x = x.clone().requires_grad_()
    out, final = module(x, state)
    finals = state_tensors(final)
    loss = (out * out_weight).sum() + sum((f * w).sum() for f, w in zip(finals, state_weights))
    loss = loss + (out**2).sum() * 0.1  # something non-linear in the outputs as well
    module.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), [f.detach() for f in finals], grads, x.grad.clone()


@pytest.mark.parametrize("kind,nonlinearity", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize(
    "num_layers,batch,seq_len,nonzero_state",
    [(1, 1, 1, False), (1, 3, 6, True), (2, 4, 5, False), (3, 2, 4, True)],
)
@pytest.mark.parametrize("record", [False, True], ids=["plain", "record"])
def test_matches_fused_outputs_states_and_all_gradients(
    kind, nonlinearity, num_layers, batch, seq_len, nonzero_state, record
):
    input_size, hidden_size = 3, 5
    fused, ref = make_pair(kind, nonlinearity, input_size, hidden_size, num_layers)
    ref.record = record
    torch.manual_seed(1)
    x = torch.randn(batch, seq_len, input_size, dtype=F64)
    state = initial_state(kind, num_layers, batch, hidden_size, nonzero_state)
    out_w = torch.randn(batch, seq_len, hidden_size, dtype=F64)
    n_states = 2 if kind == "lstm" else 1
    state_w = [torch.randn(num_layers, batch, hidden_size, dtype=F64) for _ in range(n_states)]

    out_f, fin_f, grads_f, dx_f = run_and_grad(fused, x, state, out_w, state_w)
    out_r, fin_r, grads_r, dx_r = run_and_grad(ref, x, state, out_w, state_w)

    assert out_r.shape == out_f.shape == (batch, seq_len, hidden_size)
    torch.testing.assert_close(out_r, out_f, atol=TOL, rtol=0)
    assert len(fin_r) == len(fin_f) == n_states
    for a, b in zip(fin_r, fin_f):
        assert a.shape == b.shape == (num_layers, batch, hidden_size)
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    assert grads_r.keys() == grads_f.keys()
    assert len(grads_r) == 4 * num_layers
    for name in grads_f:
        torch.testing.assert_close(grads_r[name], grads_f[name], atol=TOL, rtol=0, msg=name)
    torch.testing.assert_close(dx_r, dx_f, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind,nonlinearity", CELLS, ids=CELL_IDS)
def test_state_dict_round_trip_both_ways(kind, nonlinearity):
    kwargs = dict(num_layers=2, batch_first=True, dtype=F64)
    if kind == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    fused = FUSED[kind](4, 6, **kwargs)
    ref = REFERENCE[kind](4, 6, **kwargs)
    sd_f, sd_r = fused.state_dict(), ref.state_dict()
    assert list(sd_r) == list(sd_f)  # same names, same order
    assert {k: v.shape for k, v in sd_r.items()} == {k: v.shape for k, v in sd_f.items()}
    assert (ref.input_size, ref.hidden_size, ref.num_layers) == (4, 6, 2)
    x = torch.randn(2, 5, 4, dtype=F64)

    # fused -> reference
    ref.load_state_dict(sd_f)
    torch.testing.assert_close(ref(x)[0], fused(x)[0], atol=TOL, rtol=0)

    # reference -> fused (fresh modules with other random weights)
    ref2 = REFERENCE[kind](4, 6, **kwargs)
    fused2 = FUSED[kind](4, 6, **kwargs)
    assert not torch.allclose(fused2(x)[0], ref2(x)[0])
    fused2.load_state_dict(ref2.state_dict())
    torch.testing.assert_close(fused2(x)[0], ref2(x)[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("kind,nonlinearity", CELLS, ids=CELL_IDS)
def test_default_init_is_pytorchs(kind, nonlinearity):
    kwargs = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
    torch.manual_seed(123)
    fused = FUSED[kind](7, 16, num_layers=2, batch_first=True, **kwargs)
    torch.manual_seed(123)
    ref = REFERENCE[kind](7, 16, num_layers=2, batch_first=True, **kwargs)
    bound = 1 / math.sqrt(16)
    for name, p in ref.named_parameters():
        assert p.abs().max() <= bound
        assert p.std() > bound / 4, name  # really spread over the interval, not constant
        # PyTorch draws U(-1/sqrt(H), 1/sqrt(H)) for every parameter in the same order
        torch.testing.assert_close(p, fused.state_dict()[name], atol=0, rtol=0)


@pytest.mark.parametrize("kind,nonlinearity", CELLS, ids=CELL_IDS)
def test_dropout_between_layers_like_pytorch(kind, nonlinearity):
    fused, ref = make_pair(kind, nonlinearity, 3, 8, num_layers=3, dropout=0.5)
    x = torch.randn(4, 6, 3, dtype=F64)
    # Training mode: the mask is drawn like the fused kernel's, so the same seed drops the
    # same units; outputs differ from eval mode.
    fused.train()
    ref.train()
    torch.manual_seed(5)
    out_f = fused(x)[0]
    torch.manual_seed(5)
    out_r = ref(x)[0]
    torch.testing.assert_close(out_r, out_f, atol=TOL, rtol=0)
    ref.eval()
    fused.eval()
    out_eval = ref(x)[0]
    assert not torch.allclose(out_r, out_eval)
    torch.testing.assert_close(out_eval, fused(x)[0], atol=TOL, rtol=0)
    torch.testing.assert_close(ref(x)[0], out_eval, atol=0, rtol=0)  # eval is deterministic


@pytest.mark.parametrize("name", FUSED_CELLS)
def test_build_reference_impl(name):
    torch.manual_seed(0)
    module = build(name, 3, 4, num_layers=2, impl="reference", **({"forget_bias": 2.5} if name == "lstm" else {}))
    assert isinstance(module, REFERENCE[name])
    x = torch.randn(2, 5, 3)
    out, final = module(x)
    assert out.shape == (2, 5, 4)
    h_n = final[0] if name == "lstm" else final
    assert h_n.shape == (2, 2, 4)
    if name == "lstm":
        for k in range(2):
            assert torch.all(getattr(module, f"bias_ih_l{k}")[4:8] == 2.5)
            assert torch.all(getattr(module, f"bias_hh_l{k}")[4:8] == 0)
            assert not torch.all(getattr(module, f"bias_ih_l{k}")[:4] == 2.5)
        # same weights in the fused build -> same function
        fused = build(name, 3, 4, num_layers=2, impl="fused")
        fused.load_state_dict(module.state_dict())
        torch.testing.assert_close(out, fused(x)[0], atol=1e-6, rtol=1e-5)


def test_build_reference_rnn_relu():
    module = build("rnn", 3, 4, impl="reference", nonlinearity="relu")
    assert isinstance(module, ReferenceRNN) and module.nonlinearity == "relu"
    out, _ = module(torch.randn(2, 3, 3))
    assert torch.all(out >= 0)


def test_reference_rejects_what_it_does_not_do():
    with pytest.raises(ValueError):
        ReferenceLSTM(3, 4, batch_first=False)
    with pytest.raises(ValueError):
        ReferenceRNN(3, 4, nonlinearity="sigmoid")
    lstm = ReferenceLSTM(3, 4)
    with pytest.raises(ValueError):
        lstm(torch.randn(5, 3))  # unbatched
    with pytest.raises(ValueError):
        lstm(torch.randn(2, 5, 3), torch.zeros(1, 2, 4))  # LSTM needs (h0, c0)
    with pytest.raises(ValueError):
        ReferenceGRU(3, 4)(torch.randn(2, 5, 3), torch.zeros(1, 3, 4))  # wrong batch


# --- recording -----------------------------------------------------------------------------

CELL_TYPES = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def manual_cell_loop(kind, ref, x, state):
    """Independent forward with nn.*Cell per layer; returns (loss inputs, per-layer per-step h
    tensors with retain_grad) so that h.grad is the true dL/dh_t."""
    cells = []
    for k in range(ref.num_layers):
        in_k = ref.input_size if k == 0 else ref.hidden_size
        cell = CELL_TYPES[kind](in_k, ref.hidden_size, dtype=F64)
        with torch.no_grad():
            for pname in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, pname).copy_(getattr(ref, f"{pname}_l{k}"))
        cells.append(cell)
    T = x.shape[1]
    inputs = [x[:, t] for t in range(T)]
    hs_all, finals_h, finals_c = [], [], []
    for k, cell in enumerate(cells):
        if kind == "lstm":
            h, c = state[0][k], state[1][k]
        else:
            h, c = state[k], None
        hs = []
        for t in range(T):
            if kind == "lstm":
                h, c = cell(inputs[t], (h, c))
            else:
                h = cell(inputs[t], h)
            h.retain_grad()
            hs.append(h)
        hs_all.append(hs)
        finals_h.append(h)
        finals_c.append(c)
        inputs = hs
    out = torch.stack(hs_all[-1], 1)
    final = torch.stack(finals_h)
    if kind == "lstm":
        final = (final, torch.stack(finals_c))
    return out, final, hs_all


def loss_fn(out, final, w):
    """Depends on the outputs at a few steps (not the last only) and on the final state."""
    finals = state_tensors(final)
    return (out[:, 1] * w).sum() + (out[:, -1] ** 2).sum() + sum((f**3).sum() for f in finals)


@pytest.mark.parametrize("kind", list(CELL_TYPES))  # the cells torch has a one-step nn.*Cell of
def test_hidden_grad_norms_are_the_true_gradient(kind):
    torch.manual_seed(3)
    L, B, T, I, H = 2, 3, 6, 2, 4
    ref = REFERENCE[kind](I, H, num_layers=L, dtype=F64)
    x = torch.randn(B, T, I, dtype=F64)
    h0 = torch.randn(L, B, H, dtype=F64)
    state = (h0, torch.randn(L, B, H, dtype=F64)) if kind == "lstm" else h0
    w = torch.randn(B, H, dtype=F64)

    ref.record = True
    out, final = ref(x, state)
    loss = loss_fn(out, final, w)
    norms = hidden_grad_norms(ref, loss)
    norms0 = hidden_grad_norms(ref, loss, layer=0)

    m_out, m_final, hs = manual_cell_loop(kind, ref, x, state)
    torch.testing.assert_close(m_out, out.detach(), atol=1e-12, rtol=0)
    loss_fn(m_out, m_final, w).backward()
    expected = torch.stack([h.grad.norm() for h in hs[-1]])
    expected0 = torch.stack([h.grad.norm() for h in hs[0]])
    assert norms.shape == (T,)
    torch.testing.assert_close(norms, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(norms0, expected0, atol=1e-10, rtol=1e-10)
    # The true gradient is not the direct one: at t=2 the loss sees h_t only through h_{t+1}.
    assert norms[2] > 0
    (direct,) = torch.autograd.grad(loss, ref.recorded["h"][-1], retain_graph=True)
    assert direct[:, 2].norm() == 0

    # The graph survives: backward afterwards gives the same parameter gradients as an
    # unrecorded forward, and fills the probes' .grad with the same dL/dh_t.
    loss.backward()
    probe = ref.recorded["h_probe"][-1]
    torch.testing.assert_close(probe.grad.norm(dim=(0, 2)), expected, atol=1e-10, rtol=1e-10)
    grads_rec = {n: p.grad.clone() for n, p in ref.named_parameters()}
    ref.zero_grad()
    ref.record = False
    out2, final2 = ref(x, state)
    assert ref.recorded is None
    loss_fn(out2, final2, w).backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(grads_rec[n], p.grad, atol=1e-12, rtol=0)


def test_recorded_lstm_gates_reproduce_the_cell():
    torch.manual_seed(4)
    L, B, T, H = 2, 3, 5, 4
    lstm = ReferenceLSTM(2, H, num_layers=L, dtype=F64)
    lstm.record = True
    x = torch.randn(B, T, 2, dtype=F64)
    out, (h_n, c_n) = lstm(x)
    rec = lstm.recorded
    assert set(rec["gates"]) == {"i", "f", "g", "o"}
    for g in rec["gates"].values():
        assert g.shape == (L, B, T, H) and not g.requires_grad
    assert len(rec["h"]) == len(rec["h_probe"]) == L
    torch.testing.assert_close(rec["h"][-1], out)
    # Rebuild c_t and h_t from the recorded gates: c_t = f c_{t-1} + i g, h_t = o tanh(c_t).
    gates = rec["gates"]
    for k in range(L):
        c = torch.zeros(B, H, dtype=F64)
        for t in range(T):
            c = gates["f"][k, :, t] * c + gates["i"][k, :, t] * gates["g"][k, :, t]
            h = gates["o"][k, :, t] * torch.tanh(c)
            torch.testing.assert_close(h, rec["h"][k][:, t].detach(), atol=1e-12, rtol=0)
        torch.testing.assert_close(c, c_n[k].detach(), atol=1e-12, rtol=0)
    for name in ("i", "f", "o"):
        assert 0 < mean_gate(lstm, name) < 1
        assert 0 < mean_gate(lstm, name, layer=1) < 1
    assert -1 < mean_gate(lstm, "g") < 1


def test_forget_bias_moves_the_recorded_forget_gate():
    x = torch.randn(4, 10, 3)
    means = {}
    for bias in (-6.0, 6.0):
        torch.manual_seed(0)
        lstm = build("lstm", 3, 8, impl="reference", forget_bias=bias)
        lstm.record = True
        with torch.no_grad():
            lstm(x)
        assert "h_probe" not in lstm.recorded  # no grad mode, nothing to probe
        means[bias] = mean_gate(lstm, "f")
    assert means[-6.0] < 0.05 and means[6.0] > 0.95


def test_recorded_gru_gates():
    torch.manual_seed(5)
    gru = ReferenceGRU(3, 4, num_layers=1, dtype=F64)
    gru.record = True
    x = torch.randn(2, 6, 3, dtype=F64)
    out, _ = gru(x)
    gates = gru.recorded["gates"]
    assert set(gates) == {"r", "z", "n"}
    assert gates["z"].shape == (1, 2, 6, 4)
    for name in ("r", "z"):
        assert 0 < mean_gate(gru, name) < 1
    # update gate z: h_t = (1 - z) n + z h_{t-1}
    z, n = gates["z"][0], gates["n"][0]
    h_prev = torch.zeros(2, 4, dtype=F64)
    for t in range(6):
        h_prev = (1 - z[:, t]) * n[:, t] + z[:, t] * h_prev
        torch.testing.assert_close(h_prev, out[:, t].detach(), atol=1e-12, rtol=0)


def test_rnn_records_no_gates_and_helpers_need_a_recording():
    rnn = ReferenceRNN(3, 4)
    out, _ = rnn(torch.randn(2, 5, 3))
    assert rnn.recorded is None
    with pytest.raises(RuntimeError):
        hidden_grad_norms(rnn, out.sum())
    with pytest.raises(RuntimeError):
        mean_gate(rnn, "f")
    rnn.record = True
    rnn(torch.randn(2, 5, 3))
    assert rnn.recorded["gates"] == {}
    with pytest.raises(KeyError):
        mean_gate(rnn, "f")
