"""Backend selection, BPALTS_BACKEND, bpalts.info(), and importing without the C++ extension."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import bpalts
from bpalts._backend import resolve_backend
from tests._compare_util import CallSpy


def test_auto_on_cpu_prefers_cpp_when_built(monkeypatch):
    monkeypatch.delenv("BPALTS_BACKEND", raising=False)
    expected = "cpp" if "cpp" in bpalts.available_backends("cpu") else "reference"
    assert resolve_backend("auto", "cpu") == expected


def test_env_override(monkeypatch):
    monkeypatch.setenv("BPALTS_BACKEND", "reference")
    assert resolve_backend("auto", "cpu") == "reference"
    # An explicit argument wins over the variable.
    if "cpp" in bpalts.available_backends("cpu"):
        assert resolve_backend("cpp", "cpu") == "cpp"
    monkeypatch.setenv("BPALTS_BACKEND", "fast")
    with pytest.raises(ValueError, match="BPALTS_BACKEND must be one of"):
        resolve_backend("auto", "cpu")


def test_env_override_that_cannot_run_says_why(monkeypatch):
    monkeypatch.setenv("BPALTS_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton backend needs CUDA tensors or TRITON_INTERPRET=1"):
        resolve_backend("auto", "cpu")


def test_unknown_and_bad_backend_names():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'reference', 'triton', 'cpp'\), got 'gpu'"):
        resolve_backend("gpu")
    with pytest.raises(TypeError, match="backend must be a string"):
        resolve_backend(3)


def test_cpp_refuses_cuda_tensors():
    with pytest.raises(ValueError, match="cpp backend needs CPU tensors"):
        resolve_backend("cpp", "cuda")


def test_info_reports_versions_and_backends(capsys):
    d = bpalts.info()
    out = capsys.readouterr().out
    assert d["torch"] == torch.__version__
    assert "reference" in d["backends_cpu"]
    assert "cpp_built" in out and "backends_cpu" in out
    if d["cpp_built"]:
        assert d["cpp_openmp_threads"] >= 1
        assert d["cpp_simd"] in ("avx512f", "avx2", "neon", "none")
    else:
        assert d["cpp_error"]


def test_import_without_extension_warns_once_and_falls_back():
    # A fresh interpreter in which bpalts._C cannot be imported.
    code = textwrap.dedent(
        """
        import sys, warnings, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "bpalts._C":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import bpalts
            import torch
            from bpalts.ops import hebbian_update
            W = torch.randn(4, 3); X = torch.rand(2, 3)
            hebbian_update(W, X)  # auto -> reference
            hebbian_update(W, X)
            print("available", bpalts.available_backends("cpu"))
            try:
                hebbian_update(W, X, backend="cpp")
            except ValueError as e:
                print("error", e)
        msgs = [str(w.message) for w in caught if "C++ backend is unavailable" in str(w.message)]
        print("warnings", len(msgs))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "available ['reference']" in out.stdout or "available ['reference', 'triton']" in out.stdout
    assert "error cpp backend unavailable: bpalts._C is not built" in out.stdout
    assert "warnings 1" in out.stdout


def test_triton_version_lookup_is_cached(monkeypatch):
    """Every op call on the Triton path resolves its backend; the package-metadata lookup behind
    it (about 0.5 ms) must run once per process, not once per call."""
    import importlib.metadata

    from bpalts import _backend

    spy = CallSpy(importlib.metadata.version)
    monkeypatch.setattr(importlib.metadata, "version", spy)
    _backend._triton_version.cache_clear()
    try:
        first = _backend._triton_version()
        for _ in range(5):
            assert _backend._triton_version() == first
            _backend._why_not("triton", torch.device("cpu"))
        assert len(spy.args) <= 1
    finally:
        _backend._triton_version.cache_clear()


def test_check_int():
    from bpalts._checks import check_int

    assert check_int("n", 3) == 3 and check_int("n", 0, 0) == 0 and check_int("n", 5, 1, 5) == 5
    for bad in (2.0, True, "3", None):
        with pytest.raises(TypeError, match=f"n must be an int, got {type(bad).__name__}"):
            check_int("n", bad, 1)
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        check_int("n", 0, 1)
    with pytest.raises(ValueError, match=r"n must be <= 4, got 5"):
        check_int("n", 5, maximum=4)
    with pytest.raises(ValueError, match=r"n must be in 1\.\.4 \(units\), got 9"):
        check_int("n", 9, 1, 4, what="units")
