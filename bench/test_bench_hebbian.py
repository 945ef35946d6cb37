"""CPU microbenchmarks of ``bpalts.ops.hebbian_update``: reference (plain PyTorch) vs cpp.

Run (not part of the default test run; see bench/README.md)::

    python -m pytest bench/test_bench_hebbian.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

One benchmark group per (rule, shape), so each group of the table compares the backends on the
same work; bench/conftest.py prints reference/cpp median ratios after the table. The
B1024 4096->4096 cases take about a second or two per call on the reference: they are marked
``large`` (deselect with ``-m "not large"``).

Every call updates ``W`` in place; lr is 1e-6 so the hundreds of repeated updates keep it finite
(checked after the run).
"""
from __future__ import annotations

import pytest
import torch

import bpalts
from bpalts.ops import HEBBIAN_RULES, hebbian_update

LR = 1e-6
RULES = ("gha", "oja", "hpca")
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
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shape", SHAPES)
def test_hebbian_update(benchmark, shape, rule, backend):
    assert rule in HEBBIAN_RULES
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable on the CPU (see bpalts.info())")
    label, B, D, N = shape
    W, X = _inputs(B, D, N)
    benchmark.group = f"hebbian_update[{rule}] {label}"
    benchmark.extra_info.update(backend=backend, rule=rule, shape=label,
                                torch_threads=torch.get_num_threads())
    # check_finite_input=False: time the update, not the two isfinite passes over W and X.
    benchmark(hebbian_update, W, X, rule=rule, lr=LR, backend=backend, check_finite_input=False)
    assert torch.isfinite(W).all(), "W went non-finite over the repeated updates"
