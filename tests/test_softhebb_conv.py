"""SoftHebbConvNet: contract, bad input, a short real-MNIST run (CI) and the target (slow)."""
from __future__ import annotations

import pytest
import torch

from tests._compare_util import train_epochs

from bpalts import registry
from bpalts.learners import DivergenceError, layer_sizes
from bpalts.learners.hebbian import triangle
from bpalts.learners.softhebb_conv import SoftHebbConvNet, random_translate

SMALL = dict(channels=(4, 6), image_size=12, in_channels=1, n_classes=3)


def _batch(n=16, size=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, size * size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_triangle_on_feature_maps_centres_over_channels():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 5, 3, 4, generator=g)
    want = torch.relu(u - u.mean(dim=1, keepdim=True)) ** 0.7
    assert torch.allclose(triangle(u, 0.7), want)
    # Each pixel is the dense case on its channel vector.
    assert torch.allclose(triangle(u, 1.4)[1, :, 2, 3], triangle(u[1, :, 2, 3][None], 1.4)[0])


def test_registered():
    spec = registry.get_method("softhebb-conv")
    assert spec.fixed_depth
    model = spec.build(layer_sizes(4), backend="reference", seed=0)
    assert model.sizes == (784, 384 * 7 * 7, 10)
    assert model.channels == (96, 384)
    assert model.temperatures == (1.0, 1 / 0.65) and model.powers == (0.7, 1.4)
    assert model.lrs == (1.0, 1.0) and model.readout_shift == 2


def test_short_mnist_run_beats_chance(mnist_train, mnist_test):
    x, y = mnist_train
    xt, yt = mnist_test
    # 1500 samples of Hebbian learning, then 4500 more for the readout: its BatchNorm statistics
    # need ~100 steps to catch up with the features, whose scale falls as the norms near 1.
    model = SoftHebbConvNet(channels=(8, 16), lrs=0.1, hebbian_samples=1500, seed=0)
    train_epochs(model, x[:6000], y[:6000], batch_size=64)
    assert model.evaluate(xt[:2000], yt[:2000]) > 0.8  # chance is 0.10 (0.91 measured)


def test_layers_learn_then_freeze():
    x, y = _batch()
    model = SoftHebbConvNet(**SMALL, hebbian_samples=16, backend="reference")
    W0 = [w.detach().clone() for w in model.weights]
    assert model.train_step(x, y)["hebbian"] == 1.0
    W1 = [w.detach().clone() for w in model.weights]
    assert all(not torch.equal(a, b) for a, b in zip(W0, W1))
    stats = model.norms[1].running_mean.clone()
    V = model.readout.linear.weight.detach().clone()
    assert model.train_step(x, y)["hebbian"] == 0.0
    assert all(torch.equal(w.detach(), b) for w, b in zip(model.weights, W1))
    assert torch.equal(model.norms[1].running_mean, stats)  # frozen with the layer
    assert not torch.equal(model.readout.linear.weight.detach(), V)  # the readout keeps learning


def test_layerwise_schedule_trains_one_layer_at_a_time():
    x, y = _batch()
    model = SoftHebbConvNet(**SMALL, schedule="layerwise", hebbian_samples=32, backend="reference")
    W = [w.detach().clone() for w in model.weights]
    model.train_step(x, y)  # first half: layer 0 only
    assert not torch.equal(model.weights[0].detach(), W[0]) and torch.equal(model.weights[1].detach(), W[1])
    W = [w.detach().clone() for w in model.weights]
    model.train_step(x, y)  # second half: layer 1 only
    assert torch.equal(model.weights[0].detach(), W[0]) and not torch.equal(model.weights[1].detach(), W[1])


def test_layerwise_share_smaller_than_a_batch_still_trains_every_layer():
    """hebbian_samples 20 over two layers, a batch of 32: layer 1's share (samples 10..19) lies
    inside the first batch, which was given wholly to layer 0; now each layer takes its rows."""
    x, y = _batch(n=32)
    model = SoftHebbConvNet(**SMALL, schedule="layerwise", hebbian_samples=20, backend="reference")
    W0 = [w.detach().clone() for w in model.weights]
    model.train_step(x, y)
    assert all(not torch.equal(w.detach(), w0) for w, w0 in zip(model.weights, W0))


def test_backends_agree_on_a_step():
    x, y = _batch(seed=3)
    a = SoftHebbConvNet(**SMALL, seed=1, backend="reference")
    b = SoftHebbConvNet(**SMALL, seed=1, backend="auto")
    a.train_step(x, y), b.train_step(x, y)
    for wa, wb in zip(a.weights, b.weights):
        assert torch.allclose(wa, wb, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_and_to():
    x, y = _batch()
    a = SoftHebbConvNet(**SMALL, seed=1, backend="reference")
    a.train_step(x, y)
    b = SoftHebbConvNet(**SMALL, seed=2, backend="reference")
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    assert torch.equal(a.predict(x), b.predict(x))
    c = b.to("cpu")
    assert c is b and c.weights[0].device.type == "cpu"
    assert int(b.samples_seen) == 16 and int(b.steps_done) == 1


def test_accepts_image_shaped_input():
    x, y = _batch()
    model = SoftHebbConvNet(**SMALL, backend="reference")
    model.eval()
    assert torch.equal(model(x), model(x.view(-1, 1, 12, 12)))


def test_divergence_is_reported_with_the_step():
    x, y = _batch()
    model = SoftHebbConvNet(**SMALL, backend="reference")
    model.train_step(x, y)
    with torch.no_grad():
        model.weights[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="diverged at step 2"):
        model.train_step(x, y)


def test_random_translate_moves_each_image_by_its_own_offset():
    x = torch.rand(40, 2, 9, 7) + 1  # no zeros: every 0 in the result was moved in from outside
    x0 = x.clone()
    y = random_translate(x, 2, torch.Generator().manual_seed(3))
    assert y.shape == x.shape and torch.equal(x, x0)  # input untouched
    seen = set()
    for b in range(40):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(y[b], _shifted(x[b], dy, dx))]
        assert len(hits) == 1, b
        seen.add(hits[0])
    assert len(seen) > 10  # offsets differ between images
    assert torch.equal(random_translate(x, 0), x)


def _shifted(img, dy, dx):
    """``img`` (C, H, W) moved down by dy and right by dx, zero fill (the specification)."""
    out = torch.zeros_like(img)
    H, W = img.shape[1:]
    out[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        img[:, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def test_readout_shift_augments_only_after_the_hebbian_phase():
    x, y = _batch()
    kw = dict(**SMALL, hebbian_samples=16, backend="reference")
    plain, shifted = SoftHebbConvNet(**kw), SoftHebbConvNet(**kw, readout_shift=2)
    plain.train_step(x, y), shifted.train_step(x, y)  # Hebbian step: no augmentation, same result
    assert all(torch.equal(a, b) for a, b in zip(plain.weights, shifted.weights))
    assert torch.equal(plain.readout.linear.weight, shifted.readout.linear.weight)
    plain.train_step(x, y), shifted.train_step(x, y)  # readout step: features of shifted images
    assert not torch.equal(plain.readout.linear.weight, shifted.readout.linear.weight)
    assert all(torch.equal(a, b) for a, b in zip(plain.weights, shifted.weights))  # still frozen
    plain.eval(), shifted.eval()
    assert torch.equal(plain.features(x), shifted.features(x))  # evaluation sees x as given


def test_bad_input():
    for bad in (1.5, True):
        with pytest.raises(TypeError, match="readout_shift must be an int, got"):
            SoftHebbConvNet(**SMALL, readout_shift=bad)
    for bad in (-1, 12):  # image_size 12 in SMALL: shifts 0..11
        with pytest.raises(ValueError, match=r"readout_shift must be in 0\.\.11 \(pixels, less than image_size\)"):
            SoftHebbConvNet(**SMALL, readout_shift=bad)
    with pytest.raises(ValueError, match="schedule must be one of"):
        SoftHebbConvNet(**SMALL, schedule="greedy")
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        SoftHebbConvNet(**SMALL, temperatures=(1.0, 0.0))
    with pytest.raises(ValueError, match="powers must have one entry per conv layer"):
        SoftHebbConvNet(**SMALL, powers=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="too small"):
        SoftHebbConvNet(channels=(4, 4, 4, 4), kernel_sizes=3, paddings=1, powers=1.0,
                        temperatures=1.0, lrs=0.1, image_size=8)
    model = SoftHebbConvNet(**SMALL, backend="reference")
    x, y = _batch()
    with pytest.raises(ValueError, match=r"x must be \(batch, 144\) or \(batch, 1, 12, 12\)"):
        model.train_step(x[:, :100], y)
    with pytest.raises(ValueError, match="x is an empty batch"):
        model.train_step(x[:0], y[:0])
    with pytest.raises(ValueError, match="y must be class indices in 0..2"):
        model.train_step(x, y + 3)
    with pytest.raises(TypeError, match="y must hold integer class indices"):
        model.train_step(x, y.float())


# ------------------------------------------------------------------ target (slow)

@pytest.mark.slow
def test_softhebb_conv_target(mnist_train, mnist_test):
    """>= 99.0% MNIST test accuracy with the registered config and budget (one unsupervised
    epoch, then the readout), as the issue asks. On a CPU this takes about an hour."""
    spec = registry.get_method("softhebb-conv")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = spec.build(layer_sizes(4), seed=0).to(device)
    x, y = (t.to(device) for t in mnist_train)
    train_epochs(model, x, y, epochs=spec.full_epochs, batch_size=spec.batch_size)
    assert model.evaluate(*(t.to(device) for t in mnist_test)) >= 0.99
