"""NumPy references: forward pass and hand-derived backpropagation through time (BPTT).

One recurrent layer and a linear read-out on the last hidden state, row-vector convention
(a batch is a stack of rows, ``x_t`` is (B, I))::

    y = h_T W_y + b_y

:mod:`rnnlab.numpy_bptt.numpy_rnn` (tanh RNN) and :mod:`rnnlab.numpy_bptt.numpy_lstm` each offer
``forward(params, x, ...) -> (y, cache)``, ``backward(params, cache, dY) -> grads``, a converter
``params_from_torch(module, linear)`` and ``grads_to_torch(grads)`` to compare against autograd.
The loss is not part of the model: ``dY = ∂L/∂y`` is an input of ``backward``;
:func:`mse_loss` gives it for the mean squared error.
"""

from __future__ import annotations

import numpy as np

from rnnlab.numpy_bptt import numpy_lstm, numpy_rnn

__all__ = ["mse_loss", "numpy_lstm", "numpy_rnn"]


def mse_loss(y: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """``L = mean((y - target)^2)`` over all N elements; ``dY = ∂L/∂y = 2 (y - target) / N``."""
    diff = np.asarray(y, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.mean(diff**2)), 2.0 * diff / diff.size
