"""The Python side of a Triton op call: validation and backend dispatch, with the launches stubbed.

Run (not part of the default test run; see bench/README.md)::

    python -m pytest bench/test_bench_dispatch.py --benchmark-only --benchmark-columns=median,rounds

On a GPU, every op call pays this host-side time before its kernels launch. For the small-shape
targets (B256: kernels of 0.1-0.2 ms) it matters as much as the kernels themselves. On
2026-11-27 the H200 run measured ``hebbian_update`` gha at B256: 0.86 ms as a plain call,
against 0.165 ms for the same launches in a CUDA graph. Most of the difference was an uncached
``importlib.metadata`` lookup in the backend resolution (about 0.5 ms on the dev VM), now cached.

Here the kernels module's entry point is replaced by a stub, so only the public op's own work is
timed: argument checks (finiteness check off, as a learner calls it), backend resolution and
argument packing. TRITON_INTERPRET=1 lets ``backend="triton"`` resolve for CPU tensors. Triton
itself is never imported.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # noqa: E402  (resolve "triton" for CPU tensors)

import sys  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from bpalts.ops import ff_layer_step, hebbian_update, reservoir_run, softwta_update  # noqa: E402


def _stub_kernels(monkeypatch, module: str, **functions):
    """Install ``bpalts.kernels.<module>`` as a stub module holding ``functions`` (the real one,
    and Triton with it, is never imported)."""
    stub = types.ModuleType(f"bpalts.kernels.{module}")
    for name, fn in functions.items():
        setattr(stub, name, fn)
    monkeypatch.setitem(sys.modules, f"bpalts.kernels.{module}", stub)
    import bpalts.kernels as pkg

    monkeypatch.setattr(pkg, module, stub, raising=False)


@pytest.fixture
def hebb_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1024, 784, generator=g), torch.rand(256, 784, generator=g)


def test_dispatch_hebbian_update(benchmark, monkeypatch, hebb_data):
    _stub_kernels(monkeypatch, "hebbian_update", hebbian_update=lambda *a, **k: None,
                  hebbian_sparse_update=lambda *a, **k: None)
    W, X = hebb_data
    benchmark.group = "dispatch B256 784->1024"
    benchmark(lambda: hebbian_update(W, X, "gha", 1e-6, backend="triton", check_finite_input=False))


def test_dispatch_softwta_update(benchmark, monkeypatch, hebb_data):
    _stub_kernels(monkeypatch, "softwta_update", softwta_update=lambda *a, **k: None)
    W, X = hebb_data
    benchmark.group = "dispatch B256 784->1024"
    benchmark(lambda: softwta_update(W, X, 1e-6, backend="triton", check_finite_input=False))


def test_dispatch_ff_layer_step(benchmark, monkeypatch, hebb_data):
    W, X = hebb_data
    b = torch.zeros(W.shape[0])
    out = (torch.zeros(256, 1024), torch.zeros(256, 1024), torch.zeros_like(W), torch.zeros_like(b),
           torch.zeros(256), torch.zeros(256), torch.zeros(()))
    _stub_kernels(monkeypatch, "ff_layer_step", ff_layer_step=lambda *a, **k: out)
    benchmark.group = "dispatch B256 784->1024"
    benchmark(lambda: ff_layer_step(W, b, X, X, 10.0, backend="triton", check_finite_input=False))


def test_dispatch_reservoir_run(benchmark, monkeypatch):
    g = torch.Generator().manual_seed(0)
    W, W_in = torch.randn(2000, 2000, generator=g) * 0.02, torch.rand(2000, 28, generator=g)
    u = torch.rand(28, 256, 28, generator=g)
    out = torch.zeros(28, 256, 2000)
    _stub_kernels(monkeypatch, "reservoir_run", reservoir_run=lambda *a, **k: out)
    benchmark.group = "dispatch reservoir N2000 B256 T28"
    benchmark(lambda: reservoir_run(W, W_in, u, 0.5, backend="triton", check_finite_input=False))
