"""The hand-derived NumPy BPTT against torch autograd and central finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.numpy_bptt import mse_loss, numpy_lstm, numpy_rnn

F64 = torch.float64
MODULES = {"lstm": (numpy_lstm, nn.LSTM), "rnn": (numpy_rnn, nn.RNN)}


def setup(kind, B, T, I, H, O, seed=0):
    """Torch modules, NumPy params, and a random problem (x, nonzero initial state, target)."""
    ref, Torch = MODULES[kind]
    torch.manual_seed(seed)
    rnn = Torch(I, H, batch_first=True, dtype=F64)
    linear = nn.Linear(H, O, dtype=F64)
    x = torch.randn(B, T, I, dtype=F64)
    h0 = torch.randn(B, H, dtype=F64)
    c0 = torch.randn(B, H, dtype=F64)
    target = torch.randn(B, O, dtype=F64)
    return ref, rnn, linear, x, h0, c0, target


def np_forward(kind, ref, params, x, h0, c0):
    if kind == "lstm":
        return ref.forward(params, x, h0, c0)
    return ref.forward(params, x, h0)


def np_loss(kind, ref, params, x, h0, c0, target):
    y, _ = np_forward(kind, ref, params, x, h0, c0)
    return mse_loss(y, target)[0]


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize("B,T,I,H,O", [(1, 1, 2, 3, 1), (4, 7, 3, 5, 2), (3, 12, 1, 8, 3)])
def test_bptt_matches_autograd(kind, B, T, I, H, O):
    ref, rnn, linear, x, h0, c0, target = setup(kind, B, T, I, H, O)

    # torch autograd
    xt, h0t, c0t = (t.clone().requires_grad_() for t in (x, h0, c0))
    state = (h0t[None], c0t[None]) if kind == "lstm" else h0t[None]
    out, _ = rnn(xt, state)
    y_t = linear(out[:, -1])
    loss_t = ((y_t - target) ** 2).mean()
    loss_t.backward()

    # NumPy forward + hand-derived backward
    params = ref.params_from_torch(rnn, linear)
    y, cache = np_forward(kind, ref, params, x.numpy(), h0.numpy(), c0.numpy())
    loss, dY = mse_loss(y, target.numpy())
    grads = ref.backward(params, cache, dY)

    np.testing.assert_allclose(y, y_t.detach().numpy(), atol=1e-12, rtol=0)
    assert loss == pytest.approx(loss_t.item(), abs=1e-12)
    for name in ("W", "U", "b", "W_y", "b_y"):
        assert grads[name].shape == params[name].shape, name
    rnn_grads, lin_grads = ref.grads_to_torch(grads)
    assert rnn_grads.keys() == dict(rnn.named_parameters()).keys()
    for name, p in rnn.named_parameters():
        np.testing.assert_allclose(rnn_grads[name], p.grad.numpy(), atol=1e-8, rtol=0, err_msg=name)
    for name, p in linear.named_parameters():
        np.testing.assert_allclose(lin_grads[name], p.grad.numpy(), atol=1e-8, rtol=0, err_msg=name)
    np.testing.assert_allclose(grads["x"], xt.grad.numpy(), atol=1e-8, rtol=0)
    np.testing.assert_allclose(grads["h0"], h0t.grad.numpy(), atol=1e-8, rtol=0)
    if kind == "lstm":
        np.testing.assert_allclose(grads["c0"], c0t.grad.numpy(), atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_bptt_matches_central_finite_differences(kind):
    ref, rnn, linear, x, h0, c0, target = setup(kind, B=2, T=3, I=2, H=3, O=2, seed=1)
    params = ref.params_from_torch(rnn, linear)
    inputs = {"x": x.numpy().copy(), "h0": h0.numpy().copy(), "c0": c0.numpy().copy()}
    tgt = target.numpy()

    y, cache = np_forward(kind, ref, params, inputs["x"], inputs["h0"], inputs["c0"])
    grads = ref.backward(params, cache, mse_loss(y, tgt)[1])

    def loss():
        return np_loss(kind, ref, params, inputs["x"], inputs["h0"], inputs["c0"], tgt)

    names = ["W", "U", "b", "W_y", "b_y", "x", "h0"] + (["c0"] if kind == "lstm" else [])
    eps = 1e-6
    for name in names:
        arr = params[name] if name in params else inputs[name]
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        assert np.abs(numeric).max() > 1e-4, name  # the check is not vacuous
        np.testing.assert_allclose(grads[name], numeric, atol=1e-8, rtol=1e-6, err_msg=name)


def test_lstm_gate_order_conversion():
    H = 3
    lstm = nn.LSTM(2, H, dtype=F64)
    with torch.no_grad():
        for k, value in enumerate([1.0, 2.0, 3.0, 4.0]):  # PyTorch's blocks i, f, g, o
            lstm.weight_ih_l0[k * H : (k + 1) * H] = value
            lstm.bias_ih_l0[k * H : (k + 1) * H] = value
            lstm.bias_hh_l0[k * H : (k + 1) * H] = 10 * value
    params = numpy_lstm.params_from_torch(lstm, nn.Linear(H, 1, dtype=F64))
    # NumPy columns are (f, i, g, o): the forget block (2) comes first, then input (1)
    assert [params["W"][0, k * H] for k in range(4)] == [2.0, 1.0, 3.0, 4.0]
    assert [params["b"][k * H] for k in range(4)] == [22.0, 11.0, 33.0, 44.0]
    a = np.arange(8.0)
    np.testing.assert_array_equal(numpy_lstm.from_torch_order(a), [2, 3, 0, 1, 4, 5, 6, 7])
    np.testing.assert_array_equal(numpy_lstm.to_torch_order(numpy_lstm.from_torch_order(a)), a)


def test_numpy_forward_caches_the_sequence():
    ref, rnn, linear, x, h0, c0, _ = setup("lstm", B=2, T=4, I=3, H=5, O=1)
    params = numpy_lstm.params_from_torch(rnn, linear)
    _, cache = numpy_lstm.forward(params, x.numpy(), h0.numpy(), c0.numpy())
    out, (h_n, c_n) = rnn(x, (h0[None], c0[None]))
    np.testing.assert_allclose(cache["h"][:, 1:], out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(cache["h"][:, 0], h0.numpy())
    np.testing.assert_allclose(cache["c"][:, -1], c_n[0].detach().numpy(), atol=1e-12)


def test_converters_reject_what_the_reference_does_not_model():
    with pytest.raises(ValueError):
        numpy_rnn.params_from_torch(nn.RNN(2, 3, nonlinearity="relu"), nn.Linear(3, 1))
    with pytest.raises(ValueError):
        numpy_lstm.params_from_torch(nn.LSTM(2, 3, num_layers=2), nn.Linear(3, 1))
