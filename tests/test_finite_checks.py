"""bpalts._checks.one_finite_sync: the ops' finiteness checks of GPU tensors gathered into one
host sync. On the CPU the deferral is switched on for CPU tensors (``_defers``), which is the
same code path."""
from __future__ import annotations

import pytest
import torch

from bpalts import _checks
from bpalts._checks import check_finite, one_finite_sync
from bpalts.ops import hebbian_update, softwta_update
from bpalts.ops.pc_relax import pc_relax
from bpalts.ops.reservoir_run import reservoir_run


@pytest.fixture
def deferred(monkeypatch):
    """Defer CPU tensors' checks as GPU tensors' are; count the syncs (``.tolist()`` calls)."""
    monkeypatch.setattr(_checks, "_defers", lambda t: True)
    calls = []
    real = torch.Tensor.tolist

    def counting(self):
        calls.append(self.shape)
        return real(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    return calls


def test_one_sync_first_bad_in_call_order(deferred):
    good, bad = torch.ones(3), torch.tensor([1.0, float("nan")])
    with one_finite_sync():
        check_finite("a", good)
        check_finite("b", good)
    assert deferred == [(2,)]  # both checks, one sync
    with pytest.raises(ValueError, match="^c contains NaN"):
        with one_finite_sync():
            check_finite("a", good)
            check_finite("c", bad)
            check_finite("d", torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="^e contains NaN"):  # nested blocks join the outermost
        with one_finite_sync():
            with one_finite_sync():
                check_finite("e", bad)
            assert _checks._finite.pending  # still gathered: the outer block checks
    assert _checks._finite.pending is None


def test_an_error_inside_drops_the_gathered_checks(deferred):
    with pytest.raises(TypeError, match="shape error first"):
        with one_finite_sync():
            check_finite("x", torch.tensor([float("nan")]))
            raise TypeError("shape error first")
    assert _checks._finite.pending is None
    check_finite("y", torch.ones(2))  # outside a block: at once again
    with pytest.raises(ValueError, match="^z contains NaN"):
        check_finite("z", torch.tensor([float("nan")]))


def test_without_the_block_every_check_is_immediate():
    with pytest.raises(ValueError, match="^w contains NaN"):
        check_finite("w", torch.tensor([0.0, float("-inf")]))


@pytest.mark.parametrize("which", ["hebbian", "softwta", "pc", "reservoir"])
def test_ops_check_every_input_with_one_sync(which, deferred):
    """Each op's default finiteness checks run with one sync, and a NaN still raises naming its
    argument."""
    g = torch.Generator().manual_seed(0)
    W, X = torch.randn(7, 5, generator=g), torch.rand(4, 5, generator=g)
    if which == "hebbian":
        call = lambda W, X: hebbian_update(W, X, "gha", 0.1, backend="reference")  # noqa: E731
    elif which == "softwta":
        call = lambda W, X: softwta_update(W, X, 0.1, backend="reference")  # noqa: E731
    elif which == "pc":
        Ws = [torch.randn(6, 5, generator=g), torch.randn(3, 6, generator=g)]
        bs = [torch.zeros(6), torch.zeros(3)]
        t = torch.eye(3)[[0, 1, 2, 0]]
        call = lambda W, X: pc_relax(Ws, X, t, 2, 0.1, biases=bs, backend="reference")  # noqa: E731
    else:
        Wr, W_in = torch.randn(7, 7, generator=g) * 0.1, torch.randn(7, 5, generator=g)
        call = lambda W, X: reservoir_run(Wr, W_in, X.unsqueeze(0), 0.5, backend="reference")  # noqa: E731
    call(W.clone(), X)
    assert len(deferred) == 1
    X[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^(X|x|inputs) contains NaN"):
        call(W.clone(), X)
