"""Shared pieces of the learner contract (DESIGN.md section 3)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class DivergenceError(FloatingPointError):
    """A learner's weights or energy became non-finite; the message names the step."""


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
        self.steps_done += 1
        step = int(self.steps_done)
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise DivergenceError(
                    f"{type(self).__name__} diverged at step {step}: {name} is {value}"
                )
        for name, p in self.named_parameters():
            if not torch.isfinite(p).all():
                raise DivergenceError(
                    f"{type(self).__name__} diverged at step {step}: weights {name!r} are not finite"
                )
        return metrics
