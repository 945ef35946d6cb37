"""Triton device functions shared by the kernels (imported as ``bpalts.kernels._math``)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tanh(x):
    """Cephes' tanhf, as the C++ kernels' ``vec::tanh_n``: ``sign(x) (1 - e) / (1 + e)``,
    ``e = exp(-2|x|)``, from ``|x| >= 0.625``; below it, where ``1 - e`` cancels (relative error
    about 1e-8 / |x|, and exactly 0 below 3e-8), the odd polynomial ``x + x^3 P(x^2)``. A few ulp
    everywhere; NaN stays NaN (``tl.math.tanh`` is not in every Triton release)."""
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    s = tl.minimum(a, 0.625)  # the polynomial's argument (no inf - inf where it is not used)
    z = s * s
    q = -5.70498872745e-3 * z + 2.06390887954e-2
    q = q * z - 5.37397155531e-2
    q = q * z + 1.33314422036e-1
    q = q * z - 3.33332819422e-1
    t = tl.where(a < 0.625, q * z * s + s, big)
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
