"""pc_weight_update: the reference against autograd (minus the gradient of the batch-mean energy),
the C++ backend against the reference, in-place semantics, and bad input."""
from __future__ import annotations

import itertools

import pytest
import torch

import bpalts
from bpalts.ops.pc_relax import pc_relax
from bpalts.ops.pc_weight_update import pc_weight_update, pc_weight_update_reference
from tests._compare_util import RTOL_REDUCTION, rel_err
from tests.test_pc_relax import ACTS, SHAPES, make_net

CPP = pytest.mark.skipif("cpp" not in bpalts.available_backends("cpu"), reason="bpalts._C not built")
F64 = torch.float64


def _relaxed(widths, B, dtype=torch.float32, feedback=False, seed=0):
    Ws, bs, Bs, x, t = make_net(widths, B, dtype, seed=seed, feedback=feedback)
    r = pc_relax(Ws, x, t, 5, 0.1, biases=bs, init="zeros", backend="reference")
    return Ws, bs, Bs, x, r


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("presynaptic", ("states", "predictions"))
def test_reference_is_minus_the_energy_gradient(act, presynaptic):
    Ws, bs, _, x, r = _relaxed((6, 9, 7, 4), 5, F64)
    f = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda v: v,
         "leaky_relu": lambda v: torch.nn.functional.leaky_relu(v, 0.01)}[act]
    Wg = [W.clone().requires_grad_() for W in Ws]
    bg = [b.clone().requires_grad_() for b in bs]
    pre = [x] + [s - e if presynaptic == "predictions" else s for s, e in zip(r.states[:-1], r.errors[:-1])]
    F = 0
    for i, (W, b) in enumerate(zip(Wg, bg)):
        p = pre[i] if i == 0 else f(pre[i])
        mu = p @ W.T + b
        # errors held at the given values: e = x - mu with x chosen so that e(W) is the given e
        F = F + 0.5 * ((r.errors[i] + (p @ Ws[i].T + bs[i]) - mu) ** 2).sum(1)
    grads = torch.autograd.grad(F.mean(), Wg + bg)
    u = pc_weight_update(Ws, x, r.states, r.errors, biases=bs, activation=act, presynaptic=presynaptic,
                         backend="reference")
    for got, g in zip(u.weights + u.biases, grads):
        assert rel_err(got, -g) < 1e-12
    assert u.feedback is None


@CPP
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}-" + "-".join(map(str, s[1])))
@pytest.mark.parametrize("dtype", (torch.float32, F64))
@pytest.mark.parametrize("act,presynaptic,bias,fb", [
    ("tanh", "states", True, False), ("relu", "predictions", False, True),
    ("leaky_relu", "states", True, True), ("identity", "predictions", True, False)])
def test_cpp_matches_reference(shape, dtype, act, presynaptic, bias, fb, poisoned_empty):
    B, widths = shape
    Ws, bs, Bs, x, r = _relaxed(widths, B, dtype, feedback=fb)
    kw = dict(biases=bs if bias else None, activation=act, presynaptic=presynaptic, feedback=Bs,
              feedback_rule="same" if fb else None)
    tol = RTOL_REDUCTION if dtype == torch.float32 else 1e-12
    ur = pc_weight_update(Ws, x, r.states, r.errors, backend="reference", **kw)
    uc = pc_weight_update(Ws, x, r.states, r.errors, backend="cpp", **kw)
    for got, want in zip(uc.weights, ur.weights):
        assert got.dtype == dtype and rel_err(got, want) < tol
    if bias:
        for got, want in zip(uc.biases, ur.biases):
            assert got.shape == want.shape and rel_err(got, want) < tol
    else:
        assert uc.biases is None
    if fb:
        assert uc.feedback[0] is None
        for got, want in zip(uc.feedback[1:], uc.weights[1:]):
            assert torch.equal(got, want)
    # in place: W + lr dW, the returned tuple holds the updated tensors themselves
    for backend in ("reference", "cpp"):
        W2 = [W.clone() for W in Ws]
        b2 = [b.clone() for b in bs] if bias else None
        B2 = [None] + [m.clone() for m in Bs[1:]] if fb else None
        out = pc_weight_update(W2, x, r.states, r.errors, lr=0.5, backend=backend,
                               **{**kw, "biases": b2, "feedback": B2})
        assert all(a is b for a, b in zip(out.weights, W2))
        for W, W0, d in zip(W2, Ws, ur.weights):
            assert rel_err(W, W0 + 0.5 * d) < tol
        if bias:
            assert all(a is b for a, b in zip(out.biases, b2))
            for b, b0, d in zip(b2, bs, ur.biases):
                assert rel_err(b, b0 + 0.5 * d) < tol
        if fb:
            assert out.feedback[0] is None
            for m, m0, d in zip(B2[1:], Bs[1:], ur.weights[1:]):
                assert rel_err(m, m0 + 0.5 * d) < tol


def test_updates_are_fresh_and_inputs_untouched():
    Ws, bs, _, x, r = _relaxed((6, 9, 7, 4), 5)
    copies = [v.clone() for v in Ws + bs + r.states + r.errors]
    for backend in bpalts.available_backends("cpu"):
        if backend == "triton":
            continue
        u = pc_weight_update(Ws, x, r.states, r.errors, biases=bs, backend=backend)
        assert all(d.data_ptr() != W.data_ptr() for d, W in zip(u.weights, Ws))
        assert all(torch.equal(a, b) for a, b in zip(Ws + bs + r.states + r.errors, copies))


def test_feedback_rule_same_on_reference():
    Ws, bs, Bs, x, r = _relaxed((6, 9, 7, 4), 5, feedback=True)
    u = pc_weight_update(Ws, x, r.states, r.errors, feedback=Bs, feedback_rule="same", backend="reference")
    assert u.feedback[0] is None and all(torch.equal(a, b) for a, b in zip(u.feedback[1:], u.weights[1:]))
    u = pc_weight_update(Ws, x, r.states, r.errors, feedback=Bs, backend="reference")
    assert u.feedback is None


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=CPP)])
def test_bad_input(backend):
    Ws, bs, Bs, x, r = _relaxed((6, 9, 7, 4), 5, feedback=True)
    S, E = r.states, r.errors
    with pytest.raises(TypeError, match="states must be a list of 3"):
        pc_weight_update(Ws, x, S[:2], E, backend=backend)
    with pytest.raises(TypeError, match="errors must be a list of 3"):
        pc_weight_update(Ws, x, S, E[0], backend=backend)
    with pytest.raises(ValueError, match=r"errors\[1\] has width 6 but the layer has 7 units"):
        pc_weight_update(Ws, x, S, [E[0], E[1][:, :6], E[2]], backend=backend)
    with pytest.raises(ValueError, match=r"states\[0\] has batch 4 but x has batch 5"):
        pc_weight_update(Ws, x, [S[0][:4], S[1], S[2]], E, backend=backend)
    with pytest.raises(ValueError, match=r"weights\[1\] has shape \(7, 8\)"):
        pc_weight_update([Ws[0], torch.randn(7, 8), Ws[2]], x, S, E, backend=backend)
    bad = [e.clone() for e in E]
    bad[2][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"errors\[2\] contains NaN or infinite values"):
        pc_weight_update(Ws, x, S, bad, backend=backend)
    with pytest.raises(ValueError, match="lr must be finite"):
        pc_weight_update(Ws, x, S, E, lr=float("inf"), backend=backend)
    with pytest.raises(ValueError, match="feedback_rule must be one of"):
        pc_weight_update(Ws, x, S, E, feedback=Bs, feedback_rule="kolen", backend=backend)
    with pytest.raises(ValueError, match="feedback_rule='same' needs feedback"):
        pc_weight_update(Ws, x, S, E, feedback_rule="same", backend=backend)
    with pytest.raises(ValueError, match="presynaptic must be one of"):
        pc_weight_update(Ws, x, S, E, presynaptic="mu", backend=backend)
    with pytest.raises(TypeError, match=r"errors\[0\] has dtype torch.float64 but x has torch.float32"):
        pc_weight_update(Ws, x, S, [E[0].double(), E[1], E[2]], backend=backend)
    with pytest.raises(ValueError, match="x has an empty batch dimension"):
        pc_weight_update(Ws, x[:0], [s[:0] for s in S], [e[:0] for e in E], backend=backend)


@CPP
def test_pc_weight_update_reference_direct_call_matches():
    Ws, bs, _, x, r = _relaxed((6, 9, 7, 4), 5)
    a = pc_weight_update_reference(Ws, x, r.states, r.errors, biases=bs)
    b = pc_weight_update(Ws, x, r.states, r.errors, biases=bs, backend="cpp")
    for u, v in itertools.chain(zip(a.weights, b.weights), zip(a.biases, b.biases)):
        assert rel_err(v, u) < RTOL_REDUCTION


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_fixed_feedback_is_not_checked_as_updated_in_place(backend):
    """With lr given and feedback_rule=None the feedback matrices are left alone, yet a broadcast
    (stride-0) feedback view was rejected with "feedback[1] is updated in place"."""
    g = torch.Generator().manual_seed(0)
    W = [torch.randn(4, 5, generator=g), torch.randn(3, 4, generator=g)]
    x = torch.randn(2, 5, generator=g)
    S = [torch.randn(2, 4, generator=g), torch.randn(2, 3, generator=g)]
    E = [torch.randn(2, 4, generator=g), torch.randn(2, 3, generator=g)]
    fb = [None, torch.randn(1, 4, generator=g).expand(3, 4)]
    W1 = [w.clone() for w in W]
    W2 = [w.clone() for w in W]
    pc_weight_update(W1, x, S, E, lr=0.1, feedback=fb, backend=backend)
    pc_weight_update(W2, x, S, E, lr=0.1, backend=backend)
    for a, b in zip(W1, W2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"feedback\[1\] is updated in place"):
        pc_weight_update(W1, x, S, E, lr=0.1, feedback=fb, feedback_rule="same", backend=backend)
