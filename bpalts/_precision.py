"""GEMM precision switch for GEMM-bound ops (DESIGN.md section 2: ``precision="fp32"|"tf32"``,
plus ``"tf32x3"``).

``"fp32"`` (default): full float32 products. ``"tf32"``: each GEMM's operands are rounded to
TF32 (float32's 8-bit exponent, 10-bit mantissa; products accumulated in float32), which is
what NVIDIA tensor cores compute since Ampere: about 8x the fp32 GEMM rate on an H100/H200,
relative error about 1e-3 per product. ``"tf32x3"``: float32-level accuracy on tensor cores
(3xTF32: each operand split into a TF32 high part and a TF32 remainder, ``a b ~ a_hi b_hi +
a_hi b_lo + a_lo b_hi``; relative error about 2^-21 per product against fp32's 2^-24), three
tensor-core products for one; the GPU's fp32 FMA units are about 7x slower than its TF32 tensor
cores, so this can beat ``"fp32"`` where a GEMM is compute-bound.

- Triton backend: ``tl.dot(..., input_precision="tf32")`` / ``"tf32x3"`` (tensor cores). Its
  cuBLAS paths (:func:`gemm_into`) take ``"fp32"`` or ``"tf32"``; cuBLAS has no 3xTF32, so
  where a cuBLAS path takes ``"tf32x3"`` it runs one ``"tf32"`` GEMM of split operands with K
  tripled (``bpalts.kernels._split_tf32``), or fp32.
- Reference and C++ backends: ``"tf32"`` is *emulated* -- each GEMM's operands are rounded to
  TF32 by :func:`round_tf32` and multiplied in float32. CPUs have no TF32 units, so this gives
  the GPU's numerics (to check that a method tolerates them, e.g. its MNIST accuracy) but no
  speed-up. ``"tf32x3"`` runs as ``"fp32"`` there (its error is within fp32's tolerances).
float64 inputs ignore the switch only if it is ``"fp32"``; asking for ``"tf32"`` or ``"tf32x3"``
with float64 is an error (a float64 run wants float64 products).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from bpalts._checks import check_choice

PRECISIONS = ("fp32", "tf32", "tf32x3")
TRITON_INPUT_PRECISION = {"fp32": "ieee", "tf32": "tf32", "tf32x3": "tf32x3"}
# tl.dot input precisions that run on tensor cores (their kernels take the tensor-core tiles)
TENSOR_CORE_PRECISIONS = ("tf32", "tf32x3")


def check_precision(precision, dtype: torch.dtype) -> str:
    """``precision`` is one of :data:`PRECISIONS`; ``"tf32"`` and ``"tf32x3"`` need float32 tensors."""
    precision = check_choice("precision", precision, PRECISIONS)
    if precision != "fp32" and dtype != torch.float32:
        raise TypeError(f"precision={precision!r} needs float32 tensors, got {dtype}; use precision='fp32'")
    return precision


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """A copy of float32 ``t`` rounded to TF32 (nearest, ties to even; 13 low mantissa bits
    cleared). Infinities and NaNs pass through; finite values near float32's maximum that
    would round past it become infinity, as TF32 conversion does."""
    if t.dtype != torch.float32:
        raise TypeError(f"round_tf32 needs a float32 tensor, got {t.dtype}")
    c = t.contiguous()
    bits = c.view(torch.int32)
    lsb = (bits >> 13) & 1
    rounded = (bits + (0x0FFF + lsb)) & ~0x1FFF
    return torch.where(torch.isfinite(c), rounded.view(torch.float32), c).view_as(t)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def operand_rounder(precision: str):
    """What a CPU backend applies to each GEMM operand: :func:`round_tf32` for ``"tf32"`` (the
    emulation), the identity (no copy) for ``"fp32"`` and ``"tf32x3"``."""
    return round_tf32 if precision == "tf32" else _identity


def mm(a: torch.Tensor, b: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``a @ b`` at ``precision`` (TF32 emulated by rounding the operands; ``"tf32x3"`` as fp32;
    see the module docs)."""
    if precision == "tf32":
        return round_tf32(a) @ round_tf32(b)
    return a @ b


# precisions cuBLAS can compute (gemm_into); it has no 3xTF32
CUBLAS_PRECISIONS = ("fp32", "tf32")


@contextmanager
def cuda_matmul_precision(precision: str):
    """Within the block, torch's float32 CUDA GEMMs (cuBLAS) use TF32 tensor cores for
    ``"tf32"`` and full float32 for ``"fp32"``, whatever the caller's global setting, which is
    restored on exit. Both of torch's switches are set, so they agree inside the block: the
    per-backend ``torch.backends.cuda.matmul.fp32_precision`` (torch >= 2.9) and the legacy
    ``torch.set_float32_matmul_precision`` (torch raises where they disagree and a GEMM or a
    getter reads the legacy one). The setting is read when a GEMM is launched, so a GEMM
    recorded into a CUDA graph keeps it. Like torch's switches themselves, it is process-wide:
    not for threads that run GEMMs at different precisions at the same time."""
    if precision not in CUBLAS_PRECISIONS:
        raise ValueError(f"cuBLAS computes precision 'fp32' or 'tf32', got {precision!r}")
    if _active and _active[-1] == precision:  # inside a block that set it already: no-op
        yield
        return
    _active.append(precision)
    try:
        with _set_cuda_matmul_precision(precision):
            yield
    finally:
        _active.pop()


_active: list = []  # precisions of the enclosing cuda_matmul_precision blocks (innermost last)


def gemm_precision(t: torch.Tensor, precision: str):
    """A context for a sequence of :func:`gemm_into` calls on ``t``'s device: on CUDA
    :func:`cuda_matmul_precision` (entered once for the whole sequence, so the calls inside
    skip it), elsewhere nothing."""
    return cuda_matmul_precision(precision) if t.is_cuda else nullcontext()


@contextmanager
def _set_cuda_matmul_precision(precision: str):
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")
    want_new, want_legacy = ("tf32", "high") if precision == "tf32" else ("ieee", "highest")
    prev_new = matmul.fp32_precision if new_api else None
    try:
        prev_legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # the caller's two switches disagree (torch refuses to read the legacy
        prev_legacy = None  # one then): it keeps the block's value afterwards
    if prev_legacy == want_legacy and prev_new in (None, want_new):
        yield
        return
    torch.set_float32_matmul_precision(want_legacy)
    if new_api:
        matmul.fp32_precision = want_new
    try:
        yield
    finally:
        if prev_legacy is not None:
            torch.set_float32_matmul_precision(prev_legacy)
        if new_api:
            matmul.fp32_precision = prev_new


def gemm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, precision: str = "fp32",
              alpha: float = 1.0, accumulate: bool = False) -> torch.Tensor:
    """``out = alpha * (a @ b)``, or ``out += alpha * (a @ b)`` with ``accumulate``, in place and
    without a temporary: one ``torch.mm(out=)`` / ``addmm_`` (cuBLAS's ``beta`` does the
    accumulation); for 3-D operands the batched product ``out[i] = alpha * (a[i] @ b[i])``, one
    ``torch.bmm(out=)`` / ``baddbmm_`` (any strides with a unit stride in each matrix, no
    copies; ``out`` contiguous). On CUDA the GEMM runs at ``precision`` through :func:`cuda_matmul_precision`
    (TF32 tensor cores for ``"tf32"``); on the CPU ``"tf32"`` is emulated by rounding the
    operands, like :func:`mm`. ``precision`` is ``"fp32"`` or ``"tf32"``."""
    if out.is_cuda:
        with cuda_matmul_precision(precision):
            return _gemm(out, a, b, alpha, accumulate)
    if precision not in CUBLAS_PRECISIONS:
        raise ValueError(f"gemm_into computes precision 'fp32' or 'tf32', got {precision!r}")
    rnd = operand_rounder(precision)
    return _gemm(out, rnd(a), rnd(b), alpha, accumulate)


def _gemm(out, a, b, alpha, accumulate):
    if out.dim() == 3:  # batched: cuBLAS's strided-batched GEMM
        if accumulate:
            return out.baddbmm_(a, b, alpha=alpha)
        if alpha == 1.0:
            return torch.bmm(a, b, out=out)
        return out.baddbmm_(a, b, beta=0.0, alpha=alpha)
    if accumulate:
        return out.addmm_(a, b, alpha=alpha)
    if alpha == 1.0:
        return torch.mm(a, b, out=out)
    return out.addmm_(a, b, beta=0.0, alpha=alpha)
