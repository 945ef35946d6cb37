"""Shared pieces of the learner contract (DESIGN.md section 3)."""
from __future__ import annotations

import copy
import functools
import math
import numbers
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from bpalts._checks import DivergenceError  # noqa: F401  (re-exported: learners raise it)
from bpalts._checks import check_dense, check_int

#: Largest seed a learner accepts (``check_seed``): learners derive further generators' seeds by
#: adding offsets of a few million and keep some in int64 buffers (at most 2**63 - 1).
SEED_MAX = 2**62


def check_sizes(sizes) -> list[int]:
    """Layer widths: at least two positive ints (input ... classes), as a list of Python ints."""
    if isinstance(sizes, (str, bytes, torch.Tensor)) or not isinstance(sizes, Iterable):
        raise TypeError(
            f"sizes must be a sequence of layer widths (input ... classes), e.g. [784, 100, 10], "
            f"got {type(sizes).__name__} {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                                 for s in sizes):
        raise ValueError(f"sizes must list at least 2 positive ints (input ... classes), got {sizes!r}")
    return [int(s) for s in sizes]


def check_seed(seed) -> int:
    """A seed for ``torch.Generator.manual_seed``: an int in ``0..SEED_MAX`` (the learners add
    offsets to it for their other generators, so it stays well inside the generator's range)."""
    return check_int("seed", seed, 0, SEED_MAX)


def check_sequence(name: str, value, what: str) -> tuple:
    """``value`` as a tuple; a non-sequence (a number, a string) is a TypeError naming ``what``
    was expected."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Tensor)):
        raise TypeError(f"{name} must be a sequence ({what}), got {type(value).__name__} {value!r}")
    return tuple(value)


#: Integer dtypes taken as class indices (those of :mod:`bpalts.readouts` as well).
LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_labels(y, batch: int, n_out: int, name: str = "y") -> None:
    """``y`` holds ``batch`` integer class indices in ``0..n_out-1`` (errors name ``name``)."""
    if not isinstance(y, torch.Tensor) or y.shape != (batch,):
        raise ValueError(f"{name} must be ({batch},) class indices, got {getattr(y, 'shape', y)}")
    if y.dtype not in LABEL_DTYPES:
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    lo, hi = torch.stack([y.min(), y.max()]).tolist()  # one device-to-host read
    if lo < 0 or hi >= n_out:
        raise ValueError(f"{name} must be class indices in 0..{n_out - 1}, got range {lo}..{hi}")


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
    of ``train_step`` so that divergence is reported with the step at which it happened.

    ``state_dict()`` holds everything training needs to resume exactly where it stopped: the
    weights and buffers, and (as the module's extra state, :meth:`get_extra_state`) the state of
    every ``torch.optim`` optimiser (moments, step counts, decayed learning rates) and
    ``torch.Generator`` (negative samples, dropout masks, shifts) the learner holds. A learner
    built with the same arguments and given ``load_state_dict`` then takes the same next steps."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long), persistent=True)

    def __init_subclass__(cls, **kwargs) -> None:
        # A training step creates state that outlives it (optimiser moments, gradients): made
        # under a caller's torch.inference_mode() they would be inference tensors, which no later
        # step outside that mode could update in place. Every train_step so runs outside it.
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("train_step")
        if step is not None and not getattr(step, "_outside_inference_mode", False):
            @functools.wraps(step)
            def train_step(self, *args, **kw):
                with torch.inference_mode(False):
                    return step(self, *args, **kw)

            train_step._outside_inference_mode = True
            cls.train_step = train_step

    # -- input checks shared by every learner (DESIGN.md section 2) -------------------------
    def _reference_tensor(self) -> torch.Tensor | None:
        """The tensor whose device and dtype inputs must match: the first floating-point
        parameter (else buffer), or None for a learner without one."""
        for t in self.parameters():
            if t.is_floating_point():
                return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return None

    def check_input(self, x, y=None) -> None:
        """``x`` (and ``y``, if given) are tensors on the learner's device, and ``x`` has its
        weights' dtype. Reads only tensor metadata: no host sync, no copy. Every learner's
        ``train_step``, ``predict`` and ``evaluate`` call it before computing anything."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if y is not None and not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
        check_dense("x", x)
        if y is not None:  # a training batch (or evaluate's): kept for _finish_step's diagnosis
            check_dense("y", y)
            self._step_x = x
        ref = self._reference_tensor()
        if ref is None:
            return
        if x.device != ref.device:
            raise ValueError(f"x is on {x.device} but the {name}'s weights are on {ref.device}; "
                             f"move it with x.to({str(ref.device)!r})")
        if x.dtype != ref.dtype:
            raise TypeError(f"x must have the dtype of the {name}'s weights, {ref.dtype}, got "
                            f"{x.dtype}; convert it with x.to({ref.dtype}) (images as floats, "
                            f"e.g. in [0, 1])")
        if y is not None and y.device != ref.device:
            raise ValueError(f"y is on {y.device} but the {name}'s weights are on {ref.device}; "
                             f"move it with y.to({str(ref.device)!r})")

    def _check_x(self, x, y=None) -> None:
        """Shape (and labels) of a batch: (batch, sizes[0]) by default; learners taking other
        shapes override it (a learner without ``sizes`` is not checked here)."""
        sizes = getattr(self, "sizes", None)
        if sizes is not None:
            check_batch(x, y, sizes[0], sizes[-1])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (batch,), computed in eval mode whatever the learner's mode: batch
        normalisation uses its running statistics (a sample's class does not depend on the rest of
        the batch) and leaves them unchanged; the mode is restored afterwards."""
        self.check_input(x)
        self._check_x(x)
        with self._eval_mode():
            return self.forward(x).argmax(dim=1)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
        """Accuracy (0..1) on ``(x, y)``, in batches of ``batch_size``, without touching the
        weights. ``x`` and ``y`` must hold the same, non-zero number of samples and ``y`` integer
        class indices in ``0..classes-1``."""
        batch_size = check_int("batch_size", batch_size, 1)
        self.check_input(x, y)
        if y.dim() != 1:
            raise ValueError(f"y must be 1-D (batch,) class indices, got shape {tuple(y.shape)}")
        if x.dim() > 0 and x.shape[0] == 0 and y.shape[0] == 0:
            raise ValueError("x and y are empty: there is nothing to evaluate")
        self._check_x(x)  # the images' shape
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must hold the same number of samples, got {x.shape[0]} "
                             f"images and {y.shape[0]} labels")
        sizes = getattr(self, "sizes", None)
        if sizes is not None:
            check_labels(y, y.shape[0], sizes[-1])  # dtype and range (one host read for all of y)
        elif y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
        with self._eval_mode():
            correct = torch.zeros((), dtype=torch.long, device=y.device)
            for i in range(0, x.shape[0], batch_size):
                correct += (self.predict(x[i : i + batch_size]) == y[i : i + batch_size]).sum()
            return int(correct) / x.shape[0]

    @contextmanager
    def _eval_mode(self):
        """The learner in eval mode inside the block, its mode (``train(was_training)``, which
        learners may extend) restored after it, also on an error."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # -- resumable training state ----------------------------------------------------------
    def _training_objects(self):
        """``(name, object)`` for every ``torch.optim.Optimizer`` and ``torch.Generator`` held as
        an attribute of this learner or of a plain module inside it, in a fixed order."""
        for prefix, mod in self.named_modules():
            if mod is not self and isinstance(mod, Learner):
                continue  # a learner inside saves its own
            for key, value in sorted(vars(mod).items()):
                if isinstance(value, (torch.optim.Optimizer, torch.Generator)):
                    yield (f"{prefix}.{key}" if prefix else key), value

    def get_extra_state(self) -> dict:
        """The optimisers' ``state_dict()`` and the generators' ``get_state()``, by attribute
        name (saved by ``state_dict()`` under ``_extra_state``)."""
        return {name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
                for name, obj in self._training_objects()}

    def set_extra_state(self, state: dict) -> None:
        """Load what :meth:`get_extra_state` saved into this learner's optimisers and generators
        (an optimiser's state is copied, and moved to its parameters' device by ``torch.optim``;
        the loaded learner shares no tensor with the state_dict's source)."""
        if not isinstance(state, dict):
            raise TypeError(f"the state_dict's _extra_state must be a dict, got {type(state).__name__}")
        objects = dict(self._training_objects())
        unknown = sorted(set(state) - set(objects))
        if unknown:
            raise ValueError(f"the state_dict holds training state for {unknown}, which this "
                             f"{type(self).__name__} does not have (built with other arguments?)")
        for name, value in state.items():
            obj = objects[name]
            if isinstance(obj, torch.Generator):
                obj.set_state(value)
            else:
                # A copy: torch.optim keeps the given state tensors that already have the right
                # dtype and device, so two learners loaded from one state_dict (or a learner and
                # the one it was copied from) would share, and both update, one set of moments.
                obj.load_state_dict(copy.deepcopy(value))

    def _apply(self, fn, *args, **kwargs):
        """``.to()``, ``.double()``, ``.cuda()``...: the parameters convert as usual, and every
        optimiser's state (Adam's moments) follows them, as ``torch.optim`` does when it loads a
        state: moments left in float32 made the next step of a learner converted to float64
        (the Hebbian learners' Adam readouts) fail inside the optimiser."""
        out = super()._apply(fn, *args, **kwargs)
        for _, obj in self._training_objects():
            if isinstance(obj, torch.optim.Optimizer) and obj.state:
                obj.load_state_dict(obj.state_dict())  # casts the state to its params' dtype / device
        return out

    def _finish_step(self, metrics: dict) -> dict:
        """Count the step, check weights and metrics for non-finite values, return the metrics.
        A non-finite result is a :class:`DivergenceError` naming the step, or, when the step's
        batch ``x`` itself held NaN / inf (checked only then: no cost on a finite step), a
        ``ValueError`` saying so."""
        x, self._step_x = getattr(self, "_step_x", None), None
        self.steps_done += 1  # a device op: no host sync (the step is read only to report)
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                self._blame_input(x)
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
        self._blame_input(x)
        for (name, _), ok in zip(named, flags):
            if not bool(ok):
                raise DivergenceError(
                    f"{type(self).__name__} diverged at step {int(self.steps_done)}: "
                    f"weights {name!r} are not finite"
                )
        return metrics

    def _blame_input(self, x) -> None:
        """Raise a ValueError if the failed step's batch ``x`` was not finite: bad input, not
        divergence (the update has been applied by then)."""
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"x contains NaN or infinite values: {type(self).__name__}'s training step "
                f"{int(self.steps_done)} was given a non-finite batch, and its update has been "
                "applied (the weights may be non-finite now: reload a state_dict to go on)")
