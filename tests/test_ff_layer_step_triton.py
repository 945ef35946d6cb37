"""ff_layer_step's Triton kernels against the reference, on the CPU under TRITON_INTERPRET=1.

Small shapes (the interpreter is slow) that still cover 1, primes and non-multiples of the tiles
(forward 32 x 64 x 32, gradient 64 x 64 x 32, 64 rows per coefficient program)."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops.ff_layer_step import ff_layer_step, ff_layer_step_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION  # noqa: E402
from tests.test_ff_layer_step import compare, inputs  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)

SHAPES = [(1, 1, 1, 1), (7, 13, 29, 37), (33, 70, 70, 130)]


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("offsets", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape, offsets, normalize, poisoned_empty):
    W, b, xp, xn, theta, op, on = inputs(*shape, seed=sum(shape), offsets=offsets)
    want = ff_layer_step_reference(W, b, xp, xn, theta, op, on, 1e-8, normalize)
    got = ff_layer_step(W, b, xp, xn, theta, op, on, normalize=normalize, backend="triton")
    compare(got, want, RTOL_REDUCTION)


@pytest.mark.parametrize("theta", [-50.0, 1e4])
def test_triton_saturated_thresholds(theta):
    W, b, xp, xn, _, _, _ = inputs(9, 11, 30, 40, seed=2)
    compare(ff_layer_step(W, b, xp, xn, theta, backend="triton"),
            ff_layer_step_reference(W, b, xp, xn, theta), RTOL_REDUCTION)


def test_triton_strided_inputs(poisoned_empty):
    W, b, xp, xn, theta, _, _ = inputs(12, 9, 40, 23, seed=4)
    Wt = W.t().contiguous().t()
    xps = torch.rand(12, 80)[:, ::2]
    xnt = xn.t().contiguous().t()
    compare(ff_layer_step(Wt, b, xps, xnt, theta, backend="triton"),
            ff_layer_step_reference(W, b, xps, xn, theta), RTOL_REDUCTION)


def test_triton_rejects_float64():
    W, b, xp, xn, theta, _, _ = inputs(2, 2, 3, 4, torch.float64)
    with pytest.raises(TypeError, match="W must have dtype float32, got torch.float64"):
        ff_layer_step(W, b, xp, xn, theta, backend="triton")


def test_triton_more_unit_tiles_than_one_coefficient_block(poisoned_empty):
    """N = 1100: 18 forward unit tiles, so the coefficient kernel's loop over the partial goodness
    runs twice (BLOCK_T = 16). This is the shape class (N > 1024) at which Triton 3.6 failed to
    compile the kernel's old form on an H200."""
    W, b, xp, xn, theta, op, on = inputs(3, 2, 5, 1100, seed=11, offsets=True)
    want = ff_layer_step_reference(W, b, xp, xn, theta, op, on, 1e-8, True)
    got = ff_layer_step(W, b, xp, xn, theta, op, on, backend="triton")
    compare(got, want, RTOL_REDUCTION)
