"""kernels/_split_tf32.py: 3xTF32 as one TF32 GEMM of split operands, under TRITON_INTERPRET=1.

The split parts are TF32-exact, so the CPU's emulation of a TF32 GEMM (operands rounded to TF32,
products in float32: ``bpalts._precision.gemm_into(..., "tf32")``) forms the products tensor cores
form (exactly); only the accumulation's order and rounding differ, which the GPU rows of
``bench/gpu.py`` check against the fp32 tolerance. These tests hold the products to
float32-level accuracy against float64.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts._precision import gemm_into, round_tf32  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)


def test_split3_parts(poisoned_empty):
    """kernels/_split_tf32.py: rows of a strided A as [hi, lo, hi] (lo=1) or [hi, hi, lo]
    (lo=2), hi and lo TF32-exact and hi + lo = A to 2^-22."""
    from bpalts.kernels._split_tf32 import split3

    A = (torch.randn(40, 300) * torch.logspace(-3, 3, 300)).T  # (300, 40), strides (1, 300)
    hi = round_tf32(A.contiguous())
    lo = round_tf32(A - hi)
    for where in (1, 2):
        A3 = split3(A, where)
        assert A3.shape == (300, 3, 40) and A3.is_contiguous()
        parts = [lo if i == where else hi for i in range(3)]
        for i in range(3):
            assert torch.equal(A3[:, i], parts[i]), (where, i)
    assert ((hi.double() + lo.double() - A.double()).abs() <= A.double().abs() * 2.0 ** -22).all()
    with pytest.raises(ValueError, match="lo must be 1 or 2"):
        split3(A, 0)


@pytest.mark.parametrize("shape", [(5, 7, 3), (33, 300, 70)], ids=str)
def test_both_layouts_give_float32_products(shape, poisoned_empty):
    """A3 (M, 3K) @ B3 (N, 3K)^T (K inner) and Y3 (3B, N)^T @ X3 (3B, F) (the batch inner): each a
    3xTF32 product within a few float32 roundings of float64, far better than one TF32 product."""
    from bpalts.kernels._split_tf32 import split3

    M, K, N = shape
    g = torch.Generator().manual_seed(M)
    A, B = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    exact = A.double() @ B.double().T
    scale = A.double().abs() @ B.double().abs().T  # error bounds are relative to |A| |B|
    out = torch.empty(M, N)
    gemm_into(out, split3(A, 1).view(M, 3 * K), split3(B, 2).view(N, 3 * K).T, "tf32")
    err3 = ((out.double() - exact).abs() / scale).max().item()
    err1 = ((round_tf32(A).double() @ round_tf32(B).double().T - exact).abs() / scale).max().item()
    assert err3 < K * 2.0 ** -23 and err1 > 30 * err3, (err3, err1)
    # the inner dimension along the rows: sum_m A[m]^T B'[m] with B' (M, N)
    Bp = torch.randn(M, N, generator=g)
    out2 = torch.empty(K, N)
    gemm_into(out2, split3(A, 2).view(3 * M, K).T, split3(Bp, 1).view(3 * M, N), "tf32")
    exact2 = A.double().T @ Bp.double()
    scale2 = A.double().abs().T @ Bp.double().abs()
    assert ((out2.double() - exact2).abs() / scale2).max().item() < M * 2.0 ** -23
