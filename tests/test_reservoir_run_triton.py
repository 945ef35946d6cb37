"""reservoir_run's Triton kernels against the reference, on the CPU under TRITON_INTERPRET=1.

Covered: the per-step unit-block kernel (batches <= 8), the per-step GEMM kernel (larger
batches, tiles 64 x 64 x 32), and the persistent kernel with one program (its spin barrier
would deadlock with more programs in the interpreter, where they run one after another; the
multi-program barrier runs on the GPU in bench/gpu.py). Shapes stay small: the interpreter is
slow. The variable is set before Triton compiles anything in this process.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops.reservoir_run import image_sequence, reservoir_run, reservoir_run_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, LaunchSpy, ReplayCalls, rel_err  # noqa: E402

pytestmark = [
    pytest.mark.skipif("triton" not in bpalts.available_backends("cpu"),
                       reason="Triton interpreter unavailable"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
]

# (units N, batch B, steps T, inputs D): 1s, primes, N not a multiple of 16 / 64, B on both
# sides of the small-batch limit (8) and of the GEMM tile (64 rows).
SHAPES = [(1, 1, 1, 1), (37, 3, 5, 5), (17, 1, 4, 1), (70, 9, 3, 28), (23, 67, 2, 3)]


def _problem(N, B, T, D, seed, per_unit_leak):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, N, generator=g) * (0.9 / math.sqrt(N))
    W_in = torch.randn(N, D, generator=g)
    inputs = torch.rand(T, B, D, generator=g) * 2 - 1
    leak = (torch.rand(N, generator=g) * 0.9 + 0.1) if per_unit_leak else 0.4
    bias = torch.randn(N, generator=g) * 0.1
    x0 = torch.rand(B, N, generator=g) * 2 - 1
    return W, W_in, inputs, leak, bias, x0


@pytest.mark.parametrize("batched_gemm", ["cublas", "triton"])  # B > 8: either GEMM
@pytest.mark.parametrize("per_unit_leak", [False, True], ids=["leak1", "leakN"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_reference(shape, per_unit_leak, batched_gemm, monkeypatch, poisoned_empty):
    from bpalts.kernels import reservoir_run as tk

    monkeypatch.setattr(tk, "BATCHED_GEMM", batched_gemm)
    N, B, T, D = shape
    W, W_in, inputs, leak, bias, x0 = _problem(N, B, T, D, sum(shape), per_unit_leak)
    if per_unit_leak:
        bias, x0 = None, None  # also the defaults
    want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0)
    got = reservoir_run(W, W_in, inputs, leak, bias, x0, backend="triton")
    assert got.shape == (T, B, N)
    assert rel_err(got, want) < RTOL_REDUCTION


@pytest.mark.parametrize("keep", ["all", "last", [3, 0, -1]], ids=str)
@pytest.mark.parametrize("B", [1, 5])
def test_persistent_kernel_one_program(B, keep, poisoned_empty):
    from bpalts.kernels import reservoir_run as tk

    N, T, D = 37, 5, 2  # 3 unit blocks of 16: the program loops over blocks and steps
    W, W_in, inputs, leak, bias, x0 = _problem(N, B, T, D, 7 + B, True)
    want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0, keep=keep)
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, persistent=True, n_programs=1)
    assert got.shape == want.shape
    assert rel_err(got, want) < RTOL_REDUCTION


@pytest.mark.parametrize("keep", ["all", [2, -1, 0]], ids=str)
@pytest.mark.parametrize("N", [1, 13, 16])
def test_persistent_resident_w(N, keep, poisoned_empty):
    """B = 1 with one unit block per program: W's slice stays in registers across steps."""
    from bpalts.kernels import reservoir_run as tk

    T, D = 5, 3
    W, W_in, inputs, leak, bias, x0 = _problem(N, 1, T, D, 20 + N, True)
    want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0, keep=keep)
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, persistent=True,
                           n_programs=1, resident=True)
    assert rel_err(got, want) < RTOL_REDUCTION
    # the streaming variant of the same kernel agrees
    got2 = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, persistent=True,
                            n_programs=1, resident=False)
    assert rel_err(got2, want) < RTOL_REDUCTION


@pytest.mark.parametrize("keep", ["all", "last", [2, -1, 0]], ids=str)
@pytest.mark.parametrize("N", [1, 13, 16])
@pytest.mark.parametrize("with_x0", [False, True])
def test_persistent_resident_ll_sync(N, keep, with_x0, poisoned_empty):
    """sync="ll": the resident kernel with tagged states instead of the grid barrier (one program
    here: under the interpreter the programs run one after another)."""
    from bpalts.kernels import reservoir_run as tk

    T, D = 6, 3
    W, W_in, inputs, leak, bias, x0 = _problem(N, 1, T, D, 40 + N, True)
    x0 = x0 if with_x0 else None
    want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0, keep=keep)
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, persistent=True,
                           n_programs=1, sync="ll")
    assert got.shape == want.shape
    assert rel_err(got, want) < RTOL_REDUCTION
    assert torch.equal(got, tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep,
                                             persistent=True, n_programs=1, resident=True))


def test_default_sync_applies_to_the_resident_kernel_only(monkeypatch, poisoned_empty):
    from bpalts.kernels import reservoir_run as tk

    spy_ll = LaunchSpy(tk._ll_resident_kernel)
    monkeypatch.setattr(tk, "_ll_resident_kernel", spy_ll)
    monkeypatch.setattr(tk, "DEFAULT_SYNC", "ll")
    W, W_in, inputs, leak, bias, x0 = _problem(13, 1, 4, 2, 61, True)
    want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0)
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, persistent=True, n_programs=1)
    assert len(spy_ll.grids) == 1 and rel_err(got, want) < RTOL_REDUCTION
    W, W_in, inputs, leak, bias, x0 = _problem(37, 1, 4, 2, 62, True)  # 3 unit blocks: streamed
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, persistent=True, n_programs=1)
    assert len(spy_ll.grids) == 1  # the barrier kernel ran
    assert rel_err(got, reservoir_run_reference(W, W_in, inputs, leak, bias, x0)) < RTOL_REDUCTION


def test_ll_kernel_gives_up_instead_of_hanging():
    # x0 tagged 7 instead of 0: the only program never sees the tags it waits for, spins
    # max_spins times at step 0, reports it in status and runs on without waiting.
    from bpalts.kernels import reservoir_run as tk

    N, T = 5, 3
    W = torch.randn(N, N) * 0.3
    U = torch.randn(T, 1, N)
    buf = torch.zeros((2, N), dtype=torch.int64)
    buf[1] = 7 << 32
    out = torch.empty((T, 1, N))
    status = torch.zeros(1, dtype=torch.int32)
    tk._ll_resident_kernel[(1,)](W, W.stride(0), W.stride(1), U, U.stride(0), U.stride(2),
                                 torch.full((N,), 0.5), buf, out, status, status, T, N, 3,
                                 KEEP=tk.KEEP_ALL, BLOCK_N=16, K_PAD=16)
    assert status.tolist() == [1]
    assert torch.isfinite(out).all()


def test_ll_sync_bad_requests():
    from bpalts.kernels import reservoir_run as tk

    W, W_in, inputs, leak, bias, x0 = _problem(37, 1, 3, 2, 5, True)
    with pytest.raises(ValueError, match="sync must be one of"):
        tk.reservoir_run(W, W_in, inputs, leak, persistent=True, n_programs=1, sync="grid")
    with pytest.raises(ValueError, match="sync='ll' needs the resident kernel"):  # 3 unit blocks
        tk.reservoir_run(W, W_in, inputs, leak, persistent=True, n_programs=1, sync="ll")


@pytest.mark.parametrize("B", [3, 11])  # a small-batch kernel, the batched GEMM path
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_precision_reaches_the_gemm_kernel(B, precision, monkeypatch, poisoned_empty):
    """The batched path's tl.dot gets input_precision=precision (the interpreter multiplies in
    fp32, so the numerics are bench/gpu.py's to check); tf32 is held to the tf32 tolerance of
    the tf32 reference, tf32x3 to the fp32 tolerance of the fp32 reference."""
    from bpalts.kernels import reservoir_run as tk

    monkeypatch.setattr(tk, "BATCHED_GEMM", "triton")  # the fused GEMM step, not cuBLAS
    monkeypatch.setattr(tk, "BATCHED_GEMM_TF32X3", "triton")
    spy = LaunchSpy(tk._gemm_step_kernel)
    monkeypatch.setattr(tk, "_gemm_step_kernel", spy)
    W, W_in, inputs, leak, bias, x0 = _problem(40, B, 4, 6, 50 + B, True)
    got = reservoir_run(W, W_in, inputs, leak, bias, x0, backend="triton", precision=precision)
    if precision == "tf32":
        want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0, precision="tf32")
        assert rel_err(got, want) < 3e-3
    else:
        want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0)
        assert rel_err(got, want) < RTOL_REDUCTION
    assert [k["PREC"] for k in spy.kwargs] == ([precision] * 4 if B > tk.SMALL_BATCH_MAX else [])


@pytest.mark.parametrize("B", [2, 11])
def test_keep_static_and_strided(B, poisoned_empty):
    N, T = 19, 4
    g = torch.Generator().manual_seed(B)
    W = torch.randn(N, N, generator=g).T * (0.9 / math.sqrt(N))  # transposed view
    W_in = torch.randn(N, 784, generator=g) * 0.05
    seq = image_sequence(torch.rand(B, 784, generator=g), "static", steps=T)  # time stride 0
    full = reservoir_run_reference(W.contiguous(), W_in, seq.contiguous(), 0.6)
    got = reservoir_run(W, W_in, seq, 0.6, keep=[2, 0, 2], backend="triton")
    assert rel_err(got, full[[2, 0, 2]]) < RTOL_REDUCTION
    got = reservoir_run(W, W_in, seq, 0.6, keep="last", backend="triton")
    assert rel_err(got, full[-1:]) < RTOL_REDUCTION


def test_triton_bad_input():
    from bpalts.kernels import reservoir_run as tk

    W, W_in, inputs, leak, bias, x0 = _problem(5, 2, 2, 3, 0, False)
    with pytest.raises(TypeError, match="W must have dtype float32"):
        reservoir_run(W.double(), W_in.double(), inputs.double(), backend="triton")
    with pytest.raises(ValueError, match="triton backend needs a dense W"):
        reservoir_run(W.to_sparse_csr(), W_in, inputs, backend="triton")
    with pytest.raises(ValueError, match="inputs contains NaN"):
        reservoir_run(W, W_in, torch.full_like(inputs, float("nan")), backend="triton")
    with pytest.raises(ValueError, match="deadlocks under TRITON_INTERPRET"):
        tk.reservoir_run(W, W_in, inputs, 0.5, persistent=True, n_programs=2)
    with pytest.raises(ValueError, match="resident W needs batch 1"):
        tk.reservoir_run(W, W_in, inputs, 0.5, persistent=True, n_programs=1, resident=True)
    big = torch.rand(2, 9, 3)
    with pytest.raises(ValueError, match="persistent kernel supports batches up to 8"):
        tk.reservoir_run(W, W_in, big, 0.5, persistent=True, n_programs=1)


@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("persistent", [False, True])
def test_runtime_k_loop(persistent, B, monkeypatch, poisoned_empty):
    """The loop over N as a runtime loop (not unrolled) over several K tiles."""
    from bpalts.kernels import reservoir_run as tk

    monkeypatch.setattr(tk, "MAX_UNROLL", 0)
    monkeypatch.setattr(tk, "ACC_ELEMS", 512)  # BLOCK_K = 16: N = 41 takes 3 tiles
    monkeypatch.setattr(tk, "ACC_ELEMS_ONE", 256)
    N, T, D = 41, 3, 2
    W, W_in, inputs, leak, bias, x0 = _problem(N, B, T, D, 11, True)
    assert tk._small_blocks(B, N) == (B, 16, 16, 0)
    want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0)
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, persistent=persistent,
                           n_programs=1 if persistent else None)
    assert rel_err(got, want) < RTOL_REDUCTION


@pytest.mark.parametrize("keep", ["all", "last", [2, 0, 2]], ids=str)
@pytest.mark.parametrize("precision", ["fp32", "tf32", "tf32x3"])
@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (37, 3, 4, 5), (70, 67, 3, 28)], ids=str)
def test_cublas_gemm_path(shape, precision, keep, monkeypatch, poisoned_empty):
    """gemm="cublas": torch.mm for x_{t-1} W^T, then _leak_tanh_kernel (once per step); tf32
    against the tf32 reference (operands rounded on both sides here, so fp32-level agreement),
    tf32x3 (one K-concatenated TF32 GEMM of the split operands) against the fp32 one."""
    from bpalts.kernels import reservoir_run as tk

    spy = LaunchSpy(tk._leak_tanh_kernel)
    monkeypatch.setattr(tk, "_leak_tanh_kernel", spy)
    N, B, T, D = shape
    W, W_in, inputs, leak, bias, x0 = _problem(N, B, T, D, 7 * N + B, per_unit_leak=B != 3)
    W = W.T  # any strides
    want = reservoir_run_reference(W.contiguous(), W_in, inputs, leak, bias, x0, precision=precision)
    sel = keep if isinstance(keep, list) else (slice(None) if keep == "all" else slice(-1, None))
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, precision=precision, gemm="cublas")
    assert got.shape == want[sel].shape
    assert rel_err(got, want[sel]) < RTOL_REDUCTION
    assert len(spy.grids) == (3 if keep == [2, 0, 2] else T)  # steps up to the last kept one
    assert spy.grids[0] == (B, -(-N // tk.EW_BLOCK))


def test_batched_gemm_default(monkeypatch, poisoned_empty):
    """BATCHED_GEMM picks the batched path's GEMM at fp32 / tf32, BATCHED_GEMM_TF32X3 at
    tf32x3: "cublas" reaches _leak_tanh_kernel for batches above SMALL_BATCH_MAX, never for
    small batches."""
    from bpalts.kernels import reservoir_run as tk

    spy = LaunchSpy(tk._leak_tanh_kernel)
    monkeypatch.setattr(tk, "_leak_tanh_kernel", spy)
    monkeypatch.setattr(tk, "BATCHED_GEMM", "cublas")
    monkeypatch.setattr(tk, "BATCHED_GEMM_TF32X3", "triton")
    for B, precision, used in ((11, "fp32", True), (11, "tf32", True), (11, "tf32x3", False),
                               (3, "fp32", False)):
        W, W_in, inputs, leak, bias, x0 = _problem(21, B, 2, 3, B, True)
        n = len(spy.grids)
        got = reservoir_run(W, W_in, inputs, leak, bias, x0, backend="triton", precision=precision)
        want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0,
                                       precision="tf32" if precision == "tf32" else "fp32")
        assert rel_err(got, want) < RTOL_REDUCTION
        assert (len(spy.grids) > n) == used, (B, precision)
    monkeypatch.setattr(tk, "BATCHED_GEMM", "triton")
    monkeypatch.setattr(tk, "BATCHED_GEMM_TF32X3", "cublas")
    for B, precision, used in ((11, "fp32", False), (11, "tf32x3", True), (3, "tf32x3", False)):
        W, W_in, inputs, leak, bias, x0 = _problem(21, B, 2, 3, B, True)
        n = len(spy.grids)
        got = reservoir_run(W, W_in, inputs, leak, bias, x0, backend="triton", precision=precision)
        assert rel_err(got, reservoir_run_reference(W, W_in, inputs, leak, bias, x0)) < RTOL_REDUCTION
        assert (len(spy.grids) > n) == used, (B, precision)


def test_cublas_tf32x3_is_float32_accurate(poisoned_empty):
    """3xTF32 on the cuBLAS path: the split operands are TF32-exact, so the CPU's emulation of a
    TF32 GEMM (operands rounded to TF32, products in float32) forms the tensor cores' (exact)
    products; only the accumulation's rounding differs (bench/gpu.py checks that on a GPU).
    Against a float64 run its error is within a small factor of plain fp32's and far below
    tf32's (whose operands lose 13 bits)."""
    from bpalts.kernels import reservoir_run as tk

    W, W_in, inputs, leak, bias, x0 = _problem(96, 40, 5, 7, 5, True)
    W = W * (1.2 / W.abs().sum(1).max())  # a spectral radius near 1: errors are not damped away
    exact = reservoir_run_reference(*(t.double() if isinstance(t, torch.Tensor) else t
                                      for t in (W, W_in, inputs, leak, bias, x0)))
    err = {p: rel_err(tk.reservoir_run(W, W_in, inputs, leak, bias, x0, precision=p, gemm="cublas").double(),
                      exact) for p in ("fp32", "tf32", "tf32x3")}
    assert err["tf32x3"] < 4 * err["fp32"] + 1e-7, err
    assert err["tf32"] > 30 * err["tf32x3"], err
    # from the zero state (its split is zeros) and keeping the last step only
    exact0 = reservoir_run_reference(*(t.double() if isinstance(t, torch.Tensor) else t
                                       for t in (W, W_in, inputs, leak, bias)), keep="last")
    got0 = tk.reservoir_run(W, W_in, inputs, leak, bias, keep="last", precision="tf32x3", gemm="cublas")
    assert rel_err(got0.double(), exact0) < 4 * err["fp32"] + 1e-7


def test_cublas_gemm_bad_requests():
    from bpalts.kernels import reservoir_run as tk

    W, W_in, inputs, leak, bias, x0 = _problem(9, 2, 2, 3, 1, False)
    with pytest.raises(ValueError, match="gemm must be one of"):
        tk.reservoir_run(W, W_in, inputs, 0.5, gemm="cudnn")
    with pytest.raises(ValueError, match="cannot be persistent"):
        tk.reservoir_run(W, W_in, inputs, 0.5, gemm="cublas", persistent=True, n_programs=1)



@pytest.mark.parametrize("keep", ["all", "last", [2, 0, 2]], ids=str)
@pytest.mark.parametrize("gemm", ["cublas", "triton"])
def test_graphed_steps_fresh_results_and_in_place_w(gemm, keep, monkeypatch, poisoned_empty):
    """GRAPH_MIN_STEPS: the per-step loop through the module's PlainCallGraphs (the CUDA graph
    replaced by a rerun of the captured function, which is what a replay does to the buffers).
    Every call gets its own inputs' result in a fresh tensor; W is read in place (an in-place
    change is seen); the third call captures, later calls replay; a new W or batch is a new
    entry, and the cache keeps GRAPH_CACHE_MAX of them."""
    from bpalts.kernels import _capture
    from bpalts.kernels import reservoir_run as tk

    monkeypatch.setattr(tk, "GRAPH_MIN_STEPS", 1)
    monkeypatch.setattr(tk, "BATCHED_GEMM", gemm)
    monkeypatch.setattr(tk, "_graphs_apply", lambda dev: True)
    captured = []
    monkeypatch.setattr(_capture, "capture", lambda fn: captured.append(ReplayCalls(fn)) or captured[-1])
    monkeypatch.setattr(tk, "_graphs", _capture.PlainCallGraphs(tk.GRAPH_CACHE_MAX))
    W, W_in, inputs, leak, bias, x0 = _problem(23, 11, 4, 3, 7, True)
    outs = []
    for call in range(4):
        x = inputs * (1 + call)  # new inputs every call
        if call == 3:
            W.mul_(0.5)  # in place: the cached entry must see it
        got = tk.reservoir_run(W, W_in, x, leak, bias, x0, keep=keep)
        want = reservoir_run_reference(W, W_in, x, leak, bias, x0, keep=keep)
        assert rel_err(got, want) < RTOL_REDUCTION, call
        outs.append(got)
    assert len(tk._graphs.entries) == 1 and len(captured) == 1 and captured[0].replays == 2  # calls 3-4
    assert len({o.data_ptr() for o in outs}) == 4  # fresh tensors, not the cached buffer
    assert rel_err(outs[1], outs[0]) > 1e-3  # each call's own inputs
    for B, seed in ((11, 8), (12, 9), (13, 10), (14, 11), (15, 12)):  # new W each: new entries
        W, W_in, inputs, leak, bias, x0 = _problem(23, B, 4, 3, seed, False)
        got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep)
        assert rel_err(got, reservoir_run_reference(W, W_in, inputs, leak, bias, x0, keep=keep)) < RTOL_REDUCTION
    assert len(tk._graphs.entries) == tk.GRAPH_CACHE_MAX


def test_graphed_steps_capture_failure_and_where_it_applies(monkeypatch, poisoned_empty):
    """A capture that raises leaves the entry on eager launches (still right); without x0 the
    loop starts from zeros; a held input (time stride 0) is copied in as its one step; below
    GRAPH_MIN_STEPS, on the CPU, or with the switch off (the default) the plain per-step path
    runs."""
    from bpalts.kernels import _capture
    from bpalts.kernels import reservoir_run as tk

    assert tk.GRAPH_MIN_STEPS == 28  # on since the H100 timed it
    assert not tk._graphs_apply(torch.device("cpu"))
    monkeypatch.setattr(tk, "GRAPH_MIN_STEPS", 4)
    monkeypatch.setattr(tk, "_graphs_apply", lambda dev: True)
    monkeypatch.setattr(tk, "_graphs", _capture.PlainCallGraphs(tk.GRAPH_CACHE_MAX))

    def fail(fn):
        raise RuntimeError("capture not supported")

    monkeypatch.setattr(_capture, "capture", fail)
    W, W_in, inputs, leak, bias, _ = _problem(19, 10, 5, 2, 3, False)
    for _ in range(4):
        got = tk.reservoir_run(W, W_in, inputs, leak, bias, None)
        assert rel_err(got, reservoir_run_reference(W, W_in, inputs, leak, bias)) < RTOL_REDUCTION
    (entry,) = tk._graphs.entries.values()
    assert entry.graph is False and entry.seen == 3
    img = torch.rand(10, 2)
    for call in range(3):  # a held image: its own entry, one step copied in
        held = (img + call).unsqueeze(0).expand(5, 10, 2)
        got = tk.reservoir_run(W, W_in, held, leak, bias, None)
        assert rel_err(got, reservoir_run_reference(W, W_in, held, leak, bias)) < RTOL_REDUCTION, call
    (_, entry) = tk._graphs.entries.values()
    assert [tuple(t.shape) for t in entry.static] == [(10, 19), (19,)]
    got = tk.reservoir_run(W, W_in, inputs, leak, bias, None, keep=[2])  # 3 steps < 4: not cached
    assert rel_err(got, reservoir_run_reference(W, W_in, inputs, leak, bias, keep=[2])) < RTOL_REDUCTION
    assert len(tk._graphs.entries) == 2


@pytest.mark.parametrize("sync,N,B", [("ll", 13, 1), ("barrier", 37, 3)])
@pytest.mark.parametrize("keep", ["all", "last", [3, 0, 3]], ids=str)
def test_persistent_graphs_fresh_results(sync, N, B, keep, monkeypatch, poisoned_empty):
    """PERSISTENT_GRAPHS: the small-batch persistent kernel's plain calls through a cached
    PlainCallGraphs entry (the graph emulated by rerunning the captured call). New inputs, leak
    and x0 every call, an in-place change to W, a static (held) input: every result right and
    fresh; one capture per configuration (none for a keep table: plain launches)."""
    from bpalts.kernels import _capture
    from bpalts.kernels import reservoir_run as tk

    captured = []
    monkeypatch.setattr(_capture, "capture", lambda fn: captured.append(ReplayCalls(fn)) or captured[-1])
    monkeypatch.setattr(tk, "PERSISTENT_GRAPHS", True)
    monkeypatch.setattr(tk, "_graphs_apply", lambda dev: True)
    monkeypatch.setattr(tk, "_graphs", _capture.PlainCallGraphs(4))
    W, W_in, inputs, leak, bias, x0 = _problem(N, B, 5, 3, 70 + N, True)
    outs = []
    for call in range(4):
        u, lk, s0 = inputs * (1 + call), leak * (1 - 0.1 * call), x0 + call
        if call == 3:
            W.mul_(0.5)
        want = reservoir_run_reference(W, W_in, u, lk, bias, s0, keep=keep)
        got = tk.reservoir_run(W, W_in, u, lk, bias, s0, keep=keep, persistent=True, n_programs=1,
                               sync=sync)
        assert rel_err(got, want) < RTOL_REDUCTION, call
        outs.append(got)
    if isinstance(keep, list):  # a keep table launches plainly (its slots table is per call)
        assert captured == []
    else:
        assert len(captured) == 1 and captured[0].replays == 2  # captured at the third call
    assert len({o.data_ptr() for o in outs}) == 4  # fresh tensors
    # a held image (time stride 0) without x0: its own entry, the one step copied in
    img = torch.rand(B, 3)
    held = img.unsqueeze(0).expand(5, B, 3)
    for call in range(3):
        want = reservoir_run_reference(W, W_in, held + call, leak, bias, None, keep=keep)
        got = tk.reservoir_run(W, W_in, (img + call).unsqueeze(0).expand(5, B, 3), leak, bias, None,
                               keep=keep, persistent=True, n_programs=1, sync=sync)
        assert rel_err(got, want) < RTOL_REDUCTION, call
    graphed = not isinstance(keep, list)
    assert len(tk._graphs.entries) == 2 * graphed and len(captured) == 2 * graphed
