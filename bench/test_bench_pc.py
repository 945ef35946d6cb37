"""CPU microbenchmarks of ``bpalts.ops.pc_relax``: reference (eager PyTorch) vs cpp.

Run (not part of the default test run; see bench/README.md)::

    OMP_NUM_THREADS=1 python -m pytest bench/test_bench_pc.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

One group per shape (bench/conftest.py prints the reference/cpp median ratio per group):

- ``784-1000-500-250-10 B256 T20``: the DESIGN.md section 7 relaxation (tanh, clamped MSE
  output, feed-forward initialisation, step size 0.1, biases);
- ``784-861-645-484-10 B256 T20``: the comparison's 4-layer network (hidden widths of
  bpalts.learners.widths); an MNIST epoch is 235 such batches (x seconds per call);
- ``784-861-645-484-10 B256 T20 relu``: the same with the PC learners' default activation (relu).

Both backends run their GEMMs in MKL (per step, L-1 forward and L-1 feedback products; the
first layer's prediction once); the C++ backend skips the few whose result is known exactly
(a feedback product of an error still exactly 0 after the feed-forward start, a forward product
of a layer that did not move) and fuses every elementwise pass around the rest, so the ratio is
bounded by about total / GEMM time of the reference (``bench/cpu_ratios.py``'s ceiling: the
reference over the C++ path's own GEMM calls replayed alone).
"""
from __future__ import annotations

import pytest
import torch

import bpalts
from bpalts.ops.pc_relax import pc_relax

BACKENDS = ("reference", "cpp")
SHAPES = [
    pytest.param(("784-1000-500-250-10 B256 T20", (784, 1000, 500, 250, 10), 256, 20, "tanh"),
                 id="784-1000-500-250-10"),
    pytest.param(("784-861-645-484-10 B256 T20", (784, 861, 645, 484, 10), 256, 20, "tanh"),
                 id="784-861-645-484-10"),
    pytest.param(("784-861-645-484-10 B256 T20 relu", (784, 861, 645, 484, 10), 256, 20, "relu"),
                 id="784-861-645-484-10-relu"),
]


def _inputs(widths, B):
    g = torch.Generator().manual_seed(0)
    Ws = [torch.randn(o, i, generator=g) / i**0.5 for i, o in zip(widths[:-1], widths[1:])]
    bs = [torch.zeros(o) for o in widths[1:]]
    x = torch.rand(B, widths[0], generator=g)
    t = torch.nn.functional.one_hot(torch.randint(0, widths[-1], (B,), generator=g), widths[-1]).float()
    return Ws, bs, x, t


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_pc_relax(benchmark, shape, backend):
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable on the CPU (see bpalts.info())")
    label, widths, B, T, activation = shape
    Ws, bs, x, t = _inputs(widths, B)
    benchmark.group = f"pc_relax {label}"
    benchmark.extra_info.update(backend=backend, shape=label, torch_threads=torch.get_num_threads())
    res = benchmark.pedantic(pc_relax, args=(Ws, x, t, T, 0.1),
                             kwargs=dict(biases=bs, activation=activation, backend=backend,
                                         check_finite_input=False),
                             rounds=5, warmup_rounds=1)
    assert res.steps_run == T and torch.isfinite(res.energy).all()
