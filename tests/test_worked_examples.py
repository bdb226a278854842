"""Worked examples from the notes, reproduced by the torch reference cells and the NumPy code.

Expected values are computed here with plain ``math`` and explicit loops (not the code path
under test) and also pinned as literals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.cells.reference import ReferenceLSTM, ReferenceRNN
from rnnlab.numpy_bptt import numpy_lstm, numpy_rnn

F64 = torch.float64

# --- (a) RNN: input 2, hidden 3, output 1, length 2; row vectors --------------------------
#   h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h),   y_t = h_t W_hy^T + b_y
W_XH = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]  # (2, 3)
W_HH = [[0.7, 0.8, 0.9], [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]  # (3, 3)
W_HY = [[0.1, 0.2, 0.3]]  # (1, 3)
B_H = [0.1, 0.1, 0.1]
B_Y = [0.1]
X = [[1.0, 2.0], [3.0, 4.0]]  # x_1, x_2

# Pinned (printed once from hand_rnn() below). h_1 = tanh([1.0, 1.3, 1.6]).
H1 = [0.7615941559557649, 0.8617231593133063, 0.9216685544064713]
Y1 = 0.6250046137801791
H2 = [0.9949344881086918, 0.9992475210967997, 0.9998884250783930]
Y2 = 0.6993094805537471


def hand_rnn():
    """The worked example by hand: explicit sums, math.tanh."""
    h = [0.0, 0.0, 0.0]
    hs, ys = [], []
    for x in X:
        h = [
            math.tanh(
                sum(x[i] * W_XH[i][j] for i in range(2))
                + sum(h[k] * W_HH[k][j] for k in range(3))
                + B_H[j]
            )
            for j in range(3)
        ]
        hs.append(h)
        ys.append(sum(h[j] * W_HY[0][j] for j in range(3)) + B_Y[0])
    return hs, ys


def test_rnn_worked_example_hand_computation_matches_pinned_numbers():
    hs, ys = hand_rnn()
    print("h_1 =", hs[0], "y_1 =", ys[0])
    print("h_2 =", hs[1], "y_2 =", ys[1])
    assert hs[0] == pytest.approx(H1, abs=1e-12)
    assert hs[1] == pytest.approx(H2, abs=1e-12)
    assert ys == pytest.approx([Y1, Y2], abs=1e-12)
    assert hs[0] == pytest.approx([math.tanh(1.0), math.tanh(1.3), math.tanh(1.6)], abs=1e-15)


def test_rnn_worked_example_torch_reference():
    rnn = ReferenceRNN(2, 3, dtype=F64)
    out_layer = nn.Linear(3, 1, dtype=F64)
    with torch.no_grad():
        # PyTorch is column-vector: h = tanh(W_ih x + W_hh h + b), so W_ih = W_xh^T, W_hh = W_hh^T.
        rnn.weight_ih_l0.copy_(torch.tensor(W_XH, dtype=F64).T)
        rnn.weight_hh_l0.copy_(torch.tensor(W_HH, dtype=F64).T)
        rnn.bias_ih_l0.copy_(torch.tensor(B_H, dtype=F64))
        rnn.bias_hh_l0.zero_()
        out_layer.weight.copy_(torch.tensor(W_HY, dtype=F64))  # y = h W_hy^T + b_y
        out_layer.bias.copy_(torch.tensor(B_Y, dtype=F64))
        out, h_n = rnn(torch.tensor([X], dtype=F64))  # batch of one, (1, 2, 2)
        y = out_layer(out)[0, :, 0]
    hs, ys = hand_rnn()
    np.testing.assert_allclose(out[0].numpy(), hs, atol=1e-9, rtol=0)
    np.testing.assert_allclose(out[0].numpy(), [H1, H2], atol=1e-9, rtol=0)
    np.testing.assert_allclose(y.numpy(), ys, atol=1e-9, rtol=0)
    np.testing.assert_allclose(y.numpy(), [Y1, Y2], atol=1e-9, rtol=0)
    np.testing.assert_allclose(h_n[0, 0].numpy(), H2, atol=1e-9, rtol=0)


def test_rnn_worked_example_numpy():
    params = {
        "W": np.array(W_XH),  # row-vector convention throughout: no transposes
        "U": np.array(W_HH),
        "b": np.array(B_H),
        "W_y": np.array(W_HY).T,
        "b_y": np.array(B_Y),
    }
    x = np.array([X])
    y2, cache = numpy_rnn.forward(params, x)
    y1, _ = numpy_rnn.forward(params, x[:, :1])  # y_1: the read-out after one step
    np.testing.assert_allclose(cache["h"][0, 1], H1, atol=1e-9, rtol=0)
    np.testing.assert_allclose(cache["h"][0, 2], H2, atol=1e-9, rtol=0)
    np.testing.assert_allclose([y1[0, 0], y2[0, 0]], [Y1, Y2], atol=1e-9, rtol=0)
    np.testing.assert_allclose([y1[0, 0], y2[0, 0]], hand_rnn()[1], atol=1e-9, rtol=0)


# --- (b) LSTM "help": one-hot characters {h, e, l, p}, hidden size 2 -----------------------
VOCAB = "help"
GATES = {"f": [0.8, 0.3], "i": [0.5, 0.7], "g": [0.2, -0.1], "o": [0.9, 0.6]}
C_T = [0.1, -0.07]  # f ⊙ 0 + i ⊙ g
H_T = [0.0897, -0.0419]  # o ⊙ tanh(c_t), 4 decimals
# Next-character read-out: logits = W_out h_t + b_out (rows h, e, l, p).
W_OUT = [[1.0, -1.0], [2.0, 0.5], [-0.5, 1.5], [0.3, 0.3]]
B_OUT = [0.0, 0.1, 0.0, -0.1]
P_NEXT = [0.26831255616235034, 0.3045869051370805, 0.21119289857245718, 0.21590764012811198]


def logit(p):
    return math.log(p / (1 - p))


def help_lstm():
    """A ReferenceLSTM whose gates, for the one-hot input 'h' with zero state, are GATES.

    All weights are zero except the 'h' column of weight_ih, which holds the pre-activations
    logit(i), logit(f), atanh(g), logit(o) in PyTorch's block order (i, f, g, o): the one-hot
    input selects exactly that column.
    """
    lstm = ReferenceLSTM(len(VOCAB), 2, dtype=F64)
    pre = [logit(p) for p in GATES["i"]] + [logit(p) for p in GATES["f"]]
    pre += [math.atanh(v) for v in GATES["g"]] + [logit(p) for p in GATES["o"]]
    with torch.no_grad():
        for p in lstm.parameters():
            p.zero_()
        lstm.weight_ih_l0[:, VOCAB.index("h")] = torch.tensor(pre, dtype=F64)
    return lstm


def one_hot(ch):
    x = torch.zeros(1, 1, len(VOCAB), dtype=F64)
    x[0, 0, VOCAB.index(ch)] = 1.0
    return x


def test_help_lstm_gates_cell_and_hidden_state():
    lstm = help_lstm()
    lstm.record = True
    out, (h_n, c_n) = lstm(one_hot("h"))  # h_0 = c_0 = 0
    for name, values in GATES.items():
        np.testing.assert_allclose(
            lstm.recorded["gates"][name][0, 0, 0].numpy(), values, atol=1e-12, rtol=0
        )
    np.testing.assert_allclose(c_n[0, 0].detach().numpy(), C_T, atol=1e-12, rtol=0)
    hand_h = [GATES["o"][j] * math.tanh(GATES["i"][j] * GATES["g"][j]) for j in range(2)]
    np.testing.assert_allclose(out[0, 0].detach().numpy(), hand_h, atol=1e-12, rtol=0)
    np.testing.assert_allclose(h_n[0, 0].detach().numpy(), H_T, atol=5e-5, rtol=0)
    # The forget gate has nothing to forget at t = 1, so its value must not matter there.
    with torch.no_grad():
        lstm.weight_ih_l0[2:4, VOCAB.index("h")] = 3.0
    torch.testing.assert_close(lstm(one_hot("h"))[0], out, atol=1e-15, rtol=0)

    # The NumPy LSTM (gate blocks f, i, g, o) converted from the same weights agrees.
    params = numpy_lstm.params_from_torch(help_lstm(), nn.Linear(2, 1, dtype=F64))
    _, cache = numpy_lstm.forward(params, one_hot("h").numpy())
    for name in ("f", "i", "g", "o"):
        np.testing.assert_allclose(cache[name][0, 0], GATES[name], atol=1e-12, rtol=0)
    np.testing.assert_allclose(cache["c"][0, 1], C_T, atol=1e-12, rtol=0)
    np.testing.assert_allclose(cache["h"][0, 1], hand_h, atol=1e-12, rtol=0)


def test_help_next_character_softmax():
    lstm = help_lstm()
    readout = nn.Linear(2, len(VOCAB), dtype=F64)
    with torch.no_grad():
        readout.weight.copy_(torch.tensor(W_OUT, dtype=F64))
        readout.bias.copy_(torch.tensor(B_OUT, dtype=F64))
        out, _ = lstm(one_hot("h"))
        probs = torch.softmax(readout(out[0, 0]), dim=-1)

    # By hand: logits_r = sum_j W_out[r][j] h_j + b_r, p_r = exp(logit_r) / sum exp.
    h = [GATES["o"][j] * math.tanh(GATES["i"][j] * GATES["g"][j]) for j in range(2)]
    logits = [sum(W_OUT[r][j] * h[j] for j in range(2)) + B_OUT[r] for r in range(4)]
    exps = [math.exp(v) for v in logits]
    hand = [e / sum(exps) for e in exps]

    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(probs.numpy(), hand, atol=1e-12, rtol=0)
    np.testing.assert_allclose(probs.numpy(), P_NEXT, atol=1e-12, rtol=0)
    assert VOCAB[int(probs.argmax())] == "e"  # after "h" comes "e"
