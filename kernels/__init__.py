"""Triton GPU kernels, one op per module (installed as ``bpalts.kernels``).

Modules import Triton when they are imported; nothing here is imported by ``import bpalts``.
They run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (how CI tests them).
"""
