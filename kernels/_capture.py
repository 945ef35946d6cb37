"""CUDA-graph capture shared by the kernels' cached plans and graphs (imported as
``bpalts.kernels._capture``): :func:`capture`, and :class:`PlainCallGraphs`, the cache that
replays a small op's plain calls from a CUDA graph."""
from __future__ import annotations

from collections import OrderedDict

import torch


def capture(fn):
    """A CUDA graph of ``fn()``'s launches, captured on a side stream that first waits for the
    current stream's work (and that the current stream then waits for). ``fn`` must not sync:
    capture records its launches without running them."""
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    return g


def graphs_apply(device) -> bool:
    """Whether a plain call on ``device`` may replay a cached CUDA graph: a GPU, not the Triton
    interpreter, and not inside the caller's own capture (there the launches are recorded)."""
    import os

    return (torch.device(device).type == "cuda"
            and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
            and not torch.cuda.is_current_stream_capturing())


def replays_here(W: torch.Tensor, X: torch.Tensor, max_macs: int) -> bool:
    """Whether a plain update of ``W`` (N x F) by ``X`` (B x F) goes through its module's
    :class:`PlainCallGraphs`: at most ``max_macs`` multiply-adds (``B * N * F``; 0 = never)
    and :func:`graphs_apply`."""
    return 0 < X.shape[0] * W.shape[0] * X.shape[1] <= max_macs and graphs_apply(W.device)


def tensor_key(*tensors) -> tuple:
    """Address, shape and strides of each tensor (``None`` kept): the key part for tensors a
    graph reads or updates in place."""
    return tuple(None if t is None else (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
                 for t in tensors)


def settings_key(module) -> tuple:
    """A module's upper-case scalar settings (tiles, thresholds, switches), as part of a graph
    key: a graph bakes in the path those settings chose when it was captured, so a changed
    setting must make a new entry rather than replay the old path."""
    names = _setting_names.get(module.__name__)
    if names is None:  # the names are fixed at import; only their values change
        names = _setting_names[module.__name__] = tuple(sorted(
            k for k, v in vars(module).items() if k.isupper() and isinstance(v, (bool, int, float, str))))
    d = vars(module)
    return tuple(d[k] for k in names)


_setting_names: dict = {}


class _Entry:
    def __init__(self, inputs, held):
        # static copies of the per-call inputs, laid out like the first call's (copy_ takes any)
        self.static = [torch.empty_like(t) for t in inputs]
        self.held = held  # the in-place tensors: their addresses stay theirs while cached
        self.graph = None  # None: not captured yet; False: capture failed (eager from then on)
        self.seen = 0
        self.result = []  # what the captured call returned (its tensors live in the graph's pool)


class PlainCallGraphs:
    """CUDA graphs of a small op's plain calls. For a small update the host time of one call
    (Python, argument checks, a Triton launch or torch call per kernel: 0.2-0.4 ms on an H100
    host) exceeds its device time (0.05-0.15 ms); a replay is one launch.

    ``run(key, inputs, held, fn)`` runs ``fn(*static)``, ``static`` being copies of ``inputs``
    (the tensors the op only reads, new every call: copied in every call). Everything else the
    launches depend on must be in ``key``: every scalar argument, the module's settings
    (:func:`settings_key`), and the address, shape and strides of each tensor the op updates or
    reads in place (``held``: the entry keeps references to them, so no other tensor can take
    their addresses while it is cached; in-place changes to them are seen by the replay).

    The first call of a key runs ``fn(*inputs)`` as a plain call would, and only remembers the
    key: a key that never comes back (a learning rate that changes every step) costs no copy
    and no buffer. The second call makes the static copies and runs eagerly on them (which
    compiles what the graph will launch), the third captures and replays, later calls replay.
    A capture that fails leaves the key on eager launches. At most ``size`` keys (least
    recently used dropped)."""

    def __init__(self, size: int):
        self.size = size
        self.entries: "OrderedDict[tuple, _Entry]" = OrderedDict()

    def run(self, key: tuple, inputs, held, fn):
        """``fn(*static)``'s result: on a replay, what the capture returned (tensors the graph
        rewrites at every replay: the caller copies out what it keeps)."""
        if key not in self.entries:  # first sighting: a plain call, the key remembered
            self.entries[key] = None
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
            return fn(*inputs)
        self.entries.move_to_end(key)
        e = self.entries[key]
        if e is None:
            e = self.entries[key] = _Entry(inputs, held)
        for s, t in zip(e.static, inputs):
            s.copy_(t)
        e.seen += 1
        if e.graph is None and e.seen >= 2:
            try:
                e.graph = capture(lambda: e.result.append(fn(*e.static)))
            except Exception:  # capture unsupported here: stay with eager launches
                e.graph = False
                e.result.clear()
        if e.graph:
            e.graph.replay()
            return e.result[-1]
        return fn(*e.static)

    def clear(self) -> None:
        self.entries.clear()
