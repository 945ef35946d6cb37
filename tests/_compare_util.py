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
