"""bench/gpu.py rows for the forward-forward family: ``ff_layer_step`` (one FF layer step:
forward of the positive and negative batch, loss, closed-form gradient).

The op returns a tuple; the row's callables return one tensor: the flattened outputs
(h_pos, h_neg, grad_W, grad_b, goodness, loss) concatenated.
"""
from __future__ import annotations

import math

import torch

from bpalts.ops.ff_layer_step import ff_layer_step, ff_layer_step_reference

ANCHORS: dict = {}


def _inputs(B: int, D: int, N: int):
    def make(device, gen, lr):
        # Generated on the CPU, so a row is the same data on every machine. lr is unused.
        W = torch.randn(N, D, generator=gen) / math.sqrt(D)
        b = torch.randn(N, generator=gen) * 0.1
        xp = torch.rand(B, D, generator=gen)
        xn = torch.rand(B, D, generator=gen)
        return W.to(device), b.to(device), xp.to(device), xn.to(device)
    return make


def _flat(r) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in r])


def ops(smoke: bool, Op) -> list:
    shapes = ([("B5 13->37", 5, 13, 37), ("B33 70->130", 33, 70, 130)] if smoke else
              [("B256 784->2000", 256, 784, 2000), ("B256 784->861", 256, 784, 861),
               ("B256 861->645", 256, 861, 645), ("B1024 2000->2000", 1024, 2000, 2000)])
    rows = []
    for label, B, D, N in shapes:
        # theta bound per row (a Python float: no device sync inside a captured graph); the
        # goodness is about N/2 for these inputs, so the sigmoid is not saturated.
        th = N / 2.0
        rows.append(Op(
            name="ff_layer_step",
            shape=label,
            make_inputs=_inputs(B, D, N),
            reference=lambda W, b, xp, xn, th=th: _flat(ff_layer_step_reference(W, b, xp, xn, th)),
            triton=lambda W, b, xp, xn, th=th: _flat(ff_layer_step(
                W, b, xp, xn, th, backend="triton", check_finite_input=False)),
        ))
    return rows
