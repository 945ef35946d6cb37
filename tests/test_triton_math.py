"""The Triton kernels' shared device functions (``kernels/_math.py``), under TRITON_INTERPRET=1.

``tanh`` feeds the hpca / nlpca_sym gates, ``pc_relax``'s tanh activation and every reservoir
step, so it must hold float32 accuracy over the whole range, small arguments included.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import hebbian_update, hebbian_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, rel_err  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)


triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
from bpalts.kernels._math import tanh  # noqa: E402


@triton.jit
def _tanh_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tanh(tl.load(x_ptr + offs, mask=mask)), mask=mask)


def _triton_tanh(x: torch.Tensor) -> torch.Tensor:
    y = torch.full_like(x, float("nan"))
    _tanh_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    return y


def test_tanh_is_float32_accurate_from_tiny_to_saturated_arguments():
    mags = torch.logspace(-30, 1.5, 4001)
    edges = torch.tensor([0.6249999, 0.625, 0.6250001, 9.0, 10.0, 100.0, 1e30])
    x = torch.cat([mags, -mags, edges, -edges])
    got = _triton_tanh(x).double()
    want = torch.tanh(x.double())
    rel = ((got - want).abs() / want.abs()).max().item()
    assert rel <= 4e-7, rel  # a few float32 ulp (the cancelling (1 - e) / (1 + e) alone: 1.0)


def test_tanh_keeps_zero_infinities_and_nan():
    x = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan")])
    got = _triton_tanh(x)
    assert got[:4].tolist() == [0.0, 0.0, 1.0, -1.0]
    assert torch.isnan(got[4])


@pytest.mark.parametrize("rule", ["hpca", "nlpca_sym"])
def test_tanh_gated_rules_with_tiny_weights_match_the_reference(rule, poisoned_empty):
    """Tiny currents U = X W^T: the gate tanh(U) ~ U must keep its relative accuracy (the
    cancelling formula gave 6e-4 here)."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(8, 16, generator=g) * 1e-6
    X = torch.randn(10, 16, generator=g)
    want = hebbian_update_reference(W.clone(), X, rule, 0.1) - W
    got = hebbian_update(W.clone(), X, rule, 0.1, backend="triton") - W
    assert rel_err(got, want) <= RTOL_REDUCTION
