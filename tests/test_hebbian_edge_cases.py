"""Hebbian ops at their edges: the smallest temperatures the SoftHebb ops accept, an ``X`` that
shares memory with the ``W`` updated in place, NumPy integers as the conv op's geometry.

Every backend available on the CPU (Triton under TRITON_INTERPRET=1, set before Triton compiles
anything in this process, as the Triton test modules do).
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import hebbian_update  # noqa: E402
from bpalts.ops.hebbian_update import hebbian_state  # noqa: E402
from bpalts.ops.softwta_conv_update import softwta_conv_update  # noqa: E402
from bpalts.ops.softwta_update import softwta_update  # noqa: E402
from tests._compare_util import rel_err  # noqa: E402

BACKENDS = bpalts.available_backends("cpu")
FAST = [b for b in BACKENDS if b != "reference"]


# -- SoftHebb's reference at the smallest temperatures the ops accept --------------------------

@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # (u - max) / tau -> -inf: exp 0
def test_softwta_reference_is_finite_at_tiny_temperature():
    """The ops accept any temperature whose inverse is finite; the reference divided U by it
    before the softmax, which overflowed to inf (NaN weights) where the fast backends, which
    subtract the row max first, stayed finite."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 7, generator=g)
    X = torch.randn(4, 7, generator=g) * 30
    tau = 1e-38  # 1 / tau = 1e38 < float32 max, |U| / tau > float32 max
    ref = softwta_update(W.clone(), X, temperature=tau, backend="reference")
    assert torch.isfinite(ref).all()
    for b in FAST:
        out = softwta_update(W.clone(), X, temperature=tau, backend=b)
        assert rel_err(out, ref) <= 1e-5, b


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # (u - max) / tau -> -inf: exp 0
def test_softwta_conv_reference_is_finite_at_tiny_temperature():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 2, 3, 3, generator=g)
    X = torch.randn(2, 2, 6, 6, generator=g) * 30
    tau = 1e-38
    ref = softwta_conv_update(W.clone(), X, temperature=tau, padding=1, backend="reference")
    assert torch.isfinite(ref).all()
    for b in FAST:
        out = softwta_conv_update(W.clone(), X, temperature=tau, padding=1, backend=b)
        assert rel_err(out, ref) <= 1e-5, b


# -- X that shares memory with the W updated in place ------------------------------------------

def _hebbian(W, X, rule, backend):
    kw = {"k": 2} if rule in ("instar", "krotov") else {}
    if rule == "bcm":
        kw["state"] = hebbian_state("bcm", W.shape[0])
    return hebbian_update(W, X, rule, 0.5, backend=backend, **kw)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("rule", ["instar", "krotov", "bcm"])
def test_hebbian_update_with_X_aliasing_W(rule, backend):
    """``hebbian_update(W, W)`` (or X a view of W) is the update of W with X = W as it was: the
    sparse paths wrote winners' rows of W before reading them as samples, Triton's in-place
    tiles read rows other tiles had written."""
    n = 70  # more than one 64-unit tile on the Triton path
    g = torch.Generator().manual_seed(2)
    base = torch.randn(n, n, generator=g) * 0.3
    expect = _hebbian(base.clone(), base.clone(), rule, backend)
    W = base.clone()
    _hebbian(W, W, rule, backend)
    assert rel_err(W, expect) <= 1e-6
    # X a view of some of W's rows
    expect = _hebbian(base.clone(), base[10:40].clone(), rule, backend)
    W = base.clone()
    _hebbian(W, W[10:40], rule, backend)
    assert rel_err(W, expect) <= 1e-6


def test_softwta_update_with_X_aliasing_W():
    """Triton's update kernel without max-abs scaling writes W tile by tile in place while
    other tiles still read X."""
    n = 70
    g = torch.Generator().manual_seed(3)
    base = torch.randn(n, n, generator=g) * 0.3
    for backend in BACKENDS:
        kw = dict(lr=50.0, adaptive_lr=False, max_normalize=False, backend=backend)
        expect = softwta_update(base.clone(), base.clone(), **kw)
        W = base.clone()
        softwta_update(W, W, **kw)
        assert rel_err(W, expect) <= 1e-6, backend


# -- the conv op's geometry takes NumPy integers, as every other integer argument does ---------

@pytest.mark.parametrize("backend", BACKENDS)
def test_softwta_conv_stride_and_padding_take_numpy_ints(backend):
    g = torch.Generator().manual_seed(4)
    W = torch.randn(3, 2, 3, 3, generator=g)
    X = torch.randn(2, 2, 7, 7, generator=g)
    expect = softwta_conv_update(W.clone(), X, stride=2, padding=(1, 0), backend=backend)
    out = softwta_conv_update(W.clone(), X, stride=np.int64(2), padding=(np.int32(1), 0),
                              backend=backend)
    assert torch.equal(out, expect)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        softwta_conv_update(W.clone(), X, stride=np.bool_(True), backend=backend)
    with pytest.raises(TypeError, match="padding must be an int or a pair of ints"):
        softwta_conv_update(W.clone(), X, padding=1.0, backend=backend)
