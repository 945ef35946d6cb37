"""softwta_update: the reference against a per-sample loop, the C++ backend against the
reference, and bad input on every path.

The Triton backend has its own module (test_softwta_update_triton.py), run under the interpreter.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import bpalts
from bpalts.ops import softwta_update, softwta_update_reference
from tests._compare_util import RTOL_REDUCTION, rel_err, stdout_words_per_thread_count

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")

# (batch, features, units): 1s, primes, sizes that are not multiples of the C++ row chunk (16),
# 8-float vectors or OpenMP splits, and the benchmark size.
SHAPES = [(1, 1, 1), (1, 5, 3), (7, 13, 5), (17, 97, 131), (64, 33, 257), (256, 784, 1024)]
FLAGS = list(itertools.product([False, True], repeat=3))  # anti_hebbian, adaptive_lr, max_normalize


def _flag_id(f):
    return "".join(n if on else "-" for n, on in zip(("A", "L", "M"), f))


def _inputs(B, D, N, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, D, generator=g, dtype=dtype)
    W = torch.randn(N, D, generator=g, dtype=dtype)
    # Row norms spread over [0.3, 0.8] and [1.3, 2]: away from 1, where the adaptive rate is 0
    # and its square root is ill-conditioned.
    norms = torch.rand(N, 1, generator=g, dtype=dtype) * 0.5 + 0.3
    norms += (torch.rand(N, 1, generator=g, dtype=dtype) < 0.5) * 1.0
    return W / W.norm(dim=1, keepdim=True) * norms, X


def _loop_oracle(W, X, lr, tau, anti_hebbian, adaptive_lr, max_normalize):
    """The docstring's math, sample by sample and unit by unit (float64), independent of the
    reference's vectorised form."""
    W, X = W.double(), X.double()
    N, D = W.shape
    H = torch.zeros(N, D, dtype=torch.float64)
    dsum = torch.zeros(N, dtype=torch.float64)
    for x in X:
        u = W @ x
        y = torch.exp(u / tau - (u / tau).max())
        y = y / y.sum()
        win = int(torch.argmax(u))
        for k in range(N):
            yk = y[k] if (k == win or not anti_hebbian) else -y[k]
            H[k] += yk * x
            dsum[k] += yk * u[k]
    dW = H - dsum[:, None] * W
    dW = dW / (dW.abs().max() + 1e-30) if max_normalize else dW / X.shape[0]
    if adaptive_lr:
        rate = lr * (W.norm(dim=1) - 1).abs().sqrt()
    else:
        rate = torch.full((N,), lr, dtype=torch.float64)
    return W + rate[:, None] * dW


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
def test_reference_matches_loop_oracle(flags):
    W, X = _inputs(6, 9, 7, torch.float64, seed=11)
    want = _loop_oracle(W, X, 0.3, 0.5, *flags)
    got = softwta_update(W.clone(), X, lr=0.3, temperature=0.5, anti_hebbian=flags[0],
                         adaptive_lr=flags[1], max_normalize=flags[2], backend="reference")
    assert rel_err(got - W, want - W) <= 1e-12


@CPP
@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cpp_matches_reference(shape, flags, dtype):
    W, X = _inputs(*shape, dtype, seed=hash((shape, flags)) % 2**31)
    kw = dict(lr=0.05, temperature=0.7, anti_hebbian=flags[0], adaptive_lr=flags[1],
              max_normalize=flags[2])
    want = softwta_update_reference(W.clone(), X, **kw)
    got = W.clone()
    out = softwta_update(got, X, backend="cpp", **kw)
    assert out is got  # in place, returns W
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    # Compare the updates, not the weights: the update is what the kernel computes.
    assert rel_err(got - W, want - W) <= tol
    assert torch.isfinite(got).all()


@CPP
@pytest.mark.parametrize("tau", [0.05, 1.0, 20.0])
def test_cpp_temperatures(tau):
    # Small tau: nearly hard winner-take-all, exp arguments far below -87 (underflow to 0).
    W, X = _inputs(33, 50, 70, torch.float32, seed=4)
    want = softwta_update_reference(W.clone(), X, lr=0.1, temperature=tau)
    got = softwta_update(W.clone(), X, lr=0.1, temperature=tau, backend="cpp")
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


@CPP
def test_cpp_non_contiguous_inputs():
    W, X = _inputs(40, 70, 150, torch.float32, seed=3)
    Wt = W.t().contiguous().t()  # same values, column-major storage
    Xs = torch.rand(40, 140)[:, ::2]  # strided columns
    want = softwta_update_reference(W.clone(), Xs, lr=0.1)
    softwta_update(Wt, Xs, lr=0.1, backend="cpp")
    assert not Wt.is_contiguous()
    assert rel_err(Wt - W, want - W) <= RTOL_REDUCTION


@CPP
def test_cpp_parameter_that_requires_grad():
    W, X = _inputs(8, 12, 10, torch.float32, seed=6)
    P = torch.nn.Parameter(W.clone())
    want = softwta_update_reference(W.clone(), X, lr=0.1)
    assert softwta_update(P, X, lr=0.1, backend="cpp") is P
    assert rel_err(P.detach() - W, want - W) <= RTOL_REDUCTION


@CPP
def test_cpp_is_deterministic():
    W, X = _inputs(100, 60, 300, torch.float32, seed=5)
    a, b = W.clone(), W.clone()
    softwta_update(a, X, backend="cpp")
    softwta_update(b, X, backend="cpp")
    assert torch.equal(a, b)


def test_auto_picks_cpp_on_cpu_when_built():
    W, X = _inputs(5, 6, 7, torch.float32, seed=8)
    want = softwta_update_reference(W.clone(), X)
    got = softwta_update(W.clone(), X)
    assert rel_err(got - W, want - W) <= RTOL_REDUCTION


# ---------------------------------------------------------------- bad input

def _ok():
    return torch.randn(5, 4), torch.rand(3, 4)


@pytest.mark.parametrize("backend", ["reference", "cpp", "auto"])
def test_bad_shapes(backend):
    W, X = _ok()
    with pytest.raises(ValueError, match=r"W must be 2-D \(units, features\)"):
        softwta_update(W[0], X, backend=backend)
    with pytest.raises(ValueError, match=r"X must be 2-D \(batch, features\)"):
        softwta_update(W, X[None], backend=backend)
    with pytest.raises(ValueError, match="X has 3 features but W expects 4"):
        softwta_update(W, X[:, :3], backend=backend)
    with pytest.raises(ValueError, match="X has an empty batch dimension"):
        softwta_update(W, X[:0], backend=backend)
    with pytest.raises(ValueError, match="W has an empty units dimension"):
        softwta_update(W[:0], X, backend=backend)


def test_bad_dtypes():
    W, X = _ok()
    with pytest.raises(TypeError, match="W must have dtype float32 or float64, got torch.int64"):
        softwta_update(W.long(), X)
    with pytest.raises(TypeError, match="X must have dtype float32 or float64, got torch.float16"):
        softwta_update(W, X.half())
    with pytest.raises(TypeError, match="X has dtype torch.float64 but W has torch.float32"):
        softwta_update(W, X.double())
    with pytest.raises(TypeError, match="W must be a torch.Tensor"):
        softwta_update(W.numpy(), X)


def test_mixed_devices():
    W, X = _ok()
    with pytest.raises(ValueError, match="X is on meta but W is on cpu"):
        softwta_update(W, X.to("meta"))


def test_non_finite_values():
    W, X = _ok()
    X[1, 2] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN or infinite values"):
        softwta_update(W, X)
    W, X = _ok()
    W[0, 0] = float("inf")
    with pytest.raises(ValueError, match="W contains NaN or infinite values"):
        softwta_update(W, X)
    W, X = _ok()
    for lr in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be finite"):
            softwta_update(W, X, lr=lr)
    with pytest.raises(TypeError, match="lr must be a real number"):
        softwta_update(W, X, lr="0.1")


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_bad_temperature(tau):
    W, X = _ok()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        softwta_update(W, X, temperature=tau)


def test_non_finite_temperature():
    W, X = _ok()
    with pytest.raises(ValueError, match="temperature must be finite"):
        softwta_update(W, X, temperature=float("nan"))


def test_unknown_backend():
    W, X = _ok()
    with pytest.raises(ValueError, match="backend must be one of .*got 'cuda'"):
        softwta_update(W, X, backend="cuda")


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    W, X = _ok()
    with pytest.raises(ValueError, match="triton backend needs CUDA tensors or TRITON_INTERPRET=1"):
        softwta_update(W, X, backend="triton")


def test_no_change_on_error():
    W, X = _ok()
    before = W.clone()
    X[0, 0] = float("nan")
    with pytest.raises(ValueError):
        softwta_update(W, X)
    with pytest.raises(ValueError):
        softwta_update(W, X.nan_to_num(), temperature=0.0)
    assert torch.equal(W, before)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_update_moves_winner_towards_input(backend):
    # One sample, hard-ish WTA, no anti-Hebbian: the winning unit's weight moves towards x.
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} unavailable")
    g = torch.Generator().manual_seed(2)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64) * 0.3
    x = torch.rand(1, 6, generator=g, dtype=torch.float64)
    win = int((x @ W.T).argmax())
    before = (W[win] / W[win].norm() - x[0] / x[0].norm()).norm()
    softwta_update(W, x, lr=0.05, temperature=0.01, anti_hebbian=False, adaptive_lr=False,
                   max_normalize=True, backend=backend)
    after = (W[win] / W[win].norm() - x[0] / x[0].norm()).norm()
    assert after < before
    assert math.isfinite(float(after))


@CPP
@pytest.mark.parametrize("N,B", [(1, 1), (2, 5), (9, 31), (37, 32), (131, 33), (257, 70), (1024, 256)])
@pytest.mark.parametrize("anti_hebbian", [True, False], ids=["anti", "plain"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cpp_column_gate_matches_the_row_gate(N, B, anti_hebbian, dtype):
    # The dense op gates U^T (units x batch) down its columns in blocks of 32 (a partial last
    # block padded); the convolutional op gates U along rows. Same U, same Y~ and d, up to the
    # order of the double sums (s per column, d per unit).
    C = bpalts._backend.cpp_module()
    g = torch.Generator().manual_seed(N * 1000 + B)
    U = torch.randn(B, N, generator=g, dtype=dtype) * 3.0
    Y, d_row = U.clone(), torch.empty(1, N, dtype=dtype)
    C.softwta_gate(Y.numpy(), d_row.numpy(), 1.7, anti_hebbian)
    Yt, d_col = U.T.contiguous(), torch.empty(1, N, dtype=dtype)
    C.softwta_gate_columns(Yt.numpy(), d_col.numpy(), 1.7, anti_hebbian)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(Yt.T, Y, rtol=tol, atol=0.0)
    scale = float((Y * U).abs().sum(0).max())  # d_k sums terms of either sign
    torch.testing.assert_close(d_col, d_row, rtol=tol, atol=tol * scale)


@CPP
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("N", [1, 7, 8, 9, 37, 1024])
def test_cpp_gate_winner_is_the_first_argmax(N, layout):
    # Each sample's winner must be torch.argmax's choice, the first maximum, wherever the maxima
    # fall (lane 0 or 7, the first or a later block, the scalar tail, tied). The row gate
    # (convolutional op) scans a row 8 at a time, then the tail; the column gate (dense op) keeps
    # a running max per column and takes a later unit only when it is strictly greater, 32
    # columns per block (36 samples: one full block and one padded).
    C = bpalts._backend.cpp_module()
    g = torch.Generator().manual_seed(N)
    rows = []
    for first in sorted({0, min(7, N - 1), min(8, N - 1), min(15, N - 1), N // 2, N - 1}):
        for tied in sorted({first, min(first + 1, N - 1), N - 1}):
            u = torch.rand(N, generator=g) - 2.0
            u[first] = u[tied] = 1.0
            rows.append(u)
    while len(rows) < 36:
        rows.append(torch.rand(N, generator=g))
    U = torch.stack(rows)  # (batch, units)
    want_win = U.argmax(1)
    d = torch.empty(1, N)
    if layout == "rows":
        Y = U.clone()
        C.softwta_gate(Y.numpy(), d.numpy(), 1.0, True)
    else:
        Yt = U.T.contiguous()
        C.softwta_gate_columns(Yt.numpy(), d.numpy(), 1.0, True)
        Y = Yt.T
    sign = -torch.ones_like(U)
    sign[torch.arange(len(rows)), want_win] = 1.0
    torch.testing.assert_close(Y, sign * torch.softmax(U, 1), rtol=1e-5, atol=1e-7)
    assert (Y > 0).sum(1).eq(1).all() and torch.equal((Y > 0).float().argmax(1), want_win)


_THREADS_SCRIPT = """
import hashlib, torch
import bpalts
C = bpalts._backend.cpp_module()
g = torch.Generator().manual_seed(4)
for B, D, N in ((70, 33, 257), (256, 160, 300)):  # the second above kParallelMin (2^15)
    Ut = torch.randn(N, B, generator=g) * 3.0
    d = torch.empty(1, N)
    C.softwta_gate_columns(Ut.numpy(), d.numpy(), 1.3, True)
    H = torch.randn(N, D, generator=g)
    W = torch.randn(N, D, generator=g) / D ** 0.5
    for max_normalize in (True, False):
        C.softwta_apply(W.numpy(), H.numpy(), d.numpy(), 0.05, True, max_normalize, 1.0 / B)
    h = hashlib.sha256()
    for t in (Ut, d, W):
        h.update(t.numpy().tobytes())
    print(h.hexdigest())
"""


@CPP
def test_cpp_kernels_do_not_depend_on_the_thread_count():
    # The column gate's blocks and the apply's row blocks are fixed partitions with their sums
    # in a fixed order: the same Y~, d and W bit for bit at 1, 2 and 3 OpenMP threads (3: more
    # threads than this CI's cores). Inputs made without GEMMs, whose results are MKL's affair.
    outs = stdout_words_per_thread_count(_THREADS_SCRIPT)
    assert len(outs[0]) == 2 and outs[0] == outs[1] == outs[2]
