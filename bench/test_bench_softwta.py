"""CPU microbenchmarks of ``bpalts.ops.softwta_update``: reference (plain PyTorch) vs cpp.

Run (not part of the default test run; see bench/README.md)::

    python -m pytest bench/test_bench_softwta.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

One benchmark group per shape, so each group of the table compares the backends on the same
work; bench/conftest.py prints reference/cpp median ratios after the table. The default flags
(anti-Hebbian, adaptive rate, max-abs scaling) are the expensive case. B1024 4096->4096 is
marked ``large`` (deselect with ``-m "not large"``).

Both backends run two GEMMs of the same size (``X W^T`` and ``Y~^T X``, MKL); what differs is
everything around them, so the ratio is largest where those elementwise passes are slow (several
threads on a busy machine) and bounded by the reference's total time / GEMM time on one quiet thread.

Every call updates ``W`` in place; lr is 1e-6 so the repeated updates keep it finite (checked
after the run).
"""
from __future__ import annotations

import pytest
import torch

import bpalts
from bpalts.ops import softwta_update

LR = 1e-6
BACKENDS = ("reference", "cpp")

# (label, batch B, inputs D, units N): W is N x D, X is B x D.
SHAPES = [
    pytest.param(("B256 784->1024", 256, 784, 1024), id="B256-784-1024"),
    pytest.param(("B1024 4096->4096", 1024, 4096, 4096), id="B1024-4096-4096",
                 marks=pytest.mark.large),
]


def _inputs(B: int, D: int, N: int):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(N, D, generator=g) / D**0.5  # rows of norm ~1
    X = torch.rand(B, D, generator=g)  # MNIST-like, in [0, 1)
    return W, X


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_softwta_update(benchmark, shape, backend):
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable on the CPU (see bpalts.info())")
    label, B, D, N = shape
    W, X = _inputs(B, D, N)
    benchmark.group = f"softwta_update {label}"
    benchmark.extra_info.update(backend=backend, shape=label, torch_threads=torch.get_num_threads())
    # check_finite_input=False: time the update, not the two isfinite passes over W and X.
    benchmark(softwta_update, W, X, lr=LR, backend=backend, check_finite_input=False)
    assert torch.isfinite(W).all(), "W went non-finite over the repeated updates"
