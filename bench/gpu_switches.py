"""Helpers for the bench/gpu.py rows that time a path other than the default: set a kernel
module's switches for one call, and make a row's check look at a replay of the op's own cached
CUDA graph. Used by gpu.py and its family modules (gpu_pc, gpu_reservoir); bench/ is first on
their sys.path."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def with_settings(module: str, call: Callable[[], Any], **settings):
    """``call()`` with the constants in ``settings`` of ``bpalts.kernels.<module>`` set (e.g.
    ``TRIL_FORM="blocks"``), restored afterwards."""
    tk = importlib.import_module(f"bpalts.kernels.{module}")
    saved = {k: getattr(tk, k) for k in settings}
    for k, v in settings.items():
        setattr(tk, k, v)
    try:
        return call()
    finally:
        for k, v in saved.items():
            setattr(tk, k, v)


def check_a_replay(fn: Callable[..., Any], in_place: tuple[int, ...] = ()) -> Callable[..., Any]:
    """For rows whose op replays its own cached CUDA graph (captured at the second call of a
    configuration in ``pc_relax``'s full graphs, at the third in ``PlainCallGraphs``): the row's
    first call, which is its correctness check, runs ``fn`` twice on the same arguments first,
    so that the result it checks comes from a replay. The arguments at the positions in
    ``in_place`` (tensors ``fn`` updates in place, e.g. a weight matrix) are restored after
    those two calls, so the checked call starts from the row's own inputs."""
    first = [True]

    def run(*args):
        if first[0]:
            first[0] = False
            saved = [args[i].clone() for i in in_place]
            fn(*args)
            fn(*args)
            for i, t in zip(in_place, saved):
                args[i].copy_(t)
        return fn(*args)
    return run
