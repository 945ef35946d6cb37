"""Triton device functions shared by the kernels (imported as ``bpalts.kernels._math``)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tanh(x):
    """``tanh(x) = sign(x) (1 - e) / (1 + e)``, ``e = exp(-2|x|)``: stable for large ``|x|``
    (``tl.math.tanh`` is not in every Triton release)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)
