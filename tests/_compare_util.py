"""Helpers for comparing a backend with the reference (DESIGN.md section 4 tolerances)."""
from __future__ import annotations

import torch

RTOL_ELEMENTWISE = 1e-5
RTOL_REDUCTION = 1e-4


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||; NaN anywhere in ``got`` gives inf (NaN never passes)."""
    if not bool(torch.isfinite(got).all()):
        return float("inf")
    denom = want.double().norm().item()
    diff = (got.double() - want.double()).norm().item()
    return diff / denom if denom > 0 else diff


def train_epochs(model, x, y, epochs=1, batch_size=64, seed=0):
    """Shuffled mini-batch ``train_step`` calls over ``(x, y)``; returns the last metrics."""
    g = torch.Generator().manual_seed(seed)
    metrics = {}
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            metrics = model.train_step(x[idx], y[idx])
    return metrics
