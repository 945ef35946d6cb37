"""``precision="tf32"`` and ``currents=`` on the Triton backend, under TRITON_INTERPRET=1.

The interpreter multiplies in fp32 whatever ``input_precision`` says, so on the CPU this checks
the plumbing (the kernels compile and run with ``input_precision="tf32"``, the result stays within
the tf32 tolerance of the reference); the tensor-core numerics are checked by ``bench/gpu.py``.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import hebbian_update, hebbian_update_reference, softwta_update, softwta_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, CallSpy, rel_err  # noqa: E402
from tests.test_hebbian_update import clone_kwargs, rule_kwargs  # noqa: E402
from tests.test_precision import RTOL_TF32, _inputs  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)


@pytest.mark.parametrize("rule", ["gha", "oja", "hpca", "bcm", "instar", "krotov"])
def test_triton_hebbian_tf32(rule, poisoned_empty):
    W, X = _inputs(33, 70, 67, seed=4)
    kw = rule_kwargs(rule, W.shape[0])
    want = hebbian_update_reference(W.clone(), X, rule, 0.05, precision="tf32", **clone_kwargs(kw)) - W
    got = hebbian_update(W.clone(), X, rule, 0.05, backend="triton", precision="tf32", **clone_kwargs(kw)) - W
    assert rel_err(got, want) <= RTOL_TF32


def test_triton_softwta_tf32(poisoned_empty):
    W, X = _inputs(33, 70, 67, seed=5)
    want = softwta_update_reference(W.clone(), X, 0.05, 1.0, precision="tf32") - W
    got = softwta_update(W.clone(), X, 0.05, 1.0, backend="triton", precision="tf32") - W
    assert rel_err(got, want) <= RTOL_TF32


@pytest.mark.parametrize("rule", ["gha", "oja", "bcm", "instar", "krotov", "softwta"])
def test_triton_tf32x3_within_fp32_tolerance(rule, monkeypatch, poisoned_empty):
    """precision='tf32x3' takes the tensor-core tiles and is held to the fp32 tolerance against
    the fp32 reference (the interpreter multiplies in fp32; bench/gpu.py checks the numerics)."""
    from bpalts.kernels import hebbian_update as th, softwta_update as ts

    W, X = _inputs(33, 70, 67, seed=8)
    if rule == "softwta":
        spy = CallSpy(ts.softwta_update)
        monkeypatch.setattr(ts, "softwta_update", spy)
        want = softwta_update_reference(W.clone(), X, 0.05, 1.0) - W
        got = softwta_update(W.clone(), X, 0.05, 1.0, backend="triton", precision="tf32x3") - W
        assert [k.get("precision") for k in spy.kwargs] == ["tf32x3"]
    else:
        kw = rule_kwargs(rule, W.shape[0])
        spy = CallSpy(th._tiles)
        monkeypatch.setattr(th, "_tiles", spy)
        want = hebbian_update_reference(W.clone(), X, rule, 0.05, **clone_kwargs(kw)) - W
        got = hebbian_update(W.clone(), X, rule, 0.05, backend="triton", precision="tf32x3",
                             **clone_kwargs(kw)) - W
        if rule not in ("instar", "krotov"):  # the sparse path has one GEMM; dense ones use _tiles
            assert spy.args and {a[0] for a in spy.args} == {"tf32x3"}
            assert spy.fn("tf32x3") == spy.fn("tf32")
    assert rel_err(got, want) <= RTOL_REDUCTION


@pytest.mark.parametrize("rule,params", [("instar", dict(k=2)), ("krotov", {})])
def test_triton_currents(rule, params, poisoned_empty):
    W, X = _inputs(17, 40, 70, seed=6)
    U = (X @ W.T).T.contiguous().T  # strided currents are accepted
    want = hebbian_update_reference(W.clone(), X, rule, 0.05, **params) - W
    got = hebbian_update(W.clone(), X, rule, 0.05, backend="triton", currents=U, **params) - W
    assert rel_err(got, want) <= 1e-5
