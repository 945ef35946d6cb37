"""Build: the Python package, kernels/ installed as bpalts.kernels, csrc/*.cpp as bpalts._C.

Metadata lives in pyproject.toml. The extension is C++17, -O3, OpenMP, built with pybind11.
By default it is tuned for the building machine's CPU (-march=native); set BPALTS_PORTABLE=1 to
build a binary that runs on any x86-64 / aarch64 CPU. If the compiler fails, set
BPALTS_SKIP_EXT=1 to install without the extension (bpalts then warns and uses the reference).
"""
import glob
import os
import platform
import sys

from setuptools import setup

ext_modules = []
cmdclass = {}
if os.environ.get("BPALTS_SKIP_EXT", "0") in ("", "0"):
    from pybind11.setup_helpers import Pybind11Extension, build_ext

    compile_args = ["-O3", "-fopenmp"]
    link_args = ["-fopenmp"]
    if sys.platform == "darwin":  # Apple clang: OpenMP needs libomp; build without it
        compile_args, link_args = ["-O3"], []
    if os.environ.get("BPALTS_PORTABLE", "0") in ("", "0") and platform.machine() in (
        "x86_64",
        "AMD64",
        "aarch64",
        "arm64",
    ):
        compile_args.append("-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native")
    ext_modules = [
        Pybind11Extension(
            "bpalts._C",
            sorted(glob.glob("csrc/*.cpp")),
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]
    cmdclass = {"build_ext": build_ext}

setup(
    packages=["bpalts", "bpalts.ops", "bpalts.learners", "bpalts.kernels"],
    package_dir={"bpalts.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
