"""pc_relax / pc_weight_update, Triton backend against the reference, under the interpreter.

TRITON_INTERPRET=1 is set before Triton is imported; the interpreter is slow, so shapes are small
(but include 1, primes, widths that are not multiples of the 32-wide tiles, and several tiles per
layer).
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # noqa: E402  (before anything imports Triton)

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts._checks import DivergenceError  # noqa: E402
from bpalts.ops.pc_relax import pc_relax  # noqa: E402
from bpalts.ops.pc_weight_update import pc_weight_update  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, LaunchSpy, ReplayCalls, rel_err  # noqa: E402
from tests.test_pc_relax import make_net  # noqa: E402

pytestmark = pytest.mark.skipif("triton" not in bpalts.available_backends("cpu"),
                                reason="Triton (interpreter) unavailable")
F64 = torch.float64


def _ref64(Ws, bs, Bs, x, t, steps, **kw):
    d = lambda v: None if v is None else v.double()  # noqa: E731
    return pc_relax([W.double() for W in Ws], x.double(), t.double(), steps, 0.1, backend="reference",
                    biases=None if bs is None else [b.double() for b in bs],
                    feedback=None if Bs is None else [d(b) for b in Bs], **kw)


def _close(got, want, tol=RTOL_REDUCTION):
    # nudged / centred errors are small differences of O(1) states: relative, plus an absolute floor
    return rel_err(got, want) < tol or (got.double() - want).abs().max() < 1e-6


CASES = [
    # (B, widths, output, output_energy, activation, init, feedback, fixed, bias)
    (1, (1, 1), "clamp", "mse", "tanh", "feedforward", False, False, True),
    (19, (7, 37, 5, 3), "clamp", "mse", "tanh", "feedforward", False, False, True),
    (33, (9, 40, 17, 10), "clamp", "ce", "relu", "zeros", True, False, False),
    (5, (6, 11, 7, 4), "nudge_positive", "mse", "leaky_relu", "zeros", False, False, True),
    (5, (6, 11, 7, 4), "nudge_negative", "ce", "tanh", "feedforward", True, False, True),
    (5, (6, 11, 7, 4), "nudge_centred", "ce", "identity", "zeros", False, True, True),
    (7, (6, 11, 7, 4), "clamp", "mse", "tanh", "feedforward", False, True, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-{c[2]}-{c[3]}-{c[4]}-{c[5]}"
                         + ("-fb" if c[6] else "") + ("-fixed" if c[7] else ""))
def test_triton_matches_reference(case, poisoned_empty):
    B, widths, output, oe, act, init, fb, fixed, bias = case
    Ws, bs, Bs, x, t = make_net(widths, B, feedback=fb)
    bs = bs if bias else None
    kw = dict(output=output, output_energy=oe, activation=act, init=init, fixed_predictions=fixed, beta=0.5)
    r = _ref64(Ws, bs, Bs, x, t, 4, **kw)
    c = pc_relax(Ws, x, t, 4, 0.1, biases=bs, feedback=Bs, backend="triton", **kw)
    assert c.steps_run == 4 and c.energy.shape == (4,)
    for got, want in zip(c.states + c.errors, r.states + r.errors):
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert _close(got, want)
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


ROWS_CASES = [
    # (B, widths, activation, init, feedback, bias, output energy): clamped output, live predictions
    (1, (1, 1), "tanh", "feedforward", False, True, "mse"),
    (33, (19, 37, 11, 10), "tanh", "feedforward", False, True, "mse"),  # 3 row blocks
    (5, (9, 70, 31, 17, 4), "relu", "zeros", True, False, "mse"),  # 2 column tiles in layer 1
    (17, (6, 11, 7, 4), "leaky_relu", "feedforward", True, True, "mse"),
    (16, (6, 11, 4), "identity", "zeros", False, True, "mse"),
    (7, (7, 3), "tanh", "feedforward", False, True, "mse"),  # no hidden layer
    (33, (19, 37, 11, 10), "relu", "feedforward", False, True, "ce"),  # the PC learners' setting
    (5, (9, 70, 31, 17, 70), "tanh", "zeros", True, False, "ce"),  # a 70-wide softmax (2 tiles)
    (7, (7, 3), "tanh", "feedforward", False, True, "ce"),
]


@pytest.mark.parametrize("path", ["rows", "persistent"])
@pytest.mark.parametrize("precision", ["fp32", "tf32x3"])
@pytest.mark.parametrize("case", ROWS_CASES, ids=lambda c: f"B{c[0]}-{len(c[1]) - 1}L-{c[2]}-{c[3]}-{c[6]}"
                         + ("-fb" if c[4] else "") + ("" if c[5] else "-nobias"))
def test_triton_one_launch_paths_match_reference(case, precision, path, monkeypatch, poisoned_empty):
    """The two one-launch paths: rows (_rows_kernel: the whole relaxation of 16 rows per
    program) and persistent (_persistent_kernel: the tile tables shared out over the programs,
    grid barriers between phases; one program, as the interpreter runs it: more would deadlock
    at the first barrier, programs running one after another there)."""
    from bpalts.kernels import pc_relax as tk

    if path == "rows":
        monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 1 << 30)
    else:
        monkeypatch.setattr(tk, "PERSISTENT_MAX_ROWS", 1 << 30)
    name = "_rows_kernel" if path == "rows" else "_persistent_kernel"
    spy = LaunchSpy(getattr(tk, name))
    monkeypatch.setattr(tk, name, spy)
    monkeypatch.setattr(tk, "_fwd_kernel", None)  # the tile path's kernels must not run
    monkeypatch.setattr(tk, "_bwd_kernel", None)
    B, widths, act, init, fb, bias, oe = case
    Ws, bs, Bs, x, t = make_net(widths, B, feedback=fb, seed=11)
    bs = bs if bias else None
    kw = dict(activation=act, init=init, output_energy=oe)
    r = _ref64(Ws, bs, Bs, x, t, 5, **kw)
    c = pc_relax(Ws, x, t, 5, 0.1, biases=bs, feedback=Bs, backend="triton", precision=precision, **kw)
    # one launch for the whole relaxation
    assert spy.grids == ([(-(-B // tk.ROWS_BM),)] if path == "rows" else [(1,)])
    assert c.steps_run == 5 and c.energy.shape == (5,)
    for got, want in zip(c.states + c.errors, r.states + r.errors):
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert _close(got, want)
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


def test_triton_rows_path_only_where_it_applies(monkeypatch):
    # nudged outputs, fixed predictions and tol keep the tile path
    from bpalts.kernels import pc_relax as tk

    monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 1 << 30)
    monkeypatch.setattr(tk, "_rows_kernel", None)  # any use would fail
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    for kw in (dict(output="nudge_positive"), dict(output="nudge_centred", output_energy="ce"),
               dict(fixed_predictions=True), dict(tol=1e-3)):
        r = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="reference", **kw)
        c = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="triton", **kw)
        assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


def test_triton_tol_init_list_and_weight_update():
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    r = pc_relax(Ws, x, t, 40, 0.1, biases=bs, tol=1e-2, backend="reference")
    c = pc_relax(Ws, x, t, 40, 0.1, biases=bs, tol=1e-2, backend="triton")
    assert c.steps_run == r.steps_run < 40
    a = pc_relax(Ws, x, t, 2, 0.1, biases=bs, backend="triton")
    b = pc_relax(Ws, x, t, 2, 0.1, biases=bs, init=a.states, backend="triton")
    full = pc_relax(Ws, x, t, 4, 0.1, biases=bs, backend="reference")
    for got, want in zip(b.states, full.states):
        assert rel_err(got, want) < RTOL_REDUCTION
    ur = pc_weight_update(Ws, x, full.states, full.errors, biases=bs, backend="reference")
    W2 = [W.clone() for W in Ws]
    ut = pc_weight_update(W2, x, full.states, full.errors, biases=[v.clone() for v in bs], lr=1.0,
                          backend="triton")
    for W, W0, d in zip(ut.weights, Ws, ur.weights):
        assert rel_err(W - W0, d) < RTOL_REDUCTION


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow inside the interpreter
def test_triton_rejects_float64_and_reports_divergence():
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    with pytest.raises(TypeError, match="x must have dtype float32, got torch.float64"):
        pc_relax([W.double() for W in Ws], x.double(), t.double(), backend="triton")
    with pytest.raises(DivergenceError, match=r"non-finite at relaxation step 7 \(of 10 run\)"):
        pc_relax([W * 3 for W in Ws], x, t, 10, 40.0, activation="identity", backend="triton")
    with pytest.raises(DivergenceError, match=r"non-finite at relaxation step 7 \(of 10 run\)"):
        pc_relax([W * 3 for W in Ws], x, t, 10, 40.0, activation="identity", backend="reference")


def test_triton_big_tiles(monkeypatch):
    # the 64 x 64 tiles used from BIG_ROWS rows on, exercised at a small shape
    from bpalts.kernels import pc_relax as tk

    monkeypatch.setattr(tk, "BIG_ROWS", 16)
    Ws, bs, _, x, t = make_net((5, 70, 66, 3), 67)
    r = _ref64(Ws, bs, None, x, t, 3)
    c = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="triton")
    for got, want in zip(c.states + c.errors, r.states + r.errors):
        assert _close(got, want)
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


@pytest.mark.parametrize("fixed", [False, True])
def test_triton_tf32x3_within_fp32_tolerance(fixed, monkeypatch, poisoned_empty):
    """precision='tf32x3' reaches the kernels as input_precision='tf32x3' and, being fp32-level,
    is held to the fp32 tolerance against the fp32 reference (the interpreter multiplies in fp32;
    bench/gpu.py checks the tensor-core numerics)."""
    from bpalts.kernels import pc_relax as tk

    spy = LaunchSpy(tk._fwd_kernel)
    monkeypatch.setattr(tk, "_fwd_kernel", spy)
    Ws, bs, _, x, t = make_net((19, 37, 11, 10), 33, seed=2)
    r = pc_relax(Ws, x, t, 5, 0.1, backend="reference", biases=bs, fixed_predictions=fixed)
    c = pc_relax(Ws, x, t, 5, 0.1, backend="triton", biases=bs, fixed_predictions=fixed,
                 precision="tf32x3")
    assert spy.kwargs and {k["PREC"] for k in spy.kwargs} == {"tf32x3"}
    for got, want in zip(c.states + c.errors, r.states + r.errors):
        assert _close(got, want)
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


@pytest.mark.parametrize("fixed", [False, True])
def test_triton_tf32(fixed, poisoned_empty):
    """precision='tf32' reaches the kernels (input_precision='tf32'; the interpreter multiplies in
    fp32, so only the plumbing and the tf32 tolerance are checked here; bench/gpu.py times and
    checks the tensor-core path)."""
    Ws, bs, _, x, t = make_net((19, 37, 11, 10), 33, seed=2)
    kw = dict(biases=bs, fixed_predictions=fixed, precision="tf32")
    r = pc_relax(Ws, x, t, 5, 0.1, backend="reference", **kw)
    c = pc_relax(Ws, x, t, 5, 0.1, backend="triton", **kw)
    for got, want in zip(c.states + c.errors, r.states + r.errors):
        assert _close(got, want, tol=3e-3)
    assert rel_err(c.energy, r.energy) < 3e-3


@pytest.mark.parametrize("steps", [1, 3])
def test_pc_learner_steps_agree_on_every_triton_path(steps, monkeypatch, poisoned_empty):
    """PCNetwork's relaxation defaults (relu, clamped cross-entropy) through the tile, rows,
    persistent and cuBLAS paths: the same weights after three training steps, and the same as
    the reference backend. Plain SGD: Adam's first steps are about sign(grad) * lr, which turns rounding-level
    differences in near-zero gradients into whole steps."""
    from bpalts.kernels import pc_relax as tk
    from bpalts.learners.predictive_coding import PCNetwork

    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 20, 36, generator=g)
    y = torch.randint(0, 10, (3, 20), generator=g)
    weights = {}
    for name, backend in (("tiles", "triton"), ("rows", "triton"), ("persistent", "triton"),
                          ("cublas", "triton"), ("reference", "reference")):
        monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 1 << 30 if name == "rows" else 0)
        monkeypatch.setattr(tk, "PERSISTENT_MAX_ROWS", 1 << 30 if name == "persistent" else 0)
        monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 1 if name == "cublas" else 0)
        m = PCNetwork([36, 29, 17, 10], steps=steps, backend=backend, seed=3, optimizer="sgd", lr=0.5)
        for i in range(3):
            m.train_step(x[i], y[i])
        weights[name] = [W.detach().clone() for W in m.weights]
    init = [W.detach() for W in PCNetwork([36, 29, 17, 10], seed=3).weights]
    # it trained (with one step only the top layers move: the error has not reached layer 1)
    assert not torch.equal(weights["tiles"][-1], init[-1])
    for name in ("tiles", "rows", "persistent", "cublas"):
        for got, want, w0 in zip(weights[name], weights["reference"], init):
            assert rel_err(got - w0, want - w0) < RTOL_REDUCTION, name


CUBLAS_CASES = [
    # (B, widths, activation, init, feedback, bias, output energy, fixed): clamped output
    (1, (1, 1), "tanh", "feedforward", False, True, "mse", False),
    (33, (19, 37, 11, 10), "tanh", "feedforward", False, True, "mse", False),
    (5, (9, 70, 31, 17, 4), "relu", "zeros", True, False, "mse", False),
    (17, (6, 11, 7, 4), "leaky_relu", "feedforward", True, True, "mse", True),
    (16, (6, 11, 4), "identity", "zeros", False, True, "mse", False),
    (7, (7, 3), "tanh", "feedforward", False, True, "mse", False),  # no hidden layer
    (33, (19, 37, 11, 10), "relu", "feedforward", False, True, "ce", False),  # the PC learners'
    (5, (9, 70, 31, 17, 70), "tanh", "zeros", True, False, "ce", True),
    (7, (7, 3), "tanh", "feedforward", False, True, "ce", False),
]


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
@pytest.mark.parametrize("case", CUBLAS_CASES, ids=lambda c: f"B{c[0]}-{len(c[1]) - 1}L-{c[2]}-{c[3]}-{c[6]}"
                         + ("-fb" if c[4] else "") + ("" if c[5] else "-nobias") + ("-fixed" if c[7] else ""))
def test_triton_cublas_path_matches_reference(case, precision, monkeypatch, poisoned_empty):
    """The cuBLAS path (GEMMs by torch, one _cublas_ew_kernel per step; on the CPU the GEMMs are
    MKL's and tf32 is emulated by rounding on both sides, so it is held to fp32 tolerance)."""
    from bpalts.kernels import pc_relax as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 1)
    spy = LaunchSpy(tk._cublas_ew_kernel)
    monkeypatch.setattr(tk, "_cublas_ew_kernel", spy)
    monkeypatch.setattr(tk, "_fwd_kernel", None)  # the tile path's kernels must not run
    monkeypatch.setattr(tk, "_bwd_kernel", None)
    B, widths, act, init, fb, bias, oe, fixed = case
    Ws, bs, Bs, x, t = make_net(widths, B, feedback=fb, seed=13)
    bs = bs if bias else None
    kw = dict(activation=act, init=init, output_energy=oe, fixed_predictions=fixed)
    steps = 5
    if precision == "fp32":
        r = _ref64(Ws, bs, Bs, x, t, steps, **kw)
    else:
        r = pc_relax(Ws, x, t, steps, 0.1, biases=bs, feedback=Bs, backend="reference", precision="tf32", **kw)
    c = pc_relax(Ws, x, t, steps, 0.1, biases=bs, feedback=Bs, backend="triton", precision=precision, **kw)
    assert len(spy.grids) == steps + 2  # the first errors, one per step, the last energy
    assert c.steps_run == steps and c.energy.shape == (steps,)
    for got, want in zip(c.states + c.errors, r.states + r.errors):
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert _close(got, want)
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


def test_triton_cublas_path_only_where_it_applies(monkeypatch):
    """CUBLAS_MIN_ROWS: from that batch on (tf32x3 too, run as fp32); nudged outputs and tol
    keep the tile path, and the rows path (ROWS_MAX_ROWS) comes first."""
    from bpalts.kernels import pc_relax as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 6)
    assert tk._path(6, True, False, None, "fp32") == "cublas"
    assert tk._path(6, True, True, None, "tf32") == "cublas"  # fixed predictions: no forward GEMMs
    assert tk._path(5, True, False, None, "fp32") == "tiles"
    assert tk._path(6, False, False, None, "fp32") == "tiles"  # nudged
    assert tk._path(6, True, False, 1e-3, "fp32") == "tiles"
    assert tk._path(6, True, False, None, "tf32x3") == "cublas"
    monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 64)
    assert tk._path(6, True, False, None, "fp32") == "rows"
    monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 0)
    monkeypatch.setattr(tk, "_cublas_ew_kernel", None)  # any use would fail
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    for kw in (dict(output="nudge_positive"), dict(tol=1e-3)):
        r = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="reference", **kw)
        c = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="triton", **kw)
        assert rel_err(c.energy, r.energy) < RTOL_REDUCTION
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 4)
    pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="triton")  # below CUBLAS_MIN_ROWS: tiles


def test_triton_cublas_path_runs_tf32x3_as_fp32(monkeypatch):
    """precision="tf32x3" on the cuBLAS path: fp32 GEMMs (cuBLAS has no 3xTF32), so the fp32
    reference's result, not a TF32-rounded one."""
    from bpalts.kernels import pc_relax as tk

    monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 1)
    spy = LaunchSpy(tk._cublas_ew_kernel)
    monkeypatch.setattr(tk, "_cublas_ew_kernel", spy)
    asked = []
    real_gemm_into = tk.gemm_into

    def gemm_into(out, a, b, precision="fp32", **kw):
        asked.append(precision)
        return real_gemm_into(out, a, b, precision, **kw)

    monkeypatch.setattr(tk, "gemm_into", gemm_into)
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    r = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="reference")
    c = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="triton", precision="tf32x3")
    assert spy.grids and asked and set(asked) == {"fp32"}
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION
    for got, want in zip(c.states, r.states):
        assert _close(got, want)


def test_triton_persistent_path_where_it_applies_and_gives_up(monkeypatch):
    """PERSISTENT_MAX_ROWS after the rows path and before the cuBLAS path; not for nudging,
    fixed predictions or tol. A barrier that never fills (a counter not zeroed: one program
    waits for k * P arrivals that never come) gives up after max_spins and sets status."""
    from bpalts.kernels import pc_relax as tk

    monkeypatch.setattr(tk, "PERSISTENT_MAX_ROWS", 8)
    monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 1)
    assert tk._path(8, True, False, None, "fp32") == "persistent"
    assert tk._path(9, True, False, None, "fp32") == "cublas"
    assert tk._path(8, True, True, None, "fp32") == "cublas"  # fixed predictions
    assert tk._path(8, False, False, None, "fp32") == "tiles"  # nudged
    assert tk._path(8, True, False, 1e-3, "fp32") == "tiles"
    monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 8)
    assert tk._path(8, True, False, None, "fp32") == "rows"
    # give-up: run the kernel by hand with its counter starting at -100
    monkeypatch.setattr(tk, "ROWS_MAX_ROWS", 0)
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    plan = tk._Plan(x.device, 5, (11, 7, 4), 6, 2, "tanh", True, False, False, True, "fp32", "persistent")
    states = [torch.zeros(5, 11), torch.zeros(5, 7), t]
    plan.stage(x, t, states, None)
    plan.derive(Ws, bs, None)
    plan.counter.fill_(-100)
    tk._persistent_kernel[(1,)](
        plan.TF, plan.n_fwd, plan.TB, plan.n_bwd, plan.S, plan.E, plan.MUC, plan.F, plan.D, plan.Wf,
        plan.Wb, plan.T, plan.EP, plan.counter, plan.status, 3, plan.R, plan.off[-2], 4, 2, 0.1,
        PREC="ieee", ACT=0, CE=False, NCOLS=tk.NCOL, BLOCK_M=tk.PERSISTENT_BM, BLOCK_N=tk.PERSISTENT_BN,
        BLOCK_K=tk.BK, BLOCK_R=tk.BR, BLOCK_NL=plan.BNL)
    assert plan.status.tolist() == [1]
    assert torch.isfinite(plan.S).all()  # it ran on without waiting

    real = tk._persistent_kernel

    class StuckCounter:  # the public op's launch, with the counter left at -100 and 3 spins
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                args = list(args)
                args[13].fill_(-100)
                args[15] = 3
                return real[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(tk, "_persistent_kernel", StuckCounter())
    with pytest.raises(RuntimeError, match="gave up waiting at a grid barrier"):
        pc_relax(Ws, x, t, 2, 0.1, biases=bs, backend="triton")


@pytest.mark.parametrize("case", [c for c in CUBLAS_CASES if len(c[1]) > 3],
                         ids=lambda c: f"B{c[0]}-{len(c[1]) - 1}L-{c[2]}-{c[6]}" + ("-fixed" if c[7] else ""))
def test_triton_cublas_concurrent_gemms_are_independent(case, monkeypatch, poisoned_empty):
    """CONCURRENT_GEMMS: each phase's GEMMs (a step's feedback products, then its forward
    products) go to _fork_join as one group, one side stream each. Stood in for on the CPU by
    running each group in reverse order: the result must not change (no GEMM of a group reads
    what another writes)."""
    from bpalts.kernels import pc_relax as tk

    B, widths, activation, init, fb, bias, energy, fixed = case
    monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 1)
    monkeypatch.setattr(tk, "CONCURRENT_GEMMS", True)
    monkeypatch.setattr(tk, "_side_streams", lambda device, n: [f"stream{i}" for i in range(n)])
    groups = []

    def fork_join(launches, streams):
        assert len(launches) <= len(streams) == len(widths) - 2
        groups.append(len(launches))
        for launch in reversed(launches):
            launch()

    monkeypatch.setattr(tk, "_fork_join", fork_join)
    Ws, bs, Bs, x, t = make_net(widths, B, seed=B + len(widths), feedback=fb)
    kw = dict(activation=activation, init=init, output_energy=energy, fixed_predictions=fixed,
              biases=bs if bias else None, feedback=Bs if fb else None)
    r = pc_relax(Ws, x, t, 4, 0.1, backend="reference", **kw)
    c = pc_relax(Ws, x, t, 4, 0.1, backend="triton", **kw)
    L = len(widths) - 1
    per_step = [L - 1] + ([] if fixed else [L - 1])  # feedback group, forward group
    assert groups == ([] if fixed else [L - 1]) + per_step * 4
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION
    for got, want in zip(c.states, r.states):
        assert _close(got, want)



def test_concurrent_gemms_by_precision(monkeypatch):
    """CONCURRENT_GEMMS applies at fp32 (and tf32x3, which the cuBLAS path runs as fp32),
    CONCURRENT_GEMMS_TF32 at tf32: the H100 timed them apart (on / off by default)."""
    from bpalts.kernels import pc_relax as tk

    assert tk._concurrent("fp32") and not tk._concurrent("tf32")
    monkeypatch.setattr(tk, "CONCURRENT_GEMMS", False)
    monkeypatch.setattr(tk, "CONCURRENT_GEMMS_TF32", True)
    assert not tk._concurrent("fp32") and tk._concurrent("tf32")


@pytest.fixture
def cached_plans(monkeypatch):
    """The CUDA plan cache and its graphs on the CPU (graphs emulated); captures recorded."""
    from bpalts.kernels import pc_relax as tk

    captured = []
    monkeypatch.setattr(tk, "_cached", lambda device: True)
    monkeypatch.setattr(tk, "capture", lambda fn: captured.append(ReplayCalls(fn)) or captured[-1])
    monkeypatch.setattr(tk, "_plans", type(tk._plans)())
    monkeypatch.setattr(tk, "FULL_GRAPHS_MAX", 2)
    return captured


@pytest.mark.parametrize("path", ["tiles", "cublas"])
@pytest.mark.parametrize("kind", ["clamp-ff", "zeros-init", "centred-ff", "fixed-ff"])
def test_cached_full_graph_calls(kind, path, cached_plans, monkeypatch, poisoned_empty):
    """FULL_GRAPHS_MAX: the second call with the same parameter tensors captures the whole call
    (feed-forward start, derived buffers, relaxation, energies) and later calls replay it; new
    x and target every call, and an in-place change of the weights, are seen; each call returns
    fresh tensors. A given initial state is staged instead of derived."""
    from bpalts.kernels import pc_relax as tk

    if path == "cublas":
        if kind == "centred-ff":
            return  # nudged: the cuBLAS path is for clamped outputs
        monkeypatch.setattr(tk, "CUBLAS_MIN_ROWS", 1)
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    kw = dict(activation="relu", output_energy="ce", beta=0.5)
    if kind == "zeros-init":
        kw["init"] = "zeros"
    if kind == "centred-ff":
        kw.update(output="nudge_centred", output_energy="mse", activation="tanh")
    if kind == "fixed-ff":
        kw.update(fixed_predictions=True, output_energy="mse")
    outs = []
    for call in range(4):
        xc, tc = x * (1 + 0.3 * call), t.roll(call, 0)
        if call == 3:
            for W in Ws:
                W.mul_(0.9)  # in place: the replayed graph must see it
        c = pc_relax(Ws, xc, tc, 3, 0.1, biases=bs, backend="triton", **kw)
        r = _ref64(Ws, bs, None, xc, tc, 3, **kw)
        for got, want in zip(c.states + c.errors, r.states + r.errors):
            assert _close(got, want), call
        assert rel_err(c.energy, r.energy) < RTOL_REDUCTION, call
        outs.append(c)
    assert len(cached_plans) == 1 and cached_plans[0].replays == 3  # the full graph: calls 2-4
    (plan,) = tk._plans.values()
    assert plan.ff_init == (kind != "zeros-init") and plan.graph is None  # no relaxation-only graph
    ptrs = {o.states[0].data_ptr() for o in outs} | {o.errors[0].data_ptr() for o in outs}
    assert len(ptrs) == 8 and plan.S.data_ptr() not in ptrs  # fresh tensors every call


def test_cached_new_parameter_tensors_every_call(cached_plans, poisoned_empty):
    """Parameters passed as new tensors every call: no full graph (no parameter set repeats),
    the relaxation-only graph (captured at the plan's second call) replays; results stay right.
    Two parameter sets used in turn each get their full graph; FULL_GRAPHS_MAX bounds them."""
    from bpalts.kernels import pc_relax as tk

    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    kw = dict(activation="tanh")
    alive = []  # every call's tensors kept, so that no address comes back
    for call in range(3):
        Wc = [W.clone() * (1 + 0.1 * call) for W in Ws]
        alive.append(Wc)
        c = pc_relax(Wc, x, t, 3, 0.1, biases=bs, backend="triton", **kw)
        r = _ref64(Wc, bs, None, x, t, 3, **kw)
        for got, want in zip(c.states + c.errors, r.states + r.errors):
            assert _close(got, want), call
    (plan,) = tk._plans.values()
    assert plan.graph and plan.graph.replays == 2  # the relaxation-only graph: calls 2-3
    n_full = len(cached_plans) - 1
    sets = [[W.clone() for W in Ws], [W.clone() * 0.5 for W in Ws], [W.clone() * 0.25 for W in Ws]]
    for call in range(6):
        Wc = sets[call % 2]
        c = pc_relax(Wc, x, t, 3, 0.1, biases=bs, backend="triton", **kw)
        r = _ref64(Wc, bs, None, x, t, 3, **kw)
        assert _close(c.states[1], r.states[1]) and _close(c.errors[-1], r.errors[-1]), call
    assert len(cached_plans) - 1 - n_full == 2  # one full graph per parameter set
    pc_relax(sets[2], x, t, 3, 0.1, biases=bs, backend="triton", **kw)
    assert len(plan.full) == tk.FULL_GRAPHS_MAX == 2


def test_cached_full_graph_capture_failure(cached_plans, monkeypatch, poisoned_empty):
    """A full capture that fails leaves that parameter set on the relaxation-only graph."""
    from bpalts.kernels import pc_relax as tk

    calls = []

    def capture(fn):
        calls.append(fn)
        if len(calls) == 1:
            raise RuntimeError("capture not supported")
        return ReplayCalls(fn)

    monkeypatch.setattr(tk, "capture", capture)
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 5)
    for call in range(4):
        c = pc_relax(Ws, x + call, t, 3, 0.1, biases=bs, backend="triton", activation="tanh")
        r = _ref64(Ws, bs, None, x + call, t, 3, activation="tanh")
        assert _close(c.states[1], r.states[1]) and rel_err(c.energy, r.energy) < RTOL_REDUCTION
    (plan,) = tk._plans.values()
    (full,) = plan.full.values()
    assert full.graph is False and plan.graph and plan.graph.replays == 3


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-{c[2]}-{c[3]}-{c[4]}-{c[5]}"
                         + ("-fb" if c[6] else "") + ("-fixed" if c[7] else ""))
def test_cached_path_every_case(case, cached_plans, poisoned_empty):
    """Every configuration of test_triton_matches_reference through the CUDA code path (plan
    cache, full graph captured at the second call, replayed at the third; emulated)."""
    B, widths, output, oe, act, init, fb, fixed, bias = case
    Ws, bs, Bs, x, t = make_net(widths, B, feedback=fb)
    bs = bs if bias else None
    kw = dict(output=output, output_energy=oe, activation=act, init=init, fixed_predictions=fixed, beta=0.5)
    r = _ref64(Ws, bs, Bs, x, t, 4, **kw)
    for call in range(3):
        c = pc_relax(Ws, x, t, 4, 0.1, biases=bs, feedback=Bs, backend="triton", **kw)
        for got, want in zip(c.states + c.errors, r.states + r.errors):
            assert _close(got, want), call
        assert rel_err(c.energy, r.energy) < RTOL_REDUCTION, call
    assert len(cached_plans) == 1 and cached_plans[0].replays == 2
