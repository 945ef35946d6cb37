"""Helpers for comparing a backend with the reference (DESIGN.md section 4 tolerances)."""
from __future__ import annotations

import torch

RTOL_ELEMENTWISE = 1e-5
RTOL_REDUCTION = 1e-4


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||; NaN anywhere in ``got`` gives inf (NaN never passes)."""
    if not bool(torch.isfinite(got).all()):
        return float("inf")
    denom = want.double().norm().item()
    diff = (got.double() - want.double()).norm().item()
    return diff / denom if denom > 0 else diff


def train_epochs(model, x, y, epochs=1, batch_size=64, seed=0):
    """Shuffled mini-batch ``train_step`` calls over ``(x, y)``; returns the last metrics."""
    g = torch.Generator().manual_seed(seed)
    metrics = {}
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            metrics = model.train_step(x[idx], y[idx])
    return metrics


class CallSpy:
    """Wraps a function: records each call's positional and keyword arguments (``args``,
    ``kwargs``: one entry per call), then calls it. Install it with
    ``monkeypatch.setattr(module, name, CallSpy(getattr(module, name)))``."""

    def __init__(self, fn):
        self.fn = fn
        self.args: list[tuple] = []
        self.kwargs: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.args.append(args)
        self.kwargs.append(kwargs)
        return self.fn(*args, **kwargs)


class LaunchSpy:
    """Stands in for a Triton kernel object (``kernel[grid](*args, **kwargs)``): records each
    launch's grid and keyword arguments, then launches the real kernel. Install it with
    ``monkeypatch.setattr(module, name, LaunchSpy(getattr(module, name)))``."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.grids: list = []
        self.kwargs: list[dict] = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.grids.append(grid)
            self.kwargs.append(kwargs)
            return self.kernel[grid](*args, **kwargs)
        return launch


class ReplayCalls:
    """Stands in for a captured CUDA graph on the CPU: ``replay()`` reruns the captured function,
    which is what a replay does to the buffers. Use as ``capture = lambda fn:
    captured.append(ReplayCalls(fn)) or captured[-1]``."""

    def __init__(self, fn):
        self.fn, self.replays = fn, 0

    def replay(self):
        self.replays += 1
        return self.fn()


def stdout_words_per_thread_count(script: str, counts=(1, 2, 3)) -> list[list[str]]:
    """Run ``python -c script`` once per OpenMP thread count in ``counts`` (a fresh process each,
    ``OMP_NUM_THREADS`` set) and return each run's stdout split into words. A run that fails
    fails the calling test with its stderr. For the C++ kernels' thread-count independence: the
    script prints hashes of the outputs, and the caller compares the runs."""
    import os
    import subprocess
    import sys

    outs = []
    for n in counts:
        env = dict(os.environ, OMP_NUM_THREADS=str(n))
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        outs.append(run.stdout.split())
    return outs
