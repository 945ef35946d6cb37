"""CPU microbenchmarks of ``bpalts.ops.reservoir_run``: reference (plain PyTorch) vs cpp, dense
and 5%-dense CSR recurrent weights, at the DESIGN.md section 7 shape (N2000, B1, T784: the
pixel sequence, one input per step).

Run (not part of the default test run; see bench/README.md)::

    OMP_NUM_THREADS=1 python -m pytest bench/test_bench_reservoir.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

One benchmark group, so bench/conftest.py prints every backend's median against the DENSE
reference (``reference``): ``reference/cpp`` is the dense C++ speedup (target >= 2x),
``reference/cpp-csr`` the CSR C++ speedup over the dense eager run (target >= 5x), and
``reference/reference-csr`` what plain torch.sparse gives.

At B=1 every step is a 2000 x 2000 matrix-vector product: 16 MB of float32 W, more than the
L2s, for one multiply-add per entry (memory bound). The reference streams all of W every step;
the C++ path reads each entry once per two steps (forward and backward passes over chunks of
rows, each load used for step t and step t+1: about 0.55 of W per step; see
``run_dense_two_step`` in csrc/reservoir_run.cpp). The CSR matrix is 1.2 MB (values + 2-byte
column indices) at 5%, its rows multiplied with AVX2 gathers.

On a shared, busy machine add ``--benchmark-timer=time.process_time`` (CPU time of this
process): wall-clock medians there swing by 2x between runs.
"""
from __future__ import annotations

import math

import pytest
import torch

import bpalts
from bpalts.ops.reservoir_run import image_sequence, reservoir_run

N, DENSITY, LEAK = 2000, 0.05, 0.3
LABEL = "N2000 B1 T784 D1"
# (benchmark backend label, op backend, sparse W)
CASES = [
    ("reference", "reference", False),
    ("cpp", "cpp", False),
    ("reference-csr", "reference", True),
    ("cpp-csr", "cpp", True),
]


def _inputs(sparse: bool):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(N, N, generator=g)
    if sparse:
        W = W * (torch.rand(N, N, generator=g) < DENSITY) / math.sqrt(DENSITY)
    W = W * (0.9 / math.sqrt(N))  # spectral radius about 0.9
    W_in = torch.rand(N, 1, generator=g) * 2 - 1
    inputs = image_sequence(torch.rand(1, 784, generator=g), "pixels")  # (784, 1, 1)
    return (W.to_sparse_csr() if sparse else W), W_in, inputs


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reservoir_run(benchmark, case):
    label, backend, sparse = case
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable on the CPU (see bpalts.info())")
    W, W_in, inputs = _inputs(sparse)
    benchmark.group = f"reservoir_run {LABEL} (dense reference vs each)"
    benchmark.extra_info.update(backend=label, shape=LABEL, torch_threads=torch.get_num_threads(),
                                density=DENSITY if sparse else 1.0)
    out = benchmark.pedantic(reservoir_run, args=(W, W_in, inputs, LEAK),
                             kwargs=dict(backend=backend, check_finite_input=False),
                             rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (784, 1, N) and torch.isfinite(out).all()
