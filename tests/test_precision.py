"""The ``precision="tf32"`` switch and ``currents=`` of the Hebbian ops (reference and C++).

TF32 on the CPU is emulated (operands rounded to a 10-bit mantissa, :mod:`bpalts._precision`),
so these tests check the emulation itself, that every backend at tf32 stays within DESIGN's tf32
tolerance (3e-3) of the fp32 reference, and the errors. The Triton side is in
``test_precision_triton.py``.
"""
from __future__ import annotations

import math

import pytest
import torch

import bpalts
from bpalts._precision import operand_rounder, round_tf32
from bpalts.ops import hebbian_update, hebbian_update_reference, softwta_update
from tests._compare_util import rel_err
from tests.test_hebbian_update import clone_kwargs, rule_kwargs

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")
RTOL_TF32 = 3e-3
DENSE_RULES = ["gha", "oja", "hpca", "nlpca_sym", "bcm"]


def _inputs(B, D, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g) / math.sqrt(D), torch.rand(B, D, generator=g)


def test_round_tf32_keeps_ten_mantissa_bits():
    x = torch.randn(10000, generator=torch.Generator().manual_seed(0)) * 1e3
    r = round_tf32(x)
    assert ((r - x).abs() <= x.abs() * 2.0**-11).all()  # round to nearest: half an ulp of 2^-10
    assert (r.view(torch.int32) & 0x1FFF == 0).all()  # the 13 low mantissa bits are clear
    assert (round_tf32(r) == r).all()  # idempotent
    ties = torch.tensor([1 + 2.0**-11, 1 + 3 * 2.0**-11, -(1 + 2.0**-11)])
    assert round_tf32(ties).tolist() == [1.0, 1 + 2.0**-9, -1.0]  # ties to even
    special = torch.tensor([float("inf"), float("-inf"), 0.0])
    assert round_tf32(special).tolist() == special.tolist()
    assert round_tf32(torch.tensor([float("nan")])).isnan().all()
    with pytest.raises(TypeError, match="float32"):
        round_tf32(x.double())


def test_operand_rounder():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    assert operand_rounder("fp32")(x) is x  # no copy on the fp32 path
    assert torch.equal(operand_rounder("tf32")(x), round_tf32(x))


def _tf32_vs_fp32(run, W, X):
    """The update at tf32 against the fp32 reference update."""
    want = run("reference", "fp32", W.clone()) - W
    got = run(None, "tf32", W.clone()) - W
    return rel_err(got, want)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("rule", DENSE_RULES)
@pytest.mark.parametrize("shape", [(7, 13, 5), (64, 97, 131)])
def test_hebbian_tf32_within_tolerance(backend, rule, shape):
    W, X = _inputs(*shape)
    kw = rule_kwargs(rule, W.shape[0])

    def run(b, precision, Wc):
        return hebbian_update(Wc, X, rule, 0.05, backend=b or backend, precision=precision, **clone_kwargs(kw))

    err = _tf32_vs_fp32(run, W, X)
    # within tolerance, and tf32 is really used: the update differs from fp32's by ~1e-4..1e-3
    assert 1e-6 < err <= RTOL_TF32, err


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("shape", [(7, 13, 5), (64, 97, 131)])
def test_softwta_tf32_within_tolerance(backend, shape):
    W, X = _inputs(*shape, seed=1)

    def run(b, precision, Wc):
        return softwta_update(Wc, X, 0.05, 1.0, backend=b or backend, precision=precision)

    err = _tf32_vs_fp32(run, W, X)
    assert 1e-6 < err <= RTOL_TF32, err


@CPP
@pytest.mark.parametrize("rule", DENSE_RULES)
def test_cpp_tf32_matches_reference_tf32(rule):
    W, X = _inputs(33, 70, 130, seed=2)
    kw = rule_kwargs(rule, W.shape[0])
    want = hebbian_update_reference(W.clone(), X, rule, 0.05, precision="tf32", **clone_kwargs(kw)) - W
    got = hebbian_update(W.clone(), X, rule, 0.05, backend="cpp", precision="tf32", **clone_kwargs(kw)) - W
    # Not bit-equal: the C++ path rounds the operands of its own GEMMs (e.g. gha's residual form).
    assert rel_err(got, want) <= RTOL_TF32


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("rule", DENSE_RULES + ["instar", "krotov"])
def test_tf32x3_is_fp32_on_cpu_backends(backend, rule):
    # the CPU backends have no tensor cores: tf32x3 (fp32-level accuracy) runs the fp32 path
    W, X = _inputs(17, 40, 33, seed=3)
    kw = rule_kwargs(rule, W.shape[0])
    want = hebbian_update(W.clone(), X, rule, 0.05, backend=backend, **clone_kwargs(kw))
    got = hebbian_update(W.clone(), X, rule, 0.05, backend=backend, precision="tf32x3", **clone_kwargs(kw))
    assert torch.equal(got, want)
    want = softwta_update(W.clone(), X, 0.05, 1.0, backend=backend)
    assert torch.equal(softwta_update(W.clone(), X, 0.05, 1.0, backend=backend, precision="tf32x3"), want)


@pytest.mark.parametrize("op", ["hebbian", "softwta"])
def test_precision_errors(op):
    W, X = _inputs(4, 5, 3)
    call = (lambda **k: hebbian_update(W.clone(), X, "gha", 0.1, **k)) if op == "hebbian" else (
        lambda **k: softwta_update(W.clone(), X, 0.1, 1.0, **k))
    with pytest.raises(ValueError, match="precision must be one of"):
        call(precision="bf17")
    for precision in ("tf32", "tf32x3"):
        with pytest.raises(TypeError, match=f"precision='{precision}' needs float32"):
            if op == "hebbian":
                hebbian_update(W.double(), X.double(), "gha", 0.1, precision=precision)
            else:
                softwta_update(W.double(), X.double(), 0.1, 1.0, precision=precision)


# ----------------------------------------------------------------------------- currents=

@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("rule,params", [("instar", {}), ("instar", dict(k=3)), ("krotov", {}),
                                         ("krotov", dict(p=3.0, k=4))])
def test_currents_give_the_same_update(backend, rule, params):
    W, X = _inputs(17, 97, 131, seed=3)
    p = params.get("p", 2.0)
    Wt = W if p == 2.0 else W.sign() * W.abs().pow(p - 1.0)
    U = X @ Wt.T
    want = hebbian_update(W.clone(), X, rule, 0.05, backend=backend, **params)
    got = hebbian_update(W.clone(), X, rule, 0.05, backend=backend, currents=U, **params)
    assert rel_err(got - W, want - W) <= 1e-5


def test_currents_errors():
    W, X = _inputs(6, 5, 4)
    U = X @ W.T
    with pytest.raises(ValueError, match="currents applies only to rules"):
        hebbian_update(W.clone(), X, "gha", 0.1, currents=U)
    with pytest.raises(ValueError, match=r"currents must be \(batch, units\) = \(6, 4\)"):
        hebbian_update(W.clone(), X, "instar", 0.1, currents=U[:, :3])
    with pytest.raises(TypeError, match="currents has dtype"):
        hebbian_update(W.clone(), X, "instar", 0.1, currents=U.double())
    bad = U.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="currents"):
        hebbian_update(W.clone(), X, "instar", 0.1, currents=bad)


# ----------------------------------------------------------------- cuBLAS precision switch
_NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


@pytest.fixture
def matmul_settings_restored():
    yield
    torch.set_float32_matmul_precision("highest")
    if _NEW_API:
        torch.backends.cuda.matmul.fp32_precision = "none"


def _settings():
    """(legacy getter, new switch, what a GEMM's legacy check says) -- 'ERR' where torch raises."""
    def read(f):
        try:
            return f()
        except RuntimeError:
            return "ERR"
    return (read(torch.get_float32_matmul_precision),
            torch.backends.cuda.matmul.fp32_precision if _NEW_API else None,
            read(torch._C._get_cublas_allow_tf32))


@pytest.mark.parametrize("user", ["default", "legacy high", "legacy medium", "new tf32"])
def test_cuda_matmul_precision_sets_both_switches_and_restores(user, matmul_settings_restored):
    from bpalts._precision import cuda_matmul_precision

    if user.startswith("legacy"):
        torch.set_float32_matmul_precision(user.split()[1])
    elif user == "new tf32":
        if not _NEW_API:
            pytest.skip("torch without torch.backends.cuda.matmul.fp32_precision")
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    before = _settings()
    for precision, inside in (("fp32", ("highest", "ieee", False)), ("tf32", ("high", "tf32", True))):
        with cuda_matmul_precision(precision):
            got = _settings()
            assert got == (inside if _NEW_API else (inside[0], None, inside[2]))
            with cuda_matmul_precision(precision):  # nested, same: nothing changes
                assert _settings() == got
            other = "tf32" if precision == "fp32" else "fp32"
            with cuda_matmul_precision(other):  # nested, different: switched, then back
                assert _settings()[0] != got[0]
            assert _settings() == got
        after = _settings()
        if user == "new tf32":
            # torch refuses to read the legacy switch while the two disagree; the new one is restored
            assert after[1] == "tf32"
        else:
            assert after == before


def test_gemm_into_on_the_cpu():
    from bpalts._precision import gemm_into

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(9, 7, generator=g).T  # b transposed view
    out = torch.full((5, 9), float("nan"))
    assert gemm_into(out, a, b) is out and torch.allclose(out, a @ b)  # NaN in out ignored
    gemm_into(out, a, b, alpha=-2.0, accumulate=True)
    assert torch.allclose(out, -(a @ b), atol=1e-6)
    gemm_into(out, a, b, "tf32", alpha=0.5)
    assert torch.equal(out, 0.5 * (round_tf32(a) @ round_tf32(b)))
    with pytest.raises(ValueError, match="precision 'fp32' or 'tf32', got 'tf32x3'"):
        gemm_into(out, a, b, "tf32x3")
    from bpalts._precision import cuda_matmul_precision
    with pytest.raises(ValueError, match="precision 'fp32' or 'tf32', got 'bf16'"):
        with cuda_matmul_precision("bf16"):
            pass

def test_gemm_into_batched_on_the_cpu():
    """gemm_into on 3-D operands (batched): strided batch views (no copies needed), NaN in out
    ignored, accumulate, alpha, emulated tf32."""
    from bpalts._precision import gemm_into

    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 3 * 4, generator=g).unflatten(1, (3, 4)).transpose(0, 1)  # (3, 5, 4)
    b = torch.randn(3, 6, 4, generator=g).transpose(1, 2)  # (3, 4, 6), transposed matrices
    out = torch.full((3, 5, 6), float("nan"))
    assert gemm_into(out, a, b) is out and torch.allclose(out, a @ b)
    gemm_into(out, a, b, alpha=-2.0, accumulate=True)
    assert torch.allclose(out, -(a @ b), atol=1e-6)
    out.fill_(float("nan"))
    gemm_into(out, a, b, "tf32", alpha=0.5)
    assert torch.equal(out, 0.5 * torch.bmm(round_tf32(a), round_tf32(b)))
    with pytest.raises(ValueError, match="precision 'fp32' or 'tf32', got 'tf32x3'"):
        gemm_into(out, a, b, "tf32x3")

