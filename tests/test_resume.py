"""A learner's ``state_dict`` resumes training exactly: after ``torch.save`` / ``torch.load``
(``weights_only=True``) into a learner built with the same arguments, the next training steps
give the same metrics and the same weights, buffers, optimiser moments and decayed rates, and
draw the same random numbers (``Learner.get_extra_state``: every optimiser and generator)."""
from __future__ import annotations

import io
import warnings

import pytest
import torch

from bpalts.learners import BackpropMLP, ForwardForward
from tests.test_learner_inputs import LEARNERS, N_IN, N_OUT

CASES = {**LEARNERS,
         "backprop-decay": lambda: BackpropMLP([N_IN, 8, N_OUT], lr_decay=0.5),
         "ff-decay": lambda: ForwardForward([N_IN, 8, N_OUT], lr_decay=0.5)}


def _batches(n):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(8, N_IN, generator=g), torch.randint(0, N_OUT, (8,), generator=g)) for _ in range(n)]


def _tensors(module):
    return {k: v for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("route", ["torch.save", "in memory"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_resumes_training_exactly(name, route):
    """Through ``torch.save`` / ``torch.load``, or ``b.load_state_dict(a.state_dict())`` in memory:
    there torch.optim keeps state tensors of the right dtype and device as given, so b's optimiser
    moments were a's tensors, and training one learner moved the other's (Adam in backprop, ff,
    the Hebbian learners)."""
    make = CASES[name]
    batches = _batches(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = make()
        for x, y in batches[:3]:
            a.train_step(x, y)
        state = a.state_dict()
        if route == "torch.save":
            buf = io.BytesIO()
            torch.save(state, buf)
            buf.seek(0)
            state = torch.load(buf, weights_only=True)
        b = make()
        b.load_state_dict(state)
        for x, y in batches[3:]:  # b steps first: with shared moments, a would see b's step
            torch.manual_seed(7)  # the global generator too, for any learner that used it
            mb = b.train_step(x, y)
            torch.manual_seed(7)
            ma = a.train_step(x, y)
            assert ma == mb
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert repr(a.get_extra_state()) == repr(b.get_extra_state())


def test_extra_state_names_what_it_holds_and_refuses_a_mismatch():
    ff = ForwardForward([N_IN, 8, N_OUT])
    assert sorted(ff.get_extra_state()) == ["_gen", "optimizer", "readout_optimizer"]
    with pytest.raises(ValueError, match=r"holds training state for \['nope'\]"):
        ff.set_extra_state({"nope": {}})
    with pytest.raises(TypeError, match="_extra_state must be a dict"):
        ff.set_extra_state([1])
