"""The hidden-width rule shared by every method in depth sweeps (DESIGN.md section 3).

A network with ``n_layers`` weight layers has ``n_layers - 1`` hidden layers. Together they hold
``total`` neurons (1990 by default), split in proportion to 0.75**1, 0.75**2, ..., each width
rounded to the nearest integer (so the sum can differ from ``total`` by a neuron or two: 12 layers
give 784-519-390-...-29-10, as DESIGN.md quotes).

    >>> hidden_sizes(4)
    [861, 645, 484]
    >>> layer_sizes(4)
    [784, 861, 645, 484, 10]

(The original comparison applied the fractions multiplicatively, which collapses deep networks to
zero-width layers; this rule never gives a layer narrower than 1 for the depths used, up to 12.)
"""
from __future__ import annotations

import math

from bpalts._checks import check_int, check_scalar

TOTAL_HIDDEN = 1990
RATIO = 0.75


def hidden_sizes(n_layers: int, total: int = TOTAL_HIDDEN, ratio: float = RATIO) -> list[int]:
    """Widths of the ``n_layers - 1`` hidden layers of an ``n_layers``-layer network."""
    n_layers = check_int("n_layers", n_layers, 1, what="weight layers, input to output")
    total = check_int("total", total, 0)
    ratio = check_scalar("ratio", ratio)
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    n_hidden = n_layers - 1
    if n_hidden == 0:
        return []
    if n_hidden > 2 * total:  # some width rounds below 1 (and a huge depth must not build a huge list)
        raise ValueError(
            f"{n_layers} layers leave a hidden layer with no neurons at total={total}; "
            "use fewer layers or a larger total"
        )
    weights = [ratio ** (i + 1) for i in range(n_hidden)]
    s = sum(weights)
    exact = [total * w / s for w in weights]
    sizes = [int(math.floor(e + 0.5)) for e in exact]
    if min(sizes) < 1:
        raise ValueError(
            f"{n_layers} layers leave a hidden layer with no neurons at total={total}; "
            "use fewer layers or a larger total"
        )
    return sizes


def layer_sizes(n_layers: int, n_in: int = 784, n_out: int = 10, total: int = TOTAL_HIDDEN) -> list[int]:
    """``[n_in, *hidden_sizes(n_layers), n_out]``: the full widths of an ``n_layers``-layer net."""
    hidden = hidden_sizes(n_layers, total)
    return [check_int("n_in", n_in, 1), *hidden, check_int("n_out", n_out, 1)]
