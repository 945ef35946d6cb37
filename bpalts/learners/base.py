"""Shared pieces of the learner contract (DESIGN.md section 3)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from bpalts._checks import DivergenceError  # noqa: F401  (re-exported: learners raise it)


def check_sizes(sizes) -> list[int]:
    """Layer widths: at least two positive ints (input ... classes)."""
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"sizes must list at least 2 positive ints (input ... classes), got {sizes!r}")
    return sizes


def check_labels(y, batch: int, n_out: int) -> None:
    """``y`` holds ``batch`` integer class indices in ``0..n_out-1``."""
    if not isinstance(y, torch.Tensor) or y.shape != (batch,):
        raise ValueError(f"y must be ({batch},) class indices, got {getattr(y, 'shape', y)}")
    if y.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= n_out:
        raise ValueError(f"y must be class indices in 0..{n_out - 1}, got range {int(y.min())}..{int(y.max())}")


def check_batch(x, y, n_in: int, n_out: int) -> None:
    """``x`` is a non-empty (batch, n_in) tensor and ``y`` (if given) its class indices."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != n_in:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be (batch, {n_in}), got {shape}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    if y is not None:
        check_labels(y, x.shape[0], n_out)


class Learner(nn.Module):
    """Base class: ``forward(x)`` -> logits/features, ``predict(x)`` -> class indices,
    ``train_step(x, y) -> dict`` of float metrics. Subclasses call :meth:`_finish_step` at the end
    of ``train_step`` so that divergence is reported with the step at which it happened."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long), persistent=True)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(dim=1)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
        """Accuracy (0..1) on ``(x, y)``, in batches, without touching the weights."""
        was_training = self.training
        self.eval()
        correct = 0
        for i in range(0, x.shape[0], batch_size):
            correct += (self.predict(x[i : i + batch_size]) == y[i : i + batch_size]).sum().item()
        self.train(was_training)
        return correct / max(1, x.shape[0])

    def _finish_step(self, metrics: dict) -> dict:
        """Count the step, check weights and metrics for non-finite values, return the metrics."""
        self.steps_done += 1  # a device op: no host sync (the step is read only to report)
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise DivergenceError(
                    f"{type(self).__name__} diverged at step {int(self.steps_done)}: {name} is {value}"
                )
        named = list(self.named_parameters())
        if not named:
            return metrics
        # One host sync for all the weights (on a GPU each bool() waits for the queued kernels).
        flags = [torch.isfinite(p).all() for _, p in named]
        device = flags[0].device
        if all(f.device == device for f in flags) and bool(torch.stack(flags).all()):
            return metrics
        for (name, _), ok in zip(named, flags):
            if not bool(ok):
                raise DivergenceError(
                    f"{type(self).__name__} diverged at step {int(self.steps_done)}: "
                    f"weights {name!r} are not finite"
                )
        return metrics
