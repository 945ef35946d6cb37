"""Input validation shared by every learner (DESIGN.md sections 2 and 3): the inputs of
``train_step``, ``predict`` and ``evaluate`` (dtype, shape, device, labels), the constructors'
arguments, batches of one sample, networks without a hidden layer, and divergence reporting.

Tiny networks and a few samples: every test here runs in well under a second. Device mismatches
are exercised with the ``meta`` device (no CUDA needed): the check reads only the tensors'
metadata, so it fails before anything runs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from bpalts.learners import (
    PEPITA,
    BackpropMLP,
    BidirectionalPC,
    DivergenceError,
    EchoStateNetwork,
    FeedbackAlignmentMLP,
    ForwardForward,
    HebbianMLP,
    IncrementalPC,
    PCNetwork,
    SoftHebbConvNet,
    SoftHebbMLP,
)
from bpalts.learners.base import SEED_MAX

N_IN, N_OUT = 784, 10


def _conv(**kw):
    args = dict(channels=(4,), kernel_sizes=3, paddings=1, powers=1.0, temperatures=1.0, lrs=0.3)
    return SoftHebbConvNet(**{**args, **kw})


def _esn(**kw):
    return EchoStateNetwork([N_IN, N_OUT], **{"n_reservoir": 16, "steps": 4, **kw})


#: name -> builder of a tiny learner taking (B, 784) images and 10 classes
LEARNERS = {
    "backprop": lambda: BackpropMLP([N_IN, 8, N_OUT]),
    "softhebb": lambda: SoftHebbMLP([N_IN, 8, N_OUT]),
    "hebbian": lambda: HebbianMLP([N_IN, 8, N_OUT]),
    "hebbian-teacher": lambda: HebbianMLP([N_IN, 8, N_OUT], readout="hebbian", readout_lr=0.1),
    "softhebb-conv": _conv,
    "pc": lambda: PCNetwork([N_IN, 8, N_OUT]),
    "ipc": lambda: IncrementalPC([N_IN, 8, N_OUT]),
    "pc-bidir": lambda: BidirectionalPC([N_IN, 8, N_OUT]),
    "fa": lambda: FeedbackAlignmentMLP([N_IN, 8, N_OUT], mode="fa"),
    "dfa": lambda: FeedbackAlignmentMLP([N_IN, 8, N_OUT], mode="dfa"),
    "pepita": lambda: PEPITA([N_IN, 8, N_OUT]),
    "ff": lambda: ForwardForward([N_IN, 8, N_OUT]),
    "reservoir": _esn,
}


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, N_IN, generator=g), torch.randint(0, N_OUT, (8,), generator=g)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CSR beta warnings and the like
        yield


# ---------------------------------------------------------------------------------------------
# finding 4: dtype, shape and device of x and y, checked alike by every learner


BAD_INPUTS = {
    # name: (make (x, y) from a good batch, error type, words the message must hold)
    "float64": (lambda x, y: (x.double(), y), TypeError, ["x must have the dtype", "float32", "float64"]),
    "float16": (lambda x, y: (x.half(), y), TypeError, ["x must have the dtype", "float16"]),
    "uint8": (lambda x, y: ((x * 255).to(torch.uint8), y), TypeError, ["x must have the dtype", "uint8"]),
    "images-3d": (lambda x, y: (x.view(8, 28, 28), y), ValueError, ["x must be (batch, 784)"]),
    "image-1d": (lambda x, y: (x[0], y[:1]), ValueError, ["x must be (batch, 784)"]),
    "x-elsewhere": (lambda x, y: (x.to("meta"), y), ValueError, ["x is on meta", "weights are on cpu"]),
    "y-elsewhere": (lambda x, y: (x, y.to("meta")), ValueError, ["y is on meta", "weights are on cpu"]),
    "x-list": (lambda x, y: (x.tolist(), y), TypeError, ["x must be a torch.Tensor"]),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("name", list(LEARNERS))
def test_bad_inputs_give_clear_errors_everywhere(name, bad, batch):
    model = LEARNERS[name]()
    make, error, words = BAD_INPUTS[bad]
    x, y = make(*batch)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    calls = [("train_step", lambda: model.train_step(x, y)), ("evaluate", lambda: model.evaluate(x, y))]
    if bad != "y-elsewhere":
        calls.append(("predict", lambda: model.predict(x)))
    for what, call in calls:
        with pytest.raises(error) as info:
            call()
        msg = str(info.value)
        if name == "softhebb-conv" and bad in ("images-3d", "image-1d"):
            words = ["x must be (batch, 784) or (batch, 1, 28, 28)"]
        for w in words:
            assert w in msg, (what, msg)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing ran
    assert int(model.steps_done) == 0


def test_conv_net_takes_its_4d_images(batch):
    x, y = batch
    model = _conv()
    model.train_step(x.view(8, 1, 28, 28), y)
    assert model.predict(x.view(8, 1, 28, 28)).shape == (8,)
    assert 0.0 <= model.evaluate(x.view(8, 1, 28, 28), y) <= 1.0


def test_float64_model_takes_float64_input(batch):
    x, y = batch
    model = BackpropMLP([N_IN, 8, N_OUT]).double()
    model.train_step(x.double(), y)
    assert model.predict(x.double()).shape == (8,)
    with pytest.raises(TypeError, match="float64, got torch.float32"):
        model.predict(x)


def test_input_check_reads_no_tensor_data(batch, monkeypatch):
    # The shared check compares metadata only: no .item(), no bool() of a tensor (a host sync
    # on a GPU).
    x, y = batch
    model = BackpropMLP([N_IN, 8, N_OUT])

    def no_sync(*args, **kwargs):
        raise AssertionError("the input check read tensor data")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    monkeypatch.setattr(torch.Tensor, "__bool__", no_sync)
    model.check_input(x, y)


# ---------------------------------------------------------------------------------------------
# finding 1: evaluate


def test_evaluate_checks_its_arguments(batch):
    x, y = batch
    model = BackpropMLP([N_IN, 8, N_OUT])
    for bs in (0, -1):
        with pytest.raises(ValueError, match=f"batch_size must be >= 1, got {bs}"):
            model.evaluate(x, y, batch_size=bs)
    for bs in (2.0, True, "8"):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            model.evaluate(x, y, batch_size=bs)
    with pytest.raises(ValueError, match="x and y are empty"):
        model.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"y must be class indices in 0\.\.9, got range 1[0-9]\.\.1[0-9]"):
        model.evaluate(x, y + 10)
    with pytest.raises(ValueError, match=r"y must be class indices in 0\.\.9"):
        model.evaluate(x, y - 10)
    with pytest.raises(TypeError, match="y must hold integer class indices, got dtype torch.float32"):
        model.evaluate(x, y.float())
    with pytest.raises(ValueError, match="same number of samples, got 8 images and 4 labels"):
        model.evaluate(x, y[:4])
    with pytest.raises(ValueError, match="same number of samples, got 4 images and 8 labels"):
        model.evaluate(x[:4], y)
    with pytest.raises(ValueError, match="y must be 1-D"):
        model.evaluate(x, y.view(8, 1))


def test_evaluate_counts_every_sample_in_any_batching(batch):
    x, y = batch
    model = BackpropMLP([N_IN, 8, N_OUT])
    want = (model.predict(x) == y).float().mean().item()
    for bs in (1, 3, 8, 100, np.int64(5)):
        assert model.evaluate(x, y, batch_size=bs) == pytest.approx(want)
    model.train()
    model.evaluate(x, y)
    assert model.training  # the mode is restored
    assert model.evaluate(x, y.to(torch.int32)) == pytest.approx(want)


# ---------------------------------------------------------------------------------------------
# finding 2: no hidden layer


@pytest.mark.parametrize("cls", [SoftHebbMLP, HebbianMLP])
def test_hebbian_learner_without_hidden_layer_is_a_readout(cls, batch):
    x, y = batch
    model = cls([N_IN, N_OUT], hebbian_samples=4)
    assert len(model.weights) == 0
    assert model.backend in ("reference", "cpp", "triton")
    for _ in range(3):
        model.train_step(x, y)
    assert model.predict(x).shape == (8,)
    assert 0.0 <= model.evaluate(x, y) <= 1.0
    assert int(model.samples_seen) == 24
    if cls is SoftHebbMLP:
        torch.testing.assert_close(model.features(x), x)  # the readout sees the image itself


# ---------------------------------------------------------------------------------------------
# finding 3: a batch of one sample


@pytest.mark.parametrize("name", list(LEARNERS))
def test_a_batch_of_one_sample_trains(name, batch):
    x, y = batch
    model = LEARNERS[name]()
    model.train_step(x[:4], y[:4])
    m = model.train_step(x[:1], y[:1])  # a first step of one sample too, below
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    assert int(model.steps_done) == 2
    fresh = LEARNERS[name]()
    fresh.train_step(x[:1], y[:1])
    assert model.predict(x[:1]).shape == (1,)
    model.train()
    assert model(x[:1]).shape[0] == 1  # forward in training mode on one sample


@pytest.mark.parametrize("name", ["softhebb", "hebbian", "hebbian-teacher", "softhebb-conv"])
def test_batch_of_one_uses_the_running_statistics_and_leaves_them(name, batch):
    # A single sample has no batch variance: it is standardised with the running statistics,
    # which it does not change (nor the count of batches they have seen).
    x, y = batch
    model = LEARNERS[name]()
    model.train_step(x[:4], y[:4])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    one_value = [n for n in norms if isinstance(n, torch.nn.BatchNorm1d)]
    assert one_value
    before = [(n.running_mean.clone(), n.running_var.clone(), int(n.num_batches_tracked)) for n in one_value]
    model.train_step(x[4:5], y[4:5])
    for n, (mean, var, count) in zip(one_value, before):
        assert torch.equal(n.running_mean, mean) and torch.equal(n.running_var, var)
        assert int(n.num_batches_tracked) == count


def test_batch_of_one_in_the_hebbian_phase_still_learns(batch):
    x, y = batch
    model = SoftHebbMLP([N_IN, 8, N_OUT])
    W0 = model.weights[0].clone()
    model.train_step(x[:1], y[:1])
    assert not torch.equal(model.weights[0], W0)
    assert int(model.samples_seen) == 1


# ---------------------------------------------------------------------------------------------
# findings 5 and 6: constructor arguments are checked, not coerced


def test_flags_must_be_bools():
    with pytest.raises(TypeError, match="mirror must be a bool .* 'no'"):
        PEPITA([N_IN, 8, N_OUT], mirror="no")
    with pytest.raises(TypeError, match="goodness_skip_first must be a bool"):
        ForwardForward([N_IN, 8, N_OUT], goodness_skip_first="no")
    with pytest.raises(TypeError, match="readout_skip_first must be a bool"):
        ForwardForward([N_IN, 8, N_OUT], readout_skip_first=1)
    with pytest.raises(TypeError, match="skip_unreached must be a bool"):
        IncrementalPC([N_IN, 8, N_OUT], skip_unreached="yes")
    assert PEPITA([N_IN, 8, N_OUT], mirror=np.bool_(True)).mirror is True


SEEDED = {
    "backprop": lambda **kw: BackpropMLP([N_IN, 8, N_OUT], **kw),
    "softhebb": lambda **kw: SoftHebbMLP([N_IN, 8, N_OUT], **kw),
    "hebbian": lambda **kw: HebbianMLP([N_IN, 8, N_OUT], **kw),
    "softhebb-conv": lambda **kw: _conv(**kw),
    "pc": lambda **kw: PCNetwork([N_IN, 8, N_OUT], **kw),
    "pc-bidir": lambda **kw: BidirectionalPC([N_IN, 8, N_OUT], **kw),
    "fa": lambda **kw: FeedbackAlignmentMLP([N_IN, 8, N_OUT], **kw),
    "pepita": lambda **kw: PEPITA([N_IN, 8, N_OUT], **kw),
    "ff": lambda **kw: ForwardForward([N_IN, 8, N_OUT], **kw),
    "reservoir": lambda **kw: _esn(**kw),
}


@pytest.mark.parametrize("name", list(SEEDED))
def test_seed_must_be_an_int_in_range(name):
    build = SEEDED[name]
    for bad in (1.5, float("nan"), "1", True):
        with pytest.raises(TypeError, match="seed must be an int"):
            build(seed=bad)
    for bad in (-1, SEED_MAX + 1):
        with pytest.raises(ValueError, match=r"seed must be in 0\.\."):
            build(seed=bad)
    build(seed=np.int64(3))
    build(seed=SEED_MAX)


@pytest.mark.parametrize("cls", [SoftHebbMLP, HebbianMLP, _conv])
def test_hebbian_samples_must_be_a_non_negative_int(cls):
    kw = {} if cls is _conv else {"sizes": [N_IN, 8, N_OUT]}
    with pytest.raises(ValueError, match="hebbian_samples must be >= 0"):
        cls(**kw, hebbian_samples=-5)
    for bad in ("10", 2.7):
        with pytest.raises(TypeError, match="hebbian_samples must be an int"):
            cls(**kw, hebbian_samples=bad)
    assert cls(**kw, hebbian_samples=0).hebbian_samples == 0


def test_feedback_alignment_arguments():
    for bad in ((float("nan"), 1.0), (0.0, float("inf")), (0.0, float("nan"))):
        with pytest.raises(ValueError, match="input_norm .* must be finite"):
            FeedbackAlignmentMLP([N_IN, 8, N_OUT], input_norm=bad)
    with pytest.raises(TypeError, match=r"input_norm must be a sequence \(\(mean, std\)"):
        FeedbackAlignmentMLP([N_IN, 8, N_OUT], input_norm=0.5)
    with pytest.raises(TypeError, match="betas must be a sequence"):
        FeedbackAlignmentMLP([N_IN, 8, N_OUT], betas=0.9)
    with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\)"):
        FeedbackAlignmentMLP([N_IN, 8, N_OUT], betas=(0.9,))
    with pytest.raises(TypeError, match="milestones must be a sequence"):
        PEPITA([N_IN, 8, N_OUT], milestones=5)
    with pytest.raises(ValueError, match="milestones must be positive epoch numbers"):
        PEPITA([N_IN, 8, N_OUT], milestones=(float("inf"),))


@pytest.mark.parametrize("cls", [BackpropMLP, SoftHebbMLP, HebbianMLP, PCNetwork,
                                 FeedbackAlignmentMLP, PEPITA, ForwardForward, EchoStateNetwork])
def test_sizes_must_be_a_sequence(cls):
    with pytest.raises(TypeError, match="sizes must be a sequence of layer widths"):
        cls(20)
    with pytest.raises(TypeError, match="sizes must be a sequence of layer widths"):
        cls("784,10")


def test_conv_net_arguments():
    cases = [
        (dict(channels=4), TypeError, "channels must be a sequence"),
        (dict(channels=(4.7,)), TypeError, "channels must be an int, got float"),
        (dict(channels=(0,)), ValueError, "channels must be >= 1"),
        (dict(channels=()), ValueError, "channels must list one or more"),
        (dict(kernel_sizes=(0,)), ValueError, "kernel_sizes must be >= 1, got 0"),
        (dict(kernel_sizes=(-1,)), ValueError, "kernel_sizes must be >= 1, got -1"),
        (dict(kernel_sizes=(2.5,)), TypeError, "kernel_sizes must be an int"),
        (dict(paddings=(-1,)), ValueError, "paddings must be >= 0, got -1"),
        (dict(in_channels=0), ValueError, "in_channels must be >= 1, got 0"),
        (dict(image_size=0), ValueError, "image_size must be >= 1"),
        (dict(pool_kernel=0), ValueError, "pool_kernel must be >= 1, got 0"),
        (dict(pool_stride=0), ValueError, "pool_stride must be >= 1, got 0"),
        (dict(pool_padding=5), ValueError, r"pool_padding must be in 0\.\.2 \(at most half of pool_kernel\), got 5"),
        (dict(pool_padding=-1), ValueError, r"pool_padding must be in 0\.\.2"),
        (dict(readout_lr=0), ValueError, "readout_lr must be > 0"),
        (dict(readout_lr=-1), ValueError, "readout_lr must be > 0"),
        (dict(n_classes=0), ValueError, "n_classes must be >= 1"),
        (dict(kernel_sizes=(31,)), ValueError, "too small"),
        (dict(temperatures="1"), TypeError, "temperatures must be a real number"),
    ]
    for kw, error, match in cases:
        with pytest.raises(error, match=match):
            _conv(**kw)


def test_hebbian_rule_options_are_checked_at_construction():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['bogus'\]"):
        HebbianMLP([N_IN, 8, N_OUT], bogus=3)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.8 for rule 'instar'"):
        HebbianMLP([N_IN, 8, N_OUT], rule="instar", k=-1)
    with pytest.raises(ValueError, match=r"hidden layer 2 \(4 units\): k must be in 1\.\.4"):
        HebbianMLP([N_IN, 8, 4, N_OUT], rule="instar", k=6)
    with pytest.raises(ValueError, match="rule 'hpca' takes no option"):
        HebbianMLP([N_IN, 8, N_OUT], rule="hpca", k=2)
    with pytest.raises(ValueError, match="theta_rate must be in"):
        HebbianMLP([N_IN, 8, N_OUT], rule="bcm", theta_rate=2.0)
    HebbianMLP([N_IN, 8, N_OUT], rule="krotov", k=3, delta=0.2, p=3.0)


# ---------------------------------------------------------------------------------------------
# finding 7: reservoir adaptation that blows up


def test_reservoir_adaptation_divergence_names_the_step():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, N_IN, generator=g), torch.randint(0, N_OUT, (64,), generator=g)
    model = EchoStateNetwork([N_IN, N_OUT], n_reservoir=32, adapt_samples=640, adapt_lr=1e6)
    with pytest.raises(DivergenceError, match=r"EchoStateNetwork diverged at step \d+: .*adapt_lr"):
        for _ in range(10):
            model.train_step(x, y)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_non_finite_batch_is_bad_input_not_divergence(name, batch):
    """A NaN pixel is reported as bad input naming x (a ValueError), not as divergence: PC and
    the ESN check x before the step; the others find it when the step's result is non-finite
    (x is examined only then, so a finite step costs nothing more)."""
    x, y = batch
    x = x.clone()
    x[0, 500] = float("nan")
    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        LEARNERS[name]().train_step(x, y)
