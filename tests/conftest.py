"""Shared pytest fixtures.

``mnist_train`` / ``mnist_test`` load MNIST once per test session through the default cache
(``$BPALTS_DATA`` or ``~/.cache/bpalts``), fetching it the first time on a machine.
"""
from __future__ import annotations

import pytest


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
