"""kernels/_capture.py PlainCallGraphs and the ops that use it (hebbian_update, its sparse path,
softwta_update: GRAPH_MAX_MACS), on the CPU under TRITON_INTERPRET=1. A CUDA graph is replaced by
a rerun of the captured function, which is what a replay does to the buffers."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import hebbian_update, hebbian_update_reference, softwta_update, softwta_update_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, ReplayCalls, rel_err  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)



@pytest.fixture
def emulated(monkeypatch):
    """Graphs on (GRAPH_MAX_MACS large, graphs_apply true on the CPU), captures recorded."""
    from bpalts.kernels import _capture
    from bpalts.kernels import hebbian_update as th
    from bpalts.kernels import softwta_update as ts

    captured = []
    monkeypatch.setattr(_capture, "capture", lambda fn: captured.append(ReplayCalls(fn)) or captured[-1])
    monkeypatch.setattr(_capture, "graphs_apply", lambda dev: True)
    for tk in (th, ts):
        monkeypatch.setattr(tk, "GRAPH_MAX_MACS", 1 << 40)
        monkeypatch.setattr(tk, "_graphs", _capture.PlainCallGraphs(3))
    return captured


def test_plain_call_graphs_cache():
    """First call a plain one (no copy), second eager on static copies, third captured then
    replayed, inputs copied in every call from the second, LRU of `size` keys, a failed capture
    stays eager."""
    from bpalts.kernels import _capture

    calls, captured = [], []
    real = _capture.capture
    _capture.capture = lambda fn: captured.append(ReplayCalls(fn)) or captured[-1]
    try:
        cache = _capture.PlainCallGraphs(2)
        acc = torch.zeros(3)
        fn = lambda xs: (calls.append(xs.data_ptr()), acc.add_(xs))  # noqa: E731
        for i in range(4):
            cache.run(("a",), (torch.full((3,), float(i)),), (acc,), fn)
        assert acc.tolist() == [6.0] * 3  # 0 + 1 + 2 + 3: every call's own input
        assert len(set(calls[1:])) == 1  # from the second call on, the static copy
        assert len(captured) == 1 and captured[0].replays == 2  # calls 3-4 (call 3: capture, replay)
        entry = cache.entries[("a",)]
        assert entry.held == (acc,) and entry.seen == 3
        cache.run(("b",), (torch.ones(3),), (), fn)
        cache.run(("c",), (torch.ones(3),), (), fn)
        assert list(cache.entries) == [("b",), ("c",)]  # "a" dropped (least recently used)

        def fail(fn):
            raise RuntimeError("capture not supported")

        _capture.capture = fail
        for _ in range(3):
            cache.run(("d",), (torch.ones(3),), (), fn)
        assert cache.entries[("d",)].graph is False and acc.tolist() == [11.0] * 3
    finally:
        _capture.capture = real


def test_settings_key_follows_the_module():
    from bpalts.kernels import hebbian_update as tk
    from bpalts.kernels._capture import settings_key

    before = settings_key(tk)
    tk.TRIL_PANELS += 1
    try:
        assert settings_key(tk) != before
    finally:
        tk.TRIL_PANELS -= 1
    assert settings_key(tk) == before


def test_graphs_apply_only_on_a_gpu():
    from bpalts.kernels import hebbian_update as tk
    from bpalts.kernels import softwta_update as ts
    from bpalts.kernels._capture import graphs_apply

    assert not graphs_apply(torch.device("cpu"))
    assert tk.GRAPH_MAX_MACS > 0 and ts.GRAPH_MAX_MACS > 0  # on since the H100 timed them


def _inputs(B, F, N, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, F, generator=g) * 0.2, torch.rand(B, F, generator=g)


@pytest.mark.parametrize("rule", ["gha", "bcm", "instar", "krotov"])
def test_hebbian_update_replayed(rule, emulated, poisoned_empty):
    """Four calls with new X each: every update matches the reference (W, and BCM's theta, read
    and updated in place), one capture (third call), two replays; a changed setting or lr is a
    new key."""
    from bpalts.kernels import hebbian_update as tk
    from tests.test_hebbian_update import clone_kwargs, rule_kwargs

    W, X = _inputs(9, 13, 21, 1)
    kw = rule_kwargs(rule, 21)
    W_ref, kw_ref = W.clone(), clone_kwargs(kw)
    for call in range(4):
        Xc = X * (1 + call)
        hebbian_update_reference(W_ref, Xc, rule, 0.05, **kw_ref)
        hebbian_update(W, Xc, rule, 0.05, backend="triton", **kw)
        assert rel_err(W, W_ref) < RTOL_REDUCTION, call
        if rule == "bcm":
            assert rel_err(kw["state"]["theta"], kw_ref["state"]["theta"]) < RTOL_REDUCTION
    assert len(emulated) == 1 and emulated[0].replays == 2
    assert len(tk._graphs.entries) == 1
    tk.TRIL_FORM, saved = ("panels" if tk.TRIL_FORM == "blocks" else "blocks"), tk.TRIL_FORM
    try:
        hebbian_update(W, X, rule, 0.05, backend="triton", **kw)
    finally:
        tk.TRIL_FORM = saved
    hebbian_update(W, X, rule, 0.01, backend="triton", **kw)
    assert len(tk._graphs.entries) == 3


def test_sparse_update_with_currents_replayed(emulated, poisoned_empty):
    """The sparse path given `currents`: those are copied in too."""
    W, X = _inputs(10, 12, 30, 2)
    W_ref = W.clone()
    for call in range(4):
        Xc = X + call
        U = Xc @ W.t()
        hebbian_update_reference(W_ref, Xc, "instar", 0.1, k=2, currents=U.clone())
        hebbian_update(W, Xc, "instar", 0.1, k=2, currents=U, backend="triton")
        assert rel_err(W, W_ref) < RTOL_REDUCTION, call
    assert len(emulated) == 1 and emulated[0].replays == 2


def test_softwta_update_replayed(emulated, poisoned_empty):
    """Three calls with new X; then W replaced in place by the caller (seen), and a new W
    tensor (a new key)."""
    from bpalts.kernels import softwta_update as ts

    W, X = _inputs(11, 17, 19, 3)
    W_ref = W.clone()
    for call in range(3):
        Xc = X * (1 + call)
        softwta_update_reference(W_ref, Xc, 0.1)
        softwta_update(W, Xc, 0.1, backend="triton")
        assert rel_err(W, W_ref) < RTOL_REDUCTION, call
    W.mul_(0.5)
    W_ref.copy_(W)
    softwta_update_reference(W_ref, X, 0.1)
    softwta_update(W, X, 0.1, backend="triton")
    assert rel_err(W, W_ref) < RTOL_REDUCTION
    assert len(emulated) == 1 and emulated[0].replays == 2
    W2 = W.clone()
    softwta_update(W2, X, 0.1, backend="triton")
    assert len(ts._graphs.entries) == 2


def test_keys_that_never_repeat_cost_no_copies(emulated, poisoned_empty):
    """A learning rate that changes every call (a schedule) makes a new key every call: each
    runs as a plain call on the caller's own X (no static copy, no capture), and the cache holds
    only the keys (at most its size)."""
    from bpalts.kernels import hebbian_update as tk

    seen = []
    real = tk._dense_update
    tk_update = lambda W, X, *a, **k: (seen.append(X.data_ptr()), real(W, X, *a, **k))[1]  # noqa: E731
    tk._dense_update, saved = tk_update, real
    try:
        W, X = _inputs(9, 13, 21, 4)
        W_ref = W.clone()
        for call in range(5):
            lr = 0.05 * (1 - 0.1 * call)
            hebbian_update_reference(W_ref, X, "gha", lr)
            hebbian_update(W, X, "gha", lr, backend="triton")
            assert rel_err(W, W_ref) < RTOL_REDUCTION, call
    finally:
        tk._dense_update = saved
    assert seen == [X.data_ptr()] * 5  # the caller's X every time
    assert not emulated and list(tk._graphs.entries.values()) == [None] * 3  # the last 3 keys
