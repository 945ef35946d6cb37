"""CPU microbenchmarks of ``bpalts.ops.ff_layer_step``: reference (plain PyTorch) vs cpp.

Run (not part of the default test run; see bench/README.md)::

    python -m pytest bench/test_bench_ff.py --benchmark-only --benchmark-columns=median,iqr,rounds

One layer step (positive and negative batch: two forward GEMMs, the epilogue, the weight-gradient
GEMMs) at batch 256 for 784->2000 (Hinton's width) and for each layer of the shared widths
784-861-645-484; one group per shape, and bench/conftest.py prints the reference/cpp median
ratio after the table. Both backends run GEMMs of the same size (MKL); the C++ path works on the
raw input (the length normalisation is folded into the epilogue) and fuses bias, ReLU, goodness,
loss and dL/dG into one pass over the pre-activations.
"""
from __future__ import annotations

import math

import pytest
import torch

import bpalts
from bpalts.ops.ff_layer_step import ff_layer_step

BACKENDS = ("reference", "cpp")

# (label, batch, inputs D, units N)
SHAPES = [
    pytest.param(("B256 784->2000", 256, 784, 2000), id="B256-784-2000"),
    pytest.param(("B256 784->861", 256, 784, 861), id="B256-784-861"),
    pytest.param(("B256 861->645", 256, 861, 645), id="B256-861-645"),
    pytest.param(("B256 645->484", 256, 645, 484), id="B256-645-484"),
]


def _inputs(B: int, D: int, N: int):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(N, D, generator=g) / math.sqrt(N)
    b = torch.zeros(N)
    xp = torch.rand(B, D, generator=g)  # MNIST-like, in [0, 1)
    xn = torch.rand(B, D, generator=g)
    return W, b, xp, xn, float(N)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_ff_layer_step(benchmark, shape, backend):
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable on the CPU (see bpalts.info())")
    label, B, D, N = shape
    args = _inputs(B, D, N)
    benchmark.group = f"ff_layer_step {label}"
    benchmark.extra_info.update(backend=backend, shape=label, torch_threads=torch.get_num_threads())
    # check_finite_input=False: time the step, not the isfinite passes (the learner skips them too).
    out = benchmark(ff_layer_step, *args, backend=backend, check_finite_input=False)
    assert torch.isfinite(out.grad_W).all()
