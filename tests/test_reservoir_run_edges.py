"""reservoir_run edge cases on every backend: keep lists of bool tensors, a 0-d array, keeps
without a step order (sets, dicts, bytes), and a leak of 1 with a large state0 (the new activation must not cancel away).

The Triton backend runs on the CPU under TRITON_INTERPRET=1 (set before Triton compiles
anything, as in test_reservoir_run_triton.py); it is skipped where the interpreter is missing.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops.reservoir_run import reservoir_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

BACKENDS = [b for b in ("reference", "cpp", "triton") if b in bpalts.available_backends("cpu")]


def _small(N=5, B=2, T=4, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, N, generator=g) * 0.3
    W_in = torch.randn(N, D, generator=g)
    u = torch.randn(T, B, D, generator=g)
    return W, W_in, u


@pytest.mark.parametrize("backend", BACKENDS)
def test_keep_list_of_bool_tensors_is_refused(backend):
    """keep=list(mask) for a bool mask tensor (a list of 0-d bool tensors) was read as the step
    indices 1, 0, 1, 0 and returned 4 states, silently; a bool tensor, a list of Python bools
    and a list of NumPy bools were all refused with a TypeError. (Complex 0-d tensors were
    likewise accepted.)"""
    W, W_in, u = _small()
    mask = torch.tensor([True, False, True, False])
    with pytest.raises(TypeError, match="keep must hold integer step indices"):
        reservoir_run(W, W_in, u, 0.5, keep=list(mask), backend=backend)
    with pytest.raises(TypeError, match="keep must hold integer step indices"):
        reservoir_run(W, W_in, u, 0.5, keep=[torch.tensor(1 + 0j)], backend=backend)
    # integer 0-d tensors in a list stay accepted
    full = reservoir_run(W, W_in, u, 0.5, backend=backend)
    got = reservoir_run(W, W_in, u, 0.5, keep=[torch.tensor(3), torch.tensor(1, dtype=torch.uint8)],
                        backend=backend)
    assert torch.equal(got, full[[3, 1]])


def test_keep_zero_d_numpy_array_error_names_keep():
    """keep=np.array(2) (a 0-d NumPy array: it has __iter__ but cannot be iterated) raised
    NumPy's bare "TypeError: iteration over a 0-d array", naming neither keep nor what it
    should be."""
    W, W_in, u = _small()
    with pytest.raises(TypeError, match="keep must be 'all', 'last' or a sequence of step indices"):
        reservoir_run(W, W_in, u, 0.5, keep=np.array(2), backend="reference")


@pytest.mark.parametrize("density", [None, 0.5], ids=["dense", "csr"])
@pytest.mark.parametrize("B", [1, 3, 12])  # C++: one-sample / batched loop, MKL step + epilogue
@pytest.mark.parametrize("backend", BACKENDS)
def test_leak_one_forgets_a_large_state0(backend, B, density):
    """With leak 1 (scalar or per unit) x_0 = tanh(U_0 + state0 W^T) whatever state0 is, but the
    C++ and Triton backends computed it as x + a (h - x), which cancels: state0 = 1e8 gave
    x_0 = 0 on those units instead of +-1 (the reference, via torch.lerp, and a float64 loop
    gave +-1). Now every backend uses torch.lerp's form h - (1 - a) (h - x) for a >= 0.5."""
    if backend == "triton" and density is not None:
        pytest.skip("the Triton backend takes a dense W only")
    N, T, D = 6, 2, 3
    W, W_in, u = _small(N, B, T, D, seed=1)
    if density is not None:
        W = (W * (torch.rand(N, N, generator=torch.Generator().manual_seed(2)) < density)).to_sparse_csr()
    Wd = W.to_dense() if density is not None else W
    state0 = torch.full((B, N), 1e8)
    leaks = [1.0, torch.tensor([1.0, 0.5, 1.0, 0.25, 1.0, 0.75])]
    for leak in leaks:
        a = leak if isinstance(leak, torch.Tensor) else torch.full((N,), leak)
        got = reservoir_run(W, W_in, u, leak, None, state0, keep=[0], backend=backend)[0]
        x = state0.double()
        h = torch.tanh(u[0].double() @ W_in.double().T + x @ Wd.double().T)
        want = (1 - a.double()) * x + a.double() * h
        ones = a == 1
        assert (want[:, ones].abs() > 0.5).all()  # saturated: +-1
        assert torch.allclose(got[:, ones].double(), want[:, ones], rtol=0, atol=1e-6), got[:, ones]
        assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("keep", [{1, 3}, frozenset({2}), {1: "a", 3: "b"}, b"\x01\x03", bytearray(b"\x02")],
                         ids=["set", "frozenset", "dict", "bytes", "bytearray"])
def test_keep_without_a_step_order_is_refused(keep):
    """A set (no order: the states come back in keep's order), a dict (its keys) or bytes (read
    as small integers) were taken as step lists; each is a TypeError naming keep."""
    W, W_in, u = _small()
    with pytest.raises(TypeError, match=r"keep must be 'all', 'last' or an ordered sequence"):
        reservoir_run(W, W_in, u, 0.5, keep=keep, backend="reference")
    assert reservoir_run(W, W_in, u, 0.5, keep=[1, 3], backend="reference").shape[0] == 2
