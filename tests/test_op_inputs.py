"""Bad and unusual inputs to the ops, on every backend that runs here (the Triton backend under
TRITON_INTERPRET=1): the cases an input audit found, each a clear error before anything is
written, or (for non-finite currents with the checks off) a NaN result without reading or
writing out of bounds."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import (  # noqa: E402
    ff_layer_step,
    hebbian_state,
    hebbian_update,
    pc_weight_update,
    reservoir_run,
    softwta_conv_update,
    softwta_update,
)

BACKENDS = bpalts.available_backends("cpu")
DENSE_RULES = ("gha", "oja", "hpca", "nlpca_sym", "bcm", "instar", "krotov")


def _state(rule, N):
    return hebbian_state(rule, N) if rule == "bcm" else None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", DENSE_RULES)
def test_broadcast_weights_rejected_before_any_write(rule, backend):
    """An in-place W that is a stride-0 view (expand) would get conflicting row updates (the
    Triton kernels wrote them silently; torch raised an error naming no argument)."""
    row = torch.randn(1, 6)
    W = row.expand(5, 6)
    with pytest.raises(ValueError, match=r"^W is updated in place and must not be a broadcast"):
        hebbian_update(W, torch.randn(4, 6), rule, 0.1, backend=backend, state=_state(rule, 5))
    assert torch.equal(W, row.expand(5, 6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcast_threshold_rejected_before_w_changes(backend):
    W = torch.randn(5, 6)
    W0 = W.clone()
    theta = torch.tensor([0.1]).expand(5)
    with pytest.raises(ValueError, match=r"^state\['theta'\] is updated in place"):
        hebbian_update(W, torch.randn(4, 6), "bcm", 0.1, backend=backend, state={"theta": theta})
    assert torch.equal(W, W0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcast_weights_rejected_softwta(backend):
    W = torch.randn(1, 9).expand(6, 9)
    with pytest.raises(ValueError, match="^W is updated in place"):
        softwta_update(W, torch.randn(4, 9), 0.1, backend=backend)
    Wc = torch.randn(1, 1, 3, 3).expand(4, 1, 3, 3)
    with pytest.raises(ValueError, match="^W is updated in place"):
        softwta_conv_update(Wc, torch.randn(2, 1, 6, 6), 0.1, backend=backend)


def test_broadcast_parameters_rejected_by_pc_weight_update():
    g = torch.Generator().manual_seed(0)
    Ws = [torch.randn(7, 5, generator=g), torch.randn(3, 7, generator=g)]
    bs = [torch.zeros(1).expand(7), torch.zeros(3)]
    x = torch.randn(4, 5, generator=g)
    states = [torch.randn(4, 7, generator=g), torch.randn(4, 3, generator=g)]
    errors = [torch.randn(4, 7, generator=g), torch.randn(4, 3, generator=g)]
    W0 = [W.clone() for W in Ws]
    with pytest.raises(ValueError, match=r"^biases\[0\] is updated in place"):
        pc_weight_update(Ws, x, states, errors, lr=0.1, biases=bs, backend="reference")
    assert all(torch.equal(a, b) for a, b in zip(Ws, W0))  # nothing written before the error
    upd = pc_weight_update(Ws, x, states, errors, biases=bs, backend="reference")  # no lr: read only
    assert upd.weights[0].shape == (7, 5)


@pytest.mark.parametrize("name", ["anti_hebbian", "adaptive_lr", "max_normalize"])
def test_softwta_flags_must_be_bools(name):
    W, X = torch.randn(6, 9), torch.randn(4, 9)
    with pytest.raises(TypeError, match=f"^{name} must be a bool"):
        softwta_update(W, X, 0.1, **{name: "no"})
    with pytest.raises(TypeError, match=f"^{name} must be a bool"):
        softwta_conv_update(torch.randn(4, 1, 3, 3), torch.randn(2, 1, 6, 6), 0.1, **{name: "no"})
    softwta_update(W, X, 0.1, **{name: np.bool_(False)})  # NumPy's bool is a bool


def test_scalar_and_int_types():
    W, X = torch.randn(6, 9), torch.randn(4, 9)
    hebbian_update(W, X, "gha", np.float32(0.01))  # NumPy reals are real numbers
    hebbian_update(W, X, "instar", 0.01, k=np.int64(2))
    with pytest.raises(TypeError, match="^k must be an int, got bool"):
        hebbian_update(W, X, "instar", 0.01, k=True)
    with pytest.raises(TypeError, match="^lr must be a real number, got bool"):
        hebbian_update(W, X, "gha", True)
    Wr, W_in, u = torch.randn(5, 5) * 0.1, torch.randn(5, 2), torch.randn(3, 1, 2)
    with pytest.raises(TypeError, match="^leak must be a real number"):
        reservoir_run(Wr, W_in, u, torch.tensor(True))
    with pytest.raises(TypeError, match="^normalize must be a bool"):
        ff_layer_step(torch.randn(6, 9), torch.randn(6), torch.randn(3, 9), torch.randn(3, 9), 1.0,
                      normalize="no")


def test_reservoir_keep_iterator_read_once():
    Wr, W_in, u = torch.randn(5, 5) * 0.1, torch.randn(5, 2), torch.randn(3, 1, 2)
    want = reservoir_run(Wr, W_in, u, 0.5, keep=[0, 2], backend="reference")
    got = reservoir_run(Wr, W_in, u, 0.5, keep=(i for i in (0, 2)), backend="reference")
    assert torch.equal(got, want)


def test_scalars_that_underflow_or_overflow_float32():
    with pytest.raises(ValueError, match="^eps must be at least"):
        ff_layer_step(torch.randn(6, 9), torch.randn(6), torch.zeros(1, 9), torch.randn(3, 9), 1.0,
                      eps=1e-50)
    with pytest.raises(ValueError, match="^temperature must be at least"):
        softwta_update(torch.randn(6, 9), torch.randn(4, 9), 0.1, temperature=1e-39)
    with pytest.raises(ValueError, match="^temperature must be at least"):
        softwta_conv_update(torch.randn(4, 1, 3, 3), torch.randn(2, 1, 6, 6), 0.1, temperature=1e-39)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softwta_nan_currents_no_out_of_bounds(backend):
    """A row of currents with no finite maximum (NaN from overflowing finite inputs, or NaN input
    with the checks off): the C++ gate searched past the row for the max (a segfault). Now every
    backend returns, and W shows the non-finite input as NaN, as the reference does."""
    r = softwta_update(torch.full((2, 2), 1e30), torch.tensor([[1e30, -1e30]]), 0.1, backend=backend)
    assert r.isnan().any()
    W, X = torch.randn(6, 9) * 0.5, torch.randn(4, 9)
    X[0, 0] = float("nan")
    softwta_update(W, X, 0.1, backend=backend, check_finite_input=False)
    assert W.isnan().any()
    Wc = torch.full((2, 1, 1, 2), 1e30)
    softwta_conv_update(Wc, torch.tensor([1e30, -1e30]).view(1, 1, 1, 2), 0.1, backend=backend)
    assert Wc.isnan().any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["instar", "krotov"])
def test_competitive_nan_currents_stay_in_bounds(rule, backend):
    """The Triton ranking kernel's 'no winner' sentinel (unit N) was used as a row index when a
    row's currents were all NaN: a write past W. Now a real unit is selected and its update is
    NaN; the rows' count is unchanged."""
    torch.manual_seed(0)
    W, X = torch.randn(5, 7) * 0.3, torch.randn(3, 7)
    X[0, 0] = float("nan")
    guard = torch.zeros(2, 5, 7)  # W as the middle of a larger buffer: nothing past it is written
    guard[0] = W
    Wv = guard[0]
    hebbian_update(Wv, X, rule, 0.05, backend=backend, check_finite_input=False)
    assert Wv.isnan().any() and torch.equal(guard[1], torch.zeros(5, 7))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ff_layer_step_rows_of_huge_entries_are_normalised(backend):
    """FF's length normalisation of rows whose squares overflow float32 (|x| ~ 1e20): the mean
    square is accumulated in float64 on every backend, so the step equals that of the same rows
    at unit scale (it used to divide them by infinity in the reference and Triton paths)."""
    g = torch.Generator().manual_seed(3)
    W, b = torch.randn(7, 11, generator=g) * 0.3, torch.randn(7, generator=g) * 0.1
    xp, xn = torch.randn(5, 11, generator=g), torch.randn(4, 11, generator=g)
    want = ff_layer_step(W, b, xp, xn, 1.0, backend="reference")
    got = ff_layer_step(W, b, xp * 1e20, xn * 3e21, 1.0, backend=backend)
    for name, w, v in zip(want._fields, want, got):
        assert torch.isfinite(v).all(), name
        torch.testing.assert_close(v, w, rtol=1e-5, atol=1e-5, msg=name)
