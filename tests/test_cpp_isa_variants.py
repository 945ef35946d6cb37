"""The C++ kernels compile for every instruction set they have code for, whatever the machine.

`setup.py` builds `bpalts._C` with `-march=native`, so the suite only ever exercises the
building machine's branch of the `#if defined(__AVX512F__)` / `__AVX2__` code in `csrc/`. A
branch that no longer compiles would go unnoticed until someone builds on another CPU (in the
sixteenth session a working tree broke the portable build, `BPALTS_PORTABLE=1`, with a 16-lane
helper outside its `#if`, and this machine's build and tests did not notice). Here every
`csrc/*.cpp` is checked with `-fsyntax-only` (no code generated,
templates instantiated) for a baseline x86-64 (the portable build), x86-64-v3 (AVX2, FMA) and
x86-64-v4 (AVX-512), with the extension's own flags.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "csrc").glob("*.cpp"))
VARIANTS = {"portable": [], "x86-64-v3": ["-march=x86-64-v3"], "x86-64-v4": ["-march=x86-64-v4"]}


def _compiler() -> str | None:
    cxx = (sysconfig.get_config_var("CXX") or "").split()
    for candidate in ([cxx[0]] if cxx else []) + ["g++", "c++", "clang++"]:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def _includes() -> list[str] | None:
    try:
        import pybind11
    except ImportError:
        return None
    return [f"-I{ROOT / 'csrc'}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]


CXX = _compiler()
INCLUDES = _includes()
pytestmark = [
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 variants only"),
    pytest.mark.skipif(sys.platform != "linux", reason="the extension's Linux flags (GCC / Clang, OpenMP)"),
    pytest.mark.skipif(CXX is None, reason="no C++ compiler on PATH"),
    pytest.mark.skipif(INCLUDES is None, reason="pybind11 not installed (it is a build requirement)"),
]


def _check(source: Path, flags: list[str]) -> subprocess.CompletedProcess:
    cmd = [CXX, "-std=c++17", "-fopenmp", "-fsyntax-only", "-Wno-psabi", *flags, *INCLUDES, str(source)]
    return subprocess.run(cmd, capture_output=True, text=True)


def _supported(flags: list[str]) -> bool:
    probe = subprocess.run([CXX, "-x", "c++", "-fsyntax-only", *flags, "-"], input="int main() {}\n",
                           capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_kernel_source_compiles(variant):
    flags = VARIANTS[variant]
    if not _supported(flags):
        pytest.skip(f"{CXX} does not know {' '.join(flags)}")
    assert SOURCES, "no csrc/*.cpp found"
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda src: (src, _check(src, flags)), SOURCES))
    failed = [f"{src.name}:\n{res.stderr[-3000:]}" for src, res in results if res.returncode != 0]
    assert not failed, f"{variant} ({' '.join(flags) or 'no -march'}):\n" + "\n".join(failed)
