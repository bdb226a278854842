"""One-layer tanh RNN + linear read-out in NumPy: forward and hand-derived BPTT.

Row-vector convention, batch of B rows, x (B, T, I)::

    h_t = tanh(x_t W + h_{t-1} U + b)      W (I, H), U (H, H), b (H,)
    y   = h_T W_y + b_y                    W_y (H, O), b_y (O,)

From ``nn.RNN``: ``W = weight_ih_l0ᵀ``, ``U = weight_hh_l0ᵀ``, ``b = bias_ih_l0 + bias_hh_l0``
(each of PyTorch's two bias vectors then has gradient ``db``). In the textbook's column-vector
notation ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)``, ``W = W_xhᵀ`` and ``U = W_hhᵀ``.

Backward, for the gradient ``dY = ∂L/∂y`` (B, O), exactly as derived::

    dW_y = h_Tᵀ dY      db_y = Σ_rows dY      dh_T = dY W_yᵀ
    for t = T … 1:
        dz_t = dh_t ⊙ (1 − h_t²)                  (tanh' written with the output h_t)
        dW += x_tᵀ dz_t     dU += h_{t−1}ᵀ dz_t     db += Σ_rows dz_t
        dx_t = dz_t Wᵀ
        dh_{t−1} = dz_t Uᵀ
"""

from __future__ import annotations

import numpy as np


def forward(params: dict, x: np.ndarray, h0: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """``x`` (B, T, I) -> ``(y (B, O), cache)``; ``h0`` (B, H), zeros by default.

    ``params``: ``W`` (I, H), ``U`` (H, H), ``b`` (H,), ``W_y`` (H, O), ``b_y`` (O,).
    ``cache["h"]`` is (B, T+1, H) with ``h_0`` at index 0.
    """
    W, U, b = params["W"], params["U"], params["b"]
    x = np.asarray(x, dtype=np.float64)
    B, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((B, T + 1, H))
    if h0 is not None:
        h[:, 0] = h0
    for t in range(1, T + 1):  # h[:, t] is h_t; x[:, t-1] is x_t
        h[:, t] = np.tanh(x[:, t - 1] @ W + h[:, t - 1] @ U + b)
    y = h[:, T] @ params["W_y"] + params["b_y"]
    return y, {"x": x, "h": h}


def backward(params: dict, cache: dict, dY: np.ndarray) -> dict:
    """Hand-derived BPTT (see the module docstring) for ``dY = ∂L/∂y`` (B, O).

    Returns ``W``, ``U``, ``b``, ``W_y``, ``b_y`` (the parameters' gradients) and ``x``
    (B, T, I), ``h0`` (B, H) (the inputs').
    """
    W, U, W_y = params["W"], params["U"], params["W_y"]
    x, h = cache["x"], cache["h"]
    dY = np.asarray(dY, dtype=np.float64)
    T = x.shape[1]

    dW_y = h[:, T].T @ dY
    db_y = dY.sum(axis=0)
    dh = dY @ W_y.T  # dh_T

    dW = np.zeros_like(W)
    dU = np.zeros_like(U)
    db = np.zeros_like(params["b"])
    dx = np.zeros_like(x)
    for t in range(T, 0, -1):
        dz = dh * (1 - h[:, t] ** 2)
        dW += x[:, t - 1].T @ dz
        dU += h[:, t - 1].T @ dz
        db += dz.sum(axis=0)
        dx[:, t - 1] = dz @ W.T
        dh = dz @ U.T  # dh_{t-1}
    return {"W": dW, "U": dU, "b": db, "W_y": dW_y, "b_y": db_y, "x": dx, "h0": dh}


def params_from_torch(rnn, linear) -> dict:
    """``nn.RNN`` (one layer, tanh) + ``nn.Linear`` -> float64 ``params`` for :func:`forward`.

    Also accepts :class:`rnnlab.cells.reference.ReferenceRNN`, which has the same parameters.
    """
    if rnn.num_layers != 1 or getattr(rnn, "bidirectional", False):
        raise ValueError("the NumPy reference is one unidirectional layer")
    if getattr(rnn, "nonlinearity", "tanh") != "tanh":
        raise ValueError("the NumPy reference RNN is tanh only")

    def arr(t):
        return t.detach().cpu().double().numpy()

    return {
        "W": arr(rnn.weight_ih_l0).T.copy(),
        "U": arr(rnn.weight_hh_l0).T.copy(),
        "b": arr(rnn.bias_ih_l0) + arr(rnn.bias_hh_l0),
        "W_y": arr(linear.weight).T.copy(),
        "b_y": arr(linear.bias).copy(),
    }


def grads_to_torch(grads: dict) -> tuple[dict, dict]:
    """Gradients in PyTorch's layout: ``({weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0},
    {weight, bias})`` for the RNN and the ``nn.Linear``. Both bias vectors get ``db``."""
    rnn = {
        "weight_ih_l0": grads["W"].T,
        "weight_hh_l0": grads["U"].T,
        "bias_ih_l0": grads["b"],
        "bias_hh_l0": grads["b"].copy(),
    }
    return rnn, {"weight": grads["W_y"].T, "bias": grads["b_y"]}
