"""hebbian_update: the C++ backend against the reference, and bad input on every path.

The Triton backend has its own module (test_hebbian_update_triton.py), run under the interpreter.
"""
from __future__ import annotations

import math

import pytest
import torch

import bpalts
from bpalts.ops import HEBBIAN_RULES, hebbian_update, hebbian_update_reference
from tests._compare_util import RTOL_REDUCTION, rel_err

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")

# (batch, features, units): 1s, primes, sizes that are not multiples of the C++ block (128) or
# strip (32) or the row group (4), and one of the benchmark sizes.
SHAPES = [(1, 1, 1), (1, 5, 3), (7, 13, 5), (3, 31, 129), (17, 97, 131), (64, 33, 257), (256, 784, 1024)]


def _inputs(B, D, N, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, D, generator=g, dtype=dtype)
    W = torch.randn(N, D, generator=g, dtype=dtype) / math.sqrt(D)
    return W, X


@CPP
@pytest.mark.parametrize("rule", sorted(HEBBIAN_RULES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpp_matches_reference(rule, shape, dtype):
    W, X = _inputs(*shape, dtype, seed=hash((rule, shape)) % 2**31)
    want = hebbian_update_reference(W.clone(), X, rule, lr=0.05)
    got = W.clone()
    out = hebbian_update(got, X, rule=rule, lr=0.05, backend="cpp")
    assert out is got  # in place, returns W
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    # Compare the updates, not the weights: the update is what the kernel computes.
    assert rel_err(got - W, want - W) <= tol
    assert torch.isfinite(got).all()


@CPP
def test_cpp_non_contiguous_inputs():
    W, X = _inputs(40, 70, 150, torch.float32, seed=3)
    Wt = W.t().contiguous().t()  # same values, column-major storage
    Xs = torch.rand(40, 140)[:, ::2]  # strided columns
    want = hebbian_update_reference(W.clone(), Xs, "gha", lr=0.1)
    hebbian_update(Wt, Xs, rule="gha", lr=0.1, backend="cpp")
    assert not Wt.is_contiguous()
    assert rel_err(Wt - W, want - W) <= RTOL_REDUCTION


@CPP
def test_cpp_is_deterministic():
    W, X = _inputs(64, 100, 300, torch.float32, seed=5)
    a, b = W.clone(), W.clone()
    hebbian_update(a, X, backend="cpp")
    hebbian_update(b, X, backend="cpp")
    assert torch.equal(a, b)


def test_reference_learns_principal_subspace():
    # GHA's rows converge to the leading eigenvectors of the input covariance, in order.
    g = torch.Generator().manual_seed(0)
    D = 8
    scales = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    W = torch.randn(3, D, generator=g, dtype=torch.float64) * 0.1
    for step in range(3000):
        X = (torch.randn(64, D, generator=g, dtype=torch.float64) * scales) @ Q.T
        hebbian_update(W, X, rule="gha", lr=0.01 if step < 2000 else 0.001, backend="reference")
    overlap = (W @ Q[:, :3]).abs()
    assert torch.allclose(overlap, torch.eye(3, dtype=torch.float64), atol=0.05)


# ---------------------------------------------------------------- bad input

def _ok():
    return torch.randn(5, 4), torch.rand(3, 4)


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_shapes(backend):
    W, X = _ok()
    with pytest.raises(ValueError, match=r"W must be 2-D \(units, features\)"):
        hebbian_update(W[0], X, backend=backend)
    with pytest.raises(ValueError, match=r"X must be 2-D \(batch, features\)"):
        hebbian_update(W, X[None], backend=backend)
    with pytest.raises(ValueError, match="X has 3 features but W expects 4"):
        hebbian_update(W, X[:, :3], backend=backend)
    with pytest.raises(ValueError, match="X has an empty batch dimension"):
        hebbian_update(W, X[:0], backend=backend)


def test_bad_dtypes():
    W, X = _ok()
    with pytest.raises(TypeError, match="W must have dtype float32 or float64, got torch.int64"):
        hebbian_update(W.long(), X)
    with pytest.raises(TypeError, match="X must have dtype float32 or float64, got torch.float16"):
        hebbian_update(W, X.half())
    with pytest.raises(TypeError, match="X has dtype torch.float64 but W has torch.float32"):
        hebbian_update(W, X.double())
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        hebbian_update(W.numpy(), X)


def test_mixed_devices():
    W, X = _ok()
    with pytest.raises(ValueError, match="X is on meta but W is on cpu"):
        hebbian_update(W, X.to("meta"))


def test_non_finite_values():
    W, X = _ok()
    X[1, 2] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        hebbian_update(W, X)
    W, X = _ok()
    W[0, 0] = float("inf")
    with pytest.raises(ValueError, match="W contains NaN or infinite values"):
        hebbian_update(W, X)
    W, X = _ok()
    for lr in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be finite"):
            hebbian_update(W, X, lr=lr)
    with pytest.raises(TypeError, match="lr must be a real number"):
        hebbian_update(W, X, lr="0.1")


def test_unknown_rule_and_backend():
    W, X = _ok()
    with pytest.raises(ValueError, match=r"rule must be one of \('gha', 'hpca', 'oja'\)|rule must be one of"):
        hebbian_update(W, X, rule="sanger")
    with pytest.raises(ValueError, match="backend must be one of .*got 'cuda'"):
        hebbian_update(W, X, backend="cuda")


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    W, X = _ok()
    with pytest.raises(ValueError, match="triton backend needs CUDA tensors or TRITON_INTERPRET=1"):
        hebbian_update(W, X, backend="triton")


def test_no_change_on_error():
    W, X = _ok()
    before = W.clone()
    X[0, 0] = float("nan")
    with pytest.raises(ValueError):
        hebbian_update(W, X)
    assert torch.equal(W, before)
