"""bpalts: fast learning rules that train neural networks without backpropagation.

Subpackages: :mod:`bpalts.ops` (hot ops with reference / Triton / C++ backends),
:mod:`bpalts.learners` (``nn.Module`` learners), :mod:`bpalts.data` (MNIST),
:mod:`bpalts.compare` (the comparison harness, CLI ``bpalts-compare``).
"""
from __future__ import annotations

__version__ = "0.1.0"

from bpalts._backend import available_backends, info, resolve_backend  # noqa: E402

__all__ = ["__version__", "info", "available_backends", "resolve_backend"]
