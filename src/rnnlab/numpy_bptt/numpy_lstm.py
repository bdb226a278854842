"""One-layer LSTM + linear read-out in NumPy: forward and hand-derived BPTT.

Row-vector convention, batch of B rows, x (B, T, I)::

    z_t = x_t W + h_{t-1} U + b            W (I, 4H), U (H, 4H), b (4H,)
    [z_f, z_i, z_g, z_o] = z_t             column blocks in the order (f, i, g, o)
    f_t = σ(z_f)   i_t = σ(z_i)   g_t = tanh(z_g)   o_t = σ(z_o)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)
    y   = h_T W_y + b_y                    W_y (H, O), b_y (O,)

Column order. ``W``, ``U`` and ``b`` here keep their four gate blocks in the order of the
derivation, **(f, i, g, o)**, so ``dz_t = [df, di, dg, do]`` is a plain concatenation. PyTorch
stores the rows of ``weight_ih``/``weight_hh`` in the order **(i, f, g, o)**: converting swaps the
first two blocks (``W = weight_ih[[f, i, g, o] blocks].T``; see :func:`from_torch_order`), and its
two bias vectors are summed, ``b = bias_ih + bias_hh`` (each then has gradient ``db``).

Backward, for the gradient ``dY = ∂L/∂y`` (B, O), exactly as derived::

    dW_y = h_Tᵀ dY      db_y = Σ_rows dY      dh_T = dY W_yᵀ      dc_T = 0
    for t = T … 1:
        do_t  = dh_t ⊙ tanh(c_t) ⊙ o_t(1−o_t)
        dc_t += dh_t ⊙ o_t ⊙ (1 − tanh²(c_t))
        df_t  = dc_t ⊙ c_{t−1} ⊙ f_t(1−f_t)
        di_t  = dc_t ⊙ g_t ⊙ i_t(1−i_t)
        dg_t  = dc_t ⊙ i_t ⊙ (1−g_t²)
        dz_t  = [df_t, di_t, dg_t, do_t]
        dW += x_tᵀ dz_t     dU += h_{t−1}ᵀ dz_t     db += Σ_rows dz_t
        dx_t = dz_t Wᵀ
        dh_{t−1} = dz_t Uᵀ
        dc_{t−1} = dc_t ⊙ f_t

(the loss sees only y, so dh_t for t < T comes through h_{t+1} alone).
"""

from __future__ import annotations

import numpy as np

GATE_ORDER = ("f", "i", "g", "o")
"""Column-block order of ``W``, ``U``, ``b`` here (the derivation's)."""
TORCH_GATE_ORDER = ("i", "f", "g", "o")
"""Row-block order of ``nn.LSTM``'s ``weight_ih``/``weight_hh``/biases."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _permute_blocks(a: np.ndarray, src: tuple, dst: tuple, axis: int) -> np.ndarray:
    blocks = np.split(a, 4, axis=axis)
    return np.concatenate([blocks[src.index(name)] for name in dst], axis=axis)


def from_torch_order(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Reorder 4 gate blocks along ``axis`` from PyTorch's (i, f, g, o) to (f, i, g, o)."""
    return _permute_blocks(np.asarray(a), TORCH_GATE_ORDER, GATE_ORDER, axis)


def to_torch_order(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Reorder 4 gate blocks along ``axis`` from (f, i, g, o) to PyTorch's (i, f, g, o)."""
    return _permute_blocks(np.asarray(a), GATE_ORDER, TORCH_GATE_ORDER, axis)


def forward(
    params: dict, x: np.ndarray, h0: np.ndarray | None = None, c0: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """``x`` (B, T, I) -> ``(y (B, O), cache)``; ``h0``, ``c0`` (B, H), zeros by default.

    ``params``: ``W`` (I, 4H), ``U`` (H, 4H), ``b`` (4H,), ``W_y`` (H, O), ``b_y`` (O,), gate
    blocks in the order (f, i, g, o). ``cache`` holds every intermediate the backward needs
    (``h``/``c`` of shape (B, T+1, H) with the initial state at index 0, and the gates).
    """
    W, U, b = params["W"], params["U"], params["b"]
    x = np.asarray(x, dtype=np.float64)
    B, T, _ = x.shape
    H = U.shape[0]
    h = np.zeros((B, T + 1, H))
    c = np.zeros((B, T + 1, H))
    if h0 is not None:
        h[:, 0] = h0
    if c0 is not None:
        c[:, 0] = c0
    f = np.zeros((B, T, H))
    i = np.zeros((B, T, H))
    g = np.zeros((B, T, H))
    o = np.zeros((B, T, H))
    for t in range(1, T + 1):  # h[:, t] is h_t; x[:, t-1] is x_t
        z = x[:, t - 1] @ W + h[:, t - 1] @ U + b
        z_f, z_i, z_g, z_o = np.split(z, 4, axis=1)
        f[:, t - 1] = sigmoid(z_f)
        i[:, t - 1] = sigmoid(z_i)
        g[:, t - 1] = np.tanh(z_g)
        o[:, t - 1] = sigmoid(z_o)
        c[:, t] = f[:, t - 1] * c[:, t - 1] + i[:, t - 1] * g[:, t - 1]
        h[:, t] = o[:, t - 1] * np.tanh(c[:, t])
    y = h[:, T] @ params["W_y"] + params["b_y"]
    cache = {"x": x, "h": h, "c": c, "f": f, "i": i, "g": g, "o": o}
    return y, cache


def backward(params: dict, cache: dict, dY: np.ndarray) -> dict:
    """Hand-derived BPTT (see the module docstring) for ``dY = ∂L/∂y`` (B, O).

    Returns ``W``, ``U``, ``b``, ``W_y``, ``b_y`` (the parameters' gradients, same shapes and
    gate order as ``params``) and ``x`` (B, T, I), ``h0``, ``c0`` (B, H) (the inputs').
    """
    W, U, W_y = params["W"], params["U"], params["W_y"]
    x, h, c = cache["x"], cache["h"], cache["c"]
    f, i, g, o = cache["f"], cache["i"], cache["g"], cache["o"]
    dY = np.asarray(dY, dtype=np.float64)
    T = x.shape[1]

    # Output layer: y = h_T W_y + b_y.
    dW_y = h[:, T].T @ dY
    db_y = dY.sum(axis=0)
    dh = dY @ W_y.T  # dh_T
    dc = np.zeros_like(dh)  # nothing reaches c_T except through h_T

    dW = np.zeros_like(W)
    dU = np.zeros_like(U)
    db = np.zeros_like(params["b"])
    dx = np.zeros_like(x)
    for t in range(T, 0, -1):
        f_t, i_t, g_t, o_t = f[:, t - 1], i[:, t - 1], g[:, t - 1], o[:, t - 1]
        tanh_c = np.tanh(c[:, t])
        do = dh * tanh_c * o_t * (1 - o_t)
        dc = dc + dh * o_t * (1 - tanh_c**2)
        df = dc * c[:, t - 1] * f_t * (1 - f_t)
        di = dc * g_t * i_t * (1 - i_t)
        dg = dc * i_t * (1 - g_t**2)
        dz = np.concatenate([df, di, dg, do], axis=1)
        dW += x[:, t - 1].T @ dz
        dU += h[:, t - 1].T @ dz
        db += dz.sum(axis=0)
        dx[:, t - 1] = dz @ W.T
        dh = dz @ U.T  # dh_{t-1}
        dc = dc * f_t  # dc_{t-1}
    return {"W": dW, "U": dU, "b": db, "W_y": dW_y, "b_y": db_y, "x": dx, "h0": dh, "c0": dc}


def params_from_torch(lstm, linear) -> dict:
    """``nn.LSTM`` (one layer) + ``nn.Linear`` -> float64 ``params`` for :func:`forward`."""
    if lstm.num_layers != 1 or getattr(lstm, "bidirectional", False):
        raise ValueError("the NumPy reference is one unidirectional layer")
    if getattr(lstm, "proj_size", 0):
        raise ValueError("proj_size is not supported")

    def arr(t):
        return t.detach().cpu().double().numpy()

    return {
        "W": from_torch_order(arr(lstm.weight_ih_l0), axis=0).T.copy(),
        "U": from_torch_order(arr(lstm.weight_hh_l0), axis=0).T.copy(),
        "b": from_torch_order(arr(lstm.bias_ih_l0) + arr(lstm.bias_hh_l0)),
        "W_y": arr(linear.weight).T.copy(),
        "b_y": arr(linear.bias).copy(),
    }


def grads_to_torch(grads: dict) -> tuple[dict, dict]:
    """Gradients in PyTorch's layout: ``({weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0},
    {weight, bias})`` for the LSTM and the ``nn.Linear``. Both bias vectors get ``db``."""
    db = to_torch_order(grads["b"])
    rnn = {
        "weight_ih_l0": to_torch_order(grads["W"].T, axis=0),
        "weight_hh_l0": to_torch_order(grads["U"].T, axis=0),
        "bias_ih_l0": db,
        "bias_hh_l0": db.copy(),
    }
    return rnn, {"weight": grads["W_y"].T, "bias": grads["b_y"]}
