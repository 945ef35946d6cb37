"""pc_relax: the reference against an autograd oracle (gradient descent on the energy), the C++
backend against the reference, the options' semantics, and bad input.

The Triton backend has its own module (test_pc_relax_triton.py), run under the interpreter.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import bpalts
from bpalts._checks import DivergenceError
from bpalts.ops.pc_relax import pc_relax, pc_relax_reference
from tests._compare_util import RTOL_REDUCTION, rel_err, stdout_words_per_thread_count

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")
F64 = torch.float64

# (batch, widths n_0..n_L): 1s, primes, non-multiples of the vector width (8) and of 32.
SHAPES = [(1, (1, 1)), (1, (3, 1, 2)), (5, (7, 13, 5, 3)), (17, (29, 37, 11, 10)), (33, (9, 64, 31, 17, 4))]
OUTPUTS = ("clamp", "nudge_positive", "nudge_negative", "nudge_centred")
ACTS = ("tanh", "relu", "leaky_relu", "identity")


def make_net(widths, B, dtype=torch.float32, seed=0, bias=True, feedback=False):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(o, i, generator=g, dtype=dtype) / i**0.5 for i, o in zip(widths[:-1], widths[1:])]
    bs = [torch.randn(o, generator=g, dtype=dtype) * 0.1 for o in widths[1:]] if bias else None
    Bs = ([None] + [torch.randn(W.shape, generator=g, dtype=dtype) / W.shape[0] ** 0.5 for W in Ws[1:]]
          if feedback else None)
    x = torch.rand(B, widths[0], generator=g, dtype=dtype)
    t = torch.softmax(2 * torch.randn(B, widths[-1], generator=g, dtype=dtype), 1)
    return Ws, bs, Bs, x, t


def _energy(Ws, bs, x, s, t, act, output, ce, beta_rows, mu_fixed=None):
    """Per-sample energy written straight from the definition (for autograd)."""
    f = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda v: v,
         "leaky_relu": lambda v: torch.nn.functional.leaky_relu(v, 0.01)}[act]
    h, F = x, 0
    for i, W in enumerate(Ws):
        mu = h @ W.T + (bs[i] if bs is not None else 0)
        last = i == len(Ws) - 1
        if last and output == "clamp" and ce:
            F = F - (t * torch.log_softmax(mu, 1)).sum(1)
        else:
            F = F + 0.5 * ((s[i] - mu) ** 2).sum(1)
        h = f(s[i])
    if output != "clamp":
        loss = -(t * torch.log_softmax(s[-1], 1)).sum(1) if ce else 0.5 * ((s[-1] - t) ** 2).sum(1)
        F = F + beta_rows[:, 0] * loss
    return F


def _oracle(Ws, bs, x, t, steps, gamma, act, output, ce, beta, init):
    """x <- x - gamma dF/dx by autograd (free nodes only), float64."""
    B = x.shape[0]
    s = init
    if output == "nudge_centred":
        x, t = torch.cat([x, x]), torch.cat([t, t])
        s = [torch.cat([v, v]) for v in s]
        br = torch.cat([torch.full((B, 1), beta, dtype=F64), torch.full((B, 1), -beta, dtype=F64)])
    else:
        br = torch.full((B, 1), beta if output == "nudge_positive" else -beta, dtype=F64)
    free = len(Ws) if output != "clamp" else len(Ws) - 1
    energies = []
    for _ in range(steps):
        s = [v.detach().requires_grad_(i < free) for i, v in enumerate(s)]
        F = _energy(Ws, bs, x, s, t, act, output, ce, br).sum()
        grads = torch.autograd.grad(F, s[:free]) if free else []
        s = [v - gamma * gr for v, gr in zip(s[:free], grads)] + s[free:]
        with torch.no_grad():
            energies.append(_energy(Ws, bs, x, s, t, act, output, ce, br).mean())
    s = [v.detach() for v in s]
    if output == "nudge_centred":
        s = [(v[:B] + v[B:]) / 2 for v in s]
    return s, torch.stack(energies)


@pytest.mark.parametrize("output,ce,act", list(itertools.product(OUTPUTS, (False, True), ACTS)))
def test_reference_is_gradient_descent_on_the_energy(output, ce, act):
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64, seed=1)
    r = pc_relax(Ws, x, t, 6, 0.2, biases=bs, activation=act, output=output, beta=0.5,
                 output_energy="ce" if ce else "mse", init="zeros", backend="reference")
    init = [torch.zeros(5, n, dtype=F64) for n in (9, 7, 4)]
    if output == "clamp":
        init[-1] = t.clone()
    s, energy = _oracle(Ws, bs, x, t, 6, 0.2, act, output, ce, 0.5, init)
    for got, want in zip(r.states, s):
        assert rel_err(got, want) < 1e-12
    assert rel_err(r.energy, energy) < 1e-12
    assert r.steps_run == 6 and r.energy.shape == (6,)


def test_reference_errors_definition():
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64)
    r = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="reference")
    h = x
    for i, W in enumerate(Ws):
        mu = h @ W.T + bs[i]
        assert rel_err(r.errors[i], r.states[i] - mu) < 1e-12
        h = torch.tanh(r.states[i])
    assert torch.equal(r.states[-1], t)  # clamped
    rc = pc_relax(Ws, x, t, 3, 0.1, biases=bs, output_energy="ce", backend="reference")
    mu = torch.tanh(rc.states[-2]) @ Ws[-1].T + bs[-1]
    assert rel_err(rc.errors[-1], t - torch.softmax(mu, 1)) < 1e-12


def test_feedforward_init_starts_with_zero_hidden_error_and_energy_decreases():
    Ws, bs, _, x, t = make_net((20, 30, 15, 5), 8, F64)
    r = pc_relax(Ws, x, t, 1, 1e-9, biases=bs, backend="reference")
    for e in r.errors[:-1]:
        assert e.abs().max() < 1e-6
    r = pc_relax(Ws, x, t, 50, 0.05, biases=bs, backend="reference")
    assert bool((r.energy[1:] <= r.energy[:-1] + 1e-12).all())


def test_init_states_continue_the_relaxation():
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64)
    for backend in bpalts.available_backends("cpu"):
        if backend == "triton":
            continue
        full = pc_relax(Ws, x, t, 5, 0.1, biases=bs, backend=backend)
        a = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend=backend)
        before = [s.clone() for s in a.states]
        b = pc_relax(Ws, x, t, 2, 0.1, biases=bs, init=a.states, backend=backend)
        assert all(torch.equal(u, v) for u, v in zip(a.states, before))  # init is not modified
        for u, v in zip(b.states, full.states):
            assert rel_err(u, v) < 1e-12
        b2 = pc_relax(Ws, x, t, 2, 0.1, biases=bs, init=a.states[:-1], backend=backend)  # hidden only
        assert all(torch.equal(u, v) for u, v in zip(b.states, b2.states))
        assert rel_err(torch.cat([a.energy, b.energy]), full.energy) < 1e-12


def test_feedback_equal_to_weights_changes_nothing():
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64)
    r = pc_relax(Ws, x, t, 4, 0.1, biases=bs, backend="reference")
    fb = [None] + [W.clone() for W in Ws[1:]]
    r2 = pc_relax(Ws, x, t, 4, 0.1, biases=bs, feedback=fb, backend="reference")
    assert all(torch.equal(u, v) for u, v in zip(r.states, r2.states))
    fb2 = [None] + [W * 2 for W in Ws[1:]]
    r3 = pc_relax(Ws, x, t, 4, 0.1, biases=bs, feedback=fb2, backend="reference")
    assert rel_err(r3.states[0], r.states[0]) > 1e-3


def test_centred_is_half_the_difference_of_the_two_nudges():
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64)
    kw = dict(biases=bs, beta=0.3, backend="reference")
    p = pc_relax(Ws, x, t, 4, 0.1, output="nudge_positive", **kw)
    n = pc_relax(Ws, x, t, 4, 0.1, output="nudge_negative", **kw)
    c = pc_relax(Ws, x, t, 4, 0.1, output="nudge_centred", **kw)
    for i in range(3):
        assert rel_err(c.errors[i], (p.errors[i] - n.errors[i]) / 2) < 1e-12
        assert rel_err(c.states[i], (p.states[i] + n.states[i]) / 2) < 1e-12
    assert rel_err(c.energy, (p.energy + n.energy) / 2) < 1e-12


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_tol_stops_early(backend):
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64)
    r = pc_relax(Ws, x, t, 500, 0.1, biases=bs, tol=1e-4, backend=backend)
    assert 1 < r.steps_run < 500 and r.energy.shape == (r.steps_run,)
    E = r.energy
    assert abs(E[-1] - E[-2]) <= 1e-4 * abs(E[-2])
    assert bool(((E[1:-1] - E[:-2]).abs() > 1e-4 * E[:-2].abs()).all())
    full = pc_relax(Ws, x, t, r.steps_run, 0.1, biases=bs, backend=backend)
    assert all(torch.equal(u, v) for u, v in zip(r.states, full.states))


@CPP
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-" + "-".join(map(str, s[1])))
@pytest.mark.parametrize("output,ce", list(itertools.product(OUTPUTS, (False, True))))
def test_cpp_matches_reference_float64(shape, output, ce, poisoned_empty):
    B, widths = shape
    Ws, bs, Bs, x, t = make_net(widths, B, F64, feedback=True)
    variants = [("tanh", "feedforward", None, False, bs), ("relu", "zeros", Bs, False, None),
                ("leaky_relu", "zeros", None, True, bs), ("identity", "feedforward", Bs, False, bs)]
    for act, init, fb, fixed, bias in variants:
        kw = dict(biases=bias, activation=act, init=init, output=output, output_energy="ce" if ce else "mse",
                  feedback=fb, fixed_predictions=fixed, beta=0.5)
        r = pc_relax(Ws, x, t, 4, 0.1, backend="reference", **kw)
        c = pc_relax(Ws, x, t, 4, 0.1, backend="cpp", **kw)
        for u, v in zip(c.states + c.errors, r.states + r.errors):
            # centred / nudged errors are small differences: relative, plus an absolute floor
            assert rel_err(u, v) < 1e-9 or (u - v).abs().max() < 1e-14, kw
        assert rel_err(c.energy, r.energy) < 1e-9 and c.energy.dtype == F64


@CPP
@pytest.mark.parametrize("shape", SHAPES + [(64, (784, 100, 50, 10))],
                         ids=lambda s: f"B{s[0]}-" + "-".join(map(str, s[1])))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("ce", (False, True))
def test_cpp_matches_reference_float32_clamped(shape, act, ce, poisoned_empty):
    B, widths = shape
    Ws, bs, _, x, t = make_net(widths, B)
    kw = dict(biases=bs, activation=act, output_energy="ce" if ce else "mse", init="zeros")
    r = pc_relax(Ws, x, t, 10, 0.1, backend="reference", **kw)
    c = pc_relax(Ws, x, t, 10, 0.1, backend="cpp", **kw)
    for u, v in zip(c.states + c.errors, r.states + r.errors):
        assert u.dtype == torch.float32 and rel_err(u, v) < RTOL_REDUCTION
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


@CPP
def test_cpp_tanh_accuracy_over_a_wide_range():
    # the hand-vectorised float tanh (small and large arguments, both signs, 0, ties of 8-lanes)
    v = torch.cat([torch.linspace(-12, 12, 4099), torch.tensor([0.0, -0.0, 1e-8, -1e-8, 0.6249, 0.6251, 90.0, -90.0])])
    C = bpalts._backend.cpp_module()
    src = v.reshape(1, -1).contiguous()
    f, d = torch.empty_like(src), torch.empty_like(src)
    C.pc_act([src.numpy()], None, [f.numpy()], [d.numpy()], 0)
    want = torch.tanh(src.double())
    assert (f.double() - want).abs().max() < 3e-7
    assert (d.double() - (1 - want**2)).abs().max() < 1e-6
    C.pc_act([torch.tensor([[float("nan")]]).numpy()], None, [f[:, :1].contiguous().numpy()], None, 0)


@CPP
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_cpp_transpose(dtype):
    # The C++ path keeps its states units-major and transposes them in and out with
    # C.pc_transpose (32 x 32 tiles, parallel above 2^15 elements): partial tiles on both sides,
    # a single row or column, and a matrix large enough for the parallel loop.
    C = bpalts._backend.cpp_module()
    g = torch.Generator().manual_seed(0)
    src = [torch.randn(r, c, generator=g, dtype=dtype) for r, c in ((1, 1), (1, 70), (33, 1), (37, 65), (1000, 256))]
    dst = [torch.full((t.shape[1], t.shape[0]), float("nan"), dtype=dtype) for t in src]
    C.pc_transpose([t.numpy() for t in src], [d.numpy() for d in dst])
    assert all(torch.equal(d, t.T) for d, t in zip(dst, src))
    with pytest.raises(ValueError, match="wrong shape"):
        C.pc_transpose([src[3].numpy()], [src[3].clone().numpy()])


@CPP
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("act_id, slope", [(1, 0.0), (2, 0.01), (3, 1.0)])
def test_cpp_piecewise_linear_activations_exact(act_id, slope, in_place):
    # relu / leaky relu / identity and their derivatives, bit for bit, in place (f aliasing the
    # source, as pc_update does) or not; infinities, signed zeros and a length that is not a
    # multiple of the vector width.
    v = torch.cat([torch.randn(1, 37), torch.tensor([[float("inf"), -float("inf"), 0.0, -0.0, 1e-40, -1e-40]])], 1)
    want_f = torch.where(v > 0, v, v * slope) if act_id != 1 else v.clamp_min(0.0)
    want_d = torch.where(v > 0, torch.ones_like(v), torch.full_like(v, slope))
    C = bpalts._backend.cpp_module()
    src = v.clone()
    f = src if in_place else torch.empty_like(src)
    d = torch.empty_like(src)
    C.pc_act([src.numpy()], None, [f.numpy()], [d.numpy()], act_id)
    assert torch.equal(f, want_f) and torch.equal(d, want_d)
    nan = torch.tensor([[float("nan")]])
    C.pc_act([nan.numpy()], None, [nan.numpy()], None, act_id)
    assert nan.isnan().all()


@CPP
def test_cpp_non_contiguous_and_requires_grad():
    Ws, bs, _, x, t = make_net((7, 13, 5, 3), 6)
    Wnc = [W.T.contiguous().T for W in Ws]  # same values, transposed strides
    xnc = torch.cat([x, x], 1)[:, ::2]
    xnc.copy_(x)
    Wg = [W.clone().requires_grad_() for W in Ws]
    r = pc_relax(Ws, x, t, 5, 0.1, biases=bs, backend="reference")
    for W_, x_ in ((Wnc, xnc), (Wg, x)):
        c = pc_relax(W_, x_, t, 5, 0.1, biases=bs, backend="cpp")
        for u, v in zip(c.states, r.states):
            assert rel_err(u, v) < RTOL_REDUCTION
            assert not u.requires_grad


@CPP
def test_auto_picks_cpp_and_is_deterministic():
    Ws, bs, _, x, t = make_net((50, 40, 30, 10), 40)
    a = pc_relax(Ws, x, t, 5, 0.1, biases=bs)
    b = pc_relax(Ws, x, t, 5, 0.1, biases=bs, backend="cpp")
    assert all(torch.equal(u, v) for u, v in zip(a.states + a.errors, b.states + b.errors))


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_divergence_names_the_step(backend):
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5)
    Ws = [W * 3 for W in Ws]
    with pytest.raises(DivergenceError, match=r"non-finite at relaxation step \d+"):
        pc_relax(Ws, x, t, 200, 40.0, activation="identity", backend=backend)
    try:
        pc_relax(Ws, x, t, 200, 40.0, activation="identity", backend=backend)
    except DivergenceError as exc:
        step = int(str(exc).split("step ")[1].split()[0])
    r = pc_relax(Ws, x, t, step - 1, 40.0, activation="identity", backend="reference")  # finite before
    assert torch.isfinite(r.energy).all()


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_bad_input(backend):
    Ws, bs, Bs, x, t = make_net((6, 9, 7, 4), 5, feedback=True)
    with pytest.raises(ValueError, match=r"weights\[1\] has shape \(7, 8\) \(units, inputs\) "
                                         r"but weights\[0\] has 9 units"):
        pc_relax([Ws[0], torch.randn(7, 8), Ws[2]], x, t, backend=backend)
    with pytest.raises(ValueError, match=r"weights\[0\] has shape \(9, 6\) .* but x has 5 features"):
        pc_relax(Ws, x[:, :5], t, backend=backend)
    with pytest.raises(ValueError, match="target has width 3 but the layer has 4 units"):
        pc_relax(Ws, x, t[:, :3], backend=backend)
    with pytest.raises(ValueError, match="target has batch 4 but x has batch 5"):
        pc_relax(Ws, x, t[:4], backend=backend)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        pc_relax(Ws, x, t, 0, backend=backend)
    with pytest.raises(TypeError, match="steps must be an int"):
        pc_relax(Ws, x, t, 2.5, backend=backend)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        pc_relax(Ws, x, t, 3, 0.0, backend=backend)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        pc_relax(Ws, x, t, 3, -0.1, backend=backend)
    with pytest.raises(ValueError, match="x has an empty batch dimension"):
        pc_relax(Ws, x[:0], t[:0], backend=backend)
    with pytest.raises(TypeError, match="weights must be a non-empty list"):
        pc_relax([], x, t, backend=backend)
    with pytest.raises(TypeError, match="weights must be a non-empty list"):
        pc_relax(Ws[0], x, t, backend=backend)
    with pytest.raises(TypeError, match=r"weights\[1\] must have dtype float32 or float64, got torch.float16"):
        pc_relax([Ws[0], Ws[1].half(), Ws[2]], x, t, backend=backend)
    with pytest.raises(TypeError, match=r"weights\[0\] has dtype torch.float64 but x has torch.float32"):
        pc_relax([Ws[0].double(), Ws[1], Ws[2]], x, t, backend=backend)
    with pytest.raises(ValueError, match="target is on meta but x is on cpu"):
        pc_relax(Ws, x, t.to("meta"), backend=backend)
    with pytest.raises(ValueError, match=r"biases\[1\] must have shape \(7,\), got \(6,\)"):
        pc_relax(Ws, x, t, biases=[bs[0], bs[1][:6], bs[2]], backend=backend)
    with pytest.raises(TypeError, match="biases must be a list of 3 tensors"):
        pc_relax(Ws, x, t, biases=bs[:2], backend=backend)
    with pytest.raises(ValueError, match=r"feedback\[2\] must have shape \(4, 7\), got \(7, 4\)"):
        pc_relax(Ws, x, t, feedback=[None, Bs[1], Bs[2].T], backend=backend)
    with pytest.raises(ValueError, match="activation must be one of"):
        pc_relax(Ws, x, t, activation="sigmoid", backend=backend)
    with pytest.raises(ValueError, match="output must be one of"):
        pc_relax(Ws, x, t, output="nudge", backend=backend)
    with pytest.raises(ValueError, match="output_energy must be one of"):
        pc_relax(Ws, x, t, output_energy="l1", backend=backend)
    with pytest.raises(ValueError, match="init must be one of"):
        pc_relax(Ws, x, t, init="random", backend=backend)
    with pytest.raises(TypeError, match="init must be 'feedforward', 'zeros' or a list of 3 state tensors"):
        pc_relax(Ws, x, t, init=[torch.zeros(5, 9)], backend=backend)
    with pytest.raises(ValueError, match=r"init\[1\] has width 6 but the layer has 7 units"):
        pc_relax(Ws, x, t, init=[torch.zeros(5, 9), torch.zeros(5, 6)], backend=backend)
    with pytest.raises(ValueError, match="beta must be > 0"):
        pc_relax(Ws, x, t, output="nudge_positive", beta=0.0, backend=backend)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        pc_relax(Ws, x, t, tol=-1.0, backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        pc_relax(Ws, x, t, backend="cuda")


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_non_finite_input(backend):
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5)
    bad = x.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        pc_relax(Ws, bad, t, backend=backend)
    tb = t.clone()
    tb[0, 0] = float("inf")
    with pytest.raises(ValueError, match="target contains NaN or infinite values"):
        pc_relax(Ws, x, tb, backend=backend)
    Wb = Ws[1].clone()
    Wb[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights\[1\] contains NaN or infinite values"):
        pc_relax([Ws[0], Wb, Ws[2]], x, t, backend=backend)
    s = [torch.zeros(5, 9), torch.full((5, 7), float("nan"))]
    with pytest.raises(ValueError, match=r"init\[1\] contains NaN or infinite values"):
        pc_relax(Ws, x, t, init=s, backend=backend)
    with pytest.raises(ValueError, match="step_size must be finite"):
        pc_relax(Ws, x, t, 3, float("nan"), backend=backend)
    # with the check off, a NaN input shows up as divergence at step 1 (never a silent result)
    with pytest.raises(DivergenceError, match="step 1 "):
        pc_relax(Ws, bad, t, 3, 0.1, backend=backend, check_finite_input=False)


def test_reference_accepts_float64_and_inputs_are_untouched():
    Ws, bs, _, x, t = make_net((6, 9, 7, 4), 5, F64)
    copies = [v.clone() for v in Ws + bs + [x, t]]
    r = pc_relax_reference(Ws, x, t, 3, 0.1, biases=bs)
    assert r.states[0].dtype == F64
    assert all(torch.equal(a, b) for a, b in zip(Ws + bs + [x, t], copies))


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("output", ["clamp", "nudge_positive"])
def test_error_reaches_layer_l_after_L_minus_l_steps(backend, output):
    # feed-forward start: e_l is exactly 0 until step L - l (what the C++ backend's GEMM skipping
    # relies on); every step count still matches the reference
    Ws, bs, _, x, t = make_net((8, 12, 10, 9, 4), 6, F64)
    L = len(Ws)
    lag = 0 if output == "clamp" else 1  # a nudged output starts at mu_L too: one step later
    for T in range(1, L + 2):
        r = pc_relax(Ws, x, t, T, 0.1, biases=bs, output=output, backend=backend)
        ref = pc_relax(Ws, x, t, T, 0.1, biases=bs, output=output, backend="reference")
        for l in range(1, L):  # 1-based hidden layers
            if T < L - l + lag:
                assert r.errors[l - 1].abs().max() == 0
            else:
                assert r.errors[l - 1].abs().max() > 0
        for u, v in zip(r.states + r.errors, ref.states + ref.errors):
            assert rel_err(u, v) < 1e-12 or (u - v).abs().max() < 1e-15


# --------------------------------------------------------------------------- precision="tf32"
def _round_tf32_oracle(t):
    """TF32 by construction: keep float32's sign, exponent and top 10 mantissa bits after rounding
    to nearest (ties to even), through float64 arithmetic rather than bit tricks."""
    d = t.double()
    m, e = torch.frexp(d)  # d = m * 2^e, 0.5 <= |m| < 1: 11 significant bits = m * 2^11 integral
    return torch.ldexp(torch.round(m * 2048) / 2048, e).float()


def test_tf32_reference_is_the_relaxation_with_rounded_gemm_operands():
    """Oracle: the fp32 reference on weights rounded to TF32 and activations rounded before each
    product equals precision='tf32' (here checked for the first GEMM's inputs: x_0 and W_1)."""
    Ws, bs, _, x, t = make_net((29, 37, 11, 10), 17)
    r = pc_relax_reference(Ws, x, t, 1, 0.1, biases=bs, precision="tf32")
    mu1 = _round_tf32_oracle(x) @ _round_tf32_oracle(Ws[0]).T + bs[0]
    # after one step from the feed-forward start, e_1 = x_1 - mu_1 with x_1 = mu_1 + gamma * (...)
    assert rel_err(r.states[0] - r.errors[0], mu1) < 1e-6


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
@pytest.mark.parametrize("output", ["clamp", "nudge_centred"])
def test_tf32_stays_close_to_fp32(backend, output):
    Ws, bs, _, x, t = make_net((64, 100, 50, 10), 33, seed=3)
    kw = dict(biases=bs, output=output, beta=0.5)
    f = pc_relax(Ws, x, t, 20, 0.1, backend=backend, **kw)
    h = pc_relax(Ws, x, t, 20, 0.1, backend=backend, precision="tf32", **kw)
    assert rel_err(h.states[0], f.states[0]) < 3e-3
    assert rel_err(h.energy, f.energy) < 3e-3
    diff = sum(float((a - b).abs().max()) for a, b in zip(h.states, f.states))
    assert diff > 0  # the switch is not ignored


@CPP
@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("init", ["feedforward", "zeros"])
def test_cpp_tf32_matches_reference_tf32(fixed, init, poisoned_empty):
    Ws, bs, Bs, x, t = make_net((29, 37, 11, 10), 17, feedback=True, seed=5)
    kw = dict(biases=bs, feedback=Bs, fixed_predictions=fixed, init=init, precision="tf32")
    r = pc_relax(Ws, x, t, 6, 0.1, backend="reference", **kw)
    c = pc_relax(Ws, x, t, 6, 0.1, backend="cpp", **kw)
    for u, v in zip(c.states + c.errors, r.states + r.errors):
        assert rel_err(u, v) < RTOL_REDUCTION or (u - v).abs().max() < 1e-6
    assert rel_err(c.energy, r.energy) < RTOL_REDUCTION


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_precision_bad_values(backend):
    Ws, bs, _, x, t = make_net((7, 13, 5, 3), 5)
    with pytest.raises(ValueError, match="precision"):
        pc_relax(Ws, x, t, 2, 0.1, precision="bf16", backend=backend)
    Ws, bs, _, x, t = make_net((7, 13, 5, 3), 5, dtype=F64)
    with pytest.raises(TypeError, match="precision='tf32' needs float32"):
        pc_relax(Ws, x, t, 2, 0.1, precision="tf32", backend=backend)
    with pytest.raises(TypeError, match="precision='tf32x3' needs float32"):
        pc_relax(Ws, x, t, 2, 0.1, precision="tf32x3", backend=backend)


_THREADS_SCRIPT = """
import hashlib, torch
import bpalts
C = bpalts._backend.cpp_module()
g = torch.Generator().manual_seed(6)
widths, B = (300, 200, 10), 131  # units-major (units, rows); 131 * 510 elements: the parallel loops
h = hashlib.sha256()
for nudge, ce in ((False, False), (False, True), (True, False), (True, True)):
    S = [torch.randn(n, B, generator=g) for n in widths]
    MU = [torch.randn(n, B, generator=g) for n in widths]
    E = [torch.empty(n, B) for n in widths]
    G, F, D = ([torch.randn(n, B, generator=g) for n in widths[:-1]] for _ in range(3))
    # one-hot targets: torch.softmax's bits depend on torch's thread count
    t = torch.nn.functional.one_hot(torch.randint(0, widths[-1], (B,), generator=g), widths[-1]).T.float().contiguous()
    beta = torch.randn(1, B, generator=g)
    npy = lambda ts: [v.numpy() for v in ts]
    F0, nz = C.pc_errors(npy(S), npy(MU), npy(E), t.numpy(), beta.numpy(), nudge, ce)
    C.pc_update(npy(S), npy(E), npy(G), npy(F), npy(D), t.numpy(), beta.numpy(), 0.1, 0, nudge, ce,
                True, [True, False], [True, True, True])
    h.update(repr((F0, nz)).encode())
    for v in S + E + F + D:
        h.update(v.numpy().tobytes())
print(h.hexdigest())
"""


@CPP
def test_cpp_kernels_do_not_depend_on_the_thread_count():
    # pc_errors sums its energy per unit row and per sample in a fixed order and pc_update is
    # elementwise per row or column: the same energies, errors and states bit for bit at 1, 2
    # and 3 OpenMP threads, for every output mode (clamped / nudged, squared error / ce).
    outs = stdout_words_per_thread_count(_THREADS_SCRIPT)
    assert len(outs[0]) == 1 and outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_beta_beyond_float32_range_is_a_value_error(backend):
    """beta=1e39 with float32 inputs failed inside the op with torch's RuntimeError "value cannot be
    converted to type float without overflow"; it must be a ValueError naming beta (as step_size)."""
    g = torch.Generator().manual_seed(0)
    W = [torch.randn(4, 5, generator=g), torch.randn(3, 4, generator=g)]
    x, t = torch.randn(2, 5, generator=g), torch.randn(2, 3, generator=g)
    with pytest.raises(ValueError, match="beta must be within float32's range"):
        pc_relax(W, x, t, 2, 0.1, output="nudge_positive", beta=1e39, backend=backend)
