"""Predictive coding equals backprop exactly under the fixed-prediction assumption.

Song, Lukasiewicz, Xu, Bogacz, "Can the brain do backpropagation? Exact implementation of
backpropagation in predictive coding networks", NeurIPS 2020; Millidge, Tschantz, Buckley,
"Predictive coding approximates backprop along arbitrary computation graphs", 2020 / Neural
Computation 2022. With mu_l and f' frozen at their feed-forward values
(``fixed_predictions=True``), step size 1, a clamped MSE output and as many steps as layers,
each step moves the error one layer down: e_l = f'(mu_l) * (e_{l+1} W_{l+1}), the backprop delta.
The PC weight update from the predictions (``presynaptic="predictions"``) then equals minus the
gradient of the batch-mean loss ||target - output||^2 / 2, on every backend available here
(Triton under the interpreter).
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # noqa: E402  (before anything imports Triton)

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops.pc_relax import pc_relax  # noqa: E402
from bpalts.ops.pc_weight_update import pc_weight_update  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, rel_err  # noqa: E402

BACKENDS = bpalts.available_backends("cpu")
F = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda v: v,
     "leaky_relu": lambda v: torch.nn.functional.leaky_relu(v, 0.01)}


def _backprop_grads(Ws, bs, x, t, act):
    Wg = [W.detach().clone().requires_grad_() for W in Ws]
    bg = [b.detach().clone().requires_grad_() for b in bs]
    h = x
    for i, (W, b) in enumerate(zip(Wg, bg)):
        h = h @ W.T + b
        if i < len(Ws) - 1:
            h = F[act](h)
    loss = 0.5 * ((t - h) ** 2).sum(1).mean()
    return torch.autograd.grad(loss, Wg + bg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["tanh", "relu", "leaky_relu", "identity"])
@pytest.mark.parametrize("widths", [(8, 13, 7, 5, 3), (5, 4, 2)], ids=["depth4", "depth2"])
def test_pc_updates_equal_backprop_gradients(backend, act, widths):
    g = torch.Generator().manual_seed(3)
    Ws = [torch.randn(o, i, generator=g) / i**0.5 for i, o in zip(widths[:-1], widths[1:])]
    bs = [torch.randn(o, generator=g) * 0.1 for o in widths[1:]]
    B = 6
    x = torch.rand(B, widths[0], generator=g)
    t = torch.nn.functional.one_hot(torch.randint(0, widths[-1], (B,), generator=g), widths[-1]).float()
    L = len(Ws)
    r = pc_relax(Ws, x, t, steps=L, step_size=1.0, biases=bs, activation=act, fixed_predictions=True,
                 backend=backend)
    u = pc_weight_update(Ws, x, r.states, r.errors, biases=bs, activation=act, presynaptic="predictions",
                         backend=backend)
    grads = _backprop_grads(Ws, bs, x, t, act)
    for got, want in zip(u.weights + u.biases, grads):
        assert rel_err(got, -want) < RTOL_REDUCTION
    # and it is not an accident of the step count: with fewer steps the deepest layer is still 0
    if L > 2:
        r1 = pc_relax(Ws, x, t, steps=L - 2, step_size=1.0, biases=bs, activation=act,
                      fixed_predictions=True, backend=backend)
        assert r1.errors[0].abs().max() == 0
