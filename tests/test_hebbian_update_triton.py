"""hebbian_update's Triton kernels against the reference, on the CPU under TRITON_INTERPRET=1.

The interpreter is slow: shapes stay small but still cover 1, primes and non-multiples of the
64 x 64 x 32 tiles (and of the ranking kernel's 256-wide row chunks, via the parameter cases).
The variable is set before Triton compiles anything in this process.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import HEBBIAN_RULES, hebbian_update, hebbian_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, LaunchSpy, rel_err  # noqa: E402
from tests.test_hebbian_update import (  # noqa: E402
    PARAM_CASES,
    _params_for,
    check_against_reference,
    clone_kwargs,
    min_units,
    rule_kwargs,
    theta_of,
    tie_inputs,
)

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)

SHAPES = [(1, 1, 1), (5, 3, 2), (7, 13, 67), (33, 70, 130), (65, 17, 64)]


def _inputs(B, D, N):
    g = torch.Generator().manual_seed(B * 1000 + D * 10 + N)
    X = torch.rand(B, D, generator=g)
    W = torch.randn(N, D, generator=g) / math.sqrt(D)
    return W, X


@pytest.mark.parametrize("rule", sorted(HEBBIAN_RULES))
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_matches_reference(rule, shape, poisoned_empty):
    W, X = _inputs(*shape)
    if shape[2] < min_units(rule):
        with pytest.raises(ValueError, match=f"rule '{rule}' needs at least 2 units"):
            hebbian_update(W, X, rule=rule, backend="triton")
        return
    check_against_reference(W, X, rule, "triton", RTOL_REDUCTION)


# Odd shapes for the parameter cases; (3, 9, 300) has rows longer than one 256-wide ranking chunk.
PARAM_SHAPES_TRITON = [(1, 5, 5), (7, 13, 6), (5, 9, 300)]


# k = units on the 300-wide rows would take 300 interpreted passes: the small shapes cover it.
@pytest.mark.parametrize("rule,params,shape", [
    (rule, params, shape) for shape in PARAM_SHAPES_TRITON for rule, params in PARAM_CASES
    if not (shape[2] > 64 and params.get("k") == "N")
])
def test_triton_rule_params(rule, params, shape, poisoned_empty):
    W, X = _inputs(*shape)
    check_against_reference(W, X, rule, "triton", RTOL_REDUCTION, **_params_for(params, shape[2]))


@pytest.mark.parametrize("rule,params", [("instar", {}), ("instar", dict(k=4)), ("krotov", {}),
                                         ("krotov", dict(k=6, p=3.0))])
def test_triton_ties_go_to_the_lower_unit(rule, params, poisoned_empty):
    W, X = tie_inputs()
    want = hebbian_update_reference(W.clone(), X, rule, 0.5, **params)
    got = hebbian_update(W.clone(), X, rule, 0.5, backend="triton", **params)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rule,params", [("instar", dict(k=2)), ("krotov", {})])
def test_triton_sparse_rules_touch_only_selected_rows(rule, params):
    W, X = _inputs(3, 20, 131)
    got = hebbian_update(W.clone(), X, rule, 0.1, backend="triton", **params)
    changed = (got != W).any(dim=1)
    assert 1 <= int(changed.sum()) <= 6


def test_triton_strided_inputs(poisoned_empty):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(70, 40, generator=g).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    want = hebbian_update_reference(W.clone(), X, "gha", lr=0.1)
    got = W.clone(memory_format=torch.preserve_format)
    W0 = got.clone()
    hebbian_update(got, X, rule="gha", lr=0.1, backend="triton")
    assert rel_err(got - W0, want - W0) <= RTOL_REDUCTION


@pytest.mark.parametrize("rule", ["bcm", "instar", "krotov"])
def test_triton_strided_inputs_new_rules(rule, poisoned_empty):
    g = torch.Generator().manual_seed(2)
    W = torch.randn(70, 40, generator=g).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    kw = rule_kwargs(rule, 40, p=3.0) if rule == "krotov" else rule_kwargs(rule, 40)
    kw_ref, kw_got = clone_kwargs(kw), clone_kwargs(kw)
    if rule == "bcm":  # a strided threshold too
        kw_got["state"] = {"theta": torch.zeros(80)[::2].copy_(theta_of(kw))}
    want = hebbian_update_reference(W.clone(), X, rule, 0.1, **kw_ref)
    got = W.clone(memory_format=torch.preserve_format)
    W0 = got.clone()
    hebbian_update(got, X, rule=rule, lr=0.1, backend="triton", **kw_got)
    assert rel_err(got - W0, want - W0) <= RTOL_REDUCTION
    if rule == "bcm":
        th0 = theta_of(kw)
        assert rel_err(theta_of(kw_got) - th0, theta_of(kw_ref) - th0) <= RTOL_REDUCTION


def test_triton_rejects_float64():
    W = torch.randn(4, 3, dtype=torch.float64)
    X = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="W must have dtype float32, got torch.float64"):
        hebbian_update(W, X, backend="triton")


@pytest.mark.parametrize("rule", ["oja", "nlpca_sym", "gha"])
def test_subspace_rules_take_the_residual_form(rule, monkeypatch, poisoned_empty):
    # oja / nlpca_sym: G^T (X - G W) (a B x F residual, no N x N product); gha keeps tril(G^T G).
    # Also with a transposed (non-contiguous) X, whose strides the residual kernel reads.
    from bpalts.kernels import hebbian_update as tk

    spy = LaunchSpy(tk._matmul_kernel)
    monkeypatch.setattr(tk, "_matmul_kernel", spy)
    W, X = _inputs(19, 23, 37)
    Xt = X.T.contiguous().T
    want = hebbian_update_reference(W.clone(), X, rule, 0.1) - W
    got = hebbian_update(W.clone(), Xt, rule, 0.1, backend="triton") - W
    assert rel_err(got, want) < RTOL_REDUCTION
    resid = [k["RESID"] for k in spy.kwargs]
    assert resid == ([False, True] if rule != "gha" else [False, False])


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 67), (5, 9, 700)])  # 700 units: 3 tril panels
@pytest.mark.parametrize("rule,form", [("gha", "panels"), ("hpca", "panels"), ("gha", "blocks"),
                                       ("hpca", "blocks"), ("oja", None), ("nlpca_sym", None)])
def test_cublas_path_matches_reference(rule, form, shape, precision, monkeypatch, poisoned_empty):
    """CUBLAS_MIN_MACS: the dense rules' cuBLAS path (torch GEMMs; tf32 emulated on the CPU, on
    both sides), the hierarchical rules in both TRIL_FORMs (blocks of 16 units: 67 = 4 x 16 + 3,
    700 = 43 x 16 + 12, so full and partial blocks). The residual forms (subspace rules, tril
    blocks) round different products to TF32 than the reference's G^T X - (G^T G) W, so tf32 is
    held to the tf32 tolerance there."""
    from bpalts.kernels import hebbian_update as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 1)
    monkeypatch.setattr(tk, "TRIL_FORM", form or "panels")
    monkeypatch.setattr(tk, "TRIL_BLOCK", 16)
    monkeypatch.setattr(tk, "_matmul_kernel", None)  # the Triton GEMMs must not run
    monkeypatch.setattr(tk, "_apply_kernel", None)
    W, X = _inputs(*shape)
    if shape[2] < min_units(rule):
        return
    want = hebbian_update_reference(W.clone(), X, rule, 0.1, precision=precision) - W
    got = hebbian_update(W.clone(), X, rule, 0.1, backend="triton", precision=precision) - W
    residual = rule in ("oja", "nlpca_sym") or form == "blocks"
    tol = 3e-3 if precision == "tf32" and residual else RTOL_REDUCTION
    assert rel_err(got, want) < tol


def test_tril_blocks_size_and_memory_cap(monkeypatch):
    """_tril_blocks: TRIL_BLOCK units per block, more where the residuals (blocks x B x F
    floats) would pass TRIL_RESID_MAX_BYTES, at most N (one block: no residual GEMM at all);
    strided W and X; the result matches the reference in each case."""
    from bpalts.kernels import hebbian_update as tk

    monkeypatch.setattr(tk, "TRIL_BLOCK", 8)
    assert tk._tril_block_size(10, 50, 20) == 8  # 7 blocks x 10 x 20 x 4 bytes: far under the cap
    monkeypatch.setattr(tk, "TRIL_RESID_MAX_BYTES", 3 * 10 * 20 * 4)  # room for 3 blocks
    assert tk._tril_block_size(10, 50, 20) == 17  # ceil(50 / 3)
    monkeypatch.setattr(tk, "TRIL_RESID_MAX_BYTES", 1)
    assert tk._tril_block_size(10, 50, 20) == 50
    g = torch.Generator().manual_seed(5)
    W = torch.randn(20, 50, generator=g).t() * 0.2  # (50, 20), column-major
    X = torch.rand(10, 40, generator=g)[:, ::2]
    want = hebbian_update_reference(W.clone(), X, "gha", 0.1) - W
    for cap in (1, 3 * 10 * 20 * 4, 1 << 30):
        monkeypatch.setattr(tk, "TRIL_RESID_MAX_BYTES", cap)
        got = W.clone(memory_format=torch.preserve_format)
        tk._tril_blocks(got, X, X @ W.t(), 0.1 / 10, "fp32")
        assert rel_err(got - W, want) < RTOL_REDUCTION, cap


def test_cublas_path_only_where_it_applies(monkeypatch, poisoned_empty):
    """From CUBLAS_MIN_MACS (fp32) / CUBLAS_MIN_MACS_TF32 (tf32) = B * N * F on, not for tf32x3,
    bcm (its threshold) or the sparse rules; strided W and X."""
    from bpalts.kernels import hebbian_update as tk

    calls = []
    real = tk._hebbian_update_cublas
    monkeypatch.setattr(tk, "_hebbian_update_cublas", lambda *a: (calls.append(a[4:]), real(*a)))
    g = torch.Generator().manual_seed(3)
    W = torch.randn(70, 40, generator=g).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 19 * 40 * 70)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 19 * 40 * 70)
    for rule, precision, used in (("gha", "fp32", True), ("oja", "tf32", True),
                                  ("gha", "tf32x3", False), ("bcm", "fp32", False),
                                  ("instar", "fp32", False)):
        kw = rule_kwargs(rule, 40)
        want = hebbian_update_reference(W.clone(), X, rule, 0.1, **clone_kwargs(kw)) - W
        got = W.clone(memory_format=torch.preserve_format)
        n = len(calls)
        hebbian_update(got, X, rule, 0.1, backend="triton", precision=precision, **clone_kwargs(kw))
        assert rel_err(got - W, want) < (3e-3 if precision == "tf32" else RTOL_REDUCTION)
        assert (len(calls) > n) == used, (rule, precision)
    assert calls[0] == (0.1, "fp32") and calls[1] == (0.1, "tf32")
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 19 * 40 * 70 + 1)  # one short: the Triton path
    hebbian_update(W.clone(), X, "gha", 0.1, backend="triton")
    assert len(calls) == 2
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 0)  # each precision has its own threshold
    hebbian_update(W.clone(), X, "oja", 0.1, backend="triton", precision="tf32")
    assert len(calls) == 3
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 19 * 40 * 70 + 1)
    hebbian_update(W.clone(), X, "oja", 0.1, backend="triton", precision="tf32")
    assert len(calls) == 3


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("rule,params", [("instar", {}), ("instar", dict(k=3)), ("krotov", {}),
                                         ("krotov", dict(k=4, p=3.0)), ("krotov", dict(p=1.0))])
@pytest.mark.parametrize("shape", [(1, 1, 2), (7, 13, 67), (5, 9, 300)])
def test_sparse_rules_cublas_currents(rule, params, shape, precision, monkeypatch, poisoned_empty):
    """From CUBLAS_MIN_MACS (fp32) / CUBLAS_MIN_MACS_TF32 (tf32) multiply-adds the competitive
    rules' currents U = X W~^T come from cuBLAS (W~ formed first for p != 2; tf32 emulated on the
    CPU, on both sides), not from _matmul_kernel; the ranking and sparse apply are unchanged."""
    from bpalts.kernels import hebbian_update as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", 1)
    monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", 1)
    monkeypatch.setattr(tk, "_matmul_kernel", None)  # the Triton GEMM must not run
    W, X = _inputs(*shape)
    if params.get("k", 1) > shape[2]:
        return
    want = hebbian_update_reference(W.clone(), X, rule, 0.1, precision=precision, **params) - W
    got = hebbian_update(W.clone(), X, rule, 0.1, backend="triton", precision=precision, **params) - W
    # tf32: the reference also rounds the dense G^T X's operands; the sparse sums are in fp32
    assert rel_err(got, want) < (3e-3 if precision == "tf32" else RTOL_REDUCTION)


def test_sparse_rules_cublas_currents_only_where_they_apply(monkeypatch, poisoned_empty):
    """The currents' GEMM: cuBLAS from B * N * F = the precision's threshold on (fp32, tf32),
    _matmul_kernel one short of it, at tf32x3, and with a threshold of 0; strided W and X;
    given currents are used as they are (no GEMM at all)."""
    from bpalts.kernels import hebbian_update as tk

    spy = LaunchSpy(tk._matmul_kernel)
    monkeypatch.setattr(tk, "_matmul_kernel", spy)
    g = torch.Generator().manual_seed(4)
    W = torch.randn(70, 40, generator=g).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    macs = 19 * 40 * 70
    cases = [(macs, macs, "fp32", False), (macs, macs, "tf32", False), (macs, macs, "tf32x3", True),
             (macs + 1, macs, "fp32", True), (macs, macs + 1, "tf32", True), (0, 0, "fp32", True)]
    for fp32_min, tf32_min, precision, triton_gemm in cases:
        monkeypatch.setattr(tk, "CUBLAS_MIN_MACS", fp32_min)
        monkeypatch.setattr(tk, "CUBLAS_MIN_MACS_TF32", tf32_min)
        for rule in ("instar", "krotov"):
            ref_precision = "tf32" if precision == "tf32" else "fp32"
            want = hebbian_update_reference(W.clone(), X, rule, 0.1, precision=ref_precision) - W
            got = W.clone(memory_format=torch.preserve_format)
            n = len(spy.grids)
            hebbian_update(got, X, rule, 0.1, backend="triton", precision=precision)
            assert rel_err(got - W, want) < (3e-3 if precision == "tf32" else RTOL_REDUCTION)
            assert (len(spy.grids) > n) == triton_gemm, (fp32_min, tf32_min, precision, rule)
    U = X @ W.t()
    n = len(spy.grids)
    got = hebbian_update(W.clone(), X, "instar", 0.1, backend="triton", currents=U)
    assert len(spy.grids) == n
    assert rel_err(got - W, hebbian_update_reference(W.clone(), X, "instar", 0.1) - W) < RTOL_REDUCTION


@pytest.mark.parametrize("p", [1.2, 1.5, 3.0])
def test_krotov_pnorm_subnormal_weights(p, poisoned_empty):
    """The p-norm transform sign(w)|w|^(p-1) of subnormal weights (1e-40) is exact in the Triton
    GEMM's load (ln|w| taken after scaling by 2^64), not clamped: for p < 2 it is far from
    negligible (|1e-40|^0.5 = 1e-20), and inputs of 1e20 on those features make it count."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(12, 9, generator=g) * 0.3
    W[:, :4] = torch.randn(12, 4, generator=g) * 1e-40
    assert 0 < W[:, :4].abs().max() < torch.finfo(torch.float32).tiny  # subnormal
    X = torch.rand(6, 9, generator=g)
    X[:, :4] = 1e20
    want = hebbian_update_reference(W.clone(), X, "krotov", 0.1, p=p, k=3) - W
    got = hebbian_update(W.clone(), X, "krotov", 0.1, p=p, k=3, backend="triton") - W
    assert rel_err(got, want) < RTOL_REDUCTION
