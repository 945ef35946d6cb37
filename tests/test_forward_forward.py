"""Forward-forward learners ("ff", "ff-collab"): contract, closed-form gradients against autograd,
bad input, short real-MNIST runs (CI) and the accuracy targets (slow)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bpalts import registry
from bpalts.learners import DivergenceError, layer_sizes
from bpalts.learners.forward_forward import ForwardForward
from tests._compare_util import train_epochs

SMALL = [40, 23, 17, 11, 5]  # inputs, three FF layers, 5 classes


def _toy(n=32, seed=0, sizes=SMALL):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, sizes[0], generator=g), torch.randint(0, sizes[-1], (n,), generator=g)


@pytest.mark.parametrize("name", ["ff", "ff-collab"])
def test_registered(name):
    spec = registry.get_method(name)
    model = spec.build(layer_sizes(4), backend="reference", seed=0)
    assert isinstance(model, ForwardForward)
    assert [w.shape[0] for w in model.weights] == [861, 645, 484]
    assert model.collab == ("all" if name == "ff-collab" else "none")
    assert model.collab_weight == (0.3 if name == "ff-collab" else 1.0)


@pytest.mark.parametrize("scale", [1.0, 1e20])
def test_label_goodness_matches_ten_full_passes(scale):
    """label_goodness's shortcut (the first layer's product once, the label's columns added)
    against ten full passes; at 1e20 the pixels' squares overflow float32, and both sides sum
    them in float64 (a zero row scale before)."""
    model = ForwardForward(SMALL, seed=1, backend="reference")
    x, y = _toy()
    train_epochs(model, x, y, epochs=2, batch_size=8)
    x = x * scale
    got = model.label_goodness(x)  # (layers, batch, classes)
    assert torch.isfinite(got).all()
    for k in range(SMALL[-1]):
        h = model.overlay(x, torch.full((x.shape[0],), k))
        for l in range(3):
            h = model._layer(l, h)
            assert torch.allclose(got[l, :, k], h.pow(2).sum(1), rtol=1e-4, atol=1e-4)


def test_overlay_is_a_fixed_intensity_not_a_batch_statistic():
    model = ForwardForward(SMALL, label_intensity=0.7, backend="reference")
    x, y = _toy()
    o = model.overlay(x * 5.0, y)
    assert torch.equal(o[:, : SMALL[-1]], 0.7 * F.one_hot(y, SMALL[-1]).float())
    assert torch.equal(o[:, SMALL[-1]:], 5.0 * x[:, SMALL[-1]:])
    assert torch.allclose(model.overlay(x, None)[:, :5], torch.full((32, 5), 0.7 / 5))


@pytest.mark.parametrize("collab,weight", [("none", 1.0), ("all", 1.0), ("preceding", 1.0),
                                           ("all", 0.3), ("preceding", 0.5)])
def test_step_gradients_match_autograd(collab, weight):
    """One simultaneous step: the gradient each layer receives is the autograd gradient of its
    own loss, with its input and the other layers' goodness detached (scaled by collab_weight)."""
    model = ForwardForward(SMALL, collab=collab, collab_weight=weight, seed=2, backend="reference")
    model.double()
    x, y = _toy(12, seed=3)
    x = x.double()
    gen_state = model._gen.get_state()
    Ws = [w.detach().clone().requires_grad_() for w in model.weights]
    bs = [b.detach().clone().requires_grad_() for b in model.biases]
    model.train_step(x, y)  # sets .grad of every trained parameter (closed form) then steps
    model._gen.set_state(gen_state)
    yneg = model._negative_labels(x, y)
    thetas = model.thetas
    hp, hn = model.overlay(x, y), model.overlay(x, yneg)
    gps, gns = [], []
    for W, b in zip(Ws, bs):
        hp = torch.relu(hp.detach() / (hp.detach().pow(2).mean(1, keepdim=True).sqrt() + 1e-8) @ W.T + b)
        hn = torch.relu(hn.detach() / (hn.detach().pow(2).mean(1, keepdim=True).sqrt() + 1e-8) @ W.T + b)
        gps.append(hp.pow(2).sum(1))
        gns.append(hn.pow(2).sum(1))
    total = 0
    for l in range(3):
        others = [k for k in range(3) if k != l and (collab == "all" or (collab == "preceding" and k < l))]
        sp = gps[l] - thetas[l] + weight * sum((gps[k] - thetas[k]).detach() for k in others)
        sn = gns[l] - thetas[l] + weight * sum((gns[k] - thetas[k]).detach() for k in others)
        total = total + F.softplus(-sp).mean() + F.softplus(sn).mean()
    total.backward()
    for l in range(3):
        assert torch.allclose(model.weights[l].grad, Ws[l].grad, rtol=1e-9, atol=1e-12)
        assert torch.allclose(model.biases[l].grad, bs[l].grad, rtol=1e-9, atol=1e-12)


def test_schedules_train_the_right_layers():
    x, y = _toy()
    for schedule, expect in (("layerwise", [[0], [0], [1], [1], [2], [2], [2]]),
                             ("alternating", [[0], [1], [2], [0]]),
                             ("simultaneous", [[0, 1, 2]])):
        model = ForwardForward(SMALL, schedule=schedule, layer_steps=2, backend="reference")
        for trained in expect:
            before = [w.clone() for w in model.weights]
            model.train_step(x, y)
            changed = [l for l in range(3) if not torch.equal(before[l], model.weights[l])]
            assert changed == trained, (schedule, changed, trained)


def test_hardest_negatives_are_wrong_labels():
    model = ForwardForward(SMALL, negatives="hardest", backend="reference")
    x, y = _toy()
    yneg = model._negative_labels(x, y)
    assert (yneg != y).all()
    scores = model.label_goodness(x).sum(0)
    scores[torch.arange(32), y] = -float("inf")
    assert torch.equal(yneg, scores.argmax(1))
    model.train_step(x, y)


@pytest.mark.parametrize("predict", ["goodness", "readout"])
def test_prediction_is_batch_independent(predict, mnist_train):
    x, y = mnist_train
    model = ForwardForward([784, 60, 40, 10], predict=predict, seed=0)
    train_epochs(model, x[:1000], y[:1000], batch_size=100)
    xb = x[5000:5064]
    batch_scores = model(xb)
    batch_pred = model.predict(xb)
    for i in range(0, 64, 7):
        assert model.predict(xb[i : i + 1]).item() == batch_pred[i].item()
        assert torch.allclose(model(xb[i : i + 1])[0], batch_scores[i], rtol=1e-4, atol=1e-4)
    # inside a different batch (other neighbours, other position)
    other = torch.cat([x[7000:7010], xb[:5]])
    assert torch.equal(model.predict(other)[10:], batch_pred[:5])


def test_state_dict_round_trip():
    x, y = _toy()
    a = ForwardForward(SMALL, predict="readout", seed=0, backend="reference")
    train_epochs(a, x, y, epochs=3, batch_size=8)
    b = ForwardForward(SMALL, predict="readout", seed=5, backend="reference")
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    assert int(b.steps_done) == int(a.steps_done)
    a.predict_mode = b.predict_mode = "goodness"
    assert torch.equal(a(x), b(x))


def test_diagnostics():
    x, y = _toy(64)
    model = ForwardForward(SMALL, seed=0, backend="reference")
    train_epochs(model, x, y, epochs=5, batch_size=16)
    d = model.diagnostics(x, y)
    for l in range(3):
        assert d[f"layer{l}_separation"] == pytest.approx(d[f"layer{l}_goodness_pos"] - d[f"layer{l}_goodness_neg"])
        assert 0.0 <= d[f"layer{l}_accuracy"] <= 1.0
    assert 0.0 <= d["goodness_accuracy"] <= 1.0 and 0.0 <= d["readout_accuracy"] <= 1.0


# ---------------------------------------------------------------- bad input

def test_bad_labels():
    model = ForwardForward(SMALL, backend="reference")
    x, y = _toy()
    with pytest.raises(ValueError, match=r"y must be class indices in 0..4, got range"):
        model.train_step(x, y + 5)
    with pytest.raises(ValueError, match=r"y must be class indices in 0..4"):
        model.train_step(x, y - 1)
    with pytest.raises(ValueError, match=r"y must be class indices in 0..4"):
        model.diagnostics(x, y + 1)


def test_images_narrower_than_the_overlay():
    with pytest.raises(ValueError, match=r"at least as wide as the label overlay: sizes\[0\] \(inputs\) = 4 < classes = 5"):
        ForwardForward([4, 10, 5])
    model = ForwardForward(SMALL, backend="reference")
    with pytest.raises(ValueError, match="x has 3 features per image, narrower than the label overlay"):
        model.predict(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"x must be \(batch, 40\)"):
        model.train_step(torch.rand(2, 39), torch.tensor([0, 1]))


def test_bad_constructor_arguments():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="theta must be finite"):
            ForwardForward(SMALL, theta=bad)
    with pytest.raises(ValueError, match=r"schedule must be one of \('simultaneous', 'layerwise', 'alternating'\), got 'greedy'"):
        ForwardForward(SMALL, schedule="greedy")
    with pytest.raises(ValueError, match="negatives must be one of"):
        ForwardForward(SMALL, negatives="easy")
    with pytest.raises(ValueError, match="predict must be one of"):
        ForwardForward(SMALL, predict="vote")
    with pytest.raises(ValueError, match="collab must be one of"):
        ForwardForward(SMALL, collab="later")
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="collab_weight"):
            ForwardForward(SMALL, collab="all", collab_weight=bad)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        ForwardForward([40, 5])
    with pytest.raises(ValueError, match="lr must be > 0"):
        ForwardForward(SMALL, lr=0.0)
    with pytest.raises(ValueError, match="layer_steps must be >= 1, got 0"):
        ForwardForward(SMALL, layer_steps=0)
    with pytest.raises(TypeError, match="layer_steps must be an int, got float"):
        ForwardForward(SMALL, layer_steps=2.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        ForwardForward(SMALL, backend="gpu")


def test_divergence_raises_with_step():
    model = ForwardForward(SMALL, lr=1e30, seed=0, backend="reference")
    x, y = _toy()
    with pytest.raises(DivergenceError, match=r"ForwardForward diverged at step \d+"):
        for _ in range(5):
            model.train_step(x, y)


# ---------------------------------------------------------------- real MNIST

def test_ff_short_mnist_run_beats_chance(mnist_train, mnist_test):
    x, y = mnist_train
    xt, yt = mnist_test
    model = registry.get_method("ff").build(layer_sizes(4), seed=0)
    train_epochs(model, x[:6000], y[:6000], batch_size=100)
    assert model.evaluate(xt[:2000], yt[:2000]) > 0.5  # chance is 0.10
    d = model.diagnostics(xt[:500], yt[:500])
    assert d["layer0_separation"] > 0


def test_ff_collab_and_goodness_short_mnist_runs_beat_chance(mnist_train, mnist_test):
    x, y = mnist_train
    xt, yt = mnist_test
    collab = registry.get_method("ff-collab").build([784, 200, 200, 10], seed=0)
    train_epochs(collab, x[:6000], y[:6000], batch_size=100)
    assert collab.evaluate(xt[:2000], yt[:2000]) > 0.5  # chance is 0.10
    good = ForwardForward([784, 200, 200, 10], predict="goodness", lr=2e-3, seed=0)
    train_epochs(good, x[:6000], y[:6000], batch_size=100)
    assert good.evaluate(xt[:2000], yt[:2000]) > 0.45  # (0.59 measured)


@pytest.mark.slow
def test_ff_reaches_98_percent_within_60_epochs(mnist_train, mnist_test):
    """Issue 6 target: >= 98.0% on the MNIST test set after the registered 60 epochs (shared
    widths 784-861-645-484-10, batch 100), judged on the final model: no epoch is picked by its
    test accuracy. Measured: 98.13% (97.98-98.19% over epochs 42-60; about 30 min on one core)."""
    x, y = mnist_train
    xt, yt = mnist_test
    spec = registry.get_method("ff")
    assert spec.full_epochs == 60
    model = spec.build(layer_sizes(4), seed=0)
    train_epochs(model, x, y, epochs=spec.full_epochs, batch_size=spec.batch_size)
    assert model.evaluate(xt, yt) >= 0.98


@pytest.mark.slow
def test_ff_collab_at_least_as_good_as_ff(mnist_train, mnist_test):
    """Issue 6 target: ff-collab >= ff after the same (registered) 60 epochs (shared widths,
    batch 100, final models). Measured: 98.21% against 98.13%; ff-collab was ahead at each of
    the last 8 epochs but behind early (97.50% against 97.63% after 20). About an hour on one
    core."""
    x, y = mnist_train
    xt, yt = mnist_test
    acc = {}
    for name in ("ff", "ff-collab"):
        spec = registry.get_method(name)
        assert spec.full_epochs == 60
        model = spec.build(layer_sizes(4), seed=0)
        train_epochs(model, x, y, epochs=spec.full_epochs, batch_size=spec.batch_size)
        acc[name] = model.evaluate(xt, yt)
    assert acc["ff-collab"] >= acc["ff"], acc


def test_ff_hardest_negative_is_the_predictions_best_wrong_label_with_goodness_skip_first():
    # With goodness_skip_first the prediction sums the goodness of every layer but the first;
    # the "hardest" negative must be the wrong label that this same score ranks highest (it
    # used to sum every layer, first included: a different label for about half the batch).
    torch.manual_seed(0)
    m = ForwardForward([20, 16, 16, 5], negatives="hardest", goodness_skip_first=True,
                       backend="reference", seed=0)
    x, y = torch.rand(64, 20), torch.randint(0, 5, (64,))
    for _ in range(5):
        m.train_step(x, y)
    neg = m._negative_labels(x, y)
    assert (neg != y).all()
    scores = m(x).clone()
    scores.scatter_(1, y.view(-1, 1), float("-inf"))
    torch.testing.assert_close(neg, scores.argmax(1), rtol=0, atol=0)
