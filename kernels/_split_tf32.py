r"""3xTF32 through cuBLAS: float32-accurate products on TF32 tensor cores as ONE TF32 GEMM.

cuBLAS has no 3xTF32 mode, but a product ``a b`` (K inner) equals, to about 2^-22 relative,

.. math::

    a b \approx a_{hi} b_{hi} + a_{lo} b_{hi} + a_{hi} b_{lo}
      = [a_{hi}, a_{lo}, a_{hi}]\ [b_{hi}; b_{hi}; b_{lo}]

with ``hi = round_tf32(v)`` and ``lo = round_tf32(v - hi)`` (``bpalts.kernels._math.split_tf32``;
only the ``a_lo b_lo`` term, about 2^-22 of the product, is dropped). Both parts are TF32-exact,
so a TF32 GEMM multiplies them exactly and accumulates in float32: the split operands, K tripled,
give a float32-level result from one cuBLAS call at TF32 rate (CUTLASS's 3xTF32, Ootomo & Yokota
2022, as a data layout instead of a kernel).

:func:`split3` writes each row of a matrix as its three parts, ``(R, 3, C)`` contiguous:
``lo=1`` gives ``[hi, lo, hi]`` (the left operand's rows), ``lo=2`` ``[hi, hi, lo]`` (the right
operand's). Viewed ``(R, 3C)``, two such matrices multiply as above: ``A3.view(R, 3K) @
B3.view(N, 3K).T``. Viewed ``(3R, C)`` instead, the parts are K-concatenated along the rows, for
a product whose inner dimension is R (``Y3.view(3B, N).T @ X3.view(3B, F)``). Ops that
produce an operand in a fused kernel write its parts there directly (e.g. ``reservoir_run``'s
``_leak_tanh_kernel``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from bpalts.kernels._math import split_tf32 as _split_tf32

SPLIT_BR, SPLIT_BC = 16, 256  # _split3_kernel's tile (rows, columns)


@triton.jit
def store_parts(row, v, C, mask, LO: tl.constexpr):
    """Store float32 ``v`` (any block shape) at pointers ``row`` as its three TF32 parts, ``C``
    elements apart: the ``(R, 3, C)`` layout, ``row`` pointing into part 0. Part ``LO`` (1 or 2)
    is the remainder ``lo``, the other two ``hi``. Every kernel that writes a split operand
    (``_split3_kernel``, and the ops' fused kernels) stores it through here."""
    hi, lo = _split_tf32(v)
    tl.store(row, hi, mask=mask)
    tl.store(row + C, lo if LO == 1 else hi, mask=mask)
    tl.store(row + 2 * C, lo if LO == 2 else hi, mask=mask)


@triton.jit
def _split3_kernel(A, s_ar, s_ac, A3, R, C, LO: tl.constexpr, BLOCK_R: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    """``A3[r] = three parts of row r of A`` (A (R, C) strided, A3 contiguous (R, 3, C)): part
    ``LO`` (1 or 2) the TF32 remainder ``lo`` of the row, the other two its TF32 ``hi``."""
    rr = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (rr[:, None] < R) & (rc[None, :] < C)
    v = tl.load(A + rr[:, None] * s_ar + rc[None, :] * s_ac, mask=m, other=0.0)
    store_parts(A3 + rr[:, None] * 3 * C + rc[None, :], v, C, m, LO)


def split3(A: torch.Tensor, lo: int) -> torch.Tensor:
    """(R, 3, C) float32, contiguous: each row of float32 ``A`` (R, C, any strides) as its TF32
    parts, ``lo`` (1 or 2) the index of the remainder (module docs)."""
    if lo not in (1, 2):
        raise ValueError(f"lo must be 1 or 2, got {lo!r}")
    R, C = A.shape
    A3 = torch.empty((R, 3, C), dtype=torch.float32, device=A.device)
    _split3_kernel[(triton.cdiv(R, SPLIT_BR), triton.cdiv(C, SPLIT_BC))](
        A, A.stride(0), A.stride(1), A3, R, C, LO=lo, BLOCK_R=SPLIT_BR, BLOCK_C=SPLIT_BC)
    return A3
