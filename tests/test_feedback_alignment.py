"""PEPITA, feedback alignment and direct feedback alignment: update equations, contract, no
autograd, feedback regenerated from the seed, bad input, divergence, short real-MNIST runs (CI)
and the accuracy targets (slow)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests._compare_util import rel_err, train_epochs

from bpalts import registry
from bpalts.learners import DivergenceError, layer_sizes
from bpalts.learners.feedback_alignment import PEPITA, FeedbackAlignmentMLP

torch.set_num_threads(1)


def _batch(n=16, n_in=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n_in, generator=g), torch.randint(0, classes, (n,), generator=g)


def _autograd_grads(model, x, y, masks=None):
    """Backprop gradients of the mean cross-entropy by autograd (test-side check only)."""
    Ws = [w.detach().clone().double().requires_grad_(True) for w in model.weights]
    bs = [b.detach().clone().double().requires_grad_(True) for b in model.biases]
    act = torch.relu if model.activation == "relu" else torch.tanh
    h = x.double()
    for l, W in enumerate(Ws):
        a = h @ W.t() + (bs[l] if bs else 0.0)
        if l < len(Ws) - 1:
            h = act(a)
            if masks is not None:
                h = h * masks[l].double()
        else:
            h = a
    F.cross_entropy(h, y).backward()
    return [W.grad for W in Ws] + [b.grad for b in bs]


# --------------------------------------------------------------------------------------------
# registration


@pytest.mark.parametrize("name", ["pepita", "fa", "dfa"])
def test_registered(name):
    spec = registry.get_method(name)
    model = spec.build(layer_sizes(4), backend="auto", seed=0)
    assert model.sizes[0] == 784 and model.sizes[-1] == 10
    if name == "pepita":
        assert spec.fixed_depth and model.sizes == [784, 1024, 10]
        assert "ignores the hidden widths" in spec.description
    else:
        assert not spec.fixed_depth and model.sizes == layer_sizes(4)
        assert model.mode == name


# --------------------------------------------------------------------------------------------
# update equations


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_true_gradient_matches_autograd(activation):
    x, y = _batch()
    m = FeedbackAlignmentMLP((12, 7, 5, 3), mode="fa", activation=activation, seed=3).double()
    pre, hs = m._forward_all(x.double())
    got = m._true_gradients(x.double(), y, pre, hs)
    want = _autograd_grads(m, x, y)
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-10


def test_fa_with_transposed_weights_as_feedback_is_backprop():
    x, y = _batch()
    m = FeedbackAlignmentMLP((12, 9, 6, 3), mode="fa", activation="tanh", seed=0).double()
    for l, name in enumerate(m._feedback_names()):  # B_{l+2} := W_{l+2}
        setattr(m, name, m.weights[l + 1].detach().clone())
    grads = m._method_gradients(x.double(), y)[0]
    for g, w in zip(grads, _autograd_grads(m, x, y)):
        assert rel_err(g, w) < 1e-10


def test_dfa_update_equations():
    x, y = _batch(n=10)
    m = FeedbackAlignmentMLP((12, 8, 6, 3), mode="dfa", activation="relu", seed=1).double()
    xd = x.double()
    W, b, D = [w.detach() for w in m.weights], [v.detach() for v in m.biases], m.feedback()
    a1 = xd @ W[0].t() + b[0]
    h1 = a1.clamp_min(0)
    a2 = h1 @ W[1].t() + b[1]
    h2 = a2.clamp_min(0)
    out = h2 @ W[2].t() + b[2]
    e = out.softmax(1) - F.one_hot(y, 3).double()
    d2 = (e @ D[1]) * (a2 > 0)
    d1 = (e @ D[0]) * (a1 > 0)
    want = [d1.t() @ xd / 10, d2.t() @ h1 / 10, e.t() @ h2 / 10, d1.mean(0), d2.mean(0), e.mean(0)]
    got = m._method_gradients(xd, y)[0]
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-12
    assert [tuple(d.shape) for d in D] == [(3, 8), (3, 6)]


def test_input_norm_standardises_the_input():
    x, y = _batch()
    a = FeedbackAlignmentMLP((12, 7, 3), input_norm=(0.2, 0.5), seed=4)
    b = FeedbackAlignmentMLP((12, 7, 3), seed=4)
    assert torch.allclose(a(x), b((x - 0.2) / 0.5), atol=1e-6)
    ga, gb = a._method_gradients(x, y)[0], b._method_gradients((x - 0.2) / 0.5, y)[0]
    assert all(rel_err(p, q) < 1e-5 for p, q in zip(ga, gb))


def test_adam_step_matches_the_adam_equations():
    # Kingma & Ba's Adam as torch.optim.Adam writes it, step by step in float64
    x, y = _batch()
    m = FeedbackAlignmentMLP((12, 7, 3), mode="dfa", lr=0.01, lr_decay=0.5, seed=0).double()
    xd = x.double()
    params = [p.detach().clone() for p in m._params()]
    mom = [torch.zeros_like(p) for p in params]
    vel = [torch.zeros_like(p) for p in params]
    for t in range(1, 4):
        lr = 0.01 * 0.5 ** (t - 1)
        grads = m._method_gradients(xd, y)[0]
        for i, g in enumerate(grads):
            mom[i] = 0.9 * mom[i] + 0.1 * g
            vel[i] = 0.999 * vel[i] + 0.001 * g * g
            denom = (vel[i] / (1 - 0.999**t)).sqrt() + 1e-8
            params[i] = params[i] - lr * mom[i] / (1 - 0.9**t) / denom
        assert m.train_step(xd, y)["lr"] == pytest.approx(lr)
        for p, q in zip(params, m._params()):
            assert rel_err(q.detach(), p) < 1e-12


def test_pepita_update_equations_first_step():
    x, y = _batch(n=8, n_in=12, classes=4)
    m = PEPITA((12, 9, 7, 4), lr=0.05, dropout=0.0, seed=2).double()
    xd = x.double()
    W0 = [w.detach().clone() for w in m.weights]
    Fm = m.F
    h1, h2 = (xd @ W0[0].t()).relu(), None
    h2 = (h1 @ W0[1].t()).relu()
    e = (h2 @ W0[2].t()).softmax(1) - F.one_hot(y, 4).double()
    xm = xd - e @ Fm.t()
    h1m = (xm @ W0[0].t()).relu()
    h2m = (h1m @ W0[1].t()).relu()
    dW = [(h1 - h1m).t() @ xm / 8, (h2 - h2m).t() @ h1m / 8, e.t() @ h2m / 8]
    m.train_step(xd, y)
    for w0, d, w in zip(W0, dW, m.weights):
        assert rel_err(w.detach(), w0 - 0.05 * d) < 1e-12
    # F: uniform in +-0.05 * sqrt(6 / n_in)
    assert Fm.shape == (12, 4) and float(Fm.abs().max()) <= 0.05 * math.sqrt(6 / 12)


def test_pepita_uses_the_same_dropout_mask_in_both_passes():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 20, generator=g), torch.tensor([1])
    m = PEPITA((20, 64, 3), dropout=0.5, seed=0)
    W0 = m.weights[0].detach().clone()
    masks_state = m._gen.get_state()
    m.train_step(x, y)
    m._gen.set_state(masks_state)
    mask = m._masks(1, x)[0][0]
    changed = (m.weights[0].detach() != W0).any(dim=1)
    assert (mask == 0).any() and (mask > 0).any()
    # a dropped unit is silent in both passes, so its row of dW_1 is exactly zero
    assert not changed[mask == 0].any()


def test_pepita_lr_schedule():
    m = PEPITA((6, 5, 2), lr=0.1, milestones=(1, 2), gamma=0.1, epoch_samples=8, dropout=0.0)
    x, y = _batch(n=4, n_in=6, classes=2)
    lrs = [m.train_step(x, y)["lr"] for _ in range(6)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_pepita_weight_mirroring_aligns_f():
    m = PEPITA((10, 8, 3), mirror=True, mirror_lr=0.5, seed=0)
    x, y = _batch(n=32, n_in=10, classes=3)
    target = (m.weights[1].detach() @ m.weights[0].detach()).t()

    def angle():
        return math.degrees(math.acos(F.cosine_similarity(m.F.reshape(1, -1), target.reshape(1, -1)).item()))

    norm0, a0 = float(m.F.norm()), angle()
    for _ in range(50):
        m._mirror_step(32)
    assert angle() < a0 - 30 and angle() < 45
    assert float(m.F.norm()) == pytest.approx(norm0, rel=1e-5)
    assert "F" in m.state_dict() and "F" not in PEPITA((10, 8, 3)).state_dict()
    m.train_step(x, y)  # mirroring inside train_step


# --------------------------------------------------------------------------------------------
# contract: no autograd, state_dict, .to, diagnostics


def _models():
    return [
        PEPITA((12, 9, 3), seed=0),
        PEPITA((12, 9, 7, 3), mirror=True, seed=0),
        FeedbackAlignmentMLP((12, 9, 7, 3), mode="fa", seed=0),
        FeedbackAlignmentMLP((12, 9, 7, 3), mode="dfa", seed=0),
    ]


@pytest.mark.parametrize("model", _models(), ids=["pepita", "pepita-mirror", "fa", "dfa"])
def test_no_autograd_in_train_step(model, monkeypatch):
    x, y = _batch()

    def forbidden(*a, **k):
        raise AssertionError("autograd was used in train_step")

    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    with torch.enable_grad():
        metrics = model.train_step(x, y)
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert model(x).grad_fn is None
    with torch.inference_mode():  # runs where autograd cannot record anything
        model.train_step(x, y)
    assert set(metrics) >= {"loss", "batch_accuracy", "lr"}
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("mode", ["fa", "dfa"])
def test_fa_state_dict_round_trip_regenerates_feedback(mode):
    x, y = _batch()
    a = FeedbackAlignmentMLP((12, 9, 7, 3), mode=mode, seed=1)
    a.train_step(x, y)
    sd = a.state_dict()
    assert not any(k.startswith("feedback") and k != "feedback_seed" for k in sd)  # seed only
    b = FeedbackAlignmentMLP((12, 9, 7, 3), mode=mode, seed=2)
    assert not torch.equal(a.feedback()[0], b.feedback()[0])
    b.load_state_dict(sd)
    assert all(torch.equal(p, q) for p, q in zip(a.feedback(), b.feedback()))
    assert torch.equal(a(x), b(x)) and int(b.steps_done) == 1
    ma, mb = a.train_step(x, y), b.train_step(x, y)  # optimiser state round-trips too
    assert ma == mb and torch.equal(a(x), b(x))


def test_pepita_state_dict_round_trip_regenerates_f():
    x, y = _batch()
    a = PEPITA((12, 9, 3), dropout=0.0, seed=1)
    a.train_step(x, y)
    sd = a.state_dict()
    assert "F" not in sd and "feedback_seed" in sd and "samples_seen" in sd
    b = PEPITA((12, 9, 3), dropout=0.0, seed=5)
    b.load_state_dict(sd)
    assert torch.equal(a.F, b.F) and torch.equal(a(x), b(x))
    assert a.train_step(x, y) == b.train_step(x, y)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("model", _models(), ids=["pepita", "pepita-mirror", "fa", "dfa"])
def test_to_moves_feedback_and_keeps_training(model):
    x, y = _batch()
    model.train_step(x, y)
    model = model.to(torch.float64)
    assert all(b.dtype == torch.float64 for n, b in model.named_buffers() if b.is_floating_point())
    model.train_step(x.double(), y)
    assert model(x.double()).dtype == torch.float64


@pytest.mark.parametrize("model", _models(), ids=["pepita", "pepita-mirror", "fa", "dfa"])
def test_diagnostics(model):
    x, y = _batch(n=32)
    before = [p.detach().clone() for p in model.parameters()]
    d = model.diagnostics(x, y)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    n = len(model.weights)
    for l in range(1, n + 1):
        assert 0.0 <= d[f"angle_{l}"] <= 180.0
        assert d[f"grad_norm_{l}"] > 0 and d[f"weight_norm_{l}"] > 0
    if isinstance(model, FeedbackAlignmentMLP):  # the output layer gets the true gradient
        assert d[f"angle_{n}"] == pytest.approx(0.0, abs=1e-3)
    else:  # PEPITA's last layer: e h_mod^T, close to the gradient e h^T
        assert d[f"angle_{n}"] < 10.0
    assert math.isfinite(d["loss"]) and 0.0 <= d["batch_accuracy"] <= 1.0


def test_pepita_diagnostics_does_not_consume_dropout_randomness():
    x, y = _batch()
    a, b = PEPITA((12, 9, 3), seed=0), PEPITA((12, 9, 3), seed=0)
    a.diagnostics(x, y)
    assert a.train_step(x, y) == b.train_step(x, y)


# --------------------------------------------------------------------------------------------
# bad input and divergence


def test_bad_input():
    m = FeedbackAlignmentMLP((6, 5, 3))
    p = PEPITA((6, 5, 3))
    for model in (m, p):
        with pytest.raises(ValueError, match=r"x must be \(batch, 6\)"):
            model.train_step(torch.rand(4, 5), torch.zeros(4, dtype=torch.long))
        with pytest.raises(ValueError, match="x is an empty batch"):
            model.train_step(torch.rand(0, 6), torch.zeros(0, dtype=torch.long))
        with pytest.raises(ValueError, match=r"y must be class indices in 0..2"):
            model.train_step(torch.rand(2, 6), torch.tensor([0, 3]))
        with pytest.raises(ValueError, match=r"y must be class indices in 0..2"):
            model.train_step(torch.rand(2, 6), torch.tensor([-1, 0]))
        with pytest.raises(TypeError, match="y must hold integer class indices"):
            model.train_step(torch.rand(2, 6), torch.tensor([0.0, 1.0]))
        with pytest.raises(ValueError, match=r"x must be \(batch, 6\)"):
            model.diagnostics(torch.rand(2, 7), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mode must be one of"):
        FeedbackAlignmentMLP((4, 3, 2), mode="bp")
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedbackAlignmentMLP((4, 3, 2), activation="gelu")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        FeedbackAlignmentMLP((4, 3, 2), optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr must be > 0"):
        FeedbackAlignmentMLP((4, 3, 2), lr=0.0)
    with pytest.raises(ValueError, match=r"lr_decay must be in \(0, 1\]"):
        FeedbackAlignmentMLP((4, 3, 2), lr_decay=1.5)
    with pytest.raises(ValueError, match="sizes must list at least 2 positive ints"):
        FeedbackAlignmentMLP((4,))
    with pytest.raises(ValueError, match=r"input_norm must be \(mean, std\) with std > 0"):
        FeedbackAlignmentMLP((4, 3, 2), input_norm=(0.1, 0.0))
    with pytest.raises(ValueError, match="init_gain must be > 0"):
        FeedbackAlignmentMLP((4, 3, 2), init_gain=0.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        FeedbackAlignmentMLP((4, 3, 2), backend="gpu")
    with pytest.raises(TypeError, match="seed must be an int"):
        PEPITA((4, 3, 2), seed=1.5)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        PEPITA((4, 3, 2), dropout=1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        PEPITA((4, 3, 2), momentum=1.0)
    with pytest.raises(ValueError, match="milestones must be positive epoch numbers"):
        PEPITA((4, 3, 2), milestones=(0,))
    with pytest.raises(ValueError, match="epoch_samples must be >= 1, got 0"):
        PEPITA((4, 3, 2), epoch_samples=0)
    with pytest.raises(ValueError, match="f_scale must be > 0"):
        PEPITA((4, 3, 2), f_scale=0.0)


@pytest.mark.parametrize(
    "model",
    [
        FeedbackAlignmentMLP((12, 9, 3), mode="fa", optimizer="sgd", lr=1e30),
        FeedbackAlignmentMLP((12, 9, 3), mode="dfa", optimizer="sgd", lr=1e30),
        PEPITA((12, 9, 3), lr=1e30, dropout=0.0),
    ],
    ids=["fa", "dfa", "pepita"],
)
def test_divergence_names_the_step(model):
    x, y = _batch()
    with pytest.raises(DivergenceError, match=r"diverged at step \d+"):
        for _ in range(50):
            model.train_step(x * 100, y)


# --------------------------------------------------------------------------------------------
# real MNIST: short runs (CI) and the targets (slow)


@pytest.mark.parametrize("name,threshold", [("pepita", 0.8), ("fa", 0.75), ("dfa", 0.8)])
def test_short_mnist_run_beats_chance(name, threshold, mnist_train, mnist_test):
    x, y = mnist_train
    spec = registry.get_method(name)
    model = spec.build(layer_sizes(4), seed=0)
    metrics = train_epochs(model, x[:6000], y[:6000], batch_size=spec.batch_size)
    assert metrics["loss"] < 2.0
    acc = model.evaluate(*mnist_test)
    assert acc > threshold, acc  # chance is 0.10


def _target(name, epochs, target, mnist_train, mnist_test):
    spec = registry.get_method(name)
    model = spec.build(layer_sizes(4), seed=0)
    x, y = mnist_train
    train_epochs(model, x, y, epochs=epochs, batch_size=spec.batch_size)
    acc = model.evaluate(*mnist_test)
    assert acc >= target, acc


@pytest.mark.slow
def test_dfa_target_20_epochs(mnist_train, mnist_test):
    _target("dfa", 20, 0.980, mnist_train, mnist_test)


@pytest.mark.slow
def test_fa_target_20_epochs(mnist_train, mnist_test):
    _target("fa", 20, 0.975, mnist_train, mnist_test)


@pytest.mark.slow
def test_pepita_target_60_epochs(mnist_train, mnist_test):
    _target("pepita", 60, 0.975, mnist_train, mnist_test)


@pytest.mark.parametrize("milestones", [[np.int64(30), np.int64(45)], torch.tensor([30, 45]),
                                        (np.float32(30.0), 45)])
def test_pepita_milestones_take_numpy_and_tensor_epochs(milestones):
    """PEPITA's milestones accepted only Python int / float elements: NumPy integers, or a tensor
    (which check_sequence lets through), were a ValueError claiming they were not 'positive epoch
    numbers'. They are epoch numbers like any other; non-positive ones are still refused."""
    assert PEPITA((6, 5, 2), milestones=milestones).milestones == (30.0, 45.0)
    with pytest.raises(ValueError, match="milestones must be positive epoch numbers"):
        PEPITA((6, 5, 2), milestones=[np.int64(0)])
    with pytest.raises(ValueError, match="milestones must be positive epoch numbers"):
        PEPITA((6, 5, 2), milestones=torch.tensor([True]))
