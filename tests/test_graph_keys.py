"""Cache keys of the replayed CUDA graphs and cached plans (kernels/_capture.py PlainCallGraphs,
kernels/pc_relax.py's plans): whatever a captured call reads must be in its key or copied in,
else a later call replays the old one. On the CPU under TRITON_INTERPRET=1, a graph emulated by
a rerun of the captured function (tests/test_plain_call_graphs.py)."""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import bpalts  # noqa: E402
from bpalts.ops import pc_relax, reservoir_run_reference  # noqa: E402
from tests._compare_util import RTOL_REDUCTION, ReplayCalls, rel_err  # noqa: E402

pytestmark = pytest.mark.skipif(
    "triton" not in bpalts.available_backends("cpu"), reason="Triton interpreter unavailable"
)


def test_persistent_graph_keep_last_step_is_keyed(monkeypatch, poisoned_empty):
    """PERSISTENT_GRAPHS, keep=[s] (one step kept, T unchanged): the persistent kernel runs
    s + 1 steps, so s must be in the key. keep=[2] three times (captured), then keep=[4]: it
    used to replay the 3-step graph and return step 2's state."""
    from bpalts.kernels import _capture
    from bpalts.kernels import reservoir_run as tk
    from tests.test_reservoir_run_triton import _problem

    captured = []
    monkeypatch.setattr(_capture, "capture", lambda fn: captured.append(ReplayCalls(fn)) or captured[-1])
    monkeypatch.setattr(tk, "PERSISTENT_GRAPHS", True)
    monkeypatch.setattr(tk, "_graphs_apply", lambda dev: True)
    monkeypatch.setattr(tk, "_graphs", _capture.PlainCallGraphs(4))
    W, W_in, inputs, leak, bias, x0 = _problem(13, 1, 6, 3, 5, True)
    for keep in ([2], [2], [2], [4], [4], [4], [4]):
        want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0, keep=keep)
        got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, persistent=True,
                               n_programs=1)
        assert rel_err(got, want) < RTOL_REDUCTION, keep
    assert len(tk._graphs.entries) == 2 and len(captured) == 2


def test_pc_relax_plan_follows_module_settings(monkeypatch, poisoned_empty):
    """A plan (and its graphs) is built for the module's settings at its creation: the output
    kernels' grid counts rows of BR, launched with the BR of the call. A setting changed between
    calls must make a new plan: BR 16 -> 8 used to launch 8-row programs on a grid sized for 16,
    leaving rows of the output unwritten (wrong errors and energies)."""
    from bpalts.kernels import pc_relax as tk
    from tests.test_pc_relax_triton import _close, _ref64, make_net

    captured = []
    monkeypatch.setattr(tk, "_cached", lambda device: True)
    monkeypatch.setattr(tk, "capture", lambda fn: captured.append(ReplayCalls(fn)) or captured[-1])
    monkeypatch.setattr(tk, "_plans", type(tk._plans)())
    monkeypatch.setattr(tk, "FULL_GRAPHS_MAX", 2)
    Ws, bs, _, x, t = make_net((6, 11, 7, 4), 40)
    kw = dict(activation="tanh", output_energy="ce")
    r = _ref64(Ws, bs, None, x, t, 3, **kw)
    for call, br in enumerate((16, 16, 8, 8, 8)):
        monkeypatch.setattr(tk, "BR", br)
        c = pc_relax(Ws, x, t, 3, 0.1, biases=bs, backend="triton", **kw)
        for got, want in zip(c.states + c.errors, r.states + r.errors):
            assert _close(got, want), (call, br)
        assert rel_err(c.energy, r.energy) < RTOL_REDUCTION, (call, br)
    assert len(tk._plans) == 2


def test_persistent_graphs_leave_keep_tables_to_plain_launches(monkeypatch, poisoned_empty):
    """PERSISTENT_GRAPHS with a keep table (steps neither all nor the last one): the launch reads
    a slots table made for each call, which a captured graph would read by address after that
    call freed it (the cache entry does not hold it). Such calls launch plainly; keep='last' and
    keep='all' still replay."""
    from bpalts.kernels import _capture
    from bpalts.kernels import reservoir_run as tk
    from tests.test_reservoir_run_triton import _problem

    replayed = []
    real = tk._replayed
    monkeypatch.setattr(tk, "_replayed", lambda *a, **k: replayed.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(tk, "PERSISTENT_GRAPHS", True)
    monkeypatch.setattr(tk, "_graphs_apply", lambda dev: True)
    monkeypatch.setattr(tk, "_graphs", _capture.PlainCallGraphs(4))
    monkeypatch.setattr(_capture, "capture", lambda fn: ReplayCalls(fn))
    W, W_in, inputs, leak, bias, x0 = _problem(13, 1, 6, 3, 5, True)
    for keep, graphed in (([3, 1], False), ("last", True), ("all", True)):
        n = len(replayed)
        got = tk.reservoir_run(W, W_in, inputs, leak, bias, x0, keep=keep, persistent=True,
                               n_programs=1)
        want = reservoir_run_reference(W, W_in, inputs, leak, bias, x0, keep=keep)
        assert rel_err(got, want) < RTOL_REDUCTION, keep
        assert (len(replayed) > n) == graphed, keep
