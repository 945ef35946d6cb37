"""softwta_update's Triton kernels against the reference, on the CPU under TRITON_INTERPRET=1.

The interpreter is slow: shapes stay small but still cover 1, primes and non-multiples of the
tiles (32 x 64 x 32 forward, 64 x 64 x 32 update). The variable is set before Triton compiles
anything in this process.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import itertools  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import softwta_update, softwta_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, rel_err  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)

SHAPES = [(1, 1, 1), (7, 13, 5), (17, 97, 131), (64, 33, 257)]
FLAGS = list(itertools.product([False, True], repeat=3))  # anti_hebbian, adaptive_lr, max_normalize


def _flag_id(f):
    return "".join(n if on else "-" for n, on in zip(("A", "L", "M"), f))


def _inputs(B, D, N, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, D, generator=g)
    W = torch.randn(N, D, generator=g)
    # Row norms away from 1 (the adaptive rate is 0 there and ill-conditioned near it).
    norms = torch.rand(N, 1, generator=g) * 0.5 + 0.3
    norms += (torch.rand(N, 1, generator=g) < 0.5) * 1.0
    return W / W.norm(dim=1, keepdim=True) * norms, X


def _check(W, X, **kw):
    want = softwta_update_reference(W.clone(), X, **kw)
    got = W.clone(memory_format=torch.preserve_format)
    assert softwta_update(got, X, backend="triton", **kw) is got
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape, flags, poisoned_empty):
    W, X = _inputs(*shape, seed=shape[0] * 1000 + shape[1] * 10 + shape[2])
    _check(W, X, lr=0.05, temperature=0.7, anti_hebbian=flags[0], adaptive_lr=flags[1],
           max_normalize=flags[2])


@pytest.mark.parametrize("max_normalize", [False, True])
def test_triton_separate_row_stats_kernel(max_normalize, monkeypatch, poisoned_empty):
    # Many unit tiles per row: the row statistics get their own kernel instead of being folded
    # inside the update kernel. Forced here on a small shape (3 unit tiles, 32 rows per block).
    from bpalts.kernels import softwta_update as tk

    monkeypatch.setattr(tk, "STATS_INLINE_MAX_TILES", 1)
    W, X = _inputs(37, 19, 150, seed=9)
    _check(W, X, lr=0.05, temperature=0.5, max_normalize=max_normalize)


@pytest.mark.parametrize("tau", [0.05, 20.0])
def test_triton_temperatures(tau, poisoned_empty):
    W, X = _inputs(9, 30, 70, seed=12)
    _check(W, X, lr=0.1, temperature=tau)


def test_triton_strided_inputs(poisoned_empty):
    g = torch.Generator().manual_seed(1)
    W = (torch.randn(70, 40, generator=g) / math.sqrt(70) * 1.7).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    _check(W, X, lr=0.1)
    _check(W, X, lr=0.1, max_normalize=False)


def test_triton_rejects_float64():
    W = torch.randn(4, 3, dtype=torch.float64)
    X = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="W must have dtype float32, got torch.float64"):
        softwta_update(W, X, backend="triton")


@pytest.mark.parametrize("precision", ["fp32", "tf32", "tf32x3"])
@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 5), (9, 300, 1100)], ids=lambda s: "x".join(map(str, s)))
def test_cublas_path_matches_reference(shape, flags, precision, monkeypatch, poisoned_empty):
    """CUBLAS_MIN_MACS: both GEMMs in torch (cuBLAS on a GPU; tf32 emulated on both sides here;
    tf32x3 as TF32 GEMMs of split operands against the fp32 reference), _cublas_gate_kernel
    (1100 units: 3 chunks of the online softmax; 9 rows: 3 programs of 4 rows, the last one
    partial), _cublas_dw_kernel (300 features: 2 chunks)."""
    from bpalts.kernels import softwta_update as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32X3", 1)
    monkeypatch.setattr(tk, "SPLIT_K", 2)  # not with tf32x3 (one GEMM of split operands)
    monkeypatch.setattr(tk, "_forward_kernel", None)  # the fused Triton GEMMs must not run
    monkeypatch.setattr(tk, "_update_kernel", None)
    W, X = _inputs(*shape, seed=shape[0] * 1000 + shape[1] * 10 + shape[2] + 1)
    kw = dict(lr=0.05, temperature=0.7, anti_hebbian=flags[0], adaptive_lr=flags[1],
              max_normalize=flags[2], precision=precision)
    want = softwta_update_reference(W.clone(), X, **kw)
    got = W.clone()
    softwta_update(got, X, backend="triton", **kw)
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


def test_cublas_path_ties_strides_and_where_it_applies(monkeypatch, poisoned_empty):
    """Ties in U go to the first unit (as torch.argmax), across the gate kernel's chunks;
    strided W and X; from CUBLAS_MIN_MACS (fp32) / CUBLAS_MIN_MACS_TF32 (tf32) = B * N * F on,
    not for tf32x3 (CUBLAS_MIN_MACS_TF32X3 = 0: never)."""
    from bpalts.kernels import softwta_update as tk

    calls = []
    real = tk._softwta_update_cublas
    monkeypatch.setattr(tk, "_softwta_update_cublas", lambda *a: (calls.append(a[-1]), real(*a)))
    monkeypatch.setattr(tk, "GATE_BN", 16)  # 3 chunks of 16 units over 40
    W = torch.zeros(40, 3)
    W[[5, 21, 37], 0] = 1.0  # three tied winners for every sample, in different chunks
    W[:, 1:] = 0.01 * torch.arange(80.0).view(40, 2).sin()
    X = torch.zeros(6, 3)
    X[:, 0] = 1.0
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 1)
    want = softwta_update_reference(W.clone(), X, lr=0.1)
    got = W.clone()
    softwta_update(got, X, lr=0.1, backend="triton")
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION
    g = torch.Generator().manual_seed(1)
    W = (torch.randn(70, 40, generator=g) / math.sqrt(70) * 1.7).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 19 * 40 * 70)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 19 * 40 * 70)
    for precision, used in (("fp32", True), ("tf32", True), ("tf32x3", False)):
        n = len(calls)
        for mx in (True, False):
            want = softwta_update_reference(W.clone(), X, lr=0.1, max_normalize=mx,
                                            precision="tf32" if precision == "tf32" else "fp32")
            got = W.clone(memory_format=torch.preserve_format)
            softwta_update(got, X, lr=0.1, max_normalize=mx, backend="triton", precision=precision)
            assert rel_err(got - W, want - W) <= RTOL_REDUCTION
        assert (len(calls) > n) == used, precision
    assert calls == ["fp32"] * 3 + ["tf32"] * 2  # the ties' call, then fp32 and tf32
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 19 * 40 * 70 + 1)
    softwta_update(W.clone(), X, lr=0.1, backend="triton")
    assert len(calls) == 5
    softwta_update(W.clone(), X, lr=0.1, backend="triton", precision="tf32")  # its own threshold
    assert len(calls) == 6
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 19 * 40 * 70 + 1)
    softwta_update(W.clone(), X, lr=0.1, backend="triton", precision="tf32")
    assert len(calls) == 6


def test_cublas_tf32x3_is_float32_accurate(monkeypatch, poisoned_empty):
    """The cuBLAS path at tf32x3 (CUBLAS_MIN_MACS_TF32X3): the split operands are TF32-exact, so
    the CPU's TF32 emulation forms the tensor cores' (exact) products; only the accumulation's
    rounding differs (bench/gpu.py checks that on a GPU). Against float64 its update is as
    accurate as fp32's (the cuBLAS path's and the reference's), and far more than tf32's; W's
    rows may be strided."""
    from bpalts.kernels import softwta_update as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32X3", 1)
    g = torch.Generator().manual_seed(5)
    W = (torch.randn(300, 90, generator=g) / math.sqrt(300) * 1.7).t()  # (90, 300), column-major
    X = torch.rand(48, 300, generator=g)
    kw = dict(lr=0.05, temperature=0.5)
    exact = softwta_update_reference(W.double(), X.double(), **kw) - W.double()
    err = {}
    for precision in ("fp32", "tf32", "tf32x3"):
        got = W.clone(memory_format=torch.preserve_format)
        softwta_update(got, X, backend="triton", precision=precision, **kw)
        err[precision] = rel_err((got - W).double(), exact)
    err["reference"] = rel_err((softwta_update_reference(W.clone(), X, **kw) - W).double(), exact)
    assert err["tf32x3"] < 4 * max(err["fp32"], err["reference"]), err
    assert err["tf32"] > 30 * err["tf32x3"], err


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("split", [2, 3, 4])
@pytest.mark.parametrize("strided", [False, True])
def test_cublas_split_k(split, strided, precision, monkeypatch, poisoned_empty):
    """SPLIT_K: the cuBLAS path's U = X W^T as SPLIT_K batched parts over strided views of X and
    W, summed by the gate kernel as it reads them; F = 60 splits into 2, 3 and 4 (4: 15 each);
    where F does not divide (F = 62) one GEMM runs."""
    from bpalts.kernels import softwta_update as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 1)
    monkeypatch.setattr(tk, "SPLIT_K", split)
    monkeypatch.setattr(tk, "_forward_kernel", None)
    gemms = []
    real = tk.gemm_into
    monkeypatch.setattr(tk, "gemm_into", lambda out, *a, **k: (gemms.append(out.dim()), real(out, *a, **k))[1])
    for F in (60, 62):
        g = torch.Generator().manual_seed(F + split)
        if strided:
            W = (torch.randn(F, 37, generator=g) / math.sqrt(F) * 1.7).t()  # column-major
            X = torch.rand(11, 2 * F, generator=g)[:, ::2]
        else:
            W = torch.randn(37, F, generator=g) / math.sqrt(F) * 1.7
            X = torch.rand(11, F, generator=g)
        for mx in (True, False):
            want = softwta_update_reference(W.clone(), X, lr=0.1, max_normalize=mx, precision=precision)
            got = W.clone(memory_format=torch.preserve_format)
            del gemms[:]
            softwta_update(got, X, lr=0.1, backend="triton", max_normalize=mx, precision=precision)
            assert rel_err(got - W, want - W) <= RTOL_REDUCTION, (F, mx)
            split_used = F % split == 0
            assert gemms[0] == (3 if split_used else 2), (F, gemms)
