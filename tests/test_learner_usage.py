"""Using the learners the way a user does: label dtypes, ``predict`` on a learner left in training
mode, and ``train_step`` inside a caller's ``torch.no_grad()`` / ``torch.inference_mode()``.

Tiny networks and a few samples (CPU, well under a second each)."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from bpalts.learners import (
    PEPITA,
    BackpropMLP,
    BidirectionalPC,
    EchoStateNetwork,
    FeedbackAlignmentMLP,
    ForwardForward,
    HebbianMLP,
    IncrementalPC,
    PCNetwork,
    SoftHebbMLP,
)

from tests.test_learner_inputs import N_IN, N_OUT, _conv  # noqa: E402  (the same tiny conv net)


#: name -> builder of a tiny learner taking (B, 784) images and 10 classes
LEARNERS = {
    "backprop": lambda: BackpropMLP([N_IN, 8, N_OUT]),
    "backprop-mse": lambda: BackpropMLP([N_IN, 8, N_OUT], loss="mse"),
    "softhebb": lambda: SoftHebbMLP([N_IN, 8, N_OUT]),
    "hebbian": lambda: HebbianMLP([N_IN, 8, N_OUT]),
    "softhebb-conv": _conv,
    "pc": lambda: PCNetwork([N_IN, 8, N_OUT]),
    "ipc": lambda: IncrementalPC([N_IN, 8, N_OUT]),
    "pc-bidir": lambda: BidirectionalPC([N_IN, 8, N_OUT]),
    "fa": lambda: FeedbackAlignmentMLP([N_IN, 8, N_OUT], mode="fa"),
    "pepita": lambda: PEPITA([N_IN, 8, N_OUT]),
    "ff": lambda: ForwardForward([N_IN, 8, N_OUT]),
    "reservoir": lambda: EchoStateNetwork([N_IN, N_OUT], n_reservoir=16, steps=4),
}

#: learners with batch normalisation in front of their layers
WITH_BATCHNORM = {
    "softhebb": lambda: SoftHebbMLP([N_IN, 8, N_OUT], hebbian_samples=10_000),
    "hebbian": lambda: HebbianMLP([N_IN, 8, 8, N_OUT], hebbian_samples=10_000),
    "hebbian-frozen": lambda: HebbianMLP([N_IN, 8, N_OUT], hebbian_samples=16),
    "softhebb-conv": lambda: _conv(hebbian_samples=10_000),
}


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, N_IN, generator=g), torch.arange(16) % N_OUT


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CSR beta warnings and the like
        yield


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
@pytest.mark.parametrize("name", list(LEARNERS))
def test_every_integer_label_dtype_trains_like_int64(name, dtype, batch):
    # The learners promise "y integer class indices" (the readouts take int8..int64 and uint8):
    # BackpropMLP's cross-entropy used to reject int32 labels, and int16 / int8 labels were
    # refused as "not integer class indices".
    x, y = batch
    a = LEARNERS[name]()
    b = copy.deepcopy(a)
    ra, rb = a.train_step(x, y), b.train_step(x, y.to(dtype))
    assert ra == rb
    assert _same(_state(a), _state(b))
    assert a.evaluate(x, y) == b.evaluate(x, y.to(dtype))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int8])
def test_bidirectional_pc_generates_from_small_integer_labels(dtype):
    model = BidirectionalPC([N_IN, 8, N_OUT])
    labels = torch.arange(N_OUT)
    assert torch.equal(model.generate(labels.to(dtype)), model.generate(labels))


@pytest.mark.parametrize("name", list(WITH_BATCHNORM))
def test_predict_in_training_mode_is_per_sample_and_changes_nothing(name, batch):
    # A learner is in training mode after construction and after train_step. predict used to run
    # its batch normalisation in that mode: every call folded the queried images into the running
    # statistics, and a sample's class depended on the rest of its batch.
    x, y = batch
    model = WITH_BATCHNORM[name]()
    for _ in range(2):
        model.train_step(x, y)
    assert model.training
    before = _state(model)
    queries = torch.rand(12, N_IN, generator=torch.Generator().manual_seed(1)) * 0.5
    whole = model.predict(queries)
    one_by_one = torch.cat([model.predict(queries[i : i + 1]) for i in range(len(queries))])
    halves = torch.cat([model.predict(queries[:6]), model.predict(queries[6:])])
    assert _same(before, _state(model))  # no running statistics changed
    assert torch.equal(whole, one_by_one) and torch.equal(whole, halves)
    assert model.training  # the mode is restored
    model.eval()
    assert torch.equal(model.predict(queries), whole)
    model.train()
    # training goes on exactly as if predict had not been called
    ref = WITH_BATCHNORM[name]()
    for _ in range(3):
        ref.train_step(x, y)
    model.train_step(x, y)
    assert _same(_state(ref), _state(model))


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_backprop_trains_inside_no_grad(loss, batch):
    # Autograd is BackpropMLP's learning rule: its train_step enables it itself, so a training
    # loop wrapped in torch.no_grad() (as the local learners allow) trains it the same way.
    x, y = batch
    a = BackpropMLP([N_IN, 8, N_OUT], loss=loss)
    b = copy.deepcopy(a)
    ra = a.train_step(x, y)
    with torch.no_grad():
        rb = b.train_step(x, y)
    assert ra == rb
    assert _same(_state(a), _state(b))


@pytest.mark.parametrize("name", list(LEARNERS))
def test_train_step_inside_inference_mode_leaves_a_trainable_learner(name, batch):
    # A step run under torch.inference_mode() used to create the optimisers' moments (and the
    # gradients) as inference tensors, so every later step outside that mode failed ("Inplace
    # update to inference tensor outside InferenceMode"); BackpropMLP failed at once.
    x, y = batch
    a = LEARNERS[name]()
    b = copy.deepcopy(a)
    for _ in range(2):
        a.train_step(x, y)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors
        b.train_step(xi, yi)
    b.train_step(x, y)
    after = _state(b)
    assert not any(t.is_inference() for t in after.values())
    assert _same(_state(a), after)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_converting_a_trained_learner_converts_its_optimiser_state(name, batch):
    """``.double()`` after training: the optimisers' state (Adam's moments) follows the
    parameters. It stayed float32, and the next step of the Hebbian learners (Adam readouts)
    failed inside torch.optim ("expected dtype float ... but got dtype double"). The converted learner then
    trains on as the float32 one does (to float32 rounding)."""
    x, y = batch
    torch.manual_seed(0)
    a = LEARNERS[name]()
    a.train_step(x, y)
    b = copy.deepcopy(a)
    a.double()
    for _, obj in a._training_objects():
        if isinstance(obj, torch.optim.Optimizer):
            for st in obj.state.values():
                assert all(v.dtype == torch.float64 for k, v in st.items()
                           if torch.is_tensor(v) and k != "step" and v.is_floating_point())
    a.train_step(x.double(), y)
    b.train_step(x, y)
    pa, pb = a.predict(x.double()), b.predict(x)
    assert (pa == pb).float().mean() >= 0.9  # the same classes but for near ties
