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


@triton.jit
def round_tf32(x):
    """float32 ``x`` rounded to TF32 (nearest, ties to even: the 13 low mantissa bits cleared),
    as :func:`bpalts._precision.round_tf32` does; infinities and NaNs pass through."""
    bits = x.to(tl.int32, bitcast=True)
    r = ((bits + (0x0FFF + ((bits >> 13) & 1))) & -8192).to(tl.float32, bitcast=True)
    return tl.where(tl.abs(x) < float("inf"), r, x)


@triton.jit
def split_tf32(x):
    """3xTF32's split of float32 ``x`` into two TF32 numbers: ``hi = round_tf32(x)`` and
    ``lo = round_tf32(x - hi)`` (``x - hi`` is exact), so ``hi + lo`` is ``x`` to about
    2^-22 relative; both are exact inputs of a TF32 tensor-core product."""
    hi = round_tf32(x)
    return hi, round_tf32(x - hi)
