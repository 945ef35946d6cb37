"""Input validation shared by every op: clear errors naming the argument (DESIGN.md section 2)."""
from __future__ import annotations

import math
import numbers
import threading
from contextlib import contextmanager
from typing import Sequence

import torch

FLOAT32_ONLY = (torch.float32,)
FLOAT32_OR_64 = (torch.float32, torch.float64)


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return " or ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(name: str, t, dims: Sequence[str], dtypes: Sequence[torch.dtype] = FLOAT32_OR_64):
    """``t`` is a tensor with ``len(dims)`` dimensions, a float dtype from ``dtypes``, no empty dims.

    ``dims`` names the dimensions for the message, e.g. ``("batch", "features")``.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_dense(name, t)
    if t.dim() != len(dims):
        raise ValueError(
            f"{name} must be {len(dims)}-D ({', '.join(dims)}), got shape {tuple(t.shape)}"
        )
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {_dtype_names(dtypes)}, got {t.dtype}")
    for size, dim in zip(t.shape, dims):
        if size == 0:
            raise ValueError(f"{name} has an empty {dim} dimension (shape {tuple(t.shape)})")
    return t


def check_dense(name: str, t: torch.Tensor) -> None:
    """``t`` is a dense (strided) tensor, not a sparse (COO, CSR, ...) one."""
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}; "
                        "convert it with .to_dense()")


def check_not_meta(name: str, t: torch.Tensor) -> None:
    """``t`` holds values: not a ``meta`` tensor (a ValueError naming ``name``)."""
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device and holds no values to check or compute with")


def check_same(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    """All ``tensors`` share one device and one dtype."""
    first = tensors[0]
    for n, t in zip(names[1:], tensors[1:]):
        if t.device != first.device:
            raise ValueError(
                f"{n} is on {t.device} but {names[0]} is on {first.device}; "
                "all tensors must be on the same device"
            )
        if t.dtype != first.dtype:
            raise TypeError(f"{n} has dtype {t.dtype} but {names[0]} has {first.dtype}; they must match")


def check_finite(name: str, t: torch.Tensor) -> None:
    """``t`` holds no NaN or infinity, else a ValueError naming ``name``. Inside
    :func:`one_finite_sync` a CUDA tensor's check is gathered and run at the block's end."""
    check_not_meta(name, t)
    pending = getattr(_finite, "pending", None)
    if pending is not None and _defers(t):
        pending.append((name, t))
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


_finite = threading.local()  # .pending: the CUDA checks gathered by the open one_finite_sync


def _defers(t: torch.Tensor) -> bool:
    """Whether a check of ``t`` inside :func:`one_finite_sync` waits for its end: on a GPU,
    where checking costs a sync. (A function so that tests can stand in for it.)"""
    return t.is_cuda


@contextmanager
def one_finite_sync():
    """Gather the block's :func:`check_finite` calls on CUDA tensors and run them at its end
    with one host sync instead of one each (each ``bool(...)`` on a GPU waits for the device);
    the first non-finite tensor, in call order, raises as it would have. CPU tensors are checked
    at once (no sync to save). If the block raises, its gathered checks are dropped; nested
    blocks join the outermost."""
    if getattr(_finite, "pending", None) is not None:
        yield
        return
    _finite.pending = []
    try:
        yield
        pending = _finite.pending
    finally:
        _finite.pending = None
    if not pending:
        return
    flags = [torch.isfinite(t).all() for _, t in pending]
    ok: dict = {}
    for dev in {f.device for f in flags}:  # one sync per device (there is one, after check_same)
        idx = [i for i, f in enumerate(flags) if f.device == dev]
        ok.update(zip(idx, torch.stack([flags[i] for i in idx]).tolist()))
    for i, (name, _) in enumerate(pending):
        if not ok[i]:
            raise ValueError(f"{name} contains NaN or infinite values")


def check_scalar(name: str, value, *, positive: bool = False, allow_zero: bool = True,
                 dtype: torch.dtype | None = None) -> float:
    """A finite real number (optionally > 0 / >= 0; Python or NumPy scalars, or a one-element
    tensor, not a bool); returned as a Python float. With ``dtype`` (the floating dtype the op
    computes in), also within that dtype's range: ``lr=1e300`` on float32 weights is an error
    naming ``lr``, not torch's "cannot be converted to type float without overflow" (or
    silently infinite weights) from inside the op."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if dtype is not None and dtype.is_floating_point and abs(value) > torch.finfo(dtype).max:
        dname = str(dtype).removeprefix("torch.")
        raise ValueError(f"{name} must be within {dname}'s range (|{name}| <= "
                         f"{torch.finfo(dtype).max:.4g}: the op computes in {dname}), got {value}")
    return value


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None,
              what: str = "") -> int:
    """An integer (Python or NumPy, not a bool) in ``[minimum, maximum]``, returned as a Python
    int; TypeError for another type, ValueError out of range (the message names ``name`` and, if
    given, ``what`` the value counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    unit = f" ({what})" if what else ""
    if minimum is not None and maximum is not None and not (minimum <= value <= maximum):
        raise ValueError(f"{name} must be in {minimum}..{maximum}{unit}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{unit}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}{unit}, got {value}")
    return value


def check_flag(name: str, value) -> bool:
    """A bool (Python or NumPy), returned as a Python bool: a string such as ``"no"`` or a number
    is a TypeError rather than silently true."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")


def check_in_place(name: str, t: torch.Tensor) -> None:
    """``t``, which an op updates in place, has its own memory for every element: not a broadcast
    view (stride 0 over a dimension of size > 1, e.g. from ``expand``), whose elements would
    receive conflicting updates; and not an inference tensor outside inference mode. Checked
    before anything is written."""
    if any(st == 0 and sz > 1 for st, sz in zip(t.stride(), t.shape)):
        raise ValueError(
            f"{name} is updated in place and must not be a broadcast (stride-0) view "
            f"(shape {tuple(t.shape)}, strides {tuple(t.stride())}); pass a copy (.clone())")
    # torch refuses in-place updates of inference tensors outside inference mode; the C++ and
    # Triton backends, which write through pointers, would update one silently
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(
            f"{name} is updated in place but was created under torch.inference_mode(); update "
            "it inside inference mode too, or pass a copy made outside it (.clone())")


GENERATOR_SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes a 64-bit seed (negatives alias 2**64 + s)


def check_float_dtype(name: str, value) -> torch.dtype:
    """A ``torch.dtype`` that is ``torch.float32`` or ``torch.float64`` (a TypeError naming
    ``name`` otherwise), returned."""
    if not isinstance(value, torch.dtype):
        raise TypeError(
            f"{name} must be a torch.dtype (torch.float32 or torch.float64), got {type(value).__name__} {value!r}")
    if value not in FLOAT32_OR_64:
        raise TypeError(f"{name} must be torch.float32 or torch.float64, got {value}")
    return value


def check_device(name: str, value) -> torch.device | None:
    """None, a ``torch.device`` or a device string (``"cpu"``, ``"cuda:0"``), returned as a
    ``torch.device`` (None stays None); a TypeError / ValueError naming ``name`` otherwise."""
    if value is None or isinstance(value, torch.device):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a torch.device or a device string such as 'cpu' or 'cuda', "
                        f"got {type(value).__name__} {value!r}")
    try:
        return torch.device(value)
    except RuntimeError:
        raise ValueError(f"{name} must be a device string such as 'cpu' or 'cuda:0', got {value!r}") from None


def check_cuda_available(name: str, device: torch.device) -> None:
    """A CUDA ``device`` needs CUDA here: a ValueError naming ``name`` otherwise."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(device)!r} was asked for but torch.cuda.is_available() is False")


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_weights_and_batch(W, X, dtypes: Sequence[torch.dtype] = FLOAT32_OR_64) -> None:
    """The (units x features) weights and (batch x features) batch of a layer update agree."""
    check_tensor("W", W, ("units", "features"), dtypes)
    check_tensor("X", X, ("batch", "features"), dtypes)
    check_same(("W", "X"), (W, X))
    if X.shape[1] != W.shape[1]:
        raise ValueError(
            f"X has {X.shape[1]} features but W expects {W.shape[1]} "
            f"(W is units x features = {tuple(W.shape)}, X is batch x features = {tuple(X.shape)})"
        )


class DivergenceError(FloatingPointError):
    """Weights, states or an energy became non-finite during training or relaxation; the message
    names the step. Raised by learners (``bpalts.learners.DivergenceError``) and by iterative ops."""

