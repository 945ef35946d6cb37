"""Shared pytest fixtures.

``mnist_train`` / ``mnist_test`` load MNIST once per test session through the default cache
(``$BPALTS_DATA`` or ``~/.cache/bpalts``), fetching it the first time on a machine.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def mnist_train():
    """``bpalts.data.mnist("train")``: float32 (60000, 784) images, int64 labels, on the CPU."""
    from bpalts.data import mnist

    return mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    """``bpalts.data.mnist("test")``: float32 (10000, 784) images, int64 labels, on the CPU."""
    from bpalts.data import mnist

    return mnist("test")


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Every torch.empty during the call returns NaNs, so an element a kernel forgets to write
    poisons the result instead of passing by luck."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype == torch.int32:
            t.fill_(-(2**31))  # an index no row has
        return t

    monkeypatch.setattr(torch, "empty", nan_empty)
