"""hebbian_update's Triton kernels against the reference, on the CPU under TRITON_INTERPRET=1.

The interpreter is slow: shapes stay small but still cover 1, primes and non-multiples of the
64 x 64 x 32 tiles. The variable is set before Triton compiles anything in this process.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import HEBBIAN_RULES, hebbian_update, hebbian_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, rel_err  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)

SHAPES = [(1, 1, 1), (5, 3, 2), (7, 13, 67), (33, 70, 130), (65, 17, 64)]


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Every torch.empty during the call returns NaNs, so an element a kernel forgets to write
    poisons the result instead of passing by luck."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", nan_empty)


@pytest.mark.parametrize("rule", sorted(HEBBIAN_RULES))
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_matches_reference(rule, shape, poisoned_empty):
    B, D, N = shape
    g = torch.Generator().manual_seed(B * 1000 + D * 10 + N)
    X = torch.rand(B, D, generator=g)
    W = torch.randn(N, D, generator=g) / math.sqrt(D)
    want = hebbian_update_reference(W.clone(), X, rule, lr=0.05)
    got = W.clone()
    assert hebbian_update(got, X, rule=rule, lr=0.05, backend="triton") is got
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


def test_triton_strided_inputs(poisoned_empty):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(70, 40, generator=g).t()  # (40, 70) view, column-major
    X = torch.rand(19, 140, generator=g)[:, ::2]
    want = hebbian_update_reference(W.clone(), X, "gha", lr=0.1)
    got = W.clone(memory_format=torch.preserve_format)
    W0 = got.clone()
    hebbian_update(got, X, rule="gha", lr=0.1, backend="triton")
    assert rel_err(got - W0, want - W0) <= RTOL_REDUCTION


def test_triton_rejects_float64():
    W = torch.randn(4, 3, dtype=torch.float64)
    X = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="W must have dtype float32, got torch.float64"):
        hebbian_update(W, X, backend="triton")
