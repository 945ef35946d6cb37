"""softwta_conv_update's Triton kernels against the reference, on the CPU under TRITON_INTERPRET=1.

The interpreter is slow: shapes stay small but cover C_out 1 and primes, channel counts that are
not multiples of the gate's channel chunk (32) and pixel counts that are not multiples of its
pixel block (64), several programs per image, and rows not a multiple of the prep block (16).
Every torch.empty is poisoned (fixture ``poisoned_empty``) so an unwritten element fails.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import itertools  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import softwta_conv_update, softwta_conv_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, rel_err  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)

# (B, C_in, H, W, C_out, k, stride, padding)
GEOMS = [
    (1, 1, 1, 1, 1, 1, 1, 0),
    (2, 1, 5, 5, 1, 5, 1, 0),
    (3, 2, 7, 5, 7, 3, 1, 1),
    (2, 3, 9, 11, 13, 3, 2, 0),
    (2, 1, 11, 9, 37, 5, 1, 2),  # 99 pixels: 2 pixel blocks; 37 channels: 2 chunks
    (1, 2, 12, 12, 67, 3, 1, 1),  # 144 pixels: 3 pixel blocks; 67 channels: 3 chunks
]
FLAGS = list(itertools.product([False, True], repeat=3))  # anti_hebbian, adaptive_lr, max_normalize


def _flag_id(f):
    return "".join(n if on else "-" for n, on in zip(("A", "L", "M"), f))


def _geom_id(g):
    return "B{}c{}_{}x{}_o{}k{}s{}p{}".format(*g)


def _inputs(B, C_in, H, Wd, C_out, k, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, C_in, H, Wd, generator=g)
    W = torch.randn(C_out, C_in, k, k, generator=g)
    # Channel norms away from 1 (the adaptive rate is 0 there and ill-conditioned near it).
    norms = torch.rand(C_out, 1, 1, 1, generator=g) * 0.5 + 0.3
    norms += (torch.rand(C_out, 1, 1, 1, generator=g) < 0.5) * 1.0
    return W / W.flatten(1).norm(dim=1)[:, None, None, None] * norms, X


def _check(W, X, **kw):
    want = softwta_conv_update_reference(W.clone(), X, **kw)
    got = W.clone(memory_format=torch.preserve_format)
    assert softwta_conv_update(got, X, backend="triton", **kw) is got
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


@pytest.mark.parametrize("geom", GEOMS, ids=_geom_id)
def test_triton_matches_reference(geom, poisoned_empty):
    B, C_in, H, Wd, C_out, k, stride, padding = geom
    W, X = _inputs(B, C_in, H, Wd, C_out, k, seed=sum(geom))
    _check(W, X, lr=0.05, temperature=0.7, stride=stride, padding=padding)


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
def test_triton_flags(flags, poisoned_empty):
    W, X = _inputs(2, 3, 9, 8, 19, 3, seed=7)
    _check(W, X, lr=0.05, temperature=0.7, stride=(1, 2), padding=(1, 0), anti_hebbian=flags[0],
           adaptive_lr=flags[1], max_normalize=flags[2])


@pytest.mark.parametrize("tau", [0.05, 20.0])
def test_triton_temperatures(tau, poisoned_empty):
    W, X = _inputs(2, 2, 8, 8, 41, 3, seed=12)
    _check(W, X, lr=0.1, temperature=tau, padding=1)


def test_triton_strided_inputs(poisoned_empty):
    W, X = _inputs(2, 4, 7, 7, 11, 3, seed=3)
    Wt = W.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last view
    Xs = torch.randn(2, 8, 7, 14)[:, ::2, :, ::2]
    want = softwta_conv_update_reference(W.clone(), Xs, lr=0.1, padding=1)
    softwta_conv_update(Wt, Xs, lr=0.1, padding=1, backend="triton")
    assert not Wt.is_contiguous()
    assert rel_err(Wt - W, want - W) <= RTOL_REDUCTION


def test_triton_rejects_float64():
    W = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    X = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="W must have dtype float32, got torch.float64"):
        softwta_conv_update(W, X, backend="triton")
