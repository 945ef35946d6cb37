"""CPU microbenchmarks of ``bpalts.ops.hebbian_update``: reference (plain PyTorch) vs cpp.

Run (not part of the default test run; see bench/README.md)::

    python -m pytest bench/test_bench_hebbian.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds

One benchmark group per (rule, shape), so each group of the table compares the backends on the
same work; bench/conftest.py prints reference/cpp median ratios after the table. The
B1024 4096->4096 cases take about a second or two per call on the reference: they are marked
``large`` (deselect with ``-m "not large"``).

Cases:

* ``test_hebbian_update``: every rule (bcm with its threshold state, instar and krotov with their
  default k, delta, p) at B256 784->1024 and B1024 4096->4096 (large).
* ``test_hebbian_update_competitive``: instar and krotov at B256 784->2000 (the SoftHebb /
  Krotov-Hopfield layer width), plus krotov with p = 3. The reference is the dense formula
  (one-hot ``G``, full ``G^T X``); cpp touches only the selected rows.
* ``test_competitive_update_given_currents``: the same two rules at B256 784->2000 called with
  ``currents=U`` (a learner's forward pass already has ``U = X W^T``, which dominates the whole op
  once the update is sparse): the dense reference from ``U`` vs the C++ sparse update from ``U``.
* ``test_competitive_sparse_path_vs_dense_op``: the dense reference op as a user calls it
  (forward GEMM included) vs the C++ sparse path given ``currents=U``.

Every call updates ``W`` in place; lr is 1e-6 so the hundreds of repeated updates keep it finite
(checked after the run).
"""
from __future__ import annotations

import pytest
import torch

import bpalts
from bpalts.ops import HEBBIAN_RULES, hebbian_state, hebbian_update
from bpalts.ops.hebbian_update import current_weights, resolve_params

LR = 1e-6
RULES = ("gha", "oja", "hpca", "nlpca_sym", "bcm", "instar", "krotov")
BACKENDS = ("reference", "cpp")

# (label, batch B, inputs D, units N): W is N x D, X is B x D.
SHAPES = [
    pytest.param(("B256 784->1024", 256, 784, 1024), id="B256-784-1024"),
    pytest.param(("B1024 4096->4096", 1024, 4096, 4096), id="B1024-4096-4096",
                 marks=pytest.mark.large),
]
WIDE = ("B256 784->2000", 256, 784, 2000)


def _inputs(B: int, D: int, N: int):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(N, D, generator=g) / D**0.5  # rows of norm ~1
    X = torch.rand(B, D, generator=g)  # MNIST-like, in [0, 1)
    return W, X


def _skip_unavailable(backend: str) -> None:
    if backend not in bpalts.available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable on the CPU (see bpalts.info())")


def _rule_kwargs(rule: str, N: int, **params) -> dict:
    kw = dict(params)
    if HEBBIAN_RULES[rule].stateful:
        kw["state"] = hebbian_state(rule, N, theta_init=0.3)
    return kw


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shape", SHAPES)
def test_hebbian_update(benchmark, shape, rule, backend):
    assert rule in HEBBIAN_RULES
    _skip_unavailable(backend)
    label, B, D, N = shape
    W, X = _inputs(B, D, N)
    benchmark.group = f"hebbian_update[{rule}] {label}"
    benchmark.extra_info.update(backend=backend, rule=rule, shape=label,
                                torch_threads=torch.get_num_threads())
    # check_finite_input=False: time the update, not the two isfinite passes over W and X.
    benchmark(hebbian_update, W, X, rule=rule, lr=LR, backend=backend, check_finite_input=False,
              **_rule_kwargs(rule, N))
    assert torch.isfinite(W).all(), "W went non-finite over the repeated updates"


COMPETITIVE = [
    pytest.param("instar", {}, id="instar"),
    pytest.param("krotov", {}, id="krotov"),
    pytest.param("krotov", {"p": 3.0}, id="krotov-p3"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule,params", COMPETITIVE)
def test_hebbian_update_competitive(benchmark, rule, params, backend):
    _skip_unavailable(backend)
    label, B, D, N = WIDE
    W, X = _inputs(B, D, N)
    tag = "".join(f" {k}={v}" for k, v in params.items())
    benchmark.group = f"hebbian_update[{rule}{tag}] {label} (whole op)"
    benchmark.extra_info.update(backend=backend, rule=rule, shape=label,
                                torch_threads=torch.get_num_threads(), **params)
    benchmark(hebbian_update, W, X, rule=rule, lr=LR, backend=backend, check_finite_input=False,
              **params)
    assert torch.isfinite(W).all(), "W went non-finite over the repeated updates"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["instar", "krotov"])
def test_competitive_update_given_currents(benchmark, rule, backend):
    """``hebbian_update(..., currents=U)``: the update after the forward GEMM, on both backends
    (reference: one-hot G, dense G^T X; cpp: only the selected rows)."""
    _skip_unavailable(backend)
    label, B, D, N = WIDE
    W, X = _inputs(B, D, N)
    r = HEBBIAN_RULES[rule]
    U = X @ current_weights(W, r, resolve_params(r, W).p).T  # once; W drifts by ~1e-6 per call
    benchmark.group = f"hebbian_update[{rule}] {label} (update given U = X W^T)"
    benchmark.extra_info.update(backend=backend, rule=rule, shape=label,
                                torch_threads=torch.get_num_threads())
    benchmark(hebbian_update, W, X, rule=rule, lr=LR, backend=backend, check_finite_input=False,
              currents=U)
    assert torch.isfinite(W).all(), "W went non-finite over the repeated updates"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", ["instar", "krotov"])
def test_competitive_sparse_path_vs_dense_op(benchmark, rule, backend):
    """Issue 3's comparison: the dense reference op as a user calls it (forward GEMM included)
    vs the sparse C++ path in a learner that already has the currents from its forward pass."""
    _skip_unavailable(backend)
    label, B, D, N = WIDE
    W, X = _inputs(B, D, N)
    r = HEBBIAN_RULES[rule]
    U = X @ current_weights(W, r, resolve_params(r, W).p).T
    benchmark.group = f"hebbian_update[{rule}] {label} (dense op vs sparse path given U)"
    benchmark.extra_info.update(backend=backend, rule=rule, shape=label,
                                torch_threads=torch.get_num_threads())
    if backend == "reference":
        benchmark(hebbian_update, W, X, rule=rule, lr=LR, backend="reference", check_finite_input=False)
    else:
        benchmark(hebbian_update, W, X, rule=rule, lr=LR, backend=backend, check_finite_input=False,
                  currents=U)
    assert torch.isfinite(W).all(), "W went non-finite over the repeated updates"
