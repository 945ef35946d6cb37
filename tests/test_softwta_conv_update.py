"""softwta_conv_update: the reference against an explicit per-pixel loop, the C++ backend against
the reference, and bad input on every path.

The Triton backend has its own module (test_softwta_conv_update_triton.py), under the interpreter.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import bpalts
from bpalts.ops import softwta_conv_update, softwta_conv_update_reference, softwta_update_reference
from tests._compare_util import RTOL_REDUCTION, rel_err

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")

# (B, C_in, H, W, C_out, k, stride, padding): C_out 1 and primes, kernels 1/3/5, stride 1/2,
# padding 0/1, tiny images (kernel as large as the padded image), non-square images.
GEOMS = [
    (1, 1, 1, 1, 1, 1, 1, 0),
    (2, 1, 5, 5, 1, 5, 1, 0),
    (3, 2, 7, 5, 7, 3, 1, 1),
    (2, 3, 9, 11, 13, 3, 2, 0),
    (5, 1, 8, 8, 17, 5, 2, 1),
    (4, 5, 6, 6, 31, 1, 2, 1),
    (2, 4, 3, 3, 37, 5, 1, 1),
    (3, 16, 10, 9, 96, 3, 1, 1),
]
FLAGS = list(itertools.product([False, True], repeat=3))  # anti_hebbian, adaptive_lr, max_normalize


def _flag_id(f):
    return "".join(n if on else "-" for n, on in zip(("A", "L", "M"), f))


def _geom_id(g):
    return "B{}c{}_{}x{}_o{}k{}s{}p{}".format(*g)


def _inputs(B, C_in, H, Wd, C_out, k, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, C_in, H, Wd, generator=g, dtype=dtype)
    W = torch.randn(C_out, C_in, k, k, generator=g, dtype=dtype)
    # Channel norms spread over [0.3, 0.8] and [1.3, 2]: away from 1, where the adaptive rate is
    # 0 and its square root is ill-conditioned.
    norms = torch.rand(C_out, 1, 1, 1, generator=g, dtype=dtype) * 0.5 + 0.3
    norms += (torch.rand(C_out, 1, 1, 1, generator=g, dtype=dtype) < 0.5) * 1.0
    return W / W.flatten(1).norm(dim=1)[:, None, None, None] * norms, X


def _loop_oracle(W, X, lr, tau, stride, padding, anti_hebbian, adaptive_lr, max_normalize):
    """The docstring's math with explicit loops over images and output pixels (float64): every
    (image, pixel) is one sample whose input is the patch under the kernel."""
    W, X = W.double(), X.double()
    C_out, C_in, kh, kw = W.shape
    B, _, H, Wd = X.shape
    Xp = torch.nn.functional.pad(X, (padding, padding, padding, padding))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (Wd + 2 * padding - kw) // stride + 1
    Wf = W.reshape(C_out, -1)
    Hsum = torch.zeros_like(Wf)
    dsum = torch.zeros(C_out, dtype=torch.float64)
    for b in range(B):
        for i in range(Ho):
            for j in range(Wo):
                x = Xp[b, :, i * stride:i * stride + kh, j * stride:j * stride + kw].reshape(-1)
                u = Wf @ x
                y = torch.exp(u / tau - (u / tau).max())
                y = y / y.sum()
                win = int(torch.argmax(u))
                for k in range(C_out):
                    yk = y[k] if (k == win or not anti_hebbian) else -y[k]
                    Hsum[k] += yk * x
                    dsum[k] += yk * u[k]
    dW = Hsum - dsum[:, None] * Wf
    dW = dW / (dW.abs().max() + 1e-30) if max_normalize else dW / (B * Ho * Wo)
    rate = lr * (Wf.norm(dim=1) - 1).abs().sqrt() if adaptive_lr else torch.full((C_out,), lr, dtype=torch.float64)
    return (Wf + rate[:, None] * dW).reshape(W.shape)


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
@pytest.mark.parametrize("geom", [(2, 2, 5, 6, 4, 3, 1, 1), (3, 1, 7, 7, 5, 3, 2, 0)], ids=_geom_id)
def test_reference_matches_loop_oracle(geom, flags):
    B, C_in, H, Wd, C_out, k, stride, padding = geom
    W, X = _inputs(B, C_in, H, Wd, C_out, k, torch.float64, seed=11)
    want = _loop_oracle(W, X, 0.3, 0.5, stride, padding, *flags)
    got = softwta_conv_update(W.clone(), X, lr=0.3, temperature=0.5, stride=stride, padding=padding,
                              anti_hebbian=flags[0], adaptive_lr=flags[1], max_normalize=flags[2],
                              backend="reference")
    assert rel_err(got - W, want - W) <= 1e-12


def test_1x1_conv_is_the_dense_op_on_pixels():
    # A 1x1 kernel makes every pixel an independent sample of the dense rule.
    W, X = _inputs(3, 5, 4, 3, 7, 1, torch.float64, seed=2)
    want = softwta_update_reference(W.reshape(7, 5).clone(), X.permute(0, 2, 3, 1).reshape(-1, 5),
                                    lr=0.2, temperature=0.8)
    got = softwta_conv_update(W.clone(), X, lr=0.2, temperature=0.8, backend="reference")
    assert rel_err(got.reshape(7, 5) - W.reshape(7, 5), want - W.reshape(7, 5)) <= 1e-12


@CPP
@pytest.mark.parametrize("flags", [(True, True, True), (False, False, False), (True, False, True),
                                   (True, True, False)], ids=_flag_id)
@pytest.mark.parametrize("geom", GEOMS, ids=_geom_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cpp_matches_reference(geom, flags, dtype):
    B, C_in, H, Wd, C_out, k, stride, padding = geom
    W, X = _inputs(B, C_in, H, Wd, C_out, k, dtype, seed=hash((geom, flags)) % 2**31)
    kw = dict(lr=0.05, temperature=0.7, stride=stride, padding=padding, anti_hebbian=flags[0],
              adaptive_lr=flags[1], max_normalize=flags[2])
    want = softwta_conv_update_reference(W.clone(), X, **kw)
    got = W.clone()
    assert softwta_conv_update(got, X, backend="cpp", **kw) is got  # in place, returns W
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    assert rel_err(got - W, want - W) <= tol


@CPP
@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
def test_cpp_all_flags(flags):
    W, X = _inputs(4, 3, 9, 9, 23, 3, torch.float32, seed=5)
    kw = dict(lr=0.05, temperature=0.7, stride=(2, 1), padding=(1, 0), anti_hebbian=flags[0],
              adaptive_lr=flags[1], max_normalize=flags[2])
    want = softwta_conv_update_reference(W.clone(), X, **kw)
    got = softwta_conv_update(W.clone(), X, backend="cpp", **kw)
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


@CPP
@pytest.mark.parametrize("tau", [0.05, 20.0])
def test_cpp_temperatures(tau):
    W, X = _inputs(3, 2, 8, 8, 19, 3, torch.float32, seed=4)
    want = softwta_conv_update_reference(W.clone(), X, lr=0.1, temperature=tau, padding=1)
    got = softwta_conv_update(W.clone(), X, lr=0.1, temperature=tau, padding=1, backend="cpp")
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


@CPP
def test_cpp_non_contiguous_inputs_and_parameter():
    W, X = _inputs(3, 4, 7, 7, 11, 3, torch.float32, seed=3)
    Wt = torch.nn.Parameter(W.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))  # channels-last
    Xs = torch.randn(3, 8, 7, 14)[:, ::2, :, ::2]
    want = softwta_conv_update_reference(W.clone(), Xs, lr=0.1, padding=1)
    assert softwta_conv_update(Wt, Xs, lr=0.1, padding=1, backend="cpp") is Wt
    assert not Wt.is_contiguous()
    assert rel_err(Wt.detach() - W, want - W) <= RTOL_REDUCTION


@CPP
def test_cpp_is_deterministic():
    W, X = _inputs(8, 3, 12, 12, 40, 3, torch.float32, seed=5)
    a, b = W.clone(), W.clone()
    softwta_conv_update(a, X, padding=1, backend="cpp")
    softwta_conv_update(b, X, padding=1, backend="cpp")
    assert torch.equal(a, b)


def test_auto_matches_reference():
    W, X = _inputs(2, 3, 6, 6, 5, 3, torch.float32, seed=8)
    want = softwta_conv_update_reference(W.clone(), X)
    got = softwta_conv_update(W.clone(), X)
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_update_moves_winner_towards_patch(backend):
    # One 1-pixel output, hard-ish WTA, no anti-Hebbian: the winner's kernel moves to the patch.
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} unavailable")
    g = torch.Generator().manual_seed(2)
    W = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) * 0.3
    x = torch.rand(1, 2, 3, 3, generator=g, dtype=torch.float64)
    win = int(torch.nn.functional.conv2d(x, W).flatten().argmax())

    def dist():
        return (W[win] / W[win].norm() - x[0] / x[0].norm()).norm()

    before = dist()
    softwta_conv_update(W, x, lr=0.05, temperature=0.01, anti_hebbian=False, adaptive_lr=False,
                        backend=backend)
    after = dist()
    assert after < before and math.isfinite(float(after))


# ---------------------------------------------------------------- bad input

def _ok():
    return torch.randn(5, 3, 3, 3), torch.rand(2, 3, 6, 6)


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_shapes(backend):
    W, X = _ok()
    with pytest.raises(ValueError, match=r"W must be 4-D \(out_channels, in_channels, kernel_height, kernel_width\)"):
        softwta_conv_update(W[0], X, backend=backend)
    with pytest.raises(ValueError, match=r"X must be 4-D \(batch, channels, height, width\)"):
        softwta_conv_update(W, X.flatten(2), backend=backend)
    with pytest.raises(ValueError, match="W has C_in=3 but X has 1 channels"):
        softwta_conv_update(W, X[:, :1], backend=backend)
    with pytest.raises(ValueError, match="X has an empty batch dimension"):
        softwta_conv_update(W, X[:0], backend=backend)
    with pytest.raises(ValueError, match="W has an empty out_channels dimension"):
        softwta_conv_update(W[:0], X, backend=backend)
    with pytest.raises(ValueError, match=r"X's padded image \(2 x 2.*smaller than W's kernel \(3 x 3\)"):
        softwta_conv_update(W, X[:, :, :2, :2], backend=backend)


def test_bad_stride_and_padding():
    W, X = _ok()
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        softwta_conv_update(W, X, stride=0)
    with pytest.raises(ValueError, match=r"stride must be >= 1, got \(1, -1\)"):
        softwta_conv_update(W, X, stride=(1, -1))
    with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
        softwta_conv_update(W, X, padding=-1)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        softwta_conv_update(W, X, stride=1.5)
    with pytest.raises(TypeError, match="padding must be an int or a pair of ints"):
        softwta_conv_update(W, X, padding=(1, 1, 1))


def test_bad_dtypes_and_devices():
    W, X = _ok()
    with pytest.raises(TypeError, match="W must have dtype float32 or float64, got torch.int64"):
        softwta_conv_update(W.long(), X)
    with pytest.raises(TypeError, match="X must have dtype float32 or float64, got torch.float16"):
        softwta_conv_update(W, X.half())
    with pytest.raises(TypeError, match="X has dtype torch.float64 but W has torch.float32"):
        softwta_conv_update(W, X.double())
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        softwta_conv_update(W.numpy(), X)
    with pytest.raises(ValueError, match="X is on meta but W is on cpu"):
        softwta_conv_update(W, X.to("meta"))


def test_non_finite_values():
    W, X = _ok()
    X[1, 2, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        softwta_conv_update(W, X)
    W, X = _ok()
    W[0, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="W contains NaN or infinite values"):
        softwta_conv_update(W, X)
    W, X = _ok()
    with pytest.raises(ValueError, match="lr must be finite"):
        softwta_conv_update(W, X, lr=float("nan"))
    with pytest.raises(ValueError, match="temperature must be finite"):
        softwta_conv_update(W, X, temperature=float("inf"))


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_bad_temperature(tau):
    W, X = _ok()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        softwta_conv_update(W, X, temperature=tau)


def test_backend_errors(monkeypatch):
    W, X = _ok()
    with pytest.raises(ValueError, match="backend must be one of .*got 'cuda'"):
        softwta_conv_update(W, X, backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton backend needs CUDA tensors or TRITON_INTERPRET=1"):
        softwta_conv_update(W, X, backend="triton")


def test_no_change_on_error():
    W, X = _ok()
    before = W.clone()
    X[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError):
        softwta_conv_update(W, X)
    with pytest.raises(ValueError):
        softwta_conv_update(W, X.nan_to_num(), temperature=0.0)
    assert torch.equal(W, before)
