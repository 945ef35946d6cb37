"""ff_layer_step: the reference against autograd, the C++ backend against the reference, and bad
input on every path. The Triton backend has its own module (test_ff_layer_step_triton.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bpalts
from bpalts.ops.ff_layer_step import FFStep, ff_layer_step, ff_layer_step_reference
from tests._compare_util import RTOL_REDUCTION, rel_err

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")

# (B+, B-, features, units): 1s, primes, non-multiples of vector widths / chunks, a benchmark size.
SHAPES = [(1, 1, 1, 1), (1, 3, 5, 2), (7, 13, 29, 37), (17, 16, 97, 131), (64, 64, 784, 257)]


def inputs(Bp, Bn, D, N, dtype=torch.float32, seed=0, offsets=False):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(N, D, generator=g, dtype=dtype) / math.sqrt(D))
    b = torch.randn(N, generator=g, dtype=dtype) * 0.1
    xp = torch.rand(Bp, D, generator=g, dtype=dtype)
    xn = torch.rand(Bn, D, generator=g, dtype=dtype)
    op = torch.randn(Bp, generator=g, dtype=dtype) * math.sqrt(N) if offsets else None
    on = torch.randn(Bn, generator=g, dtype=dtype) * math.sqrt(N) if offsets else None
    theta = N / 2  # inputs have RMS 1 after normalisation: G is about N/2, the sigmoid unsaturated
    return W, b, xp, xn, theta, op, on


def compare(got: FFStep, want: FFStep, tol: float) -> None:
    assert isinstance(got, FFStep)
    for name, a, e in zip(FFStep._fields, got, want):
        assert a.shape == e.shape and a.dtype == e.dtype, name
        assert rel_err(a, e) <= tol, (name, rel_err(a, e))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("offsets", [False, True])
def test_reference_matches_autograd(normalize, offsets):
    W, b, xp, xn, theta, op, on = inputs(6, 5, 9, 7, torch.float64, seed=3, offsets=offsets)
    Wg, bg = W.clone().requires_grad_(), b.clone().requires_grad_()

    def layer(x):
        if normalize:
            x = x / (x.pow(2).mean(1, keepdim=True).sqrt() + 1e-8)
        return torch.relu(x @ Wg.T + bg)

    hp, hn = layer(xp), layer(xn)
    gp, gn = hp.pow(2).sum(1), hn.pow(2).sum(1)
    if offsets:
        gp_, gn_ = gp + op, gn + on
    else:
        gp_, gn_ = gp, gn
    loss = F.softplus(-(gp_ - theta)).mean() + F.softplus(gn_ - theta).mean()
    loss.backward()
    r = ff_layer_step(W, b, xp, xn, theta, op, on, normalize=normalize, backend="reference")
    assert rel_err(r.grad_W, Wg.grad) <= 1e-12
    assert rel_err(r.grad_b, bg.grad) <= 1e-12
    assert abs(r.loss.item() - loss.item()) <= 1e-12 * abs(loss.item())
    assert rel_err(r.h_pos, hp.detach()) <= 1e-14 and rel_err(r.g_neg, gn.detach()) <= 1e-14


@CPP
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("offsets", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cpp_matches_reference(shape, offsets, normalize, dtype, poisoned_empty):
    W, b, xp, xn, theta, op, on = inputs(*shape, dtype, seed=sum(shape), offsets=offsets)
    want = ff_layer_step_reference(W, b, xp, xn, theta, op, on, 1e-8, normalize)
    got = ff_layer_step(W, b, xp, xn, theta, op, on, normalize=normalize, backend="cpp")
    compare(got, want, RTOL_REDUCTION if dtype == torch.float32 else 1e-10)


@CPP
@pytest.mark.parametrize("theta", [-50.0, 0.0, 1e4])
def test_cpp_saturated_thresholds(theta):
    # Far from the threshold the sigmoid saturates (one side's gradient is ~0): still finite.
    W, b, xp, xn, _, _, _ = inputs(9, 11, 30, 40, seed=2)
    want = ff_layer_step_reference(W, b, xp, xn, theta)
    got = ff_layer_step(W, b, xp, xn, theta, backend="cpp")
    compare(got, want, RTOL_REDUCTION)


@CPP
def test_cpp_non_contiguous_and_parameters():
    W, b, xp, xn, theta, _, _ = inputs(12, 9, 40, 23, seed=4)
    Wt = torch.nn.Parameter(W.t().contiguous().t())  # column-major storage, requires grad
    xps = torch.rand(12, 80)[:, ::2]
    want = ff_layer_step_reference(W, b, xps, xn, theta)
    got = ff_layer_step(Wt, b, xps, xn, theta, backend="cpp")
    compare(got, want, RTOL_REDUCTION)


@CPP
def test_cpp_is_deterministic():
    args = inputs(100, 100, 60, 300, seed=5)
    a = ff_layer_step(*args, backend="cpp")
    b = ff_layer_step(*args, backend="cpp")
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_auto_matches_reference_and_inputs_untouched():
    args = inputs(5, 6, 7, 8, seed=8, offsets=True)
    before = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    want = ff_layer_step_reference(*args)
    got = ff_layer_step(*args)
    compare(got, want, RTOL_REDUCTION)
    assert all(torch.equal(a, c) for a, c in zip([a for a in args if isinstance(a, torch.Tensor)], before))


def test_gradient_step_lowers_the_loss():
    W, b, xp, xn, theta, _, _ = inputs(20, 20, 30, 25, torch.float64, seed=9)
    r = ff_layer_step(W, b, xp, xn, theta, backend="reference")
    r2 = ff_layer_step(W - 1e-3 * r.grad_W, b - 1e-3 * r.grad_b, xp, xn, theta, backend="reference")
    assert r2.loss < r.loss


# ---------------------------------------------------------------- bad input

def ok():
    W, b, xp, xn, theta, _, _ = inputs(3, 4, 6, 5, seed=1)
    return W, b, xp, xn, theta


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_shapes(backend):
    if backend == "cpp" and "cpp" not in bpalts.available_backends("cpu"):
        pytest.skip("cpp unavailable")
    W, b, xp, xn, th = ok()
    with pytest.raises(ValueError, match=r"W must be 2-D \(units, features\)"):
        ff_layer_step(W[0], b, xp, xn, th, backend=backend)
    with pytest.raises(ValueError, match=r"b must be 1-D \(units\)"):
        ff_layer_step(W, b[None], xp, xn, th, backend=backend)
    with pytest.raises(ValueError, match="b has 4 units but W has 5"):
        ff_layer_step(W, b[:4], xp, xn, th, backend=backend)
    with pytest.raises(ValueError, match="x_pos has 5 features but W expects 6"):
        ff_layer_step(W, b, xp[:, :5], xn, th, backend=backend)
    with pytest.raises(ValueError, match="x_neg has 5 features but W expects 6"):
        ff_layer_step(W, b, xp, xn[:, :5], th, backend=backend)
    with pytest.raises(ValueError, match="x_pos has an empty batch dimension"):
        ff_layer_step(W, b, xp[:0], xn, th, backend=backend)
    with pytest.raises(ValueError, match="x_neg has an empty batch dimension"):
        ff_layer_step(W, b, xp, xn[:0], th, backend=backend)
    with pytest.raises(ValueError, match=r"offset_pos must be \(3,\)"):
        ff_layer_step(W, b, xp, xn, th, torch.zeros(4), backend=backend)
    with pytest.raises(ValueError, match=r"offset_neg must be 1-D \(batch\)"):
        ff_layer_step(W, b, xp, xn, th, None, torch.zeros(4, 1), backend=backend)


def test_bad_dtypes_and_devices():
    W, b, xp, xn, th = ok()
    with pytest.raises(TypeError, match="W must have dtype float32 or float64, got torch.int64"):
        ff_layer_step(W.long(), b, xp, xn, th)
    with pytest.raises(TypeError, match="x_neg has dtype torch.float64 but W has torch.float32"):
        ff_layer_step(W, b, xp, xn.double(), th)
    with pytest.raises(TypeError, match="x_pos must be a torch.Tensor"):
        ff_layer_step(W, b, xp.numpy(), xn, th)
    with pytest.raises(ValueError, match="b is on meta but W is on cpu"):
        ff_layer_step(W, b.to("meta"), xp, xn, th)
    with pytest.raises(TypeError, match="offset_pos must have dtype float32"):
        ff_layer_step(W, b, xp, xn, th, torch.zeros(3, dtype=torch.float64))


def test_non_finite_values():
    for name, idx in (("W", 0), ("b", 1), ("x_pos", 2), ("x_neg", 3)):
        args = list(ok())
        args[idx] = args[idx].clone()
        args[idx].view(-1)[0] = float("nan")
        with pytest.raises(ValueError, match=f"{name} contains NaN or infinite values"):
            ff_layer_step(*args)
    W, b, xp, xn, th = ok()
    with pytest.raises(ValueError, match="offset_neg contains NaN"):
        ff_layer_step(W, b, xp, xn, th, None, torch.full((4,), float("inf")))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="theta must be finite"):
            ff_layer_step(W, b, xp, xn, bad)
    with pytest.raises(TypeError, match="theta must be a real number"):
        ff_layer_step(W, b, xp, xn, "1")
    with pytest.raises(ValueError, match="eps must be > 0"):
        ff_layer_step(W, b, xp, xn, th, eps=0.0)


def test_unknown_backend_and_triton_without_interpreter(monkeypatch):
    W, b, xp, xn, th = ok()
    with pytest.raises(ValueError, match="backend must be one of .*got 'gpu'"):
        ff_layer_step(W, b, xp, xn, th, backend="gpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton backend needs CUDA tensors or TRITON_INTERPRET=1"):
        ff_layer_step(W, b, xp, xn, th, backend="triton")


# ------------------------------------------------------------------ given activities

@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", SHAPES[1:4], ids=lambda s: "x".join(map(str, s)))
def test_given_activities_give_the_same_step(backend, normalize, shape):
    """h_pos/h_neg computed by the caller (collaborative FF): the same result, no forward GEMM."""
    W, b, xp, xn, theta, op, on = inputs(*shape, seed=5, offsets=True)
    want = ff_layer_step_reference(W, b, xp, xn, theta, op, on, normalize=normalize)
    got = ff_layer_step(W, b, xp, xn, theta, op, on, normalize=normalize, backend=backend,
                        h_pos=want.h_pos.clone(), h_neg=want.h_neg.clone())
    compare(got, want, RTOL_REDUCTION if backend == "cpp" else 0.0)


def test_given_activities_are_used_as_given():
    W, b, xp, xn, theta, _, _ = inputs(4, 3, 8, 5, seed=2)
    hp, hn = torch.zeros(4, 5), torch.zeros(3, 5)  # not W's activities: the op trusts them
    r = ff_layer_step(W, b, xp, xn, theta, h_pos=hp, h_neg=hn, backend="reference")
    assert torch.equal(r.g_pos, torch.zeros(4)) and torch.equal(r.grad_W, torch.zeros(5, 8))


def test_given_activities_bad_input():
    W, b, xp, xn, th = ok()
    hp, hn = torch.rand(3, 5), torch.rand(4, 5)
    with pytest.raises(ValueError, match="h_pos and h_neg must be given together"):
        ff_layer_step(W, b, xp, xn, th, h_pos=hp)
    with pytest.raises(ValueError, match=r"h_neg must be \(4, 5\) \(x_neg's batch x W's units\)"):
        ff_layer_step(W, b, xp, xn, th, h_pos=hp, h_neg=hn[:3])
    with pytest.raises(TypeError, match="h_pos must have dtype float32"):
        ff_layer_step(W, b, xp, xn, th, h_pos=hp.double(), h_neg=hn)
    bad = hn.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="h_neg contains NaN"):
        ff_layer_step(W, b, xp, xn, th, h_pos=hp, h_neg=bad)
