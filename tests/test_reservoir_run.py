"""reservoir_run: the reference against a plain step-by-step loop, the C++ backend (dense and
CSR) against the reference, image_sequence, and bad input on every path.

The Triton backend has its own module (test_reservoir_run_triton.py), run under the interpreter.
"""
from __future__ import annotations

import math
import sys

import pytest
import torch

import bpalts
from bpalts.ops.reservoir_run import image_sequence, reservoir_run, reservoir_run_reference
from tests._compare_util import RTOL_REDUCTION, rel_err, stdout_words_per_thread_count

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")

# (units N, batch B, steps T, inputs D): 1s, primes, N not a multiple of the C++ row group (8 with
# AVX-512, else 4) or vector width (16 / 8), the C++ loop's batches (up to CPP_LOOP_MAX_BATCH = 10:
# sample pairs, odd B with one sample left over) and B above it (MKL step + C++ epilogue).
SHAPES = [(1, 1, 1, 1), (2, 1, 3, 1), (13, 7, 5, 3), (61, 1, 29, 1), (97, 17, 11, 2), (130, 3, 8, 28),
          (29, 4, 6, 2), (37, 9, 4, 2), (45, 10, 3, 1), (19, 11, 3, 2)]


def _problem(N, B, T, D, dtype, seed, *, density=None, per_unit_leak=False, bias=True, state0=True):
    """Weights scaled to spectral radius about 0.9 (an echo-state reservoir), inputs in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, N, generator=g, dtype=dtype)
    if density is not None:
        W = W * (torch.rand(N, N, generator=g) < density).to(dtype)
        W = W / math.sqrt(max(density, 1.0 / N))
    W = W * (0.9 / math.sqrt(N))
    W_in = torch.randn(N, D, generator=g, dtype=dtype)
    inputs = torch.rand(T, B, D, generator=g, dtype=dtype) * 2 - 1
    leak = (torch.rand(N, generator=g, dtype=dtype) * 0.9 + 0.1) if per_unit_leak else 0.3
    b = torch.randn(N, generator=g, dtype=dtype) * 0.1 if bias else None
    x0 = torch.rand(B, N, generator=g, dtype=dtype) * 2 - 1 if state0 else None
    if density is not None:
        W = W.to_sparse_csr()
    return W, W_in, inputs, leak, b, x0


def _loop_oracle(W, W_in, inputs, leak, bias, state0, round_x=None):
    """The docstring's equation, sample by sample, in float64 (independent of the reference's
    batched GEMM form). ``round_x``: applied to the float32 value of ``x_{t-1}`` before ``W x``."""
    W = (W.to_dense() if W.layout == torch.sparse_csr else W).double()
    W_in, inputs = W_in.double(), inputs.double()
    T, B, _ = inputs.shape
    N = W.shape[0]
    a = leak.double() if isinstance(leak, torch.Tensor) else torch.full((N,), float(leak), dtype=torch.float64)
    b = bias.double() if bias is not None else torch.zeros(N, dtype=torch.float64)
    out = torch.zeros(T, B, N, dtype=torch.float64)
    for s in range(B):
        x = state0[s].double() if state0 is not None else torch.zeros(N, dtype=torch.float64)
        for t in range(T):
            xr = x if round_x is None else round_x(x.float()).double()
            x = (1 - a) * x + a * torch.tanh(W_in @ inputs[t, s] + W @ xr + b)
            out[t, s] = x
    return out


@pytest.mark.parametrize("density", [None, 0.3], ids=["dense", "csr"])
@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_reference_matches_loop(shape, density):
    N, B, T, D = shape
    args = _problem(N, B, T, D, torch.float64, 1, density=density, per_unit_leak=True)
    got = reservoir_run(*args, backend="reference")
    assert got.shape == (T, B, N)
    assert rel_err(got, _loop_oracle(*args)) < 1e-12


@CPP
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("density", [None, 0.3], ids=["dense", "csr"])
@pytest.mark.parametrize("per_unit_leak", [False, True], ids=["leak1", "leakN"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cpp_matches_reference(shape, density, per_unit_leak, dtype, poisoned_empty):
    N, B, T, D = shape
    seed = hash((shape, density, per_unit_leak)) % 1000
    args = _problem(N, B, T, D, dtype, seed, density=density, per_unit_leak=per_unit_leak,
                    bias=seed % 2 == 0, state0=seed % 3 != 0)
    want = reservoir_run_reference(*args)
    got = reservoir_run(*args, backend="cpp")
    assert got.shape == want.shape == (T, B, N) and got.dtype == dtype
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    assert rel_err(got, want) < tol


@CPP
@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("density", [None, 0.2], ids=["dense", "csr"])
@pytest.mark.parametrize("B", [1, 19])
def test_keep_variants(backend, density, B, poisoned_empty):
    N, T, D = 23, 9, 2
    args = _problem(N, B, T, D, torch.float32, 5, density=density)
    full = reservoir_run_reference(*args)
    last = reservoir_run(*args, keep="last", backend=backend)
    assert last.shape == (1, B, N)
    assert rel_err(last, full[-1:]) < RTOL_REDUCTION
    idx = [4, 0, -1, 4]  # any order, negative, repeated
    got = reservoir_run(*args, keep=idx, backend=backend)
    assert got.shape == (4, B, N)
    assert rel_err(got, full[[4, 0, T - 1, 4]]) < RTOL_REDUCTION
    got = reservoir_run(*args, keep=torch.tensor([2, 6]), backend=backend)
    assert rel_err(got, full[[2, 6]]) < RTOL_REDUCTION
    # Keeping only early steps stops the run early: same values.
    got = reservoir_run(*args, keep=[0, 1], backend=backend)
    assert rel_err(got, full[:2]) < RTOL_REDUCTION


@CPP
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_noncontiguous_and_static_inputs(backend):
    N, B, T, D = 37, 5, 6, 784
    g = torch.Generator().manual_seed(3)
    W = torch.randn(N, N, generator=g).T * (0.9 / math.sqrt(N))  # a transposed view
    W_in = torch.randn(D, N, generator=g).T * 0.05
    images = torch.rand(B, D, generator=g)
    seq = image_sequence(images, "static", steps=T)  # stride 0 along time
    assert seq.stride(0) == 0
    leak = torch.rand(2 * N, generator=g)[::2] * 0.5 + 0.5  # a strided per-unit leak
    x0 = torch.rand(N, B, generator=g).T
    want = reservoir_run_reference(W.contiguous(), W_in.contiguous(), seq.contiguous(), leak.contiguous(),
                                   None, x0.contiguous())
    got = reservoir_run(W, W_in, seq, leak, None, x0, backend=backend)
    assert rel_err(got, want) < RTOL_REDUCTION
    x0_copy = x0.clone()
    reservoir_run(W, W_in, seq, leak, None, x0, backend=backend)
    assert torch.equal(x0, x0_copy)  # state0 is not modified


@CPP
@pytest.mark.parametrize("dtype, N", [(torch.float32, 1261), (torch.float64, 893)], ids=["f32", "f64"])
def test_cpp_loop_with_a_matrix_outgrowing_the_l2s(dtype, N):
    # The C++ time loop (B 2-10) switches to the two-step path's vector width once W reaches
    # 6 MB (kLoopWideMinBytes in csrc/reservoir_run.cpp): the smallest such N per dtype, with
    # pairs of samples and one left over, and a row count that leaves a partial row group.
    assert N * N * torch.finfo(dtype).bits // 8 >= 6 << 20
    args = _problem(N, 3, 3, 2, dtype, 5, per_unit_leak=True)
    want = _loop_oracle(*args)
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    assert rel_err(reservoir_run(*args, backend="cpp"), want) < tol


@CPP
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("chunk", [4, 8, 12, 192])
@pytest.mark.parametrize("N, T", [(1, 1), (2, 3), (5, 2), (37, 8), (61, 29), (130, 5)], ids=str)
def test_cpp_two_step_path_matches_reference(N, T, chunk, dtype, monkeypatch, poisoned_empty):
    # Batch 1, dense: the path that reads W once per two steps (forward / backward passes over
    # chunks of rows, partial sums carried between passes), forced on at small N; chunks of
    # 4-12 rows make many chunks, a partial last chunk and rows that are not a multiple of 4.
    mod = sys.modules["bpalts.ops.reservoir_run"]  # the module (the package exports the function)

    monkeypatch.setattr(mod, "CPP_TWO_STEP_MIN_BYTES", 0)
    monkeypatch.setattr(mod, "CPP_TWO_STEP_CHUNK", chunk)
    seed = hash((N, T, chunk)) % 1000
    args = _problem(N, 1, T, 2, dtype, seed, per_unit_leak=seed % 2 == 0, bias=seed % 3 != 0,
                    state0=seed % 5 != 0)
    want = _loop_oracle(*args)
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    got = reservoir_run(*args, backend="cpp")
    assert got.shape == (T, 1, N) and got.dtype == dtype
    assert rel_err(got, want) < tol
    # kept steps: the last only (the run stops there), an early subset in any order
    assert rel_err(reservoir_run(*args, keep="last", backend="cpp"), want[-1:]) < tol
    idx = [T - 1, 0, T // 2]
    assert rel_err(reservoir_run(*args, keep=idx, backend="cpp"), want[idx]) < tol


@CPP
def test_cpp_two_step_path_static_input_and_bad_arguments(monkeypatch):
    mod = sys.modules["bpalts.ops.reservoir_run"]  # the module (the package exports the function)

    monkeypatch.setattr(mod, "CPP_TWO_STEP_MIN_BYTES", 0)
    monkeypatch.setattr(mod, "CPP_TWO_STEP_CHUNK", 8)
    N, T = 45, 7
    g = torch.Generator().manual_seed(4)
    W = torch.randn(N, N, generator=g) * (0.9 / math.sqrt(N))
    W_in = torch.randn(N, 784, generator=g) * 0.05
    seq = image_sequence(torch.rand(1, 784, generator=g), "static", steps=T)  # stride 0 in time
    assert seq.stride(0) == 0
    want = reservoir_run_reference(W, W_in, seq.contiguous(), 0.4)
    assert rel_err(reservoir_run(W, W_in, seq, 0.4, backend="cpp"), want) < RTOL_REDUCTION
    # The binding itself rejects what the dispatch never passes: batch > 1, a bad chunk.
    C = bpalts._backend.cpp_module()
    U = torch.zeros(T * 2, N)
    slots = torch.arange(T, dtype=torch.int64)
    out = torch.empty(T * 2, N)
    with pytest.raises(ValueError, match="batch 1"):
        C.reservoir_run_dense_two_step(W.numpy(), U.numpy(), 2, torch.zeros(2, N).numpy(),
                                       torch.ones(1, N).numpy(), slots.numpy(), out.numpy(), 8)
    for chunk in (0, 6, -4):
        with pytest.raises(ValueError, match="chunk"):
            C.reservoir_run_dense_two_step(W.numpy(), U[:T].numpy(), 1, torch.zeros(1, N).numpy(),
                                           torch.ones(1, N).numpy(), slots.numpy(), out[:T].numpy(),
                                           chunk)


_THREADS_SCRIPT = """
import hashlib, math, sys, torch
import bpalts.ops.reservoir_run
mod = sys.modules["bpalts.ops.reservoir_run"]
mod.CPP_TWO_STEP_MIN_BYTES = 0
mod.CPP_TWO_STEP_CHUNK = 8
g = torch.Generator().manual_seed(2)
N = 600
W = torch.randn(N, N, generator=g) * (0.9 / math.sqrt(N))
Ws = (W * (torch.rand(N, N, generator=g) < 0.1)).to_sparse_csr()
W_in = torch.randn(N, 1, generator=g)
u = torch.rand(40, 1, 1, generator=g)
for w in (W, Ws):
    out = mod.reservoir_run(w, W_in, u, 0.4, backend="cpp")
    print(hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


@CPP
def test_cpp_batch1_paths_do_not_depend_on_the_thread_count():
    # The C++ module docs promise sums in a fixed order whatever the thread count: the two-step
    # dense path (rows split among the threads inside each chunk by their measured speeds, so
    # the split itself differs from run to run; counters between chunks) and
    # the CSR path, bit for bit at 1, 2 and 3 OpenMP threads (3: more threads than this CI's
    # cores, so the counters' waits also see descheduled threads).
    outs = stdout_words_per_thread_count(_THREADS_SCRIPT)
    assert len(outs[0]) == 2 and outs[0] == outs[1] == outs[2]


@CPP
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("index_dtype", ["uint16", "int32"])
def test_cpp_csr_binding_both_index_widths(index_dtype, B):
    # The dispatch passes 2-byte column indices up to 65536 units and 4-byte ones above; both
    # go through the binding here at a small N. Row lengths 0..N cover the batch-1 row product's
    # 16- and 8-wide vector parts and its scalar tail.
    import numpy as np

    N, T = 41, 6
    g = torch.Generator().manual_seed(11)
    dense = torch.randn(N, N, generator=g) * (0.9 / math.sqrt(N))
    dense = dense * (torch.arange(N)[None, :] < torch.arange(N)[:, None])  # row i: i nonzeros
    W = dense.to_sparse_csr()
    U = torch.randn(T, B, N, generator=g) * 0.5
    x0 = torch.rand(B, N, generator=g) * 2 - 1
    leak = torch.rand(1, N, generator=g) * 0.9 + 0.1
    want, x = [], x0.double()
    for t in range(T):
        x = x + leak.double() * (torch.tanh(U[t].double() + x @ dense.double().T) - x)
        want.append(x)
    want = torch.stack(want)
    out = torch.empty(T * B, N)
    C = bpalts._backend.cpp_module()
    C.reservoir_run_csr(W.crow_indices().to(torch.int64).contiguous().numpy(),
                        W.col_indices().numpy().astype(np.dtype(index_dtype)),
                        W.values().contiguous().numpy(), U.reshape(T * B, N).numpy(), B,
                        x0.numpy(), leak.numpy(), torch.arange(T, dtype=torch.int64).numpy(),
                        out.numpy())
    assert rel_err(out.view(T, B, N), want) < RTOL_REDUCTION


@CPP
def test_auto_picks_cpp_and_pixel_benchmark_shape_short():
    # The benchmark layout (B=1, D=1 pixel sequence) at N=2000, a few steps: cpp == reference.
    N, T = 2000, 12
    g = torch.Generator().manual_seed(9)
    W = torch.randn(N, N, generator=g) * (0.9 / math.sqrt(N))
    W_in = torch.randn(N, 1, generator=g)
    u = image_sequence(torch.rand(1, 784, generator=g), "pixels")[:T]
    assert bpalts._backend.resolve_backend("auto", "cpu") == "cpp"
    want = reservoir_run_reference(W, W_in, u, 0.5)
    assert rel_err(reservoir_run(W, W_in, u, 0.5), want) < RTOL_REDUCTION
    Ws = (W * (torch.rand(N, N, generator=g) < 0.05)).to_sparse_csr()
    want = reservoir_run_reference(Ws, W_in, u, 0.5)
    assert rel_err(reservoir_run(Ws, W_in, u, 0.5, backend="cpp"), want) < RTOL_REDUCTION


def test_leak_one_is_plain_esn():
    N, B, T, D = 11, 2, 4, 3
    W, W_in, u, _, b, x0 = _problem(N, B, T, D, torch.float64, 4)
    got = reservoir_run(W, W_in, u, 1.0, b, x0, backend="reference")
    x = x0
    for t in range(T):
        x = torch.tanh(u[t] @ W_in.T + x @ W.T + b)
    assert rel_err(got[-1], x) < 1e-12


# ---------------------------------------------------------------------------------------------
# image_sequence
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("static", [False, True])
def test_reference_tf32_is_the_loop_with_rounded_gemm_operands(static):
    # oracle: the plain loop with every GEMM operand (u_t, W_in, x_{t-1}, W) rounded to TF32
    from bpalts._precision import round_tf32

    W, W_in, inputs, leak, b, x0 = _problem(23, 5, 6, 7, torch.float32, 31)
    if static:
        inputs = inputs[:1].expand(6, 5, 7)
    want = _loop_oracle(round_tf32(W), round_tf32(W_in), round_tf32(inputs.contiguous()), leak, b, x0,
                        round_x=round_tf32)
    got = reservoir_run_reference(W, W_in, inputs, leak, b, x0, precision="tf32")
    # tight: leaving x_{t-1} unrounded gives about 5e-5 here
    assert rel_err(got, want) < 1e-6
    fp32 = reservoir_run_reference(W, W_in, inputs, leak, b, x0)
    assert 1e-6 < rel_err(got, fp32) < 3e-3  # it does round, and stays close
    assert torch.equal(reservoir_run_reference(W, W_in, inputs, leak, b, x0, precision="tf32x3"), fp32)


@CPP
@pytest.mark.parametrize("B", [3, 20])  # the C++ time loop and the batched route
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_cpp_precision_matches_reference(B, precision, poisoned_empty):
    W, W_in, inputs, leak, b, x0 = _problem(37, B, 5, 4, torch.float32, 32)
    want = reservoir_run_reference(W, W_in, inputs, leak, b, x0, keep=[4, 1], precision=precision)
    got = reservoir_run(W, W_in, inputs, leak, b, x0, keep=[4, 1], backend="cpp", precision=precision)
    assert rel_err(got, want) < RTOL_REDUCTION


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_precision_bad_requests(backend):
    W, W_in, inputs, leak, b, x0 = _problem(9, 2, 3, 4, torch.float32, 33)
    with pytest.raises(ValueError, match="precision must be one of"):
        reservoir_run(W, W_in, inputs, leak, backend=backend, precision="bf16")
    Wd, W_ind, inputsd, *_ = _problem(9, 2, 3, 4, torch.float64, 33)
    with pytest.raises(TypeError, match="precision='tf32' needs float32"):
        reservoir_run(Wd, W_ind, inputsd, 0.5, backend=backend, precision="tf32")
    Ws, *_ = _problem(9, 2, 3, 4, torch.float32, 33, density=0.3)
    with pytest.raises(ValueError, match="precision='tf32x3' needs a dense W"):
        reservoir_run(Ws, W_in, inputs, 0.5, backend=backend, precision="tf32x3")


def test_image_sequence_modes():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 784, generator=g)
    rows = image_sequence(img, "rows")
    assert rows.shape == (28, 3, 28)
    for r in (0, 13, 27):
        assert torch.equal(rows[r], img[:, r * 28:(r + 1) * 28])
    pix = image_sequence(img.view(3, 28, 28), "pixels")
    assert pix.shape == (784, 3, 1)
    assert torch.equal(pix[:, :, 0], img.T)
    st = image_sequence(img, "static", steps=5)
    assert st.shape == (5, 3, 784)
    assert all(torch.equal(st[t], img) for t in range(5))


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(mode="static"), ValueError, "steps is required"),
        (dict(mode="static", steps=0), ValueError, r"steps must be >= 1 \(steps to hold the image\), got 0"),
        (dict(mode="static", steps=2.0), TypeError, "steps must be an int, got float"),
        (dict(mode="rows", steps=10), ValueError, "steps must be None or 28"),
        (dict(mode="columns"), ValueError, "mode must be one of"),
    ],
)
def test_image_sequence_bad(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        image_sequence(torch.rand(2, 784), **kwargs)


def test_image_sequence_bad_images():
    with pytest.raises(ValueError, match="images must be"):
        image_sequence(torch.rand(2, 783), "rows")
    with pytest.raises(TypeError, match="images must be floating point"):
        image_sequence(torch.zeros(2, 784, dtype=torch.uint8), "rows")
    with pytest.raises(ValueError, match="empty batch"):
        image_sequence(torch.rand(0, 784), "rows")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def _ok(N=6, B=2, T=3, D=4):
    return _problem(N, B, T, D, torch.float32, 0)


def _bad_csr(kind):
    N = 4
    crow = torch.tensor([0, 2, 3, 3, 4])
    col = {"unsorted": [3, 1, 0, 2], "range": [0, 5, 0, 2], "dup": [1, 1, 0, 2]}[kind]
    return torch.sparse_csr_tensor(crow, torch.tensor(col), torch.rand(4), (N, N), check_invariants=False)


BACKENDS = ["reference"] + (["cpp"] if "cpp" in bpalts.available_backends("cpu") else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "change, exc, msg",
    [
        (lambda a: a.update(W=torch.rand(6, 5)), ValueError, "W must be square"),
        (lambda a: a.update(W=torch.rand(6)), ValueError, r"W must be 2-D \(units, units\)"),
        (lambda a: a.update(W=torch.rand(5, 5)), ValueError, "W_in has 6 units but W has 5"),
        (lambda a: a.update(W_in=torch.rand(6, 3)), ValueError, "inputs has 4 input features but W_in expects 3"),
        (lambda a: a.update(inputs=torch.rand(0, 2, 4)), ValueError, "sequence of length 0"),
        (lambda a: a.update(inputs=torch.rand(3, 0, 4)), ValueError, "inputs has an empty batch"),
        (lambda a: a.update(inputs=torch.rand(2, 4)), ValueError, r"inputs must be 3-D \(time, batch, inputs\)"),
        (lambda a: a.update(inputs=torch.rand(3, 2, 4, dtype=torch.float64)), TypeError, "inputs has dtype torch.float64 but W"),
        (lambda a: a.update(W=torch.rand(6, 6, dtype=torch.float16)), TypeError, "W must have dtype float32 or float64"),
        (lambda a: a.update(W_in=torch.rand(6, 4, device="meta")), ValueError, "W_in is on meta but W is on cpu"),
        (lambda a: a.update(leak=0.0), ValueError, r"leak must lie in \(0, 1\]"),
        (lambda a: a.update(leak=1.5), ValueError, r"leak must lie in \(0, 1\]"),
        (lambda a: a.update(leak=float("nan")), ValueError, r"leak must lie in \(0, 1\]"),
        (lambda a: a.update(leak="0.5"), TypeError, "leak must be a real number"),
        (lambda a: a.update(leak=torch.tensor([0.5, 0.5, 0.0, 0.5, 0.5, 0.5])), ValueError, r"leak must lie in \(0, 1\] for every unit"),
        (lambda a: a.update(leak=torch.full((5,), 0.5)), ValueError, "leak has 5 entries but W has 6 units"),
        (lambda a: a.update(bias=torch.rand(5)), ValueError, "bias has 5 entries but W has 6"),
        (lambda a: a.update(state0=torch.rand(3, 6)), ValueError, r"state0 must have shape \(batch, units\) = \(2, 6\)"),
        (lambda a: a["inputs"].__setitem__((1, 0, 2), float("nan")), ValueError, "inputs contains NaN"),
        (lambda a: a["W_in"].__setitem__((1, 2), float("inf")), ValueError, "W_in contains NaN"),
        (lambda a: a.update(state0=torch.full((2, 6), float("nan"))), ValueError, "state0 contains NaN"),
        (lambda a: a.update(keep="first"), ValueError, "keep must be one of"),
        (lambda a: a.update(keep=[0, 3]), ValueError, "keep holds step 3, outside the sequence of T=3"),
        (lambda a: a.update(keep=[]), ValueError, "keep is an empty sequence"),
        (lambda a: a.update(keep=[0.5]), TypeError, "keep must hold integer step indices"),
        (lambda a: a.update(keep=torch.tensor([0.0])), TypeError, "keep must hold integer step indices"),
        (lambda a: a.update(W=torch.rand(4, 4).to_sparse_coo()), TypeError, "W must be a dense .* or sparse CSR"),
        (lambda a: a.update(W=_bad_csr("unsorted"), W_in=torch.rand(4, 4), bias=None, state0=None), ValueError, "sorted and unique within each row"),
        (lambda a: a.update(W=_bad_csr("dup"), W_in=torch.rand(4, 4), bias=None, state0=None), ValueError, "sorted and unique within each row"),
        (lambda a: a.update(W=_bad_csr("range"), W_in=torch.rand(4, 4), bias=None, state0=None), ValueError, "column indices out of range"),
        (lambda a: a.update(W=[[1.0]]), TypeError, "W must be a torch.Tensor"),
    ],
)
def test_bad_input(backend, change, exc, msg):
    W, W_in, inputs, leak, bias, x0 = _ok()
    a = dict(W=W, W_in=W_in, inputs=inputs, leak=leak, bias=bias, state0=x0)
    change(a)
    keep = a.pop("keep", "all")
    with pytest.raises(exc, match=msg):
        reservoir_run(**a, keep=keep, backend=backend)


def test_bad_backend():
    W, W_in, inputs, *_ = _ok()
    with pytest.raises(ValueError, match="backend must be one of"):
        reservoir_run(W, W_in, inputs, backend="cuda")


def test_triton_needs_cuda_or_interpreter():
    # Decided at run time: the Triton test module sets TRITON_INTERPRET=1 when it is collected.
    if bpalts._backend.triton_available(torch.device("cpu")):
        pytest.skip("the Triton interpreter is on in this process: triton runs on CPU tensors")
    W, W_in, inputs, *_ = _ok()
    with pytest.raises(ValueError, match="triton backend needs"):
        reservoir_run(W, W_in, inputs, backend="triton")
