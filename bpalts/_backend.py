"""Backend selection: which implementation of an op runs (DESIGN.md section 1).

``backend`` is one of ``"auto"``, ``"reference"``, ``"triton"``, ``"cpp"``.

``auto`` picks Triton for CUDA tensors (when Triton imports), the C++ extension ``bpalts._C`` for
CPU tensors (when it is built), and the plain-PyTorch reference otherwise. The environment
variable ``BPALTS_BACKEND`` replaces ``auto``'s choice globally (an explicit ``backend=`` argument
still wins). Asking for a backend that cannot run on the given tensors raises a ``ValueError``
that says why (and, for one chosen by ``BPALTS_BACKEND``, that the variable chose it).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import warnings

import torch

from bpalts._checks import check_device, check_flag

BACKENDS = ("auto", "reference", "triton", "cpp")
CONCRETE_BACKENDS = ("reference", "triton", "cpp")

_C = None
_C_ERROR: str | None = None
_C_WARNED = False


def _load_cpp() -> None:
    """Import ``bpalts._C`` once; on failure remember why and warn once."""
    global _C, _C_ERROR, _C_WARNED
    if _C is not None or _C_ERROR is not None:
        return
    try:
        _C = importlib.import_module("bpalts._C")
    except ImportError as exc:  # not built, or built against another Python
        _C_ERROR = f"{type(exc).__name__}: {exc}"
        if not _C_WARNED:
            _C_WARNED = True
            warnings.warn(
                "bpalts: the C++ backend is unavailable (bpalts._C could not be imported: "
                f"{_C_ERROR}). CPU ops fall back to the PyTorch reference. Reinstall with a C++17 "
                "compiler present (`pip install .`) to build it.",
                RuntimeWarning,
                stacklevel=3,
            )


def cpp_module():
    """The compiled extension module, or raise ``ValueError`` saying why it is unavailable."""
    _load_cpp()
    if _C is None:
        raise ValueError(f"cpp backend unavailable: bpalts._C is not built ({_C_ERROR})")
    return _C


def cpp_available() -> bool:
    _load_cpp()
    return _C is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _triton_version() -> str | None:
    # Read the installed version without importing Triton: Triton decides at import time whether
    # kernels run in its CPU interpreter (TRITON_INTERPRET), so importing it here, before a test
    # module or user sets that variable, would freeze the wrong mode for the whole process.
    # Cached: every op call on the Triton path resolves its backend, and the metadata lookup
    # costs about 0.5 ms (measured on the 2-core dev VM), several times the B256 kernels' time.
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def triton_available(device: torch.device | None = None) -> bool:
    """Triton can run on ``device`` (CUDA) or anywhere under ``TRITON_INTERPRET=1``."""
    if _triton_version() is None:
        return False
    if device is None:
        return torch.cuda.is_available() or triton_interpreted()
    return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())


def _why_not(backend: str, device: torch.device) -> str | None:
    """``None`` when ``backend`` can run on ``device``, else the reason it cannot."""
    if backend == "reference":
        return None
    if backend == "triton":
        if _triton_version() is None:
            return "triton backend needs the triton package, which does not import here"
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreted()):
            return None
        return (
            f"triton backend needs CUDA tensors or TRITON_INTERPRET=1 (got {device.type} tensors)"
        )
    if backend == "cpp":
        if device.type != "cpu":
            return f"cpp backend needs CPU tensors (got {device.type} tensors)"
        _load_cpp()
        if _C is None:
            return f"cpp backend unavailable: bpalts._C is not built ({_C_ERROR})"
        return None
    raise AssertionError(backend)


def _device(device) -> torch.device:
    return check_device("device", device) or torch.device("cpu")


def resolve_backend(backend: str = "auto", device: torch.device | str | None = None) -> str:
    """Turn ``backend`` (possibly ``"auto"``) into the concrete backend that runs on ``device``.

    Raises ``ValueError`` for an unknown name or a backend that cannot run there.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, one of {BACKENDS}, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = _device(device)
    forced = None
    if backend == "auto":
        forced = os.environ.get("BPALTS_BACKEND", "").strip()
        if forced and forced != "auto":
            if forced not in CONCRETE_BACKENDS:
                raise ValueError(
                    f"environment variable BPALTS_BACKEND must be one of {BACKENDS}, got {forced!r}"
                )
            backend = forced
        elif device.type == "cuda" and _why_not("triton", device) is None:
            return "triton"
        elif device.type == "cpu" and _why_not("cpp", device) is None:
            return "cpp"
        else:
            return "reference"
    reason = _why_not(backend, device)
    if reason is not None:
        if forced:  # the caller asked for "auto": say where this backend came from
            reason += (f" ({backend!r} was chosen by the environment variable BPALTS_BACKEND; "
                       "unset it or pass another backend)")
        raise ValueError(reason)
    return backend


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Concrete backends that can run on ``device`` (CPU when not given)."""
    device = _device(device)
    return [b for b in CONCRETE_BACKENDS if _why_not(b, device) is None]


def info(print_it: bool = True) -> dict:
    """Versions and backend availability; printed unless ``print_it`` is false. Returns a dict."""
    from bpalts import __version__

    print_it = check_flag("print_it", print_it)

    _load_cpp()
    d: dict = {
        "bpalts": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "triton_interpret": triton_interpreted(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpp_built": _C is not None,
        "cpp_error": _C_ERROR,
        "cpp_openmp_threads": _C.openmp_threads() if _C is not None else None,
        # an extension built before this entry existed has no simd(): reported as unknown
        "cpp_simd": (getattr(_C, "simd", lambda: "unknown")() if _C is not None else None),
        "torch_threads": torch.get_num_threads(),
        "backends_cpu": available_backends("cpu"),
        "backends_cuda": available_backends("cuda") if torch.cuda.is_available() else [],
        "BPALTS_BACKEND": os.environ.get("BPALTS_BACKEND"),
    }
    if print_it:
        width = max(len(k) for k in d)
        for k, v in d.items():
            print(f"{k:<{width}}  {v}")
    return d
